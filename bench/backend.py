"""An in-memory :class:`~producer_adapter.backends.RecordBackend` for the benchmark.

Every person has the same records: two per asked type, padded so that the producer's
signed reply is about 2 KB. Questions for :data:`HANG_TYPE` never get an answer from
the record system (the adapter gives up at the question's deadline): producers online
whose answers never come, for the memory scenario.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Final

import msgspec

from producer_adapter.backends import BackendResult
from schemas.messages import Period
from schemas.records import Record

__all__ = ["HANG_TYPE", "InMemoryBackend", "build_records"]

HANG_TYPE: Final = "care_plans"
RECORDS_PER_REPLY: Final = 2
_WORDS: Final = ("Patienten mår bättre efter justerad dos, följs upp av distriktssköterska "
                 "inom hemsjukvården; ingen ny allergi noterad. ")
_FIELDS: Final[dict[str, tuple[dict[str, Any], str]]] = {
    # type: (fixed fields, the text field that carries the padding)
    "medication": ({"drug": "Metformin 500 mg", "dose": "1 tablett", "route": "oral",
                    "schedule": "2 gånger dagligen"}, "purpose"),
    "diagnoses": ({}, "display"),
    "alerts": ({"category": "allergy", "severity": "high"}, "description"),
    "lab_results": ({"analysis": "P-Glukos", "value": "5.6", "unit": "mmol/L"},
                    "reference_range"),
    "care_contacts": ({"contact_type": "besök"}, "reason"),
    "care_plans": ({"plan_type": "SIP"}, "title"),
}


def build_records(producer: str, type_: str, pad: int) -> list[Record]:
    """``RECORDS_PER_REPLY`` records of ``type_``; their padding fields total ``pad`` chars."""
    if type_ not in _FIELDS:
        type_ = "medication"
    fixed, field = _FIELDS[type_]
    text = (_WORDS * (pad // len(_WORDS) + 1))
    records = []
    for n in range(RECORDS_PER_REPLY):
        share = pad // RECORDS_PER_REPLY
        raw = {
            "type": type_, "id": f"{producer}-{type_}-{n}",
            "time": (dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC) + dt.timedelta(days=n))
            .isoformat(),
            "scope": "hsl",
            "source": {"producer": producer,
                       "organisation": {"id": "SE2321000999-PORG", "name": "Producenter"},
                       "unit": {"id": "SE2321000999-U1", "name": "Enhet 1"}, "system": "bench"},
            "author": {"name": "Karin Berg", "role": "Sjuksköterska"},
            "codes": [{"system": "urn:oid:1.2.752.129.2.2.3.1.1", "code": "A10BA02",
                       "display": "Metformin"}],
            **fixed, field: text[:max(share, 1)],
        }
        records.append(msgspec.convert(raw, Record))
    return records


class InMemoryBackend:
    """Answers every person alike from records built once per type."""

    def __init__(self, producer: str, *, pad: int) -> None:
        self._producer = producer
        self._pad = pad
        self._cache: dict[frozenset[str], BackendResult] = {}

    async def fetch(self, subject: str, types: frozenset[str],
                    period: Period | None) -> BackendResult:
        if HANG_TYPE in types:
            await asyncio.Event().wait()  # the adapter's deadline cancels this
        result = self._cache.get(types)
        if result is None:
            records = [r for t in sorted(types) for r in build_records(self._producer, t,
                                                                      self._pad // len(types))]
            result = self._cache[types] = BackendResult(records=records)
        return result

    async def aclose(self) -> None:
        return None
