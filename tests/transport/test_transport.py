"""Every role's MQTT transport: lists of servers with credentials, moving on when one is
lost, refusals logged with their reason codes, and a backoff that starts over only once a
session is subscribed (SPEC section 4). Both roles."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Self

import pytest
import structlog

from broker.mqtt import MqttBus
from producer_adapter.mqtt import MqttLink
from tests.conftest import free_port, start_mosquitto
from transport.settings import MqttServer, MqttSettings

# -- settings ----------------------------------------------------------------------------------


def test_a_list_of_urls_keeps_each_servers_credentials_out_of_every_log_form() -> None:
    s = MqttSettings.from_url("mqtt://alice:s%40cret@a.example:1884, mqtts://b.example")
    assert [(x.host, x.port, x.tls, x.username, x.password) for x in s.servers] == [
        ("a.example", 1884, False, "alice", "s@cret"), ("b.example", 8883, True, None, None)]
    assert s.urls == "mqtt://a.example:1884,mqtts://b.example:8883"
    assert "s@cret" not in repr(s) and "cret" not in s.urls
    assert s.config_urls() == ["mqtt://alice:s%40cret@a.example:1884", "mqtts://b.example:8883"]
    assert MqttSettings.from_url(s.config_urls()).servers == s.servers  # written, read back
    with pytest.raises(ValueError) as bad:
        MqttSettings.from_url("http://bob:hunter2@x:1")
    assert "hunter2" not in str(bad.value)


def test_config_table_takes_urls_and_the_new_limits(tmp_path: Path) -> None:
    s = MqttSettings.from_table({"urls": ["mqtt://n1:1", "mqtt://u:p@n2:2"],
                                 "max_message_bytes": 65536, "heartbeat_s": 1.5,
                                 "timeout_s": 2}, base=tmp_path)
    assert [x.url for x in s.servers] == ["mqtt://n1:1", "mqtt://n2:2"]
    assert (s.servers[1].username, s.servers[1].password) == ("u", "p")
    assert (s.max_message_bytes, s.heartbeat_s, s.timeout_s) == (65536, 1.5, 2.0)
    assert MqttSettings.from_table({}, base=tmp_path).max_message_bytes == 4 * 1024 * 1024
    for bad in ({"url": "mqtt://a:1", "urls": ["mqtt://b:1"]}, {"urls": [1]},
                {"max_message_bytes": 10}, {"heartbeat_s": 0}):
        with pytest.raises(ValueError):
            MqttSettings.from_table(bad, base=tmp_path)


# -- roles on a list of servers ----------------------------------------------------------------


def _bus(settings: MqttSettings) -> MqttBus:
    return MqttBus(settings, instance="t", on_reply=lambda _: None,
               on_presence=lambda _p, _b: None)


def _link(settings: MqttSettings) -> MqttLink:
    async def on_question(_: bytes) -> None:
        return None

    return MqttLink(settings, producer_id="P1", replica="r", on_question=on_question)


@contextlib.asynccontextmanager
async def _running(role: Any) -> AsyncIterator[Callable[[], asyncio.Event]]:
    """Run a bus or link; yields a function giving its ``connected`` event."""
    stop = asyncio.Event()
    if isinstance(role, MqttBus):
        task = asyncio.create_task(role.run(stop))
    else:
        task = asyncio.create_task(role.run())
    try:
        yield lambda: role.connected
    finally:
        stop.set()
        if not isinstance(role, MqttBus):
            role.close()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("role", ["broker", "adapter"])
async def test_a_role_moves_to_the_next_server_when_its_server_is_lost(
        tmp_path: Path, role: str, unique_prefix: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = start_mosquitto(tmp_path / "a"), start_mosquitto(tmp_path / "b")
    try:
        settings = MqttSettings.from_url(
            [f"mqtt://127.0.0.1:{first.port}", f"mqtt://127.0.0.1:{second.port}"],
            prefix=unique_prefix, heartbeat_s=0.2)
        it = _bus(settings) if role == "broker" else _link(settings)
        async with _running(it) as connected:
            await asyncio.wait_for(connected().wait(), 10)
            assert it.server.port == first.port
            first.stop()
            async with asyncio.timeout(15):
                while not (connected().is_set() and it.server.port == second.port):
                    await asyncio.sleep(0.02)
    finally:
        first.stop()
        second.stop()


# -- refusals and the backoff ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["broker", "adapter"])
async def test_a_refused_connack_is_logged_with_its_reason_code(
        tmp_path: Path, role: str, unique_prefix: str) -> None:
    server = start_mosquitto(tmp_path, extra="allow_anonymous false\n")
    try:
        settings = MqttSettings(port=server.port, prefix=unique_prefix)
        it = _bus(settings) if role == "broker" else _link(settings)
        with structlog.testing.capture_logs() as logs:
            async with _running(it):
                async with asyncio.timeout(10):
                    while not any("lost" in e["event"] or "disconnected" in e["event"]
                                  for e in logs):
                        await asyncio.sleep(0.02)
        reasons = [str(e.get("reason") or e.get("error")) for e in logs
                   if "lost" in e["event"] or "disconnected" in e["event"]]
        # Not authorised: 0x87 in MQTT 5.
        assert any("0x87" in r or "code:135" in r for r in reasons), reasons
    finally:
        server.stop()


class RefusingServer:
    """An MQTT 3.1.1 server that accepts every connection and refuses every subscription
    (SUBACK 0x80), as a cluster without ``$share`` or a server with ACLs on subscriptions
    may: it counts the connections made to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                size, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    size += (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(size)
                kind = first >> 4
                if kind == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 8:  # SUBSCRIBE: refused
                    writer.write(b"\x90\x03" + body[:2] + b"\x80")
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("role", ["broker", "adapter"])
async def test_a_refused_subscription_is_logged_and_backs_off(role: str) -> None:
    async with RefusingServer() as server:
        settings = MqttSettings(port=server.port, protocol="3.1.1")
        it = _bus(settings) if role == "broker" else _link(settings)
        with structlog.testing.capture_logs() as logs:
            async with _running(it):
                await asyncio.sleep(3)
        reasons = [str(e.get("reason") or e.get("error")) for e in logs
                   if "lost" in e["event"] or "disconnected" in e["event"]]
        assert reasons and all("SUBACK reason 0x80" in r for r in reasons), reasons
        # The pause grows from 0.1 s towards 5 s: a handful of attempts in 3 s, where a
        # backoff reset on each accepted connection made ~75 (25 a second).
        assert 2 <= server.connections <= 10, server.connections


def test_server_dataclass_never_shows_the_password() -> None:
    assert "pw" not in repr(MqttServer(host="h", port=1, username="u", password="pw"))
