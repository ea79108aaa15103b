"""The demo's fourth producer: a region's RIV-TA producers, read through the ``rivta`` backend.

The records live in a :class:`~samsvar.rivta_stub.RivtaStub` (``demo_data/rivta.json``)
that the demo runs beside the broker, speaking SOAP over mutual TLS on a loopback port. Its
adapter is configured exactly as a region would point one at its RIV-TA producers: only the
``[backend]`` table differs from the other demo producers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Final

from producer_adapter.backends._rivta_xml import CONTRACTS

from .rivta_stub import RivtaStub, StubRecord, write_tls

__all__ = ["CONSUMER_HSA_ID", "LOGICAL_ADDRESS", "PRODUCER", "backend_toml", "start_stub"]

LOGICAL_ADDRESS: Final = "SE2321000999-RTP1"
"""The source system's HSA-id: the ``LogicalAddress`` of every call."""
CONSUMER_HSA_ID: Final = "SE2321000999-SAMS"
"""The adapter's consumer HSA-id (``x-rivta-original-serviceconsumer-hsaid``)."""

CONTRACT_OF_TYPE: Final = {
    "care_documentation": "GetCareDocumentation-3.0", "diagnoses": "GetDiagnosis-2.0",
    "medication": "GetMedicationHistory-2.1", "alerts": "GetAlertInformation-2.0",
    "lab_results": "GetLaboratoryOrderOutcome-4.0", "care_contacts": "GetCareContacts-3.0",
    "care_plans": "GetCarePlans-2.0", "bookings": "GetSubjectOfCareSchedule-1.1",
    "fixed_contacts": "GetCareManagers-1.0",
}

PRODUCER: Final[dict[str, Any]] = {
    "id": "SE2321000999-RV01", "name": "Region Exempel, journalsystem via RIV-TA",
    "organisation": "SE2321000999-RE01", "backend": "rivta",
    "types": list(CONTRACT_OF_TYPE),
    # What it offers in the person's own view (SPEC 9); approvedForPatient false stays out.
    "own_view_types": ["care_plans", "bookings", "fixed_contacts", "medication",
                       "lab_results", "care_contacts", "diagnoses"],
    "units": [["SE2321000999-U500", "Vårdcentralen Norrby"],
              ["SE2321000999-U600", "Kardiologiska kliniken, Exempelsjukhuset"]],
    "excluded_units": [],
}

_TODAY: Final = re.compile(r"^today([+-]\d+)(?: (\d\d):(\d\d))?$")


def _dated(value: Any, today: dt.date) -> Any:
    """``"today+14 09:30"`` as ``YYYYMMDDhhmmss`` (and ``"today-3"`` as ``YYYYMMDD``)."""
    if isinstance(value, str):
        m = _TODAY.match(value)
        if m:
            day = today + dt.timedelta(days=int(m.group(1)))
            return day.strftime("%Y%m%d") + (f"{m.group(2)}{m.group(3)}00" if m.group(2) else "")
        return value
    if isinstance(value, list):
        return [_dated(v, today) for v in value]
    if isinstance(value, dict):
        return {k: _dated(v, today) for k, v in value.items()}
    return value


def load_records(source: Any, today: dt.date) -> dict[tuple[str, str], list[StubRecord]]:
    """``demo_data/rivta.json``: ``{personnummer: {type: [record, …]}}``."""
    out: dict[tuple[str, str], list[StubRecord]] = {}
    for subject, by_type in json.loads(source.read_text(encoding="utf-8")).items():
        for info_type, items in by_type.items():
            out[(info_type, subject)] = [
                StubRecord(**{**_dated(item, today), "data": {
                    k: tuple(v) if isinstance(v, list) and k == "analyses" else v
                    for k, v in _dated(item.get("data", {}), today).items()}})
                for item in items]
    return out


def backend_toml(port: int) -> list[str]:
    """The adapter's ``[backend]`` table: the same a region writes (paths in ``tls/``)."""
    lines = ["[backend]", 'kind = "rivta"', f'logical_address = "{LOGICAL_ADDRESS}"',
             f'consumer_hsa_id = "{CONSUMER_HSA_ID}"',
             'organisation = { id = "SE2321000999-RE01", name = "Region Exempel" }',
             'system = "Journalsystemet (RIV-TA)"', 'ca = "tls/rivta-ca.pem"',
             'cert = "tls/rivta-client.pem"', 'key = "tls/rivta-client.key"',
             "timeout_s = 5", 'timezone = "Europe/Stockholm"', "", "[backend.contracts]"]
    for info_type, key in CONTRACT_OF_TYPE.items():
        c = CONTRACTS[key]
        endpoint = f"https://127.0.0.1:{port}{RivtaStub.path(c)}"
        lines.append(f'{info_type} = {{ contract = "{c.name}", version = "{c.version}", '
                     f'endpoint = "{endpoint}" }}')
    return lines


async def start_stub(pdir: Path, port: int, data: Any, today: dt.date) -> RivtaStub:
    """Fresh TLS material in ``pdir/tls`` and the stub answering on ``port``."""
    tls = write_tls(pdir / "tls", client_cn=CONSUMER_HSA_ID)
    stub = RivtaStub(records=load_records(data, today), sources={LOGICAL_ADDRESS: "answer"},
                     ssl_context=tls.server_context(), contracts=list(CONTRACT_OF_TYPE.values()),
                     authorized=frozenset({CONSUMER_HSA_ID}))
    await stub.start(port=port)
    return stub
