"""The SQL backend reads the own view's types (SPEC sections 5 and 9): bookings, fixed
contacts with their internal note, a SIP as structure, self-care, and the flag that keeps
a record out of the person's view, in SQLite and in PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import pytest

from producer_adapter.backends import SqlBackend, open_backend
from schemas.records import Booking, CarePlan, FixedContact, SelfCare
from tests.conftest import fresh_pg_schema

PRODUCER = "SE2120009999-P042"
ORG = {"id": "SE2120009999-0001", "name": "Exempel kommun"}
PERSON = "195205131575"  # Skatteverket's test personnummer
UNIT = "SE2120009999-E020"
KOMMUN = {"id": "SE2120009999-0001", "name": "Exempel kommun"}
REGION = {"id": "SE2321000999-RE01", "name": "Region Exempel"}

SCHEMA = """
CREATE TABLE tider (id text, pnr text, bokad text, start text, slut text, syfte text,
                    utforare text, status text, kallelse integer, visas integer);
CREATE TABLE kontakter (id text, pnr text, fran text, roll text, namn text, telefon text,
                        intern text, extern text);
CREATE TABLE planer (id text, pnr text, skapad text, titel text, behov text,
                     aktiviteter text, samordnare text, uppfoljning text);
CREATE TABLE egenvard (id text, pnr text, beslutad text, aktivitet text, instruktion text,
                       utfors_av text);
"""
ROWS: dict[str, list[tuple[Any, ...]]] = {
    "tider": [("T1", PERSON, "2026-11-20T09:00:00+01:00", "2026-12-10T13:00:00+01:00",
               "2026-12-10T13:30:00+01:00", "Hembesök", "Amir Karimi", "booked", 1, 1),
              ("T2", PERSON, "2026-11-21T09:00:00+01:00", "2026-12-12T13:00:00+01:00",
               None, "Provtagning", None, "cancelled", 0, 0)],
    "kontakter": [("K1", PERSON, "2026-10-01", "fast_omsorgskontakt", "Maja Lind",
                   "0123-456 78", "Nyckelkod i systemet", "Ring mig")],
    "planer": [("S1", PERSON, "2026-10-29T13:00:00+01:00", "SIP hemma efter stroke",
                json.dumps(["Klara morgonen"]),
                json.dumps([{"what": "Hemtjänst", "responsible_org": KOMMUN,
                             "status": "in_progress"},
                            {"what": "Fysioterapi", "responsible_org": REGION}]),
                json.dumps({"name": "Lena Fors", "role": "SIP-samordnare"}), "2027-01-20")],
    "egenvard": [("E1", PERSON, "2026-10-29T15:00:00+01:00", "Blodtrycksmätning",
                  "Morgon och kväll", "Personen själv")],
}
TYPES = {
    "bookings": {"query": """
        SELECT id, bokad, start, slut, syfte, status, kallelse, visas,
               'hsl' AS scope, :person AS pnr_in,
               '{"id": "SE2120009999-E020", "name": "Hemsjukvården"}' AS enhet,
               CASE WHEN utforare IS NULL THEN NULL
                    ELSE '{"name": "' || utforare || '"}' END AS utforare,
               'SE2120009999-E020' AS unit_id, 'Hemsjukvården' AS unit_name
        FROM tider WHERE pnr = :person ORDER BY bokad DESC LIMIT :limit""",
        "columns": {"id": "id", "time": "bokad", "start": "start", "end": "slut",
                    "purpose": "syfte", "status": "status", "invitation": "kallelse",
                    "approved_for_patient": "visas", "scope": "scope", "unit": "enhet",
                    "performer": "utforare", "unit_id": "unit_id", "unit_name": "unit_name"}},
    "fixed_contacts": {"query": """
        SELECT id, fran, roll, namn, telefon, intern, extern, 'sol_elderly' AS scope,
               '{"name": "' || namn || '"}' AS person,
               '[{"system": "phone", "value": "' || telefon || '"}]' AS kontakt,
               'SE2120009999-E010' AS unit_id, 'Hemtjänsten' AS unit_name
        FROM kontakter WHERE pnr = :person LIMIT :limit""",
        "columns": {"id": "id", "time": "fran", "start": "fran", "role": "roll",
                    "person": "person", "contact": "kontakt", "internal_note": "intern",
                    "note": "extern", "scope": "scope", "unit_id": "unit_id",
                    "unit_name": "unit_name"}},
    "care_plans": {"query": """
        SELECT id, skapad, titel, behov, aktiviteter, samordnare, uppfoljning,
               'SIP' AS typ, 'sol_elderly' AS scope,
               'SE2120009999-E030' AS unit_id, 'Biståndsenheten' AS unit_name
        FROM planer WHERE pnr = :person LIMIT :limit""",
        "columns": {"id": "id", "time": "skapad", "title": "titel", "needs": "behov",
                    "activities": "aktiviteter", "coordinator": "samordnare",
                    "follow_up_date": "uppfoljning", "plan_type": "typ", "scope": "scope",
                    "unit_id": "unit_id", "unit_name": "unit_name"}},
    "self_care": {"query": """
        SELECT id, beslutad, aktivitet, instruktion, utfors_av, 'hsl' AS scope,
               'SE2120009999-E020' AS unit_id, 'Hemsjukvården' AS unit_name
        FROM egenvard WHERE pnr = :person LIMIT :limit""",
        "columns": {"id": "id", "time": "beslutad", "activity": "aktivitet",
                    "instructions": "instruktion", "performed_by": "utfors_av",
                    "scope": "scope", "unit_id": "unit_id", "unit_name": "unit_name"}},
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def location(request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[dict[str, str]]:
    if request.param == "sqlite":
        path = tmp_path / "omsorg.db"
        with closing(sqlite3.connect(path)) as con, con:
            con.executescript(SCHEMA)
            for table, rows in ROWS.items():
                con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})",
                                rows)
        yield {"path": path.name}
        return
    dsn = request.getfixturevalue("pg_dsn")
    async with fresh_pg_schema(dsn, "t_sqlown_") as schema:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
            await conn.execute(SCHEMA)
            for table, rows in ROWS.items():
                marks = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
                await conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
            yield {"dsn": dsn, "schema": schema}
        finally:
            await conn.close()


async def test_the_own_view_types_are_read_with_their_structure(
        location: dict[str, str], tmp_path: Path) -> None:
    backend = await open_backend(
        {"kind": "sql", **location, "timeout_s": 3, "organisation": ORG, "types": TYPES},
        base=tmp_path, producer_id=PRODUCER)
    assert isinstance(backend, SqlBackend)
    try:
        result = await backend.fetch(PERSON, frozenset(TYPES), None)
    finally:
        await backend.aclose()
    by_id = {r.id: r for r in result.records}
    assert set(by_id) == {"T1", "T2", "K1", "S1", "E1"}
    visit = by_id["T1"]
    assert isinstance(visit, Booking)
    assert visit.start == dt.datetime(2026, 12, 10, 13, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert visit.invitation is True and visit.unit.id == UNIT
    assert visit.performer is not None and visit.performer.name == "Amir Karimi"
    assert visit.approved_for_patient is True
    hidden = by_id["T2"]
    assert isinstance(hidden, Booking) and hidden.approved_for_patient is False
    assert hidden.status == "cancelled" and hidden.end is None and hidden.performer is None
    contact = by_id["K1"]
    assert isinstance(contact, FixedContact)
    assert contact.role == "fast_omsorgskontakt" and contact.person.name == "Maja Lind"
    assert contact.internal_note == "Nyckelkod i systemet" and contact.note == "Ring mig"
    assert contact.contact[0].value == "0123-456 78"
    plan = by_id["S1"]
    assert isinstance(plan, CarePlan) and plan.plan_type == "SIP"
    assert [(a.what, a.responsible_org.id if a.responsible_org else None)
            for a in plan.activities] == [("Hemtjänst", KOMMUN["id"]),
                                          ("Fysioterapi", REGION["id"])]
    assert plan.needs == ["Klara morgonen"] and plan.follow_up_date == dt.date(2027, 1, 20)
    assert plan.coordinator is not None and plan.coordinator.role == "SIP-samordnare"
    care = by_id["E1"]
    assert isinstance(care, SelfCare) and care.performed_by == "Personen själv"
