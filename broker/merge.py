"""Merge the producers' replies into one answer (SPEC section 3).

The broker enforces again what it can see of stage 1: a record whose marking may never be
disclosed (``sol_other``) is dropped and counted as the producer's violation, and blocked
records are kept only from producers the consumer asked to ``read``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from schemas.messages import Answer, SourceResult, Unblock
from schemas.records import DISCLOSABLE_SCOPES, Record, RecordSource, record_type

from .fanout import Outcome

__all__ = ["Merged", "merge"]


@dataclass(slots=True)
class Merged:
    answer: Answer
    violations: dict[str, int] = field(default_factory=dict)
    """Producer id → records it sent that the law forbids (dropped here)."""
    disclosed: dict[str, dict[str, int]] = field(default_factory=dict)
    """Producer id → information type → records disclosed: what the access log needs."""


def _time_key(record: Record) -> float:
    return record.time.timestamp()


def merge(
    *,
    query_id: str,
    subject: str,
    outcomes: Iterable[Outcome],
    unblock: Unblock | None,
) -> Merged:
    """One answer from every source's outcome, newest record first."""
    readable = set(unblock.producers or ()) if unblock and unblock.step == "read" else set()
    reveal = unblock is not None
    sources: list[SourceResult] = []
    records: list[Record] = []
    blocked_at: list[str] = []
    violations: dict[str, int] = {}
    disclosed: dict[str, dict[str, int]] = {}
    blocked_exists = False
    complete = True
    for outcome in outcomes:
        producer = outcome.producer
        status = outcome.status
        kept: list[Record] = []
        reply = outcome.reply
        if reply is not None and status in ("ok", "no_data"):
            for record in reply.records:
                if record.scope not in DISCLOSABLE_SCOPES or (
                    record.blocked and producer.id not in readable
                ):
                    violations[producer.id] = violations.get(producer.id, 0) + 1
                    continue
                if record.source.producer != producer.id:
                    record = msgspec.structs.replace(
                        record,
                        source=RecordSource(producer=producer.id,
                                            organisation=record.source.organisation,
                                            unit=record.source.unit,
                                            system=record.source.system),
                    )
                kept.append(record)
            if reply.blocked or any(r.blocked for r in kept):
                blocked_exists = True
                blocked_at.append(producer.id)
            status = "ok" if kept else "no_data"
            if kept:
                counts = disclosed.setdefault(producer.id, {})
                for record in kept:
                    kind = record_type(record)
                    counts[kind] = counts.get(kind, 0) + 1
            records.extend(kept)
        if status in ("timeout", "unavailable", "error"):
            complete = False
        sources.append(SourceResult(
            producer=producer.id, organisation=producer.organisation.ref, status=status,
            records=len(kept), latency_ms=outcome.latency_ms,
            truncated=bool(reply and reply.truncated),
        ))
    records.sort(key=_time_key, reverse=True)
    answer = Answer(
        query_id=query_id, subject=subject, complete=complete,
        blocked_information_exists=blocked_exists, sources=sources, records=records,
        blocked_at=sorted(blocked_at) if reveal else None,
    )
    return Merged(answer, violations, disclosed)
