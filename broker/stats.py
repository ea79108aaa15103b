"""Rolling-window statistics for the operator dashboard: pure Python, no I/O.

:class:`RollingStats` is a :class:`~broker.ports.QueryObserver`, fed by the same events as
the Prometheus metrics. It keeps one bucket per second over the last ``window_s`` seconds,
so its memory is bounded by the window and the number of producers, never by traffic.
Latencies are counted in logarithmic bins, eight per doubling (each about 9 % wide), so
the percentiles it reports are approximate to within a bin.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from schemas.messages import SourceStatus

from .observe import rejection_outcome

__all__ = ["ProducerStats", "QueryStats", "RollingStats", "StatsSnapshot", "percentile"]

_BINS_PER_DOUBLING = 8
_FAILED: frozenset[str] = frozenset({"error", "timeout"})
"""Source statuses that count against a producer's error rate."""
_UNREADABLE: Final = "unreadable"
"""The key the unreadable count is kept under beside the statuses."""


def _bin(ms: float) -> int:
    """Bin 0 holds everything under 1 ms; bin i ≥ 1 holds [2^((i-1)/8), 2^(i/8)) ms."""
    if ms < 1:
        return 0
    return int(math.log2(ms) * _BINS_PER_DOUBLING) + 1


def _bin_value(i: int) -> float:
    """A representative latency (ms) for bin ``i``: its geometric middle."""
    if i == 0:
        return 0.5
    return float(2 ** ((i - 0.5) / _BINS_PER_DOUBLING))


def percentile(bins: Counter[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the latencies counted in ``bins``, in ms."""
    total = sum(bins.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i in sorted(bins):
        seen += bins[i]
        if seen >= rank:
            return round(_bin_value(i), 1)
    raise AssertionError("unreachable: rank <= total")


@dataclass(slots=True)
class _Bucket:
    second: int
    counts: Counter[str] = field(default_factory=Counter)
    bins: Counter[int] = field(default_factory=Counter)


class _Series:
    """Counts by key, and latency bins, per second over a sliding window."""

    def __init__(self, window_s: int) -> None:
        self._window = window_s
        self._buckets: deque[_Bucket] = deque()

    def add(self, now: float, key: str, latency_ms: float | None = None, n: int = 1) -> None:
        second = int(now)
        if not self._buckets or self._buckets[-1].second < second:
            self._buckets.append(_Bucket(second))
            self._trim(second)
        bucket = self._buckets[-1]
        bucket.counts[key] += n
        if latency_ms is not None:
            bucket.bins[_bin(latency_ms)] += 1

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0].second <= second - self._window:
            self._buckets.popleft()

    def totals(self, now: float) -> tuple[Counter[str], Counter[int]]:
        self._trim(int(now))
        counts: Counter[str] = Counter()
        bins: Counter[int] = Counter()
        for bucket in self._buckets:
            counts.update(bucket.counts)
            bins.update(bucket.bins)
        return counts, bins


@dataclass(frozen=True, slots=True, kw_only=True)
class ProducerStats:
    """One producer over the window."""

    producer: str
    statuses: dict[str, int]
    """Source status → how often (``unavailable`` included)."""
    replies: int
    """Answers that came back (the latency sample)."""
    p50_ms: float | None
    p95_ms: float | None
    error_rate: float | None
    """Share of the questions it was asked that ended ``error`` or ``timeout``."""
    unreadable: int = 0
    """Records its answers said it holds but could not read (SPEC section 3)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryStats:
    """The broker as a whole over the window."""

    answered: int
    refused: int
    error: int
    per_second: float
    """Every query (answered, refused or error) per second."""
    answered_per_second: float
    refused_per_second: float
    p50_ms: float | None
    p95_ms: float | None
    """Answer latency, fan-out to durable log entry."""
    reasons: dict[str, int]
    """Refusal rule or problem slug → how often (refused and error)."""
    access_log_p95_ms: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSnapshot:
    window_s: int
    span_s: float
    """Seconds the rates are over: the window, or less just after start-up."""
    queries: QueryStats
    producers: dict[str, ProducerStats]


class RollingStats:
    """What happened over the last ``window_s`` seconds; ``clock`` is monotonic seconds."""

    def __init__(self, *, window_s: int = 300,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if window_s < 1:
            raise ValueError("window_s must be at least 1")
        self.window_s = window_s
        self._clock = clock
        self._started = clock()
        self._queries = _Series(window_s)
        self._reasons = _Series(window_s)
        self._access_log = _Series(window_s)
        self._producers: dict[str, _Series] = {}

    # -- QueryObserver -------------------------------------------------------------

    def query_answered(self, seconds: float) -> None:
        self._queries.add(self._clock(), "answered", seconds * 1000)

    def query_rejected(self, *, status: int, reason: str) -> None:
        now = self._clock()
        self._queries.add(now, rejection_outcome(status))
        self._reasons.add(now, reason)

    def source_finished(self, producer: str, status: SourceStatus,
                        latency_s: float | None, unreadable: int = 0) -> None:
        series = self._producers.get(producer)
        if series is None:
            series = self._producers[producer] = _Series(self.window_s)
        now = self._clock()
        series.add(now, status, None if latency_s is None else latency_s * 1000)
        if unreadable:
            series.add(now, _UNREADABLE, n=unreadable)

    def access_log_committed(self, seconds: float) -> None:
        self._access_log.add(self._clock(), "committed", seconds * 1000)

    # -- reading -------------------------------------------------------------------

    def snapshot(self, producers: Iterable[str] = ()) -> StatsSnapshot:
        """The window as it stands; every id in ``producers`` appears, seen or not."""
        now = self._clock()
        span = max(1.0, min(float(self.window_s), now - self._started))
        counts, bins = self._queries.totals(now)
        reasons, _ = self._reasons.totals(now)
        _, log_bins = self._access_log.totals(now)
        total = counts["answered"] + counts["refused"] + counts["error"]
        queries = QueryStats(
            answered=counts["answered"], refused=counts["refused"], error=counts["error"],
            per_second=round(total / span, 3),
            answered_per_second=round(counts["answered"] / span, 3),
            refused_per_second=round(counts["refused"] / span, 3),
            p50_ms=percentile(bins, 0.5), p95_ms=percentile(bins, 0.95),
            reasons=dict(reasons.most_common()),
            access_log_p95_ms=percentile(log_bins, 0.95),
        )
        result: dict[str, ProducerStats] = {}
        for pid in (*producers, *self._producers):
            if pid in result:
                continue
            series = self._producers.get(pid)
            statuses, pbins = series.totals(now) if series else (Counter[str](), Counter[int]())
            unreadable = statuses.pop(_UNREADABLE, 0)
            asked = sum(statuses.values()) - statuses["unavailable"]
            failed = sum(statuses[s] for s in _FAILED)
            result[pid] = ProducerStats(
                producer=pid, statuses={k: v for k, v in sorted(statuses.items()) if v},
                replies=sum(pbins.values()),
                p50_ms=percentile(pbins, 0.5), p95_ms=percentile(pbins, 0.95),
                error_rate=round(failed / asked, 4) if asked else None,
                unreadable=unreadable,
            )
        return StatsSnapshot(window_s=self.window_s, span_s=round(span, 1), queries=queries,
                             producers=result)
