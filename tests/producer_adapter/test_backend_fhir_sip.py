"""A SIP (samordnad individuell plan) through the FHIR backend as structure: the plan type
from ``category``, the needs from ``addresses``, each activity with the organisation that
answers for it, the organisation with the overall responsibility, the coordinator, the
participants and the follow-up (docs/fhir.md, "care_plans ← CarePlan"); and a SIP the
broker writes as FHIR (broker/fhir.py) read back by the backend without losing them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from fhir.resources.R4B import get_fhir_model_class

from broker.fhir import FHIR_ENCODER, record_resource
from schemas.records import Activity, CarePlan, OrgRef, PersonRef, RecordSource, UnitRef
from tests.producer_adapter.test_backend_fhir import PERSON, FhirServer, examples, fetch

HSA = "urn:oid:1.2.752.29.4.19"
THE_PATIENT = [r for r in examples() if r["resourceType"] == "Patient"]
PATIENT = "Patient/example"  # the examples' patient (Skatteverket test personnummer)
KOMMUN = {"resourceType": "Organization", "id": "kommun", "name": "Exempelby kommun",
          "identifier": [{"system": HSA, "value": "SE2120000000-K001"}]}
NEED = {"resourceType": "Condition", "id": "behov1", "subject": {"reference": PATIENT},
        "code": {"text": "Stöd i vardagen efter utskrivning"},
        "recordedDate": "2026-10-01"}
COORDINATOR = {
    "resourceType": "PractitionerRole", "id": "samordnare",
    "practitioner": {"identifier": {"system": HSA, "value": "SE2120000000-P042"},
                     "display": "Siv Mattsson"},
    "organization": {"type": "Organization", "display": "Exempelby kommun",
                     "identifier": {"system": HSA, "value": "SE2120000000-K001"}},
    "code": [{"coding": [{"system": "urn:samsvar:fhir:care-plan-role",
                          "code": "coordinator"}]},
             {"text": "Biståndshandläggare"}]}
SIP = {
    "resourceType": "CarePlan", "id": "sip1", "status": "active", "intent": "plan",
    "subject": {"reference": PATIENT}, "created": "2026-10-02T10:00:00+02:00",
    "category": [{"coding": [{"system": "urn:samsvar:fhir:care-plan-type", "code": "SIP"}],
                  "text": "Samordnad individuell plan"}],
    "title": "SIP efter utskrivning",
    "addresses": [{"reference": "Condition/behov1"},
                  {"display": "Trygghet nattetid"}],
    "goal": [{"reference": "#mal"}],
    "contained": [{"resourceType": "Goal", "id": "mal", "lifecycleStatus": "active",
                   "subject": {"reference": PATIENT},
                   "description": {"text": "Bo kvar hemma"}},
                  {"resourceType": "CareTeam", "id": "team",
                   "participant": [{"member": {"display": "Anna Andersson (dotter)"}}]}],
    "careTeam": [{"reference": "#team"}],
    "author": {"reference": "Organization/kommun"},
    "contributor": [{"reference": "PractitionerRole/samordnare"},
                    {"display": "Vårdcentralen Exempelby"}],
    "activity": [
        {"detail": {"status": "in-progress", "description": "Hemtjänst morgon och kväll",
                    "scheduledString": "dagligen",
                    "performer": [{"reference": "Organization/kommun"}]}},
        {"detail": {"status": "scheduled", "description": "Läkemedelsgenomgång",
                    "scheduledPeriod": {"start": "2026-11-15"},
                    "performer": [{"type": "Organization", "display": "Region Exempel",
                                   "identifier": {"system": HSA,
                                                  "value": "SE2321000999-RE01"}},
                                  {"display": "Distriktssköterska"}]}},
        {"detail": {"status": "scheduled",
                    "code": {"coding": [{"system": "urn:samsvar:fhir:care-plan-activity",
                                         "code": "follow-up"}], "text": "Uppföljning"},
                    "scheduledPeriod": {"start": "2027-01-20"}}}]}


@pytest.fixture
async def fhir() -> AsyncIterator[FhirServer]:
    server = FhirServer([*THE_PATIENT, KOMMUN, NEED, COORDINATOR, SIP])
    async with TestServer(server.app(), host="127.0.0.1") as ts:
        server.base_url = str(ts.make_url("/fhir"))
        yield server


async def _plans(server: FhirServer, tmp_path: Path) -> dict[str, CarePlan]:
    result: Any = await fetch(server, tmp_path, types=frozenset({"care_plans"}))
    return {r.id: r for r in result.records if isinstance(r, CarePlan)}


def test_the_sip_fixtures_are_valid_fhir() -> None:
    resources: tuple[dict[str, Any], ...] = (KOMMUN, NEED, COORDINATOR, SIP)
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


async def test_a_sip_carries_its_structure(fhir: FhirServer, tmp_path: Path) -> None:
    plan = (await _plans(fhir, tmp_path))["CarePlan/sip1"]
    assert (plan.plan_type, plan.title, plan.status) == ("SIP", "SIP efter utskrivning",
                                                         "active")
    assert plan.needs == ["Stöd i vardagen efter utskrivning", "Trygghet nattetid"]
    assert plan.goals == ["Bo kvar hemma"]
    kommun = OrgRef(id="SE2120000000-K001", name="Exempelby kommun")
    region = OrgRef(id="SE2321000999-RE01", name="Region Exempel")
    assert plan.activities == [
        Activity(what="Hemtjänst morgon och kväll", responsible_org=kommun,
                 when="dagligen", status="in_progress"),
        Activity(what="Läkemedelsgenomgång", responsible_org=region,
                 responsible="Distriktssköterska", when="2026-11-15", status="planned")]
    assert plan.overall_responsible_org == kommun
    assert plan.coordinator == PersonRef(name="Siv Mattsson", hsa_id="SE2120000000-P042",
                                         role="Biståndshandläggare", organisation=kommun)
    assert plan.participants == ["Vårdcentralen Exempelby", "Anna Andersson (dotter)"]
    assert plan.follow_up_date == dt.date(2027, 1, 20)


async def test_a_plan_type_in_words_and_a_revoked_plan(fhir: FhirServer,
                                                       tmp_path: Path) -> None:
    fhir.resources[-1] = {**SIP, "status": "revoked", "category": [{"text": "sip"}],
                          "extension": [{"url": "urn:samsvar:fhir:follow-up",
                                         "valueDate": "2027-02-01"}]}
    plan = (await _plans(fhir, tmp_path))["CarePlan/sip1"]
    assert (plan.plan_type, plan.status) == ("SIP", "cancelled")
    assert plan.follow_up_date == dt.date(2027, 2, 1)  # the extension before the activity


def _written_sip() -> CarePlan:
    kommun = OrgRef(id="SE2120000000-K001", name="Exempelby kommun")
    region = OrgRef(id="SE2321000999-RE01", name="Region Exempel")
    return CarePlan(
        id="sip-42", time=dt.datetime(2026, 10, 2, 10, tzinfo=dt.UTC), scope="sol_elderly",
        source=RecordSource(producer="SE2120000000-P001", organisation=kommun,
                            unit=UnitRef(id="SE2120000000-U001", name="Hemtjänst Norr"),
                            system="Omsorgssystemet"),
        title="SIP efter utskrivning", plan_type="SIP", status="active",
        needs=["Stöd i vardagen", "Trygghet nattetid"], goals=["Bo kvar hemma"],
        activities=[Activity(what="Hemtjänst", responsible_org=kommun, when="dagligen",
                             status="in_progress"),
                    Activity(what="Läkemedelsgenomgång", responsible_org=region,
                             responsible="Distriktssköterska", when="november")],
        overall_responsible_org=kommun,
        coordinator=PersonRef(name="Siv Mattsson", hsa_id="SE2120000000-P042",
                              role="Biståndshandläggare", organisation=kommun),
        participants=["Anna Andersson (dotter)"], follow_up_date=dt.date(2027, 1, 20))


async def test_a_sip_the_broker_writes_reads_back_whole(tmp_path: Path) -> None:
    written = _written_sip()
    resource = json.loads(FHIR_ENCODER.encode(record_resource(written, PERSON,
                                                              resource_id="sip42")))
    get_fhir_model_class("CarePlan").model_validate(resource)  # valid FHIR (R4B)
    resource["subject"] = {"reference": PATIENT}  # the test server's patient
    server = FhirServer([*THE_PATIENT, resource])
    async with TestServer(server.app(), host="127.0.0.1") as ts:
        server.base_url = str(ts.make_url("/fhir"))
        read = (await _plans(server, tmp_path))["CarePlan/sip42"]
    assert (read.plan_type, read.title, read.status) == ("SIP", written.title, "active")
    assert read.needs == written.needs and read.goals == written.goals
    assert [(a.what, a.responsible_org, a.responsible, a.when, a.status)
            for a in read.activities] == [
        (a.what, a.responsible_org, a.responsible, a.when, a.status)
        for a in written.activities]
    assert read.overall_responsible_org == written.overall_responsible_org
    assert read.coordinator == written.coordinator
    assert read.participants == written.participants
    assert read.follow_up_date == written.follow_up_date
