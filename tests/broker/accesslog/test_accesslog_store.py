"""The access log store, on SQLite and PostgreSQL: durable appends, group commit, the
chain, extracts, signed checkpoints, migrations, and failures reaching every waiter."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from broker.accesslog import (
    GENESIS,
    AccessLog,
    AccessLogClosed,
    AccessLogConfig,
    AccessLogError,
    ChainedAccessLog,
    open_access_log,
    verify_log,
)
from broker.accesslog.chain import Encoded, NewRow, canonical, link
from broker.accesslog.sqlite import SqliteStore
from schemas.accesslog import CHECKPOINT_TYP, Checkpoint
from schemas.jose import PrivateKey, verify
from schemas.messages import Period

from .conftest import OTHER, PERSON, T0, RawDb, make_entry, with_options


async def opened(config: AccessLogConfig, key: PrivateKey) -> AccessLog:
    log = open_access_log(config, key=key, instance="test-1")
    await log.open()
    return log


async def test_append_returns_after_the_entry_is_committed(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    log = await opened(log_config, key)
    try:
        entry = make_entry(1)
        stored = await log.append(entry)
        # Another connection sees the row the moment append returns.
        assert await raw.rows() == [(1, GENESIS, stored.hash, canonical(entry).decode())]
        assert stored.seq == 1 and stored.prev_hash == GENESIS and stored.entry == entry
        assert stored.hash == link(GENESIS, canonical(entry))
        assert log.commits == 1
    finally:
        await log.close()


async def test_concurrent_appends_share_commits_and_form_one_chain(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    log = await opened(log_config, key)
    try:
        stored = await asyncio.gather(*(log.append(make_entry(n)) for n in range(200)))
        assert sorted(s.seq for s in stored) == list(range(1, 201))
        assert log.commits < 10, "200 concurrent appends must be group-committed"
        rows = await raw.rows()
        prev = GENESIS
        for _seq, prev_hash, digest, body in rows:
            assert prev_hash == prev
            assert digest == link(prev_hash, body.encode())
            prev = digest
        assert [r[0] for r in rows] == list(range(1, 201))
    finally:
        await log.close()


async def test_a_commit_holds_at_most_max_batch_entries(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    log = await opened(with_options(log_config, max_batch=8), key)
    try:
        await asyncio.gather(*(log.append(make_entry(n)) for n in range(64)))
        assert log.commits >= 8
    finally:
        await log.close()


async def test_the_chain_continues_after_a_restart(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    log = await opened(log_config, key)
    last = [await log.append(make_entry(n)) for n in range(3)][-1]
    await log.close()
    log = await opened(log_config, key)
    try:
        nxt = await log.append(make_entry(3))
        assert (nxt.seq, nxt.prev_hash) == (4, last.hash)
    finally:
        await log.close()


async def test_extract_by_subject_and_period_oldest_first(
        log_config: AccessLogConfig, key: PrivateKey) -> None:
    day = dt.timedelta(days=1)
    log = await opened(log_config, key)
    try:
        # Appended out of time order: the extract is oldest first all the same.
        for n, (subject, when) in enumerate([
            (PERSON, T0 + 2 * day), (PERSON, T0), (OTHER, T0 + day),
            (PERSON, T0 + day), (PERSON, T0 + 3 * day), (None, T0 + day),
        ]):
            await log.append(make_entry(n, subject=subject, time=when))
        everything = await log.extract(PERSON, None)
        assert [e.time for e in everything] == [T0, T0 + day, T0 + 2 * day, T0 + 3 * day]
        assert all(e.subject == PERSON for e in everything)
        inclusive = await log.extract(PERSON, Period(from_=(T0 + day).date(),
                                                     to=(T0 + 2 * day).date()))
        assert [e.time for e in inclusive] == [T0 + day, T0 + 2 * day]
        assert [e.time for e in await log.extract(PERSON, Period(from_=(T0 + 3 * day).date()))
                ] == [T0 + 3 * day]
        assert [e.time for e in await log.extract(PERSON, Period(to=T0.date()))] == [T0]
        assert [e.query_id for e in await log.extract(OTHER, None)] == ["q-0002"]
        assert await log.extract("190101010101", None) == []
    finally:
        await log.close()


async def test_checkpoints_are_signed_by_the_broker_key(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    log = await opened(log_config, key)
    try:
        empty = await log.checkpoint("start")
        assert (empty.seq, empty.head_hash, empty.first_seq) == (0, GENESIS, 1)
        stored = [await log.append(make_entry(n)) for n in range(5)]
        cp = await log.checkpoint("interval")
        assert (cp.seq, cp.head_hash, cp.first_seq) == (5, stored[-1].hash, 1)
        assert (cp.instance, cp.reason) == ("test-1", "interval")
    finally:
        await log.close()
    tokens = [t for (t,) in await raw.fetch("SELECT token FROM {c} ORDER BY id")]
    assert len(tokens) == 3  # start, interval, shutdown
    header, payload = verify(tokens[1], lambda h: key.public, typ=CHECKPOINT_TYP)
    assert header.kid == key.kid
    assert msgspec.json.decode(payload, type=Checkpoint) == cp
    shutdown = msgspec.json.decode(verify(tokens[2], lambda h: key.public, typ=CHECKPOINT_TYP)[1],
                                   type=Checkpoint)
    assert (shutdown.reason, shutdown.seq) == ("shutdown", 5)


async def test_interval_checkpoints_only_when_there_are_new_entries(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    log = await opened(with_options(log_config, checkpoint_interval_s=0.05), key)

    async def interval_seqs() -> list[int]:
        return [s for (s,) in await raw.fetch(
            "SELECT seq FROM {c} WHERE reason = 'interval' ORDER BY id")]

    try:
        await asyncio.sleep(0.2)
        assert await interval_seqs() == []  # nothing to sign yet
        await log.append(make_entry(1))
        async with asyncio.timeout(10):
            while not await interval_seqs():
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert await interval_seqs() == [1]  # no new entries: no new checkpoint
    finally:
        await log.close()


async def test_close_commits_what_is_queued_then_signs_a_shutdown_checkpoint(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    log = await opened(log_config, key)
    pending = [asyncio.create_task(log.append(make_entry(n))) for n in range(50)]
    await asyncio.sleep(0)  # queued, not yet committed
    await log.close()
    assert sorted([(await p).seq for p in pending]) == list(range(1, 51))
    assert await raw.fetch("SELECT seq, reason FROM {c}") == [(50, "shutdown")]
    with pytest.raises(AccessLogClosed):
        await log.append(make_entry(99))
    assert not await log.writable()


async def test_writable_while_open(log_config: AccessLogConfig, key: PrivateKey) -> None:
    log = open_access_log(log_config, key=key, instance="test-1")
    assert not await log.writable()
    with pytest.raises(AccessLogClosed):
        await log.append(make_entry(1))
    await log.open()
    try:
        assert await log.writable()
    finally:
        await log.close()


async def test_migrations_are_idempotent(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    for n in range(2):
        log = await opened(log_config, key)
        await log.append(make_entry(n))
        await log.close()
    assert await raw.fetch("SELECT version FROM {v}") == [(2,)]
    assert [r[0] for r in await raw.rows()] == [1, 2]
    # Two at once (two broker instances starting) also work on one PostgreSQL schema.
    if log_config.kind == "postgresql":
        a, b = (open_access_log(log_config, key=key, instance=i) for i in ("a", "b"))
        await asyncio.gather(a.open(), b.open())
        await asyncio.gather(a.close(), b.close())


async def test_a_failed_commit_fails_every_waiter_of_its_batch(
        log_config: AccessLogConfig, key: PrivateKey, raw: RawDb) -> None:
    log = await opened(log_config, key)
    try:
        if log_config.kind == "sqlite":
            await raw.execute(
                "CREATE TRIGGER trap BEFORE INSERT ON {e} WHEN NEW.subject = '000000000000' "
                "BEGIN SELECT RAISE(ABORT, 'trapped'); END")
            untrap = "DROP TRIGGER trap"
        else:
            await raw.execute(
                "CREATE FUNCTION {s}.trap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.subject = '000000000000' THEN RAISE EXCEPTION 'trapped'; END IF; "
                "RETURN NEW; END $$",
                "CREATE TRIGGER trap BEFORE INSERT ON {e} FOR EACH ROW "
                "EXECUTE FUNCTION {s}.trap()")
            untrap = "DROP TRIGGER trap ON {e}"
        first = await log.append(make_entry(0))
        commits = log.commits
        batch = [make_entry(n) for n in range(1, 20)] + [make_entry(20, subject="000000000000")]
        results = await asyncio.gather(*(log.append(e) for e in batch), return_exceptions=True)
        assert all(isinstance(r, AccessLogError) for r in results), results
        assert "trapped" in str(results[0])
        assert log.commits == commits
        assert [r[0] for r in await raw.rows()] == [1]  # nothing of the batch was kept
        await raw.execute(untrap)
        after = await log.append(make_entry(21))
        assert (after.seq, after.prev_hash) == (2, first.hash)
    finally:
        await log.close()


async def test_postgresql_recovers_from_a_dropped_connection(
        pg_config: AccessLogConfig, key: PrivateKey) -> None:
    log_config, raw = pg_config, RawDb(pg_config)
    log = await opened(log_config, key)
    try:
        await log.append(make_entry(1))
        killed = await raw.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = ? AND datname = current_database()",
            f"samsvar-accesslog:{log_config.schema}")
        assert killed and all(ok for (ok,) in killed)
        outcomes: list[int | None] = []
        for n in range(2, 5):
            try:
                outcomes.append((await log.append(make_entry(n))).seq)
            except AccessLogError:
                outcomes.append(None)
        assert outcomes[-1] is not None and outcomes.count(None) <= 1
        assert await log.writable()
    finally:
        await log.close()


class _Flaky:
    """A store whose first append fails with an error its adapter did not translate."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def append(self, batch: Sequence[Encoded]) -> list[NewRow]:
        if not self.failed:
            self.failed = True
            raise RuntimeError("library surprise")
        return await self.inner.append(batch)


async def test_an_untranslated_error_fails_its_batch_and_the_log_goes_on(
        tmp_path: Path, key: PrivateKey) -> None:
    log = ChainedAccessLog(_Flaky(SqliteStore(tmp_path / "log.db")),  # type: ignore[arg-type]
                           key=key, instance="test-1")
    await log.open()
    try:
        results = await asyncio.gather(*(log.append(make_entry(n)) for n in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, AccessLogError) and "library surprise" in str(r)
                   for r in results)
        assert (await log.append(make_entry(5))).seq == 1
        assert await log.writable()
    finally:
        await log.close()


async def test_postgresql_instances_share_one_chain(pg_config: AccessLogConfig,
                                                    key: PrivateKey) -> None:
    """Three broker instances append at once: one history, seq without gaps, verifiable."""
    logs = [open_access_log(pg_config, key=key, instance=f"broker-{i}") for i in range(3)]
    await asyncio.gather(*(log.open() for log in logs))
    try:
        stored = await asyncio.gather(*(
            log.append(make_entry(n)) for n in range(60) for log in logs))
        await asyncio.gather(*(log.checkpoint("interval") for log in logs))
    finally:
        await asyncio.gather(*(log.close() for log in logs))
    assert sorted(s.seq for s in stored) == list(range(1, 181))
    by_seq = {s.seq: s for s in stored}
    assert all(by_seq[n].prev_hash == by_seq[n - 1].hash for n in range(2, 181))
    report = await verify_log(pg_config, broker_keys={key.kid: key.public})
    assert (report.intact, report.entries, report.checkpoints) == (True, 180, 6)


async def test_sqlite_commits_are_durable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    await store.open(create=True)
    try:
        def pragmas() -> tuple[str, int]:
            conn = store._c
            return (conn.execute("PRAGMA journal_mode").fetchone()[0],
                    conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await store._call(pragmas) == ("wal", 2)  # 2 = FULL: fsync on every commit
    finally:
        await store.close()
