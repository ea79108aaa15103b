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

from transport.aiomqtt_link import subscribe
from transport.settings import NODELAY, session_client_id

from ._link import OFFLINE_GRACE, LinkBase, Publish
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
        s, server = self.settings, self.server
        return aiomqtt.Client(
            server.host, server.port,
            username=server.username, password=server.password,
            identifier=session_client_id(self.identifier),
            protocol=_PROTOCOLS[s.protocol],
            keepalive=s.keepalive,
            tls_context=self._tls if server.tls else None,
            socket_options=NODELAY,
            timeout=s.timeout_s,
            will=aiomqtt.Will(self.presence_topic, self._will(), qos=s.qos, retain=True),
        )

    async def run(self) -> None:
        """Connect, serve, move to the next server with backoff when lost; return after
        :meth:`close`."""
        while not self._closing.is_set():
            client = self._make_client()
            try:
                async with client:
                    self._client = client
                    await self._session(client)
                    return
            except aiomqtt.MqttError as exc:
                server = self.server.url
                wait = self._reconnect.lost()
                self._log.warning("mqtt connection lost", error=str(exc), server=server,
                                  next_server=self.server.url, retry_in=round(wait, 2))
            finally:
                self.connected.clear()
                self._client = None
            await self._pause(wait)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Serve one connection: return after :meth:`close`, raise ``MqttError`` if lost."""
        qos = self.settings.qos

        async def publish(topic: str, payload: bytes, retain: bool) -> None:
            await client.publish(topic, payload, qos=qos, retain=retain)

        try:
            await self._open_session(lambda topic: subscribe(client, topic, qos), publish)
            await self._serve(client, publish)
        except asyncio.CancelledError:
            # A clean DISCONNECT suppresses the will, so say it ourselves.
            await self._say_offline(client)
            raise
        await self._say_offline(client)

    async def _publish_now(self, topic: str, payload: bytes, retain: bool) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=self.settings.qos, retain=retain)

    async def _serve(self, client: aiomqtt.Client, publish: Publish) -> None:
        reader = asyncio.create_task(self._read(client, publish),
                                     name=f"mqtt-read-{self.producer_id}")
        beats = asyncio.create_task(self._heartbeats(publish), name="mqtt-heartbeats")
        closing = asyncio.create_task(self._closing.wait(), name="mqtt-closing")
        try:
            await asyncio.wait((reader, beats, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, beats, closing):
                task.cancel()
            # Collect the helpers; their own cancellation is expected here.
            await asyncio.gather(reader, beats, closing, return_exceptions=True)
        if not closing.cancelled():
            return
        for task in (reader, beats):
            error = None if task.cancelled() else task.exception()
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

    async def _read(self, client: aiomqtt.Client, publish: Publish) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            kind = self._route(topic, payload, message.retain)
            if kind == "question":
                if message.retain:
                    self._log.warning("retained question ignored")
                elif self._may_answer():
                    await self._on_question(payload)
            elif kind == "presence":
                if self._needs_correction(payload):
                    await publish(self.presence_topic, self._presence(online=True), True)
            elif kind == "replica":
                await self._on_replica(topic, payload, message.retain, publish)
            elif kind == "checkpoint":
                self._checkpoint(topic, payload)

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
