"""The broker's MQTT adapter on gmqtt, behind the :class:`~broker.ports.QuestionBus` port.

The same contract as :class:`broker.mqtt.MqttBus` (aiomqtt): subscribes to its own reply
topic ``{prefix}/r/{instance}`` and to ``{prefix}/presence/+``, publishes questions on
``{prefix}/q/{producer}`` with an MQTT 5 message expiry, reconnects with backoff by looping
around a fresh client; while disconnected every producer counts as unavailable. The
default (``[mqtt] client = "gmqtt"``): it spends about 40 % less of the broker's CPU per
reply than aiomqtt (bench/RESULTS.md, "Choosing the broker's MQTT client").

gmqtt specifics (no reconnect of its own, the Receive-Maximum window, TCP_NODELAY, no
payloads in its logs) are handled in :mod:`transport.gmqtt_link`, shared with the adapter's
link. ``publish_question`` returns once the question is written to the socket, not once it
is acknowledged (aiomqtt waits for the PUBACK). A question lost with the connection is
covered by ``on_disconnect``, which ends every wait at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

import gmqtt  # type: ignore[import-untyped]  # gmqtt ships no type hints
import structlog
from gmqtt.mqtt.constants import MQTTv50, MQTTv311  # type: ignore[import-untyped]

from transport.gmqtt_link import (
    Client,
    ConnectionGone,
    ConnectionLost,
    Window,
    close,
    gmqtt_logger,
    publish,
    unless_lost,
)
from schemas.topics import presence_topic, question_topic
from transport.settings import session_client_id

from ._bus import BusBase
from .errors import NotReady

__all__ = ["GmqttBus"]

log = structlog.get_logger("samsvar.broker")

_GMQTT_LOG: Final = gmqtt_logger("samsvar.broker.gmqtt")


class GmqttBus(BusBase):
    """Publishes questions and feeds replies and presence to the core's callbacks."""

    _client: Client | None = None
    _LOST = (OSError, TimeoutError, ConnectionLost, gmqtt.MQTTConnectError)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # as BusBase
        super().__init__(*args, **kwargs)
        self._window = Window()
        self._window.closed = True

    # -- connecting ------------------------------------------------------------------------

    async def _session(self, shutdown: asyncio.Event) -> None:
        lost = asyncio.Event()
        reason: list[str] = []

        def on_lost(why: str) -> None:
            if not lost.is_set():
                reason.append(why)
                lost.set()

        window = Window()
        client = self._new_client(window, on_lost)
        try:
            await self._connect(client, lost)
            self._client, self._window = client, window
            self._up()
            log.info("mqtt_connected", url=self.server.url, instance=self._instance,
                     client="gmqtt")
            stop = asyncio.ensure_future(shutdown.wait())
            gone = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (stop, gone):
                    task.cancel()
            if not shutdown.is_set():
                raise ConnectionLost(reason[0] if reason else "connection lost")
        finally:
            window.close()
            self._client = None
            self._down()  # before saying goodbye, which may take its time
            await close(client)

    def _new_client(self, window: Window, on_lost: Callable[[str], None]) -> Client:
        s = self._settings
        server = self.server
        client = Client(session_client_id(f"samsvar-broker-{self._instance}"), window=window, logger=_GMQTT_LOG,
                        on_lost=on_lost, max_message_bytes=s.max_message_bytes,
                        on_too_large=self._too_large, timeout=s.timeout_s)
        if server.username is not None:
            client.set_auth_credentials(server.username, server.password)
        client.on_message = self._on_message
        return client

    async def _connect(self, client: Client, lost: asyncio.Event) -> None:
        s, server = self._settings, self.server
        version = MQTTv50 if self._v5 else MQTTv311
        await unless_lost(
            client.connect(server.host, server.port, ssl=(server.tls and self._tls) or False,
                           keepalive=s.keepalive, version=version), lost, client)
        await client.subscribed(self.reply_topic, s.qos)
        await client.subscribed(presence_topic(s.prefix, "+"), s.qos)

    # -- receiving ------------------------------------------------------------------------

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int,
                    _properties: Any) -> int:
        self._dispatch(topic, bytes(payload))
        return 0

    # -- publishing -----------------------------------------------------------------------

    async def publish_question(self, producer_id: str, token: bytes, *, expiry_s: int) -> None:
        client, window = self._client, self._window
        if client is None or not self.connected.is_set():
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
        try:
            await publish(client, window, question_topic(self._settings.prefix, producer_id),
                          token, qos=self._settings.qos,
                          expiry_s=max(1, expiry_s) if self._v5 else None)
        except ConnectionGone:
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT") from None

    async def publish_checkpoint(self, token: bytes) -> None:
        client, window = self._client, self._window
        if client is None or not self.connected.is_set():
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
        try:
            await publish(client, window, self.checkpoint_topic, token, qos=1, retain=True)
            await window.acked(window.last_mid)
        except ConnectionGone:
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT") from None

    async def publish_questions(self, producer_ids: Sequence[str], token: bytes, *,
                                expiry_s: int, timeout_s: float) -> dict[str, Exception]:
        """One after the other, in one task: a publish here returns as soon as it is written,
        and waits only for room in the Receive Maximum, in line, which concurrent publishers
        would do as well. Those not written within ``timeout_s`` or when the connection
        goes are returned."""
        failures: dict[str, Exception] = {}
        sent = 0
        try:
            async with asyncio.timeout(timeout_s):
                for producer_id in producer_ids:
                    try:
                        await self.publish_question(producer_id, token, expiry_s=expiry_s)
                    except NotReady as exc:
                        failures[producer_id] = exc
                    sent += 1
        except TimeoutError:
            for producer_id in producer_ids[sent:]:
                failures[producer_id] = TimeoutError("no room to publish before the deadline")
        return failures
