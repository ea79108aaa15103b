"""The adapter's MQTT link on gmqtt: the default (``[mqtt] client = "gmqtt"``).

The same contract as :class:`producer_adapter.mqtt.MqttLink` (aiomqtt): outbound only; on
every (re)connect it subscribes to its questions (``$share`` where the server has them),
publishes ``Presence(online=True)`` retained and watches its own presence topic, saying
``online: true`` again when another replica's last will says otherwise; the will says
``online: false``; it reconnects with backoff by looping around a fresh client. gmqtt
spends much less CPU per message than aiomqtt on paho (its MQTT 5 properties and
per-publish overhead), as the broker's bus showed (bench/RESULTS.md).

The gmqtt plumbing every role shares (no reconnect of its own, the Receive-Maximum window,
TCP_NODELAY, no payloads in its logs) is :mod:`schemas.gmqtt_link`. Specific to the adapter:

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

from schemas.gmqtt_link import (
    Client,
    ConnectionGone,
    ConnectionLost,
    Window,
    close,
    gmqtt_logger,
    publish,
    unless_lost,
)

from ._link import BACKOFF_MAX, BACKOFF_MIN, OFFLINE_GRACE, LinkBase
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
        self._inbox: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue()
        """(topic, payload, retained) of each message on our topics, for :meth:`_read`."""

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
        delay = BACKOFF_MIN
        while not self._closing.is_set():
            wait = self._retry_in(delay)
            lost = asyncio.Event()

            def on_lost(_why: str, lost: asyncio.Event = lost) -> None:
                lost.set()  # this connection's event, even if its client calls back late

            window = Window()
            client = self._new_client(window, on_lost)
            try:
                await unless_lost(self._connect(client), lost)
                self._client, self._window = client, window
                delay = BACKOFF_MIN
                await self._session(client, window, lost, reader)
                return
            except (OSError, TimeoutError, ConnectionLost, gmqtt.MQTTConnectError) as exc:
                self._log.warning("mqtt connection lost", error=str(exc) or type(exc).__name__,
                                  retry_in=round(wait, 2), server=self.settings.url)
                delay = min(BACKOFF_MAX, delay * 2)
            finally:
                self.connected.clear()
                window.close()
                self._client = None
                await close(client)
            await self._pause(wait)

    def _new_client(self, window: Window, on_lost: Callable[[str], None]) -> Client:
        s = self.settings
        will = gmqtt.Message(self.presence_topic, self._will(), qos=s.qos, retain=True)
        client = Client(self.identifier, window=window, logger=_GMQTT_LOG, on_lost=on_lost,
                        will_message=will)
        if s.username is not None:
            client.set_auth_credentials(s.username, s.password)
        client.on_message = self._on_message
        return client

    async def _connect(self, client: Client) -> None:
        s = self.settings
        await client.connect(s.host, s.port, ssl=self._tls or False, keepalive=s.keepalive,
                             version=MQTTv50 if s.protocol == "5" else MQTTv311)

    async def _session(self, client: Client, window: Window, lost: asyncio.Event,
                       reader: asyncio.Task[None]) -> None:
        """Serve one connection: return after :meth:`close`, raise ``ConnectionLost`` if lost."""
        try:
            qos = self.settings.qos
            if self._taking_questions:
                await client.subscribed(self.subscription, qos)
            await unless_lost(self._send(client, window, self.presence_topic,
                                         self._presence(online=True), retain=True), lost)
            await client.subscribed(self.presence_topic, qos)
            if self._on_checkpoint is not None:
                await client.subscribed(self.checkpoint_filter, 1)
            self.connected.set()
            self._log.info("mqtt connected", server=self.settings.url,
                           subscription=self.subscription)
            await self._serve(lost, reader)
        except asyncio.CancelledError:
            # A clean DISCONNECT suppresses the will, so say it ourselves.
            await self._say_offline(client, window, lost)
            raise
        await self._say_offline(client, window, lost)

    async def _serve(self, lost: asyncio.Event, reader: asyncio.Task[None]) -> None:
        closing = asyncio.ensure_future(self._closing.wait())
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait({closing, gone, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (closing, gone):
                task.cancel()
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
        # Anything else is not ours: amqtt sends retained messages to every client.
        if topic in (self.question_topic, self.presence_topic):
            self._inbox.put_nowait((topic, bytes(payload), bool(properties.get("retain"))))
        else:
            self._checkpoint(topic, bytes(payload))
        return 0

    async def _read(self) -> None:
        while True:
            topic, payload, retained = await self._inbox.get()
            if topic == self.presence_topic:
                if self._wrongly_offline(payload):
                    await self._announce_online()
            elif retained:
                self._log.warning("retained question ignored")
            else:
                await self._on_question(payload)

    async def _announce_online(self) -> None:
        client, window = self._client, self._window
        if client is None or not self.connected.is_set():
            return  # the next connection announces itself
        try:
            await self._send(client, window, self.presence_topic, self._presence(online=True),
                             retain=True)
        except ConnectionGone:
            pass  # lost meanwhile: the next connection announces itself

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
