"""The PostgreSQL block register: the SQLite register's rules, shared by replicas on
several hosts, and failing closed when the database or its tables are not there."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import pytest

from producer_adapter import (
    Adapter,
    AdapterConfig,
    BlockNotFound,
    BlockRefused,
    BlockScope,
    BlockSourceError,
    JsonDirBackend,
    PostgresBlockRegister,
)
from producer_adapter.block_rules import GUARDIAN_CHILD_MESSAGE
from producer_adapter.blocks import check_blocks_table, open_blocks
from producer_adapter.errors import AdapterConfigError
from samsvar import cli
from schemas.messages import Reply, Unblock
from schemas.registry import Registry
from tests.conftest import PgSchema, free_port
from tests.producer_adapter.test_adapter_blocks_sqlite import add, open_reply  # both stores
from tests.producer_adapter.test_adapter_daemon import (
    broker,
    collect_replies,
    publish_question,
    running,
)
from transport.settings import MqttSettings


@pytest.fixture
async def register(pg_schema: PgSchema, scope: BlockScope) -> Any:
    reg = PostgresBlockRegister(dsn=pg_schema.dsn, schema=pg_schema.name, scope=scope,
                                timeout=2.0)
    try:
        yield reg
    finally:
        await reg.aclose()


async def tables(pg: PgSchema) -> set[str]:
    con = await asyncpg.connect(pg.dsn, timeout=5)
    try:
        rows = await con.fetch("SELECT table_name FROM information_schema.tables "
                               "WHERE table_schema = $1", pg.name)
    finally:
        await con.close()
    return {r["table_name"] for r in rows}


@pytest.mark.parametrize("level, target, left", [
    ("organisation", "SE2321000999-RE01", []),
    ("unit", "SE2321000999-U200", ["a1", "m1"]),                  # s1 is from U200
    ("care_process", "VP-1", ["m1", "s1"]),                        # a1 is in VP-1
])
async def test_each_level_is_registered_read_and_applied(
    register: PostgresBlockRegister, keys: Any, kit: Any, registry: Registry, data_dir: Path,
    level: str, target: str, left: list[str]
) -> None:
    kit.write_person(data_dir, kit.PERSON, [kit.medication("m1"),
                                            kit.alert("a1", care_process="VP-1"),
                                            kit.intervention("s1")])
    block = add(register, "19500118-2046", level, target, note="per telefon")
    assert block.subject == kit.PERSON  # normalised to 12 digits
    assert (block.level, block.target, block.registered_by) == (level, target, "person")
    assert block.created.tzinfo is not None
    assert register.blocks(kit.PERSON) == [block]
    [applied] = await register.blocks_for(kit.PERSON)
    assert (applied.subject, applied.level, applied.target) == (kit.PERSON, level, target)
    assert await register.blocks_for(kit.PERSON_2) == []

    cfg = AdapterConfig(**kit.adapter_config_kwargs(keys, MqttSettings()))
    adapter = Adapter(cfg, registry, backend=JsonDirBackend.load(data_dir, kit.PRODUCER),
                      blocks=register)
    reply = open_reply(await adapter.answer(
        kit.sign_question(kit.make_question(), keys.broker)), registry, kit)
    assert reply.blocked is True
    assert sorted(r.id for r in reply.records) == left
    released = open_reply(await adapter.answer(kit.sign_question(kit.make_question(
        unblock=Unblock(step="read", producers=[kit.PRODUCER])), keys.broker)), registry, kit)
    assert sorted(r.id for r in released.records) == ["a1", "m1", "s1"]


async def test_a_guardian_cannot_block_a_childs_information(
    register: PostgresBlockRegister, pg_schema: PgSchema, kit: Any
) -> None:
    with pytest.raises(BlockRefused) as err:
        add(register, kit.CHILD, "unit", kit.UNIT, registered_by="guardian")
    assert str(err.value) == GUARDIAN_CHILD_MESSAGE
    assert await tables(pg_schema) == set()  # nothing was written, not even the tables
    assert add(register, kit.CHILD, "unit", kit.UNIT).registered_by == "person"


@pytest.mark.parametrize("kw, message", [
    ({"registered_by": "guardian"}, "no say over an adult's information"),
    ({"registered_by": "legal_representative"}, "registered_by must be 'person'"),
    ({"level": "organisation", "target": "SE2120009999-EK01"}, "own organisation"),
    ({"target": "SE2321000999-U999"}, "is not a unit of producer SE2321000999-P001"),
    ({"level": "person"}, "level must be one of organisation, unit, care_process"),
    ({"subject": "195001182047"}, "subject: .*check digit"),
    ({"operator": " "}, "operator must not be empty"),
])
def test_the_same_rules_as_sqlite(register: PostgresBlockRegister, kit: Any,
                                  kw: dict[str, str], message: str) -> None:
    args = {"subject": kit.PERSON, "level": "unit", "target": kit.UNIT, **kw}
    with pytest.raises(BlockRefused, match=message):
        add(register, args.pop("subject"), args.pop("level"), args.pop("target"), **args)


def test_duplicates_are_refused(register: PostgresBlockRegister, kit: Any) -> None:
    first = add(register, kit.PERSON, "unit", kit.UNIT)
    with pytest.raises(BlockRefused, match=rf"already has a unit block .*block #{first.id}"):
        add(register, kit.PERSON, "unit", kit.UNIT)
    with pytest.raises(BlockRefused, match="BlockScope"):
        add(PostgresBlockRegister(dsn="postgresql://x@127.0.0.1/x"), kit.PERSON, "unit",
            kit.UNIT)


async def test_removing_keeps_the_history_and_ids_are_never_reused(
    register: PostgresBlockRegister, kit: Any
) -> None:
    unit = add(register, kit.PERSON, "unit", kit.UNIT, note="lagd")
    org = add(register, kit.PERSON, "organisation", kit.ORG)
    other = add(register, kit.PERSON_2, "unit", kit.UNIT)
    assert register.remove(subject="19500118-2046", level="unit", target=kit.UNIT,
                           operator="handläggare 2", note="personen häver spärren") == unit
    register.remove_id(org.id, operator="handläggare 3")
    assert await register.blocks_for(kit.PERSON) == []
    assert register.blocks() == [other]
    history = register.history(kit.PERSON)
    assert [(e.action, e.block_id, e.operator, e.note) for e in history] == [
        ("added", unit.id, "kansliet", "lagd"),
        ("added", org.id, "kansliet", ""),
        ("removed", unit.id, "handläggare 2", "personen häver spärren"),
        ("removed", org.id, "handläggare 3", ""),
    ]
    assert len(register.history()) == 5
    with pytest.raises(BlockNotFound, match="has no unit block on 'SE2321000999-U100'"):
        register.remove(subject=kit.PERSON, level="unit", target=kit.UNIT, operator="x")
    with pytest.raises(BlockNotFound, match="no block #99"):
        register.remove_id(99, operator="x")
    again = add(register, kit.PERSON, "unit", kit.UNIT)
    assert again.id not in (unit.id, org.id, other.id)


async def test_history_is_protected(register: PostgresBlockRegister, pg_schema: PgSchema,
                                    kit: Any) -> None:
    add(register, kit.PERSON, "unit", kit.UNIT)
    con = await asyncpg.connect(pg_schema.dsn, timeout=5)
    try:
        for statement in ("DELETE FROM {}.block_history", "UPDATE {}.block_history SET note = 'x'",
                          "TRUNCATE {}.block_history"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await con.execute(statement.format(f'"{pg_schema.name}"'))
        with pytest.raises(asyncpg.CheckViolationError):  # the register holds no guardian's block
            await con.execute(
                f'INSERT INTO "{pg_schema.name}".blocks (subject, level, target, registered_by, '
                "operator, created) VALUES ($1, 'unit', 'u', 'guardian', 'x', now())", kit.CHILD)
    finally:
        await con.close()
    assert len(register.history()) == 1


async def test_create_and_upgrade(register: PostgresBlockRegister, pg_schema: PgSchema,
                                  kit: Any) -> None:
    with pytest.raises(BlockSourceError, match="does not exist"):
        register.upgrade()  # never creates
    # several hosts running `block init` at once
    await asyncio.gather(*(asyncio.to_thread(register.create) for _ in range(3)))
    register.create()
    register.upgrade()
    add(register, kit.PERSON, "unit", kit.UNIT)
    register.create()
    assert len(register.blocks()) == 1
    con = await asyncpg.connect(pg_schema.dsn, timeout=5)
    try:
        await con.execute(f'UPDATE "{pg_schema.name}".block_register_version SET version = 2')
    finally:
        await con.close()
    with pytest.raises(BlockSourceError, match="schema is version 2, this adapter reads version 1"):
        register.upgrade()


async def test_a_foreign_table_is_not_a_register(register: PostgresBlockRegister,
                                                 pg_schema: PgSchema) -> None:
    con = await asyncpg.connect(pg_schema.dsn, timeout=5)
    try:
        await con.execute(f'CREATE TABLE "{pg_schema.name}".blocks (x int)')
    finally:
        await con.close()
    for action in (register.create, register.upgrade, register.blocks):
        with pytest.raises(BlockSourceError, match="not a samsvar block register"):
            action()


# -- failing closed ---------------------------------------------------------------------


async def test_missing_tables_are_an_error_never_no_blocks(register: PostgresBlockRegister,
                                                           pg_schema: PgSchema,
                                                           kit: Any) -> None:
    with pytest.raises(BlockSourceError, match="the block register does not exist"):
        await register.blocks_for(kit.PERSON)
    with pytest.raises(BlockSourceError, match="the block register does not exist"):
        register.blocks()
    assert await tables(pg_schema) == set()  # reading never creates it
    gone = PostgresBlockRegister(dsn=pg_schema.dsn, schema="no_such_schema_here")
    with pytest.raises(BlockSourceError, match="the block register does not exist"):
        await gone.blocks_for(kit.PERSON)
    await gone.aclose()


async def test_database_down_is_an_error(kit: Any) -> None:
    down = PostgresBlockRegister(dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/test",
                                 schema="x", timeout=2.0)
    with pytest.raises(BlockSourceError, match="block register unusable"):
        await down.blocks_for(kit.PERSON)
    with pytest.raises(BlockSourceError, match="block register unusable"):
        down.upgrade()
    await down.aclose()


async def test_dropped_tables_while_running_fail_closed(register: PostgresBlockRegister,
                                                        pg_schema: PgSchema,
                                                        kit: Any) -> None:
    add(register, kit.PERSON, "unit", kit.UNIT)
    assert len(await register.blocks_for(kit.PERSON)) == 1  # the pool is open
    con = await asyncpg.connect(pg_schema.dsn, timeout=5)
    try:
        await con.execute(f'DROP TABLE "{pg_schema.name}".blocks')
    finally:
        await con.close()
    with pytest.raises(BlockSourceError):
        await register.blocks_for(kit.PERSON)


# -- config and the CLI ----------------------------------------------------------------


@pytest.mark.parametrize("table, message", [
    ({"kind": "postgresql"}, "dsn must be a postgresql:// URL"),
    ({"kind": "postgresql", "dsn": "mysql://x"}, "dsn must be a postgresql:// URL"),
    ({"kind": "postgresql", "dsn": "postgresql://x", "schema": "a-b"}, "plain identifier"),
    ({"kind": "postgresql", "dsn": "postgresql://x", "path": "b.db"}, "unknown keys: path"),
    ({"kind": "mysql"}, 'kind must be "sqlite", "postgresql" or "json_file"'),
])
def test_config_is_checked(table: dict[str, Any], message: str) -> None:
    with pytest.raises(AdapterConfigError, match=message):
        check_blocks_table(table, where="adapter.toml")


def test_config_opens_the_register_without_touching_it(tmp_path: Path) -> None:
    source = open_blocks({"kind": "postgresql", "dsn": "postgresql://u:secret@h/db",
                          "schema": "blocks_a"}, base=tmp_path)
    assert isinstance(source, PostgresBlockRegister)
    assert source.schema == "blocks_a" and "secret" not in repr(source)
    assert open_blocks({"kind": "postgresql", "dsn": "postgresql://h/db"},
                       base=tmp_path).schema == "public"  # type: ignore[attr-defined]


def pg_config(root: Path, keys: Any, kit: Any, dsn: str, schema: str,
              settings: MqttSettings | None = None) -> Path:
    """An adapter directory (as the SQLite tests write) whose [blocks] is PostgreSQL."""
    root.mkdir(parents=True, exist_ok=True)
    config: Path = kit.write_adapter_dir(root, keys, settings)
    text = config.read_text()
    sqlite = 'kind = "sqlite"\npath = "blocks.db"\nlock_timeout = 0.2'
    assert sqlite in text
    config.write_text(text.replace(
        sqlite, f'kind = "postgresql"\ndsn = "{dsn}"\nschema = "{schema}"'))
    return config


def cli_block(capsys: pytest.CaptureFixture[str], config: Path, action: str,
              *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the adapters logged before
    code = cli.main(["adapter", "block", action, "--config", str(config), *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_replicas_on_one_schema_share_every_block(
    capsys: pytest.CaptureFixture[str], pg_schema: PgSchema, tmp_path: Path, keys: Any,
    kit: Any, registry: Registry, data_dir: Path
) -> None:
    """Two hosts' adapters: a block added through either one's CLI is applied by the other
    at its next question."""
    host_a = pg_config(tmp_path / "a", keys, kit, pg_schema.dsn, pg_schema.name)
    host_b = pg_config(tmp_path / "b", keys, kit, pg_schema.dsn, pg_schema.name)
    code, out, _ = cli_block(capsys, host_a, "init")
    assert code == 0 and out.startswith(f"postgresql schema {pg_schema.name!r}: block "
                                        "register ready (0 blocks in force)")
    cfg = AdapterConfig(**kit.adapter_config_kwargs(keys, MqttSettings()))
    table = {"kind": "postgresql", "dsn": pg_schema.dsn, "schema": pg_schema.name}
    registers = [open_blocks(table, base=tmp_path) for _ in "ab"]
    replicas = [Adapter(cfg, registry, backend=JsonDirBackend.load(data_dir, kit.PRODUCER),
                        blocks=r) for r in registers]
    try:
        await check_replicas(capsys, host_a, host_b, replicas, keys, kit, registry)
    finally:
        for r in registers:
            assert isinstance(r, PostgresBlockRegister)
            await r.aclose()


async def check_replicas(capsys: pytest.CaptureFixture[str], host_a: Path, host_b: Path,
                         replicas: list[Adapter], keys: Any, kit: Any,
                         registry: Registry) -> None:

    async def records(adapter: Adapter) -> list[str]:
        out = await adapter.answer(kit.sign_question(kit.make_question(), keys.broker))
        return sorted(r.id for r in open_reply(out, registry, kit).records)

    everything = await records(replicas[1])
    assert everything == ["a1", "m1", "s1"]
    code, out, err = cli_block(capsys, host_a, "add", "--subject", kit.PERSON, "--level", "unit",
                               "--target", kit.UNIT_2, "--registered-by", "person",
                               "--operator", "kansliet")
    assert (code, err) == (0, "") and out.startswith("block #1 added")
    assert await records(replicas[1]) == ["a1", "m1"]  # added on host a, applied on b
    assert await records(replicas[0]) == ["a1", "m1"]
    code, out, err = cli_block(capsys, host_b, "add", "--subject", kit.PERSON, "--level",
                               "organisation", "--target", kit.ORG, "--registered-by", "person",
                               "--operator", "kansliet")
    assert code == 0
    assert await records(replicas[0]) == []  # added on host b, applied on a
    code, _, err = cli_block(capsys, host_b, "add", "--subject", kit.CHILD, "--level", "unit",
                             "--target", kit.UNIT, "--registered-by", "guardian")
    assert (code, err) == (1, f"samsvar: {GUARDIAN_CHILD_MESSAGE}\n")
    assert cli_block(capsys, host_a, "remove", "--id", "2", "--operator", "x")[0] == 0
    assert await records(replicas[1]) == ["a1", "m1"]
    code, out, _ = cli_block(capsys, host_b, "list", "--history", "--json")
    assert [(e["action"], e["block_id"]) for e in json.loads(out)] == [
        ("added", 1), ("added", 2), ("removed", 2)]
    code, out, _ = cli_block(capsys, host_b, "list")
    assert code == 0 and kit.UNIT_2 in out and "postgresql schema" in out


# -- the daemon, end to end over MQTT ------------------------------------------------------


async def ask_daemon(mqtt_server: Any, unique_prefix: str, keys: Any, kit: Any,
                     registry: Registry, tmp_path: Path, blocks: dict[str, Any]) -> Reply:
    settings = mqtt_server.settings(unique_prefix)
    cfg = AdapterConfig(**kit.adapter_config_kwargs(keys, settings),
                        backend={"kind": "json_dir", "path": f"data/{kit.PRODUCER}"},
                        blocks=blocks, base=tmp_path)
    q = kit.make_question(prefix=settings.prefix)
    async with running(Adapter(cfg, registry)), broker(settings) as b:
        await publish_question(b, settings, kit, kit.sign_question(q, keys.broker))
        [reply] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
    assert reply.query_id == q.query_id
    return reply


async def test_daemon_applies_the_shared_register(
    mqtt_server: Any, unique_prefix: str, pg_schema: PgSchema, keys: Any, kit: Any,
    registry: Registry, data_dir: Path, tmp_path: Path
) -> None:
    PostgresBlockRegister(dsn=pg_schema.dsn, schema=pg_schema.name,
                          scope=BlockScope.of(registry.producers[kit.PRODUCER])).add(
        subject=kit.PERSON, level="unit", target=kit.UNIT_2, registered_by="person",
        operator="kansliet")
    reply = await ask_daemon(mqtt_server, unique_prefix, keys, kit, registry, tmp_path,
                             {"kind": "postgresql", "dsn": pg_schema.dsn,
                              "schema": pg_schema.name})
    assert reply.status == "ok" and reply.blocked is True
    assert sorted(r.id for r in reply.records) == ["a1", "m1"]


async def test_daemon_without_the_tables_replies_error(
    mqtt_server: Any, unique_prefix: str, pg_schema: PgSchema, keys: Any, kit: Any,
    registry: Registry, data_dir: Path, tmp_path: Path
) -> None:
    reply = await ask_daemon(mqtt_server, unique_prefix, keys, kit, registry, tmp_path,
                             {"kind": "postgresql", "dsn": pg_schema.dsn,
                              "schema": pg_schema.name})
    assert reply.status == "error" and reply.records == []
    assert await tables(pg_schema) == set()  # the daemon never creates the register


async def test_daemon_with_the_database_down_replies_error(
    mqtt_server: Any, unique_prefix: str, keys: Any, kit: Any, registry: Registry,
    data_dir: Path, tmp_path: Path
) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    reply = await ask_daemon(mqtt_server, unique_prefix, keys, kit, registry, tmp_path,
                             {"kind": "postgresql", "dsn": down, "schema": "blocks"})
    assert reply.status == "error" and reply.records == []
