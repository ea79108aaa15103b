"""The FHIR backend against HL7's own examples: nothing clinically relevant vanishes silently.

The resources are HL7's published R4 examples and the IPS example bundle (see
``fhir_examples/hl7/README.md``), served by the test FHIR server of
``test_backend_fhir.py``, which searches dates the way R4 defines its search parameters.
HL7's examples carry no HSA-ids, so the backend gives every record ``[backend] unit``.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from broker.fhir import record_resource
from producer_adapter.backends import FhirBackend, check_backend_table, open_backend
from producer_adapter.backends.base import BackendResult
from producer_adapter.errors import AdapterConfigError, BackendError
from schemas.messages import Period
from schemas.records import (
    Alert,
    CareContact,
    Code,
    Diagnosis,
    FunctionalStatus,
    Medication,
    UnitRef,
)
from tests.producer_adapter.test_backend_fhir import ALL, ORG, PRODUCER, TOKEN, FhirServer

HL7 = Path(__file__).parent / "fhir_examples" / "hl7"
# FHIR Patient id → the Skatteverket test personnummer the fixtures gave it
PEOPLE = {"example": "197501079292", "f201": "195201161857", "pat1": "197001239297",
          "mom": "196601062620", "ips": "198501012382"}
UNIT = {"id": "SE2321000999-U100", "name": "Vårdcentralen Exempel"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SNOMED = "http://snomed.info/sct"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def hl7(name: str) -> dict[str, Any]:
    return json.loads((HL7 / f"{name}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def hl7_resources() -> list[dict[str, Any]]:
    return [json.loads(f.read_text(encoding="utf-8")) for f in sorted(HL7.glob("*.json"))]


@pytest.fixture
async def server() -> AsyncIterator[FhirServer]:
    fhir = FhirServer(hl7_resources())
    async with TestServer(fhir.app(), host="127.0.0.1") as ts:
        fhir.base_url = str(ts.make_url("/fhir"))
        yield fhir


def table(fhir: FhirServer, **overrides: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"kind": "fhir", "base_url": fhir.base_url, "organisation": ORG,
                         "token_file": "fhir-token", "unit": UNIT, "page_size": 3,
                         "scope": {"default": "hsl"}}
    t.update(overrides)
    return {k: v for k, v in t.items() if v is not None}


async def backend_for(fhir: FhirServer, tmp_path: Path, **overrides: Any) -> FhirBackend:
    (tmp_path / "fhir-token").write_text(TOKEN, encoding="utf-8")
    backend = await open_backend(table(fhir, **overrides), base=tmp_path, producer_id=PRODUCER)
    assert isinstance(backend, FhirBackend)
    return backend


async def fetch(fhir: FhirServer, tmp_path: Path, person: str,
                types: frozenset[str] = ALL, period: Period | None = None,
                **overrides: Any) -> BackendResult:
    backend = await backend_for(fhir, tmp_path, **overrides)
    try:
        return await backend.fetch(PEOPLE[person], types, period)
    finally:
        await backend.aclose()


def unreadable(result: BackendResult) -> list[tuple[str, str, str]]:
    return sorted((u.type, u.resource, u.reason) for u in result.unreadable)


# -- 1. a period drops nothing the same search without one returns -------------------------

@pytest.mark.parametrize(
    "person, types, changed, record_id, period",
    [
        # the time is the onset: Condition has no recordedDate (R4 condition-example)
        ("example", {"diagnoses"}, None, "Condition/example",
         (dt.date(2012, 5, 1), dt.date(2012, 5, 31))),
        # an allergy known only by its onset (the IPS penicillin allergy)
        ("ips", {"alerts"}, None, "AllergyIntolerance/72884cad-ebe6-4f43-a51a-2f978275f132",
         (dt.date(2010, 1, 1), dt.date(2010, 12, 31))),
        # an Observation with only issued (R4 observation-example-f202, whose status
        # entered-in-error is made final here)
        ("f201", {"functional_status"}, ("Observation", "f202", {"status": "final"}),
         "Observation/f202", (dt.date(2013, 4, 1), dt.date(2013, 4, 30))),
        # a CarePlan created before its period (R4 careplan-example-f203 given a created)
        ("f201", {"care_plans"}, ("CarePlan", "f203", {"created": "2013-04-01"}),
         "CarePlan/f203", (dt.date(2013, 4, 1), dt.date(2013, 4, 10))),
    ],
)
async def test_a_period_keeps_what_the_search_without_one_returns(
    server: FhirServer, tmp_path: Path, person: str, types: set[str],
    changed: tuple[str, str, dict[str, Any]] | None, record_id: str,
    period: tuple[dt.date, dt.date],
) -> None:
    if changed is not None:
        kind, rid, fields = changed
        [resource] = [r for r in server.resources if (r["resourceType"], r["id"]) == (kind, rid)]
        resource.update(fields)
    everything = await fetch(server, tmp_path, person, frozenset(types))
    within = await fetch(server, tmp_path, person, frozenset(types),
                         Period(from_=period[0], to=period[1]))
    expected = {r.id for r in everything.records if period[0] <= r.time.date() <= period[1]}
    assert record_id in expected
    assert {r.id for r in within.records} == expected


async def test_the_server_still_filters_where_its_date_is_the_records_time(
    server: FhirServer, tmp_path: Path,
) -> None:
    period = Period(from_=dt.date(2015, 1, 1), to=dt.date(2015, 12, 31))
    result = await fetch(server, tmp_path, "example", frozenset({"care_contacts", "diagnoses"}),
                         period)
    assert [r.id for r in result.records] == ["Encounter/home"]
    [encounters] = server.searched("Encounter")
    assert encounters["date"] == ["ge2015-01-01", "le2015-12-31"]
    assert "recorded-date" not in server.searched("Condition")[0]  # checked here instead


# -- 2. every example is a record, or counted as unreadable, or no record at all ------------

EXPECTED: dict[str, tuple[set[str], list[tuple[str, str, str]]]] = {
    "example": ({
        "Condition/example", "Condition/stroke", "AllergyIntolerance/example",
        "AllergyIntolerance/fishallergy", "AllergyIntolerance/medication", "Flag/example",
        "Encounter/emerg", "Encounter/home", "CarePlan/example", "Observation/alcohol-type",
        "Observation/blood-pressure", "Observation/bmi", "Observation/heart-rate",
    }, [
        ("alerts", "Flag", "no-time"),                 # Flag/example-encounter: no period
        ("care_contacts", "Encounter", "no-time"),     # Encounter/example: no period
        ("diagnoses", "Condition", "no-time"),         # Condition/example2: onset as text
    ]),
    "f201": ({
        "Condition/f201", "Condition/f203", "Condition/f204", "Condition/f205",
        "Encounter/f203", "CarePlan/f203",
    }, [
        ("care_contacts", "Encounter", "no-time"),     # Encounter/f201 and f202
        ("care_contacts", "Encounter", "no-time"),
        ("care_plans", "CarePlan", "no-time"),         # CarePlan/f202
    ]),
    "pat1": ({"MedicationRequest/medrx002", "MedicationStatement/example001"}, []),
    "mom": (set(), []),                                # only "no known allergy"
    "ips": ({
        "Condition/c4597aa2-688a-401b-a658-70acc6de28c6",
        "Condition/c64139e7-f02d-409c-bf34-75e8bf23bc80",
        "MedicationStatement/47524493-846a-4a26-bae2-4ab03e60f02e",
        "MedicationStatement/c220e36c-eb67-4fc4-9ba1-2fabc52acec6",
        "AllergyIntolerance/72884cad-ebe6-4f43-a51a-2f978275f132",
        "Observation/26bee0a9-5997-4557-ab9d-c6adbb05b572",
        "Observation/6e39ccf3-f997-4a2b-8f28-b4b71c778c70",
        "Observation/a6a5a1d5-c896-4c7e-b922-888fcc7e6ae4",
        "Observation/aa11a2be-3e36-4be7-b58a-6fc3dace2741",
        "Observation/b4916505-a06b-460c-9be8-011609282457",
        "Observation/cc354e00-a419-47ea-8b6c-1768b2a01646",
    }, []),
}


@pytest.mark.parametrize("person", sorted(PEOPLE))
async def test_every_example_is_a_record_or_counted(server: FhirServer, tmp_path: Path,
                                                    person: str) -> None:
    result = await fetch(server, tmp_path, person)
    records, counted = EXPECTED[person]
    assert {r.id for r in result.records} == records
    assert unreadable(result) == counted
    # the taboo-labelled Condition/f202 is withheld, never counted as unreadable
    assert result.withheld == (1 if person == "f201" else 0)
    assert result.truncated is False


# -- 3. uncertainty and negation survive ---------------------------------------------------

async def test_verification_and_clinical_status_keep_their_meaning(server: FhirServer,
                                                                    tmp_path: Path) -> None:
    f201 = {r.id: r for r in (await fetch(server, tmp_path, "f201")).records}
    renal, infection = f201["Condition/f204"], f201["Condition/f205"]
    assert isinstance(renal, Diagnosis) and isinstance(infection, Diagnosis)
    assert (renal.verification, renal.clinical_status, renal.status) == (
        "differential", "inactive", "resolved")
    assert (infection.verification, infection.clinical_status) == ("differential", "active")
    example = {r.id: r for r in (await fetch(server, tmp_path, "example")).records}
    penicillin = example["AllergyIntolerance/medication"]
    assert isinstance(penicillin, Alert)
    assert (penicillin.verification, penicillin.clinical_status) == ("unconfirmed", "active")

    # and in the FHIR answer
    condition = record_resource(renal, PEOPLE["f201"])
    assert condition["verificationStatus"]["coding"][0]["code"] == "differential"
    assert condition["clinicalStatus"]["coding"][0]["code"] == "inactive"
    allergy = record_resource(penicillin, PEOPLE["example"])
    assert allergy["verificationStatus"]["coding"][0]["code"] == "unconfirmed"


async def test_no_known_allergy_is_no_alert(server: FhirServer, tmp_path: Path) -> None:
    # R4's nka (716186003) and nkla (716184000), the IPS "no known food allergy" (429625007)
    for person in ("mom", "example", "ips"):
        result = await fetch(server, tmp_path, person, frozenset({"alerts"}))
        assert not any("no known" in r.description.lower() for r in result.records
                       if isinstance(r, Alert))
        assert "AllergyIntolerance/nka" not in {r.id for r in result.records}
        assert not [u for u in result.unreadable if u.resource == "AllergyIntolerance"]
    mom = await fetch(server, tmp_path, "mom", frozenset({"alerts"}))
    assert mom.records == [] and mom.unreadable == []


async def test_a_refuted_allergy_is_kept_as_refuted(server: FhirServer,
                                                    tmp_path: Path) -> None:
    [fish] = [r for r in server.resources if r["id"] == "fishallergy"]
    fish["verificationStatus"]["coding"][0]["code"] = "refuted"
    records = {r.id: r for r in (await fetch(server, tmp_path, "example",
                                             frozenset({"alerts"}))).records}
    refuted = records["AllergyIntolerance/fishallergy"]
    assert isinstance(refuted, Alert) and refuted.verification == "refuted"
    assert record_resource(refuted, PEOPLE["example"])["verificationStatus"]["coding"][0][
        "code"] == "refuted"


# -- 4. security labels ----------------------------------------------------------------------

async def test_an_unconfigured_label_is_withheld(server: FhirServer, tmp_path: Path) -> None:
    result = await fetch(server, tmp_path, "f201", frozenset({"diagnoses"}))
    assert "Condition/f202" not in {r.id for r in result.records}  # meta.security TBOO
    assert result.withheld == 1 and result.unreadable == []


async def test_a_label_configured_pass_is_kept_on_the_record(server: FhirServer,
                                                             tmp_path: Path) -> None:
    result = await fetch(server, tmp_path, "f201", frozenset({"diagnoses"}),
                         security_labels={f"{ACT_CODE}|TBOO": "pass"})
    malignancy = {r.id: r for r in result.records}["Condition/f202"]
    assert malignancy.security == [Code(system=ACT_CODE, code="TBOO", display="taboo")]
    assert result.withheld == 0
    resource = record_resource(malignancy, PEOPLE["f201"])
    assert {"system": ACT_CODE, "code": "TBOO", "display": "taboo"} in resource["meta"][
        "security"]


@pytest.mark.parametrize(
    "code, labels, kept",
    [
        ("R", {}, False),                              # restricted: withheld by default
        ("V", {}, False),                              # very restricted
        ("R", {"R": "pass"}, True),                    # a bare code names any system
        ("V", {f"{CONFIDENTIALITY}|V": "withhold"}, False),
        ("N", {}, True),                               # normal: nothing to restrict
    ],
)
async def test_confidentiality_labels(server: FhirServer, tmp_path: Path, code: str,
                                      labels: dict[str, str], kept: bool) -> None:
    [fever] = [r for r in server.resources if (r["resourceType"], r["id"]) == ("Condition",
                                                                                 "f201")]
    fever["meta"] = {"security": [{"system": CONFIDENTIALITY, "code": code}]}
    result = await fetch(server, tmp_path, "f201", frozenset({"diagnoses"}),
                         security_labels={f"{ACT_CODE}|TBOO": "pass", **labels})
    ids = {r.id for r in result.records}
    assert ("Condition/f201" in ids) is kept
    assert result.withheld == (0 if kept else 1)


def test_a_bad_label_rule_is_named() -> None:
    with pytest.raises(AdapterConfigError, match=r"security_labels\] must map"):
        check_backend_table({"kind": "fhir", "base_url": "https://fhir.example/r4",
                             "organisation": ORG, "scope": {"default": "hsl"},
                             "security_labels": {"R": "show"}}, where="adapter.toml")


# -- 5. references: authors and medication -----------------------------------------------

async def test_authors_and_medication_are_read(server: FhirServer, tmp_path: Path) -> None:
    result = await fetch(server, tmp_path, "pat1", frozenset({"medication"}))
    records = {r.id: r for r in result.records}
    chlorthalidone = records["MedicationRequest/medrx002"]
    assert isinstance(chlorthalidone, Medication)
    # medicationReference Medication/med0316 (its own display: "prescribed medication")
    assert chlorthalidone.drug == "Chlorthalidone 50mg tablet (product)"
    assert [(c.system, c.code) for c in chlorthalidone.codes] == [(SNOMED, "317935006")]
    # requester Practitioner/f007, read from the server (the reference's display differs)
    assert chlorthalidone.author is not None and chlorthalidone.author.name == "Simone Heps"
    reads = [path for path, _ in server.requests if path.count("/") == 3]
    # each read once (Encounter/f001, not among the examples, is where a unit is looked for)
    assert sorted(reads) == ["/fhir/Encounter/f001", "/fhir/Medication/med0316",
                             "/fhir/Practitioner/f007"]

    f201 = {r.id: r for r in (await fetch(server, tmp_path, "f201")).records}
    fever = f201["Condition/f201"]
    assert fever.author is not None
    assert (fever.author.name, fever.author.role) == ("Dokter Bronsig", "Pulmonologist")


async def test_a_practitioner_role_names_person_and_role(server: FhirServer,
                                                         tmp_path: Path) -> None:
    [fish] = [r for r in server.resources if r["id"] == "fishallergy"]
    fish["recorder"] = {"reference": "PractitionerRole/example"}
    records = {r.id: r for r in (await fetch(server, tmp_path, "example",
                                             frozenset({"alerts"}))).records}
    author = records["AllergyIntolerance/fishallergy"].author
    assert author is not None and (author.name, author.role) == ("Adam Careful", "RP")


# -- 6. more resources -------------------------------------------------------------------

async def test_an_ips_medication_summary_is_read(server: FhirServer, tmp_path: Path) -> None:
    result = await fetch(server, tmp_path, "ips", frozenset({"medication"}))
    drugs = {r.drug: r for r in result.records if isinstance(r, Medication)}
    assert set(drugs) == {"Product containing anastrozole (medicinal product)",
                          "Black Cohosh Extract herbal supplement"}
    anastrozole = drugs["Product containing anastrozole (medicinal product)"]
    assert (SNOMED, "108774000") in {(c.system, c.code) for c in anastrozole.codes}
    assert anastrozole.start == dt.date(2015, 3, 1) and anastrozole.dose == "1 tablet"
    assert server.searched("MedicationStatement") and server.searched("MedicationRequest")


async def test_flags_and_vital_signs(server: FhirServer, tmp_path: Path) -> None:
    records = {r.id: r for r in (await fetch(server, tmp_path, "example")).records}
    dog = records["Flag/example"]
    assert isinstance(dog, Alert) and dog.category == "risk"
    assert dog.description.startswith("Patient has a big dog")
    assert dog.valid_until == dt.date(2016, 12, 1)
    pressure = records["Observation/blood-pressure"]
    assert isinstance(pressure, FunctionalStatus)
    assert pressure.assessment == ("Systolic blood pressure: 107 mmHg; "
                                   "Diastolic blood pressure: 60 mmHg")
    assert isinstance(records["Observation/alcohol-type"], FunctionalStatus)  # social-history


async def test_encounter_class_and_type_codes_reach_the_fhir_answer(
    server: FhirServer, tmp_path: Path,
) -> None:
    [stay] = (await fetch(server, tmp_path, "f201", frozenset({"care_contacts"}))).records
    assert isinstance(stay, CareContact)
    encounter = record_resource(stay, PEOPLE["f201"])
    assert encounter["class"] == {"system": ACT_CODE, "code": "IMP",
                                  "display": "inpatient encounter"}
    assert encounter["type"][0]["coding"] == [
        {"system": SNOMED, "code": "183807002", "display": "Inpatient stay for nine days"}]


# -- 7. units and truncation ---------------------------------------------------------------

UNITS = [UnitRef(id="SE2321000999-U100", name="Vårdcentralen"),
         UnitRef(id="SE2321000999-U200", name="Akutmottagningen")]


async def test_a_server_naming_no_units_says_why(server: FhirServer, tmp_path: Path) -> None:
    backend = await backend_for(server, tmp_path, unit=None)
    try:
        [reason] = await backend.readiness(UNITS)
        assert "the producer has 2 units" in reason
        assert "no Organization with a unit identifier" in reason
        with pytest.raises(BackendError, match=r"^FHIR server: no resource names a unit$"):
            await backend.fetch(PEOPLE["example"], ALL, None)
    finally:
        await backend.aclose()
    [probe] = server.searched("Organization")
    assert probe["identifier"] == ["urn:oid:1.2.752.29.4.19|"]


async def test_a_default_unit_for_several_units_is_a_warning(server: FhirServer,
                                                             tmp_path: Path) -> None:
    backend = await backend_for(server, tmp_path)
    try:
        [reason] = await backend.readiness(UNITS)
        assert f"every record is given [backend] unit {UNIT['id']}" in reason
        assert await backend.readiness(UNITS[:1]) == []
    finally:
        await backend.aclose()
    server.resources.append({"resourceType": "Organization", "id": "hsa", "identifier": [
        {"system": "urn:oid:1.2.752.29.4.19", "value": "SE2321000999-U200"}]})
    backend = await backend_for(server, tmp_path, unit=None)
    try:
        assert await backend.readiness(UNITS) == []
    finally:
        await backend.aclose()


async def test_truncated_never_comes_with_no_records(server: FhirServer,
                                                     tmp_path: Path) -> None:
    # f201's first Encounter has no period: the limit counts records, not resources
    result = await fetch(server, tmp_path, "f201", frozenset({"care_contacts"}),
                         max_records_per_type=1, page_size=1)
    assert [r.id for r in result.records] == ["Encounter/f203"]
    assert result.truncated is False
    result = await fetch(server, tmp_path, "f201", frozenset({"diagnoses"}),
                         max_records_per_type=2, page_size=1)
    assert len(result.records) == 2 and result.truncated is True


def test_the_patients_carry_skatteverket_test_numbers(reference: Path) -> None:
    # the README's promise: each Patient's identifiers became one Skatteverket test number
    patients = {r["id"]: r for r in hl7_resources() if r["resourceType"] == "Patient"}
    numbers = {p["identifier"][0]["value"] for p in patients.values()}
    assert numbers == set(PEOPLE.values())
    assert all(len(p["identifier"]) == 1 for p in patients.values())
    listed = reference / "testpersonnummer" / "skatteverket-testpersonnummer-api-2024-07.txt"
    assert numbers <= set(listed.read_text(encoding="utf-8").split())


def test_the_documented_configuration_is_accepted() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "producers.md"
    text = docs.read_text(encoding="utf-8")
    block = text[text.index("## The FHIR backend"):].split("```toml\n", 1)[1].split("```", 1)[0]
    backend = tomllib.loads(block)["backend"]
    check_backend_table(backend, where="docs/producers.md")
    assert backend["security_labels"]["R"] == "withhold"


async def test_a_labelled_resource_of_a_marking_never_disclosed_is_not_withheld(
    server: FhirServer, tmp_path: Path,
) -> None:
    # withholding would say "blocked information exists" about IFO documentation
    result = await fetch(server, tmp_path, "f201", frozenset({"diagnoses"}),
                         scope={"default": "sol_other"})
    assert result.withheld == 0 and result.unreadable == []
    assert {r.scope for r in result.records} == {"sol_other"}  # the adapter drops them
