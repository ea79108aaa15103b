"""Scatter one signed question, gather the producers' signed replies until the deadline.

A reply is trusted only when its JWS verifies with a key registered for the producer it
names, the producer was asked, and the query is still open. Late replies (query closed),
duplicates (producer already answered) and replies for unknown queries are dropped and
counted. A reply that fails verification does not end that producer's wait: only a
verified reply can, so nobody else on the MQTT server can spoil another producer's answer;
if none arrives by the deadline the source is ``error`` rather than ``timeout``.

A producer asked is ``pending`` until its verified reply, its going offline, or the
deadline (then ``timeout``) ends its wait; ``pending`` never leaves the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import msgspec
import structlog

from schemas.errors import HOSTILE_DECODE_ERRORS, JoseError
from schemas.jose import check, parse
from schemas.messages import REPLY_TYP, Reply, SourceStatus
from schemas.registry import Producer, Registry

from .deadlines import DeadlineHeap

__all__ = ["Gatherer", "Outcome", "OutcomeStatus", "PendingQuery"]

log = structlog.get_logger("samsvar.broker")


class _Routing(msgspec.Struct):
    query_id: str
    producer: str


_routing_decoder: Final = msgspec.json.Decoder(_Routing)
_reply_decoder: Final = msgspec.json.Decoder(Reply)


OutcomeStatus: TypeAlias = SourceStatus | Literal["pending"]
"""A source's status on the wire, or ``pending``: still awaited (the broker's alone)."""


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What became of one producer for one query. Immutable: every query shares the
    :class:`Gatherer`'s ``pending``, ``timeout`` and ``unavailable`` outcomes of a producer.
    A Struct, as one is made per reply (bench/RESULTS.md, "The fan-out's deadlines")."""

    producer: Producer
    status: OutcomeStatus
    reply: Reply | None = None
    latency_ms: int | None = None
    reason: str = ""


@dataclass(slots=True)
class PendingQuery:
    """One open query. A producer is still awaited while its outcome is ``pending``; at
    the deadline it becomes ``timeout`` (or ``error`` after only unverifiable replies).

    Kept small, as 10,000 queries may be in flight: no set of awaited producers (a count),
    no Event, ``asyncio.timeout`` or timer of its own (a Future, and an entry in the
    :class:`Gatherer`'s :class:`~broker.deadlines.DeadlineHeap`), no empty dict."""

    query_id: str
    started: float
    outcomes: dict[str, Outcome]
    left: int
    """Producers still awaited."""
    done: asyncio.Future[None] | None = None
    """Made by :meth:`Gatherer.settled`, resolved when nobody is awaited any more or the
    deadline passes."""
    suspect: dict[str, str] | None = None
    """Producers for which only unverifiable replies came: id → reason."""
    on_outcome: Callable[[Outcome], None] | None = None

    @property
    def waiting(self) -> frozenset[str]:
        """The producers still awaited (while the query is open)."""
        return frozenset(pid for pid, o in self.outcomes.items() if o.status == "pending")

    def awaits(self, producer_id: str) -> bool:
        outcome = self.outcomes.get(producer_id)
        return outcome is not None and outcome.status == "pending"

    def give_up(self, outcome: Outcome) -> None:
        """Stop awaiting ``outcome.producer`` (its question could not be sent) without
        telling ``on_outcome``: the caller reports it."""
        if self.awaits(outcome.producer.id):
            self.outcomes[outcome.producer.id] = outcome
            self.left -= 1


@dataclass(slots=True)
class Counters:
    unknown_query: int = 0
    duplicate: int = 0
    unexpected_producer: int = 0
    unverifiable: int = 0
    malformed: int = 0


class Gatherer:
    """Routes replies from the transport to the queries waiting for them."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._pending: dict[str, PendingQuery] = {}
        self.counters = Counters()
        self._awaited: dict[str, Outcome] = {}
        self._timed_out: dict[str, Outcome] = {}
        self._unavailable: dict[str, Outcome] = {}
        self._deadlines = DeadlineHeap(self._pending, self._deadline_passed)

    def __len__(self) -> int:
        return len(self._pending)

    def settled(self, pending: PendingQuery, timeout_s: float) -> asyncio.Future[None]:
        """A future resolved once no producer is awaited by ``pending`` any more, or
        ``timeout_s`` from now, whichever comes first.

        The deadline goes into the :class:`~broker.deadlines.DeadlineHeap`, not a timer
        of the query's own; a future, not a coroutine, spares the waiting task a frame."""
        done = pending.done = asyncio.get_running_loop().create_future()
        if not pending.left:
            done.set_result(None)
            return done
        self._deadlines.add(pending.query_id, timeout_s)
        return done

    def _deadline_passed(self, query_id: str) -> None:
        """The query's deadline has come: whoever is still awaited has timed out."""
        pending = self._pending[query_id]
        self._expire(pending)
        if pending.done is not None and not pending.done.done():
            pending.done.set_result(None)

    def _expire(self, pending: PendingQuery) -> None:
        """Every producer still ``pending`` becomes ``timeout`` (``error`` if only
        unverifiable replies came from it)."""
        if not pending.left:
            return
        suspect = pending.suspect
        for pid, outcome in pending.outcomes.items():
            if outcome.status == "pending":
                reason = suspect.get(pid) if suspect else None
                pending.outcomes[pid] = (
                    Outcome(outcome.producer, "error", reason=reason) if reason
                    else self._shared(self._timed_out, outcome.producer, "timeout"))
        pending.left = 0

    def open(
        self,
        query_id: str,
        asked: Iterable[Producer],
        unavailable: Iterable[Producer] = (),
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> PendingQuery:
        outcomes = {p.id: self._shared(self._unavailable, p, "unavailable") for p in unavailable}
        left = 0
        for p in asked:
            outcomes[p.id] = self._shared(self._awaited, p, "pending")
            left += 1
        pending = PendingQuery(query_id, time.monotonic(), outcomes, left, on_outcome=on_outcome)
        self._pending[query_id] = pending
        return pending

    @staticmethod
    def _shared(cache: dict[str, Outcome], producer: Producer, status: OutcomeStatus) -> Outcome:
        """The one ``status`` outcome of ``producer`` that every query shares."""
        outcome = cache.get(producer.id)
        if outcome is None or outcome.producer is not producer:  # new, or a new registry
            outcome = cache[producer.id] = Outcome(producer, status,
                                                   latency_ms=0 if status == "unavailable"
                                                   else None)
        return outcome

    def close(self, query_id: str) -> PendingQuery | None:
        """Stop listening for ``query_id``; unanswered sources end as ``timeout`` (or
        ``error``)."""
        pending = self._pending.pop(query_id, None)
        if pending is not None:
            self._expire(pending)
        return pending

    def everyone_gone(self) -> None:
        """This instance lost MQTT: every open wait ends as ``unavailable``."""
        for pending in list(self._pending.values()):
            for producer_id in pending.waiting:
                self.producer_gone(producer_id)

    def producer_gone(self, producer_id: str, *,
                      reason: str = "the producer went offline while the question was open",
                      ) -> None:
        """The producer went offline (its last will, or its heartbeats stopped): stop
        waiting for it anywhere."""
        now = time.monotonic()
        for pending in list(self._pending.values()):
            if pending.awaits(producer_id):
                producer = pending.outcomes[producer_id].producer
                suspect = pending.suspect.get(producer_id) if pending.suspect else None
                self._finish(pending, Outcome(
                    producer, "error" if suspect else "unavailable",
                    latency_ms=int((now - pending.started) * 1000),
                    reason=suspect or reason))

    def _finish(self, pending: PendingQuery, outcome: Outcome) -> None:
        pending.outcomes[outcome.producer.id] = outcome
        pending.left -= 1
        if pending.on_outcome is not None:
            pending.on_outcome(outcome)
        done = pending.done
        if not pending.left and done is not None and not done.done():
            done.set_result(None)

    def on_reply(self, token: bytes) -> None:
        """Handle one message from the reply topic. Never raises."""
        # The payload is decoded once, before it is verified, and used only once it is:
        # only what does not match the schema is decoded again, for its ids alone.
        reply: Reply | None = None
        routing: Reply | _Routing
        invalid: Exception | None = None
        try:
            jws = parse(token)
            try:
                reply = routing = _reply_decoder.decode(jws.payload)
            except HOSTILE_DECODE_ERRORS as exc:
                invalid = exc
                routing = _routing_decoder.decode(jws.payload)
        except (JoseError, *HOSTILE_DECODE_ERRORS):
            self.counters.malformed += 1
            log.warning("reply_dropped", reason="malformed")
            return
        pending = self._pending.get(routing.query_id)
        if pending is None:
            self.counters.unknown_query += 1
            return
        pid = routing.producer
        outcome = pending.outcomes.get(pid)
        if outcome is None or outcome.status == "unavailable":
            self.counters.unexpected_producer += 1
            log.warning("reply_dropped", query_id=routing.query_id, producer=pid,
                        reason="producer was not asked")
            return
        if outcome.status != "pending":
            if outcome.status == "timeout":  # after the deadline, before the query closed
                self.counters.unknown_query += 1
            else:
                self.counters.duplicate += 1
            return
        producer = outcome.producer
        latency_ms = int((time.monotonic() - pending.started) * 1000)
        try:
            check(jws, lambda h: self._registry.producer_key(pid, h), typ=REPLY_TYP)
        except JoseError as exc:
            self.counters.unverifiable += 1
            if pending.suspect is None:
                pending.suspect = {}
            pending.suspect[pid] = f"unverifiable reply: {exc}"
            log.warning("reply_unverifiable", query_id=pending.query_id, producer=pid,
                        reason=str(exc))
            return
        if reply is None:
            # Signed by the producer itself: its answer is final, and it is an error.
            log.warning("reply_invalid", query_id=pending.query_id, producer=pid,
                        reason=str(invalid))
            self._finish(pending, Outcome(producer, "error", latency_ms=latency_ms,
                                          reason=f"reply does not match the schema: {invalid}"))
            return
        self._finish(pending, Outcome(producer, reply.status, reply, latency_ms))
