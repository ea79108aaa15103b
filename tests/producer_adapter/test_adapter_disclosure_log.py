"""The disclosure log, and failing closed on the register and the log, end to end."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiomqtt
import msgspec
import pytest
from structlog.testing import capture_logs

from producer_adapter import (
    Adapter,
    AdapterConfig,
    Block,
    BlockScope,
    DisclosureEntry,
    DisclosureLogError,
    InMemoryBlockSource,
    JsonDirBackend,
    SqliteBlockRegister,
    SqliteDisclosureLog,
    load_adapter_config,
)
from producer_adapter.disclosure_log import disclosure_entry
from schemas.jose import verify
from schemas.messages import REPLY_TYP, Reply, Unblock
from schemas.registry import Registry
from schemas.topics import question_topic, reply_topic
from transport.settings import MqttSettings

STEP = 5.0


class BrokenLog:
    def __init__(self) -> None:
        self.calls = 0

    async def record(self, entry: DisclosureEntry) -> None:
        self.calls += 1
        raise DisclosureLogError("disk full")


def open_reply(out: Any, registry: Registry, kit: Any) -> Reply:
    assert out is not None
    _, payload = verify(out.token, lambda h: registry.producer_key(kit.PRODUCER, h), typ=REPLY_TYP)
    return msgspec.json.decode(payload, type=Reply)


@pytest.fixture
def log(tmp_path: Path) -> SqliteDisclosureLog:
    return SqliteDisclosureLog(tmp_path / "disclosures.db")


@pytest.fixture
def make_adapter(keys: Any, kit: Any, registry: Registry, data_dir: Path) -> Any:
    def make(*, log: Any = None, blocks: Any = None, **overrides: Any) -> Adapter:
        cfg = AdapterConfig(**{**kit.adapter_config_kwargs(keys, MqttSettings()), **overrides})
        return Adapter(cfg, registry, backend=JsonDirBackend.load(data_dir, kit.PRODUCER),
                       blocks=blocks or InMemoryBlockSource(), disclosure_log=log)
    return make


async def test_each_answered_question_is_logged(make_adapter: Any, log: SqliteDisclosureLog,
                                                keys: Any, kit: Any, registry: Registry) -> None:
    blocks = InMemoryBlockSource([Block(subject=kit.PERSON_2, level="unit", target=kit.UNIT_2)])
    adapter = make_adapter(log=log, blocks=blocks)
    asked = [
        kit.make_question(),
        kit.make_question(subject=kit.PERSON_2),
        kit.make_question(subject=kit.PERSON_2,
                          unblock=Unblock(step="read", producers=[kit.PRODUCER])),
        kit.make_question(types=["lab_results"]),
    ]
    replies = [open_reply(await adapter.answer(kit.sign_question(q, keys.broker)), registry, kit)
               for q in asked]
    assert [r.status for r in replies] == ["ok", "no_data", "ok", "no_data"]
    entries = log.entries()
    assert [e.query_id for e in entries] == [q.query_id for q in asked]
    assert [e.seq for e in entries] == [1, 2, 3, 4]
    first = entries[0]
    assert first.consumer.id == kit.ORG and first.consumer.name == "Region Exempel"
    assert first.consumer_kind == "vårdgivare"
    assert first.unit.id == kit.UNIT_2 and first.unit.name == "Akuten"
    assert (first.user.id, first.user.name, first.user.role) == (
        "SE2321000999-E001", "Doktor Test", "läkare")
    assert first.basis == "consent" and first.unblock is None and first.replica
    assert first.subject == kit.PERSON and first.status == "ok"
    assert first.disclosed == {"alerts": 1, "medication": 1, "social_care_interventions": 1}
    assert (first.blocked_withheld, first.blocked_released) == (False, False)
    withheld, released = entries[1], entries[2]
    assert withheld.disclosed == {} and withheld.blocked_withheld and not withheld.blocked_released
    assert released.unblock == "read" and released.blocked_released
    assert released.disclosed == {"care_documentation": 1}
    assert entries[3].disclosed == {} and entries[3].status == "no_data"
    assert [e.query_id for e in log.entries(kit.PERSON_2)] == [asked[1].query_id,
                                                                asked[2].query_id]
    assert [e.query_id for e in log.entries(limit=2)] == [asked[2].query_id, asked[3].query_id]


async def test_the_log_never_holds_content(make_adapter: Any, log: SqliteDisclosureLog,
                                           keys: Any, kit: Any, registry: Registry,
                                           data_dir: Path) -> None:
    kit.write_person(data_dir, kit.PERSON, [kit.note("n1"), kit.medication("m1")])
    reply = open_reply(await make_adapter(log=log).answer(
        kit.sign_question(kit.make_question(), keys.broker)), registry, kit)
    assert {r.id for r in reply.records} == {"n1", "m1"}
    raw = log.path.read_bytes()
    for content in (b"Hemlig text", b"Alvedon", "Besöksanteckning".encode(), b"n1", b"m1"):
        assert content not in raw


async def test_a_failed_write_turns_the_reply_into_an_error(
    make_adapter: Any, keys: Any, kit: Any, registry: Registry
) -> None:
    broken = BrokenLog()
    with capture_logs() as logs:
        reply = open_reply(await make_adapter(log=broken).answer(
            kit.sign_question(kit.make_question(), keys.broker)), registry, kit)
    assert broken.calls == 1
    assert reply.status == "error" and reply.records == [] and reply.blocked is False
    assert reply.reason == "disclosure log unavailable"
    [event] = [e for e in logs if e["event"] == "question answered"]
    assert event["status"] == "error" and event["records"] == 0


async def test_an_unwritable_log_file_fails_closed(make_adapter: Any, keys: Any, kit: Any,
                                                   registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    adapter = make_adapter(disclosure_log=Path("dir.db"), base=tmp_path)
    reply = open_reply(await adapter.answer(kit.sign_question(kit.make_question(), keys.broker)),
                       registry, kit)
    assert reply.status == "error" and reply.records == []


async def test_configured_log_is_used_without_injection(make_adapter: Any, keys: Any, kit: Any,
                                                        registry: Registry,
                                                        tmp_path: Path) -> None:
    adapter = make_adapter(disclosure_log=Path("d.db"), base=tmp_path)
    q = kit.make_question()
    await adapter.answer(kit.sign_question(q, keys.broker))
    [entry] = SqliteDisclosureLog(tmp_path / "d.db").entries()
    assert entry.query_id == q.query_id


def test_config_file_defaults_to_a_log_beside_it(tmp_path: Path, keys: Any, kit: Any) -> None:
    config = kit.write_adapter_dir(tmp_path, keys)
    assert load_adapter_config(config).disclosure_log == Path("disclosures.db")
    config.write_text(config.read_text() + '\n[disclosure_log]\npath = "logs/d.db"\n')
    cfg = load_adapter_config(config)
    assert cfg.base / cfg.disclosure_log == tmp_path / "logs" / "d.db"  # type: ignore[operator]
    config.write_text(config.read_text() + 'x = 1\n')
    with pytest.raises(Exception, match=r"\[disclosure_log\] has unknown keys: x"):
        load_adapter_config(config)


def test_reading_a_missing_or_foreign_log(log: SqliteDisclosureLog, tmp_path: Path) -> None:
    with pytest.raises(DisclosureLogError, match="there is no disclosure log"):
        log.entries()
    register = SqliteBlockRegister(tmp_path / "blocks.db")
    register.create()
    with pytest.raises(DisclosureLogError, match="not a samsvar disclosure log"):
        SqliteDisclosureLog(register.path).entries()
    with pytest.raises(DisclosureLogError, match="not a samsvar disclosure log"):
        SqliteDisclosureLog(register.path).create()


def test_log_is_append_only(log: SqliteDisclosureLog, kit: Any) -> None:
    log.create()
    log.create()
    q = kit.make_question()
    entry = disclosure_entry(q, Reply(query_id=q.query_id, producer=kit.PRODUCER,
                                      status="no_data"), replica="r")
    assert log.append(entry) == 1
    with closing(sqlite3.connect(log.path)) as con, pytest.raises(sqlite3.DatabaseError,
                                                                   match="append-only"):
        con.execute("DELETE FROM disclosures")


# -- end to end over MQTT -------------------------------------------------------------------


@pytest.fixture
def settings(mqtt_server: Any, unique_prefix: str) -> MqttSettings:
    return mqtt_server.settings(unique_prefix)  # type: ignore[no-any-return]


@asynccontextmanager
async def running(adapter: Adapter) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(shutdown=stop))
    ready = asyncio.create_task(adapter.ready.wait())
    try:
        async with asyncio.timeout(STEP):
            await asyncio.wait((ready, task), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            pytest.fail("adapter stopped before it was ready")
        yield
    finally:
        ready.cancel()
        stop.set()
        async with asyncio.timeout(STEP):
            await task


@asynccontextmanager
async def as_broker(settings: MqttSettings) -> AsyncIterator[aiomqtt.Client]:
    protocol = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
                else aiomqtt.ProtocolVersion.V311)
    async with aiomqtt.Client(settings.host, settings.port, protocol=protocol,
                              identifier=f"test-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(reply_topic(settings.prefix, "test-broker"), qos=1)
        yield c


async def ask(c: aiomqtt.Client, settings: MqttSettings, registry: Registry, keys: Any,
              kit: Any, **question: Any) -> Reply:
    q = kit.make_question(prefix=settings.prefix, **question)
    await c.publish(question_topic(settings.prefix, kit.PRODUCER),
                    kit.sign_question(q, keys.broker).encode(), qos=1)
    topic = reply_topic(settings.prefix, "test-broker")
    async with asyncio.timeout(STEP):
        async for message in c.messages:
            if message.topic.value != topic:
                continue
            assert isinstance(message.payload, bytes)
            _, payload = verify(message.payload,
                                lambda h: registry.producer_key(kit.PRODUCER, h), typ=REPLY_TYP)
            reply = msgspec.json.decode(payload, type=Reply)
            if reply.query_id == q.query_id:
                return reply
    raise AssertionError("unreachable")


@pytest.fixture
def e2e(tmp_path: Path, settings: MqttSettings, keys: Any, kit: Any, registry: Registry,
        data_dir: Path) -> Any:
    """An adapter configured as in production: SQLite register and log beside its config."""
    config = kit.write_adapter_dir(tmp_path, keys, settings)
    register = SqliteBlockRegister(tmp_path / "blocks.db",
                                   scope=BlockScope.of(registry.producers[kit.PRODUCER]))
    register.add(subject=kit.PERSON, level="unit", target=kit.UNIT_2, registered_by="person",
                 operator="test")

    return SimpleNamespace(adapter=Adapter(load_adapter_config(config), registry),
                           register=register, log=SqliteDisclosureLog(tmp_path / "disclosures.db"))


async def test_register_and_log_end_to_end(e2e: Any, settings: MqttSettings, keys: Any,
                                           kit: Any, registry: Registry) -> None:
    async with running(e2e.adapter), as_broker(settings) as b:
        reply = await ask(b, settings, registry, keys, kit)
        assert reply.status == "ok" and reply.blocked is True
        assert sorted(r.id for r in reply.records) == ["a1", "m1"]  # s1 is from U200
        # the register is read per question: lifting the block applies at once
        e2e.register.remove(subject=kit.PERSON, level="unit", target=kit.UNIT_2,
                            operator="test")
        reply = await ask(b, settings, registry, keys, kit)
        assert reply.blocked is False
        assert sorted(r.id for r in reply.records) == ["a1", "m1", "s1"]
    first, second = e2e.log.entries()
    assert first.blocked_withheld and first.disclosed == {"alerts": 1, "medication": 1}
    assert not second.blocked_withheld and second.disclosed["social_care_interventions"] == 1


@pytest.mark.parametrize("damage", ["corrupt", "missing", "foreign", "locked"])
async def test_unusable_register_end_to_end_is_an_error_with_no_records(
    e2e: Any, settings: MqttSettings, keys: Any, kit: Any, registry: Registry, damage: str
) -> None:
    path: Path = e2e.register.path
    holder = None
    with capture_logs() as logs:
        async with running(e2e.adapter), as_broker(settings) as b:
            assert (await ask(b, settings, registry, keys, kit)).status == "ok"
            if damage == "corrupt":
                path.write_bytes(b"\0garbage" * 512)
            elif damage == "missing":
                path.unlink()
            elif damage == "foreign":
                path.unlink()
                with closing(sqlite3.connect(path)) as con:
                    con.execute("CREATE TABLE t (x)")
                    con.commit()
            else:
                holder = sqlite3.connect(path, isolation_level=None)
                holder.execute("BEGIN EXCLUSIVE")
            try:
                reply = await ask(b, settings, registry, keys, kit)
            finally:
                if holder is not None:
                    holder.execute("ROLLBACK")
                    holder.close()
    assert reply.status == "error" and reply.records == [] and reply.blocked is False
    assert reply.reason == "block register unavailable"
    assert any(e["event"] == "block register unavailable" for e in logs)
    ok, error = e2e.log.entries()
    assert ok.status == "ok" and error.status == "error" and error.disclosed == {}
    assert error.reason == "block register unavailable"


async def test_register_missing_at_start_up_fails_closed(
    e2e: Any, settings: MqttSettings, keys: Any, kit: Any, registry: Registry
) -> None:
    e2e.register.path.unlink()
    with capture_logs() as logs:
        async with running(e2e.adapter), as_broker(settings) as b:
            reply = await ask(b, settings, registry, keys, kit)
    assert reply.status == "error" and reply.records == []
    assert not e2e.register.path.exists()  # the adapter never creates the register
    [start] = [e for e in logs if e["event"].startswith("block register unavailable: ")]
    assert start["log_level"] == "error" and "does not exist" in start["detail"]


async def test_log_unwritable_end_to_end_is_an_error_with_no_records(
    e2e: Any, settings: MqttSettings, keys: Any, kit: Any, registry: Registry
) -> None:
    async with running(e2e.adapter), as_broker(settings) as b:
        e2e.log.path.unlink()
        e2e.log.path.mkdir()  # the file can no longer be opened
        reply = await ask(b, settings, registry, keys, kit)
    assert reply.status == "error" and reply.records == [] and reply.blocked is False
    assert reply.reason == "disclosure log unavailable"
