"""The SQLite block register: the law at registration, history, and failing closed."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
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
    SqliteBlockRegister,
)
from producer_adapter.block_register import GUARDIAN_CHILD_MESSAGE
from producer_adapter.blocks import load_blocks_file, open_blocks
from producer_adapter.errors import AdapterConfigError
from schemas.jose import verify
from schemas.messages import REPLY_TYP, Reply, Unblock
from schemas.registry import Registry
from transport.settings import MqttSettings

TODAY = dt.date(2024, 6, 1)


@pytest.fixture
def register(tmp_path: Path, scope: BlockScope) -> SqliteBlockRegister:
    return SqliteBlockRegister(tmp_path / "blocks.db", scope=scope, lock_timeout=0.2)


def add(register: SqliteBlockRegister | PostgresBlockRegister, subject: str, level: str,
        target: str, **kw: Any) -> Any:
    return register.add(subject=subject, level=level, target=target,
                        registered_by=kw.pop("registered_by", "person"),
                        operator=kw.pop("operator", "kansliet"), today=TODAY, **kw)


def test_scope_comes_from_the_registry(scope: BlockScope, kit: Any) -> None:
    assert scope.organisation == kit.ORG
    assert scope.units == {kit.UNIT, kit.UNIT_2}


@pytest.mark.parametrize("level, target", [
    ("organisation", "SE2321000999-RE01"),
    ("unit", "SE2321000999-U200"),
    ("care_process", "VP-2024-0001"),
])
async def test_each_level_is_registered_and_read(register: SqliteBlockRegister, kit: Any,
                                                 level: str, target: str) -> None:
    block = add(register, "19500118-2046", level, target, note="per telefon")
    assert block.subject == kit.PERSON  # normalised to 12 digits
    assert (block.level, block.target, block.registered_by) == (level, target, "person")
    assert block.operator == "kansliet" and block.note == "per telefon"
    assert block.created.tzinfo is not None
    [stored] = register.blocks(kit.PERSON)
    assert stored == block
    [applied] = await register.blocks_for(kit.PERSON)
    assert (applied.subject, applied.level, applied.target) == (kit.PERSON, level, target)
    assert await register.blocks_for(kit.PERSON_2) == []


@pytest.fixture
def make_adapter(keys: Any, kit: Any, registry: Registry, data_dir: Path) -> Any:
    def make(blocks: Any) -> Adapter:
        cfg = AdapterConfig(**kit.adapter_config_kwargs(keys, MqttSettings()))
        return Adapter(cfg, registry, backend=JsonDirBackend.load(data_dir, kit.PRODUCER),
                       blocks=blocks)
    return make


def open_reply(out: Any, registry: Registry, kit: Any) -> Reply:
    _, payload = verify(out.token, lambda h: registry.producer_key(kit.PRODUCER, h), typ=REPLY_TYP)
    return msgspec.json.decode(payload, type=Reply)


@pytest.mark.parametrize("level, target, left", [
    ("organisation", "SE2321000999-RE01", []),
    ("unit", "SE2321000999-U200", ["a1", "m1"]),                  # s1 is from U200
    ("care_process", "VP-1", ["m1", "s1"]),                        # a1 is in VP-1
])
async def test_each_level_withholds_in_the_answer(
    tmp_path: Path, register: SqliteBlockRegister, make_adapter: Any, keys: Any, kit: Any,
    registry: Registry, data_dir: Path, level: str, target: str, left: list[str]
) -> None:
    kit.write_person(data_dir, kit.PERSON, [kit.medication("m1"),
                                            kit.alert("a1", care_process="VP-1"),
                                            kit.intervention("s1")])
    add(register, kit.PERSON, level, target)
    adapter = make_adapter(register)
    reply = open_reply(await adapter.answer(
        kit.sign_question(kit.make_question(), keys.broker)), registry, kit)
    assert reply.blocked is True
    assert sorted(r.id for r in reply.records) == left
    assert reply.status == ("ok" if left else "no_data")
    released = open_reply(await adapter.answer(kit.sign_question(kit.make_question(
        unblock=Unblock(step="read", producers=[kit.PRODUCER])), keys.broker)), registry, kit)
    assert released.blocked is False
    assert sorted(r.id for r in released.records) == ["a1", "m1", "s1"]


def test_a_guardian_cannot_block_a_childs_information(register: SqliteBlockRegister,
                                                      kit: Any) -> None:
    with pytest.raises(BlockRefused) as err:
        add(register, kit.CHILD, "unit", kit.UNIT, registered_by="guardian")
    assert str(err.value) == GUARDIAN_CHILD_MESSAGE
    assert "vårdnadshavare" in str(err.value) and "Lag 2022:913" in str(err.value)
    assert not register.path.exists()  # nothing was written, not even the file


def test_a_child_may_block_their_own_information(register: SqliteBlockRegister,
                                                 kit: Any) -> None:
    assert add(register, kit.CHILD, "unit", kit.UNIT).registered_by == "person"


@pytest.mark.parametrize("registered_by, message", [
    ("guardian", "no say over an adult's information"),
    ("legal_representative", "registered_by must be 'person'"),
    ("", "registered_by must be 'person'"),
])
def test_only_the_person_registers_a_block(register: SqliteBlockRegister, kit: Any,
                                           registered_by: str, message: str) -> None:
    with pytest.raises(BlockRefused, match=message):
        add(register, kit.PERSON, "unit", kit.UNIT, registered_by=registered_by)


def test_a_child_turns_eighteen(register: SqliteBlockRegister, kit: Any) -> None:
    with pytest.raises(BlockRefused, match="child"):
        register.add(subject=kit.CHILD, level="unit", target=kit.UNIT, registered_by="guardian",
                     operator="x", today=dt.date(2032, 12, 31))
    with pytest.raises(BlockRefused, match="adult"):
        register.add(subject=kit.CHILD, level="unit", target=kit.UNIT, registered_by="guardian",
                     operator="x", today=dt.date(2033, 1, 1))


@pytest.mark.parametrize("level, target, message", [
    ("organisation", "SE2120009999-EK01",
     r"is not the organisation of producer .*own organisation"),
    ("unit", "SE2321000999-U999", (r"unit 'SE2321000999-U999' is not a unit of producer "
                                   r"SE2321000999-P001 in the registry \(its units: "
                                   r"SE2321000999-U100, SE2321000999-U200\)")),
    ("person", "x", "level must be one of organisation, unit, care_process"),
    ("unit", "  ", "target must not be empty"),
    ("care_process", "a\nb", "target must be one line"),
])
def test_targets_outside_the_producer_are_refused(register: SqliteBlockRegister, kit: Any,
                                                  level: str, target: str,
                                                  message: str) -> None:
    with pytest.raises(BlockRefused, match=message):
        add(register, kit.PERSON, level, target)


def test_bad_subject_operator_and_duplicates_are_refused(register: SqliteBlockRegister,
                                                         kit: Any) -> None:
    with pytest.raises(BlockRefused, match=r"subject: .*check digit"):
        add(register, "195001182047", "unit", kit.UNIT)
    with pytest.raises(BlockRefused, match="operator must not be empty"):
        add(register, kit.PERSON, "unit", kit.UNIT, operator=" ")
    first = add(register, kit.PERSON, "unit", kit.UNIT)
    with pytest.raises(BlockRefused, match=rf"already has a unit block .*block #{first.id}"):
        add(register, kit.PERSON, "unit", kit.UNIT)


def test_adding_needs_the_producers_scope(tmp_path: Path, kit: Any) -> None:
    with pytest.raises(BlockRefused, match="BlockScope"):
        add(SqliteBlockRegister(tmp_path / "b.db"), kit.PERSON, "unit", kit.UNIT)


async def test_removing_keeps_the_history(register: SqliteBlockRegister, kit: Any) -> None:
    unit = add(register, kit.PERSON, "unit", kit.UNIT, note="lagd")
    org = add(register, kit.PERSON, "organisation", kit.ORG)
    other = add(register, kit.PERSON_2, "unit", kit.UNIT)
    removed = register.remove(subject="19500118-2046", level="unit", target=kit.UNIT,
                              operator="handläggare 2", note="personen häver spärren")
    assert removed == unit
    register.remove_id(org.id, operator="handläggare 3")
    assert register.blocks(kit.PERSON) == []
    assert await register.blocks_for(kit.PERSON) == []
    assert register.blocks() == [other]
    history = register.history(kit.PERSON)
    assert [(e.action, e.block_id, e.operator, e.note) for e in history] == [
        ("added", unit.id, "kansliet", "lagd"),
        ("added", org.id, "kansliet", ""),
        ("removed", unit.id, "handläggare 2", "personen häver spärren"),
        ("removed", org.id, "handläggare 3", ""),
    ]
    assert all(e.subject == kit.PERSON for e in history)
    assert history[2].at >= history[0].at
    assert len(register.history()) == 5
    # a lifted block can be registered again, under a new id
    again = add(register, kit.PERSON, "unit", kit.UNIT)
    assert again.id not in (unit.id, org.id, other.id)


def test_removing_what_is_not_there(register: SqliteBlockRegister, kit: Any) -> None:
    add(register, kit.PERSON, "unit", kit.UNIT)
    with pytest.raises(BlockNotFound, match="has no unit block on 'SE2321000999-U200'"):
        register.remove(subject=kit.PERSON, level="unit", target=kit.UNIT_2, operator="x")
    with pytest.raises(BlockNotFound, match="no block #99"):
        register.remove_id(99, operator="x")
    assert len(register.blocks()) == 1 and len(register.history()) == 1


def test_history_is_append_only(register: SqliteBlockRegister, kit: Any) -> None:
    add(register, kit.PERSON, "unit", kit.UNIT)
    with closing(sqlite3.connect(register.path)) as con:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute("DELETE FROM block_history")
        with pytest.raises(sqlite3.IntegrityError):  # the register holds no guardian's block
            con.execute("INSERT INTO blocks (subject, level, target, registered_by, operator, "
                    "created) VALUES (?, 'unit', 'u', 'guardian', 'x', 'now')", (kit.CHILD,))


def test_create_and_upgrade_are_idempotent(register: SqliteBlockRegister, kit: Any) -> None:
    with pytest.raises(BlockSourceError, match="does not exist"):
        register.upgrade()  # never creates
    register.create()
    register.create()
    register.upgrade()
    add(register, kit.PERSON, "unit", kit.UNIT)
    register.create()
    assert len(register.blocks()) == 1
    with closing(sqlite3.connect(register.path)) as con:
        assert con.execute("PRAGMA user_version").fetchone() == (1,)


# -- failing closed ---------------------------------------------------------------------


async def test_missing_register_is_an_error_never_no_blocks(tmp_path: Path, kit: Any) -> None:
    register = SqliteBlockRegister(tmp_path / "nope.db")
    with pytest.raises(BlockSourceError, match=r"nope\.db: the block register does not exist"):
        await register.blocks_for(kit.PERSON)
    assert not register.path.exists()  # reading never creates it


@pytest.mark.parametrize("content, message", [
    (b"this is not a database, just text" * 100, "file is not a database"),
    (b"", "not a samsvar block register"),
    ("FOREIGN", "not a samsvar block register"),
    ("NEWER", "schema is version 2, this adapter reads version 1"),
    ("TRUNCATED", "malformed|not a database|disk image"),
    ("DIRECTORY", "is not a file"),
])
async def test_unusable_register_raises(register: SqliteBlockRegister, kit: Any,
                                        content: Any, message: str) -> None:
    add(register, kit.PERSON, "unit", kit.UNIT)
    if content == "FOREIGN":
        register.path.unlink()
        with closing(sqlite3.connect(register.path)) as con:
            con.execute("CREATE TABLE blocks (x)")
            con.commit()
    elif content == "NEWER":
        with closing(sqlite3.connect(register.path)) as con:
            con.execute("PRAGMA user_version = 2")
    elif content == "DIRECTORY":
        register.path.unlink()
        register.path.mkdir()
    elif content == "TRUNCATED":
        data = register.path.read_bytes()
        register.path.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    else:
        register.path.write_bytes(content)
    with pytest.raises(BlockSourceError, match=message):
        await register.blocks_for(kit.PERSON)


async def test_locked_register_raises_after_the_timeout(register: SqliteBlockRegister,
                                                        kit: Any) -> None:
    add(register, kit.PERSON, "unit", kit.UNIT)
    holder = sqlite3.connect(register.path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(BlockSourceError, match="locked"):
            await register.blocks_for(kit.PERSON)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(await register.blocks_for(kit.PERSON)) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_unreadable_register_raises(register: SqliteBlockRegister, kit: Any) -> None:
    add(register, kit.PERSON, "unit", kit.UNIT)
    register.path.chmod(0)
    try:
        with pytest.raises(BlockSourceError):
            await register.blocks_for(kit.PERSON)
    finally:
        register.path.chmod(0o600)


# -- config -------------------------------------------------------------------------------


def test_config_opens_the_register_without_touching_it(tmp_path: Path) -> None:
    source = open_blocks({"kind": "sqlite", "path": "b.db", "lock_timeout": 0.5}, base=tmp_path)
    assert isinstance(source, SqliteBlockRegister)
    assert source.path == tmp_path / "b.db" and source.lock_timeout == 0.5
    assert not source.path.exists()


def test_a_guardians_block_in_a_seed_file_is_refused(tmp_path: Path, kit: Any) -> None:
    file = tmp_path / "blocks.json"
    file.write_text(json.dumps([{"subject": kit.CHILD, "level": "unit", "target": kit.UNIT,
                                 "registered_by": "guardian"}]))
    with pytest.raises(AdapterConfigError, match=r"block #1: a guardian \(vårdnadshavare\) "
                                                 r"cannot block a child's information"):
        load_blocks_file(file)
