"""The gatherer's deadlines: one heap and one loop timer for every open query's wait.

Each wait must still end at its own deadline (and no sooner), in deadline order whatever
the order they were opened in; an answered query must not be woken again; and the
deadlines of answered queries must not pile up at a steady rate of answers.
"""

from __future__ import annotations

import asyncio
import json

from broker.fanout import Gatherer
from schemas.jose import sign
from schemas.messages import REPLY_TYP
from tests.broker.test_hostile_input import KEYS, P1, P2, QUERY_ID, REGISTRY, valid_reply


def _open(gatherer: Gatherer, query_id: str, *producers: str) -> object:
    return gatherer.open(query_id, [REGISTRY.producers[p] for p in producers])


async def test_waits_end_in_deadline_order_whatever_order_they_were_opened_in() -> None:
    gatherer = Gatherer(REGISTRY)
    ended: list[str] = []
    futures = {}
    for query_id, timeout_s in (("long", 0.6), ("short", 0.05), ("middle", 0.3)):
        pending = gatherer.open(query_id, [REGISTRY.producers[P1]])
        done = gatherer.settled(pending, timeout_s)

        def note(_f: object, q: str = query_id) -> None:
            ended.append(q)

        done.add_done_callback(note)
        futures[query_id] = (pending, done)
    await asyncio.wait_for(futures["short"][1], 5)
    assert ended == ["short"]  # the later deadlines have not been cut short
    await asyncio.wait_for(asyncio.gather(*(d for _, d in futures.values())), 5)
    assert ended == ["short", "middle", "long"]
    for pending, _ in futures.values():
        assert pending.outcomes[P1].status == "timeout"


async def test_a_wait_ends_when_every_producer_is_done_long_before_its_deadline() -> None:
    gatherer = Gatherer(REGISTRY)
    pending = gatherer.open("q", [REGISTRY.producers[P1], REGISTRY.producers[P2]])
    done = gatherer.settled(pending, 60)
    gatherer.producer_gone(P1)
    assert not done.done()  # P2 is still awaited
    gatherer.producer_gone(P2)
    await asyncio.wait_for(done, 2)
    assert {o.status for o in pending.outcomes.values()} == {"unavailable"}


async def test_a_query_with_nobody_to_await_is_settled_at_once() -> None:
    gatherer = Gatherer(REGISTRY)
    pending = gatherer.open("q", [], [REGISTRY.producers[P1]])
    assert gatherer.settled(pending, 60).done()


async def test_an_earlier_deadline_is_not_held_up_by_a_closed_querys() -> None:
    """A closed query's deadline stays in the heap until its time; the next wait must not
    take it for its own, nor wait past its own deadline."""
    gatherer = Gatherer(REGISTRY)
    first = gatherer.open("first", [REGISTRY.producers[P1]])
    gatherer.settled(first, 0.05)
    gatherer.close("first")  # e.g. the client went away
    second = gatherer.open("second", [REGISTRY.producers[P1]])
    done = gatherer.settled(second, 0.2)
    await asyncio.sleep(0.1)  # past the closed query's deadline
    assert not done.done()
    await asyncio.wait_for(done, 5)


async def test_answered_queries_leave_no_growing_heap_of_deadlines() -> None:
    """At a steady rate of answers, each with a deadline far ahead, the deadlines of the
    answered ones are dropped: memory stays bounded by the queries still open."""
    gatherer = Gatherer(REGISTRY)
    held = [gatherer.open(f"held-{i}", [REGISTRY.producers[P2]]) for i in range(10)]
    for pending in held:
        gatherer.settled(pending, 120)
    for i in range(20_000):
        pending = gatherer.open(f"answered-{i}", [REGISTRY.producers[P1]])
        done = gatherer.settled(pending, 120)
        gatherer.producer_gone(P1)
        assert done.done()
        gatherer.close(f"answered-{i}")
    assert len(gatherer._deadlines) <= 2 * len(gatherer) + 1025
    # The open ones still end at their deadline: their entries were kept.
    assert {qid for _, qid in gatherer._deadlines} >= {p.query_id for p in held}


async def test_a_producer_awaited_is_pending_until_the_deadline_makes_it_a_timeout() -> None:
    """``timeout`` means the deadline passed, never "still waiting"; a reply after the
    deadline is not used."""
    gatherer = Gatherer(REGISTRY)
    pending = gatherer.open(QUERY_ID, [REGISTRY.producers[P1], REGISTRY.producers[P2]])
    done = gatherer.settled(pending, 0.05)
    assert {o.status for o in pending.outcomes.values()} == {"pending"}
    assert pending.waiting == {P1, P2}
    gatherer.producer_gone(P2)
    # One list, not two asserts: mypy would keep P1's "pending" across the await below.
    assert [pending.outcomes[p].status for p in (P1, P2)] == ["pending", "unavailable"]
    await asyncio.wait_for(done, 5)
    assert pending.outcomes[P1].status == "timeout" and pending.waiting == frozenset()
    gatherer.on_reply(sign(json.dumps(valid_reply()).encode(), KEYS.p1, typ=REPLY_TYP).encode())
    assert pending.outcomes[P1].status == "timeout" and pending.outcomes[P1].reply is None
    assert gatherer.counters.unknown_query == 1 and gatherer.counters.duplicate == 0
    gatherer.close(QUERY_ID)
    assert pending.outcomes[P1].status == "timeout"
