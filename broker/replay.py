"""Refuses a JWT whose ``jti`` was seen before within its lifetime.

:class:`ReplayStore` is the port :class:`~broker.service.QueryService` asks. Two stores:

* :class:`SqliteReplayStore`: table ``used_jti`` in the SQLite access log's file, so a
  token stays used across a restart of the (one) broker instance writing that log.
* :class:`PostgresReplayStore`: table ``used_jti`` in the PostgreSQL access log's schema,
  shared by every instance writing that log, so a token is accepted once by all of them.
* :class:`ReplayGuard`, in memory: for tests and tools that run no access log.

A store that cannot answer raises :class:`ReplayStoreError`; the broker then fails closed
(503 ``replay-store-unavailable``).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import structlog

from .accesslog.postgres import PG_ERRORS, close_pool, lock_key
from .errors import BrokerError

__all__ = [
    "PostgresReplayStore",
    "ReplayGuard",
    "ReplayStore",
    "ReplayStoreError",
    "SqliteReplayStore",
]

log = structlog.get_logger("samsvar.broker")


class ReplayStoreError(BrokerError):
    """The replay store cannot say whether a token is new: refuse the token."""


class ReplayStore(Protocol):
    """Remembers ``(issuer, jti)`` until ``exp`` (Unix seconds)."""

    async def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
        """True the first time a token is presented, False on a replay; raises
        :class:`ReplayStoreError` when it cannot tell."""
        ...

    async def release(self, issuer: str, jti: str) -> None:
        """Forget a token accepted by :meth:`first_use` whose query was refused before
        anything was asked (429): the same token may then be sent again."""
        ...

    async def writable(self) -> bool:
        """Whether a token could be recorded now (for ``/readyz``)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class ReplayGuard:
    """In memory, per instance; memory is bounded by the rate × the token lifetime."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, str, str]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
        """True the first time a token is presented, False on a replay."""
        while self._expiry and self._expiry[0][0] < now:
            _, iss, old = heapq.heappop(self._expiry)
            self._seen.discard((iss, old))
        key = (issuer, jti)
        if key in self._seen:
            return False
        self._seen.add(key)
        heapq.heappush(self._expiry, (exp, issuer, jti))
        return True

    async def writable(self) -> bool:
        return True

    async def release(self, issuer: str, jti: str) -> None:
        # its heap entry stays; popping it later discards nothing that matters (a token
        # presented again carries the same exp)
        self._seen.discard((issuer, jti))

    def __len__(self) -> int:
        return len(self._seen)


_T = TypeVar("_T")
_SQLITE_BUSY_TIMEOUT_S: Final = 10.0


class SqliteReplayStore:
    """``used_jti`` in the SQLite file at ``path`` (the access log's): one row per accepted
    token until it expires. One connection on one thread of its own, beside the access
    log's; SQLite's file lock orders the two writers.

    ``synchronous=NORMAL`` in WAL mode: a row survives the broker's crash or restart, as
    SQLite documents; only an operating-system crash or power loss can lose the last
    ones (then a token could be replayed until it expires, at most 300 s).
    """

    def __init__(self, path: Path, *, cleanup_every: int = 1000) -> None:
        self.path = path
        self._cleanup_every = cleanup_every
        self._inserted = 0
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor's thread

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise ReplayStoreError(f"replay store in {self.path}: closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._guard, fn, *args))

    def _guard(self, fn: Callable[..., _T], *args: object) -> _T:
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as exc:
            raise ReplayStoreError(f"replay store in {self.path}: {exc}") from exc

    async def open(self) -> None:
        if self._executor is not None:
            raise ReplayStoreError(f"replay store in {self.path}: already open")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="replay-sqlite")
        try:
            await self._call(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=_SQLITE_BUSY_TIMEOUT_S,
                               check_same_thread=True)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS used_jti (issuer TEXT NOT NULL, "
                         "jti TEXT NOT NULL, exp INTEGER NOT NULL, PRIMARY KEY (issuer, jti))")
            conn.execute("CREATE INDEX IF NOT EXISTS used_jti_exp ON used_jti (exp)")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            executor.shutdown(wait=False)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ReplayStoreError(f"replay store in {self.path}: closed")
        return self._conn

    async def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
        return await self._call(self._first_use, issuer, jti, exp, now)

    def _first_use(self, issuer: str, jti: str, exp: int, now: int) -> bool:
        # one statement, so one atomic write: a row that has expired is taken over
        cur = self._c.execute(
            "INSERT INTO used_jti (issuer, jti, exp) VALUES (?, ?, ?) "
            "ON CONFLICT (issuer, jti) DO UPDATE SET exp = excluded.exp WHERE used_jti.exp < ?",
            (issuer, jti, exp, now))
        first = cur.rowcount == 1
        if first:
            self._inserted += 1
            if self._inserted >= self._cleanup_every:
                self._inserted = 0
                self._c.execute("DELETE FROM used_jti WHERE exp < ?", (now,))
        return first

    async def release(self, issuer: str, jti: str) -> None:
        await self._call(self._release, issuer, jti)

    def _release(self, issuer: str, jti: str) -> None:
        self._c.execute("DELETE FROM used_jti WHERE issuer = ? AND jti = ?", (issuer, jti))

    async def writable(self) -> bool:
        """Whether a token could be recorded now (for ``/readyz``)."""
        try:
            await self._call(self._probe)
        except ReplayStoreError:
            return False
        return True

    def _probe(self) -> None:
        conn = self._c
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")


_CONNECT_TIMEOUT_S: Final = 10.0
_COMMAND_TIMEOUT_S: Final = 5.0
_POOL_SIZE: Final = 4
_ERRORS: Final = PG_ERRORS


class PostgresReplayStore:
    """``used_jti`` in ``schema``: one row per accepted token until it expires.

    ``INSERT … ON CONFLICT`` decides atomically across instances (a row that has expired
    but is not yet deleted is taken over). Expired rows are deleted in the background every
    ``cleanup_every`` accepted tokens or ``cleanup_interval_s`` seconds, whichever first;
    the request path never waits for it.
    """

    def __init__(self, *, dsn: str, schema: str = "public", cleanup_every: int = 1000,
                 cleanup_interval_s: float = 60.0) -> None:
        self._dsn = dsn
        self.schema = schema
        self._s = f'"{schema}"'  # the config allows plain identifiers only
        self._table = f"{self._s}.used_jti"
        self._cleanup_every = cleanup_every
        self._cleanup_interval_s = cleanup_interval_s
        self._pool: Any = None
        self._inserted = 0
        self._last_cleanup = time.monotonic()
        self._cleanup_task: asyncio.Task[int] | None = None

    def _fail(self, exc: BaseException) -> ReplayStoreError:
        return ReplayStoreError(f"replay store in postgresql schema {self.schema!r}: "
                                f"{type(exc).__name__}: {exc}")

    async def open(self) -> None:
        """Connect, and create the schema and table unless they exist (idempotent, and safe
        when several instances start at once)."""
        if self._pool is not None:
            raise ReplayStoreError(f"replay store in postgresql schema {self.schema!r}: "
                                   "already open")
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=_POOL_SIZE, timeout=_CONNECT_TIMEOUT_S,
                command_timeout=_COMMAND_TIMEOUT_S,
                server_settings={"synchronous_commit": "on",
                                 "application_name": f"samsvar-replay:{self.schema}"[:63]},
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(self.schema, "replay"))
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}")
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} (issuer text NOT NULL, "
                    "jti text NOT NULL, exp bigint NOT NULL, PRIMARY KEY (issuer, jti))")
                await conn.execute(f"CREATE INDEX IF NOT EXISTS used_jti_exp "
                                   f"ON {self._table} (exp)")
        except _ERRORS as exc:
            await self.close()
            raise self._fail(exc) from exc

    async def close(self) -> None:
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, *_ERRORS):
                pass
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)

    async def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
        if self._pool is None:
            raise ReplayStoreError(f"replay store in postgresql schema {self.schema!r}: closed")
        try:
            status = await self._pool.execute(
                f"INSERT INTO {self._table} AS u (issuer, jti, exp) VALUES ($1, $2, $3) "
                "ON CONFLICT (issuer, jti) DO UPDATE SET exp = EXCLUDED.exp WHERE u.exp < $4",
                issuer, jti, exp, now)
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        first = int(status.split()[-1]) == 1  # "INSERT 0 1" or "INSERT 0 0"
        if first:
            self._inserted += 1
            self._maybe_cleanup(now)
        return first

    async def release(self, issuer: str, jti: str) -> None:
        if self._pool is None:
            raise ReplayStoreError(f"replay store in postgresql schema {self.schema!r}: closed")
        try:
            await self._pool.execute(f"DELETE FROM {self._table} WHERE issuer = $1 AND jti = $2",
                                     issuer, jti)
        except _ERRORS as exc:
            raise self._fail(exc) from exc

    async def writable(self) -> bool:
        if self._pool is None:
            return False
        try:
            await self._pool.fetchval("SELECT 1")
        except _ERRORS:
            return False
        return True

    def _maybe_cleanup(self, now: int) -> None:
        due = (self._inserted >= self._cleanup_every
               or time.monotonic() - self._last_cleanup >= self._cleanup_interval_s)
        if not due or (self._cleanup_task is not None and not self._cleanup_task.done()):
            return
        self._inserted = 0
        self._last_cleanup = time.monotonic()
        self._cleanup_task = asyncio.create_task(self._background_cleanup(now),
                                                 name="replay-cleanup")

    async def _background_cleanup(self, now: int) -> int:
        try:
            return await self.delete_expired(now=now)
        except ReplayStoreError as exc:
            log.warning("replay_cleanup_failed", reason=str(exc))
            return 0

    async def delete_expired(self, *, now: int) -> int:
        """Delete the rows of tokens expired before ``now``; returns how many."""
        if self._pool is None:
            raise ReplayStoreError(f"replay store in postgresql schema {self.schema!r}: closed")
        try:
            status = await self._pool.execute(f"DELETE FROM {self._table} WHERE exp < $1", now)
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        return int(status.split()[-1])
