"""A RIV-TA producer stub over mutual TLS for tests, its records, and the backend's table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from producer_adapter.backends._rivta_xml import CONTRACTS
from samsvar.rivta_stub import Behaviour, RivtaStub, StubRecord, StubTls, write_tls

CONSUMER = "SE5565594230-SAMS"
CARE_GIVER = "SE2321000016-0001"
UNIT_VC = "SE2321000016-7P3B"  # a primary care unit
UNIT_MED = "SE2321000016-9MED"  # a hospital clinic
CARE_PROCESS = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
SUBJECT = "195201161857"  # from Skatteverket's test personnummer

# One contract version per type (the newest), and the older versions.
NEWEST = ["GetCareDocumentation-3.0", "GetDiagnosis-2.0", "GetMedicationHistory-2.1",
          "GetAlertInformation-2.0", "GetLaboratoryOrderOutcome-4.0", "GetCareContacts-3.0",
          "GetCarePlans-2.0", "GetFunctionalStatus-2.0", "GetSubjectOfCareSchedule-1.1",
          "GetCareManagers-1.0"]
OLDER = ["GetCareDocumentation-2.1", "GetLaboratoryOrderOutcome-3.1", "GetCareContacts-2.0"]


def _r(n: int, unit: str = UNIT_VC, *, time: str = "20240315101500", **kw: Any) -> StubRecord:
    data = kw.pop("data", {})
    names = {UNIT_VC: "Vårdcentralen Tolvmannen", UNIT_MED: "Medicinkliniken Exempelsjukhuset"}
    return StubRecord(id=f"doc-{n}", time=time, unit=unit, unit_name=names[unit],
                      care_giver=CARE_GIVER, author="Lena Läkare", role="Läkare", data=data,
                      **kw)


def person_records(subject: str = SUBJECT) -> dict[tuple[str, str], list[StubRecord]]:
    """Records of every type for ``subject``: two units, one nullified, one not approved."""
    return {
        ("care_documentation", subject): [
            _r(1, data={"title": "Besöksanteckning", "text": "Kontroll av blodtryck."},
               care_process=CARE_PROCESS),
            _r(2, UNIT_MED, time="20240220083000", approved_for_patient=False,
               data={"title": "Inskrivningsanteckning", "text": "Inlagd för hjärtsvikt."}),
            _r(3, time="20231201120000", data={"title": "Telefonkontakt", "text": "Ringt."}),
        ],
        ("diagnoses", subject): [
            _r(10, UNIT_MED, data={"code": "I50.9", "display": "Hjärtsvikt, ospecificerad",
                                   "primary": True}),
            _r(11, nullified=True, data={"code": "J45.9", "display": "Astma"}),
        ],
        ("medication", subject): [
            _r(20, data={"atc": "C03CA01", "drug": "Furosemid Accord 40 mg",
                         "dose": "1 tablett på morgonen", "short": "1+0+0",
                         "purpose": "Mot vätska i kroppen", "start": "20240101"}),
        ],
        ("alerts", subject): [
            _r(30, data={"atc": "J01CE02", "substance": "Fenoximetylpenicillin",
                         "severity": "Allvarlig"}),
        ],
        ("lab_results", subject): [
            _r(40, UNIT_MED, data={"analyses": [
                ("NPU03429", "P-Natrium", "141", "mmol/L", "137–145", False),
                ("NPU02319", "B-Hemoglobin", "98", "g/L", "117–153", True)]}),
        ],
        ("care_contacts", subject): [
            _r(50, data={"code": 1, "reason": "Blodtryckskontroll",
                         "start": "20240315100000", "end": "20240315103000"}),
            _r(51, data={"code": 1, "reason": "Inställt besök", "status": 4,
                         "start": "20240316100000"}),
        ],
        ("care_plans", subject): [
            _r(60, data={"plan_type": "SIP", "title": "SIP inför hemgång",
                         "text": "Behov: Hjälp med läkemedel\nMål: Bo kvar hemma\n"
                                 "Aktivitet: Läkemedelsgenomgång; Vårdcentralen; vecka 12\n"
                                 "Uppföljning: 2024-06-01",
                         "participants": [UNIT_VC, UNIT_MED]}),
        ],
        ("functional_status", subject): [
            _r(70, data={"padl": [("d510", "Tvätta sig", "Behöver viss hjälp")],
                         "comment": "Bedömd av arbetsterapeut"}),
        ],
        ("bookings", subject): [
            _r(80, data={"start": "20270110093000", "end": "20270110100000",
                         "purpose": "Återbesök", "time_type": "Besök",
                         "care_type": "Sjuksköterska"}),
        ],
        ("fixed_contacts", subject): [
            _r(90, data={"role_display": "Fast vårdkontakt", "start": "20240101",
                         "note": "Nås vardagar 8–10", "internal_note": "Intern anteckning",
                         "phone": "010-123 45 67"}),
        ],
    }


def table(stub: RivtaStub, tls: StubTls, keys: Sequence[str], *, logical_address: str,
          **extra: Any) -> dict[str, Any]:
    """A ``[backend]`` table of kind ``rivta`` for ``keys`` at ``stub``."""
    return {
        "kind": "rivta", "logical_address": logical_address, "consumer_hsa_id": CONSUMER,
        "organisation": {"id": CARE_GIVER, "name": "Region Tolvmannen"},
        "system": "Journal (RIV-TA)", "ca": str(tls.ca), "cert": str(tls.client_cert),
        "key": str(tls.client_key),
        "contracts": {CONTRACTS[k].info_type: {"contract": CONTRACTS[k].name,
                                               "version": CONTRACTS[k].version,
                                               "endpoint": stub.endpoint(k)} for k in keys},
        **extra,
    }


@asynccontextmanager
async def running_stub(
    tmp: Path, *, sources: Mapping[str, Behaviour],
    records: Mapping[tuple[str, str], Sequence[StubRecord]] | None = None,
    authorized: frozenset[str] | None = None,
    contracts: Sequence[str] = tuple(CONTRACTS),
) -> AsyncIterator[tuple[RivtaStub, StubTls]]:
    tls = write_tls(tmp / "rivta-tls", client_cn=CONSUMER)
    stub = RivtaStub(records=records if records is not None else person_records(),
                     sources=sources, ssl_context=tls.server_context(), contracts=contracts,
                     authorized=authorized)
    await stub.start()
    try:
        yield stub, tls
    finally:
        await stub.close()


Factory = Callable[..., Any]
