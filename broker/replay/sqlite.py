"""The replay store in the SQLite access log's file (one broker instance per file)."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from .port import ReplayStoreError

__all__ = ["SqliteReplayStore"]


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
