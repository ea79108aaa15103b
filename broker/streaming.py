"""A streamed answer (``application/x-ndjson``): one line per source as it answers.

The law's promise (SPEC section 7) is that no answer leaves without a durable access-log
entry. A streamed answer leaves in pieces, so it is logged in two entries that share its
query id, and every piece waits for the entry that covers it:

1. **opened**: who asks what about whom, on which basis, and every producer that will be
   asked (status ``pending``). Appended once the query is admitted, before any producer
   is asked. The response itself (status line and headers) starts only after this entry
   is committed; if it cannot be, the consumer gets the same ``503`` problem as without
   streaming, and nothing was asked or sent.
2. **source lines**: each source, filtered exactly like the whole answer
   (:func:`broker.merge.filter_source`), as soon as it is settled. They are covered by
   the ``opened`` entry, which names every producer that can appear in them.
3. **answered**: the ordinary entry with each source's status and the records disclosed
   per type, appended when every source is settled and **before** the summary line.
   If it cannot be committed, the stream ends with an ``error`` line (the 503 problem)
   instead of the summary, and the failure is logged (``stream_log_failed``).

So what the log cannot show is only the exact counts of a stream that broke between 1
and 3 (a crash, or a failed final write): the ``opened`` entry then stands alone, and
it is read as "anything these producers hold may have been disclosed". The person's
extract shows it (``collapse_streams`` hides an ``opened`` entry only when its
``answered`` entry exists).

Sources settled by the deadline (``timeout``), a failed publish or an unverifiable reply
carry no records; their lines follow the ``answered`` entry, just before the summary.
A consumer that goes away mid-stream does not stop the answer: it is gathered and logged
in full, because the producers were asked and may have disclosed.

This module is the core: it knows no HTTP. The adapter (``broker.http_api``) passes
``start`` (send the status line and headers) and ``send`` (write one line); both raise
``ConnectionError`` when the consumer is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from schemas.messages import ErrorLine, Problem, SourceLine, StreamLine, SummaryLine

from .errors import QueryRejected
from .fanout import Outcome
from .merge import Merged, filter_source, readable_producers
from .service import AuthenticatedQuery, QueryService

__all__ = ["Send", "Start", "stream_answer"]

log = structlog.get_logger("samsvar.broker")

Start = Callable[[], Awaitable[None]]
"""Send the response's status line and headers."""
Send = Callable[[StreamLine], Awaitable[None]]
"""Send one line."""


def _problem_of(exc: QueryRejected) -> Problem:
    return Problem(type=exc.type, title=exc.title, status=exc.status, detail=exc.detail,
                   rule=exc.rule)


class _Delivery:
    """Sends lines in order until the consumer goes away, then drops them quietly."""

    def __init__(self, query_id: str, send: Send) -> None:
        self._query_id = query_id
        self._send = send
        self.gone = False
        self.sent = 0

    async def __call__(self, line: StreamLine) -> None:
        if self.gone:
            return
        try:
            await self._send(line)
        except ConnectionError as exc:
            self.gone = True
            log.info("stream_consumer_gone", query_id=self._query_id, lines_sent=self.sent,
                     reason=str(exc))
            return
        self.sent += 1


async def stream_answer(
    service: QueryService, query: AuthenticatedQuery, *, start: Start, send: Send,
) -> Merged | None:
    """Answer ``query`` line by line; return the merged answer, or ``None`` if it failed.

    Raises :class:`QueryRejected` only before ``start`` was called (nothing has been sent,
    the adapter answers with a problem); after that every failure is an ``error`` line.
    """
    readable = readable_producers(query.unblock)
    asked = frozenset(query.claims.types)
    acting_as = query.own.acting_as if query.own is not None else None
    total = len(service.producers_for(query))
    queue: asyncio.Queue[SourceLine | None] = asyncio.Queue()
    streamed: set[str] = set()
    deliver = _Delivery(query.query_id, send)
    pump: asyncio.Task[None] | None = None

    def on_outcome(outcome: Outcome) -> None:
        part = filter_source(outcome, readable=readable, types=asked, acting_as=acting_as)
        streamed.add(part.result.producer)
        queue.put_nowait(SourceLine(source=part.result, records=part.records,
                                    done=len(streamed), total=total))

    async def drain() -> None:
        while (line := await queue.get()) is not None:
            await deliver(line)

    async def on_admitted() -> None:
        nonlocal pump
        await service.log_opened(query)  # durable before anything leaves
        try:
            await start()
        except ConnectionError as exc:
            deliver.gone = True
            log.info("stream_consumer_gone", query_id=query.query_id, lines_sent=0,
                     reason=str(exc))
        pump = asyncio.create_task(drain(), name=f"stream-{query.query_id}")

    failure: QueryRejected | None = None
    merged: Merged | None = None
    try:
        merged = await service.answer(query, on_outcome=on_outcome, on_admitted=on_admitted)
    except QueryRejected as exc:
        if pump is None:
            raise
        failure = exc
    except BaseException:
        if pump is not None:
            pump.cancel()
        raise
    assert pump is not None, "answered without being admitted"
    queue.put_nowait(None)
    try:
        await pump  # every source line queued so far is out (or the consumer is gone)
    except asyncio.CancelledError:
        pump.cancel()
        raise
    if failure is not None:
        log.error("stream_log_failed", query_id=query.query_id, problem=failure.slug,
                  lines_sent=deliver.sent)
        await deliver(ErrorLine(problem=_problem_of(failure)))
        return None
    assert merged is not None
    answer = merged.answer
    for source in answer.sources:
        if source.producer not in streamed:  # settled by the deadline: no records
            streamed.add(source.producer)
            await deliver(SourceLine(source=source, records=[], done=len(streamed),
                                     total=total))
    await deliver(SummaryLine(
        query_id=answer.query_id, subject=answer.subject, complete=answer.complete,
        blocked_information_exists=answer.blocked_information_exists,
        blocked_at=answer.blocked_at, sources=answer.sources, acting_as=answer.acting_as,
    ))
    return merged
