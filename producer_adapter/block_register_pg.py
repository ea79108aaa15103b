"""The producer's block register in PostgreSQL: one register for replicas on several hosts.

The same register as :class:`~producer_adapter.SqliteBlockRegister` (the same rules, from
:mod:`producer_adapter.block_rules`; the same tables, columns and checks), in a schema of a
PostgreSQL database every replica reaches, so that a block added through any replica's
``samsvar adapter block add`` is applied by all of them at the next question::

    [blocks]
    kind = "postgresql"
    dsn = "postgresql://samsvar_blocks@db.kommun.example/samsvar"   # no password: .pgpass
    schema = "samsvar_blocks"     # a plain identifier; default "public"

``samsvar adapter block init`` (or the first ``block add``) creates the schema's tables;
the adapter never does. Per question the adapter reads the blocks with one query; a
missing table, a database that is down or slow (over ``timeout`` seconds), or any other
failure raises :class:`BlockSourceError`, and the adapter replies ``error`` with no
records. The history is append-only: a trigger refuses every ``UPDATE``, ``DELETE`` and
``TRUNCATE`` of ``block_history``; ids come from identity columns and are never reused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

from .block_rules import (
    BLOCK_COLUMNS,
    EVENT_COLUMNS,
    INIT_HINT,
    BlockEvent,
    BlockKey,
    BlockRegisterRules,
    BlockScope,
    NewBlock,
    RegisteredBlock,
    block_from_row,
    duplicate_message,
    event_from_row,
)
from .errors import BlockRefused, BlockSourceError
from .policy import BLOCK_LEVELS, Block

__all__ = ["DEFAULT_PG_TIMEOUT", "SCHEMA_NAME", "PostgresBlockRegister"]

DEFAULT_PG_TIMEOUT: Final = 5.0
SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
"""A schema the config may name: a plain identifier (it is quoted into SQL)."""
VERSION: Final = 1
_POOL_SIZE: Final = 4

T = TypeVar("T")


def _ddl(s: str) -> list[str]:
    """The register's version 1 in schema ``s`` (already quoted)."""
    levels = ", ".join(f"'{level}'" for level in BLOCK_LEVELS)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE {s}.block_register_version (version integer NOT NULL)",
        f"""CREATE TABLE {s}.blocks (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            subject text NOT NULL CHECK (subject ~ '^[0-9]{{12}}$'),
            level text NOT NULL CHECK (level IN ({levels})),
            target text NOT NULL CHECK (target <> ''),
            registered_by text NOT NULL CHECK (registered_by = 'person'),
            operator text NOT NULL CHECK (operator <> ''),
            created timestamptz NOT NULL,
            note text NOT NULL DEFAULT '',
            UNIQUE (subject, level, target)
        )""",
        f"""CREATE TABLE {s}.block_history (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            block_id bigint NOT NULL,
            action text NOT NULL CHECK (action IN ('added', 'removed')),
            at timestamptz NOT NULL,
            operator text NOT NULL,
            subject text NOT NULL,
            level text NOT NULL,
            target text NOT NULL,
            registered_by text NOT NULL,
            note text NOT NULL DEFAULT ''
        )""",
        f"CREATE INDEX block_history_by_subject ON {s}.block_history (subject, seq)",
        f"""CREATE FUNCTION {s}.block_history_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the block history is append-only'; END $$""",
        f"""CREATE TRIGGER block_history_append_only
            BEFORE UPDATE OR DELETE OR TRUNCATE ON {s}.block_history
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.block_history_append_only()""",
        f"INSERT INTO {s}.block_register_version (version) VALUES ({VERSION})",
    ]


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"samsvar.blocks:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end from synchronous code, inside a running loop or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(1) as pool:  # a loop runs here: use a thread of its own
        return pool.submit(asyncio.run, make()).result()


class PostgresBlockRegister(BlockRegisterRules):
    """The block register in a PostgreSQL schema; a :class:`~producer_adapter.BlockSource`.

    The methods that manage it (``create``, ``upgrade``, ``add``, ``remove``,
    ``remove_id``, ``blocks``, ``history``) are synchronous like the SQLite register's and
    open a connection each; :meth:`blocks_for`, on the question path, uses a small pool
    (closed by :meth:`aclose`).
    """

    def __init__(self, *, dsn: str, schema: str = "public", scope: BlockScope | None = None,
                 timeout: float = DEFAULT_PG_TIMEOUT) -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r} must be a plain identifier")
        self._dsn = dsn
        self.schema = schema
        self.scope = scope
        self.timeout = timeout
        self._s = f'"{schema}"'
        self._pool: Any = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._pool_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"PostgresBlockRegister(schema={self.schema!r})"  # never the DSN

    @property
    def location(self) -> str:
        return f"postgresql schema {self.schema!r}"

    def _fail(self, exc: BaseException) -> BlockSourceError:
        if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
            return BlockSourceError(f"{self.location}: the block register does not exist "
                                    f"({INIT_HINT})")
        return BlockSourceError(f"{self.location}: block register unusable: "
                                f"{type(exc).__name__}: {exc}")

    # -- the BlockSource port -------------------------------------------------------------

    async def blocks_for(self, subject: str) -> list[Block]:
        """Every block in force for ``subject``; :class:`BlockSourceError` on any failure."""
        try:
            async with asyncio.timeout(self.timeout):
                pool = await self._get_pool()
                rows = await pool.fetch(
                    f"SELECT {BLOCK_COLUMNS} FROM {self._s}.blocks WHERE subject = $1 "
                    "ORDER BY id", subject)
        except BlockSourceError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        return [block_from_row(tuple(r)).block() for r in rows]

    async def aclose(self) -> None:
        """Close the pool :meth:`blocks_for` opened (if any, and on this loop)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await pool.close()
        except Exception:  # noqa: BLE001  closing: nothing to report
            pool.terminate()

    async def _get_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool_loop is not loop:  # a pool belongs to the loop that made it
            self._pool, self._pool_loop, self._pool_lock = None, loop, asyncio.Lock()
        assert self._pool_lock is not None
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=_POOL_SIZE, timeout=self.timeout,
                    command_timeout=self.timeout,
                    server_settings={"application_name":
                                     f"samsvar-blocks:{self.schema}"[:63]})
        return self._pool

    # -- reading -------------------------------------------------------------------------

    def blocks(self, subject: str | None = None) -> list[RegisteredBlock]:
        """The blocks in force, for one person or all, oldest first."""
        where, args = ("WHERE subject = $1", (subject,)) if subject is not None else ("", ())

        async def read(con: Any) -> list[Any]:
            return list(await con.fetch(
                f"SELECT {BLOCK_COLUMNS} FROM {self._s}.blocks {where} ORDER BY id", *args))

        return [block_from_row(tuple(r)) for r in self._with(read, create=False)]

    def history(self, subject: str | None = None) -> list[BlockEvent]:
        """Every block added and removed, for one person or all, in order."""
        where, args = ("WHERE subject = $1", (subject,)) if subject is not None else ("", ())

        async def read(con: Any) -> list[Any]:
            return list(await con.fetch(
                f"SELECT {EVENT_COLUMNS} FROM {self._s}.block_history {where} ORDER BY seq",
                *args))

        return [event_from_row(tuple(r)) for r in self._with(read, create=False)]

    # -- writing -------------------------------------------------------------------------

    def create(self) -> None:
        """Create the register's tables if they do not exist; idempotent, and safe when
        several hosts run it at once."""
        self._with(_nothing, create=True)

    def upgrade(self) -> None:
        """Check an existing register (there is one version so far); never create one."""
        self._with(_nothing, create=False)

    def _insert(self, block: NewBlock) -> int:
        async def write(con: Any) -> int:
            async with con.transaction():
                block_id = await con.fetchval(
                    f"INSERT INTO {self._s}.blocks (subject, level, target, registered_by, "
                    "operator, created, note) VALUES ($1, $2, $3, 'person', $4, $5, $6) "
                    "ON CONFLICT (subject, level, target) DO NOTHING RETURNING id",
                    block.subject, block.level, block.target, block.operator, block.created,
                    block.note)
                if block_id is None:
                    existing = await con.fetchval(
                        f"SELECT id FROM {self._s}.blocks WHERE subject = $1 AND level = $2 "
                        "AND target = $3", block.subject, block.level, block.target)
                    raise BlockRefused(duplicate_message(block, int(existing)))
                await self._log_event(con, int(block_id), "added", block.created,
                                      block.operator, block.subject, block.level,
                                      block.target, block.note)
                return int(block_id)

        return self._with(write, create=True)

    def _delete(self, key: BlockKey, *, operator: str, note: str,
                at: dt.datetime) -> RegisteredBlock | None:
        where, args = (("id = $1", (key,)) if isinstance(key, int)
                       else ("subject = $1 AND level = $2 AND target = $3", key))

        async def write(con: Any) -> RegisteredBlock | None:
            async with con.transaction():
                row = await con.fetchrow(
                    f"DELETE FROM {self._s}.blocks WHERE {where} RETURNING {BLOCK_COLUMNS}",
                    *args)
                if row is None:
                    return None
                block = block_from_row(tuple(row))
                await self._log_event(con, block.id, "removed", at, operator, block.subject,
                                      block.level, block.target, note)
                return block

        return self._with(write, create=False)

    # -- internals -----------------------------------------------------------------------

    async def _log_event(self, con: Any, block_id: int, action: str, at: dt.datetime,
                         operator: str, subject: str, level: str, target: str,
                         note: str) -> None:
        await con.execute(
            f"INSERT INTO {self._s}.block_history (block_id, action, at, operator, subject, "
            "level, target, registered_by, note) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, 'person', $8)",
            block_id, action, at, operator, subject, level, target, note)

    def _with(self, work: Callable[[Any], Awaitable[T]], *, create: bool) -> T:
        """Connect, check (or create) the register, then ``work``; every failure of the
        database becomes :class:`BlockSourceError` (a refusal passes as it is)."""

        async def go() -> T:
            con = await asyncpg.connect(self._dsn, timeout=self.timeout,
                                        command_timeout=self.timeout)
            try:
                await self._prepare(con, create=create)
                return await work(con)
            finally:
                await con.close()

        try:
            return _run(go)
        except (BlockSourceError, BlockRefused):
            raise
        except Exception as exc:
            raise self._fail(exc) from exc

    async def _prepare(self, con: Any, *, create: bool) -> None:
        """Check the register's version; with ``create``, make it first if it is missing."""
        version_table = f"{self._s}.block_register_version"
        if create:
            async with con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(self.schema))
                if not await self._exists(con, version_table):
                    if await self._exists(con, f"{self._s}.blocks"):
                        raise self._foreign()
                    for statement in _ddl(self._s):
                        await con.execute(statement)
        if not await self._exists(con, version_table):
            if await self._exists(con, f"{self._s}.blocks"):
                raise self._foreign()
            raise BlockSourceError(f"{self.location}: the block register does not exist "
                                   f"({INIT_HINT})")
        version = await con.fetchval(f"SELECT max(version) FROM {version_table}")
        if version != VERSION:
            raise BlockSourceError(f"{self.location}: block register unusable: schema is "
                                   f"version {version}, this adapter reads version {VERSION}")

    @staticmethod
    async def _exists(con: Any, table: str) -> bool:
        return await con.fetchval("SELECT to_regclass($1) IS NOT NULL", table) is True

    def _foreign(self) -> BlockSourceError:
        return BlockSourceError(f"{self.location}: block register unusable: a table 'blocks' "
                                "is there, but not a samsvar block register")


async def _nothing(con: Any) -> None:
    return None
