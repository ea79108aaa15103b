"""The core's ports for a :class:`~broker.service.QueryService` built outside a running
broker: the real adapters, never connected nor opened (no MQTT, an access log that refuses
to append, a replay store in memory), as a broker looks before it starts."""

from __future__ import annotations

from typing import Any

from broker.accesslog import open_access_log
from broker.config import BrokerConfig
from broker.mqtt import MqttBus
from broker.replay import ReplayGuard
from schemas.jose import PrivateKey


def unstarted_ports(config: BrokerConfig, key: PrivateKey) -> dict[str, Any]:
    """``bus``, ``access_log`` and ``replay`` keyword arguments for ``QueryService``."""
    return {
        "bus": MqttBus(config.mqtt, instance=config.instance, on_reply=lambda _: None,
                       on_presence=lambda _producer, _payload: None),
        "access_log": open_access_log(config.access_log, key=key, instance=config.instance),
        "replay": ReplayGuard(),
    }
