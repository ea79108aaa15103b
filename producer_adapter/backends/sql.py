"""A record backend over a producer's own SQL database: SQLite or PostgreSQL.

Each information type is one parameterised, read-only query; each record field is read
from one column of its result::

    [backend]
    kind = "sql"
    dsn = "postgresql://samsvar_ro@db.kommun.example/omsorg"  # PostgreSQL (asyncpg), or
    # path = "care.db"                                        # SQLite, relative to the config
    schema = "omsorg"               # PostgreSQL only: the search_path (optional)
    timeout_s = 3                   # one question's queries together, at most
    max_records_per_type = 500      # more rows than this: the answer says truncated
    timezone = "Europe/Stockholm"   # for times without an offset, and for dates
    organisation = { id = "SE2120001234-0001", name = "Exempel kommun" }
    system = "Omsorgssystemet"      # source.system of every record (optional)
    pool_size = 4                   # PostgreSQL connections at most (optional)

    [backend.types.medication]
    query = '''
      SELECT order_id, ordered, drug_name, dose, scope, unit_id, unit_name
      FROM medication_orders
      WHERE person = :person
        AND (:from IS NULL OR ordered::date >= :from)
        AND (:to IS NULL OR ordered::date <= :to)
      ORDER BY ordered DESC LIMIT :limit'''
    [backend.types.medication.columns]   # record field = result column
    id = "order_id"
    time = "ordered"
    drug = "drug_name"
    dose = "dose"
    scope = "scope"
    unit_id = "unit_id"
    unit_name = "unit_name"

Parameters are named and the same for both databases: ``:person`` (the 12-digit identity
number, text; every query must use it), ``:from`` and ``:to`` (the period's first and last
day as dates, or NULL when open) and ``:limit`` (``max_records_per_type + 1``, so that a cut
list can be told apart). For PostgreSQL they become ``$1::text``, ``$2::date``,
``$3::date`` and ``$4::bigint``; SQLite gets the dates as ``YYYY-MM-DD`` text.

Targets are the record type's fields (:mod:`schemas.records`; ``blocked`` is the adapter's,
never a column) plus ``unit_id``, ``unit_name``, ``organisation_id``, ``organisation_name``,
``system``, ``author_name``, ``author_role`` and one code as ``code``, ``code_system``,
``code_display``. Lists and nested fields (``codes``, ``goals``, ``activities``,
``participants``, ``sbar``) are JSON (text or ``json``/``jsonb``). Constants are SQL
literals: ``'sol_elderly' AS scope``. The mapping is checked against the schemas when the
config is read, and against each query's result columns when the adapter starts.

Reads are read-only twice over (SQLite: ``mode=ro`` and ``query_only``; PostgreSQL: a
``READ ONLY`` transaction on a session with ``default_transaction_read_only``) and
time-limited (SQLite: a progress handler; PostgreSQL: ``statement_timeout``; both:
``asyncio.timeout``). Any database failure is a :class:`BackendError` with a short reason
that never carries a value from the database or the question.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sqlite3
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Final, get_args, get_origin
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import msgspec
import structlog

from schemas.messages import Period
from schemas.records import INFORMATION_TYPES, OrgRef, Record

from ..errors import AdapterConfigError, BackendError
from ._common import RECORD_CLASSES, check_keys, named_ref, positive, zone
from .base import BackendResult, RecordBackend, in_period

__all__ = ["SqlBackend", "SqlConfig", "TypeQuery", "scan_parameters", "to_postgres"]

PARAMETERS: Final[Mapping[str, str]] = {
    "person": "text", "from": "date", "to": "date", "limit": "bigint",
}
"""The named parameters a query may use, with their PostgreSQL types."""

_KEYS: Final = frozenset({
    "kind", "dsn", "path", "schema", "timeout_s", "max_records_per_type", "timezone",
    "organisation", "system", "pool_size", "types",
})
_SOURCE_FIELDS: Final = ("unit_id", "unit_name", "organisation_id", "organisation_name",
                         "system")
_EXTRA_FIELDS: Final = (*_SOURCE_FIELDS, "author_name", "author_role", "code", "code_system",
                        "code_display")
_NOT_MAPPED: Final = frozenset({"source", "author", "blocked"})
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG: Final = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_DB_ERRORS: Final = (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError,
                     asyncpg.InternalClientError, OSError)


# -- the mapping: record fields and how a column value becomes one ----------------------

_Coerce = Callable[[Any, ZoneInfo], Any]


def _strip(tp: Any) -> Any:
    """``X`` for ``Annotated[X, ...]`` and ``X | None``."""
    if get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    args = [a for a in get_args(tp) if a is not NoneType]
    if get_origin(tp) in (typing.Union, UnionType) and len(args) == 1:
        return _strip(args[0])
    return tp


def _to_str(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value  # msgspec names the field


def _to_bool(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("0", "1", "t", "f", "true", "false"):
        return value.lower() in ("1", "t", "true")
    return value


def _to_datetime(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), tz)
    return value


def _to_date(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            value = _to_datetime(value, tz)
    if isinstance(value, dt.datetime):
        return (value.astimezone(tz) if value.tzinfo else value).date()
    return value


def _to_json(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, str | bytes):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            return value
    return value


def _coercer(tp: Any) -> _Coerce:
    tp = _strip(tp)
    if tp is str or get_origin(tp) is typing.Literal:
        return _to_str
    if tp is bool:
        return _to_bool
    if tp is dt.datetime:
        return _to_datetime
    if tp is dt.date:
        return _to_date
    return _to_json


@dataclass(frozen=True, kw_only=True)
class _Target:
    required: bool
    coerce: _Coerce


def _targets(record_class: type[Any]) -> dict[str, _Target]:
    targets = {
        f.name: _Target(required=f.required, coerce=_coercer(f.type))
        for f in msgspec.structs.fields(record_class) if f.name not in _NOT_MAPPED
    }
    for name in _EXTRA_FIELDS:
        targets[name] = _Target(required=name in ("unit_id", "unit_name"), coerce=_to_str)
    return targets


_TARGETS: Final[Mapping[str, Mapping[str, _Target]]] = {
    t: _targets(cls) for t, cls in RECORD_CLASSES.items()
}


# -- named parameters --------------------------------------------------------------------

def scan_parameters(sql: str) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` of each ``:name`` outside quotes, comments and ``::`` casts.

    Raises ``ValueError`` for a positional parameter (``$1``, ``?``).
    """
    found: list[tuple[int, int, str]] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            end = sql.find(c, i + 1)
            while end != -1 and sql.startswith(c, end + 1):  # '' and "" escape themselves
                end = sql.find(c, end + 2)
            i = n if end == -1 else end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif c == "$":
            if i + 1 < n and sql[i + 1].isdigit():
                raise ValueError("use named parameters (:person, :from, :to, :limit), not $n")
            tag = _DOLLAR_TAG.match(sql, i)
            if tag is None:
                i += 1
            else:
                end = sql.find(tag.group(), tag.end())
                i = n if end == -1 else end + len(tag.group())
        elif c == "?":
            raise ValueError("use named parameters (:person, :from, :to, :limit), not ?")
        elif c == ":":
            if sql.startswith("::", i):
                i += 2
                continue
            name = _IDENT.match(sql, i + 1)
            if name is None:
                i += 1
            else:
                found.append((i, name.end(), name.group()))
                i = name.end()
        else:
            i += 1
    return found


def to_postgres(sql: str) -> tuple[str, tuple[str, ...]]:
    """The query with ``:name`` as typed ``$n``, and the names in ``$n`` order."""
    order: list[str] = []
    out: list[str] = []
    last = 0
    for start, end, name in scan_parameters(sql):
        if name not in order:
            order.append(name)
        out.append(sql[last:start])
        out.append(f"${order.index(name) + 1}::{PARAMETERS[name]}")
        last = end
    out.append(sql[last:])
    return "".join(out), tuple(order)


# -- configuration -----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TypeQuery:
    """One information type: its query and which column fills which record field."""

    type: str
    query: str
    columns: Mapping[str, str]
    """Record field (or ``unit_id`` …) → result column."""
    postgres: str
    """The query with typed ``$n`` parameters."""
    postgres_params: tuple[str, ...]


def _type_query(info_type: str, spec: Any, *, has_organisation: bool) -> TypeQuery:
    where = f"[backend.types.{info_type}]"
    if not isinstance(spec, Mapping):
        raise AdapterConfigError(f"{where} must be a table with query and columns")
    unknown = set(spec) - {"query", "columns"}
    if unknown:
        raise AdapterConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    query = spec.get("query")
    if not isinstance(query, str) or not query.strip():
        raise AdapterConfigError(f"{where} query must be a non-empty string")
    try:
        names = {name for _, _, name in scan_parameters(query)}
    except ValueError as exc:
        raise AdapterConfigError(f"{where} query: {exc}") from exc
    strange = names - set(PARAMETERS)
    if strange:
        raise AdapterConfigError(
            f"{where} query: unknown parameters {', '.join(':' + n for n in sorted(strange))} "
            f"(there are {', '.join(':' + n for n in PARAMETERS)})")
    if "person" not in names:
        raise AdapterConfigError(f"{where} query must select by :person")
    columns = spec.get("columns")
    if not isinstance(columns, Mapping) or not columns:
        raise AdapterConfigError(f"{where} columns must be a table: record field = column")
    targets = _TARGETS[info_type]
    for target, column in columns.items():
        if target not in targets:
            known = ", ".join(sorted(targets))
            raise AdapterConfigError(
                f"{where}.columns: {target} = {column!r}: {info_type} has no field {target!r} "
                f"(fields: {known})")
        if not isinstance(column, str) or not column:
            raise AdapterConfigError(
                f"{where}.columns: {target} must name a column (a non-empty string)")
    required = [t for t, spec_ in targets.items() if spec_.required]
    if not has_organisation:
        required += ["organisation_id", "organisation_name"]
    for target in required:
        if target not in columns:
            hint = (" (or set [backend] organisation)" if target.startswith("organisation")
                    else "")
            raise AdapterConfigError(
                f"{where}.columns: no column for the required field {target!r} of "
                f"{info_type}{hint}")
    pg_query, pg_params = to_postgres(query)
    return TypeQuery(type=info_type, query=query, columns=dict(columns), postgres=pg_query,
                     postgres_params=pg_params)


@dataclass(frozen=True, kw_only=True)
class SqlConfig:
    """The ``[backend]`` table of ``kind = "sql"``, checked."""

    dsn: str | None = None
    path: str | None = None
    schema: str | None = None
    timeout_s: float = 5.0
    max_records_per_type: int = 500
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Stockholm"))
    organisation: OrgRef | None = None
    system: str = ""
    pool_size: int = 4
    types: Mapping[str, TypeQuery] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SqlConfig:
        """Check a ``[backend]`` table; :class:`AdapterConfigError` names the key."""
        check_keys(table, _KEYS)
        dsn, path = table.get("dsn"), table.get("path")
        if (dsn is None) == (path is None):
            raise AdapterConfigError(
                "[backend] kind \"sql\" needs either dsn (PostgreSQL) or path (SQLite)")
        for key, value in (("dsn", dsn), ("path", path)):
            if value is not None and (not isinstance(value, str) or not value):
                raise AdapterConfigError(f"[backend] {key} must be a non-empty string")
        if dsn is not None and not dsn.startswith(("postgresql://", "postgres://")):
            raise AdapterConfigError("[backend] dsn must be a postgresql:// URL")
        schema = table.get("schema")
        if schema is not None:
            if dsn is None:
                raise AdapterConfigError("[backend] schema is for PostgreSQL (dsn) only")
            if not isinstance(schema, str) or not _IDENT.fullmatch(schema):
                raise AdapterConfigError("[backend] schema must be a plain SQL identifier")
        system = table.get("system", "")
        if not isinstance(system, str):
            raise AdapterConfigError("[backend] system must be a string")
        organisation = named_ref(table.get("organisation"), "organisation", OrgRef)
        types = table.get("types")
        if not isinstance(types, Mapping) or not types:
            raise AdapterConfigError(
                "[backend] kind \"sql\" needs [backend.types.<type>] tables, one per "
                "information type it serves")
        queries: dict[str, TypeQuery] = {}
        for info_type, spec in types.items():
            if info_type not in INFORMATION_TYPES:
                raise AdapterConfigError(
                    f"[backend.types.{info_type}]: not an information type (one of "
                    f"{', '.join(INFORMATION_TYPES)})")
            queries[info_type] = _type_query(info_type, spec,
                                             has_organisation=organisation is not None)
        return cls(
            dsn=dsn, path=path, schema=schema,
            timeout_s=float(positive(table, "timeout_s", 5.0, integer=False)),
            max_records_per_type=positive(table, "max_records_per_type", 500, integer=True),
            timezone=zone(table.get("timezone", "Europe/Stockholm")),
            organisation=organisation, system=system,
            pool_size=positive(table, "pool_size", 4, integer=True), types=queries,
        )


# -- rows to records ---------------------------------------------------------------------

_WHERE_IN_ERROR: Final = re.compile(r"at `\$\.?([^`]*)`")


class _RowError(Exception):
    """A row that makes no valid record; ``field`` names where, never the value."""

    def __init__(self, field_name: str) -> None:
        super().__init__(field_name)
        self.field = field_name


class _Mapper:
    def __init__(self, config: SqlConfig, producer_id: str) -> None:
        self.config = config
        self.producer_id = producer_id

    def record(self, tq: TypeQuery, row: Mapping[str, Any]) -> Record:
        tz = self.config.timezone
        targets = _TARGETS[tq.type]
        values: dict[str, Any] = {}
        for target, column in tq.columns.items():
            value = row.get(column)
            if value is not None:
                values[target] = targets[target].coerce(value, tz)
        org = self.config.organisation
        source: dict[str, Any] = {
            "producer": self.producer_id,
            "organisation": {
                "id": values.pop("organisation_id", org.id if org else None),
                "name": values.pop("organisation_name", org.name if org else None),
            },
            "unit": {"id": values.pop("unit_id", None), "name": values.pop("unit_name", None)},
            "system": values.pop("system", self.config.system),
        }
        author_name, author_role = values.pop("author_name", None), values.pop("author_role", "")
        code = values.pop("code", None)
        code_system = values.pop("code_system", "")
        code_display = values.pop("code_display", "")
        values["source"] = source
        if author_name:
            values["author"] = {"name": author_name, "role": author_role}
        if code:
            codes = values.get("codes")
            values["codes"] = [*(codes if isinstance(codes, list) else ()),
                               {"system": code_system, "code": code, "display": code_display}]
        try:
            return msgspec.convert(values, RECORD_CLASSES[tq.type])  # type: ignore[no-any-return]
        except msgspec.ValidationError as exc:
            found = _WHERE_IN_ERROR.search(str(exc))  # the path only: the message may quote
            raise _RowError(found.group(1) if found else "?") from None  # a value


# -- the backend -------------------------------------------------------------------------

def _dates(period: Period | None) -> tuple[dt.date | None, dt.date | None]:
    if period is None:
        return None, None
    return period.from_, period.to


@dataclass(frozen=True, kw_only=True)
class _Rows:
    names: Sequence[str]
    rows: list[Mapping[str, Any]]


class SqlBackend:
    """Reads one person's records with one read-only query per information type."""

    def __init__(self, config: SqlConfig, producer_id: str, *, base: Path = Path(".")) -> None:
        self.config = config
        self.producer_id = producer_id
        self._mapper = _Mapper(config, producer_id)
        self._path = base / config.path if config.path is not None else None
        self._pool: Any = None
        self._log = structlog.get_logger("samsvar.adapter.backend").bind(
            backend="sql", producer=producer_id)

    # -- the factory (see producer_adapter.backends) ----------------------------------

    @classmethod
    def check_config(cls, table: Mapping[str, Any]) -> None:
        """Check the table against the record schemas (no database needed)."""
        SqlConfig.from_table(table)

    @classmethod
    async def open(cls, table: Mapping[str, Any], *, base: Path,
                   producer_id: str) -> RecordBackend:
        """Connect and check each query's result columns against its mapping.

        A database that cannot be reached now is logged, not fatal: questions are
        answered ``error`` until it is back. A query the database refuses, or one
        without a mapped column, stops the adapter with :class:`AdapterConfigError`.
        """
        backend = cls(SqlConfig.from_table(table), producer_id, base=base)
        try:
            await backend.verify()
        except BaseException:
            await backend.aclose()
            raise
        return backend

    # -- the port -----------------------------------------------------------------------

    async def fetch(
        self, subject: str, types: frozenset[str], period: Period | None
    ) -> BackendResult:
        queries = [tq for t, tq in self.config.types.items() if t in types]
        if not queries:
            return BackendResult()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                results = await self._run(queries, subject, period)
        except TimeoutError:
            self._log.error("database timeout", timeout_s=self.config.timeout_s)
            raise BackendError("database timeout") from None
        except _DB_ERRORS as exc:
            reason = ("database timeout" if _is_timeout(exc) else
                      "database unreachable" if isinstance(exc, OSError) else
                      f"database error ({type(exc).__name__})")
            self._log.error("database failed", error=type(exc).__name__,
                            sqlstate=getattr(exc, "sqlstate", None))
            raise BackendError(reason) from exc
        return self._records(queries, results, period)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- internals ----------------------------------------------------------------------

    def _records(self, queries: list[TypeQuery], results: list[_Rows],
                 period: Period | None) -> BackendResult:
        limit = self.config.max_records_per_type
        records: list[Record] = []
        truncated = False
        for tq, result in zip(queries, results, strict=True):
            rows = result.rows
            if len(rows) > limit:
                truncated, rows = True, rows[:limit]
            unmapped: dict[str, int] = {}
            for row in rows:
                try:
                    record = self._mapper.record(tq, row)
                except _RowError as exc:
                    unmapped[exc.field] = unmapped.get(exc.field, 0) + 1
                    continue
                if in_period(record, period):
                    records.append(record)
            if unmapped:
                self._log.warning("rows not mapped to records: left out", type=tq.type,
                                  fields=unmapped)
        return BackendResult(records=records, truncated=truncated)

    async def _run(self, queries: list[TypeQuery], subject: str,
                   period: Period | None) -> list[_Rows]:
        start, end = _dates(period)
        values = {"person": subject, "from": start, "to": end,
                  "limit": self.config.max_records_per_type + 1}
        if self._path is not None:
            deadline = time.monotonic() + self.config.timeout_s
            return await asyncio.to_thread(self._sqlite_run, queries, values, deadline)
        return await self._postgres_run(queries, values)

    # SQLite: a read-only connection per question, in a worker thread.

    def _sqlite_connect(self, deadline: float) -> sqlite3.Connection:
        assert self._path is not None
        uri = f"{self._path.absolute().as_uri()}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=self.config.timeout_s,
                              isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA query_only = ON")
        con.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        return con

    def _sqlite_run(self, queries: list[TypeQuery], values: Mapping[str, Any],
                    deadline: float) -> list[_Rows]:
        params = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}
        con = self._sqlite_connect(deadline)
        try:
            out = []
            for tq in queries:
                cur = con.execute(tq.query, params)
                names = [d[0] for d in cur.description or ()]
                rows = cur.fetchmany(int(values["limit"]))
                out.append(_Rows(names=names,
                                 rows=[dict(zip(names, r, strict=True)) for r in rows]))
            return out
        finally:
            con.close()

    # PostgreSQL: a small pool; every question in a READ ONLY transaction.

    async def _postgres_pool(self) -> Any:
        if self._pool is None:
            settings = {
                "application_name": f"samsvar-adapter:{self.producer_id}"[:63],
                "default_transaction_read_only": "on",
                "statement_timeout": str(int(self.config.timeout_s * 1000)),
                "TimeZone": self.config.timezone.key,
            }
            if self.config.schema:
                settings["search_path"] = self.config.schema
            self._pool = await asyncpg.create_pool(
                self.config.dsn, min_size=0, max_size=self.config.pool_size,
                timeout=self.config.timeout_s, command_timeout=self.config.timeout_s,
                server_settings=settings)
        return self._pool

    async def _postgres_run(self, queries: list[TypeQuery],
                            values: Mapping[str, Any]) -> list[_Rows]:
        pool = await self._postgres_pool()
        out = []
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            for tq in queries:
                stmt = await conn.prepare(tq.postgres)
                names = [a.name for a in stmt.get_attributes()]
                cursor = await stmt.cursor(*(values[p] for p in tq.postgres_params))
                rows = await cursor.fetch(int(values["limit"]))
                out.append(_Rows(names=names, rows=[dict(r.items()) for r in rows]))
        return out

    # Start-up check: every mapped column is in its query's result.

    async def verify(self) -> None:
        """Check each query against the database; see :meth:`open`."""
        results: dict[str, list[str] | str] | None
        if self._path is not None:
            if not self._path.is_file():
                raise AdapterConfigError(f"[backend] path: {self._path} is not a file")
            results = await asyncio.to_thread(self._sqlite_columns)
        else:
            results = await self._postgres_columns()
        if results is None:
            return
        for tq in self.config.types.values():
            found = results[tq.type]
            if isinstance(found, str):
                raise AdapterConfigError(f"[backend.types.{tq.type}] query: {found}")
            for target, column in tq.columns.items():
                if column not in found:
                    raise AdapterConfigError(
                        f"[backend.types.{tq.type}.columns] {target} = {column!r}: the query "
                        f"returns no such column (it returns {', '.join(found) or 'none'})")

    def _sqlite_columns(self) -> dict[str, list[str] | str]:
        deadline = time.monotonic() + max(self.config.timeout_s, 10.0)
        try:
            con = self._sqlite_connect(deadline)
        except sqlite3.Error as exc:
            raise AdapterConfigError(
                f"[backend] path: {self._path} cannot be opened read-only: {exc}") from exc
        params = {"person": "", "from": None, "to": None, "limit": 0}
        found: dict[str, list[str] | str] = {}
        try:
            for tq in self.config.types.values():
                # LIMIT 0 on the query as a subquery: its result columns, without running it.
                wrapped = f"SELECT * FROM (\n{tq.query.strip().rstrip(';')}\n) LIMIT 0"
                try:
                    cur = con.execute(wrapped, params)
                except sqlite3.Error as exc:
                    found[tq.type] = f"{type(exc).__name__}: {exc}"
                    continue
                found[tq.type] = [d[0] for d in cur.description or ()]
        finally:
            con.close()
        return found

    async def _postgres_columns(self) -> dict[str, list[str] | str] | None:
        pool = await self._postgres_pool()
        try:
            async with asyncio.timeout(max(self.config.timeout_s, 10.0)):
                conn = await pool.acquire()
        except (*_DB_ERRORS, TimeoutError) as exc:
            self._log.warning("database unreachable at start-up: queries not checked; "
                              "questions are answered 'error' until it answers",
                              error=type(exc).__name__)
            return None
        found: dict[str, list[str] | str] = {}
        try:
            async with conn.transaction(readonly=True):
                for tq in self.config.types.values():
                    try:
                        async with conn.transaction():  # a savepoint: one bad query
                            stmt = await conn.prepare(tq.postgres)  # spoils no other
                    except asyncpg.PostgresError as exc:
                        found[tq.type] = f"{type(exc).__name__}: {exc}"
                        continue
                    found[tq.type] = [a.name for a in stmt.get_attributes()]
        finally:
            await pool.release(conn)
        return found


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.QueryCanceledError):  # statement_timeout
        return True
    return isinstance(exc, sqlite3.OperationalError) and "interrupt" in str(exc)
