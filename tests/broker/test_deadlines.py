"""The fan-out's :class:`~broker.deadlines.DeadlineHeap` on its own: one loop timer for
many waits, each key handed over once at its own deadline (never sooner), closed keys
skipped and, at a steady rate of closing, dropped.

(tests/broker/test_fanout_deadlines.py tests the same through the :class:`Gatherer`.)
"""

from __future__ import annotations

import asyncio

from broker.deadlines import DeadlineHeap


def _heap(live: dict[str, object]) -> tuple[DeadlineHeap, list[str], asyncio.Event]:
    due: list[str] = []
    rang = asyncio.Event()

    def on_due(key: str) -> None:
        due.append(key)
        rang.set()

    return DeadlineHeap(live, on_due), due, rang


async def test_keys_come_due_in_deadline_order_not_in_the_order_added() -> None:
    live: dict[str, object] = {"long": 1, "short": 1, "middle": 1}
    heap, due, _ = _heap(live)
    for key, timeout_s in (("long", 0.3), ("short", 0.02), ("middle", 0.15)):
        heap.add(key, timeout_s)
    while len(due) < 3:
        await asyncio.sleep(0.02)
    assert due == ["short", "middle", "long"]
    assert len(heap) == 0


async def test_a_key_is_not_due_before_its_deadline() -> None:
    live: dict[str, object] = {"q": 1}
    heap, due, rang = _heap(live)
    loop = asyncio.get_running_loop()
    added = loop.time()
    heap.add("q", 0.1)
    await asyncio.wait_for(rang.wait(), 5)
    assert due == ["q"]
    assert loop.time() - added >= 0.1 - 0.001  # asyncio's own timer resolution


async def test_a_timeout_not_positive_is_due_at_once() -> None:
    heap, due, rang = _heap({"q": 1})
    heap.add("q", -5)
    await asyncio.wait_for(rang.wait(), 5)
    assert due == ["q"]


async def test_a_closed_key_is_skipped_and_the_next_one_still_comes_due() -> None:
    live: dict[str, object] = {"closed": 1, "open": 1}
    heap, due, rang = _heap(live)
    heap.add("closed", 0.02)
    heap.add("open", 0.1)
    del live["closed"]
    await asyncio.wait_for(rang.wait(), 5)
    assert due == ["open"]


async def test_an_earlier_deadline_added_later_rearms_the_timer() -> None:
    live: dict[str, object] = {"late": 1, "early": 1}
    heap, due, rang = _heap(live)
    heap.add("late", 60)
    heap.add("early", 0.02)
    await asyncio.wait_for(rang.wait(), 5)
    assert due == ["early"] and [key for _, key in heap] == ["late"]


async def test_closed_keys_do_not_pile_up() -> None:
    """Keys closed long before their deadline: the heap stays bounded by the live ones."""
    live: dict[str, object] = {f"held-{i}": 1 for i in range(10)}
    heap, due, _ = _heap(live)
    for key in list(live):
        heap.add(key, 120)
    for i in range(5_000):
        live[f"gone-{i}"] = 1
        heap.add(f"gone-{i}", 120)
        del live[f"gone-{i}"]
    assert len(heap) <= 2 * len(live) + 1025
    assert {key for _, key in heap} >= {f"held-{i}" for i in range(10)}
    heap.compact()
    assert sorted(key for _, key in heap) == sorted(live)
    assert due == []
