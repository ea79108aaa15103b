"""schemas.gmqtt_link below gmqtt: write coalescing (what gmqtt writes in one loop turn is
one send, in order, and nothing written is lost when the connection is closed) and the QoS 1
delivery path (whole messages, acknowledged, gmqtt's own path for anything unusual)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50  # type: ignore[import-untyped]
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from schemas.gmqtt_link import (
    Client,
    CoalescingTransport,
    Window,
    _skip_properties,
    close,
    gmqtt_logger,
)
from tests.conftest import MqttServer


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


# -- the QoS 1 delivery path (Client._handle_publish_packet) -------------------------------

def _props(*parts: bytes) -> bytes:
    body = b"".join(parts)
    assert len(body) < 128
    return bytes((len(body),)) + body


def _str(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


@pytest.mark.parametrize(("properties", "skippable"), [
    (_props(), True),
    (_props(b"\x02" + (30).to_bytes(4, "big")), True),  # message expiry
    (_props(b"\x01\x01", b"\x03" + _str(b"application/jwt"), b"\x08" + _str(b"r/t"),
            b"\x09" + _str(b"\x00\x01"), b"\x26" + _str(b"k") + _str(b"v"),
            b"\x0b\x81\x01"), True),  # the rest a server may forward, subscription id 129
    (_props(b"\x23\x00\x01"), False),  # a topic alias: gmqtt keeps the alias table
    (_props(b"\x7f"), False),  # no such property
    (_props(b"\x02\x00\x00"), False),  # cut short
])
def test_publish_properties_are_skipped_only_when_plainly_known(properties: bytes,
                                                                skippable: bool) -> None:
    raw = b"\x00\x01t\x00\x07" + properties + b"payload"
    end = _skip_properties(raw, 5)
    if skippable:
        assert raw[end:] == b"payload"
    else:
        assert end == -1


async def test_qos1_messages_arrive_whole_and_are_acknowledged(mosquitto: MqttServer,
                                                              unique_prefix: str) -> None:
    """Through the fast path: payload, topic and retain flag as sent, with any properties a
    publisher adds; each publish is acknowledged (the sender's QoS 1 publish completes)."""
    got: list[tuple[str, bytes, dict[str, Any]]] = []
    lost: list[str] = []
    window = Window()
    client = Client(f"t-{uuid.uuid4().hex[:8]}", window=window,
                    logger=gmqtt_logger("test.gmqtt"), on_lost=lost.append)

    def on_message(_c: Any, topic: str, payload: bytes, _qos: int, props: Any) -> int:
        got.append((topic, bytes(payload), props))
        return 0

    client.on_message = on_message
    await client.connect("127.0.0.1", mosquitto.port, version=MQTTv50)
    try:
        await client.subscribed(f"{unique_prefix}/#", 1)
        sent = {f"{unique_prefix}/a": b"x" * 3000, f"{unique_prefix}/b/\u00e5": b"\x00\xff"}
        async with aiomqtt.Client("127.0.0.1", mosquitto.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as publisher:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = 30
            props.ContentType = "application/jwt"
            props.UserProperty = [("k", "v")]
            props.CorrelationData = b"\x01\x02"
            for topic, payload in sent.items():
                await asyncio.wait_for(
                    publisher.publish(topic, payload, qos=1, properties=props), 5)
            await asyncio.wait_for(publisher.publish(f"{unique_prefix}/kept", b"r", qos=1,
                                                     retain=True), 5)
        async with asyncio.timeout(5):
            while len(got) < 3:
                await asyncio.sleep(0.01)
        assert {t: p for t, p, _ in got[:2]} == sent
        assert got[2][0] == f"{unique_prefix}/kept" and got[2][1] == b"r"
        assert not lost
    finally:
        await close(client)
        window.close()
