"""Truncation and rollback (SPEC section 7): what the database alone cannot show, the
checkpoints a witness kept do. On SQLite and PostgreSQL: an older copy of the log put
back, or the newest entries deleted with their checkpoints, fail ``verify_log`` and name
the first missing entry; an intact log is proven consistent with every witnessed head.
Each extract entry carries an inclusion proof against a signed head."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import msgspec

from broker.accesslog import AccessLogConfig, Witnessed, open_access_log, verify_log
from schemas.accesslog import CHECKPOINT_TYP, Checkpoint
from schemas.jose import PrivateKey, verify
from schemas.merkle import leaf_hash, verify_inclusion

from .conftest import PERSON, RawDb, make_entry


async def append(config: AccessLogConfig, key: PrivateKey, first: int, last: int) -> list[str]:
    """Append entries ``first..last`` and close: the tokens of every checkpoint signed
    (the last is the shutdown checkpoint, what a witness holds after it)."""
    log = open_access_log(config, key=key, instance="test-1")
    tokens: list[str] = []
    log.on_checkpoint = lambda _cp, token: tokens.append(token)
    await log.open()
    for n in range(first, last + 1):
        await log.append(make_entry(n))
    await log.close()
    return tokens


def size_of(token: str, key: PrivateKey) -> int:
    _, payload = verify(token, lambda _h: key.public, typ=CHECKPOINT_TYP)
    return msgspec.json.decode(payload, type=Checkpoint).seq


async def check(config: AccessLogConfig, key: PrivateKey, *tokens: str):  # type: ignore[no-untyped-def]
    return await verify_log(config, broker_keys={key.kid: key.public},
                            witnessed=[Witnessed(witness=f"producer P{i}", token=t)
                                       for i, t in enumerate(tokens, 1)])


_TABLES = ("access_log_entries", "access_log_checkpoints", "access_log_leaves")


async def copy_of(config: AccessLogConfig, tmp: Path) -> object:
    """A copy of the whole log database as it is now (the log must be closed)."""
    if config.kind == "sqlite":
        assert config.path is not None
        saved = tmp / "older-copy.db"
        shutil.copyfile(config.path, saved)
        return saved
    conn = await asyncpg.connect(config.dsn)
    try:
        for t in _TABLES:
            await conn.execute(f'CREATE TABLE "{config.schema}"."old_{t}" AS '
                               f'TABLE "{config.schema}"."{t}"')
    finally:
        await conn.close()
    return None


async def put_back(config: AccessLogConfig, saved: object) -> None:
    if config.kind == "sqlite":
        assert config.path is not None and isinstance(saved, Path)
        for suffix in ("-wal", "-shm"):
            Path(f"{config.path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(saved, config.path)
        return
    conn = await asyncpg.connect(config.dsn)
    try:
        async with conn.transaction():
            for t in _TABLES:
                await conn.execute(f'TRUNCATE "{config.schema}"."{t}"')
                await conn.execute(f'INSERT INTO "{config.schema}"."{t}" '
                                   f'SELECT * FROM "{config.schema}"."old_{t}"')
    finally:
        await conn.close()


async def test_an_intact_log_extends_every_witnessed_head(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    early = await append(log_config, key, 1, 3)
    late = await append(log_config, key, 4, 9)
    assert [size_of(t, key) for t in (early[-1], late[-1])] == [3, 9]
    report = await check(log_config, key, early[-1], late[-1])
    assert report.intact, report.problem
    assert (report.witnessed, report.witnesses, report.witnessed_to) == (2, 2, 9)


async def test_an_older_copy_of_the_database_put_back_is_caught(
        log_config: AccessLogConfig, key: PrivateKey, tmp_path: Path) -> None:
    await append(log_config, key, 1, 4)
    saved = await copy_of(log_config, tmp_path)
    witnessed = (await append(log_config, key, 5, 7))[-1]
    await put_back(log_config, saved)
    # The database alone is consistent: its chain and its own checkpoints hold.
    alone = await check(log_config, key)
    assert alone.intact and alone.last_seq == 4
    report = await check(log_config, key, witnessed)
    assert not report.intact
    assert report.bad_seq == 5
    assert report.problem is not None
    assert "entries 5..7 were removed from the end or rolled back" in report.problem
    assert "producer P1" in report.problem


async def test_a_rollback_the_broker_wrote_past_is_caught(
        log_config: AccessLogConfig, key: PrivateKey, tmp_path: Path) -> None:
    """Put back, then the broker runs on and the log grows past the witnessed size: the
    witnessed head is no prefix of it any more."""
    first = (await append(log_config, key, 1, 4))[-1]
    saved = await copy_of(log_config, tmp_path)
    witnessed = (await append(log_config, key, 5, 7))[-1]
    await put_back(log_config, saved)
    await append(log_config, key, 105, 110)  # other entries 5..10
    report = await check(log_config, key, first, witnessed)
    assert not report.intact
    assert report.bad_seq == 5
    assert report.problem is not None and "does not extend the checkpoint of 7" in report.problem


async def test_newest_entries_deleted_with_their_checkpoints_are_caught(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    await append(log_config, key, 1, 3)
    witnessed = (await append(log_config, key, 4, 8))[-1]
    s = "" if log_config.kind == "sqlite" else f'"{log_config.schema}".'
    await raw.execute("DELETE FROM {e} WHERE seq > 5", "DELETE FROM {c} WHERE seq > 5",
                      f"DELETE FROM {s}access_log_leaves WHERE seq > 5")
    assert (await check(log_config, key)).intact  # nothing in the database shows it
    report = await check(log_config, key, witnessed)
    assert (report.intact, report.bad_seq) == (False, 6)
    assert report.problem is not None and "entries 6..8 were removed" in report.problem
    # All checkpoints gone as well: the witness still has its own.
    await raw.execute("DELETE FROM {c}")
    report = await check(log_config, key, witnessed)
    assert (report.intact, report.bad_seq) == (False, 6)


async def test_a_checkpoint_not_signed_by_the_broker_is_named(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    from schemas.jose import generate_key

    other = generate_key()
    forged = (await append(log_config, other, 1, 2))[-1]
    report = await check(log_config, key, forged)
    assert not report.intact
    assert report.problem is not None and "not signed by the broker" in report.problem


async def test_extract_entries_carry_inclusion_proofs(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    log = open_access_log(log_config, key=key, instance="test-1")
    await log.open()
    try:
        for n in range(1, 12):
            await log.append(make_entry(n, subject=PERSON if n % 3 else "191212121212"))
        proven = await log.extract_proven(PERSON, None)
    finally:
        await log.close()
    cp = proven.checkpoint
    assert cp.seq == 11 and cp.root is not None and cp.kid == key.kid
    assert size_of(proven.token, key) == 11
    assert [p.seq for p in proven.proofs] == [n for n in range(1, 12) if n % 3]
    for p in proven.proofs:
        verify_inclusion(p.seq - 1, cp.seq, leaf_hash(p.entry.encode()),
                         [bytes.fromhex(h) for h in p.path], bytes.fromhex(cp.root))
    assert [e.query_id for e in proven.entries] == [f"q-{n:04d}" for n in range(1, 12) if n % 3]


async def test_a_log_from_before_the_merkle_tree_is_migrated(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    """A log of schema version 1 (the demo's folder from an older samsvar): its leaves are
    computed from the stored entries, and the log goes on as a Merkle tree."""
    await append(log_config, key, 1, 4)
    s = "" if log_config.kind == "sqlite" else f'"{log_config.schema}".'
    await raw.execute(f"DROP TABLE {s}access_log_leaves",
                      "ALTER TABLE {c} DROP COLUMN frontier", "ALTER TABLE {c} DROP COLUMN root",
                      "UPDATE {v} SET version = 1")
    witnessed = (await append(log_config, key, 5, 6))[-1]
    assert size_of(witnessed, key) == 6
    report = await check(log_config, key, witnessed)
    assert report.intact, report.problem
    assert report.witnessed_to == 6


async def test_a_pruned_log_still_extends_what_was_witnessed(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    """Pruning removes old entries but keeps their leaves: the tree, and every witnessed
    head, stay provable."""
    import datetime as dt

    from broker.accesslog import prune

    from .conftest import T0

    early = (await append(log_config, key, 1, 3))[-1]
    late = (await append(log_config, key, 4, 6))[-1]
    removed = await prune(log_config, key=key, instance="test-1",
                          before=T0 + dt.timedelta(minutes=4, seconds=30))
    assert removed == 4
    more = (await append(log_config, key, 7, 8))[-1]
    report = await check(log_config, key, early, late, more)
    assert report.intact, report.problem
    assert (report.first_seq, report.witnessed, report.witnessed_to) == (5, 3, 8)
