"""A source's ``unreadable`` count (SPEC section 3): carried from the reply to every client.

The whole path (adapter, MQTT, JSON, FHIR, NDJSON, CLI, dashboard) is in
``tests/e2e/test_fhir_backend_hl7.py``; these are the broker's own pieces.
"""

from __future__ import annotations

import msgspec
import pytest
from rich.console import Console

from broker.fanout import Outcome
from broker.fhir import source_outcome
from broker.merge import filter_source, merge
from broker.stats import RollingStats
from consumer_client.render import UNREADABLE_NOTICE, render_answer
from schemas.messages import Reply
from schemas.records import INFORMATION_TYPES
from tests.broker.test_broker_streaming import PERSON, med, producer

TYPES = frozenset(INFORMATION_TYPES)


def outcome(pid: str, *, unreadable: int, records: int = 0, truncated: bool = False,
            blocked: bool = False) -> Outcome:
    reply = Reply(query_id="q", producer=pid, status="ok" if records or unreadable else "no_data",
                  records=[med(pid, n, day=n + 1) for n in range(records)],
                  unreadable=unreadable, truncated=truncated, blocked=blocked)
    return Outcome(producer(pid), reply.status, reply, latency_ms=5)


def test_a_source_with_only_unreadable_records_is_ok_not_no_data() -> None:
    part = filter_source(outcome("A", unreadable=2), readable=frozenset(), types=TYPES)
    assert (part.result.status, part.result.records, part.result.unreadable) == ("ok", 0, 2)
    part = filter_source(outcome("B", unreadable=0), readable=frozenset(), types=TYPES)
    assert (part.result.status, part.result.unreadable) == ("no_data", 0)


def test_truncated_never_comes_with_no_records() -> None:
    # a producer's truncated list whose records the broker's filter all dropped
    reply = Reply(query_id="q", producer="A", status="ok", truncated=True,
                  records=[med("A", 1, day=2, scope="sol_other")])
    part = filter_source(Outcome(producer("A"), "ok", reply, latency_ms=5),
                         readable=frozenset(), types=TYPES)
    assert (part.result.status, part.result.records, part.result.truncated) == (
        "no_data", 0, False)


def test_the_count_reaches_the_answer_the_fhir_outcome_and_the_cli() -> None:
    merged = merge(query_id="q-1", subject=PERSON, unblock=None, types=TYPES,
                   outcomes=[outcome("A", unreadable=3, records=1),
                             outcome("B", unreadable=0, records=1)])
    a, b = merged.answer.sources
    assert (a.unreadable, b.unreadable) == (3, 0)
    decoded = msgspec.json.decode(msgspec.json.encode(merged.answer))
    assert [s["unreadable"] for s in decoded["sources"]] == [3, 0]

    fhir = source_outcome(a, "q-1")
    [issue] = [i for i in fhir["issue"] if i["details"]["coding"][0]["code"] == "unreadable"]
    assert (issue["severity"], issue["code"]) == ("warning", "incomplete")
    [result] = fhir["extension"]
    assert {"url": "unreadable", "valueUnsignedInt": 3} in result["extension"]
    assert not [i for i in source_outcome(b, "q-1")["issue"]
                if i["details"]["coding"][0]["code"] == "unreadable"]

    console = Console(record=True, width=160)
    render_answer(merged.answer, console)
    text = console.export_text()
    assert f"{UNREADABLE_NOTICE}: A 3" in text and "ok, 3 unreadable" in text


def test_an_old_reply_without_the_field_reads_as_zero_and_a_negative_one_is_refused() -> None:
    old = b'{"v":1,"query_id":"q","producer":"A","status":"no_data","records":[]}'
    assert msgspec.json.decode(old, type=Reply).unreadable == 0
    with pytest.raises(msgspec.ValidationError, match="unreadable"):
        msgspec.json.decode(old[:-1] + b',"unreadable":-1}', type=Reply)


def test_the_dashboard_window_sums_each_producers_count() -> None:
    stats = RollingStats(window_s=60)
    stats.source_finished("A", "ok", 0.01, 2)
    stats.source_finished("A", "ok", 0.01, 3)
    stats.source_finished("B", "ok", 0.01)
    snap = stats.snapshot(["A", "B"]).producers
    assert (snap["A"].unreadable, snap["B"].unreadable) == (5, 0)
    assert snap["A"].statuses == {"ok": 2}  # the count is no status
