"""The dashboard's rolling-window statistics (broker/stats.py), on a hand-driven clock."""

from __future__ import annotations

from collections import Counter

import pytest

from broker.observe import Observers, rejection_outcome
from broker.stats import RollingStats, percentile


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_latency_percentiles_are_within_a_bin() -> None:
    clock = Clock()
    stats = RollingStats(window_s=60, clock=clock)
    for ms in range(1, 101):  # 1..100 ms, one each
        stats.source_finished("P1", "ok", ms / 1000)
    p = stats.snapshot(["P1"]).producers["P1"]
    assert p.replies == 100
    assert p.p50_ms is not None and p.p95_ms is not None
    assert 50 / 1.1 <= p.p50_ms <= 50 * 1.1
    assert 95 / 1.1 <= p.p95_ms <= 95 * 1.1
    assert p.error_rate == 0.0


def test_error_rate_counts_timeouts_and_errors_among_questions_asked() -> None:
    stats = RollingStats(window_s=60, clock=Clock())
    for status in ("ok", "ok", "no_data", "timeout", "error"):
        stats.source_finished("P1", status, 0.01 if status in ("ok", "no_data") else None)
    stats.source_finished("P1", "unavailable", None)  # not asked: known offline
    p = stats.snapshot().producers["P1"]
    assert p.statuses == {"error": 1, "no_data": 1, "ok": 2, "timeout": 1, "unavailable": 1}
    assert p.error_rate == pytest.approx(2 / 5)
    assert p.replies == 3


def test_a_producer_never_heard_of_appears_empty() -> None:
    stats = RollingStats(window_s=60, clock=Clock())
    p = stats.snapshot(["P9"]).producers["P9"]
    assert (p.statuses, p.replies, p.p50_ms, p.p95_ms, p.error_rate) == ({}, 0, None, None, None)


def test_old_events_leave_the_window() -> None:
    clock = Clock()
    stats = RollingStats(window_s=60, clock=clock)
    stats.source_finished("P1", "timeout", None)
    stats.query_rejected(status=403, reason="relation-required")
    clock.now += 30
    stats.source_finished("P1", "ok", 0.005)
    stats.query_answered(0.02)
    snap = stats.snapshot(["P1"])
    assert snap.producers["P1"].error_rate == 0.5
    assert (snap.queries.answered, snap.queries.refused) == (1, 1)
    clock.now += 45  # the first events are 75 s old, the second 45 s
    snap = stats.snapshot(["P1"])
    assert snap.producers["P1"].error_rate == 0.0
    assert (snap.queries.answered, snap.queries.refused) == (1, 0)
    assert snap.queries.reasons == {}
    clock.now += 60
    snap = stats.snapshot(["P1"])
    assert snap.producers["P1"].replies == 0 and snap.queries.answered == 0


def test_rates_and_reasons() -> None:
    clock = Clock()
    stats = RollingStats(window_s=60, clock=clock)
    clock.now += 120  # running longer than the window: rates are over the whole window
    for _ in range(30):
        stats.query_answered(0.05)
    for _ in range(6):
        stats.query_rejected(status=403, reason="relation-required")
    stats.query_rejected(status=401, reason="replayed")
    stats.query_rejected(status=503, reason="mqtt-disconnected")
    stats.access_log_committed(0.002)
    q = stats.snapshot().queries
    assert (q.answered, q.refused, q.error) == (30, 7, 1)
    assert q.answered_per_second == 0.5
    assert q.refused_per_second == pytest.approx(7 / 60, abs=1e-3)
    assert q.per_second == pytest.approx(38 / 60, abs=1e-3)
    assert q.reasons == {"relation-required": 6, "replayed": 1, "mqtt-disconnected": 1}
    assert next(iter(q.reasons)) == "relation-required"  # most frequent first
    assert q.p50_ms is not None and 45 < q.p50_ms < 55
    assert q.access_log_p95_ms is not None and 1.8 < q.access_log_p95_ms < 2.2


def test_rates_just_after_start_are_over_the_time_so_far() -> None:
    clock = Clock()
    stats = RollingStats(window_s=300, clock=clock)
    clock.now += 10
    for _ in range(20):
        stats.query_answered(0.01)
    snap = stats.snapshot()
    assert snap.span_s == 10
    assert snap.queries.answered_per_second == 2.0


def test_rejections_split_into_refused_and_error() -> None:
    assert [rejection_outcome(s) for s in (400, 401, 403, 413, 415, 429, 500, 503)] == [
        "refused", "refused", "refused", "refused", "refused", "error", "error", "error"]


def test_observers_forward_every_event() -> None:
    clock = Clock()
    a, b = RollingStats(clock=clock), RollingStats(clock=clock)
    both = Observers(a)
    both.add(b)
    both.query_answered(0.1)
    both.query_rejected(status=401, reason="expired")
    both.source_finished("P1", "ok", 0.01)
    both.access_log_committed(0.001)
    assert a.snapshot() == b.snapshot()
    assert a.snapshot().queries.refused == 1


def test_percentile_of_nothing_is_none() -> None:
    assert percentile(Counter(), 0.5) is None
    with pytest.raises(ValueError):
        RollingStats(window_s=0)
