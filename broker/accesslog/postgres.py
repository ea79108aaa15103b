"""The PostgreSQL adapter (asyncpg): for deployment, shared by several broker instances.

One chain, one history, however many brokers write: every write transaction (append,
checkpoint, prune) first takes ``pg_advisory_xact_lock(k)`` where ``k`` is derived from
the schema name, then reads the chain's head, then inserts. Transactions run at READ
COMMITTED so the head is read in a snapshot taken after the lock was granted; the lock
is released by COMMIT or ROLLBACK. The primary key on ``seq`` backs this up: two
writers can never store the same ``seq``. A commit returns once the server has flushed
its WAL (``synchronous_commit`` is forced ``on`` for these connections).

Tables live in the configured schema (``schema``, default ``public``); ``open`` creates
or migrates them under the same lock, so instances may start at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

from schemas.accesslog import Checkpoint
from schemas.merkle import Frontier, Leaves, consistency_proof_extending

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
    utc,
)
from .errors import AccessLogClosed, AccessLogError
from .ports import CheckpointRow, EntryRow, LogSnapshot, Sealer

__all__ = ["PG_ERRORS", "PostgresStore", "close_pool", "lock_key"]

_CONNECT_TIMEOUT_S: Final = 10.0
_COMMAND_TIMEOUT_S: Final = 30.0
_PROBE_TIMEOUT_S: Final = 5.0
_POOL_SIZE: Final = 4
PG_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError,
                    asyncpg.InternalClientError, OSError, TimeoutError)
"""What asyncpg raises when the database or the connection fails."""
_ERRORS: Final = PG_ERRORS


def _migrations(s: str) -> tuple[tuple[str, ...], ...]:
    return (
        (   # 1: entries and checkpoints
            f"""CREATE TABLE {s}.access_log_entries (
                seq bigint PRIMARY KEY,
                time timestamptz NOT NULL,
                day date NOT NULL,
                subject text,
                prev_hash text NOT NULL,
                hash text NOT NULL,
                body text NOT NULL)""",
            f"CREATE INDEX access_log_entries_subject ON {s}.access_log_entries (subject, day)",
            f"""CREATE TABLE {s}.access_log_checkpoints (
                id bigserial PRIMARY KEY,
                seq bigint NOT NULL,
                head_hash text NOT NULL,
                time timestamptz NOT NULL,
                instance text NOT NULL,
                reason text NOT NULL,
                first_seq bigint NOT NULL,
                token text NOT NULL)""",
            f"CREATE INDEX access_log_checkpoints_seq ON {s}.access_log_checkpoints (seq)",
        ),
        (   # 2: the Merkle tree: its leaves (kept through a prune), and each checkpoint's
            # root and frontier; entries pruned before this get the leaf of an empty entry
            f"CREATE TABLE {s}.access_log_leaves (seq bigint PRIMARY KEY, leaf text NOT NULL)",
            f"ALTER TABLE {s}.access_log_checkpoints"
            " ADD COLUMN root text, ADD COLUMN frontier text",
            f"""INSERT INTO {s}.access_log_leaves (seq, leaf)
                SELECT g, encode(sha256('\\x00'::bytea), 'hex') FROM generate_series(1,
                    coalesce((SELECT min(seq) FROM {s}.access_log_entries),
                             (SELECT max(seq) FROM {s}.access_log_checkpoints) + 1, 1) - 1) g""",
            f"""INSERT INTO {s}.access_log_leaves (seq, leaf)
                SELECT seq, encode(sha256('\\x00'::bytea || convert_to(body, 'UTF8')), 'hex')
                FROM {s}.access_log_entries""",
        ),
    )


SCHEMA_VERSION: Final = len(_migrations("s"))


def lock_key(schema: str, purpose: str = "accesslog") -> int:
    """The advisory lock for ``purpose`` in ``schema`` (a signed 64-bit int)."""
    digest = hashlib.sha256(f"samsvar.{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def close_pool(pool: Any) -> None:
    """Close an asyncpg pool within the connect timeout; terminate it if that fails."""
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            await pool.close()
    except PG_ERRORS:
        pool.terminate()


class PostgresStore:
    """:class:`LogStore` in a PostgreSQL schema."""

    def __init__(self, *, dsn: str, schema: str = "public") -> None:
        self._dsn = dsn
        self.schema = schema
        s = f'"{schema}"'  # the config allows plain identifiers only
        self._s = s
        self._entries = f"{s}.access_log_entries"
        self._checkpoints = f"{s}.access_log_checkpoints"
        self._leaves = f"{s}.access_log_leaves"
        self._lock = lock_key(schema)
        self._pool: Any = None
        self.commits = 0

    def _fail(self, exc: BaseException) -> AccessLogError:
        return AccessLogError(f"postgresql schema {self.schema!r}: {type(exc).__name__}: {exc}")

    @asynccontextmanager
    async def _transaction(self, *, isolation: str = "read_committed",
                           readonly: bool = False, lock: bool = True) -> AsyncIterator[Any]:
        if self._pool is None:
            raise AccessLogClosed(f"postgresql schema {self.schema!r}: the access log is closed")
        try:
            async with self._pool.acquire() as conn, conn.transaction(isolation=isolation,
                                                                      readonly=readonly):
                if lock:
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock)
                yield conn
        except _ERRORS as exc:
            raise self._fail(exc) from exc

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, *, create: bool) -> None:
        if self._pool is not None:
            raise AccessLogError(f"postgresql schema {self.schema!r}: already open")
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=_POOL_SIZE, timeout=_CONNECT_TIMEOUT_S,
                command_timeout=_COMMAND_TIMEOUT_S,
                server_settings={"synchronous_commit": "on",
                                 "application_name": f"samsvar-accesslog:{self.schema}"[:63]},
            )
        except _ERRORS as exc:
            raise self._fail(exc) from exc
        try:
            if create:
                await self._migrate()
            else:
                await self._check_version()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        async with self._transaction() as conn:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}")
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {self._s}.access_log_schema "
                               "(version integer NOT NULL)")
            version = await conn.fetchval(f"SELECT version FROM {self._s}.access_log_schema")
            if version is None:
                await conn.execute(f"INSERT INTO {self._s}.access_log_schema VALUES (0)")
                version = 0
            if version > SCHEMA_VERSION:
                raise AccessLogError(f"postgresql schema {self.schema!r}: schema version "
                                     f"{version} is newer than this samsvar's ({SCHEMA_VERSION})")
            for steps in _migrations(self._s)[version:]:
                for sql in steps:
                    await conn.execute(sql)
            await conn.execute(f"UPDATE {self._s}.access_log_schema SET version = $1",
                               SCHEMA_VERSION)

    async def _check_version(self) -> None:
        async with self._transaction(lock=False, readonly=True) as conn:
            table = await conn.fetchval("SELECT to_regclass($1)",
                                        f"{self._s}.access_log_schema")
            if table is None:
                raise AccessLogError(f"postgresql schema {self.schema!r}: no access log here")
            version = await conn.fetchval(f"SELECT version FROM {self._s}.access_log_schema")
        if version != SCHEMA_VERSION:
            raise AccessLogError(f"postgresql schema {self.schema!r}: schema version {version}, "
                                 f"expected {SCHEMA_VERSION} (start the broker to migrate)")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)

    # -- writes ------------------------------------------------------------------------

    async def _head(self, conn: Any) -> Head:
        row = await conn.fetchrow(
            f"SELECT seq, hash FROM {self._entries} ORDER BY seq DESC LIMIT 1")
        if row is None:  # empty, or emptied by a prune: the last checkpoint holds the head
            row = await conn.fetchrow(f"SELECT seq, head_hash AS hash FROM {self._checkpoints} "
                                      "ORDER BY seq DESC, id DESC LIMIT 1")
        seq, digest = (row["seq"], row["hash"]) if row is not None else (0, GENESIS)
        first = await conn.fetchval(f"SELECT min(seq) FROM {self._entries}")
        return Head(seq=seq, hash=digest, first_seq=first if first is not None else seq + 1)

    async def append(self, batch: Sequence[Encoded]) -> list[NewRow]:
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                f"SELECT seq, hash FROM {self._entries} ORDER BY seq DESC LIMIT 1")
            head = (row["seq"], row["hash"]) if row is not None else None
            if head is None:
                found = await self._head(conn)
                head = (found.seq, found.hash)
            rows = link_batch(head[0], head[1], batch)
            await conn.execute(
                f"INSERT INTO {self._entries} (seq, time, day, subject, prev_hash, hash, body) "
                "SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::date[], $4::text[], "
                "$5::text[], $6::text[], $7::text[])",
                [r.seq for r in rows], [r.time for r in rows], [r.day for r in rows],
                [r.subject for r in rows], [r.prev_hash for r in rows], [r.hash for r in rows],
                [r.body for r in rows],
            )
            await conn.execute(
                f"INSERT INTO {self._leaves} (seq, leaf) SELECT * FROM unnest($1::bigint[], "
                "$2::text[])", [r.seq for r in rows], [r.leaf for r in rows])
        self.commits += 1
        return rows

    async def _tree(self, conn: Any, size: int) -> Frontier:
        """The Merkle tree of the first ``size`` leaves as a compact range: the last stored
        frontier at or below ``size``, extended with the leaves after it."""
        row = await conn.fetchrow(
            f"SELECT seq, frontier FROM {self._checkpoints} WHERE frontier IS NOT NULL AND "
            "seq <= $1 ORDER BY seq DESC, id DESC LIMIT 1", size)
        frontier = (frontier_from_text(row["seq"], row["frontier"]) if row is not None
                    else Frontier())
        for r in await conn.fetch(f"SELECT seq, leaf FROM {self._leaves} WHERE seq > $1 AND "
                                  "seq <= $2 ORDER BY seq", frontier.size, size):
            if r["seq"] != frontier.size + 1:
                break
            frontier.append(bytes.fromhex(r["leaf"]))
        if frontier.size != size:
            raise AccessLogError(f"the Merkle leaf of entry {frontier.size + 1} is missing")
        return frontier

    async def _tree_head(self, conn: Any, head: Head) -> tuple[Head, Frontier]:
        frontier = await self._tree(conn, head.seq)
        return replace(head, root=frontier.root().hex()), frontier

    async def _insert_checkpoint(self, conn: Any, cp: Checkpoint, token: str,
                                 frontier: Frontier | None) -> None:
        await conn.execute(
            f"INSERT INTO {self._checkpoints} (seq, head_hash, time, instance, reason, first_seq, "
            "token, root, frontier) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            cp.seq, cp.head_hash, utc(cp.time), cp.instance, cp.reason, cp.first_seq, token,
            cp.root, frontier_text(frontier) if frontier is not None else None,
        )

    async def write_checkpoint(self, sealer: Sealer) -> Checkpoint:
        async with self._transaction() as conn:
            head, frontier = await self._tree_head(conn, await self._head(conn))
            cp, token = sealer(head)
            await self._insert_checkpoint(conn, cp, token, frontier)
        return cp

    async def current_checkpoint(self, sealer: Sealer) -> tuple[Checkpoint, str, bool]:
        async with self._transaction() as conn:
            head = await self._head(conn)
            token = await conn.fetchval(
                f"SELECT token FROM {self._checkpoints} WHERE seq = $1 AND root IS NOT NULL "
                "ORDER BY id DESC LIMIT 1", head.seq)
            if token is not None:
                return checkpoint_of(token), token, False
            head, frontier = await self._tree_head(conn, head)
            cp, token = sealer(head)
            await self._insert_checkpoint(conn, cp, token, frontier)
        return cp, token, True

    async def prune(self, before: dt.datetime, sealer: Sealer) -> int:
        async with self._transaction() as conn:
            head = await self._head(conn)
            row = await conn.fetchrow(f"SELECT seq, prev_hash FROM {self._entries} "
                                      "WHERE time >= $1 ORDER BY seq LIMIT 1", utc(before))
            keep, boundary = ((row["seq"], row["prev_hash"]) if row is not None
                              else (head.seq + 1, head.hash))
            if keep <= head.first_seq:
                return 0
            status = await conn.execute(f"DELETE FROM {self._entries} WHERE seq < $1", keep)
            await conn.execute(f"DELETE FROM {self._checkpoints} WHERE seq < $1", keep - 1)
            start, frontier = await self._tree_head(
                conn, Head(seq=keep - 1, hash=boundary, first_seq=keep))
            cp, token = sealer(start)
            await self._insert_checkpoint(conn, cp, token, frontier)
        return int(status.split()[-1])

    # -- reads -------------------------------------------------------------------------

    async def extract(self, subject: str, since: dt.date | None,
                      until: dt.date | None) -> list[bytes]:
        async with self._transaction(lock=False, readonly=True) as conn:
            rows = await conn.fetch(
                f"SELECT body FROM {self._entries} WHERE subject = $1 "
                "AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) "
                "ORDER BY time, seq", subject, since, until)
        return [str(r["body"]).encode("utf-8") for r in rows]

    async def extract_rows(self, subject: str, since: dt.date | None, until: dt.date | None,
                           upto: int) -> list[tuple[int, bytes]]:
        async with self._transaction(lock=False, readonly=True) as conn:
            rows = await conn.fetch(
                f"SELECT seq, body FROM {self._entries} WHERE subject = $1 AND seq <= $4 "
                "AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) "
                "ORDER BY time, seq", subject, since, until, upto)
        return [(int(r["seq"]), str(r["body"]).encode("utf-8")) for r in rows]

    async def leaves(self, upto: int) -> Leaves:
        async with self._transaction(lock=False, readonly=True) as conn:
            return await self._read_leaves(conn, 0, upto)

    async def consistency_to(self, size: int, sizes: Sequence[int]) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        async with self._transaction(lock=False, readonly=True,
                                     isolation="repeatable_read") as conn:
            below = await conn.fetchval(
                f"SELECT max(seq) FROM {self._checkpoints} WHERE frontier IS NOT NULL AND "
                "seq < $1 AND seq > 0", size)
            for m in {*sizes, *([below] if below is not None else [])}:
                if not 0 < m < size:
                    continue
                text = await conn.fetchval(
                    f"SELECT frontier FROM {self._checkpoints} WHERE seq = $1 AND frontier IS "
                    "NOT NULL LIMIT 1", m)
                if text is None:
                    continue
                out[m] = consistency_proof_extending(frontier_from_text(m, text),
                                                     await self._read_leaves(conn, m, size))
        return out

    async def _read_leaves(self, conn: Any, after: int, upto: int) -> Leaves:
        leaves = Leaves()
        for r in await conn.fetch(f"SELECT seq, leaf FROM {self._leaves} WHERE seq > $1 AND "
                                  "seq <= $2 ORDER BY seq", after, upto):
            if r["seq"] != after + len(leaves) + 1:
                break
            leaves.append(bytes.fromhex(r["leaf"]))
        if len(leaves) != upto - after:
            raise AccessLogError(f"the Merkle leaf of entry {after + len(leaves) + 1} is missing")
        return leaves

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[LogSnapshot]:
        async with self._transaction(isolation="repeatable_read", readonly=True,
                                     lock=False) as conn:
            yield _Snapshot(self, conn)

    async def writable(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S), self._pool.acquire() as conn:
                return not await conn.fetchval("SELECT pg_is_in_recovery()")
        except _ERRORS:
            return False


class _Snapshot:
    def __init__(self, store: PostgresStore, conn: Any) -> None:
        self._store = store
        self._conn = conn

    async def leaves(self, after: int, upto: int) -> Leaves:
        return await self._store._read_leaves(self._conn, after, upto)

    async def checkpoints(self) -> list[CheckpointRow]:
        rows = await self._conn.fetch(
            f"SELECT id, seq, token FROM {self._store._checkpoints} ORDER BY id")
        return [CheckpointRow(id=r["id"], seq=r["seq"], token=r["token"]) for r in rows]

    async def entries(self, after_seq: int, limit: int) -> list[EntryRow]:
        rows = await self._conn.fetch(
            f"SELECT seq, time, day, subject, prev_hash, hash, body FROM {self._store._entries} "
            "WHERE seq > $1 ORDER BY seq LIMIT $2", after_seq, limit)
        return [
            EntryRow(seq=r["seq"], time=time_text(r["time"]), day=r["day"].isoformat(),
                     subject=r["subject"], prev_hash=r["prev_hash"], hash=r["hash"],
                     body=str(r["body"]).encode("utf-8"))
            for r in rows
        ]
