"""The adapter's MQTT link (gmqtt, the one client) keeps its contract: presence and the last
will, the re-announcement after another replica's will, shared subscriptions, reconnecting
after the server restarts, TCP_NODELAY, message expiry on replies, MQTT 3.1.1, back-pressure in
order, and no payload in any log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import msgspec
import pytest
from structlog.testing import capture_logs

from producer_adapter import Adapter, AdapterConfig, InMemoryBlockSource, JsonDirBackend
from producer_adapter.errors import AdapterConfigError, TransportError
from producer_adapter.mqtt import MqttLink
from schemas.messages import Presence
from schemas.registry import Registry
from schemas.topics import presence_topic, question_topic, reply_topic
from tests.conftest import MqttServer
from tests.producer_adapter.test_adapter_daemon import client as spy
from transport.gmqtt_link import ConnectionGone, Window
from transport.settings import MqttSettings

pytestmark = pytest.mark.mosquitto

STEP = 5.0  # seconds any single step may take before the test fails
PRODUCER = "P1"


def settings_for(server: MqttServer, prefix: str, **overrides: Any) -> MqttSettings:
    return MqttSettings(port=server.port, prefix=prefix, **overrides)


class Questions:
    """An ``on_question`` that keeps what it is given; ``arrived`` is set on each."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.arrived = asyncio.Event()

    async def __call__(self, payload: bytes) -> None:
        self.got.append(payload)
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(STEP):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


def make_link(settings: MqttSettings, on_question: Any = None, *,
              replica: str = "a") -> MqttLink:
    return MqttLink(settings, producer_id=PRODUCER, replica=replica,
                    on_question=on_question or Questions())


@asynccontextmanager
async def running(link: MqttLink) -> AsyncIterator[asyncio.Task[None]]:
    """``link.run()`` until the block ends; then :meth:`close` and wait for it to return."""
    task = asyncio.create_task(link.run())
    try:
        ready = asyncio.ensure_future(link.connected.wait())
        async with asyncio.timeout(STEP):
            await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()
            pytest.fail("the link stopped before it was connected")
        yield task
    finally:
        link.close()
        async with asyncio.timeout(STEP):
            await task



async def presences(client: aiomqtt.Client, count: int) -> list[Presence]:
    """The next ``count`` presence messages ``client`` receives."""
    seen: list[Presence] = []
    async with asyncio.timeout(STEP):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            seen.append(msgspec.json.decode(message.payload, type=Presence))
            if len(seen) == count:
                return seen
    raise AssertionError("unreachable")


async def retained_presence(settings: MqttSettings) -> Presence:
    async with spy(settings, presence_topic(settings.prefix, PRODUCER)) as client:
        [presence] = await presences(client, 1)
        return presence


def sock_of(link: MqttLink) -> Any:
    assert link.transport is not None
    return link.transport.get_extra_info("socket")


# -- the daemon and its link ---------------------------------------------------------------


async def test_the_adapter_runs_on_the_gmqtt_link(
    mosquitto: MqttServer, unique_prefix: str, keys: Any, kit: Any,
    registry: Registry, data_dir: Any
) -> None:
    settings = MqttSettings(port=mosquitto.port, prefix=unique_prefix)
    adapter = Adapter(AdapterConfig(**kit.adapter_config_kwargs(keys, settings)), registry,
                      backend=JsonDirBackend.load(data_dir, kit.PRODUCER),
                      blocks=InMemoryBlockSource())
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(shutdown=stop))
    try:
        await asyncio.wait_for(adapter.ready.wait(), STEP)
        assert type(adapter._link) is MqttLink
    finally:
        stop.set()
        await asyncio.wait_for(task, STEP)


def test_missing_tls_files_are_a_config_error() -> None:
    settings = MqttSettings.from_url("mqtts://127.0.0.1:8883", ca="/nonexistent/ca.pem")
    with pytest.raises(AdapterConfigError, match="TLS"):
        make_link(settings)


# -- presence ------------------------------------------------------------------------------


async def test_presence_online_then_offline_on_close(mosquitto: MqttServer,
                                                     unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    async with running(make_link(settings)):
        online = await retained_presence(settings)
        assert online.producer == PRODUCER and online.online and online.since > 0
    offline = await retained_presence(settings)
    assert not offline.online and offline.since >= online.since


async def test_last_will_says_offline_when_the_connection_dies(mosquitto: MqttServer,
                                                               unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    link = make_link(settings)
    async with running(link), spy(settings, presence_topic(unique_prefix, PRODUCER)) as watcher:
        [online] = await presences(watcher, 1)  # the retained one
        assert online.online
        assert link.transport is not None
        link.transport.abort()  # no DISCONNECT: the server sends the will
        will, again = await presences(watcher, 2)
        assert (will.online, will.since) == (False, 0)
        assert again.online and again.since > 0  # reconnected and announced itself
        await asyncio.wait_for(link.connected.wait(), STEP)


async def test_another_replicas_last_will_is_corrected(mosquitto: MqttServer,
                                                       unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    topic = presence_topic(unique_prefix, PRODUCER)
    async with running(make_link(settings)), spy(settings, topic) as watcher:
        await presences(watcher, 1)
        will = msgspec.json.encode(Presence(producer=PRODUCER, online=False, since=0))
        await watcher.publish(topic, will, qos=1, retain=True)
        offline, online = await presences(watcher, 2)
        assert not offline.online and online.online
    assert not (await retained_presence(settings)).online  # closing said offline


# -- questions -----------------------------------------------------------------------------


async def test_shared_subscription_splits_questions_between_replicas(
    mosquitto: MqttServer, unique_prefix: str
) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    assert settings.shared_subscriptions
    a, b = Questions(), Questions()
    async with (running(make_link(settings, a, replica="a")),
                running(make_link(settings, b, replica="b")),
                spy(settings) as broker):
        sent = [f"q{i}".encode() for i in range(20)]
        for payload in sent:
            await broker.publish(question_topic(unique_prefix, PRODUCER), payload, qos=1)
        async with asyncio.timeout(STEP):
            while len(a.got) + len(b.got) < len(sent):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # nothing more comes
    assert sorted(a.got + b.got) == sorted(sent)  # each question once
    assert a.got and b.got  # the server shared them out


async def test_questions_wait_in_order_for_the_handler(mosquitto: MqttServer,
                                                       unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    gate = asyncio.Event()
    got: list[bytes] = []

    async def slow(payload: bytes) -> None:
        got.append(payload)
        if len(got) == 1:
            await gate.wait()  # as the daemon waits for a free slot

    async with running(make_link(settings, slow)), spy(settings) as broker:
        sent = [f"q{i}".encode() for i in range(10)]
        for payload in sent:
            await broker.publish(question_topic(unique_prefix, PRODUCER), payload, qos=1)
        await asyncio.sleep(0.3)
        assert got == [b"q0"]  # the rest wait: back-pressure
        gate.set()
        async with asyncio.timeout(STEP):
            while len(got) < len(sent):
                await asyncio.sleep(0.01)
    assert got == sent


async def test_retained_question_is_ignored(mosquitto: MqttServer, unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix, shared_subscriptions=False)
    questions = Questions()
    async with spy(settings) as broker:
        await broker.publish(question_topic(unique_prefix, PRODUCER), b"old", qos=1,
                             retain=True)
        with capture_logs() as logs:
            async with running(make_link(settings, questions)):
                await broker.publish(question_topic(unique_prefix, PRODUCER), b"new", qos=1)
                await questions.wait_for(1)
        await broker.publish(question_topic(unique_prefix, PRODUCER), b"", qos=1, retain=True)
    assert questions.got == [b"new"]
    assert [e for e in logs if e["event"] == "retained question ignored"]


async def test_stop_questions_unsubscribes_but_replies_still_go(
    mosquitto: MqttServer, unique_prefix: str
) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    questions = Questions()
    topic = reply_topic(unique_prefix, "b1")
    link = make_link(settings, questions)
    async with running(link), spy(settings, topic) as broker:
        await link.stop_questions()
        await broker.publish(question_topic(unique_prefix, PRODUCER), b"late", qos=1)
        await link.publish(topic, b"a reply")
        async with asyncio.timeout(STEP):
            message = await anext(aiter(broker.messages))
        assert message.payload == b"a reply"
        await asyncio.sleep(0.2)
    assert questions.got == []


# -- publishing ----------------------------------------------------------------------------


async def test_replies_expire_and_exceed_the_receive_maximum(mosquitto: MqttServer,
                                                             unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    link = make_link(settings)
    topic = reply_topic(unique_prefix, "b1")
    async with running(link), spy(settings, topic) as broker:
        # asyncio's transports set TCP_NODELAY themselves (paho's sockets need NODELAY).
        assert sock_of(link).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        # 100 at once: far beyond Mosquitto's Receive Maximum of 20; each waits for its PUBACK.
        n = 100
        await asyncio.wait_for(asyncio.gather(*(
            link.publish(topic, f"r{i}".encode(), expires_in=6.2) for i in range(n))), STEP)
        got: list[tuple[bytes, Any]] = []
        async with asyncio.timeout(STEP):
            async for message in broker.messages:
                assert isinstance(message.payload, bytes)
                got.append((message.payload, message.properties))
                if len(got) == n:
                    break
    assert sorted(p for p, _ in got) == sorted(f"r{i}".encode() for i in range(n))
    assert all(0 < props.MessageExpiryInterval <= 7 for _, props in got)


async def test_publish_fails_when_the_connection_is_lost_before_the_ack(
    mosquitto: MqttServer, unique_prefix: str
) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    link = make_link(settings)
    async with running(link):
        assert mosquitto.process is not None and link.transport is not None
        mosquitto.process.send_signal(signal.SIGSTOP)  # no PUBACK will come
        try:
            publishing = asyncio.create_task(link.publish("x/r/b1", b"a reply"))
            await asyncio.sleep(0.1)
            assert not publishing.done()
            link.transport.abort()
            with pytest.raises(TransportError, match="lost"):
                await asyncio.wait_for(publishing, STEP)
        finally:
            mosquitto.process.send_signal(signal.SIGCONT)
        await asyncio.wait_for(link.connected.wait(), STEP)


async def test_reconnects_after_the_server_restarts(mosquitto: MqttServer,
                                                    unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    questions = Questions()
    link = make_link(settings, questions)
    async with running(link):
        mosquitto.stop()
        async with asyncio.timeout(STEP):
            while link.connected.is_set():
                await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):  # publish waits for the connection
            await asyncio.wait_for(link.publish("x/r/b1", b"r"), 0.3)
        mosquitto.start()
        await asyncio.wait_for(link.connected.wait(), STEP)
        assert (await retained_presence(settings)).online
        async with spy(settings, reply_topic(unique_prefix, "b1")) as broker:
            await broker.publish(question_topic(unique_prefix, PRODUCER), b"q", qos=1)
            await questions.wait_for(1)
            await link.publish(reply_topic(unique_prefix, "b1"), b"r", expires_in=5)
            async with asyncio.timeout(STEP):
                message = await anext(aiter(broker.messages))
            assert message.payload == b"r"


async def test_mqtt_3_1_1(mosquitto: MqttServer, unique_prefix: str) -> None:
    settings = settings_for(mosquitto, unique_prefix, protocol="3.1.1")
    questions = Questions()
    link = make_link(settings, questions)
    topic = reply_topic(unique_prefix, "b1")
    async with running(link), spy(settings, topic) as broker:
        assert (await retained_presence(settings)).online
        await broker.publish(question_topic(unique_prefix, PRODUCER), b"q", qos=1)
        await questions.wait_for(1)
        await link.publish(topic, b"a reply", expires_in=5)  # 3.1.1 has no expiry: left out
        async with asyncio.timeout(STEP):
            message = await anext(aiter(broker.messages))
        assert message.payload == b"a reply"
    assert questions.got == [b"q"]
    assert not (await retained_presence(settings)).online


async def test_payloads_never_reach_a_log(mosquitto: MqttServer, unique_prefix: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(mosquitto, unique_prefix)
    secret = b"195001182046 Penicillinallergi"
    questions = Questions()
    caplog.set_level(logging.DEBUG)
    link = make_link(settings, questions)
    topic = reply_topic(unique_prefix, "b1")
    async with running(link), spy(settings, topic) as broker:
        await broker.publish(question_topic(unique_prefix, PRODUCER), secret, qos=1)
        await questions.wait_for(1)
        await link.publish(topic, secret)
        async with asyncio.timeout(STEP):
            await anext(aiter(broker.messages))
    assert questions.got == [secret]
    assert any(r.name.startswith(("gmqtt", "samsvar.adapter.gmqtt")) for r in caplog.records)
    assert "195001182046" not in caplog.text


async def test_window_ends_every_wait_when_the_connection_goes() -> None:
    window = Window()
    window.push_message(1, b"publish 1")
    acked = asyncio.create_task(window.acked(window.last_mid))
    turn = asyncio.create_task(window.turn())
    await asyncio.sleep(0)
    window.close()
    for task in (acked, turn):
        with pytest.raises(ConnectionGone):
            await task
    with pytest.raises(ConnectionGone):
        await window.acked(2)
