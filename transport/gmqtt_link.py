"""How every role drives gmqtt: one connection per client object, the role reconnects.

The broker's bus (``broker/mqtt.py``) and the adapter's link
(``producer_adapter/mqtt.py``) both loop around a fresh :class:`Client` per
connection. What they share lives here, so the gmqtt plumbing is written once:

* gmqtt's own reconnect is switched off (:meth:`Client.reconnect` reports the loss
  instead): the role owns reconnecting with its backoff, so a lost connection means the
  same on every role;
* gmqtt does not queue publishes beyond the server's Receive Maximum (Mosquitto: 20) but
  raises ``OverflowError``; :class:`Window` makes a publisher wait for the next PUBACK
  instead, in order. When the connection is gone it raises :class:`ConnectionGone`, which
  each role translates into its own error;
* ``Client.publish`` returns once the packet is written to the socket; :meth:`Window.acked`
  waits for its PUBACK where a role needs that (a lost connection ends the wait);
* gmqtt logs whole packets on some errors and at debug level: :class:`NoPayloads` keeps
  questions and replies (personal data) out of every log;
* gmqtt reads through an asyncio ``StreamReader`` and a reader task: each chunk is
  copied in, wakes the task, and is copied again into its buffer. :class:`Protocol`
  parses packets in ``data_received``, where the chunk arrives;
* a packet larger than the role's limit (``[mqtt] max_message_bytes`` plus room for the
  topic and properties) is never buffered: :class:`Protocol` reads past it, acknowledges
  it (QoS 1) and reports it (``on_too_large``); smaller messages with a payload above the
  limit are dropped by the role;
* a refused CONNACK or SUBACK is reported with its reason code (gmqtt's own log line
  loses it to :class:`NoPayloads`);
* TCP_NODELAY: asyncio's socket transports set it on every TCP socket themselves
  (``asyncio.selector_events._SelectorSocketTransport``), TLS or not, so gmqtt needs no
  socket options (paho does: :data:`transport.settings.NODELAY`); tests check it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, TypeVar

import gmqtt  # type: ignore[import-untyped]  # gmqtt ships no type hints
import structlog
from gmqtt.mqtt.connection import MQTTConnection  # type: ignore[import-untyped]
from gmqtt.mqtt.protocol import BaseMQTTProtocol, MQTTProtocol  # type: ignore[import-untyped]
from gmqtt.storage import PersistentStorage  # type: ignore[import-untyped]

from .settings import DEFAULT_MAX_MESSAGE_BYTES, HEADROOM, suback_reason

__all__ = [
    "TIMEOUT",
    "Client",
    "CoalescingTransport",
    "ConnectionGone",
    "ConnectionLost",
    "NoPayloads",
    "Protocol",
    "Window",
    "close",
    "gmqtt_logger",
    "publish",
    "unless_lost",
]

log = structlog.get_logger("samsvar.gmqtt")

TIMEOUT: Final = 10.0
"""Seconds for connecting (CONNACK) and each SUBACK or UNSUBACK, as aiomqtt's ``timeout=10``."""

T = TypeVar("T")


class NoPayloads(logging.Filter):
    """gmqtt logs whole packets on some errors (and at debug level): a question's or reply's
    records must never reach a log, so its log lines keep their text but lose their arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.args = None
        return True


for _name in ("gmqtt.client", "gmqtt.mqtt.handler", "gmqtt.mqtt.protocol",
              "gmqtt.mqtt.package", "gmqtt.mqtt.connection"):
    logging.getLogger(_name).addFilter(NoPayloads())


def gmqtt_logger(name: str) -> logging.Logger:
    """The logger a role hands its gmqtt clients (e.g. ``samsvar.broker.gmqtt``), filtered.

    Call once per name (at import): every call adds another filter."""
    logger = logging.getLogger(name)
    logger.addFilter(NoPayloads())
    return logger


class ConnectionLost(Exception):
    """The connection went away (or was refused) while connecting or subscribing."""


class ConnectionGone(Exception):
    """There is no connection to publish on (any more); each role says so in its own terms."""


class Window(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1/2 publishes, and a queue of publishers waiting
    for room in the server's Receive Maximum. gmqtt calls :meth:`remove_message_by_mid` on
    each PUBACK (PUBCOMP), after freeing the packet id: the next publisher in line goes."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self.last_mid = 0
        """The packet id of the latest QoS 1/2 publish (read it right after publishing)."""
        self.closed = False

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        ack = self._acks.pop(mid, None)
        if ack is not None and not ack.done():
            ack.set_result(None)
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
            raise ConnectionGone("not connected to MQTT")
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

    async def acked(self, mid: int) -> None:
        """Until the server acknowledges publish ``mid``; raises if the connection goes."""
        if self.closed:
            raise ConnectionGone("not connected to MQTT")
        if mid not in self._messages:  # acknowledged already (or never stored: QoS 0)
            return
        ack = self._acks[mid] = asyncio.get_running_loop().create_future()
        await ack

    def close(self) -> None:
        """The connection is gone: nobody waits for room in it, or for an ack, any more."""
        self.closed = True
        waiters = [*self._waiting, *self._acks.values()]
        self._waiting.clear()
        self._acks.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionGone("the MQTT connection was lost"))


class CoalescingTransport:
    """A transport whose writes in one turn of the event loop leave in one send.

    gmqtt writes every packet on its own, and on loopback TCP each ``send`` also does the
    receiver's work in the kernel: 39 µs of wall time per call in the broker under load
    (cProfile), ten calls per answer at fan-out 5 (five questions, five PUBACKs).
    Questions published together and the PUBACKs for replies read in one chunk now share
    a send; a packet leaves at the end of the loop turn that wrote it, so nothing waits
    longer than the code it came with.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self._pending: list[bytes | bytearray] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Protocol(MQTTProtocol):  # type: ignore[misc]
    """gmqtt's MQTT protocol, parsing packets in ``data_received`` rather than in a task
    that reads them back from a ``StreamReader``: one wake-up and two copies less per chunk.

    Packets are handed to the connection (and on to gmqtt's handler) in the order they
    arrive, as the reader task did; the end of the stream closes the transport, as the
    reader task did on an empty read."""

    def __init__(self, *args: Any, max_packet: int = DEFAULT_MAX_MESSAGE_BYTES + HEADROOM,
                 on_too_large: Callable[[str, int], None] = lambda _topic, _size: None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unparsed = b""
        """The start of a packet whose rest has not arrived yet."""
        self._max_packet = max_packet
        self._on_too_large = on_too_large
        self._skip = 0
        """Bytes of an oversized packet still to be read past."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        BaseMQTTProtocol.connection_made(self, transport)  # not MQTTProtocol's: no reader task

    def data_received(self, data: bytes) -> None:
        while data:
            if self._skip:
                skipped = min(self._skip, len(data))
                self._skip -= skipped
                data = data[skipped:]
                continue
            buffer = self._unparsed + data if self._unparsed else data
            self._unparsed = b""
            parsed = self._read_packet(buffer)
            if parsed < 0:  # a remaining length beyond MQTT's four bytes: not MQTT
                self._transport.close()
                return
            rest = buffer[parsed:]
            total = self._oversized(rest)
            if total is None:
                self._unparsed = rest
                return
            data = rest[total:]
            self._skip = max(0, total - len(rest))

    def _oversized(self, rest: bytes) -> int | None:
        """If ``rest`` starts a packet above the limit whose first bytes have arrived:
        report it, acknowledge it (QoS 1) and return its length, to be read past. Else
        None (``rest`` is the start of a packet of an allowed size)."""
        size, header = 0, 1
        while True:
            if header >= len(rest) or header > 4:
                return None
            byte = rest[header]
            size += (byte & 0x7F) << (7 * (header - 1))
            header += 1
            if not byte & 0x80:
                break
        if size <= self._max_packet:
            return None
        kind, qos = rest[0] >> 4, (rest[0] >> 1) & 3
        topic = ""
        if kind == 3:  # PUBLISH: its topic (and packet id) are needed to report (and ack) it
            if len(rest) < header + 2:
                return None
            length = int.from_bytes(rest[header:header + 2], "big")
            start = header + 2 + length
            if len(rest) < start + (2 if qos else 0):
                return None
            topic = rest[header + 2:start].decode("utf-8", "replace")
            if qos == 1:
                self._transport.write(b"\x40\x02" + rest[start:start + 2])  # PUBACK
        self._on_too_large(topic, size)
        return header + size

    def eof_received(self) -> bool:
        return False  # the server is done: close (gmqtt's reader closed on an empty read)


class Client(gmqtt.Client):  # type: ignore[misc]
    """A gmqtt client for one connection: it never reconnects by itself, reports when it
    would have, and lets its role await each SUBACK and UNSUBACK.

    gmqtt calls ``reconnect`` when the server disconnects, the socket closes, a keepalive
    is missed or a CONNACK refuses us (also to downgrade MQTT 5 to 3.1.1): each is the end
    of this connection, and ``on_lost`` tells the role, which then connects a fresh client.
    """

    @property
    def transport(self) -> asyncio.Transport | None:
        """This connection's asyncio transport (``get_extra_info("socket")``: its socket),
        or None before connecting; gmqtt keeps it private."""
        connection = self._connection
        return None if connection is None else connection._transport

    def __init__(self, client_id: str, *, window: Window, logger: logging.Logger,
                 on_lost: Callable[[str], None], max_message_bytes: int,
                 on_too_large: Callable[[str, int], None], timeout: float = TIMEOUT,
                 **kwargs: Any) -> None:
        super().__init__(client_id, clean_session=True, persistent_storage=window,
                         logger=logger, **kwargs)
        self.stop_reconnect()
        self._on_lost = on_lost
        self._max_packet = max_message_bytes + HEADROOM
        self.timeout = timeout
        """Seconds for the CONNACK and each SUBACK or UNSUBACK."""
        self._on_too_large = on_too_large
        self._window = window
        self._answers: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._lost: str | None = None
        self.on_disconnect = lambda _client, _packet, _exc=None: self._lose("connection lost")
        self.on_subscribe = lambda _client, mid, codes, _props: self._answer(mid, codes)
        self.on_unsubscribe = lambda _client, mid, codes: self._answer(mid, codes)

    async def reconnect(self, delay: bool = False) -> None:
        self._lose("connection lost")

    async def _create_connection(self, host: str, port: int, ssl: Any, clean_session: bool,
                                 keepalive: int) -> Any:
        """gmqtt 0.8's ``Client._create_connection`` with our :class:`Protocol` and a
        :class:`CoalescingTransport`."""
        self._exit_reconnecting_state()
        self._package_handler.clear_topics_aliases()
        self._connack_received.clear()
        self._connection_lost.clear()
        factory = partial(Protocol, connection_state=self._connection_state,
                          id_generator=self._package_handler.id_generator,
                          max_packet=self._max_packet, on_too_large=self._on_too_large)
        transport, protocol = await asyncio.get_running_loop().create_connection(
            factory, host, port, ssl=ssl)
        coalescing = CoalescingTransport(transport)
        protocol._transport = coalescing
        return MQTTConnection(coalescing, protocol, clean_session, keepalive,
                              package_handler=self._package_handler, logger=self._logger)

    @property
    def lost_reason(self) -> str:
        """Why this connection ended: a refused CONNACK's reason code where there was one."""
        refused = self._package_handler._error
        if isinstance(refused, gmqtt.MQTTConnectError):
            return (f"the server refused the connection: CONNACK reason "
                    f"{refused._code:#04x} ({refused.message})")
        return self._lost or "the server refused or closed the connection"

    def _lose(self, why: str) -> None:
        why = self.lost_reason if self._lost is None and why == "connection lost" else why
        self._lost = self._lost or why
        answers = list(self._answers.values())
        self._answers.clear()
        for future in answers:
            if not future.done():
                future.set_exception(ConnectionLost(why))
        self._on_lost(why)

    def _answer(self, mid: int, codes: tuple[int, ...]) -> None:
        future = self._answers.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(codes)

    async def subscribed(self, topic: str, qos: int) -> None:
        """Subscribe and wait for the SUBACK; raises :class:`ConnectionLost` if refused."""
        granted = await self._request(lambda: self.subscribe(gmqtt.Subscription(topic, qos=qos)))
        refused = [code for code in granted if code >= 0x80]
        if refused:
            raise ConnectionLost(f"the server refused the subscription to {topic}: SUBACK "
                                 f"reason {refused[0]:#04x} ({suback_reason(refused[0])})")

    async def unsubscribed(self, topic: str) -> tuple[int, ...]:
        """Unsubscribe and wait for the UNSUBACK: its reason codes (none in MQTT 3.1.1)."""
        return await self._request(lambda: self.unsubscribe(topic))

    async def _request(self, send: Callable[[], int]) -> tuple[int, ...]:
        """Send a (UN)SUBSCRIBE, waiting for a free packet id, and await its answer."""
        while True:
            if self._lost is not None:
                raise ConnectionLost(self._lost)
            if self._window.closed:
                raise ConnectionGone("not connected to MQTT")
            try:
                mid = send()
                break
            except OverflowError:  # the server's Receive Maximum is in flight
                await self._window.turn(first=True)
        future: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._answers[mid] = future
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise TimeoutError(
                f"no answer from the MQTT server within {self.timeout:g} s") from None


async def unless_lost(aw: Awaitable[T], lost: asyncio.Event, client: Client | None = None) -> T:
    """``aw``'s result within ``client``'s timeout (:data:`TIMEOUT` without one), unless
    the connection goes first (then :class:`ConnectionLost` says why, as ``client`` knows it)."""
    timeout = client.timeout if client is not None else TIMEOUT
    work = asyncio.ensure_future(aw)
    gone = asyncio.ensure_future(lost.wait())
    try:
        done, _ = await asyncio.wait({work, gone}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, gone):
            task.cancel()
    if work in done:
        try:
            return work.result()
        except gmqtt.MQTTConnectError as exc:  # a refused CONNACK: say so with its code
            if client is None:
                raise
            raise ConnectionLost(client.lost_reason) from exc
    if gone in done:
        raise ConnectionLost(client.lost_reason if client is not None
                             else "the server refused or closed the connection")
    raise TimeoutError(f"no answer from the MQTT server within {timeout:g} s")


async def publish(client: Client, window: Window, topic: str, payload: bytes, *, qos: int,
                  retain: bool = False, expiry_s: int | None = None) -> None:
    """Write one publish to the socket, waiting in line while the server's Receive Maximum
    is in flight; raises :class:`ConnectionGone` once ``window`` is closed.

    ``expiry_s`` becomes the MQTT 5 message expiry (leave it None on MQTT 3.1.1)."""
    properties = {} if expiry_s is None else {"message_expiry_interval": expiry_s}
    if window.queued:  # others wait for room: keep their order
        await window.turn()
    while True:
        if window.closed:
            raise ConnectionGone("not connected to MQTT")
        try:
            client.publish(topic, payload, qos=qos, retain=retain, **properties)
            return
        except OverflowError:  # the server's Receive Maximum is in flight
            await window.turn(first=True)


async def close(client: Client) -> None:
    """Say goodbye if the socket is still open; never raises."""
    try:
        if client._connection is not None and not client._connection.is_closing():
            async with asyncio.timeout(2):
                await client.disconnect()
    except Exception as exc:  # noqa: BLE001 - the connection is finished either way
        log.debug("mqtt_close_failed", error=type(exc).__name__)
