"""The adapter's MQTT link (gmqtt): outbound only, reconnecting, with retained presence.

One link per replica. On every (re)connect it subscribes to its questions (a ``$share``
subscription where the server has them, so replicas split the load), publishes
``Presence(online=True)`` retained (and refreshes it: heartbeats), and watches its own
presence topic: when another replica's last will says ``online: false`` while this one
lives, it says ``online: true`` again. The will says ``online: false`` when the connection
dies. Without shared subscriptions the replicas agree who answers
(:mod:`producer_adapter.replicas`). :meth:`MqttLink.run` stays connected by looping around
a fresh client per connection, moving through the server list with the backoff of
:class:`transport.settings.Reconnect`, until :meth:`MqttLink.close`.

gmqtt is the only client: it spends much less CPU per message than aiomqtt on paho (its
MQTT 5 properties and per-publish overhead), as the broker's bus showed (bench/RESULTS.md).
The gmqtt plumbing every role shares (no reconnect of its own, the Receive-Maximum window,
TCP_NODELAY, no payloads in its logs) is :mod:`transport.gmqtt_link`. Specific to the adapter:

* gmqtt hands over each message in a plain callback from its socket reader, which cannot
  wait. Questions go into a queue read by one task, which awaits ``on_question`` one at a
  time: back-pressure (the daemon waits for a free slot) and order. The queue outlives a
  connection: a question the server already counts as delivered is still answered after a
  reconnect;
* :meth:`MqttLink.publish` returns once the server has acknowledged the message: a reply
  lost with the connection raises :class:`TransportError`, and the daemon publishes it again.

Only this module (with :mod:`transport.gmqtt_link`) touches gmqtt; its errors become
:class:`TransportError` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import gmqtt  # type: ignore[import-untyped]  # gmqtt ships no type hints
import msgspec
import structlog
from gmqtt.mqtt.constants import MQTTv50, MQTTv311  # type: ignore[import-untyped]

from schemas.errors import HOSTILE_DECODE_ERRORS
from schemas.messages import Presence
from schemas.topics import checkpoint_topic, presence_topic, question_topic, replica_topic, shared
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

from .errors import AdapterConfigError, TransportError
from .replicas import SETTLE_S, Replicas

__all__ = ["OFFLINE_GRACE", "CheckpointHandler", "MqttLink", "QuestionHandler"]

_GMQTT_LOG: Final = gmqtt_logger("samsvar.adapter.gmqtt")

Publish = Callable[[str, bytes, bool], Awaitable[None]]
"""Publish (topic, payload, retain) on the current connection and wait for its ack."""
Subscribe = Callable[[str], Awaitable[None]]
"""Subscribe to a topic filter on the current connection; raises if refused."""

RETAIN_EVERY_S: Final = 20.0
"""At most this many seconds between retained copies of a heartbeat (see ``_heartbeats``)."""
OFFLINE_GRACE: Final = 2.0
"""Seconds to try to say ``online: false`` (or to unsubscribe) when stopping."""

QuestionHandler = Callable[[bytes], Awaitable[None]]
"""Called with each question's payload; may wait (back-pressure on the reader)."""
CheckpointHandler = Callable[[str, bytes], object]
"""Called with a broker instance and the checkpoint it published; quick, never raises."""

_presence_decoder: Final = msgspec.json.Decoder(Presence)


def _now_ms() -> int:
    return int(time.time() * 1000)


class MqttLink:
    """One outbound MQTT connection, kept up by :meth:`run` until :meth:`close`."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        producer_id: str,
        replica: str,
        on_question: QuestionHandler,
        connected: asyncio.Event | None = None,
        on_checkpoint: CheckpointHandler | None = None,
    ) -> None:
        self.settings = settings
        self.producer_id = producer_id
        self.identifier = f"samsvar-adapter-{producer_id}-{replica}"
        self.replica = replica
        self.question_topic = question_topic(settings.prefix, producer_id)
        self.presence_topic = presence_topic(settings.prefix, producer_id)
        self.replica_topic = replica_topic(settings.prefix, producer_id, replica)
        self._replica_prefix = replica_topic(settings.prefix, producer_id, "")
        self.replicas: Replicas | None = None if settings.shared_subscriptions else Replicas(
            producer=producer_id, me=replica, since=_now_ms(), interval=settings.heartbeat_s)
        """Who answers, on a server without shared subscriptions (None: ``$share`` splits)."""
        self._reconnect = Reconnect(settings.servers)
        self.too_large = 0
        """Incoming messages dropped for exceeding ``max_message_bytes``."""
        self.subscription = (
            shared(producer_id, self.question_topic)
            if settings.shared_subscriptions else self.question_topic
        )
        self.connected = connected if connected is not None else asyncio.Event()
        """Set while connected, subscribed and announced online."""
        try:
            self._tls = settings.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise AdapterConfigError(f"[mqtt] TLS files cannot be used: {exc}") from exc
        self._on_question = on_question
        self._on_checkpoint = on_checkpoint
        self.checkpoint_filter = checkpoint_topic(settings.prefix, "+")
        """The broker's checkpoints, to witness (subscribed when ``on_checkpoint`` is set)."""
        self._checkpoint_prefix = checkpoint_topic(settings.prefix, "")
        self._closing = asyncio.Event()
        self.not_ready: list[str] = []
        """Announced with ``online: true`` (the adapter's readiness reasons)."""
        self._taking_questions = True
        self._log = structlog.get_logger("samsvar.adapter").bind(
            producer=producer_id, replica=replica
        )
        self._client: Client | None = None
        self._window = Window()
        self._window.closed = True
        self._inbox: asyncio.Queue[tuple[str, str, bytes, bool]] = asyncio.Queue()
        """(kind, topic, payload, retained) of each message on our topics, for :meth:`_read`."""

    async def stop_questions(self) -> None:
        """Unsubscribe from questions, so replicas sharing the subscription get them."""
        self._taking_questions = False
        if self._client is None or not self.connected.is_set():
            return
        errors: tuple[type[Exception], ...] = (TimeoutError, ConnectionLost, ConnectionGone)
        try:
            async with asyncio.timeout(OFFLINE_GRACE):
                await self._leave_replicas(self._publish_now)
                await self._unsubscribe()
        except errors as exc:
            self._log.warning("could not unsubscribe from questions",
                              error=str(exc) or type(exc).__name__)

    def _checkpoint(self, topic: str, payload: bytes) -> bool:
        """Hand a message on a checkpoint topic to the witness; whether it was one."""
        if self._on_checkpoint is None or not topic.startswith(self._checkpoint_prefix):
            return False
        instance = topic[len(self._checkpoint_prefix):]
        if instance and "/" not in instance:
            self._on_checkpoint(instance, payload)
        return True

    def close(self) -> None:
        """Ask ``run`` to say ``online: false``, disconnect and return."""
        self._closing.set()

    @property
    def server(self) -> MqttServer:
        """The server this link is connected (or connecting) to."""
        return self._reconnect.server

    @property
    def transport(self) -> asyncio.Transport | None:
        """The current connection's asyncio transport, or None while disconnected (its
        socket: ``get_extra_info("socket")``)."""
        return None if self._client is None else self._client.transport

    def _presence(self, *, online: bool, since: int | None = None) -> bytes:
        now = _now_ms()
        return msgspec.json.encode(
            Presence(producer=self.producer_id, online=online,
                     since=now if since is None else since, at=now if online else 0,
                     heartbeat_ms=round(self.settings.heartbeat_s * 1000) if online else 0,
                     replica=self.replica, not_ready=self.not_ready if online else [])
        )

    def _will(self) -> bytes:
        """The last will: it cannot know when the connection will die, ``since`` 0 is unknown."""
        return self._presence(online=False, since=0)

    def _needs_correction(self, payload: bytes) -> bool:
        """Whether a message on our presence topic is anything but a valid "online" of this
        producer while we live (empty, malformed, another producer's, or offline: another
        replica's last will or our own old connection's), to be answered ``online: true``."""
        if self._closing.is_set():
            return False
        try:
            presence = _presence_decoder.decode(payload)
        except HOSTILE_DECODE_ERRORS:
            presence = None
        if presence is not None and presence.producer == self.producer_id and presence.online:
            return False
        self._log.info("presence was not a valid 'online' while alive; announcing online again",
                       presence="empty" if not payload else "malformed" if presence is None
                       else "offline" if presence.producer == self.producer_id
                       else "another producer's")
        return True

    def _too_large(self, topic: str, size: int) -> None:
        """Count (and log, without its content) a message above ``max_message_bytes``."""
        self.too_large += 1
        self._log.warning("mqtt message dropped", reason="too-large", topic=topic[:200],
                          bytes=size, limit=self.settings.max_message_bytes)

    def _route(self, topic: str, payload: bytes, retained: bool) -> str | None:
        """What an incoming message is: "question", "presence", "replica", "checkpoint"
        (handled here), or None (dropped: too large, or not ours)."""
        if len(payload) > self.settings.max_message_bytes:
            self._too_large(topic, len(payload))
            return None
        if topic == self.question_topic:
            return "question"
        if topic == self.presence_topic:
            return "presence"
        if self._on_checkpoint is not None and topic.startswith(self._checkpoint_prefix):
            return "checkpoint"
        if self.replicas is not None and topic.startswith(self._replica_prefix):
            replica = topic[len(self._replica_prefix):]
            if replica and "/" not in replica:
                return "replica"
        return None  # not ours: amqtt sends retained messages to every client

    def _may_answer(self) -> bool:
        """Whether this replica answers a question that arrives now."""
        if self.replicas is None or self.replicas.answers():
            return True
        self._log.debug("question left to the answering replica",
                        answerer=self.replicas.answerer(), fenced=self.replicas.fenced())
        return False

    async def _on_replica(self, topic: str, payload: bytes, retained: bool,
                          publish: Publish) -> None:
        """A replica's heartbeat; one long dead is cleared from the server."""
        assert self.replicas is not None
        replica = topic[len(self._replica_prefix):]
        if self.replicas.heard(replica, payload, retained=retained):
            self._log.info("clearing a long-dead replica's heartbeat", dead_replica=replica)
            await publish(topic, b"", True)

    async def _open_session(self, subscribe: Subscribe, publish: Publish) -> None:
        """On a new connection: announce this replica and hear the others (without shared
        subscriptions), subscribe to questions, say online, watch our presence."""
        if self.replicas is not None:
            # A session's replica is as old as the session: one coming back never takes
            # the answering over from the one that stood in for it.
            self.replicas.new_session(_now_ms())
            await subscribe(self._replica_prefix + "+")
            await publish(self.replica_topic, self._replica_beat(), True)
            await asyncio.sleep(SETTLE_S)
        if self._taking_questions:
            await subscribe(self.subscription)
        await publish(self.presence_topic, self._presence(online=True), True)
        await subscribe(self.presence_topic)
        if self._on_checkpoint is not None:
            await subscribe(self.checkpoint_filter)
        self.connected.set()
        self._reconnect.subscribed()
        self._log.info("mqtt connected", server=self.server.url, subscription=self.subscription,
                       answers=None if self.replicas is None else self.replicas.answers())

    def _replica_beat(self) -> bytes:
        assert self.replicas is not None
        return self._presence(online=True, since=self.replicas.since)

    async def _heartbeats(self, publish: Publish) -> None:
        """Refresh our presence (and this replica's heartbeat) every ``heartbeat_s``.

        Most refreshes are not retained: a clustered server may store a retained message
        through its replicated store, which stalls while the cluster recovers from a lost
        node (NATS blocks the whole connection for seconds). The retained copy, for a
        broker or replica that connects later, is refreshed every :data:`RETAIN_EVERY_S`."""
        since = _now_ms()
        every = max(1, int(RETAIN_EVERY_S // self.settings.heartbeat_s))
        beat = 0
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            beat += 1
            retain = beat % every == 0
            if self.replicas is not None and self._taking_questions:
                await publish(self.replica_topic, self._replica_beat(), retain)
            await publish(self.presence_topic, self._presence(online=True, since=since), retain)

    async def _leave_replicas(self, publish: Publish) -> None:
        """Stopping: clear this replica's heartbeat, so the next one answers at once."""
        if self.replicas is not None:
            await publish(self.replica_topic, b"", True)

    async def _pause(self, wait: float) -> None:
        """Wait ``wait`` seconds before reconnecting, or until closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._closing.wait()

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
        client = Client(session_client_id(self.identifier), window=window, logger=_GMQTT_LOG,
                        on_lost=on_lost, will_message=will, max_message_bytes=s.max_message_bytes,
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
