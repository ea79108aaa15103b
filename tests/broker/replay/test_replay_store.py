"""The replay stores (:mod:`broker.replay`): a ``jti`` is accepted once within its lifetime.

The PostgreSQL store needs PostgreSQL (``pg_dsn``: a failure under ``CI=true`` when it is
unreachable, else a skip).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from broker.replay import PostgresReplayStore, ReplayGuard, ReplayStore, ReplayStoreError
from tests.conftest import fresh_pg_schema

NOW = 1_800_000_000


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[PostgresReplayStore]:
    async with fresh_pg_schema(pg_dsn, "t_replay_") as schema:  # the store creates it
        store = PostgresReplayStore(dsn=pg_dsn, schema=schema, cleanup_every=10**9,
                                    cleanup_interval_s=10**9)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


async def _first_then_replayed(store: ReplayStore) -> None:
    assert await store.first_use("org-a", "j1", NOW + 60, now=NOW)
    assert not await store.first_use("org-a", "j1", NOW + 60, now=NOW + 1)
    assert await store.first_use("org-b", "j1", NOW + 60, now=NOW + 1), "per issuer"
    assert await store.first_use("org-a", "j2", NOW + 60, now=NOW + 1)
    # once expired, the pair is forgotten (the lifetime check refuses the old token anyway)
    assert await store.first_use("org-a", "j1", NOW + 200, now=NOW + 61)
    assert not await store.first_use("org-a", "j1", NOW + 200, now=NOW + 62)


async def test_memory_guard_first_use_then_replayed() -> None:
    await _first_then_replayed(ReplayGuard())


async def test_postgres_store_first_use_then_replayed(pg_store: PostgresReplayStore) -> None:
    await _first_then_replayed(pg_store)


async def test_postgres_store_is_shared_and_opens_idempotently(
        pg_store: PostgresReplayStore, pg_dsn: str) -> None:
    """A second instance on the same schema (opening the existing table) sees the first's
    tokens; concurrent presentations of one token are accepted exactly once."""
    other = PostgresReplayStore(dsn=pg_dsn, schema=pg_store.schema)
    await other.open()
    try:
        assert await pg_store.first_use("org-a", "shared", NOW + 60, now=NOW)
        assert not await other.first_use("org-a", "shared", NOW + 60, now=NOW)
        results = await asyncio.gather(*(s.first_use("org-a", "race", NOW + 60, now=NOW)
                                         for s in [pg_store, other] * 5))
        assert sorted(results) == [False] * 9 + [True]
    finally:
        await other.close()


async def test_postgres_store_deletes_expired_rows(pg_store: PostgresReplayStore,
                                                   pg_dsn: str) -> None:
    for i in range(5):
        assert await pg_store.first_use("org-a", f"old-{i}", NOW + 10, now=NOW)
    assert await pg_store.first_use("org-a", "live", NOW + 100, now=NOW)
    assert await pg_store.delete_expired(now=NOW + 50) == 5
    conn = await asyncpg.connect(pg_dsn)
    try:
        left = await conn.fetch(f'SELECT jti FROM "{pg_store.schema}".used_jti')
    finally:
        await conn.close()
    assert [r["jti"] for r in left] == ["live"]
    assert not await pg_store.first_use("org-a", "live", NOW + 100, now=NOW + 50)


async def test_postgres_store_cleans_up_in_the_background(pg_dsn: str) -> None:
    async with fresh_pg_schema(pg_dsn, "t_replay_") as schema:
        store = PostgresReplayStore(dsn=pg_dsn, schema=schema, cleanup_every=3)
        await store.open()
        try:
            for i in range(2):
                assert await store.first_use("org-a", f"old-{i}", NOW + 10, now=NOW)
            assert await store.first_use("org-a", "new", NOW + 100, now=NOW + 20)  # the 3rd
            task = store._cleanup_task
            assert task is not None
            assert await task == 2
        finally:
            await store.close()


async def test_postgres_store_fails_closed(pg_store: PostgresReplayStore) -> None:
    await pg_store.close()
    with pytest.raises(ReplayStoreError):
        await pg_store.first_use("org-a", "j", NOW + 60, now=NOW)
    unreachable = PostgresReplayStore(dsn="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ReplayStoreError):
        await unreachable.open()
