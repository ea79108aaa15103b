"""The adapter end to end over a real MQTT server, with the test acting as the broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest
from structlog.testing import capture_logs

from producer_adapter import (
    Adapter,
    AdapterConfig,
    BackendError,
    BackendResult,
    InMemoryBlockSource,
    JsonDirBackend,
)
from schemas.jose import verify
from schemas.messages import REPLY_TYP, Period, Presence, Reply
from schemas.registry import Registry
from schemas.topics import presence_topic, question_topic, reply_topic
from transport.settings import MqttSettings

STEP = 5.0  # seconds any single step may take before the test fails


class BrokenBackend:
    async def fetch(self, subject: str, types: frozenset[str], period: Period | None
                    ) -> BackendResult:
        raise BackendError("connection refused")

    async def aclose(self) -> None:
        return None


class SlowBackend:
    """Answers from ``inner`` after ``delay`` seconds; ``started`` is set on the first call."""

    def __init__(self, inner: JsonDirBackend, delay: float) -> None:
        self.inner, self.delay, self.started = inner, delay, asyncio.Event()

    async def fetch(self, subject: str, types: frozenset[str], period: Period | None
                    ) -> BackendResult:
        self.started.set()
        await asyncio.sleep(self.delay)
        return await self.inner.fetch(subject, types, period)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def settings(mqtt_server: Any, unique_prefix: str) -> MqttSettings:
    return mqtt_server.settings(unique_prefix)  # type: ignore[no-any-return]


@pytest.fixture
def make_adapter(keys: Any, kit: Any, registry: Registry, data_dir: Path) -> Any:
    def make(settings: MqttSettings, *, backend: Any = None, **overrides: Any) -> Adapter:
        cfg = AdapterConfig(**{**kit.adapter_config_kwargs(keys, settings), **overrides})
        return Adapter(cfg, registry,
                       backend=backend or JsonDirBackend.load(data_dir, kit.PRODUCER),
                       blocks=InMemoryBlockSource())
    return make


async def wait_ready(adapter: Adapter, task: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(adapter.ready.wait())
    async with asyncio.timeout(STEP):
        await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if task.done():
        task.result()  # raises what stopped the adapter
        pytest.fail("adapter stopped before it was ready")


@asynccontextmanager
async def running(adapter: Adapter) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(shutdown=stop))
    try:
        await wait_ready(adapter, task)
        yield task
    finally:
        stop.set()
        async with asyncio.timeout(STEP):
            await task


@asynccontextmanager
async def client(settings: MqttSettings, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    protocol = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
                else aiomqtt.ProtocolVersion.V311)
    async with aiomqtt.Client(settings.host, settings.port, protocol=protocol,
                              identifier=f"test-{uuid.uuid4().hex[:8]}") as c:
        for topic in topics:
            await c.subscribe(topic, qos=1)
        yield c


def broker(settings: MqttSettings) -> Any:
    """A client acting as the broker: it listens on its reply topic."""
    return client(settings, reply_topic(settings.prefix, "test-broker"))


async def collect_replies(c: aiomqtt.Client, registry: Registry, kit: Any, *, count: int,
                          linger: float = 0.3, prefix: str) -> list[Reply]:
    """``count`` verified replies, then any more that arrive within ``linger`` seconds."""
    replies: list[Reply] = []
    topic = reply_topic(prefix, "test-broker")

    async def read() -> None:
        async for message in c.messages:
            if message.topic.value != topic:
                continue  # amqtt sends retained messages of topics nobody subscribed to
            assert isinstance(message.payload, bytes)
            _, payload = verify(message.payload,
                                lambda h: registry.producer_key(kit.PRODUCER, h), typ=REPLY_TYP)
            replies.append(msgspec.json.decode(payload, type=Reply))
            if len(replies) == count:
                return

    async with asyncio.timeout(STEP):
        await read()
    try:
        async with asyncio.timeout(linger):
            await read()
    except TimeoutError:
        pass
    return replies


async def publish_question(c: aiomqtt.Client, settings: MqttSettings, kit: Any, token: str) -> None:
    await c.publish(question_topic(settings.prefix, kit.PRODUCER), token.encode(), qos=1)


async def presence_of(settings: MqttSettings, kit: Any) -> Presence:
    """The retained presence a newly subscribing client sees."""
    async with client(settings, presence_topic(settings.prefix, kit.PRODUCER)) as c:
        async with asyncio.timeout(STEP):
            async for message in c.messages:
                if message.topic.value != presence_topic(settings.prefix, kit.PRODUCER):
                    continue
                assert message.retain
                return msgspec.json.decode(message.payload, type=Presence)
    raise AssertionError("unreachable")


async def test_records_come_back_signed(settings: MqttSettings, make_adapter: Any, keys: Any,
                                        kit: Any, registry: Registry) -> None:
    q = kit.make_question(prefix=settings.prefix)
    async with running(make_adapter(settings)), broker(settings) as b:
        await publish_question(b, settings, kit, kit.sign_question(q, keys.broker))
        [reply] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
    assert reply.query_id == q.query_id and reply.producer == kit.PRODUCER
    assert reply.status == "ok"
    ids = sorted(r.id for r in reply.records)
    assert ids == ["a1", "m1", "s1"]  # never n-sol-other, never n-excluded


async def test_unsigned_foreign_and_expired_questions_get_no_reply(
    settings: MqttSettings, make_adapter: Any, keys: Any, kit: Any, registry: Registry
) -> None:
    p = settings.prefix
    unsigned = msgspec.json.encode(kit.make_question(prefix=p)).decode()
    foreign = kit.sign_question(kit.make_question(prefix=p), keys.stranger)
    expired = kit.sign_question(kit.make_question(prefix=p, deadline_in=-0.001), keys.broker)
    good = kit.make_question(prefix=p)
    with capture_logs() as logs:
        async with running(make_adapter(settings)), broker(settings) as b:
            for token in (unsigned, foreign, expired, "garbage"):
                await publish_question(b, settings, kit, token)
            await publish_question(b, settings, kit, kit.sign_question(good, keys.broker))
            replies = await collect_replies(b, registry, kit, count=1, linger=0.5,
                                            prefix=settings.prefix)
    assert [r.query_id for r in replies] == [good.query_id]
    refused = [e["reason"] for e in logs if e["event"] == "question refused"]
    assert sorted(refused) == ["expired", "not-a-jws", "not-a-jws", "unknown-key"]


async def test_backend_error_is_an_error_reply(settings: MqttSettings, make_adapter: Any,
                                               keys: Any, kit: Any, registry: Registry) -> None:
    q = kit.make_question(prefix=settings.prefix)
    async with running(make_adapter(settings, backend=BrokenBackend())), broker(settings) as b:
        await publish_question(b, settings, kit, kit.sign_question(q, keys.broker))
        [reply] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
    assert reply.status == "error" and reply.records == []
    assert reply.reason == "record system error"


async def test_shutdown_finishes_questions_in_flight(
    settings: MqttSettings, make_adapter: Any, keys: Any, kit: Any, registry: Registry,
    data_dir: Path
) -> None:
    backend = SlowBackend(JsonDirBackend.load(data_dir, kit.PRODUCER), delay=0.3)
    adapter = make_adapter(settings, backend=backend)
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(shutdown=stop))
    await wait_ready(adapter, task)
    q = kit.make_question(prefix=settings.prefix)
    async with broker(settings) as b:
        await publish_question(b, settings, kit, kit.sign_question(q, keys.broker))
        async with asyncio.timeout(STEP):
            await backend.started.wait()
        stop.set()
        [reply] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
    async with asyncio.timeout(STEP):
        await task
    assert reply.query_id == q.query_id and reply.status == "ok"
    assert (await presence_of(settings, kit)).online is False


async def test_presence_online_then_offline_on_shutdown(
    settings: MqttSettings, make_adapter: Any, kit: Any
) -> None:
    async with running(make_adapter(settings)):
        online = await presence_of(settings, kit)
        assert online.producer == kit.PRODUCER and online.online is True and online.since > 0
    offline = await presence_of(settings, kit)
    assert offline.online is False and offline.since >= online.since


async def test_presence_offline_when_cancelled(settings: MqttSettings, make_adapter: Any,
                                               kit: Any) -> None:
    adapter = make_adapter(settings)
    task = asyncio.create_task(adapter.run())
    await wait_ready(adapter, task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await presence_of(settings, kit)).online is False


async def test_another_replicas_last_will_is_corrected(
    settings: MqttSettings, make_adapter: Any, kit: Any
) -> None:
    topic = presence_topic(settings.prefix, kit.PRODUCER)
    async with running(make_adapter(settings)), client(settings, topic) as watcher:
        will = msgspec.json.encode(Presence(producer=kit.PRODUCER, online=False))
        await watcher.publish(topic, will, qos=1, retain=True)
        seen: list[bool] = []
        async with asyncio.timeout(STEP):
            async for message in watcher.messages:
                if message.topic.value != topic:
                    continue
                seen.append(msgspec.json.decode(message.payload, type=Presence).online)
                if seen[-1] and False in seen:
                    break
    assert seen[-2:] == [False, True]


async def test_two_replicas_answer_each_question_once(
    mosquitto: Any, unique_prefix: str, make_adapter: Any, keys: Any, kit: Any,
    registry: Registry
) -> None:
    settings = mosquitto.settings(unique_prefix)
    assert settings.shared_subscriptions
    questions = [kit.make_question(prefix=settings.prefix) for _ in range(20)]
    with capture_logs() as logs:
        a, b = make_adapter(settings, replica="a"), make_adapter(settings, replica="b")
        async with running(a), running(b), broker(settings) as c:
            for q in questions:
                await publish_question(c, settings, kit, kit.sign_question(q, keys.broker))
            replies = await collect_replies(c, registry, kit, count=len(questions),
                                            linger=0.5, prefix=settings.prefix)
    assert sorted(r.query_id for r in replies) == sorted(q.query_id for q in questions)
    answered = [e["replica"] for e in logs if e["event"] == "question answered"]
    assert len(answered) == len(questions)
    assert set(answered) == {"a", "b"}  # the server shared the questions out


async def test_reconnects_after_the_server_restarts(
    mosquitto: Any, unique_prefix: str, make_adapter: Any, keys: Any, kit: Any,
    registry: Registry
) -> None:
    settings = mosquitto.settings(unique_prefix)
    adapter = make_adapter(settings)
    async with running(adapter):
        mosquitto.stop()
        async with asyncio.timeout(STEP):
            while adapter.ready.is_set():  # no event for "lost"
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # let it fail to reconnect at least once
        mosquitto.start()
        async with asyncio.timeout(STEP):
            await adapter.ready.wait()
        assert (await presence_of(settings, kit)).online is True
        q = kit.make_question(prefix=settings.prefix)
        async with broker(settings) as b:
            await publish_question(b, settings, kit, kit.sign_question(q, keys.broker))
            [reply] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
        assert reply.query_id == q.query_id and reply.status == "ok"


async def test_config_file_adapter_runs(
    settings: MqttSettings, keys: Any, kit: Any, registry: Registry, data_dir: Path,
    tmp_path: Path
) -> None:
    """Backend and blocks opened from the config tables, closed on shutdown."""
    import json

    (tmp_path / "blocks.json").write_text(json.dumps(
        [{"subject": kit.PERSON, "level": "unit", "target": kit.UNIT_2}]))
    cfg = AdapterConfig(**kit.adapter_config_kwargs(keys, settings),
                        backend={"kind": "json_dir", "path": f"data/{kit.PRODUCER}"},
                        blocks={"kind": "json_file", "path": "blocks.json"}, base=tmp_path)
    q = kit.make_question(prefix=settings.prefix)
    async with running(Adapter(cfg, registry)), broker(settings) as b:
        await publish_question(b, settings, kit, kit.sign_question(q, keys.broker))
        [reply] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
    assert reply.status == "ok" and reply.blocked is True
    assert sorted(r.id for r in reply.records) == ["a1", "m1"]
