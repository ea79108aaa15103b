"""What every MQTT link of the adapter shares, whichever client library drives it: its
settings, topics and identity, the presence it announces, the backoff, and closing.

The links themselves: :class:`producer_adapter.mqtt.MqttLink` (aiomqtt) and
:class:`producer_adapter.mqtt_gmqtt.GmqttLink` (gmqtt, the default); ``[mqtt] client``
picks one (:func:`producer_adapter.daemon.link_class`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
import structlog

from schemas.errors import HOSTILE_DECODE_ERRORS
from schemas.messages import Presence
from schemas.topics import checkpoint_topic, presence_topic, question_topic, shared
from schemas.transport import MqttSettings

from .errors import AdapterConfigError

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "OFFLINE_GRACE", "CheckpointHandler", "LinkBase",
           "QuestionHandler"]

BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 5.0
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
        self.question_topic = question_topic(settings.prefix, producer_id)
        self.presence_topic = presence_topic(settings.prefix, producer_id)
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

    def close(self) -> None:
        """Ask ``run`` to say ``online: false``, disconnect and return."""
        self._closing.set()

    def _presence(self, *, online: bool, since: int | None = None) -> bytes:
        return msgspec.json.encode(
            Presence(producer=self.producer_id, online=online,
                     since=_now_ms() if since is None else since,
                     not_ready=self.not_ready if online else [])
        )

    def _will(self) -> bytes:
        """The last will: it cannot know when the connection will die, ``since`` 0 is unknown."""
        return self._presence(online=False, since=0)

    def _wrongly_offline(self, payload: bytes) -> bool:
        """Whether a message on our presence topic says we are offline while we live: another
        replica's last will (or our own old connection's), to be answered ``online: true``."""
        try:
            presence = _presence_decoder.decode(payload)
        except HOSTILE_DECODE_ERRORS:
            self._log.warning("malformed presence message ignored")
            return False
        if presence.producer != self.producer_id or presence.online or self._closing.is_set():
            return False
        self._log.info("presence said offline while alive; announcing online again")
        return True

    @staticmethod
    def _retry_in(delay: float) -> float:
        """Seconds until the next connection attempt: ``delay`` (capped) with jitter."""
        return min(BACKOFF_MAX, delay) * random.uniform(0.5, 1.0)  # jitter, not crypto

    async def _pause(self, wait: float) -> None:
        """Wait ``wait`` seconds before reconnecting, or until closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._closing.wait()
