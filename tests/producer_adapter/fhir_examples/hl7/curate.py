"""Rebuild this folder from HL7's npm packages (run by hand; the tests only read the JSON).

    npm pack hl7.fhir.r4.examples@4.0.1 hl7.fhir.uv.ips@2.0.0
    python curate.py hl7.fhir.r4.examples-4.0.1.tgz hl7.fhir.uv.ips-2.0.0.tgz

Each resource is copied as published except: narratives (``text``) are dropped, each
Patient's identifiers are replaced by one Skatteverket test personnummer, and the IPS
bundle's ``urn:uuid:`` references become ``Type/id`` (as a server does on a transaction).
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PNR = "http://electronichealth.se/identifier/personnummer"
PATIENTS = {  # FHIR id → personnummer from ../shared/reference/testpersonnummer
    "example": "197501079292",
    "f201": "195201161857",
    "pat1": "197001239297",
    "mom": "196601062620",
    "2b90dd2b-2dab-4c75-9bb9-a355e07401e8": "198501012382",
}
R4 = [
    "Patient-example", "Patient-f201", "Patient-pat1", "Patient-mom",
    "Practitioner-example", "Practitioner-f201", "Practitioner-f007", "PractitionerRole-example",
    "Organization-f201",
    "Condition-example", "Condition-example2", "Condition-stroke", "Condition-f201",
    "Condition-f202", "Condition-f203", "Condition-f204", "Condition-f205",
    "AllergyIntolerance-example", "AllergyIntolerance-medication",
    "AllergyIntolerance-fishallergy", "AllergyIntolerance-nkla", "AllergyIntolerance-nka",
    "Flag-example", "Flag-example-encounter",
    "Observation-f202", "Observation-blood-pressure", "Observation-heart-rate",
    "Observation-bmi", "Observation-alcohol-type",
    "Encounter-example", "Encounter-emerg", "Encounter-home", "Encounter-f201",
    "Encounter-f202", "Encounter-f203",
    "CarePlan-example", "CarePlan-f201", "CarePlan-f202", "CarePlan-f203",
    "MedicationRequest-medrx002", "Medication-med0316", "MedicationStatement-example001",
]
IPS_BUNDLE = "package/example/Bundle-IPS-examples-Bundle-01.json"


def _rewrite(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, ids) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = ids[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, ids) for v in value]
    return value


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    resource.pop("text", None)
    if resource["resourceType"] == "Patient":
        resource["identifier"] = [{"system": PNR, "value": PATIENTS[resource["id"]]}]
    return resource


def main(r4: str, ips: str) -> None:
    for old in HERE.glob("*.json"):
        old.unlink()
    with tarfile.open(r4) as tar:
        for name in R4:
            f = tar.extractfile(f"package/{name}.json")
            assert f is not None
            resource = _clean(json.load(f))
            (HERE / f"{name}.json").write_text(json.dumps(resource, indent=1, ensure_ascii=False)
                                               + "\n", encoding="utf-8")
    with tarfile.open(ips) as tar:
        f = tar.extractfile(IPS_BUNDLE)
        assert f is not None
        bundle = json.load(f)
    entries = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Composition"]
    ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
           for e in entries}
    for e in entries:
        resource = _clean(_rewrite(e["resource"], ids))
        name = f"ips-{resource['resourceType']}-{resource['id'][:8]}.json"
        (HERE / name).write_text(json.dumps(resource, indent=1, ensure_ascii=False) + "\n",
                                 encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
