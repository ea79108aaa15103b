"""The SQL backend against a municipal care system's database, in SQLite and in PostgreSQL.

PostgreSQL is the ``test`` database at 127.0.0.1:5432 (``SAMSVAR_TEST_PG_DSN`` names
another), one fresh schema per test, dropped afterwards. Under ``CI=true`` an unreachable
PostgreSQL fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import pytest
from structlog.testing import capture_logs

from producer_adapter.backends import SqlBackend, check_backend_table, open_backend
from producer_adapter.backends.sql import SqlConfig, scan_parameters, to_postgres
from producer_adapter.errors import AdapterConfigError, BackendError
from schemas.messages import Period
from schemas.records import Medication, SocialCareIntervention
from tests.conftest import fresh_pg_schema

PRODUCER = "SE2120009999-P042"
ORG = {"id": "SE2120009999-0001", "name": "Exempel kommun"}
HEMTJANST = "SE2120009999-E010"   # hemtjänstgrupp Norr
HSJV = "SE2120009999-E020"        # hemsjukvården
IFO = "SE2120009999-E030"         # individ- och familjeomsorgen
PERSON = "195001182046"           # Skatteverket's test personnummer
PERSON_2 = "195001182061"
STOCKHOLM = ZoneInfo("Europe/Stockholm")
ALL = frozenset({"medication", "care_documentation", "social_care_interventions"})

# A municipal care system: persons, units, decisions (insatser), journal notes, and the
# medication orders of the municipal home health care. Columns are Swedish, as such
# systems' are; "verksamhet" is the law the documentation was made under.
SCHEMA = """
CREATE TABLE enheter (hsa_id text PRIMARY KEY, namn text NOT NULL);
CREATE TABLE personer (id integer PRIMARY KEY, personnummer text NOT NULL UNIQUE,
                       namn text NOT NULL);
CREATE TABLE insatser (
    id integer PRIMARY KEY, person_id integer NOT NULL REFERENCES personer (id),
    enhet text NOT NULL REFERENCES enheter (hsa_id), insats text NOT NULL,
    lagrum text NOT NULL, fas text NOT NULL, beslutsdatum date, startdatum date,
    slutdatum date, omfattning text, verksamhet text NOT NULL, registrerad {TSTZ} NOT NULL,
    handlaggare text);
CREATE TABLE anteckningar (
    id integer PRIMARY KEY, person_id integer NOT NULL REFERENCES personer (id),
    enhet text NOT NULL REFERENCES enheter (hsa_id), skriven {TS} NOT NULL,
    rubrik text NOT NULL, anteckning text NOT NULL, typ text, signerad_av text,
    yrke text, verksamhet text NOT NULL);
CREATE TABLE lakemedelsordinationer (
    ordination_id integer PRIMARY KEY, person_id integer NOT NULL REFERENCES personer (id),
    enhet text NOT NULL REFERENCES enheter (hsa_id), ordinerad {TSTZ} NOT NULL,
    preparat text NOT NULL, atc text, dos text, administrering text, doseringsschema text,
    status text NOT NULL, utsatt date, ordinator text);
"""

DATA: dict[str, list[tuple[Any, ...]]] = {
    "enheter": [(HEMTJANST, "Hemtjänstgrupp Norr"), (HSJV, "Hemsjukvården"),
                (IFO, "Individ- och familjeomsorgen")],
    "personer": [(1, PERSON, "Tolvan Tolvansson"), (2, PERSON_2, "Elva Elvasson")],
    "insatser": [
        (1, 1, HEMTJANST, "Hemtjänst", "SoL 4 kap. 1 §", "verkställighet", "2024-01-15",
         "2024-02-01", None, "28 tim/mån", "SoL-äldre", "2024-01-15T09:12:00+01:00",
         "Kim Handläggare"),
        (2, 1, HEMTJANST, "Trygghetslarm", "SoL 4 kap. 1 §", "beslut", "2024-03-04",
         None, None, "", "SoL-äldre", "2024-03-04T13:00:00+01:00", "Kim Handläggare"),
        (3, 1, IFO, "Ekonomiskt bistånd", "SoL 4 kap. 1 §", "beslut", "2024-02-10", None,
         None, "", "IFO", "2024-02-10T10:00:00+01:00", "Alex Socialsekreterare"),
    ],
    "anteckningar": [
        (1, 1, HSJV, "2024-02-20 14:05:00", "Omläggning av bensår", "Såret läker väl.",
         "Omvårdnad", "Sara Sjuksköterska", "Sjuksköterska", "HSL"),
        (2, 1, HEMTJANST, "2024-02-21 08:30:00", "Social dokumentation",
         "Promenad med stöd.", "Genomförande", "Pat Undersköterska", "Undersköterska",
         "SoL-äldre"),
        (3, 2, HSJV, "2024-01-09 10:00:00", "Inskrivning hemsjukvård", "Inskriven.",
         "Omvårdnad", "Sara Sjuksköterska", "Sjuksköterska", "HSL"),
    ],
    "lakemedelsordinationer": [
        (11, 1, HSJV, "2024-01-10T09:00:00+01:00", "Alvedon 500 mg tablett", "N02BE01",
         "1 g", "Oral", "3 gånger dagligen", "aktuell", None, "Dr. Läkare"),
        (12, 1, HSJV, "2024-02-15T11:00:00+01:00", "Furix 40 mg tablett", "C03CA01",
         "40 mg", "Oral", "1 gång dagligen", "aktuell", None, "Dr. Läkare"),
        (13, 1, HSJV, "2024-03-01T10:00:00+01:00", "Kåvepenin 1 g tablett", "J01CE02",
         "1 g", "Oral", "3 gånger dagligen i 10 dagar", "utsatt", "2024-03-11",
         "Dr. Läkare"),
    ],
}


def day(dialect: str, column: str) -> str:
    """The column's calendar date, in each dialect (both compare with :from and :to)."""
    return f"substr({column}, 1, 10)" if dialect == "sqlite" else f"{column}::date"


def types_table(dialect: str) -> dict[str, Any]:
    def d(column: str) -> str:
        return day(dialect, column)

    return {
        "medication": {
            "query": f"""
                SELECT o.ordination_id, o.ordinerad, o.preparat, o.atc, o.dos,
                       o.administrering, o.doseringsschema, o.utsatt, o.ordinator,
                       CASE o.status WHEN 'utsatt' THEN 'stopped' ELSE 'active' END AS status,
                       'hsl' AS scope, e.hsa_id, e.namn AS enhetsnamn,
                       'http://www.whocc.no/atc' AS atc_system
                FROM lakemedelsordinationer o
                JOIN personer p ON p.id = o.person_id
                JOIN enheter e ON e.hsa_id = o.enhet
                WHERE p.personnummer = :person
                  AND (:from IS NULL OR {d('o.ordinerad')} >= :from)
                  AND (:to IS NULL OR {d('o.ordinerad')} <= :to)
                ORDER BY o.ordinerad DESC
                LIMIT :limit""",
            "columns": {
                "id": "ordination_id", "time": "ordinerad", "drug": "preparat",
                "dose": "dos", "route": "administrering", "schedule": "doseringsschema",
                "stop": "utsatt", "status": "status", "scope": "scope", "unit_id": "hsa_id",
                "unit_name": "enhetsnamn", "code": "atc", "code_system": "atc_system",
                "author_name": "ordinator",
            },
        },
        "care_documentation": {
            "query": f"""
                SELECT a.id, a.skriven, a.rubrik, a.anteckning, a.typ, a.signerad_av, a.yrke,
                       CASE a.verksamhet WHEN 'HSL' THEN 'hsl'
                                         WHEN 'SoL-äldre' THEN 'sol_elderly'
                                         WHEN 'LSS' THEN 'lss'
                                         ELSE 'sol_other' END AS scope,
                       e.hsa_id, e.namn AS enhetsnamn
                FROM anteckningar a
                JOIN personer p ON p.id = a.person_id
                JOIN enheter e ON e.hsa_id = a.enhet
                WHERE p.personnummer = :person   -- never another person's notes
                  AND (:from IS NULL OR {d('a.skriven')} >= :from)
                  AND (:to IS NULL OR {d('a.skriven')} <= :to)
                ORDER BY a.skriven DESC
                LIMIT :limit""",
            "columns": {
                "id": "id", "time": "skriven", "title": "rubrik", "text": "anteckning",
                "note_type": "typ", "scope": "scope", "unit_id": "hsa_id",
                "unit_name": "enhetsnamn", "author_name": "signerad_av", "author_role": "yrke",
            },
        },
        "social_care_interventions": {
            "query": f"""
                SELECT 'insats-' || i.id AS id, i.registrerad, i.insats, i.lagrum,
                       CASE i.fas WHEN 'verkställighet' THEN 'verkstallighet'
                                  WHEN 'handläggning' THEN 'handlaggning'
                                  ELSE 'beslut' END AS fas,
                       i.beslutsdatum, i.startdatum, i.slutdatum, i.omfattning,
                       CASE i.verksamhet WHEN 'SoL-äldre' THEN 'sol_elderly'
                                         WHEN 'LSS' THEN 'lss'
                                         ELSE 'sol_other' END AS scope,
                       e.hsa_id, e.namn AS enhetsnamn, i.handlaggare
                FROM insatser i
                JOIN personer p ON p.id = i.person_id
                JOIN enheter e ON e.hsa_id = i.enhet
                WHERE p.personnummer = :person
                  AND (:from IS NULL OR {d('i.registrerad')} >= :from)
                  AND (:to IS NULL OR {d('i.registrerad')} <= :to)
                ORDER BY i.registrerad DESC
                LIMIT :limit""",
            "columns": {
                "id": "id", "time": "registrerad", "intervention": "insats",
                "legal_basis": "lagrum", "phase": "fas", "decision_date": "beslutsdatum",
                "start": "startdatum", "end": "slutdatum", "extent": "omfattning",
                "scope": "scope", "unit_id": "hsa_id", "unit_name": "enhetsnamn",
                "author_name": "handlaggare",
            },
        },
    }


# -- databases -------------------------------------------------------------------------

@dataclass
class CareDb:
    """One test's database and the ``[backend]`` table that reads it."""

    dialect: str
    base: Path
    location: dict[str, str]
    """``{"path": …}`` or ``{"dsn": …, "schema": …}``."""
    count: Callable[[str], Any]
    """The rows of a table now (an awaitable)."""

    def table(self, **overrides: Any) -> dict[str, Any]:
        table: dict[str, Any] = {
            "kind": "sql", **self.location, "timeout_s": 3, "max_records_per_type": 500,
            "organisation": ORG, "system": "Omsorgssystemet", "types": types_table(self.dialect),
        }
        table.update(overrides)
        return table

    async def open(self, **overrides: Any) -> SqlBackend:
        backend = await open_backend(self.table(**overrides), base=self.base,
                                     producer_id=PRODUCER)
        assert isinstance(backend, SqlBackend)
        return backend


def _sqlite_db(tmp_path: Path) -> CareDb:
    path = tmp_path / "omsorg.db"
    with closing(sqlite3.connect(path)) as con, con:
        con.executescript(SCHEMA.format(TSTZ="text", TS="text"))
        for table, rows in DATA.items():
            marks = ", ".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    async def count(table: str) -> int:
        with closing(sqlite3.connect(path)) as con:
            return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    return CareDb("sqlite", tmp_path, {"path": path.name}, count)


def _pg_value(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    if column_type == "date":
        return dt.date.fromisoformat(value)
    if column_type.startswith("timestamp"):
        return dt.datetime.fromisoformat(value)
    return value


@pytest.fixture(params=["sqlite", "postgresql"])
async def care_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CareDb]:
    if request.param == "sqlite":
        yield _sqlite_db(tmp_path)
        return
    dsn = request.getfixturevalue("pg_dsn")
    async with fresh_pg_schema(dsn, "t_sqlbackend_") as schema:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
            await conn.execute(SCHEMA.format(TSTZ="timestamptz", TS="timestamp"))
            for table, rows in DATA.items():
                types = await conn.fetch(
                    "SELECT data_type FROM information_schema.columns WHERE table_schema = $1 "
                    "AND table_name = $2 ORDER BY ordinal_position", schema, table)
                marks = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
                await conn.executemany(
                    f"INSERT INTO {table} VALUES ({marks})",
                    [[_pg_value(v, t["data_type"]) for v, t in zip(row, types, strict=True)]
                     for row in rows])

            async def count(table: str) -> int:
                return int(await conn.fetchval(f"SELECT count(*) FROM {schema}.{table}"))

            yield CareDb("postgresql", tmp_path, {"dsn": dsn, "schema": schema}, count)
        finally:
            await conn.close()


# -- reading -----------------------------------------------------------------------------

async def test_reads_every_type_with_its_fields(care_db: CareDb) -> None:
    backend = await care_db.open()
    try:
        result = await backend.fetch(PERSON, ALL, None)
    finally:
        await backend.aclose()
    assert result.truncated is False
    ids = [r.id for r in result.records]
    assert ids == ["13", "12", "11", "2", "1", "insats-2", "insats-3", "insats-1"]
    by_id = {r.id: r for r in result.records}
    pc = by_id["13"]
    assert isinstance(pc, Medication)
    assert pc.drug == "Kåvepenin 1 g tablett" and pc.status == "stopped"
    assert pc.stop == dt.date(2024, 3, 11) and pc.dose == "1 g" and pc.route == "Oral"
    assert pc.time == dt.datetime(2024, 3, 1, 10, tzinfo=STOCKHOLM)
    assert pc.time.utcoffset() == dt.timedelta(hours=1)
    assert [(c.system, c.code) for c in pc.codes] == [("http://www.whocc.no/atc", "J01CE02")]
    assert pc.source.producer == PRODUCER and pc.source.system == "Omsorgssystemet"
    assert (pc.source.organisation.id, pc.source.unit.id) == (ORG["id"], HSJV)
    assert pc.source.unit.name == "Hemsjukvården"
    assert pc.author is not None and pc.author.name == "Dr. Läkare"
    assert pc.scope == "hsl"
    note = by_id["1"]
    assert note.scope == "hsl" and note.author is not None
    assert (note.author.name, note.author.role) == ("Sara Sjuksköterska", "Sjuksköterska")
    # a timestamp without zone is read in the configured zone
    assert note.time == dt.datetime(2024, 2, 20, 14, 5, tzinfo=STOCKHOLM)
    assert by_id["2"].scope == "sol_elderly"
    home_care = by_id["insats-1"]
    assert isinstance(home_care, SocialCareIntervention)
    assert home_care.phase == "verkstallighet" and home_care.scope == "sol_elderly"
    assert home_care.decision_date == dt.date(2024, 1, 15)
    assert home_care.start == dt.date(2024, 2, 1) and home_care.extent == "28 tim/mån"
    assert by_id["insats-3"].scope == "sol_other"  # the policy, not the backend, drops it


async def test_only_the_asked_types_and_person(care_db: CareDb) -> None:
    backend = await care_db.open()
    try:
        only_notes = await backend.fetch(PERSON_2, frozenset({"care_documentation"}), None)
        nothing = await backend.fetch("191212121212", ALL, None)
        unserved = await backend.fetch(PERSON, frozenset({"lab_results"}), None)
    finally:
        await backend.aclose()
    assert [r.id for r in only_notes.records] == ["3"]
    assert nothing.records == [] and unserved.records == []


@pytest.mark.parametrize(
    "start, end, expected",
    [
        ("2024-02-15", None, {"13", "12", "1", "2", "insats-2"}),
        (None, "2024-01-15", {"11", "insats-1"}),
        ("2024-02-20", "2024-02-20", {"1"}),   # both ends inclusive, by the local date
        ("2024-03-02", "2024-12-31", {"insats-2"}),
        ("2025-01-01", None, set()),
    ],
)
async def test_period_is_applied_in_the_query(care_db: CareDb, start: str | None,
                                              end: str | None, expected: set[str]) -> None:
    period = Period(from_=dt.date.fromisoformat(start) if start else None,
                    to=dt.date.fromisoformat(end) if end else None)
    backend = await care_db.open()
    try:
        result = await backend.fetch(PERSON, ALL, period)
    finally:
        await backend.aclose()
    assert {r.id for r in result.records} - {"insats-3"} == expected
    assert result.truncated is False


async def test_limit_per_type_keeps_the_newest_and_says_truncated(care_db: CareDb) -> None:
    backend = await care_db.open(max_records_per_type=2)
    try:
        cut = await backend.fetch(PERSON, frozenset({"medication"}), None)
        whole = await backend.fetch(PERSON, frozenset({"care_documentation"}), None)
        exactly = await backend.fetch(
            PERSON, frozenset({"medication"}),
            Period(from_=dt.date(2024, 2, 1), to=None))
    finally:
        await backend.aclose()
    assert [r.id for r in cut.records] == ["13", "12"] and cut.truncated is True
    assert len(whole.records) == 2 and whole.truncated is False  # exactly the limit
    assert [r.id for r in exactly.records] == ["13", "12"] and exactly.truncated is False


async def test_a_row_that_makes_no_record_is_left_out_and_logged_without_content(
    care_db: CareDb,
) -> None:
    types = types_table(care_db.dialect)
    types["medication"]["query"] = types["medication"]["query"].replace(
        "'hsl' AS scope", "CASE o.ordination_id WHEN 12 THEN 'Furix-hemlig' ELSE 'hsl' END "
        "AS scope")
    backend = await care_db.open(types=types)
    try:
        with capture_logs() as logs:
            result = await backend.fetch(PERSON, frozenset({"medication"}), None)
    finally:
        await backend.aclose()
    assert [r.id for r in result.records] == ["13", "11"]
    [event] = [e for e in logs if e["event"] == "rows not mapped to records: left out"]
    assert event["type"] == "medication" and event["fields"] == {"scope": 1}
    assert "Furix" not in repr(logs)


# -- safety: read-only, time-limited, failures are errors --------------------------------

WRITER = {
    "postgresql": "WITH gone AS (DELETE FROM anteckningar RETURNING id) "
                  "SELECT id, now() AS t, 'x' AS title, 'hsl' AS scope, 'u' AS unit_id, "
                  "'n' AS unit_name FROM gone WHERE :person IS NOT NULL",
    "sqlite": "SELECT id, skriven AS t, 'x' AS title, 'hsl' AS scope, 'u' AS unit_id, "
              "'n' AS unit_name FROM anteckningar WHERE :person IS NOT NULL",
}
WRITER_COLUMNS = {"id": "id", "time": "t", "title": "title", "scope": "scope",
                  "unit_id": "unit_id", "unit_name": "unit_name"}


async def test_queries_cannot_write(care_db: CareDb) -> None:
    types = {"care_documentation": {"query": WRITER[care_db.dialect], "columns": WRITER_COLUMNS}}
    if care_db.dialect == "sqlite":
        # SQLite has no writing SELECT: try to write through the backend's own connection.
        config = SqlConfig.from_table(care_db.table(types=types))
        backend = SqlBackend(config, PRODUCER, base=care_db.base)
        con = backend._sqlite_connect(deadline=float("inf"))
        with closing(con), pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only"):
            con.execute("DELETE FROM anteckningar")
        await backend.aclose()
    else:
        backend = await care_db.open(types=types)
        try:
            with capture_logs() as logs, pytest.raises(BackendError) as err:
                await backend.fetch(PERSON, frozenset({"care_documentation"}), None)
        finally:
            await backend.aclose()
        assert str(err.value) == "database error (ReadOnlySQLTransactionError)"
        assert any(e["event"] == "database failed" for e in logs)
    assert await care_db.count("anteckningar") == 3


async def test_a_slow_query_is_a_timeout_error(care_db: CareDb) -> None:
    slow = {
        "postgresql": "SELECT 1 AS id, now() AS t, 'x' AS title, 'hsl' AS scope, "
                      "'u' AS unit_id, 'n' AS unit_name FROM pg_sleep(5) "
                      "WHERE :person IS NOT NULL",
        "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                  "SELECT x AS id, '2024-01-01' AS t, 'x' AS title, 'hsl' AS scope, "
                  "'u' AS unit_id, 'n' AS unit_name FROM c WHERE x < 0 AND :person IS NOT NULL",
    }[care_db.dialect]
    backend = await care_db.open(
        timeout_s=0.3,
        types={"care_documentation": {"query": slow, "columns": WRITER_COLUMNS}})
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(BackendError, match=r"^database timeout$"):
            await backend.fetch(PERSON, frozenset({"care_documentation"}), None)
    finally:
        await backend.aclose()
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_unreachable_postgresql_starts_and_answers_error(tmp_path: Path) -> None:
    table = {"kind": "sql", "dsn": "postgresql://postgres@127.0.0.1:1/test", "timeout_s": 1,
             "organisation": ORG, "types": types_table("postgresql")}
    with capture_logs() as logs:
        backend = await open_backend(table, base=tmp_path, producer_id=PRODUCER)
    try:
        assert any(e["event"].startswith("database unreachable at start-up") for e in logs)
        with pytest.raises(BackendError, match=r"^database (unreachable|timeout)$"):
            await backend.fetch(PERSON, ALL, None)
    finally:
        await backend.aclose()


# -- the mapping is checked at start-up --------------------------------------------------

def _table(**types: Any) -> dict[str, Any]:
    return {"kind": "sql", "path": "x.db", "organisation": ORG, "types": types}


MED: dict[str, Any] = {"query": "SELECT * FROM m WHERE p = :person",
       "columns": {"id": "a", "time": "b", "drug": "c", "scope": "d", "unit_id": "e",
                   "unit_name": "f"}}


@pytest.mark.parametrize(
    "table, message",
    [
        (_table(medication={**MED, "columns": {**MED["columns"], "drugg": "x"}}),
         r"\[backend.types.medication\].columns: drugg = 'x': medication has no field 'drugg'"),
        (_table(medication={**MED, "columns": {k: v for k, v in MED["columns"].items()
                                               if k != "drug"}}),
         r"\[backend.types.medication\].columns: no column for the required field 'drug'"),
        (_table(medication={**MED, "columns": {k: v for k, v in MED["columns"].items()
                                               if k != "unit_id"}}),
         r"no column for the required field 'unit_id' of medication"),
        (_table(medication={**MED, "columns": {**MED["columns"], "blocked": "b"}}),
         r"medication has no field 'blocked'"),
        (_table(alerts={**MED}), r"\[backend.types.alerts\].columns: drug = 'c': alerts has no"),
        (_table(medication={**MED, "query": "SELECT * FROM m"}), r"must select by :person"),
        (_table(medication={**MED, "query": "SELECT * FROM m WHERE p = :person AND q = :who"}),
         r"unknown parameters :who"),
        (_table(medication={**MED, "query": "SELECT * FROM m WHERE p = $1"}),
         r"use named parameters"),
        (_table(medicine=MED), r"\[backend.types.medicine\]: not an information type"),
        (_table(), r"needs \[backend.types.<type>\] tables"),
        ({**_table(medication=MED), "organisation": {"id": "x"}}, r"organisation must be"),
        ({k: v for k, v in _table(medication=MED).items() if k != "organisation"},
         (r"no column for the required field 'organisation_id' .*\(or set \[backend\] "
          r"organisation\)")),
        ({**_table(medication=MED), "dsn": "postgresql://x/y"}, r"either dsn .* or path"),
        ({**_table(medication=MED), "timeout_s": 0}, r"timeout_s must be a positive number"),
        ({**_table(medication=MED), "timezone": "Mars/Olympus"}, r"not a known zone"),
        ({**_table(medication=MED), "user": "x"}, r"unknown keys: user"),
        ({**_table(medication=MED), "schema": "x"}, r"schema is for PostgreSQL"),
    ],
)
def test_config_errors_name_the_type_and_column(table: dict[str, Any], message: str) -> None:
    with pytest.raises(AdapterConfigError, match=message):
        check_backend_table(table, where="adapter.toml")


def test_organisation_can_come_from_columns() -> None:
    columns = {**MED["columns"], "organisation_id": "o", "organisation_name": "n"}
    table = {k: v for k, v in _table(medication={**MED, "columns": columns}).items()
             if k != "organisation"}
    assert SqlConfig.from_table(table).types["medication"].columns["organisation_id"] == "o"


async def test_a_mapped_column_the_query_lacks_stops_the_start(care_db: CareDb) -> None:
    types = types_table(care_db.dialect)
    types["medication"]["columns"]["purpose"] = "indikation"
    with pytest.raises(AdapterConfigError,
                       match=r"\[backend.types.medication.columns\] purpose = 'indikation': "
                             r"the query returns no such column \(it returns ordination_id, "):
        await care_db.open(types=types)


async def test_a_query_the_database_refuses_stops_the_start(care_db: CareDb) -> None:
    types = types_table(care_db.dialect)
    types["care_documentation"]["query"] = types["care_documentation"]["query"].replace(
        "FROM anteckningar", "FROM anteckningarna")
    with pytest.raises(AdapterConfigError, match=r"\[backend.types.care_documentation\] query: "):
        await care_db.open(types=types)


async def test_a_missing_sqlite_file_stops_the_start(tmp_path: Path) -> None:
    table = {"kind": "sql", "path": "nope.db", "organisation": ORG,
             "types": types_table("sqlite")}
    with pytest.raises(AdapterConfigError, match=r"a.toml: \[backend\] path: .*nope.db is not"):
        await open_backend(table, base=tmp_path, producer_id=PRODUCER, where="a.toml")


def test_named_parameters_become_typed_positional_ones_for_postgresql() -> None:
    sql = ("SELECT ':person', \"a:b\", x::date, $$ :to $$ FROM t -- :limit\n"
           "WHERE p = :person /* :from */ AND (:from IS NULL OR d >= :from) LIMIT :limit")
    text, names = to_postgres(sql)
    assert names == ("person", "from", "limit")
    assert text == ("SELECT ':person', \"a:b\", x::date, $$ :to $$ FROM t -- :limit\n"
                    "WHERE p = $1::text /* :from */ AND ($2::date IS NULL OR d >= $2::date) "
                    "LIMIT $3::bigint")
    assert [n for _, _, n in scan_parameters("SELECT 'it''s :to' WHERE a = :to")] == ["to"]
