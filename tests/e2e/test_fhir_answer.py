"""``Accept: application/fhir+json``: the same answer as a valid FHIR R4 searchset Bundle."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from broker.fhir import PERSONNUMMER_SYSTEM
from tests.e2e.conftest import PERSON, Federation, ProducerSpec, record

FHIR = "application/fhir+json"


async def test_the_answer_as_a_fhir_bundle(federation_factory: Any) -> None:
    fed: Federation = await federation_factory([
        ProducerSpec("P-REGION", records={PERSON: [
            record("P-REGION", 1, when="2026-11-01T10:00:00+01:00", text="Waran"),
            record("P-REGION", 2, when="2026-11-02T10:00:00+01:00", type_="alerts"),
            record("P-REGION", 3, when="2026-11-03T10:00:00+01:00",
                   type_="care_documentation", text="Mår bättre.")]}),
        ProducerSpec("P-KOMMUN"),
    ])
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)
    types = ["medication", "alerts", "care_documentation"]
    status, headers, bundle = await fed.post(fed.token(types=types), accept=FHIR)
    assert status == 200, bundle
    assert headers["Content-Type"].startswith(FHIR)
    assert headers["Cache-Control"] == "no-store"
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert bundle["type"] == "searchset" and bundle["total"] == 3
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    assert [r["resourceType"] for r in matches] == [
        "DocumentReference", "AllergyIntolerance", "MedicationRequest"]  # newest first
    assert matches[2]["medicationCodeableConcept"]["text"] == "Waran"
    assert matches[2]["subject"]["identifier"] == {"system": PERSONNUMMER_SYSTEM,
                                                   "value": PERSON}
    assert all(r["meta"]["source"] == "urn:samsvar:producer:P-REGION" for r in matches)
    outcomes = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    per_source = {o["issue"][0]["details"]["coding"][0]["code"] for o in outcomes[1:]}
    assert per_source == {"ok", "no_data"}

    # The same question as JSON: the same records, the same sources.
    _, _, answer = await fed.post(fed.token(types=types))
    assert [r["id"] for r in answer["records"]] == [
        i["value"] for r in matches for i in r["identifier"]]
    assert len(outcomes) == len(answer["sources"]) + 1

    # Refusals stay problem details whatever was asked for.
    status, headers, _ = await fed.post(fed.token(relation=False), accept=FHIR)
    assert status == 403 and headers["Content-Type"].startswith("application/problem+json")
