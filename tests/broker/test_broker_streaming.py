"""A streamed answer, in the core: the order of log entries and lines, and its filtering.

The service here is a stand-in that behaves like ``QueryService.answer`` (admit, settle
sources one by one, merge, log, return) and writes every step to one timeline, so each
test reads what left before which entry was durable. The whole path over HTTP and MQTT
is in ``tests/e2e/test_streaming_ndjson.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from broker.errors import NotReady, Overloaded, QueryRejected
from broker.fanout import Outcome
from broker.merge import Merged, filter_source, merge, readable_producers
from broker.streaming import stream_answer
from consumer_client import assemble_answer
from schemas.messages import (
    ErrorLine,
    Reply,
    SourceLine,
    StreamLine,
    SummaryLine,
    Unblock,
)
from schemas.records import INFORMATION_TYPES, Medication, OrgRef, Record, RecordSource, UnitRef
from schemas.registry import Participant, Producer

PERSON = "193803039142"


def producer(pid: str) -> Producer:
    org = Participant(id=f"ORG-{pid}", name=f"Org {pid}", kind="vårdgivare",
                      roles=frozenset({"producer"}), keys={})
    return Producer(id=pid, name=pid, organisation=org, types=frozenset({"medication"}),
                    units=(), keys={})


def med(pid: str, n: int, *, day: int, scope: str = "hsl", blocked: bool = False,
        claimed: str | None = None) -> Record:
    return Medication(
        id=f"{pid}-{n}", drug=f"Läkemedel {n}", scope=scope, blocked=blocked,  # type: ignore[arg-type]
        time=dt.datetime(2026, 11, day, 10, tzinfo=dt.UTC),
        source=RecordSource(producer=claimed or pid, organisation=OrgRef(id="O", name="O"),
                            unit=UnitRef(id="U", name="U")))


def answered(pid: str, *records: Record, blocked: bool = False, ms: int = 10) -> Outcome:
    reply = Reply(query_id="q", producer=pid, status="ok" if records else "no_data",
                  records=list(records), blocked=blocked)
    return Outcome(producer(pid), reply.status, reply, latency_ms=ms)


@dataclass
class Query:
    """The parts of an AuthenticatedQuery the stream reads."""

    query_id: str = "q-1"
    subject: str = PERSON
    claims: Any = None
    own: Any = None

    @property
    def unblock(self) -> Unblock | None:
        return self.claims.unblock if self.claims is not None else None


@dataclass
class Registry:
    producers: list[Producer]

    def producers_for(self, types: Any) -> list[Producer]:
        return self.producers


@dataclass
class StubService:
    """Settles ``settled`` one by one (``late`` only at the deadline), like the real one."""

    settled: list[Outcome]
    late: list[Outcome] = field(default_factory=list)
    unblock: Unblock | None = None
    fail_opened: bool = False
    fail_answered: bool = False
    refuse: QueryRejected | None = None
    timeline: list[tuple[str, Any]] = field(default_factory=list)
    registry: Registry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = Registry([o.producer for o in self.settled + self.late])

    def producers_for(self, query: Any) -> list[Producer]:
        return self.registry.producers

    async def log_opened(self, query: Any) -> None:
        await asyncio.sleep(0)
        if self.fail_opened:
            raise NotReady("access-log-unavailable", "cannot write")
        self.timeline.append(("log", "opened"))

    async def answer(self, query: Any, *, on_outcome: Callable[[Outcome], None],
                     on_admitted: Callable[[], Awaitable[None]]) -> Merged:
        if self.refuse is not None:
            raise self.refuse
        await on_admitted()
        for outcome in self.settled:
            await asyncio.sleep(0.01)
            on_outcome(outcome)
        await asyncio.sleep(0.01)
        merged = merge(query_id=query.query_id, subject=query.subject,
                       outcomes=self.settled + self.late, unblock=self.unblock,
                       types=frozenset(query.claims.types))
        await asyncio.sleep(0)
        if self.fail_answered:
            raise NotReady("access-log-unavailable", "cannot write; nothing is disclosed")
        self.timeline.append(("log", "answered"))
        return merged


async def run(service: StubService, *, gone_after: int | None = None) -> Merged | None:
    lines: list[StreamLine] = []

    async def start() -> None:
        service.timeline.append(("start", None))

    async def send(line: StreamLine) -> None:
        if gone_after is not None and len(lines) >= gone_after:
            raise ConnectionResetError("gone")
        lines.append(line)
        service.timeline.append(("line", line))

    query = Query(claims=SimpleNamespace(unblock=service.unblock, types=["medication"]))
    return await stream_answer(service, query, start=start, send=send)  # type: ignore[arg-type]


def kinds(service: StubService) -> list[str]:
    return [what if what != "line" else type(x).__name__ for what, x in service.timeline]


async def test_opened_is_durable_before_the_first_byte_and_answered_before_the_summary() -> None:
    service = StubService([answered("A", med("A", 1, day=2)), answered("B")],
                          late=[Outcome(producer("C"), "timeout")])
    merged = await run(service)
    assert merged is not None
    assert kinds(service) == ["log", "start", "SourceLine", "SourceLine", "log",
                              "SourceLine", "SummaryLine"]
    assert [x for what, x in service.timeline if what == "log"] == ["opened", "answered"]
    sources = [x for what, x in service.timeline if isinstance(x, SourceLine)]
    assert [(s.source.producer, s.source.status, s.done, s.total) for s in sources] == [
        ("A", "ok", 1, 3), ("B", "no_data", 2, 3), ("C", "timeout", 3, 3)]


async def test_lines_are_sent_as_sources_settle_not_at_the_end() -> None:
    service = StubService([answered("A", med("A", 1, day=2)), answered("B")])
    task = asyncio.create_task(run(service))
    async with asyncio.timeout(2):
        while not any(isinstance(x, SourceLine) for _, x in service.timeline):
            await asyncio.sleep(0.001)
    assert ("log", "answered") not in service.timeline  # B has not settled yet
    await task


async def test_if_opened_cannot_be_logged_nothing_starts() -> None:
    service = StubService([answered("A", med("A", 1, day=2))], fail_opened=True)
    with pytest.raises(NotReady):
        await run(service)
    assert service.timeline == []


async def test_a_refusal_before_admission_is_raised_for_a_problem_response() -> None:
    service = StubService([answered("A")], refuse=Overloaded("overloaded", "busy"))
    with pytest.raises(Overloaded):
        await run(service)
    assert service.timeline == []


async def test_if_answered_cannot_be_logged_the_stream_ends_with_an_error_line() -> None:
    service = StubService([answered("A", med("A", 1, day=2))],
                          late=[Outcome(producer("C"), "timeout")], fail_answered=True)
    with capture_logs() as logs:
        assert await run(service) is None
    assert kinds(service) == ["log", "start", "SourceLine", "ErrorLine"]
    error = service.timeline[-1][1]
    assert isinstance(error, ErrorLine)
    assert error.problem.status == 503
    assert error.problem.type == "urn:samsvar:problem:access-log-unavailable"
    failed = [e for e in logs if e["event"] == "stream_log_failed"]
    assert failed and failed[0]["log_level"] == "error" and failed[0]["lines_sent"] == 1


async def test_a_consumer_that_goes_away_does_not_stop_the_answer_or_its_log() -> None:
    service = StubService([answered("A", med("A", 1, day=2)), answered("B"), answered("C")])
    with capture_logs() as logs:
        merged = await run(service, gone_after=1)
    assert merged is not None and len(merged.answer.sources) == 3
    assert ("log", "answered") in service.timeline
    assert [e for e in logs if e["event"] == "stream_consumer_gone"]


def lines_of(service: StubService) -> list[SourceLine | SummaryLine]:
    return [x for what, x in service.timeline
            if what == "line" and isinstance(x, SourceLine | SummaryLine)]


async def test_streamed_records_pass_the_same_filter_as_the_merged_answer() -> None:
    """sol_other dropped, blocked records only from producers named in a read, and the
    record's claimed producer overwritten with the verified one: line by line as whole."""
    outcomes = [
        answered("A", med("A", 1, day=3), med("A", 2, day=5, scope="sol_other"),
                 med("A", 3, day=1, blocked=True)),
        answered("B", med("B", 1, day=4, blocked=True), med("B", 2, day=3, claimed="X")),
        answered("C", med("C", 1, day=3)),
    ]
    unblock = Unblock(step="read", producers=["B"])
    service = StubService(outcomes, unblock=unblock)
    merged = await run(service)
    assert merged is not None
    streamed = {line.source.producer: line.records for line in lines_of(service)
                if isinstance(line, SourceLine)}
    readable = readable_producers(unblock)
    for outcome in outcomes:
        part = filter_source(outcome, readable=readable, types=frozenset(INFORMATION_TYPES))
        assert streamed[outcome.producer.id] == part.records
    assert [r.id for r in streamed["A"]] == ["A-1"]  # sol_other and unread blocked gone
    assert [r.id for r in streamed["B"]] == ["B-1", "B-2"]  # newest first
    assert all(r.source.producer == "B" for r in streamed["B"])
    assembled = assemble_answer(lines_of(service))
    assert msgspec.json.encode(assembled) == msgspec.json.encode(merged.answer)


async def test_equal_times_reassemble_in_the_brokers_order() -> None:
    outcomes = [answered("A", med("A", 1, day=3), med("A", 2, day=3)),
                answered("B", med("B", 1, day=3)), answered("C", med("C", 9, day=3))]
    service = StubService(list(reversed(outcomes)))  # settle in the other order
    service.registry = Registry([o.producer for o in outcomes])
    merged = await run(service)
    assert merged is not None
    assert msgspec.json.encode(assemble_answer(lines_of(service))) == \
        msgspec.json.encode(merged.answer)


async def test_only_blocked_looks_like_no_data_and_the_summary_alone_tells() -> None:
    """A source holding only blocked records: its line is a ``no_data`` line; whether
    anything is blocked is said in the summary only."""
    service = StubService([answered("A", blocked=True), answered("B")],
                          unblock=Unblock(step="locate"))
    await run(service)
    lines = lines_of(service)
    a, b, summary = lines
    assert isinstance(a, SourceLine) and isinstance(b, SourceLine)
    assert isinstance(summary, SummaryLine)

    def anonymous(line: SourceLine) -> bytes:
        plain = msgspec.structs.replace(line, done=0, source=msgspec.structs.replace(
            line.source, producer="P", organisation=OrgRef(id="O", name="O")))
        return msgspec.json.encode(plain)

    assert anonymous(a) == anonymous(b)
    assert b"blocked" not in msgspec.json.encode(a)
    assert summary.blocked_information_exists is True
    assert summary.blocked_at == ["A"]
