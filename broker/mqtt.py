"""The broker's MQTT adapter (aiomqtt 2.x) behind the :class:`~broker.ports.QuestionBus` port.

Subscribes to its own reply topic ``{prefix}/r/{instance}`` and to ``{prefix}/presence/+``;
publishes questions on ``{prefix}/q/{producer}``. Reconnects with backoff by looping around
a fresh client; while disconnected every producer counts as unavailable.
"""

from __future__ import annotations

import asyncio
import functools

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from transport.aiomqtt_link import subscribe
from schemas.topics import presence_topic, question_topic
from transport.settings import NODELAY, session_client_id

from ._bus import BusBase
from .errors import NotReady

__all__ = ["MqttBus"]

log = structlog.get_logger("samsvar.broker")



class MqttBus(BusBase):
    """Publishes questions and feeds replies and presence to the core's callbacks."""

    _client: aiomqtt.Client | None = None

    def _new_client(self) -> aiomqtt.Client:
        s, server = self._settings, self.server
        client = aiomqtt.Client(
            server.host, server.port, username=server.username, password=server.password,
            identifier=session_client_id(f"samsvar-broker-{self._instance}"),
            protocol=aiomqtt.ProtocolVersion.V5 if self._v5 else aiomqtt.ProtocolVersion.V311,
            keepalive=s.keepalive, tls_context=self._tls if server.tls else None,
            socket_options=NODELAY,
            clean_session=None if self._v5 else True,
            max_inflight_messages=1000, timeout=s.timeout_s,
        )
        # A fan-out to 311 producers is 311 publishes at once by design; aiomqtt would log a
        # warning for each one above its default threshold of 10 (142,342 lines in one bench run).
        client.pending_calls_threshold = 100_000
        return client

    _LOST = (aiomqtt.MqttError,)

    async def _session(self, shutdown: asyncio.Event) -> None:
        try:
            async with self._new_client() as client:
                self._client = client
                await subscribe(client, self.reply_topic, self._settings.qos)
                await subscribe(client, presence_topic(self._settings.prefix, "+"),
                                self._settings.qos)
                self._up()
                log.info("mqtt_connected", url=self.server.url, instance=self._instance)
                reader = asyncio.create_task(self._read(client), name="mqtt-read")
                stop = asyncio.create_task(shutdown.wait(), name="mqtt-shutdown")
                try:
                    await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (reader, stop):
                        task.cancel()
                    await asyncio.gather(reader, stop, return_exceptions=True)
                if reader.done() and not reader.cancelled() and reader.exception():
                    raise reader.exception()  # type: ignore[misc]
        finally:
            self._client = None

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):  # too large ones: BusBase._dispatch
                self._dispatch(message.topic.value, bytes(payload))

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _expiry(seconds: int) -> Properties:
        """One PUBLISH property set per expiry, shared by every question that uses it."""
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = seconds
        return properties

    async def publish_question(self, producer_id: str, token: bytes, *, expiry_s: int) -> None:
        client = self._client
        if client is None or not self.connected.is_set():
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
        properties = self._expiry(max(1, expiry_s)) if self._v5 else None
        await client.publish(question_topic(self._settings.prefix, producer_id), token,
                             qos=self._settings.qos, properties=properties)

    async def publish_checkpoint(self, token: bytes) -> None:
        client = self._client
        if client is None or not self.connected.is_set():
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
        try:
            await client.publish(self.checkpoint_topic, token, qos=1, retain=True)
        except aiomqtt.MqttError as exc:
            raise NotReady("mqtt-disconnected", f"publish failed: {exc}") from exc
