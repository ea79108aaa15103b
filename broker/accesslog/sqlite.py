"""The SQLite adapter: the default, embedded store.

One connection, used only from one dedicated thread (a single-thread executor), in WAL
mode with ``synchronous=FULL``: a commit has reached the disk when ``append`` returns.
Every write is a ``BEGIN IMMEDIATE`` transaction that reads the chain's head inside it.

One broker instance per SQLite file, on a local disk: several brokers need the
PostgreSQL store (SQLite's file lock would make them queue for each other, and it does
not hold on network file systems). The ``samsvar log`` commands may run beside the
broker: the file lock serialises their writes, and readers see a snapshot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Final, TypeVar

from schemas.accesslog import Checkpoint
from schemas.merkle import Frontier, Leaves, consistency_proof_extending, leaf_hash

from .chain import (
    GENESIS,
    Encoded,
    Head,
    NewRow,
    checkpoint_of,
    frontier_from_text,
    frontier_text,
    link_batch,
    time_text,
)
from .errors import AccessLogClosed, AccessLogError
from .ports import CheckpointRow, EntryRow, LogSnapshot, Sealer

__all__ = ["SqliteStore"]

_T = TypeVar("_T")
_BUSY_TIMEOUT_S: Final = 10.0

def _backfill_leaves(conn: sqlite3.Connection) -> None:
    """Migration 2: the Merkle leaves of the entries already there. Entries pruned before
    the log was a Merkle tree are gone; each gets the leaf of an empty entry instead."""
    first = conn.execute("SELECT min(seq) FROM access_log_entries").fetchone()[0]
    if first is None:
        row = conn.execute("SELECT max(seq) FROM access_log_checkpoints").fetchone()
        first = (row[0] or 0) + 1
    conn.executemany("INSERT INTO access_log_leaves (seq, leaf) VALUES (?, ?)",
                     ((seq, leaf_hash(b"").hex()) for seq in range(1, first)))
    conn.executemany(
        "INSERT INTO access_log_leaves (seq, leaf) VALUES (?, ?)",
        ((seq, leaf_hash(str(body).encode("utf-8")).hex()) for seq, body in
         conn.execute("SELECT seq, body FROM access_log_entries ORDER BY seq").fetchall()))


_MIGRATIONS: Final[tuple[tuple[str | Callable[[sqlite3.Connection], None], ...], ...]] = (
    (   # 1: entries and checkpoints
        """CREATE TABLE access_log_entries (
            seq INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            day TEXT NOT NULL,
            subject TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            body TEXT NOT NULL)""",
        "CREATE INDEX access_log_entries_subject ON access_log_entries (subject, day)",
        """CREATE TABLE access_log_checkpoints (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            seq INTEGER NOT NULL,
            head_hash TEXT NOT NULL,
            time TEXT NOT NULL,
            instance TEXT NOT NULL,
            reason TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            token TEXT NOT NULL)""",
        "CREATE INDEX access_log_checkpoints_seq ON access_log_checkpoints (seq)",
    ),
    (   # 2: the Merkle tree: its leaves (kept through a prune), and each checkpoint's root
        # and frontier (the compact range the next checkpoint extends)
        "CREATE TABLE access_log_leaves (seq INTEGER PRIMARY KEY, leaf TEXT NOT NULL)",
        "ALTER TABLE access_log_checkpoints ADD COLUMN root TEXT",
        "ALTER TABLE access_log_checkpoints ADD COLUMN frontier TEXT",
        _backfill_leaves,
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _head(conn: sqlite3.Connection) -> Head:
    row = conn.execute(
        "SELECT seq, hash FROM access_log_entries ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:  # empty, or emptied by a prune: the last checkpoint holds the head
        row = conn.execute("SELECT seq, head_hash FROM access_log_checkpoints "
                           "ORDER BY seq DESC, id DESC LIMIT 1").fetchone()
    seq, digest = row if row is not None else (0, GENESIS)
    first = conn.execute("SELECT min(seq) FROM access_log_entries").fetchone()[0]
    return Head(seq=seq, hash=digest, first_seq=first if first is not None else seq + 1)


def _tree(conn: sqlite3.Connection, size: int) -> Frontier:
    """The Merkle tree of the first ``size`` leaves, as a compact range: the last stored
    frontier at or below ``size``, extended with the leaves after it."""
    row = conn.execute("SELECT seq, frontier FROM access_log_checkpoints WHERE frontier IS NOT "
                       "NULL AND seq <= ? ORDER BY seq DESC, id DESC LIMIT 1", (size,)).fetchone()
    frontier = frontier_from_text(row[0], row[1]) if row is not None else Frontier()
    leaves = conn.execute("SELECT seq, leaf FROM access_log_leaves WHERE seq > ? AND seq <= ? "
                          "ORDER BY seq", (frontier.size, size)).fetchall()
    for seq, leaf in leaves:
        if seq != frontier.size + 1:
            raise AccessLogError(f"the Merkle leaf of entry {frontier.size + 1} is missing")
        frontier.append(bytes.fromhex(leaf))
    if frontier.size != size:
        raise AccessLogError(f"the Merkle leaf of entry {frontier.size + 1} is missing")
    return frontier


def _tree_head(conn: sqlite3.Connection, head: Head) -> tuple[Head, Frontier]:
    frontier = _tree(conn, head.seq)
    return replace(head, root=frontier.root().hex()), frontier


def _insert_checkpoint(conn: sqlite3.Connection, cp: Checkpoint, token: str,
                       frontier: Frontier | None) -> None:
    conn.execute(
        "INSERT INTO access_log_checkpoints (seq, head_hash, time, instance, reason, first_seq, "
        "token, root, frontier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (cp.seq, cp.head_hash, time_text(cp.time), cp.instance, cp.reason, cp.first_seq, token,
         cp.root, frontier_text(frontier) if frontier is not None else None),
    )


class SqliteStore:
    """:class:`LogStore` in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor's thread

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise AccessLogClosed(f"{self.path}: the access log is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._guard, fn, *args))

    def _guard(self, fn: Callable[..., _T], *args: object) -> _T:
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as exc:
            raise AccessLogError(f"{self.path}: {exc}") from exc

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AccessLogClosed(f"{self.path}: the access log is closed")
        return self._conn

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, *, create: bool) -> None:
        if self._executor is not None:
            raise AccessLogError(f"{self.path}: already open")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="accesslog-sqlite")
        try:
            await self._call(self._open, create)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _open(self, create: bool) -> None:
        if not create and not self.path.is_file():
            raise AccessLogError(f"{self.path}: no access log here")
        uri = f"{self.path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=_BUSY_TIMEOUT_S)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AccessLogError(f"{self.path}: cannot use WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            if create:
                self._migrate(conn)
            else:
                self._check_version(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS access_log_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM access_log_schema").fetchone()
            if row is None:
                conn.execute("INSERT INTO access_log_schema (version) VALUES (0)")
            version = row[0] if row is not None else 0
            if version > SCHEMA_VERSION:
                raise AccessLogError(f"{self.path}: schema version {version} is newer than "
                                     f"this samsvar's ({SCHEMA_VERSION})")
            for steps in _MIGRATIONS[version:]:
                for step in steps:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
            conn.execute("UPDATE access_log_schema SET version = ?", (SCHEMA_VERSION,))

    def _check_version(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("SELECT version FROM access_log_schema").fetchone()
        except sqlite3.OperationalError as exc:
            raise AccessLogError(f"{self.path}: not an access log") from exc
        if row is None or row[0] != SCHEMA_VERSION:
            raise AccessLogError(f"{self.path}: schema version {row[0] if row else 0}, "
                                 f"expected {SCHEMA_VERSION} (start the broker to migrate)")

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        try:
            await self._call(self._close)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- writes ------------------------------------------------------------------------

    async def append(self, batch: Sequence[Encoded]) -> list[NewRow]:
        rows = await self._call(self._append, batch)
        self.commits += 1
        return rows

    def _append(self, batch: Sequence[Encoded]) -> list[NewRow]:
        conn = self._c
        with _transaction(conn):
            head = _head(conn)
            rows = link_batch(head.seq, head.hash, batch)
            conn.executemany(
                "INSERT INTO access_log_entries (seq, time, day, subject, prev_hash, hash, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.seq, time_text(r.time), r.day.isoformat(), r.subject, r.prev_hash, r.hash,
                  r.body) for r in rows],
            )
            conn.executemany("INSERT INTO access_log_leaves (seq, leaf) VALUES (?, ?)",
                             [(r.seq, r.leaf) for r in rows])
        return rows

    async def write_checkpoint(self, sealer: Sealer) -> Checkpoint:
        return await self._call(self._write_checkpoint, sealer)

    def _write_checkpoint(self, sealer: Sealer) -> Checkpoint:
        conn = self._c
        with _transaction(conn):
            head, frontier = _tree_head(conn, _head(conn))
            cp, token = sealer(head)
            _insert_checkpoint(conn, cp, token, frontier)
        return cp

    async def current_checkpoint(self, sealer: Sealer) -> tuple[Checkpoint, str, bool]:
        return await self._call(self._current_checkpoint, sealer)

    def _current_checkpoint(self, sealer: Sealer) -> tuple[Checkpoint, str, bool]:
        conn = self._c
        with _transaction(conn):
            head = _head(conn)
            row = conn.execute("SELECT token FROM access_log_checkpoints WHERE seq = ? AND "
                               "root IS NOT NULL ORDER BY id DESC LIMIT 1", (head.seq,)).fetchone()
            if row is not None:
                token = str(row[0])
                return checkpoint_of(token), token, False
            head, frontier = _tree_head(conn, head)
            cp, token = sealer(head)
            _insert_checkpoint(conn, cp, token, frontier)
        return cp, token, True

    async def prune(self, before: dt.datetime, sealer: Sealer) -> int:
        return await self._call(self._prune, before, sealer)

    def _prune(self, before: dt.datetime, sealer: Sealer) -> int:
        conn = self._c
        with _transaction(conn):
            head = _head(conn)
            row = conn.execute("SELECT seq, prev_hash FROM access_log_entries WHERE time >= ? "
                               "ORDER BY seq LIMIT 1", (time_text(before),)).fetchone()
            keep, boundary = row if row is not None else (head.seq + 1, head.hash)
            if keep <= head.first_seq:
                return 0
            removed = conn.execute("DELETE FROM access_log_entries WHERE seq < ?",
                                   (keep,)).rowcount
            conn.execute("DELETE FROM access_log_checkpoints WHERE seq < ?", (keep - 1,))
            start, frontier = _tree_head(conn, Head(seq=keep - 1, hash=boundary, first_seq=keep))
            cp, token = sealer(start)
            _insert_checkpoint(conn, cp, token, frontier)
        return int(removed)

    # -- reads -------------------------------------------------------------------------

    async def extract(self, subject: str, since: dt.date | None,
                      until: dt.date | None) -> list[bytes]:
        return await self._call(self._extract, subject, since, until)

    def _extract(self, subject: str, since: dt.date | None, until: dt.date | None) -> list[bytes]:
        sql = "SELECT body FROM access_log_entries WHERE subject = ?"
        args: list[object] = [subject]
        if since is not None:
            sql += " AND day >= ?"
            args.append(since.isoformat())
        if until is not None:
            sql += " AND day <= ?"
            args.append(until.isoformat())
        rows = self._c.execute(sql + " ORDER BY time, seq", args).fetchall()
        return [str(body).encode("utf-8") for (body,) in rows]

    async def extract_rows(self, subject: str, since: dt.date | None, until: dt.date | None,
                           upto: int) -> list[tuple[int, bytes]]:
        return await self._call(self._extract_rows, subject, since, until, upto)

    def _extract_rows(self, subject: str, since: dt.date | None, until: dt.date | None,
                      upto: int) -> list[tuple[int, bytes]]:
        sql = "SELECT seq, body FROM access_log_entries WHERE subject = ? AND seq <= ?"
        args: list[object] = [subject, upto]
        if since is not None:
            sql += " AND day >= ?"
            args.append(since.isoformat())
        if until is not None:
            sql += " AND day <= ?"
            args.append(until.isoformat())
        rows = self._c.execute(sql + " ORDER BY time, seq", args).fetchall()
        return [(int(seq), str(body).encode("utf-8")) for seq, body in rows]

    async def leaves(self, upto: int) -> Leaves:
        return await self._call(self._leaves, 0, upto)

    async def consistency_to(self, size: int, sizes: Sequence[int]) -> dict[int, list[bytes]]:
        return await self._call(self._consistency_to, size, sizes)

    def _consistency_to(self, size: int, sizes: Sequence[int]) -> dict[int, list[bytes]]:
        conn = self._c
        below = conn.execute("SELECT max(seq) FROM access_log_checkpoints WHERE frontier IS NOT "
                             "NULL AND seq < ? AND seq > 0", (size,)).fetchone()[0]
        out: dict[int, list[bytes]] = {}
        for m in {*sizes, *([below] if below is not None else [])}:
            if not 0 < m < size:
                continue
            row = conn.execute("SELECT frontier FROM access_log_checkpoints WHERE seq = ? AND "
                               "frontier IS NOT NULL LIMIT 1", (m,)).fetchone()
            if row is None:
                continue
            out[m] = consistency_proof_extending(frontier_from_text(m, row[0]),
                                                 self._leaves(m, size))
        return out

    def _leaves(self, after: int, upto: int) -> Leaves:
        leaves = Leaves()
        for seq, leaf in self._c.execute(
                "SELECT seq, leaf FROM access_log_leaves WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, upto)):
            if seq != after + len(leaves) + 1:
                raise AccessLogError(
                    f"the Merkle leaf of entry {after + len(leaves) + 1} is missing")
            leaves.append(bytes.fromhex(leaf))
        return leaves

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[LogSnapshot]:
        await self._call(self._c.execute, "BEGIN")  # deferred: the first read fixes the view
        try:
            yield _Snapshot(self)
        finally:
            await self._call(self._c.execute, "COMMIT")

    def _checkpoints(self) -> list[CheckpointRow]:
        rows = self._c.execute(
            "SELECT id, seq, token FROM access_log_checkpoints ORDER BY id").fetchall()
        return [CheckpointRow(id=i, seq=s, token=str(t)) for i, s, t in rows]

    def _entries(self, after_seq: int, limit: int) -> list[EntryRow]:
        rows = self._c.execute(
            "SELECT seq, time, day, subject, prev_hash, hash, body FROM access_log_entries "
            "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [
            EntryRow(seq=seq, time=str(time), day=str(day), subject=subject,
                     prev_hash=str(prev), hash=str(digest), body=str(body).encode("utf-8"))
            for seq, time, day, subject, prev, digest, body in rows
        ]

    async def writable(self) -> bool:
        try:
            await self._call(self._probe)
        except AccessLogError:
            return False
        return True

    def _probe(self) -> None:
        with _transaction(self._c):
            pass


class _Snapshot:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def leaves(self, after: int, upto: int) -> Leaves:
        return await self._store._call(self._store._leaves, after, upto)

    async def checkpoints(self) -> list[CheckpointRow]:
        return await self._store._call(self._store._checkpoints)

    async def entries(self, after_seq: int, limit: int) -> list[EntryRow]:
        return await self._store._call(self._store._entries, after_seq, limit)
