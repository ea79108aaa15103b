"""The replay store in the PostgreSQL access log's schema, shared by every instance."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import structlog

from ..accesslog.postgres import PG_ERRORS, close_pool, lock_key
from .port import ReplayStoreError

__all__ = ["PostgresReplayStore"]

log = structlog.get_logger("samsvar.broker")


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
                await conn.execute("SELECT pg_advisory_xact_lock($1)",
                                   lock_key(self.schema, "replay"))
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
