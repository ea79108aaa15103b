"""The adapter's MQTT link on gmqtt: the default (``[mqtt] client = "gmqtt"``).

The same contract as :class:`producer_adapter.mqtt.MqttLink` (aiomqtt): outbound only; on
every (re)connect it subscribes to its questions (``$share`` where the server has them),
publishes ``Presence(online=True)`` retained and watches its own presence topic, saying
``online: true`` again when another replica's last will says otherwise; the will says
``online: false``; it reconnects with backoff by looping around a fresh client. gmqtt
spends much less CPU per message than aiomqtt on paho (its MQTT 5 properties and
per-publish overhead), as the broker's bus showed (bench/RESULTS.md).

The gmqtt plumbing every role shares (no reconnect of its own, the Receive-Maximum window,
TCP_NODELAY, no payloads in its logs) is :mod:`transport.gmqtt_link`. Specific to the adapter:

* gmqtt hands over each message in a plain callback from its socket reader, which cannot
  wait. Questions go into a queue read by one task, which awaits ``on_question`` one at a
  time: back-pressure (the daemon waits for a free slot) and order stay as with aiomqtt.
  The queue outlives a connection: a question the server already counts as delivered is
  still answered after a reconnect;
* :meth:`GmqttLink.publish` returns once the server has acknowledged the message (as
  aiomqtt does): a reply lost with the connection raises :class:`TransportError`, and the
  daemon publishes it again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Final

import gmqtt  # type: ignore[import-untyped]  # gmqtt ships no type hints
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
from transport.settings import session_client_id

from ._link import OFFLINE_GRACE, LinkBase, Publish
from .errors import TransportError

__all__ = ["GmqttLink"]

_GMQTT_LOG: Final = gmqtt_logger("samsvar.adapter.gmqtt")


class GmqttLink(LinkBase):
    """One outbound MQTT connection, kept up by :meth:`run` until :meth:`close`."""

    _client: Client | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # as LinkBase
        super().__init__(*args, **kwargs)
        self._window = Window()
        self._window.closed = True
        self._inbox: asyncio.Queue[tuple[str, str, bytes, bool]] = asyncio.Queue()
        """(kind, topic, payload, retained) of each message on our topics, for :meth:`_read`."""

    _ERRORS = (ConnectionLost, ConnectionGone)

    async def _unsubscribe(self) -> None:
        assert self._client is not None
        await self._client.unsubscribed(self.subscription)

    # -- connecting ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; return after :meth:`close`."""
        reader = asyncio.create_task(self._read(), name=f"mqtt-read-{self.producer_id}")
        try:
            await self._stay_connected(reader)
        finally:
            reader.cancel()
            # Collect the reader; its own cancellation is expected here.
            await asyncio.gather(reader, return_exceptions=True)

    async def _stay_connected(self, reader: asyncio.Task[None]) -> None:
        while not self._closing.is_set():
            lost = asyncio.Event()

            def on_lost(_why: str, lost: asyncio.Event = lost) -> None:
                lost.set()  # this connection's event, even if its client calls back late

            window = Window()
            client = self._new_client(window, on_lost)
            try:
                await unless_lost(self._connect(client), lost, client)
                self._client, self._window = client, window
                await self._session(client, window, lost, reader)
                return
            except (OSError, TimeoutError, ConnectionLost, gmqtt.MQTTConnectError) as exc:
                server = self.server.url
                wait = self._reconnect.lost()
                self._log.warning("mqtt connection lost", error=str(exc) or type(exc).__name__,
                                  server=server, next_server=self.server.url,
                                  retry_in=round(wait, 2))
            finally:
                self.connected.clear()
                window.close()
                self._client = None
                await close(client)
            await self._pause(wait)

    def _new_client(self, window: Window, on_lost: Callable[[str], None]) -> Client:
        s, server = self.settings, self.server
        will = gmqtt.Message(self.presence_topic, self._will(), qos=s.qos, retain=True)
        client = Client(session_client_id(self.identifier), window=window, logger=_GMQTT_LOG, on_lost=on_lost,
                        will_message=will, max_message_bytes=s.max_message_bytes,
                        on_too_large=self._too_large, timeout=s.timeout_s)
        if server.username is not None:
            client.set_auth_credentials(server.username, server.password)
        client.on_message = self._on_message
        return client

    async def _connect(self, client: Client) -> None:
        s, server = self.settings, self.server
        await client.connect(server.host, server.port, ssl=(server.tls and self._tls) or False,
                             keepalive=s.keepalive,
                             version=MQTTv50 if s.protocol == "5" else MQTTv311)

    async def _session(self, client: Client, window: Window, lost: asyncio.Event,
                       reader: asyncio.Task[None]) -> None:
        """Serve one connection: return after :meth:`close`, raise ``ConnectionLost`` if lost."""
        qos = self.settings.qos

        async def publish(topic: str, payload: bytes, retain: bool) -> None:
            await unless_lost(self._send(client, window, topic, payload, retain=retain), lost,
                              client)

        try:
            await unless_lost(self._open_session(lambda topic: client.subscribed(topic, qos),
                                                 publish), lost, client)
            await self._serve(lost, reader, publish)
        except asyncio.CancelledError:
            # A clean DISCONNECT suppresses the will, so say it ourselves.
            await self._say_offline(client, window, lost)
            raise
        await self._say_offline(client, window, lost)

    async def _serve(self, lost: asyncio.Event, reader: asyncio.Task[None],
                     publish: Publish) -> None:
        closing = asyncio.ensure_future(self._closing.wait())
        gone = asyncio.ensure_future(lost.wait())
        beats = asyncio.ensure_future(self._heartbeats(publish))
        try:
            await asyncio.wait({closing, gone, reader, beats},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (closing, gone, beats):
                task.cancel()
            await asyncio.gather(beats, return_exceptions=True)
        if reader.done():
            reader.result()  # raises what stopped the reader (a bug in on_question)
        if not self._closing.is_set():
            raise ConnectionLost("connection lost")

    async def _say_offline(self, client: Client, window: Window, lost: asyncio.Event) -> None:
        self.connected.clear()
        try:
            async with asyncio.timeout(OFFLINE_GRACE):
                await unless_lost(self._send(client, window, self.presence_topic,
                                             self._presence(online=False), retain=True), lost)
        except (ConnectionLost, ConnectionGone, TimeoutError) as exc:
            self._log.warning("could not announce offline", error=str(exc) or type(exc).__name__)
        else:
            self._log.info("mqtt announced offline")

    # -- receiving ------------------------------------------------------------------------

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int,
                    properties: dict[str, Any]) -> int:
        retained = bool(properties.get("retain"))
        kind = self._route(topic, payload, retained)
        if kind == "checkpoint":
            self._checkpoint(topic, bytes(payload))  # quick, never raises
        elif kind is not None:
            self._inbox.put_nowait((kind, topic, bytes(payload), retained))
        return 0

    async def _read(self) -> None:
        while True:
            kind, topic, payload, retained = await self._inbox.get()
            if kind == "presence":
                if self._needs_correction(payload):
                    await self._announce(self.presence_topic, self._presence(online=True))
            elif kind == "replica":
                await self._on_replica(topic, payload, retained, self._announce_retained)
            elif retained:
                self._log.warning("retained question ignored")
            elif self._may_answer():
                await self._on_question(payload)

    async def _announce_retained(self, topic: str, payload: bytes, _retain: bool) -> None:
        await self._announce(topic, payload)

    async def _announce(self, topic: str, payload: bytes) -> None:
        """Publish retained on the current connection, if any, without waiting for the ack."""
        client, window = self._client, self._window
        if client is None or not self.connected.is_set():
            return  # the next connection announces itself
        try:
            await publish(client, window, topic, payload, qos=self.settings.qos, retain=True)
        except ConnectionGone:
            pass  # lost meanwhile: the next connection announces itself

    async def _publish_now(self, topic: str, payload: bytes, retain: bool) -> None:
        client, window = self._client, self._window
        assert client is not None
        await self._send(client, window, topic, payload, retain=retain)

    # -- publishing -----------------------------------------------------------------------

    async def _send(self, client: Client, window: Window, topic: str, payload: bytes, *,
                    retain: bool = False, expiry_s: int | None = None) -> None:
        """Publish and wait for the server's acknowledgement (QoS 1 and 2)."""
        qos = self.settings.qos
        await publish(client, window, topic, payload, qos=qos, retain=retain, expiry_s=expiry_s)
        if qos:
            await window.acked(window.last_mid)

    async def publish(self, topic: str, payload: bytes, *, expires_in: float | None = None) -> None:
        """Publish once the link is up (the caller bounds the wait); QoS from the settings.

        ``expires_in`` (seconds) becomes the MQTT 5 message expiry where the protocol has it.
        """
        await self.connected.wait()
        client, window = self._client, self._window
        if client is None:
            raise TransportError("not connected")
        expiry = (max(1, math.ceil(expires_in))
                  if expires_in is not None and self.settings.protocol == "5" else None)
        try:
            await self._send(client, window, topic, payload, expiry_s=expiry)
        except ConnectionGone as exc:
            raise TransportError(f"publish failed: {exc}") from exc
