"""The broker's MQTT adapter (gmqtt), behind the :class:`~broker.ports.QuestionBus` port.

Subscribes to its own reply topic ``{prefix}/r/{instance}`` and to ``{prefix}/presence/+``,
publishes questions on ``{prefix}/q/{producer}`` with an MQTT 5 message expiry, and stays
connected by looping around a fresh client per connection (:meth:`MqttBus.run`, stopped by
its ``shutdown`` event), moving through the server list with the backoff of
:class:`transport.settings.Reconnect`; while disconnected every producer counts as
unavailable. gmqtt spends about 40 % less of the broker's CPU per reply than aiomqtt did
(bench/RESULTS.md, "Choosing the broker's MQTT client"): it is the only client.

gmqtt specifics (no reconnect of its own, the Receive-Maximum window, TCP_NODELAY, no
payloads in its logs) are handled in :mod:`transport.gmqtt_link`, shared with the adapter's
link. ``publish_question`` returns once the question is written to the socket, not once it
is acknowledged. A question lost with the connection is covered by ``on_disconnect``,
which ends every wait at once.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final

import gmqtt  # type: ignore[import-untyped]  # gmqtt ships no type hints
import structlog
from gmqtt.mqtt.constants import MQTTv50, MQTTv311  # type: ignore[import-untyped]

from schemas.topics import checkpoint_topic, presence_topic, question_topic, reply_topic
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
from transport.settings import MqttServer, MqttSettings, Reconnect, session_client_id

from .errors import ConfigError, NotReady

__all__ = ["DroppedMessages", "MqttBus"]

log = structlog.get_logger("samsvar.broker")

_GMQTT_LOG: Final = gmqtt_logger("samsvar.broker.gmqtt")

_LOST: Final = (OSError, TimeoutError, ConnectionLost, gmqtt.MQTTConnectError)
"""What a session raises when its connection is refused or lost."""


class DroppedMessages:
    """Incoming MQTT messages the bus dropped, by reason (read by the metrics)."""

    __slots__ = ("too_large",)

    def __init__(self) -> None:
        self.too_large = 0


class MqttBus:
    """Publishes questions and feeds replies and presence to the core's callbacks."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        instance: str,
        on_reply: Callable[[bytes], None],
        on_presence: Callable[[str, bytes], None],
        on_disconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._instance = instance
        self._on_reply = on_reply
        self._on_presence = on_presence
        self._on_disconnect = on_disconnect
        self.connected = asyncio.Event()
        self.on_connect: Callable[[], None] = lambda: None
        """Called each time the bus is connected and subscribed."""
        self._reconnect = Reconnect(settings.servers)
        self.dropped = DroppedMessages()
        self._max_bytes = settings.max_message_bytes
        self.reply_topic = reply_topic(settings.prefix, instance)
        self.checkpoint_topic = checkpoint_topic(settings.prefix, instance)
        self._presence_prefix = presence_topic(settings.prefix, "")
        self._v5 = settings.protocol == "5"
        try:
            self._tls = settings.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[mqtt] TLS files cannot be used: {exc}") from exc
        self._client: Client | None = None
        self._window = Window()
        self._window.closed = True

    @property
    def server(self) -> MqttServer:
        """The server this bus is connected (or connecting) to."""
        return self._reconnect.server

    @property
    def transport(self) -> asyncio.Transport | None:
        """The current connection's asyncio transport, or None while disconnected (its
        socket: ``get_extra_info("socket")``)."""
        return None if self._client is None else self._client.transport

    async def run(self, shutdown: asyncio.Event) -> None:
        """Stay connected until ``shutdown`` is set: one :meth:`_session` per connection,
        each lost one moving on to the next server of the list after a growing, jittered
        pause (reset once a session is subscribed)."""
        while not shutdown.is_set():
            try:
                await self._session(shutdown)
            except _LOST as exc:
                if shutdown.is_set():
                    break
                server = self.server.url
                wait = self._reconnect.lost()
                log.warning("mqtt_disconnected", server=server,
                            reason=str(exc) or type(exc).__name__,
                            next_server=self.server.url, retry_in=round(wait, 2))
            else:
                wait = 0.0
            finally:
                self._down()
            if shutdown.is_set():
                break
            try:
                await asyncio.wait_for(shutdown.wait(), wait)
            except TimeoutError:
                pass

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
        client = Client(session_client_id(f"samsvar-broker-{self._instance}"), window=window,
                        logger=_GMQTT_LOG, on_lost=on_lost, max_message_bytes=s.max_message_bytes,
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

    def _up(self) -> None:
        """Connected and subscribed: questions may go out, and a new outage starts over."""
        self._reconnect.subscribed()
        self.connected.set()
        self.on_connect()

    def _down(self) -> None:
        """The connection is gone: every wait on it ends (``on_disconnect``)."""
        if self.connected.is_set():
            self.connected.clear()
            self._on_disconnect()

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

    def _dispatch(self, topic: str, payload: bytes) -> None:
        """Route one incoming message to the core. Never raises."""
        if len(payload) > self._max_bytes:
            self._too_large(topic, len(payload))
            return
        try:
            if topic == self.reply_topic:
                self._on_reply(payload)
            elif topic.startswith(self._presence_prefix):
                producer = topic[len(self._presence_prefix):]
                if producer and "/" not in producer:
                    self._on_presence(producer, payload)
            # anything else: a retained message amqtt sent us unasked; ignore it
        except Exception as exc:  # noqa: BLE001 - one hostile message must not stop the broker
            # Synchronous callbacks: no cancellation can pass through here.
            log.error("mqtt_message_failed", topic=topic, error=type(exc).__name__,
                      detail=str(exc)[:200])

    def _too_large(self, topic: str, size: int) -> None:
        """Count (and log, without its content) a message above ``max_message_bytes``."""
        self.dropped.too_large += 1
        log.warning("mqtt_message_dropped", reason="too-large", topic=topic[:200], bytes=size,
                    limit=self._max_bytes)
