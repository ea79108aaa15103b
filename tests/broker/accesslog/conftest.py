"""Fixtures for the access-log tests: a store of each kind, raw access to its tables.

``log_config`` is parametrized over SQLite (a file in ``tmp_path``) and PostgreSQL (a
unique schema per test in the ``test`` database at 127.0.0.1:5432, dropped afterwards).
Under ``CI=true`` an unreachable PostgreSQL fails the PostgreSQL tests; elsewhere they
are skipped. ``SAMSVAR_TEST_PG_DSN`` names another server.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import pytest

from broker.accesslog import AccessLogConfig
from schemas.accesslog import AccessEntry, LoggedSource, LoggedUser
from schemas.jose import PrivateKey, generate_key
from schemas.records import OrgRef, UnitRef
from tests.conftest import fresh_pg_schema

PERSON = "193803039142"
OTHER = "191212121212"
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def key() -> PrivateKey:
    return generate_key()


@asynccontextmanager
async def pg_log_config(dsn: str) -> AsyncIterator[AccessLogConfig]:
    """A PostgreSQL access-log config in a fresh schema (the log makes it), dropped on exit."""
    async with fresh_pg_schema(dsn, "t_accesslog_") as schema:
        yield AccessLogConfig(kind="postgresql", dsn=dsn, schema=schema)


@pytest.fixture(params=["sqlite", "postgresql"])
async def log_config(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> AsyncIterator[AccessLogConfig]:
    """One store of each kind, empty."""
    if request.param == "sqlite":
        yield AccessLogConfig(kind="sqlite", path=tmp_path / "access-log.db")
        return
    async with pg_log_config(request.getfixturevalue("pg_dsn")) as config:
        yield config


@pytest.fixture
async def pg_config(pg_dsn: str) -> AsyncIterator[AccessLogConfig]:
    """A PostgreSQL store only."""
    async with pg_log_config(pg_dsn) as config:
        yield config


def with_options(config: AccessLogConfig, **changes: Any) -> AccessLogConfig:
    return replace(config, **changes)


@dataclass
class RawDb:
    """Direct access to the log's tables, as an intruder or a test would have.

    SQL uses ``{e}`` / ``{c}`` / ``{v}`` for the entries, checkpoints and version tables
    and ``?`` for parameters, whatever the kind.
    """

    config: AccessLogConfig

    def _sql(self, sql: str) -> str:
        if self.config.kind == "sqlite":
            prefix = ""
        else:
            prefix = f'"{self.config.schema}".'
        sql = sql.format(e=f"{prefix}access_log_entries", c=f"{prefix}access_log_checkpoints",
                         v=f"{prefix}access_log_schema", s=prefix.rstrip("."))
        if self.config.kind == "postgresql":
            counter = iter(range(1, 1000))
            sql = re.sub(r"\?", lambda _: f"${next(counter)}", sql)
        return sql

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.config.kind == "sqlite":
            with closing(sqlite3.connect(str(self.config.path), isolation_level=None)) as conn:
                return list(conn.execute(self._sql(sql), args).fetchall())
        conn = await asyncpg.connect(self.config.dsn, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(self._sql(sql), *args)]
        finally:
            await conn.close()

    async def execute(self, *statements: str | tuple[str, Sequence[Any]]) -> None:
        """Run statements in one transaction (a string, or ``(sql, args)``)."""
        items = [(s, ()) if isinstance(s, str) else s for s in statements]
        if self.config.kind == "sqlite":
            conn = sqlite3.connect(str(self.config.path), isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                for sql, args in items:
                    conn.execute(self._sql(sql), tuple(args))
                conn.execute("COMMIT")
            finally:
                conn.close()
            return
        conn = await asyncpg.connect(self.config.dsn, timeout=5)
        try:
            async with conn.transaction():
                for sql, args in items:
                    await conn.execute(self._sql(sql), *args)
        finally:
            await conn.close()

    async def rows(self) -> list[tuple[int, str, str, str]]:
        """(seq, prev_hash, hash, body) of every entry, in seq order."""
        return [(int(s), p, h, b) for s, p, h, b in
                await self.fetch("SELECT seq, prev_hash, hash, body FROM {e} ORDER BY seq")]


@pytest.fixture
def raw(log_config: AccessLogConfig) -> RawDb:
    return RawDb(log_config)


def make_entry(n: int, *, subject: str | None = PERSON, time: dt.datetime | None = None,
               outcome: str = "answered") -> AccessEntry:
    """A realistic entry: counts only, never content."""
    return AccessEntry(
        time=time or T0 + dt.timedelta(minutes=n), query_id=f"q-{n:04d}", instance="test-1",
        outcome=outcome, status=200 if outcome == "answered" else 403,  # type: ignore[arg-type]
        rule=None if outcome == "answered" else "6 kap. 2 § (no care relation)",
        consumer=OrgRef(id="SE2321000999-RE01", name="Region Exempel"),
        consumer_kind="vårdgivare",
        unit=UnitRef(id="SE2321000999-U100", name="Akutmottagningen"),
        user=LoggedUser(id="SE2321000999-ANLI", name="Anna Lind", role="Läkare"),
        basis="consent", subject=subject, types=["medication", "alerts"],
        sources=[LoggedSource(producer="SE2321000999-P001",
                              organisation=OrgRef(id="SE2321000999-RE01", name="Region Exempel"),
                              status="ok", disclosed={"medication": n % 4, "alerts": 1})],
    )
