"""transport.gmqtt_link's socket plumbing: what gmqtt writes in one loop turn is one send,
in order, and nothing written is lost when the connection is closed; what arrives is
handed to gmqtt packet by packet, whole and in order, however the bytes are split."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from gmqtt.mqtt.constants import MQTTCommands  # type: ignore[import-untyped]
from gmqtt.mqtt.package import Package  # type: ignore[import-untyped]
from gmqtt.mqtt.utils import ConnectionState, IdGenerator  # type: ignore[import-untyped]

from transport.gmqtt_link import CoalescingTransport, Protocol


@asynccontextmanager
async def _connection() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.Transport]]:
    """A TCP connection on loopback: our transport, and a reader on the far end."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await asyncio.get_running_loop().create_connection(
        asyncio.Protocol, "127.0.0.1", port)
    reader, writer = await accepted.get()
    try:
        yield reader, transport
    finally:
        transport.close()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


class _Counting:
    """Counts the sends the real transport makes."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport, self.writes = transport, 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    def get_extra_info(self, name: str) -> object:
        return self.transport.get_extra_info(name)


async def test_writes_of_one_turn_leave_together_and_in_order() -> None:
    async with _connection() as (reader, transport):
        counting = _Counting(transport)
        coalescing = CoalescingTransport(counting)  # type: ignore[arg-type]
        for i in range(50):
            coalescing.write(f"packet {i:02d};".encode())
        coalescing.write(bytearray(b"last;"))
        assert counting.writes == 0  # nothing before the turn ends
        await asyncio.sleep(0)
        assert counting.writes == 1
        expected = b"".join(f"packet {i:02d};".encode() for i in range(50)) + b"last;"
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        coalescing.write(b"next turn;")
        await asyncio.sleep(0)
        assert counting.writes == 2
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"next turn;"
        # whatever else gmqtt asks of its transport still answers
        assert coalescing.get_extra_info("peername")[0] == "127.0.0.1"


async def test_close_sends_what_was_written_first() -> None:
    async with _connection() as (reader, transport):
        coalescing = CoalescingTransport(transport)
        coalescing.write(b"DISCONNECT")
        coalescing.close()
        assert coalescing.is_closing()
        assert await asyncio.wait_for(reader.read(), 5) == b"DISCONNECT"
        coalescing.write(b"too late")
        await asyncio.sleep(0)  # written after close: dropped, not raised


def _packet(cmd: int, body: bytes) -> bytes:
    """An MQTT packet: fixed header (remaining length as a variable byte integer) + body."""
    length, encoded = len(body), bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([cmd, *encoded]) + body


class _Received:
    """Stands in for gmqtt's MQTTConnection: records what the protocol hands over."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, bytes]] = []
        self.changed = asyncio.Event()

    def put_package(self, package: Package) -> None:
        self.packets.append((package.cmd, bytes(package.data)))
        self.changed.set()

    async def until(self, count: int) -> list[tuple[int, bytes]]:
        async with asyncio.timeout(5):
            while len(self.packets) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.packets


@asynccontextmanager
async def _protocol(**options: Any) -> AsyncIterator[
        tuple[asyncio.StreamWriter, Protocol, _Received]]:
    """Our Protocol on a loopback connection (``options`` for it), and a writer on the far
    end."""
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    factory = partial(Protocol, connection_state=ConnectionState(), id_generator=IdGenerator(),
                      **options)
    transport, protocol = await asyncio.get_running_loop().create_connection(
        factory, "127.0.0.1", port)
    received = _Received()
    protocol.set_connection(received)
    writer = await accepted.get()
    try:
        yield writer, protocol, received
    finally:
        transport.close()
        writer.close()
        server.close()
        await server.wait_closed()


async def test_packets_arrive_whole_and_in_order_however_the_bytes_are_split() -> None:
    # lengths that need one, two and three bytes of remaining length, and an empty body
    bodies = [b"", b"a" * 5, b"b" * 127, b"c" * 128, b"d" * 2050, b"e" * 20000]
    packets = [_packet(0x30 | (i % 2) << 1, body) for i, body in enumerate(bodies)]
    stream = b"".join(packets) * 3
    async with _protocol() as (writer, _, received):
        sizes, at = [1, 1, 2, 3, 7, 100, 4096, 1], 0
        while at < len(stream):
            size = sizes[at % len(sizes)]
            writer.write(stream[at:at + size])
            await writer.drain()
            await asyncio.sleep(0.001)  # let most writes arrive as chunks of their own
            at += size
        got = await received.until(3 * len(bodies))
    expected = [(p[0], body) for p, body in zip(packets, bodies, strict=True)] * 3
    assert got[:len(expected)] == expected


async def test_the_end_of_the_stream_ends_the_connection() -> None:
    async with _protocol() as (writer, protocol, received):
        writer.write(_packet(0xD0, b""))  # PINGRESP
        writer.close()
        got = await received.until(2)
        # gmqtt's sign that the connection is gone: its handler then reports the loss
        assert got == [(0xD0, b""), (MQTTCommands.DISCONNECT, b"")]
        assert protocol._transport is None  # closed and let go


async def test_a_packet_above_the_limit_is_read_past_acknowledged_and_reported() -> None:
    """Issue 16.2: an oversized message is never buffered whole; the packets around it
    arrive as they were, it is acknowledged (QoS 1, so the server does not send it again)
    and reported with its topic and size, however the bytes are split."""
    topic = b"samsvar/v1/r/b1"
    big = _packet(0x32, len(topic).to_bytes(2, "big") + topic + b"\x12\x34" + b"x" * 300_000)
    small = [_packet(0x30, len(topic).to_bytes(2, "big") + topic + b"hello"),
             _packet(0xD0, b"")]
    stream = small[0] + big + small[1]
    reported: list[tuple[str, int]] = []
    async with _protocol(max_packet=100_000,
                         on_too_large=lambda t, n: reported.append((t, n))) as (
            writer, protocol, received):
        at = 0
        for size in (3, 1, 9000, 70_000, 1, 200_000, 40_000):
            writer.write(stream[at:at + size])
            await writer.drain()
            await asyncio.sleep(0.001)
            at += size
        writer.write(stream[at:])
        got = await received.until(2)
        far_end: asyncio.StreamReader = writer._reader  # type: ignore[attr-defined]
        puback = await asyncio.wait_for(far_end.readexactly(4), 5)
        assert not protocol._unparsed  # nothing of it kept
    assert got == [(0x30, small[0][2:]), (0xD0, b"")]
    assert reported == [("samsvar/v1/r/b1", len(big) - 4)]
    assert puback == b"\x40\x02\x12\x34"
