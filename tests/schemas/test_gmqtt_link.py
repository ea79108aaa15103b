"""schemas.gmqtt_link's write coalescing: what gmqtt writes in one loop turn is one send,
in order, and nothing written is lost when the connection is closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from schemas.gmqtt_link import CoalescingTransport


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
