"""Hand each query event to every :class:`~broker.ports.QueryObserver` that listens.

The core calls one :class:`Observers`; the Prometheus metrics (:mod:`broker.metrics`) and
the dashboard's rolling statistics (:mod:`broker.stats`) are both observers, so they see
the same events.
"""

from __future__ import annotations

from typing import Literal

from schemas.messages import SourceStatus

from .ports import QueryObserver

__all__ = ["Observers", "QueryOutcome", "rejection_outcome"]

QueryOutcome = Literal["answered", "refused", "error"]


def rejection_outcome(status: int) -> Literal["refused", "error"]:
    """A problem the consumer caused is ``refused``; the broker's own trouble is ``error``.

    429 (overloaded) and 5xx (not ready: MQTT or the access log) are the broker's.
    """
    return "error" if status == 429 or status >= 500 else "refused"


class Observers:
    """A :class:`QueryObserver` that forwards every event to the observers it holds."""

    def __init__(self, *observers: QueryObserver) -> None:
        self._observers: list[QueryObserver] = list(observers)

    def add(self, observer: QueryObserver) -> None:
        self._observers.append(observer)

    def query_answered(self, seconds: float) -> None:
        for o in self._observers:
            o.query_answered(seconds)

    def query_rejected(self, *, status: int, reason: str) -> None:
        for o in self._observers:
            o.query_rejected(status=status, reason=reason)

    def source_finished(self, producer: str, status: SourceStatus,
                        latency_s: float | None, unreadable: int = 0) -> None:
        for o in self._observers:
            o.source_finished(producer, status, latency_s, unreadable)

    def access_log_committed(self, seconds: float) -> None:
        for o in self._observers:
            o.access_log_committed(seconds)
