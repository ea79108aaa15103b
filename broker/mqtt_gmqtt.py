"""The broker's MQTT adapter on gmqtt, behind the :class:`~broker.ports.QuestionBus` port.

The same contract as :class:`broker.mqtt.MqttBus` (aiomqtt): subscribes to its own reply
topic ``{prefix}/r/{instance}`` and to ``{prefix}/presence/+``, publishes questions on
``{prefix}/q/{producer}`` with an MQTT 5 message expiry, reconnects with backoff by looping
around a fresh client; while disconnected every producer counts as unavailable. The
default (``[mqtt] client = "gmqtt"``): it spends about 40 % less of the broker's CPU per
reply than aiomqtt (bench/RESULTS.md, "Choosing the broker's MQTT client").

gmqtt specifics handled here:

* its own reconnect is switched off (:meth:`_Client.reconnect` does nothing): ``run`` owns
  reconnecting, so ``connected`` and ``on_disconnect`` mean the same as with aiomqtt;
* gmqtt does not queue publishes beyond the server's Receive Maximum (Mosquitto: 20) but
  raises ``OverflowError``; :class:`_Window` makes a publisher wait for the next PUBACK
  instead, in order;
* ``publish_question`` returns once the question is written to the socket, not once it is
  acknowledged (aiomqtt waits for the PUBACK). A question lost with the connection is
  covered by ``on_disconnect``, which ends every wait at once;
* TCP_NODELAY: asyncio's socket transports set it on every TCP socket themselves
  (``asyncio.selector_events._SelectorSocketTransport``), TLS or not; a test checks it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import gmqtt  # type: ignore[import-untyped]  # gmqtt ships no type hints
import structlog
from gmqtt.mqtt.constants import MQTTv50, MQTTv311  # type: ignore[import-untyped]
from gmqtt.storage import PersistentStorage  # type: ignore[import-untyped]

from schemas.topics import presence_topic, question_topic
from schemas.transport import MqttSettings

from ._bus import BACKOFF_MAX, BACKOFF_MIN, BusBase
from .errors import NotReady

__all__ = ["GmqttBus"]

log = structlog.get_logger("samsvar.broker")

_TIMEOUT: Final = 10.0
"""Seconds for connecting (CONNACK) and each SUBACK, as aiomqtt's ``timeout=10``."""

T = TypeVar("T")


class _NoPayloads(logging.Filter):
    """gmqtt logs whole packets on some errors (and at debug level): a reply's records
    must never reach a log, so its log lines keep their text but lose their arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.args = None
        return True


_GMQTT_LOG: Final = logging.getLogger("samsvar.broker.gmqtt")
for _name in ("samsvar.broker.gmqtt", "gmqtt.client", "gmqtt.mqtt.handler",
              "gmqtt.mqtt.protocol", "gmqtt.mqtt.package", "gmqtt.mqtt.connection"):
    logging.getLogger(_name).addFilter(_NoPayloads())


class _ConnectionLost(Exception):
    """The connection went away (or was refused) while connecting or subscribing."""


class _Client(gmqtt.Client):  # type: ignore[misc]
    """A gmqtt client that never reconnects by itself and reports when it would have.

    gmqtt calls ``reconnect`` when the server disconnects, the socket closes, a keepalive
    is missed or a CONNACK refuses us (also to downgrade MQTT 5 to 3.1.1): each is the end
    of this connection for :class:`GmqttBus`, which then connects a fresh client.
    """

    def __init__(self, *args: Any, on_lost: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_lost = on_lost

    async def reconnect(self, delay: bool = False) -> None:
        self._on_lost("connection lost")


class _Window(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1/2 publishes, and a queue of publishers waiting
    for room in the server's Receive Maximum. gmqtt calls :meth:`remove_message_by_mid` on
    each PUBACK (PUBCOMP), after freeing the packet id: the next publisher in line goes."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self._wake_next()

    def _wake_next(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def queued(self) -> bool:
        return bool(self._waiting)

    async def turn(self, *, first: bool = False) -> None:
        """Until a packet id is free (after the next PUBACK); raises once closed."""
        if self.closed:
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
        waiter = asyncio.get_running_loop().create_future()
        if first:
            self._waiting.appendleft(waiter)
        else:
            self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._wake_next()  # our turn came, but we are gone: pass it on
            raise

    def close(self) -> None:
        """The connection is gone: nobody waits for room in it any more."""
        self.closed = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(
                    NotReady("mqtt-disconnected", "the broker is not connected to MQTT"))


class GmqttBus(BusBase):
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
        super().__init__(settings, instance=instance, on_reply=on_reply,
                         on_presence=on_presence, on_disconnect=on_disconnect)
        self._client: _Client | None = None
        self._window = _Window()
        self._window.closed = True

    # -- connecting ------------------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event) -> None:
        """Stay connected until ``shutdown`` is set."""
        backoff = BACKOFF_MIN
        while not shutdown.is_set():
            lost = asyncio.Event()
            reason: list[str] = []

            def on_lost(why: str, lost: asyncio.Event = lost, reason: list[str] = reason) -> None:
                if not lost.is_set():
                    reason.append(why)
                    lost.set()

            window = _Window()
            client = self._new_client(window, on_lost)
            try:
                await self._connect(client, lost)
                self._client, self._window = client, window
                self.connected.set()
                backoff = BACKOFF_MIN
                log.info("mqtt_connected", url=self._settings.url, instance=self._instance,
                         client="gmqtt")
                stop = asyncio.ensure_future(shutdown.wait())
                gone = asyncio.ensure_future(lost.wait())
                try:
                    await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (stop, gone):
                        task.cancel()
                if not shutdown.is_set():
                    raise _ConnectionLost(reason[0] if reason else "connection lost")
            except (OSError, TimeoutError, _ConnectionLost, gmqtt.MQTTConnectError) as exc:
                if shutdown.is_set():
                    break
                log.warning("mqtt_disconnected", reason=str(exc) or type(exc).__name__,
                            retry_in=round(backoff, 2))
            finally:
                window.close()
                self._client = None
                if self.connected.is_set():
                    self.connected.clear()
                    self._on_disconnect()
                await self._close(client)
            if shutdown.is_set():
                break
            try:
                await asyncio.wait_for(shutdown.wait(), backoff * (0.5 + random.random()))
            except TimeoutError:
                pass
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _new_client(self, window: _Window, on_lost: Callable[[str], None]) -> _Client:
        s = self._settings
        client = _Client(f"samsvar-broker-{self._instance}", clean_session=True,
                         persistent_storage=window, logger=_GMQTT_LOG, on_lost=on_lost)
        client.stop_reconnect()
        if s.username is not None:
            client.set_auth_credentials(s.username, s.password)
        client.on_message = self._on_message
        client.on_disconnect = lambda _client, _packet, _exc=None: on_lost("connection lost")
        return client

    async def _connect(self, client: _Client, lost: asyncio.Event) -> None:
        s = self._settings
        version = MQTTv50 if self._v5 else MQTTv311
        await self._unless_lost(
            client.connect(s.host, s.port, ssl=self._tls or False, keepalive=s.keepalive,
                           version=version), lost)
        acks: dict[int, asyncio.Future[tuple[int, ...]]] = {}

        def on_subscribe(_client: Any, mid: int, granted: tuple[int, ...], _props: Any) -> None:
            future = acks.get(mid)
            if future is not None and not future.done():
                future.set_result(granted)

        client.on_subscribe = on_subscribe
        loop = asyncio.get_running_loop()
        for topic, qos in ((self.reply_topic, s.qos),
                           (presence_topic(s.prefix, "+"), 1)):
            future = acks[client.subscribe(gmqtt.Subscription(topic, qos=qos))] = (
                loop.create_future())
            granted = await self._unless_lost(future, lost)
            if any(code >= 0x80 for code in granted):
                raise _ConnectionLost(f"the server refused the subscription to {topic} "
                                      f"(reason {granted[0]:#x})")

    @staticmethod
    async def _unless_lost(aw: Awaitable[T], lost: asyncio.Event) -> T:
        """``aw``'s result within :data:`_TIMEOUT`, unless the connection goes first."""
        work = asyncio.ensure_future(aw)
        gone = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait({work, gone}, timeout=_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone):
                task.cancel()
        if work in done:
            return work.result()
        if gone in done:
            raise _ConnectionLost("the server refused or closed the connection")
        raise TimeoutError(f"no answer from the MQTT server within {_TIMEOUT:.0f} s")

    @staticmethod
    async def _close(client: _Client) -> None:
        """Say goodbye if the socket is still open; never raises."""
        try:
            if client._connection is not None and not client._connection.is_closing():
                async with asyncio.timeout(2):
                    await client.disconnect()
        except Exception as exc:  # noqa: BLE001 - the connection is finished either way
            log.debug("mqtt_close_failed", error=type(exc).__name__)

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
        qos = self._settings.qos
        properties = {"message_expiry_interval": max(1, expiry_s)} if self._v5 else {}
        topic = question_topic(self._settings.prefix, producer_id)
        if window.queued:  # others wait for room: keep their order
            await window.turn()
        while True:
            if window.closed:
                raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
            try:
                client.publish(topic, token, qos=qos, **properties)
                return
            except OverflowError:  # the server's Receive Maximum is in flight
                await window.turn(first=True)
