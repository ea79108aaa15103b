"""What every MQTT link of the adapter shares, whichever client library drives it: its
settings, topics and identity, the presence it announces (and refreshes: heartbeats),
the servers it moves between and the backoff, which replica answers without shared
subscriptions (:mod:`producer_adapter.replicas`), the size limit, and closing.

The links themselves: :class:`producer_adapter.mqtt.MqttLink` (aiomqtt) and
:class:`producer_adapter.mqtt_gmqtt.GmqttLink` (gmqtt, the default); ``[mqtt] client``
picks one (:func:`producer_adapter.daemon.link_class`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
import structlog

from schemas.errors import HOSTILE_DECODE_ERRORS
from schemas.messages import Presence
from schemas.topics import checkpoint_topic, presence_topic, question_topic, replica_topic, shared
from transport.settings import BACKOFF_MAX, BACKOFF_MIN, MqttServer, MqttSettings, Reconnect

from .errors import AdapterConfigError
from .replicas import SETTLE_S, Replicas

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "OFFLINE_GRACE", "CheckpointHandler", "LinkBase",
           "QuestionHandler"]

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


class LinkBase:
    """Common state of a link; subclasses connect, serve and publish with their client."""

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

    _client: object | None = None
    _ERRORS: tuple[type[Exception], ...] = ()
    """What the subclass's client raises when the connection goes mid-request."""

    async def stop_questions(self) -> None:
        """Unsubscribe from questions, so replicas sharing the subscription get them."""
        self._taking_questions = False
        if self._client is None or not self.connected.is_set():
            return
        errors: tuple[type[Exception], ...] = (TimeoutError, *self._ERRORS)
        try:
            async with asyncio.timeout(OFFLINE_GRACE):
                await self._leave_replicas(self._publish_now)
                await self._unsubscribe()
        except errors as exc:
            self._log.warning("could not unsubscribe from questions",
                              error=str(exc) or type(exc).__name__)

    async def _unsubscribe(self) -> None:
        """Unsubscribe from :attr:`subscription` and wait for the server's answer."""
        raise NotImplementedError

    def _checkpoint(self, topic: str, payload: bytes) -> bool:
        """Hand a message on a checkpoint topic to the witness; whether it was one."""
        if self._on_checkpoint is None or not topic.startswith(self._checkpoint_prefix):
            return False
        instance = topic[len(self._checkpoint_prefix):]
        if instance and "/" not in instance:
            self._on_checkpoint(instance, payload)
        return True

    async def _publish_now(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish on the current connection and wait for the ack (see :data:`Publish`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Ask ``run`` to say ``online: false``, disconnect and return."""
        self._closing.set()

    @property
    def server(self) -> MqttServer:
        """The server this link is connected (or connecting) to."""
        return self._reconnect.server

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
