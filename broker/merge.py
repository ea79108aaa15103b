"""Merge the producers' replies into one answer (SPEC section 3).

The broker enforces again what it can see of stage 1: a record whose marking may never be
disclosed (``sol_other``) is dropped and counted as the producer's violation, and blocked
records are kept only from producers the consumer asked to ``read``.

:func:`filter_source` is that rule for one source; :func:`merge` applies it to every
source of a whole answer, and :mod:`broker.streaming` to each source as it answers, so a
streamed line and the merged answer can never disagree.

In the person's own view (SPEC section 9) it also enforces what it can see of the
producers' own-view rules: only types the producer offers in the own view, never a record
not approved for the patient (both dropped and counted as violations), never a fixed
contact's internal note (emptied); and ``blocked_information_exists`` is said only to a
person acting as themself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from schemas.messages import ActingAs, Answer, SourceResult, Unblock
from schemas.records import DISCLOSABLE_SCOPES, FixedContact, Record, RecordSource, record_type

from .fanout import Outcome

__all__ = ["Merged", "SourcePart", "filter_source", "merge", "readable_producers"]


@dataclass(slots=True)
class Merged:
    answer: Answer
    violations: dict[str, int] = field(default_factory=dict)
    """Producer id → records it sent that the law forbids (dropped here)."""
    disclosed: dict[str, dict[str, int]] = field(default_factory=dict)
    """Producer id → information type → records disclosed: what the access log needs."""


@dataclass(frozen=True, slots=True)
class SourcePart:
    """One source after the broker's filtering.

    ``result`` and ``records`` are what the consumer may see; ``blocked``, ``dropped`` and
    ``disclosed`` are for the answer's summary, the operator's log and the access log.
    """

    result: SourceResult
    records: list[Record]
    """Newest first."""
    blocked: bool
    """The source holds blocked information (said only as the answer's
    ``blocked_information_exists`` and ``blocked_at``, never in the source's status)."""
    dropped: int
    """Records the law forbids that the producer sent anyway."""
    disclosed: dict[str, int]
    """Information type → records kept."""


def _time_key(record: Record) -> float:
    return record.time.timestamp()


def readable_producers(unblock: Unblock | None) -> frozenset[str]:
    """The producers whose blocked records an unblock ``read`` step releases."""
    if unblock is None or unblock.step != "read":
        return frozenset()
    return frozenset(unblock.producers or ())


def filter_source(outcome: Outcome, *, readable: frozenset[str],
                  types: frozenset[str], acting_as: ActingAs | None = None) -> SourcePart:
    """What the consumer may see of one source: scope and block rules, verified producer.

    A record of a type nobody asked for, or that the producer is not registered to serve,
    is dropped like a forbidden one: a producer cannot widen the question.
    """
    producer = outcome.producer
    status = outcome.status
    if status == "pending":  # merged before Gatherer.close ended the wait: it timed out
        status = "timeout"
    reply = outcome.reply
    kept: list[Record] = []
    dropped = 0
    blocked = False
    unreadable = 0
    disclosed: dict[str, int] = {}
    own_view = acting_as is not None
    served = (producer.types if acting_as is None else
              producer.ombud_types if acting_as == "ombud" else producer.own_view_types)
    if reply is not None and status in ("ok", "no_data"):
        for record in reply.records:
            if record.scope not in DISCLOSABLE_SCOPES or (
                record.blocked and producer.id not in readable
            ) or not _wanted(record, types, served) or (
                own_view and not record.approved_for_patient
            ):
                dropped += 1
                continue
            if own_view and isinstance(record, FixedContact) and record.internal_note:
                dropped += 1  # a violation, though the rest of the record may be shown
                record = msgspec.structs.replace(record, internal_note="")
            if record.source.producer != producer.id:
                record = msgspec.structs.replace(
                    record,
                    source=RecordSource(producer=producer.id,
                                        organisation=record.source.organisation,
                                        unit=record.source.unit,
                                        system=record.source.system),
                )
            kept.append(record)
        blocked = reply.blocked or any(r.blocked for r in kept)
        unreadable = reply.unreadable
        status = "ok" if kept or unreadable else "no_data"
        for record in kept:
            kind = record_type(record)
            disclosed[kind] = disclosed.get(kind, 0) + 1
        kept.sort(key=_time_key, reverse=True)
    result = SourceResult(
        producer=producer.id, organisation=producer.organisation.ref, status=status,
        records=len(kept), latency_ms=outcome.latency_ms,
        truncated=bool(reply and reply.truncated and kept),
        unreadable=unreadable,
    )
    return SourcePart(result, kept, blocked, dropped, disclosed)


def _wanted(record: Record, asked: frozenset[str], served: frozenset[str]) -> bool:
    kind = record_type(record)
    return kind in asked and kind in served


def merge(
    *,
    query_id: str,
    subject: str,
    outcomes: Iterable[Outcome],
    unblock: Unblock | None,
    types: frozenset[str],
    acting_as: ActingAs | None = None,
) -> Merged:
    """One answer from every source's outcome, newest record first; ``acting_as`` is set
    for the person's own view."""
    readable = readable_producers(unblock)
    sources: list[SourceResult] = []
    records: list[Record] = []
    blocked_at: list[str] = []
    violations: dict[str, int] = {}
    disclosed: dict[str, dict[str, int]] = {}
    complete = True
    for outcome in outcomes:
        part = filter_source(outcome, readable=readable, types=types, acting_as=acting_as)
        pid = part.result.producer
        if part.dropped:
            violations[pid] = part.dropped
        if part.blocked:
            blocked_at.append(pid)
        if part.disclosed:
            disclosed[pid] = part.disclosed
        if part.result.status in ("timeout", "unavailable", "error"):
            complete = False
        sources.append(part.result)
        records.extend(part.records)
    # Stable: records with equal times keep the sources' order, as a streamed answer's
    # consumer reassembling it (consumer_client.assemble_answer) gets them.
    records.sort(key=_time_key, reverse=True)
    answer = Answer(
        query_id=query_id, subject=subject, complete=complete,
        blocked_information_exists=bool(blocked_at) and acting_as in (None, "self"),
        sources=sources, records=records,
        blocked_at=sorted(blocked_at) if unblock is not None else None,
        acting_as=acting_as,
    )
    return Merged(answer, violations, disclosed)
