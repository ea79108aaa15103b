"""The answer as a FHIR R4 Bundle: every Bundle the demo data can produce is valid FHIR.

Validated with the ``fhir.resources`` R4B models (the R4 models of ``fhir.resources`` 8;
the resources used here are the same in R4 and R4B), which refuse unknown elements,
empty strings, missing required elements and malformed dates.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from broker.fanout import Outcome
from broker.fhir import (
    EXT_RECORD_SOURCE,
    FHIR_ENCODER,
    PERSONNUMMER_SYSTEM,
    SAMORDNINGSNUMMER_SYSTEM,
    answer_bundle,
    patient_identifier,
    record_resource,
)
from broker.merge import merge
from samsvar.demo_own import own_records
from schemas.messages import Answer, Reply, SourceResult, Unblock
from schemas.records import (
    INFORMATION_TYPES,
    Alert,
    CareContact,
    LabResult,
    OrgRef,
    Record,
    RecordSource,
    UnitRef,
    record_type,
)
from schemas.registry import Participant, Producer

DEMO_DATA = Path(__file__).parents[2] / "samsvar" / "demo_data"
EXPECTED = {
    "care_documentation": "DocumentReference",
    "diagnoses": "Condition",
    "medication": "MedicationRequest",
    "lab_results": "Observation",
    "care_contacts": "Encounter",
    "care_plans": "CarePlan",
    "social_care_interventions": "ServiceRequest",
    "functional_status": "Observation",
    "bookings": "Appointment",
    "fixed_contacts": "CareTeam",
    "self_care": "CarePlan",
}
_records: msgspec.json.Decoder[list[Record]] = msgspec.json.Decoder(list[Record])


def _producer(pid: str) -> Producer:
    org = Participant(id=f"ORG-{pid}", name=f"Organisation {pid}", kind="vårdgivare",
                      roles=frozenset({"producer"}), keys={})
    return Producer(id=pid, name=pid, organisation=org, types=frozenset(INFORMATION_TYPES),
                    units=(), keys={})


def demo_records() -> dict[str, dict[str, list[Record]]]:
    """Person → producer → that producer's demo records for the person."""
    found: dict[str, dict[str, list[Record]]] = defaultdict(dict)
    for path in sorted(DEMO_DATA.glob("*/*.json")):
        found[path.stem][path.parent.name] = _records.decode(path.read_bytes())
    # and the own view's records, dated relative to today as the demo writes them
    for pid, persons in own_records(dt.date.today()).items():
        for person, raw in persons.items():
            found[person][pid] = [*found[person].get(pid, []),
                                  *msgspec.convert(raw, list[Record])]
    return dict(found)


def demo_answer(person: str, *, unblock: Unblock | None = None, blocked: bool = False,
                offline: str | None = None) -> Answer:
    """The person's answer with every type asked, merged by the broker's own merge."""
    outcomes = []
    for pid, records in demo_records()[person].items():
        if blocked:
            records = [msgspec.structs.replace(r, blocked=True) for r in records]
        reply = Reply(query_id="q", producer=pid, status="ok" if records else "no_data",
                      records=records, blocked=blocked)
        outcomes.append(Outcome(_producer(pid), reply.status, reply, latency_ms=12))
    if offline:
        outcomes.append(Outcome(_producer(offline), "unavailable", latency_ms=0))
    return merge(query_id=f"q-{person}", subject=person, outcomes=outcomes,
                 unblock=unblock, types=frozenset(INFORMATION_TYPES)).answer


def validate(bundle: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON as the broker sends it, then validate every resource."""
    sent: dict[str, Any] = json.loads(FHIR_ENCODER.encode(bundle))
    Bundle.model_validate(sent)
    for entry in sent["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return sent


def test_the_demo_data_covers_every_information_type() -> None:
    kinds = {record_type(r) for person in demo_records().values()
             for records in person.values() for r in records}
    assert kinds == set(INFORMATION_TYPES)


@pytest.mark.parametrize("person", sorted(demo_records()))
def test_every_demo_bundle_is_valid_fhir_r4(person: str) -> None:
    answer = demo_answer(person, offline="P-OFFLINE")
    assert answer.records
    bundle = validate(answer_bundle(answer))
    assert bundle["type"] == "searchset"
    assert bundle["total"] == len(answer.records)
    matches = [e for e in bundle["entry"] if e["search"]["mode"] == "match"]
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(matches) == len(answer.records)
    assert len(outcomes) == len(answer.sources) + 1  # one per source, one for the answer
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])
    for record, entry in zip(answer.records, matches, strict=True):  # newest first, kept
        resource = entry["resource"]
        kind = record_type(record)
        if isinstance(record, Alert):
            assert resource["resourceType"] == (
                "AllergyIntolerance" if record.category == "allergy" else "Flag")
        else:
            assert resource["resourceType"] == EXPECTED[kind]
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        assert {"system": f"urn:samsvar:record:{record.source.producer}",
                "value": record.id} in resource["identifier"]
        assert resource["meta"]["source"] == f"urn:samsvar:producer:{record.source.producer}"
        assert {"system": "urn:samsvar:fhir:information-type", "code": kind} in [
            {k: t[k] for k in ("system", "code")} for t in resource["meta"]["tag"]]
        source = next(x for x in resource["extension"] if x["url"] == EXT_RECORD_SOURCE)
        parts = {x["url"]: x for x in source["extension"]}
        assert parts["producer"]["valueIdentifier"]["value"] == record.source.producer
        assert parts["organisation"]["valueReference"]["identifier"]["value"] == \
            record.source.organisation.id
        assert "security" not in resource["meta"]
        subject = (resource.get("subject") or resource.get("patient")
                   or resource["participant"][0]["actor"])  # an Appointment's
        assert subject["identifier"] == patient_identifier(person)
    statuses = {}
    for entry in outcomes[1:]:
        issue = entry["resource"]["issue"][0]
        statuses[issue["details"]["coding"][0]["code"]] = issue["severity"]
    assert statuses == {"ok": "information", "unavailable": "warning"}
    answer_issues = outcomes[0]["resource"]["issue"]
    assert answer_issues[0]["code"] == "incomplete"


def test_the_sol_other_records_of_the_demo_never_reach_a_bundle() -> None:
    for person in demo_records():
        bundle = validate(answer_bundle(demo_answer(person)))
        tags = [t["code"] for e in bundle["entry"] for t in
                e["resource"].get("meta", {}).get("tag", [])]
        assert "sol_other" not in tags


def test_blocked_records_released_by_read_are_flagged_and_located() -> None:
    person = "193803039142"
    producers = list(demo_records()[person])
    answer = demo_answer(person, blocked=True,
                         unblock=Unblock(step="read", producers=producers))
    assert answer.blocked_information_exists and answer.records
    bundle = validate(answer_bundle(answer))
    for entry in bundle["entry"]:
        if entry["search"]["mode"] != "match":
            continue
        security = {(s["system"], s["code"]) for s in entry["resource"]["meta"]["security"]}
        assert security == {
            ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R"),
            ("urn:samsvar:fhir:security", "blocked")}
    issues = bundle["entry"][len(answer.records)]["resource"]["issue"]
    codes = [i["details"]["coding"][0]["code"] for i in issues]
    assert codes == ["complete", "blocked-information-exists", "blocked-at"]
    located = [x["valueIdentifier"]["value"] for x in issues[2]["extension"]]
    assert located == sorted(producers)


def test_a_source_holding_only_blocked_records_is_no_data_in_its_outcome() -> None:
    """The per-source outcome never says where blocked information is."""
    holder, empty = _producer("P-BLOCKED"), _producer("P-EMPTY")
    answer = merge(query_id="q", subject="193803039142", unblock=None,
                   types=frozenset(INFORMATION_TYPES), outcomes=[
        Outcome(holder, "no_data", Reply(query_id="q", producer="P-BLOCKED",
                                         status="no_data", blocked=True), latency_ms=7),
        Outcome(empty, "no_data", Reply(query_id="q", producer="P-EMPTY", status="no_data"),
                latency_ms=7),
    ]).answer
    bundle = validate(answer_bundle(answer))
    first, second = (e["resource"] for e in bundle["entry"][1:])

    def anonymous(outcome: dict[str, Any]) -> str:
        text = json.dumps({k: v for k, v in outcome.items() if k != "id"})
        return text.replace("P-BLOCKED", "P").replace("P-EMPTY", "P")

    assert anonymous(first) == anonymous(second)
    assert "suppressed" in json.dumps(bundle["entry"][0])  # only the answer's own outcome


def test_samordningsnummer_has_its_own_identifier_system() -> None:
    assert patient_identifier("193803039142")["system"] == PERSONNUMMER_SYSTEM
    # day of birth plus 60; born 1889, so no living person's number (Luhn-valid)
    assert patient_identifier("188901619802")["system"] == SAMORDNINGSNUMMER_SYSTEM


def test_lab_values_become_quantities_only_when_numeric() -> None:
    base = demo_records()["193803039142"]["SE2321000999-P001"]
    lab = next(r for r in base if isinstance(r, LabResult))
    decimal_comma = record_resource(msgspec.structs.replace(lab, value="4,10"), "193803039142")
    assert json.loads(FHIR_ENCODER.encode(decimal_comma))["valueQuantity"]["value"] == 4.10
    assert b'"value":4.10' in FHIR_ENCODER.encode(decimal_comma)  # precision kept
    text = record_resource(msgspec.structs.replace(lab, value="<5", unit="mg/L"), "193803039142")
    assert text["valueString"] == "<5 mg/L" and "valueQuantity" not in text


def test_odd_records_still_make_valid_resources() -> None:
    """Naive contact times are Swedish local time; no text anywhere still validates."""
    source = RecordSource(producer="P", organisation=OrgRef(id="O", name="Org"),
                          unit=UnitRef(id="U", name="Enhet"))
    contact = CareContact(id="weird id / with spaces", source=source, scope="hsl",
                          time=dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC),
                          contact_type="Samtal", start=dt.datetime(2026, 1, 1, 12, 0))
    resource = record_resource(contact, "193803039142")
    get_fhir_model_class("Encounter").model_validate(resource)
    assert resource["period"]["start"] == "2026-01-01T12:00:00+01:00"
    assert resource["class"]["code"] == "other" and resource["status"] == "unknown"
    alert = Alert(id="a", source=source, scope="hsl", category="other", description="",
                  time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    get_fhir_model_class("Flag").model_validate(record_resource(alert, "193803039142"))


def test_sbar_notes_are_kept_in_the_attachment() -> None:
    notes = [r for p in demo_records().values() for rs in p.values() for r in rs
             if record_type(r) == "care_documentation" and getattr(r, "sbar", None)]
    assert notes, "the demo has an SBAR note"
    resource = record_resource(notes[0], "193803039142")
    text = base64.b64decode(resource["content"][0]["attachment"]["data"]).decode()
    assert "Situation: " in text and "Rekommendation: " in text


def test_bundle_ids_are_stable_for_the_same_answer() -> None:
    answer = demo_answer("196403013417")
    assert answer_bundle(answer) == answer_bundle(answer)
    duplicate = Answer(query_id="not a fhir id!", subject=answer.subject, complete=True,
                       blocked_information_exists=False,
                       sources=[SourceResult(producer="P", organisation=OrgRef(id="O", name="O"),
                                             status="ok", records=2)],
                       records=[answer.records[0], answer.records[0]])
    bundle = validate(answer_bundle(duplicate))
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])
    assert bundle["identifier"]["value"] == "not a fhir id!"
