"""Many waits' deadlines behind one loop timer.

:class:`DeadlineHeap` keeps ``(loop time, key)`` pairs in a heap and arms a single
``loop.call_at`` for the earliest; when it rings, every key whose time has come is handed
to ``on_due``, once. A key that is no longer live (not in the ``live`` mapping, which the
owner keeps) is skipped and, past a slack, dropped, so the heap stays bounded by the waits
still open rather than by the rate at which they end. Bench/RESULTS.md ("The fan-out's
deadlines") says why one timer and not one per wait.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Final

__all__ = ["RESOLUTION_S", "DeadlineHeap"]

RESOLUTION_S: Final = 0.001
"""A deadline this close ahead counts as passed when the timer rings (as asyncio's own
loop treats its timers)."""
_SLACK: Final = 1024
"""Entries of closed waits tolerated beyond twice the open ones before a compaction."""


class DeadlineHeap:
    """The deadlines of the waits keyed in ``live``; ``on_due(key)`` when one comes.

    ``live`` is read, never written: a key missing from it is a wait that ended before its
    deadline, whose entry is then skipped or dropped by :meth:`compact`.
    """

    __slots__ = ("_alarm", "_alarm_at", "_heap", "_live", "_on_due")

    def __init__(self, live: Mapping[str, object], on_due: Callable[[str], None]) -> None:
        self._live = live
        self._on_due = on_due
        self._heap: list[tuple[float, str]] = []
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = math.inf

    def __len__(self) -> int:
        """Entries held, those of closed waits not yet dropped included."""
        return len(self._heap)

    def __iter__(self) -> Iterator[tuple[float, str]]:
        """The ``(loop time, key)`` entries held, in no particular order."""
        return iter(self._heap)

    def add(self, key: str, timeout_s: float) -> None:
        """``key`` is due ``timeout_s`` from now (at once if not positive)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, timeout_s)
        heapq.heappush(self._heap, (when, key))
        if when < self._alarm_at:
            self._arm(loop, when)
        if len(self._heap) > 2 * len(self._live) + _SLACK:
            self.compact()

    def compact(self) -> None:
        """Drop the entries of closed waits (kept otherwise until their time comes)."""
        self._heap = [entry for entry in self._heap if entry[1] in self._live]
        heapq.heapify(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm, self._alarm_at = loop.call_at(when, self._ring, loop), when

    def _ring(self, loop: asyncio.AbstractEventLoop) -> None:
        self._alarm, self._alarm_at = None, math.inf
        now = loop.time() + RESOLUTION_S
        while self._heap and self._heap[0][0] <= now:
            key = heapq.heappop(self._heap)[1]
            if key in self._live:
                self._on_due(key)
        if self._heap:
            self._arm(loop, self._heap[0][0])
