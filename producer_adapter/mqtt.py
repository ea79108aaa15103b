"""The adapter's MQTT link on aiomqtt: outbound only, reconnecting, with retained presence.

Chosen by ``[mqtt] client = "aiomqtt"``; the default is the same link on gmqtt
(:class:`producer_adapter.mqtt_gmqtt.GmqttLink`, less CPU per question). One link per
replica. On every (re)connect it subscribes to its questions (a ``$share`` subscription
where the server has them, so replicas split the load), publishes ``Presence(online=True)``
retained, and watches its own presence topic: when another replica's last will says
``online: false`` while this one lives, it says ``online: true`` again. The will says
``online: false`` when the connection dies.

Only this module imports aiomqtt; its errors become :class:`TransportError` here.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from schemas.transport import NODELAY

from ._link import BACKOFF_MAX, BACKOFF_MIN, OFFLINE_GRACE, LinkBase
from .errors import TransportError

__all__ = ["MqttLink"]

_PROTOCOLS: Final = {"5": aiomqtt.ProtocolVersion.V5, "3.1.1": aiomqtt.ProtocolVersion.V311}


class MqttLink(LinkBase):
    """One outbound MQTT connection, kept up by :meth:`run` until :meth:`close`."""

    _client: aiomqtt.Client | None = None

    _ERRORS = (aiomqtt.MqttError,)

    async def _unsubscribe(self) -> None:
        assert self._client is not None
        await self._client.unsubscribe(self.subscription)

    def _make_client(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host, s.port,
            username=s.username, password=s.password,
            identifier=self.identifier,
            protocol=_PROTOCOLS[s.protocol],
            keepalive=s.keepalive,
            tls_context=self._tls,
            socket_options=NODELAY,
            will=aiomqtt.Will(self.presence_topic, self._will(), qos=s.qos, retain=True),
        )

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; return after :meth:`close`."""
        client = self._make_client()
        delay = BACKOFF_MIN
        while not self._closing.is_set():
            wait = self._retry_in(delay)
            try:
                async with client:
                    self._client = client
                    delay = BACKOFF_MIN
                    await self._session(client)
                    return
            except aiomqtt.MqttError as exc:
                self._log.warning("mqtt connection lost", error=str(exc),
                                  retry_in=round(wait, 2), server=self.settings.url)
                delay = min(BACKOFF_MAX, delay * 2)
            finally:
                self.connected.clear()
                self._client = None
            await self._pause(wait)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Serve one connection: return after :meth:`close`, raise ``MqttError`` if lost."""
        try:
            qos = self.settings.qos
            if self._taking_questions:
                await client.subscribe(self.subscription, qos=qos)
            await client.publish(self.presence_topic, self._presence(online=True),
                                 qos=qos, retain=True)
            await client.subscribe(self.presence_topic, qos=qos)
            if self._on_checkpoint is not None:
                await client.subscribe(self.checkpoint_filter, qos=1)
            self.connected.set()
            self._log.info("mqtt connected", server=self.settings.url,
                           subscription=self.subscription)
            await self._serve(client)
        except asyncio.CancelledError:
            # A clean DISCONNECT suppresses the will, so say it ourselves.
            await self._say_offline(client)
            raise
        await self._say_offline(client)

    async def _serve(self, client: aiomqtt.Client) -> None:
        reader = asyncio.create_task(self._read(client), name=f"mqtt-read-{self.producer_id}")
        closing = asyncio.create_task(self._closing.wait(), name="mqtt-closing")
        try:
            await asyncio.wait((reader, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, closing):
                task.cancel()
            # Collect both helpers; their own cancellation is expected here.
            await asyncio.gather(reader, closing, return_exceptions=True)
        if not closing.cancelled():
            return
        error = None if reader.cancelled() else reader.exception()
        if error is not None:
            raise error
        raise aiomqtt.MqttError("message stream ended")

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        self.connected.clear()
        try:
            async with asyncio.timeout(OFFLINE_GRACE):
                await client.publish(self.presence_topic, self._presence(online=False),
                                     qos=self.settings.qos, retain=True)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            self._log.warning("could not announce offline", error=str(exc))
        else:
            self._log.info("mqtt announced offline")

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            if topic == self.question_topic:
                if message.retain:
                    self._log.warning("retained question ignored")
                    continue
                await self._on_question(message.payload)
            elif topic == self.presence_topic:
                await self._on_presence(client, message.payload)
            elif isinstance(message.payload, bytes | bytearray):
                self._checkpoint(topic, bytes(message.payload))
            # Anything else is not ours: amqtt sends retained messages to every client.

    async def _on_presence(self, client: aiomqtt.Client, payload: bytes) -> None:
        if not self._wrongly_offline(payload):
            return
        await client.publish(self.presence_topic, self._presence(online=True),
                             qos=self.settings.qos, retain=True)

    async def publish(self, topic: str, payload: bytes, *, expires_in: float | None = None) -> None:
        """Publish once the link is up (the caller bounds the wait); QoS from the settings.

        ``expires_in`` (seconds) becomes the MQTT 5 message expiry where the protocol has it.
        """
        await self.connected.wait()
        client = self._client
        if client is None:
            raise TransportError("not connected")
        properties = None
        if expires_in is not None and self.settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho
            properties.MessageExpiryInterval = max(1, math.ceil(expires_in))
        try:
            await client.publish(topic, payload, qos=self.settings.qos, properties=properties)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish failed: {exc}") from exc
