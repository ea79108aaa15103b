"""Scatter one signed question, gather the producers' signed replies until the deadline.

A reply is trusted only when its JWS verifies with a key registered for the producer it
names, the producer was asked, and the query is still open. Late replies (query closed),
duplicates (producer already answered) and replies for unknown queries are dropped and
counted. A reply that fails verification does not end that producer's wait: only a
verified reply can, so nobody else on the MQTT server can spoil another producer's answer;
if none arrives by the deadline the source is ``error`` rather than ``timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec
import structlog

from schemas.errors import HOSTILE_DECODE_ERRORS, JoseError
from schemas.jose import check, parse
from schemas.messages import REPLY_TYP, Reply, SourceStatus
from schemas.registry import Producer, Registry

__all__ = ["Gatherer", "Outcome", "PendingQuery"]

log = structlog.get_logger("samsvar.broker")


class _Routing(msgspec.Struct):
    query_id: str
    producer: str


_routing_decoder: Final = msgspec.json.Decoder(_Routing)
_reply_decoder: Final = msgspec.json.Decoder(Reply)


@dataclass(slots=True)
class Outcome:
    """What became of one producer for one query."""

    producer: Producer
    status: SourceStatus
    reply: Reply | None = None
    latency_ms: int | None = None
    reason: str = ""


@dataclass(slots=True)
class PendingQuery:
    query_id: str
    started: float
    outcomes: dict[str, Outcome]
    waiting: set[str]
    done: asyncio.Future[None] | None = None
    """Set by whoever waits (:meth:`wait`), resolved when nobody is waited for any more:
    a Future, as an Event costs 900 bytes more and 10,000 queries may be in flight."""
    suspect: dict[str, str] = field(default_factory=dict)
    """Producers for which only unverifiable replies came: id → reason."""
    on_outcome: Callable[[Outcome], None] | None = None

    async def wait(self, timeout_s: float) -> None:
        """Until every producer asked has answered (or is given up on), or ``timeout_s``."""
        if not self.waiting:
            return
        self.done = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await self.done
        except TimeoutError:
            pass


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

    def __len__(self) -> int:
        return len(self._pending)

    def open(
        self,
        query_id: str,
        asked: Iterable[Producer],
        unavailable: Iterable[Producer] = (),
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> PendingQuery:
        outcomes = {p.id: Outcome(p, "unavailable", latency_ms=0) for p in unavailable}
        waiting = {p.id for p in asked}
        for p in asked:
            outcomes[p.id] = Outcome(p, "timeout")
        pending = PendingQuery(query_id, time.monotonic(), outcomes, waiting,
                               on_outcome=on_outcome)
        self._pending[query_id] = pending
        return pending

    def close(self, query_id: str) -> PendingQuery | None:
        """Stop listening for ``query_id``; unanswered sources keep ``timeout`` (or ``error``)."""
        pending = self._pending.pop(query_id, None)
        if pending is not None:
            for pid in pending.waiting:
                if pid in pending.suspect:
                    outcome = pending.outcomes[pid]
                    outcome.status = "error"
                    outcome.reason = pending.suspect[pid]
        return pending

    def everyone_gone(self) -> None:
        """This instance lost MQTT: every open wait ends as ``unavailable``."""
        for pending in list(self._pending.values()):
            for producer_id in list(pending.waiting):
                self.producer_gone(producer_id)

    def producer_gone(self, producer_id: str) -> None:
        """The producer went offline (its last will): stop waiting for it anywhere."""
        now = time.monotonic()
        for pending in list(self._pending.values()):
            if producer_id in pending.waiting:
                producer = pending.outcomes[producer_id].producer
                suspect = pending.suspect.get(producer_id)
                self._finish(pending, Outcome(
                    producer, "error" if suspect else "unavailable",
                    latency_ms=int((now - pending.started) * 1000),
                    reason=suspect or "the producer went offline while the question was open"))

    def _finish(self, pending: PendingQuery, outcome: Outcome) -> None:
        pending.outcomes[outcome.producer.id] = outcome
        pending.waiting.discard(outcome.producer.id)
        if pending.on_outcome is not None:
            pending.on_outcome(outcome)
        done = pending.done
        if not pending.waiting and done is not None and not done.done():
            done.set_result(None)

    def on_reply(self, token: bytes) -> None:
        """Handle one message from the reply topic. Never raises."""
        try:
            jws = parse(token)
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
        if pid not in pending.outcomes or pending.outcomes[pid].status == "unavailable":
            self.counters.unexpected_producer += 1
            log.warning("reply_dropped", query_id=routing.query_id, producer=pid,
                        reason="producer was not asked")
            return
        if pid not in pending.waiting:
            self.counters.duplicate += 1
            return
        producer = pending.outcomes[pid].producer
        latency_ms = int((time.monotonic() - pending.started) * 1000)
        try:
            _, payload = check(jws, lambda h: self._registry.producer_key(pid, h),
                               typ=REPLY_TYP)
        except JoseError as exc:
            self.counters.unverifiable += 1
            pending.suspect[pid] = f"unverifiable reply: {exc}"
            log.warning("reply_unverifiable", query_id=pending.query_id, producer=pid,
                        reason=str(exc))
            return
        try:
            reply = _reply_decoder.decode(payload)
        except HOSTILE_DECODE_ERRORS as exc:
            # Signed by the producer itself: its answer is final, and it is an error.
            log.warning("reply_invalid", query_id=pending.query_id, producer=pid,
                        reason=str(exc))
            self._finish(pending, Outcome(producer, "error", latency_ms=latency_ms,
                                          reason=f"reply does not match the schema: {exc}"))
            return
        if reply.query_id != pending.query_id or reply.producer != pid:
            self._finish(pending, Outcome(producer, "error", latency_ms=latency_ms,
                                          reason="reply ids do not match"))
            return
        self._finish(pending, Outcome(producer, reply.status, reply, latency_ms))
