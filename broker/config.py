"""The broker's configuration: a TOML file read once into a frozen dataclass.

::

    [broker]
    registry = "registry.toml"     # the federation registry (paths relative to this file)
    key = "keys/broker.jwk"        # the broker's private JWK; its kid must be in [broker] keys
    instance = "broker-1"          # this instance's id: its reply topic {prefix}/r/{instance}
    listen = "127.0.0.1:8080"
    default_deadline_ms = 5000     # when a query names none
    max_deadline_ms = 30000        # cap on a query's deadline_ms
    max_body_bytes = 65536         # larger request bodies get 413 before parsing
    clock_skew_s = 30              # allowed skew on iat/exp
    max_in_flight = 2000           # queries in flight on this instance; beyond: 429
    max_in_flight_per_consumer = 500   # ... and per consumer organisation
    http_idle_timeout_s = 10       # a connection's request head must arrive within this
                                   # (of opening, or of the last response); idle keep-alive
                                   # connections are closed after it
    http_body_timeout_s = 10       # a request body must arrive within this; else 408
    ombud_types = []               # own view: types an ombud may read (default none: off)

    [mqtt]                         # see transport.settings.MqttSettings
    url = "mqtt://127.0.0.1:1883"

    [access_log]                   # see broker.accesslog.config
    kind = "sqlite"
    path = "access-log.db"
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.records import OWN_VIEW_TYPES
from transport.settings import MqttSettings

from .accesslog.config import AccessLogConfig, access_log_config_from_table
from .errors import ConfigError

__all__ = ["BrokerConfig", "load_broker_config"]


def _default_instance() -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host}-{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    registry_path: Path
    key_path: Path
    instance: str = field(default_factory=_default_instance)
    host: str = "127.0.0.1"
    port: int = 8080
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    access_log: AccessLogConfig = field(
        default_factory=lambda: AccessLogConfig(path=Path("access-log.db")))
    default_deadline_ms: int = 5000
    max_deadline_ms: int = 30000
    max_body_bytes: int = 65536
    clock_skew_s: int = 30
    max_token_lifetime_s: int = 300
    max_in_flight: int = 2000
    max_in_flight_per_consumer: int = 500
    http_idle_timeout_s: float = 10.0
    """Close a connection that has not sent a whole request head this long after it opened
    or after its last response (slow headers, and idle keep-alive, alike)."""
    http_body_timeout_s: float = 10.0
    """Refuse (408, and close) a request whose body has not arrived in this long."""
    ombud_types: frozenset[str] = frozenset()
    """The own-view types an ombud may read (SPEC 9); empty, the default, refuses every
    ombud. Only producers whose registry entry opts in (``ombud_types``) are asked."""
    embedded_mqtt: bool = False
    """True when the MQTT server is the in-process amqtt one (demo only): warned at start-up."""


_KNOWN = {"registry", "key", "instance", "listen", "default_deadline_ms", "max_deadline_ms",
          "max_body_bytes", "clock_skew_s", "max_in_flight", "max_in_flight_per_consumer",
          "http_idle_timeout_s", "http_body_timeout_s",
          "ombud_types"}


def load_broker_config(path: str | Path) -> BrokerConfig:
    """Read the broker's TOML config; errors name the file and the key."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    base = p.parent
    table: dict[str, Any] = doc.get("broker", {})
    unknown = set(table) - _KNOWN
    if unknown:
        raise ConfigError(f"{p}: [broker] has unknown keys: {', '.join(sorted(unknown))}")
    for required in ("registry", "key"):
        if not isinstance(table.get(required), str):
            raise ConfigError(f"{p}: [broker] needs '{required}' (a file path)")
    host, _, port = str(table.get("listen", "127.0.0.1:8080")).rpartition(":")
    try:
        mqtt = MqttSettings.from_table(doc.get("mqtt", {}), base=base)
        ints: dict[str, Any] = {k: int(table[k]) for k in ("default_deadline_ms", "max_deadline_ms",
                                           "max_body_bytes", "clock_skew_s", "max_in_flight",
                                           "max_in_flight_per_consumer")
                if k in table}
        for k in ("http_idle_timeout_s", "http_body_timeout_s"):
            if k in table:
                seconds = float(table[k])
                if not seconds > 0:
                    raise ConfigError(f"[broker] {k} must be a positive number of seconds")
                ints[k] = seconds
        extra: dict[str, Any] = {"instance": str(table["instance"])} if "instance" in table else {}
        ombud = table.get("ombud_types", [])
        if not isinstance(ombud, list) or not set(ombud) <= OWN_VIEW_TYPES:
            raise ConfigError(f"[broker] ombud_types must be a list of own-view types "
                              f"({', '.join(sorted(OWN_VIEW_TYPES))})")
        extra["ombud_types"] = frozenset(ombud)
        access_log = doc.get("access_log", {})
        if not isinstance(access_log, dict):
            raise ConfigError(f"{p}: [access_log] must be a table")
        return BrokerConfig(
            registry_path=base / table["registry"], key_path=base / table["key"],
            host=host or "127.0.0.1", port=int(port), mqtt=mqtt,
            access_log=access_log_config_from_table(access_log, base=base), **ints, **extra,
        )
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
