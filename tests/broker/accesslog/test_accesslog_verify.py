"""verify_log and prune on SQLite and PostgreSQL: an intact log is proven intact; every
kind of tampering done directly in the database names the first bad entry."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from broker.accesslog import (
    AccessLogConfig,
    AccessLogError,
    VerifyReport,
    open_access_log,
    prune,
    verify_log,
)
from broker.accesslog.chain import GENESIS, Head, seal
from schemas.jose import PrivateKey, generate_key

from .conftest import OTHER, PERSON, T0, RawDb, make_entry

DAY = dt.timedelta(days=1)
INSERT_CHECKPOINT = ("INSERT INTO {c} (seq, head_hash, time, instance, reason, first_seq, token) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)")


def stamp(config: AccessLogConfig, when: dt.datetime) -> object:
    """A time as the kind's driver takes it."""
    return when if config.kind == "postgresql" else when.isoformat()


async def write(config: AccessLogConfig, key: PrivateKey, count: int, *, start: int = 0,
                checkpoint_at: tuple[int, ...] = (), close: bool = True,
                day_of: dict[int, int] | None = None) -> None:
    """Append ``count`` entries; sign a checkpoint after the n-th of ``checkpoint_at``.

    ``close`` closes normally (a shutdown checkpoint); otherwise the tail stays unsigned.
    """
    log = open_access_log(config, key=key, instance="test-1")
    await log.open()
    for n in range(start + 1, start + count + 1):
        when = T0 + (day_of or {}).get(n, 0) * DAY + dt.timedelta(minutes=n)
        await log.append(make_entry(n, subject=PERSON if n % 3 else OTHER, time=when))
        if n in checkpoint_at:
            await log.checkpoint("interval")
    if close:
        await log.close()
    else:  # as if the process died: no shutdown checkpoint
        log._runner.cancel()  # type: ignore[attr-defined]
        await log._store.close()  # type: ignore[attr-defined]


async def check(config: AccessLogConfig, key: PrivateKey) -> VerifyReport:
    return await verify_log(config, broker_keys={key.kid: key.public})


async def test_an_intact_log_is_proven_intact(log_config: AccessLogConfig,
                                              key: PrivateKey) -> None:
    await write(log_config, key, 12, checkpoint_at=(5,))
    report = await check(log_config, key)
    assert report == VerifyReport(intact=True, entries=12, checkpoints=2, first_seq=1,
                                  last_seq=12, unsigned_tail=0, signed_to={key.kid: 12})


async def test_entries_after_the_last_checkpoint_are_counted_as_unsigned(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    await write(log_config, key, 9, checkpoint_at=(6,), close=False)
    report = await check(log_config, key)
    assert report.intact and report.unsigned_tail == 3 and report.checkpoints == 1


async def test_an_empty_log_is_intact(log_config: AccessLogConfig, key: PrivateKey) -> None:
    await write(log_config, key, 0)
    report = await check(log_config, key)
    assert report == VerifyReport(intact=True, entries=0, checkpoints=1, first_seq=None,
                                  last_seq=None, unsigned_tail=0, signed_to={key.kid: 0})


async def test_a_missing_log_is_an_error(log_config: AccessLogConfig, key: PrivateKey) -> None:
    with pytest.raises(AccessLogError, match="no access log"):
        await check(log_config, key)


async def test_a_changed_body_names_its_entry(log_config: AccessLogConfig, key: PrivateKey,
                                              raw: RawDb) -> None:
    await write(log_config, key, 10)
    ((body,),) = await raw.fetch("SELECT body FROM {e} WHERE seq = 5")
    assert '"medication":1' in body
    await raw.execute(("UPDATE {e} SET body = ? WHERE seq = 5",
                       [body.replace('"medication":1', '"medication":0')]))
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 5)
    assert "entry 5 was changed" in str(report.problem)


async def test_a_row_deleted_in_the_middle_is_named(log_config: AccessLogConfig,
                                                    key: PrivateKey, raw: RawDb) -> None:
    await write(log_config, key, 10)
    await raw.execute("DELETE FROM {e} WHERE seq IN (6, 7)")
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq, report.entries) == (False, 6, 8)
    assert report.problem == "entries 6..7 were removed from the log"


async def test_rows_deleted_from_the_end_are_caught_by_the_checkpoint(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    await write(log_config, key, 10)  # the shutdown checkpoint signs entry 10
    await raw.execute("DELETE FROM {e} WHERE seq >= 9")
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 9)
    assert "entries 9..10 were removed from the end" in str(report.problem)


async def test_swapped_bodies_name_the_first_moved_entry(log_config: AccessLogConfig,
                                                          key: PrivateKey, raw: RawDb) -> None:
    await write(log_config, key, 10)
    rows = {seq: body for seq, _, _, body in await raw.rows()}
    await raw.execute(("UPDATE {e} SET body = ? WHERE seq = 4", [rows[7]]),
                      ("UPDATE {e} SET body = ? WHERE seq = 7", [rows[4]]))
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 4)


async def test_swapped_rows_with_their_hashes_break_the_links(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    await write(log_config, key, 10)
    rows = {seq: (prev, digest, body) for seq, prev, digest, body in await raw.rows()}
    update = "UPDATE {e} SET prev_hash = ?, hash = ?, body = ? WHERE seq = ?"
    await raw.execute((update, [*rows[7], 4]), (update, [*rows[4], 7]))
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 4)
    assert "entry 4 does not follow entry 3" in str(report.problem)


async def test_a_rewritten_chain_is_caught_by_the_signed_checkpoints(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    """An intruder without the key changes entry 6 and recomputes every hash after it."""
    await write(log_config, key, 10, checkpoint_at=(3,))
    rows = await raw.rows()
    prev = rows[4][2]
    statements = []
    for seq, _, _, body in rows[5:]:
        if seq == 6:
            body = body.replace('"status":200', '"status":204')
        digest = hashlib.sha256(bytes.fromhex(prev) + body.encode()).hexdigest()
        statements.append(("UPDATE {e} SET prev_hash = ?, hash = ?, body = ? WHERE seq = ?",
                           [prev, digest, body, seq]))
        prev = digest
    await raw.execute(*statements)
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 4)  # after the last good checkpoint
    assert "checkpoint at entry 10 does not match" in str(report.problem)


async def test_a_changed_index_column_is_caught(log_config: AccessLogConfig, key: PrivateKey,
                                                raw: RawDb) -> None:
    await write(log_config, key, 6)
    await raw.execute(("UPDATE {e} SET subject = ? WHERE seq = 2", [OTHER]))
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 2)
    assert "columns differ" in str(report.problem)


async def test_a_forged_checkpoint_is_caught(log_config: AccessLogConfig, key: PrivateKey,
                                             raw: RawDb) -> None:
    await write(log_config, key, 5)
    rows = await raw.rows()
    cp, token = seal(Head(seq=5, hash=rows[-1][2], first_seq=1), key=generate_key(),
                     instance="intruder", reason="interval")
    await raw.execute((INSERT_CHECKPOINT, [5, cp.head_hash, stamp(log_config, cp.time),
                                           "intruder", "interval", 1, token]))
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 5)
    assert "not signed by the broker" in str(report.problem)


async def test_rows_deleted_from_the_start_without_a_prune_are_caught(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    await write(log_config, key, 10)
    await raw.execute("DELETE FROM {e} WHERE seq <= 3")
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 1)
    assert "entries 1..3 were removed from the start" in str(report.problem)


async def test_prune_keeps_the_chain_verifiable(log_config: AccessLogConfig, key: PrivateKey,
                                                raw: RawDb) -> None:
    await write(log_config, key, 10, day_of={n: 0 if n <= 4 else 1 for n in range(1, 11)})
    removed = await prune(log_config, key=key, instance="cli", before=T0 + DAY)
    assert removed == 4
    report = await check(log_config, key)
    assert (report.intact, report.first_seq, report.last_seq, report.entries) == (
        True, 5, 10, 6)
    assert (await raw.rows())[0][0] == 5
    # The broker goes on appending; the chain still verifies and extracts still work.
    await write(log_config, key, 2, start=10)
    report = await check(log_config, key)
    assert (report.intact, report.last_seq) == (True, 12)
    log = open_access_log(log_config, key=key, instance="test-1")
    await log.open()
    try:
        # Entry 11 was written with an earlier time (day 0): oldest first puts it first.
        assert [e.query_id for e in await log.extract(PERSON, None)] == [
            "q-0011", "q-0005", "q-0007", "q-0008", "q-0010"]
    finally:
        await log.close()
    # Nothing more to remove: no change, no checkpoint.
    assert await prune(log_config, key=key, instance="cli", before=T0 + DAY) == 0


async def test_prune_removes_only_a_prefix(log_config: AccessLogConfig, key: PrivateKey,
                                           raw: RawDb) -> None:
    # Entry 3 is old but follows a new entry 2: it stays, or the chain would have a hole.
    await write(log_config, key, 4, day_of={1: 0, 2: 2, 3: 0, 4: 2})
    assert await prune(log_config, key=key, instance="cli", before=T0 + DAY) == 1
    assert [r[0] for r in await raw.rows()] == [2, 3, 4]
    assert (await check(log_config, key)).intact


async def test_pruning_everything_then_appending_continues_the_chain(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    await write(log_config, key, 5)
    assert await prune(log_config, key=key, instance="cli", before=T0 + 10 * DAY) == 5
    report = await check(log_config, key)
    assert (report.intact, report.entries) == (True, 0)
    await write(log_config, key, 2, start=5)
    assert [r[0] for r in await raw.rows()] == [6, 7]
    report = await check(log_config, key)
    assert (report.intact, report.first_seq, report.last_seq) == (True, 6, 7)


async def test_a_forged_prune_start_is_caught(log_config: AccessLogConfig, key: PrivateKey,
                                              raw: RawDb) -> None:
    await write(log_config, key, 10)
    rows = await raw.rows()
    cp, token = seal(Head(seq=3, hash=rows[2][2], first_seq=4), key=generate_key(),
                     instance="intruder", reason="prune")
    await raw.execute("DELETE FROM {e} WHERE seq <= 3",
                      (INSERT_CHECKPOINT, [3, cp.head_hash, stamp(log_config, cp.time),
                                           "intruder", "prune", 4, token]))
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 1)
    assert "removed from the start" in str(report.problem)


async def test_removing_more_after_a_prune_is_caught(log_config: AccessLogConfig,
                                                     key: PrivateKey, raw: RawDb) -> None:
    await write(log_config, key, 10, day_of={n: 0 if n <= 3 else 1 for n in range(1, 11)})
    assert await prune(log_config, key=key, instance="cli", before=T0 + DAY) == 3
    await raw.execute("DELETE FROM {e} WHERE seq <= 6")
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 4)
    assert report.problem is not None and report.problem.startswith(
        "entries 4..6 were removed from the start")


async def test_a_broken_genesis_is_caught(log_config: AccessLogConfig, key: PrivateKey,
                                          raw: RawDb) -> None:
    await write(log_config, key, 3)
    rows = await raw.rows()
    fake_prev = "1" * 64
    digest = hashlib.sha256(bytes.fromhex(fake_prev) + rows[0][3].encode()).hexdigest()
    await raw.execute(("UPDATE {e} SET prev_hash = ?, hash = ? WHERE seq = 1",
                       [fake_prev, digest]))
    report = await check(log_config, key)
    assert (report.intact, report.bad_seq) == (False, 1)
    assert GENESIS != fake_prev
