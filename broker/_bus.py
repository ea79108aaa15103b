"""What every MQTT adapter of the broker's :class:`~broker.ports.QuestionBus` shares: its
settings and callbacks, TLS set-up, the backoff bounds, and routing an incoming message."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence

import structlog

from schemas.topics import checkpoint_topic, presence_topic, reply_topic
from transport.settings import BACKOFF_MAX, BACKOFF_MIN, MqttServer, MqttSettings, Reconnect

from .errors import ConfigError

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "BusBase", "DroppedMessages"]

log = structlog.get_logger("samsvar.broker")


class DroppedMessages:
    """Incoming MQTT messages the bus dropped, by reason (read by the metrics)."""

    __slots__ = ("too_large",)

    def __init__(self) -> None:
        self.too_large = 0


class BusBase:
    """Common state of a bus; subclasses connect, read and publish with their client."""

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

    _LOST: tuple[type[BaseException], ...] = ()
    """What a subclass's session raises when its connection is refused or lost."""

    @property
    def server(self) -> MqttServer:
        """The server this bus is connected (or connecting) to."""
        return self._reconnect.server

    async def run(self, shutdown: asyncio.Event) -> None:
        """Stay connected until ``shutdown`` is set: one :meth:`_session` per connection,
        each lost one moving on to the next server of the list after a growing, jittered
        pause (reset once a session is subscribed)."""
        while not shutdown.is_set():
            try:
                await self._session(shutdown)
            except self._LOST as exc:
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

    async def _session(self, shutdown: asyncio.Event) -> None:
        """Connect, subscribe, call :meth:`_up` and serve until ``shutdown`` (return) or until
        the connection is lost (raise one of :attr:`_LOST`)."""
        raise NotImplementedError

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

    async def publish_question(self, producer_id: str, token: bytes, *, expiry_s: int) -> None:
        raise NotImplementedError

    async def publish_checkpoint(self, token: bytes) -> None:
        """Publish a signed checkpoint retained on ``{prefix}/checkpoint/{instance}`` (QoS 1)
        and return once the server has it; raises :class:`NotReady` when not connected."""
        raise NotImplementedError

    async def publish_questions(self, producer_ids: Sequence[str], token: bytes, *,
                                expiry_s: int, timeout_s: float) -> dict[str, Exception]:
        """Every publish at once, each bounded by ``timeout_s`` (a client that waits for
        each PUBACK, as aiomqtt does, would otherwise take a round trip per producer)."""
        results = await asyncio.gather(
            *(asyncio.wait_for(self.publish_question(pid, token, expiry_s=expiry_s), timeout_s)
              for pid in producer_ids),
            return_exceptions=True,
        )
        failures: dict[str, Exception] = {}
        for pid, result in zip(producer_ids, results, strict=True):
            if isinstance(result, Exception):
                failures[pid] = result
            elif isinstance(result, BaseException):  # cancelled: the query is gone
                raise result
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
