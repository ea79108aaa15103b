"""The FHIR backend reads the own view's types (SPEC section 5): Appointment → bookings,
CareTeam with a PractitionerRole → fixed_contacts, a self-care CarePlan → self_care (and
not a care plan), against the small FHIR server of ``test_backend_fhir``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from schemas.records import Booking, CarePlan, FixedContact, SelfCare
from tests.producer_adapter.test_backend_fhir import FhirServer, examples, fetch

HSA = "urn:oid:1.2.752.29.4.19"
UNIT = {"identifier": {"system": HSA, "value": "SE2321000999-U200"},
        "display": "Vårdcentralen Exempelby"}
PATIENT = "Patient/example"  # the examples' patient (Skatteverket test personnummer)

APPOINTMENT = {
    "resourceType": "Appointment", "id": "bok1", "status": "booked",
    "created": "2026-11-20", "start": "2026-12-10T13:00:00+01:00",
    "end": "2026-12-10T13:30:00+01:00", "description": "Återbesök",
    "appointmentType": {"text": "Besök"}, "serviceType": [{"text": "Läkare"}],
    "participant": [{"actor": {"reference": PATIENT}, "status": "accepted"},
                    {"actor": {"reference": "Practitioner/p1", "display": "Per Doktor"},
                     "status": "accepted"},
                    {"actor": {"type": "Location", **UNIT}, "status": "accepted"}]}
ANOTHER_PERSONS_APPOINTMENT = {
    **APPOINTMENT, "id": "bok2",
    "participant": [{"actor": {"reference": "Patient/someone-else"}, "status": "accepted"},
                    {"actor": {"type": "Location", **UNIT}, "status": "accepted"}]}
CARE_TEAM = {
    "resourceType": "CareTeam", "id": "fvk1", "status": "active",
    "subject": {"reference": PATIENT}, "name": "Team Norr",
    "period": {"start": "2026-01-01"},
    "contained": [{"resourceType": "PractitionerRole", "id": "r",
                   "practitioner": {"display": "Siv Mattsson"},
                   "telecom": [{"system": "phone", "value": "010-123 40 00"}]}],
    "participant": [{"role": [{"coding": [{"system": "urn:samsvar:fhir:fixed-contact-role",
                                           "code": "fast_vardkontakt"}],
                               "text": "Fast vårdkontakt"}],
                     "member": {"reference": "#r"}, "onBehalfOf": UNIT}],
    "note": [{"text": "Ring mig"}]}
SELF_CARE = {
    "resourceType": "CarePlan", "id": "egv1", "status": "active", "intent": "plan",
    "category": [{"coding": [{"system": "urn:samsvar:fhir:information-type",
                              "code": "self_care"}]}],
    "subject": {"reference": PATIENT}, "title": "Blodtrycksmätning",
    "description": "Morgon och kväll", "created": "2026-10-29T15:00:00+01:00",
    "author": {"display": "Per Doktor", **UNIT},
    "activity": [{"detail": {"status": "in-progress",
                             "performer": [{"display": "Personen själv"}]}}]}


@pytest.fixture
async def fhir() -> AsyncIterator[FhirServer]:
    server = FhirServer([*examples(), APPOINTMENT, ANOTHER_PERSONS_APPOINTMENT, CARE_TEAM,
                         SELF_CARE])
    server.ignore_patient = True  # the backend itself checks whose resource it is
    async with TestServer(server.app(), host="127.0.0.1") as ts:
        server.base_url = str(ts.make_url("/fhir"))
        yield server


async def test_the_own_view_types_from_fhir(fhir: FhirServer, tmp_path: Path) -> None:
    result: Any = await fetch(fhir, tmp_path,
                              types=frozenset({"bookings", "fixed_contacts", "self_care",
                                               "care_plans"}))
    by_id = {r.id: r for r in result.records}
    visit = by_id["Appointment/bok1"]
    assert isinstance(visit, Booking)
    assert visit.unit.id == "SE2321000999-U200" and visit.purpose == "Återbesök"
    assert visit.performer is not None and visit.performer.name == "Per Doktor"
    assert (visit.time_type, visit.care_type, visit.status) == ("Besök", "Läkare", "booked")
    assert "Appointment/bok2" not in by_id  # another person's
    contact = by_id["CareTeam/fvk1"]
    assert isinstance(contact, FixedContact)
    assert (contact.role, contact.person.name, contact.care_team) == (
        "fast_vardkontakt", "Siv Mattsson", "Team Norr")
    assert contact.contact[0].value == "010-123 40 00" and contact.note == "Ring mig"
    assert contact.source.unit.id == "SE2321000999-U200"
    care = by_id["CarePlan/egv1"]
    assert isinstance(care, SelfCare)
    assert (care.activity, care.instructions, care.performed_by) == (
        "Blodtrycksmätning", "Morgon och kväll", "Personen själv")
    # the self-care plan is not also a care plan; the example's care plan still is
    assert [r.id for r in result.records if isinstance(r, CarePlan)] == ["CarePlan/example"]

