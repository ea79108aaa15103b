"""What every role driving aiomqtt shares (the gmqtt counterpart is :mod:`transport.gmqtt_link`).

aiomqtt's ``subscribe`` returns the SUBACK's reason codes and never raises on a refusal:
:func:`subscribe` does, naming the code, so a refused subscription ends the session as a
lost connection (and the role's backoff, reset only once subscribed, grows).
"""

from __future__ import annotations

from typing import Any

import aiomqtt

from .settings import suback_reason

__all__ = ["subscribe"]


def _code(granted: Any) -> int:
    return int(getattr(granted, "value", granted))


async def subscribe(client: aiomqtt.Client, topic: str, qos: int) -> None:
    """Subscribe and check the SUBACK; raises :class:`aiomqtt.MqttError` if refused."""
    granted = await client.subscribe(topic, qos=qos)
    refused = [_code(code) for code in granted if _code(code) >= 0x80]
    if refused:
        raise aiomqtt.MqttError(f"the server refused the subscription to {topic}: SUBACK "
                                f"reason {refused[0]:#04x} ({suback_reason(refused[0])})")
