"""Fixtures for the consumer client: keys, a user, a sample answer, a stub broker."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from schemas.jose import PrivateKey, generate_key
from schemas.messages import Answer, SourceResult, User
from schemas.records import (
    SBAR,
    Activity,
    Alert,
    Author,
    CareContact,
    CareDocumentation,
    CarePlan,
    Code,
    Diagnosis,
    FunctionalStatus,
    LabResult,
    Medication,
    OrgRef,
    Record,
    RecordSource,
    SocialCareIntervention,
    UnitRef,
)

ISSUER = "SE2321000016-0001"
AUDIENCE = "SE0000000000-BRK1"
SUBJECT = "193803039142"  # from Skatteverket's list of test personnummer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StubBroker = Callable[[Handler], Awaitable[str]]

UTC = dt.UTC
AUTHOR = Author(name="Bo Sköterska", role="sjuksköterska")
REGION = OrgRef(id="SE2321000016-0001", name="Region Exempel")
KOMMUN = OrgRef(id="SE2120000000-0002", name="Exempels kommun")


def _source(org: OrgRef, producer: str, unit: str) -> RecordSource:
    return RecordSource(producer=producer, organisation=org,
                        unit=UnitRef(id=f"{org.id}-U1", name=unit), system="test")


@pytest.fixture
def key() -> PrivateKey:
    return generate_key("EdDSA")


@pytest.fixture
def user() -> User:
    return User(id="SE2321000016-1ABC", name="Anna Läkare", role="läkare",
                unit=UnitRef(id="SE2321000016-7Z3B", name="Akutmottagningen"))


@pytest.fixture
def sample_answer() -> Answer:
    """One record of every type from two producers, one producer that timed out."""
    hosp = _source(REGION, "SE2321000016-P001", "Medicinkliniken")
    home = _source(KOMMUN, "SE2120000000-P002", "Hemtjänst Norr")
    common: dict[str, Any] = {"author": AUTHOR, "scope": "hsl"}
    records: list[Record] = [
        Medication(id="m1", source=hosp, time=dt.datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
                   drug="Metformin 500 mg", dose="1 tablett", schedule="2 gånger dagligen",
                   codes=[Code(system="ATC", code="A10BA02")], **common),
        Diagnosis(id="d1", source=hosp, time=dt.datetime(2026, 10, 1, 8, 0, tzinfo=UTC),
                  display="Essentiell hypertoni", primary=True,
                  codes=[Code(system="ICD-10-SE", code="I10")], **common),
        CareDocumentation(id="c1", source=hosp,
                          time=dt.datetime(2026, 11, 26, 14, 5, tzinfo=UTC),
                          title="Inskrivningsanteckning", note_type="Anteckning",
                          sbar=SBAR(situation="s", background="b", assessment="a",
                                    recommendation="r"), **common),
        Alert(id="a1", source=hosp, time=dt.datetime(2025, 1, 3, 12, 0, tzinfo=UTC),
              category="allergy", description="Penicillinallergi", severity="high",
              substance="penicillin", **common),
        LabResult(id="l1", source=hosp, time=dt.datetime(2026, 11, 19, 7, 45, tzinfo=UTC),
                  analysis="P-Glukos", value="9.1", unit="mmol/L", reference_range="4.0-6.0",
                  abnormal=True, **common),
        CareContact(id="k1", source=hosp, time=dt.datetime(2026, 11, 26, 13, 0, tzinfo=UTC),
                    contact_type="Akutbesök", reason="Yrsel", **common),
        CarePlan(id="p1", source=home, time=dt.datetime(2026, 9, 1, 10, 0, tzinfo=UTC),
                 title="SIP efter utskrivning", plan_type="SIP", goals=["Bo kvar hemma"],
                 activities=[Activity(description="Läkemedelsgenomgång",
                                      responsible="Region")],
                 follow_up=dt.date(2026, 12, 15), **common),
        SocialCareIntervention(
            id="s1", source=home, time=dt.datetime(2026, 8, 15, 9, 0, tzinfo=UTC),
            intervention="Hemtjänst", legal_basis="SoL 4 kap. 1 §", phase="verkstallighet",
            extent="20 h/mån", author=AUTHOR, scope="sol_elderly",
        ),
        FunctionalStatus(id="f1", source=home, time=dt.datetime(2026, 8, 10, 9, 0, tzinfo=UTC),
                         domain="Förflyttning", assessment="Behöver hjälp", **common),
    ]
    records.sort(key=lambda r: r.time, reverse=True)
    return Answer(
        query_id="q-0001",
        subject=SUBJECT,
        complete=False,
        blocked_information_exists=True,
        sources=[
            SourceResult(producer="SE2321000016-P001", organisation=REGION, status="ok",
                         records=6, latency_ms=42),
            SourceResult(producer="SE2120000000-P002", organisation=KOMMUN, status="ok",
                         records=3, latency_ms=57),
            SourceResult(producer="SE2321000099-P003",
                         organisation=OrgRef(id="SE2321000099-0003", name="Privata Kliniken"),
                         status="timeout"),
        ],
        records=records,
    )


@pytest.fixture
async def stub_broker() -> AsyncIterator[StubBroker]:
    """Start an aiohttp server on a free port whose ``POST /v1/queries`` is ``handler``."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/queries", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()
