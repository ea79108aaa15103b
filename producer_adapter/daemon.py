"""The adapter daemon: verify a question, read the record system, apply stage 1, reply.

A question is dropped unanswered (logged with a ``reason``) when it is not a JWS
(``not-a-jws``), is signed by a key the registry does not give the broker
(``unknown-key``) or does not verify (``bad-signature``), does not decode
(``bad-payload``), names another broker (``wrong-broker``), asks for a reply
outside ``{prefix}/r/`` (``bad-reply-topic``), names no valid person
(``bad-subject``), is past its deadline (``expired``), was issued in the future
(``not-yet-valid``) or lives implausibly long (``deadline-too-far``). A repeated
query id within its deadline is answered once.

Every other question gets a signed reply: ``ok`` with records, ``no_data`` (also when
everything was withheld by a block: then only ``blocked`` is true), or ``error`` with a
short reason when the record system, the block register or the disclosure log fails
(fail closed). Each reply is entered in the adapter's disclosure log before it is
published; if that write fails the reply becomes ``error`` with no records. When the
deadline passes before they answer, no reply is sent: the broker says ``timeout``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import structlog

from schemas.errors import (
    HOSTILE_DECODE_ERRORS,
    BadSignature,
    BadToken,
    InvalidPersonId,
    JoseError,
    RegistryError,
    UnknownKey,
)
from schemas.identity import normalise
from schemas.jose import sign, verify
from schemas.messages import QUESTION_TYP, REPLY_TYP, Question, Reply
from schemas.registry import Producer, Registry, load_registry

from .backends import RecordBackend, open_backend
from .block_register import SqliteBlockRegister
from .block_register_pg import PostgresBlockRegister
from .blocks import BlockSource, open_blocks
from .config import AdapterConfig, check_against_registry, load_adapter_config
from .disclosure_log import DisclosureLog, SqliteDisclosureLog, disclosure_entry
from .errors import (
    AdapterConfigError,
    AdapterError,
    BlockSourceError,
    DisclosureLogError,
    QuestionRefused,
    TransportError,
)
from .guardian_blocks import GuardianBlockRegister
from .mqtt import MqttLink
from .policy import (
    RULE_BLOCK,
    Block,
    countable_unreadable,
    for_the_person,
    make_available,
    record_type,
)
from .witness import Witness

__all__ = ["MAX_QUESTION_LIFETIME_MS", "Adapter", "SignedReply", "open_adapter"]

CLOCK_SKEW_MS: Final = 30_000
MAX_QUESTION_LIFETIME_MS: Final = 300_000
"""No query lives longer than 300 s (SPEC section 3), so neither does a question."""
MAX_SEEN: Final = 200_000
"""Answered query ids remembered at most (about 30 MB): 660 questions a second for the
longest question lifetime."""
_question_decoder: Final = msgspec.json.Decoder(Question)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _seconds_left(question: Question) -> float:
    """Until the question's deadline (0 once passed)."""
    return max(question.deadline / 1000 - time.time(), 0.0)


@dataclass(frozen=True, kw_only=True)
class SignedReply:
    """A reply ready to publish: the signed ``token`` goes to ``topic`` before ``deadline``."""

    topic: str
    token: str
    reply: Reply
    deadline: int
    """Epoch milliseconds, from the question."""


class Adapter:
    """One replica of a producer adapter.

    ``ready`` is set while the adapter is connected, subscribed and announced online;
    ``handled`` counts the questions it has answered; ``not_ready`` holds the reasons its
    record system gave at start-up why it cannot answer as configured (each also logged
    as a warning), e.g. a FHIR server that names no units.
    """

    def __init__(
        self,
        config: AdapterConfig,
        registry: Registry,
        *,
        backend: RecordBackend | None = None,
        blocks: BlockSource | None = None,
        disclosure_log: DisclosureLog | None = None,
    ) -> None:
        check_against_registry(config, registry)
        self.config = config
        self.registry = registry
        self.producer: Producer = registry.producers[config.producer]
        self.ready = asyncio.Event()
        self.handled = 0
        self.not_ready: list[str] = []
        self._backend = backend
        self._blocks = blocks
        self._disclosures: DisclosureLog | None = disclosure_log
        if disclosure_log is None and config.disclosure_log is not None:
            self._disclosures = SqliteDisclosureLog(config.base / config.disclosure_log)
        self.witness: Witness | None = (
            Witness(config.base / config.witness, registry, producer=config.producer)
            if config.witness is not None else None)
        """The broker's checkpoints this adapter has seen (SPEC section 7)."""
        self._guardians = (GuardianBlockRegister(config.base / config.guardian_blocks)
                           if config.guardian_blocks is not None else None)
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self._questions: asyncio.TaskGroup | None = None
        self._link: MqttLink | None = None
        self._seen: set[str] = set()
        """Query ids answered whose question has not expired (MQTT may deliver twice)."""
        self._seen_until: list[tuple[int, str]] = []
        """The same ids on a heap by deadline, to forget each once its question expired."""
        self._log = structlog.get_logger("samsvar.adapter").bind(
            producer=config.producer, replica=config.replica
        )

    # -- running -----------------------------------------------------------------------

    async def run(self, *, shutdown: asyncio.Event | None = None) -> None:
        """Serve questions until ``shutdown`` is set (or the task is cancelled).

        On shutdown it unsubscribes from questions, finishes those in flight, says
        ``online: false`` and disconnects.
        """
        stop = shutdown if shutdown is not None else asyncio.Event()
        cfg = self.config
        where = cfg.source
        own_backend, own_blocks = self._backend is None, self._blocks is None
        if self._backend is None:
            self._backend = await open_backend(cfg.backend, base=cfg.base,
                                               producer_id=cfg.producer, where=where)
        if self._blocks is None:
            if cfg.blocks is None:
                self._log.warning("no block source configured: no blocks (spärrar) are applied")
            self._blocks = await asyncio.to_thread(open_blocks, cfg.blocks, base=cfg.base,
                                                   where=where)
        await self._check_backend()
        await self._prepare_stores()
        link = MqttLink(cfg.mqtt, producer_id=cfg.producer, replica=cfg.replica,
                        on_question=self._on_question, connected=self.ready,
                        on_checkpoint=(self.witness.offer if self.witness is not None
                                       else None))
        link.not_ready = list(self.not_ready)
        self._link = link
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(link.run(), name=f"mqtt-link-{cfg.producer}")
                async with asyncio.TaskGroup() as questions:
                    self._questions = questions
                    await stop.wait()
                    self._log.info("adapter stopping: finishing questions in flight")
                    await link.stop_questions()
                    self._questions = None
                link.close()
        finally:
            self._questions = None
            self._link = None
            if own_blocks:
                blocks, self._blocks = self._blocks, None
                if isinstance(blocks, PostgresBlockRegister):
                    await blocks.aclose()
            if own_backend and self._backend is not None:
                backend, self._backend = self._backend, None
                await backend.aclose()

    async def _check_backend(self) -> None:
        """Ask the backend (if it can tell) whether it can answer for this producer's units."""
        readiness = getattr(self._backend, "readiness", None)
        if readiness is None:
            return
        self.not_ready = list(await readiness(self.producer.units))
        for reason in self.not_ready:
            self._log.warning("record system not ready: its answers will lack records",
                              reason=reason)

    async def _prepare_stores(self) -> None:
        """Migrate (or check) the block register and create the disclosure log; a failure is
        logged, and each question is then answered ``error`` until the store can be used.
        The block register is never created here: ``samsvar adapter block init`` does."""
        if isinstance(self._blocks, SqliteBlockRegister | PostgresBlockRegister):
            try:
                await asyncio.to_thread(self._blocks.upgrade)
            except BlockSourceError as exc:
                self._log.error("block register unavailable: questions are answered 'error' "
                                "until it can be read", detail=str(exc))
        if self._disclosures is None:
            self._log.warning("no disclosure log configured: disclosures are not recorded")
        elif isinstance(self._disclosures, SqliteDisclosureLog):
            try:
                await asyncio.to_thread(self._disclosures.create)
            except DisclosureLogError as exc:
                self._log.error("disclosure log unavailable: questions are answered 'error' "
                                "until it can be written", detail=str(exc))

    async def _on_question(self, payload: bytes) -> None:
        await self._slots.acquire()
        group = self._questions
        if group is None:  # shutting down: the question is left to its deadline
            self._slots.release()
            return
        group.create_task(self._serve(payload), name="question")

    async def _serve(self, payload: bytes) -> None:
        try:
            question = self._admit(payload)
            if question is None:
                return
            # One timer bounds both answering and delivering: the broker listens until the
            # question's deadline and no longer.
            out: SignedReply | None = None
            try:
                async with asyncio.timeout(_seconds_left(question)):
                    out = await self._answer(question)
                    await self._deliver(out)
            except TimeoutError:
                if out is None:
                    self._timed_out(question)
                else:
                    self._reply_log(out).warning("reply not delivered before the deadline")
        except Exception as exc:  # noqa: BLE001  a bug in one question must not stop the adapter
            # No traceback: its locals could hold record content.
            self._log.error("question handling failed", error=type(exc).__name__,
                            detail=str(exc)[:200])
        finally:
            self._slots.release()

    async def _deliver(self, out: SignedReply) -> None:
        """Publish until it is sent; the caller bounds this by the deadline (the broker
        listens no longer)."""
        link = self._link
        if link is None:
            self._reply_log(out).warning("reply dropped: the adapter is not running")
            return
        payload = out.token.encode("ascii")
        while True:
            try:
                await link.publish(out.topic, payload,
                                   expires_in=out.deadline / 1000 - time.time())
                return
            except TransportError as exc:
                self._reply_log(out).warning("reply publish failed; retrying", error=str(exc))
                await asyncio.sleep(0.05)

    def _reply_log(self, out: SignedReply) -> structlog.typing.FilteringBoundLogger:
        """The adapter's logger with the reply's query, status and count (no content)."""
        log: structlog.typing.FilteringBoundLogger = self._log.bind(
            query_id=out.reply.query_id, status=out.reply.status, records=len(out.reply.records))
        return log

    # -- answering -----------------------------------------------------------------------

    async def answer(self, token: bytes | str) -> SignedReply | None:
        """The signed reply to one question token, or ``None`` when it is refused (or its
        deadline passes first)."""
        question = self._admit(token)
        if question is None:
            return None
        try:
            async with asyncio.timeout(_seconds_left(question)):
                return await self._answer(question)
        except TimeoutError:
            self._timed_out(question)
            return None

    def _admit(self, token: bytes | str) -> Question | None:
        """The verified question, or ``None`` (logged) when refused or seen before."""
        try:
            question = self.verify_question(token)
        except QuestionRefused as exc:
            self._log.warning("question refused", reason=exc.reason, detail=exc.detail)
            return None
        if self._duplicate(question):
            self._log.info("duplicate question ignored", query_id=question.query_id)
            return None
        return question

    def _timed_out(self, question: Question) -> None:
        self._log.warning("deadline passed before the record system answered: no reply",
                          query_id=question.query_id, status="timeout", records=0)

    async def _answer(self, question: Question) -> SignedReply:
        """Read, filter, log the disclosure and sign; the caller bounds it by the deadline."""
        log = self._log.bind(query_id=question.query_id)
        started = time.monotonic()
        reply, dropped, unreadable = await self._reply_to(question, log)
        reply = await self._record(question, reply, log)
        self.handled += 1
        signed = sign(msgspec.json.encode(reply), self.config.key, typ=REPLY_TYP)
        if log.is_enabled_for(logging.INFO):  # the counts below cost more than the log call
            log.info(
                "question answered",
                status=reply.status,
                records=len(reply.records),
                disclosed=dict(Counter(record_type(r) for r in reply.records)),
                withheld=reply.blocked,
                dropped=dropped,
                unreadable=unreadable,
                truncated=reply.truncated,
                consumer=question.consumer.organisation.id,
                unit=question.consumer.user.unit.id,
                user=question.consumer.user.id,
                basis=question.basis,
                types=question.types,
                latency_ms=round((time.monotonic() - started) * 1000),
            )
        return SignedReply(topic=question.reply_topic, token=signed, reply=reply,
                           deadline=question.deadline)

    async def _record(self, q: Question, reply: Reply,
                      log: structlog.typing.FilteringBoundLogger) -> Reply:
        """Enter ``reply`` in the disclosure log; if that fails, an ``error`` reply instead."""
        disclosures = self._disclosures
        if disclosures is None:
            return reply
        try:
            await disclosures.record(disclosure_entry(q, reply, replica=self.config.replica))
        except Exception as exc:  # noqa: BLE001  fail closed: nothing leaves without a log entry
            log.error("disclosure log unavailable: replying error", error=type(exc).__name__,
                      detail=str(exc)[:200])
            return Reply(query_id=q.query_id, producer=self.config.producer, status="error",
                         reason="disclosure log unavailable")
        return reply

    def verify_question(self, token: bytes | str) -> Question:
        """Verify and decode a question token; raises :class:`QuestionRefused`."""
        try:
            _, payload = verify(token, self.registry.broker_key, typ=QUESTION_TYP)
        except UnknownKey as exc:
            raise QuestionRefused("unknown-key", str(exc)) from exc
        except BadSignature as exc:
            raise QuestionRefused("bad-signature", str(exc)) from exc
        except (BadToken, JoseError, ValueError) as exc:
            raise QuestionRefused("not-a-jws", str(exc)) from exc
        try:
            q = _question_decoder.decode(payload)
        except HOSTILE_DECODE_ERRORS as exc:
            raise QuestionRefused("bad-payload", str(exc)) from exc
        if q.broker != self.registry.broker.id:
            raise QuestionRefused("wrong-broker", f"from {q.broker!r}")
        prefix = f"{self.config.mqtt.prefix}/r/"
        rest = q.reply_topic.removeprefix(prefix)
        if rest == q.reply_topic or not rest or any(c in rest for c in "+#\0"):
            raise QuestionRefused("bad-reply-topic", f"must start with {prefix!r}")
        try:
            if normalise(q.subject) != q.subject:
                raise InvalidPersonId("not in 12-digit form")
        except InvalidPersonId as exc:
            raise QuestionRefused("bad-subject", str(exc)) from exc
        now = _now_ms()
        if q.deadline <= now:
            raise QuestionRefused("expired", f"deadline passed {now - q.deadline} ms ago")
        if q.iat * 1000 > now + CLOCK_SKEW_MS:
            raise QuestionRefused("not-yet-valid", "iat is in the future")
        if q.deadline > now + MAX_QUESTION_LIFETIME_MS + CLOCK_SKEW_MS:
            raise QuestionRefused("deadline-too-far", "deadline is more than 300 s away")
        return q

    def _duplicate(self, q: Question) -> bool:
        """Seen before? An expired question is refused anyway, so its id is forgotten then
        (and the oldest beyond :data:`MAX_SEEN`, which bounds the memory)."""
        now = _now_ms()
        heap, seen = self._seen_until, self._seen
        while heap and (heap[0][0] <= now or len(heap) >= MAX_SEEN):
            seen.discard(heapq.heappop(heap)[1])
        if q.query_id in seen:
            return True
        seen.add(q.query_id)
        heapq.heappush(heap, (q.deadline, q.query_id))
        return False

    def _unblock_read(self, q: Question, log: structlog.typing.FilteringBoundLogger) -> bool:
        """May this question read blocked records here? (Stage 2 repeated where we can see.)"""
        u = q.unblock
        if u is None or u.step != "read" or self.config.producer not in (u.producers or ()):
            return False
        if q.basis == "consent" or (q.basis == "emergency" and q.consumer.kind == "vårdgivare"):
            return True
        log.warning("unblock read refused: the basis does not allow lifting a block",
                    basis=q.basis, kind=q.consumer.kind)
        return False

    async def _reply_to(
        self, q: Question, log: structlog.typing.FilteringBoundLogger
    ) -> tuple[Reply, dict[str, int], dict[str, int]]:
        """The reply, what the rules dropped (by rule) and what was unreadable (by
        ``type:reason``)."""
        def error(reason: str) -> tuple[Reply, dict[str, int], dict[str, int]]:
            return Reply(query_id=q.query_id, producer=self.config.producer, status="error",
                         reason=reason), {}, {}

        backend, blocks_source = self._backend, self._blocks
        if backend is None or blocks_source is None:
            raise AdapterError("adapter has no backend or block source: call run() first")
        own = q.own_view
        # The own view reads only what this producer offers there (the registry says).
        types = frozenset(q.types) & (
            self.producer.types if own is None else self.producer.ombud_types
            if own.acting_as == "ombud" else self.producer.own_view_types)
        if own is None and q.basis is None:
            log.warning("question without a basis and not for the own view: answered error")
            return error("question has no basis")
        if not types:
            return Reply(query_id=q.query_id, producer=self.config.producer,
                         status="no_data"), {}, {}
        if own is not None and own.acting_as == "guardian" and self._guardians is not None:
            try:
                barred = await asyncio.to_thread(self._guardians.is_blocked, child=q.subject,
                                                 guardian=own.actor)
            except Exception as exc:  # noqa: BLE001  fail closed
                log.error("guardian block register unavailable", error=type(exc).__name__)
                return error("guardian block register unavailable")
            if barred:
                # Looks exactly like a source with nothing to show.
                return Reply(query_id=q.query_id, producer=self.config.producer,
                             status="no_data"), {"guardian-blocked": 1}, {}
        # The caller's deadline bounds both reads: it cancels them (CancelledError is no
        # Exception, so it passes the handlers below and becomes the caller's TimeoutError).
        try:
            blocks: list[Block] = await blocks_source.blocks_for(q.subject)
        except Exception as exc:  # noqa: BLE001  fail closed: never answer as if no blocks
            log.error("block register unavailable", error=type(exc).__name__,
                      detail=str(exc)[:200])
            return error("block register unavailable")
        try:
            # the backend's own log lines name the query too
            with structlog.contextvars.bound_contextvars(query_id=q.query_id):
                result = await backend.fetch(q.subject, types, q.period)
        except Exception as exc:  # noqa: BLE001  any backend failure is the source's error
            log.error("record system failed", error=type(exc).__name__)
            return error("record system error")
        disclosure = make_available(
            result.records,
            excluded_units=self.config.excluded_units,
            blocks=blocks,
            unblock_read=own is None and self._unblock_read(q, log),
            types=types,
        )
        unreadable = countable_unreadable(result.unreadable,
                                          excluded_units=self.config.excluded_units,
                                          blocks=blocks, types=types)
        if result.unreadable:
            log.warning("records held but unreadable: counted in the reply where no rule "
                        "withholds them",
                        unreadable=dict(sorted(Counter(
                            f"{u.type}:{u.reason}" for u in result.unreadable).items())),
                        counted=0 if own is not None else unreadable.total())
        dropped = dict(disclosure.dropped)
        if result.withheld:  # the backend's own rules (security labels): like a block
            dropped[RULE_BLOCK] = dropped.get(RULE_BLOCK, 0) + result.withheld
        records = disclosure.records
        withheld_blocked = disclosure.withheld_blocked or result.withheld > 0
        if own is not None:
            records, held = for_the_person(
                records, now=dt.datetime.fromtimestamp(time.time(), dt.UTC),
                release_delay_days=self.config.release_delay_days)
            dropped.update(held)
            # Only the person themself is told that blocked information exists.
            withheld_blocked = withheld_blocked and own.acting_as == "self"
            # An unreadable record may be one not approved for the patient, or inside its
            # release delay: the own view never counts them (docs/own-view.md).
            unreadable = Counter()
        reply = Reply(
            query_id=q.query_id,
            producer=self.config.producer,
            status="ok" if records or unreadable else "no_data",
            records=records,
            blocked=withheld_blocked,
            truncated=result.truncated and bool(records),
            unreadable=unreadable.total(),
        )
        return reply, dropped, dict(sorted(unreadable.items()))


def open_adapter(path: str | Path, *, mqtt_urls: str | None = None) -> Adapter:
    """The adapter a config file describes, with the registry it names; ``mqtt_urls``
    (comma-separated) in place of its MQTT servers (raises ``ValueError`` if malformed)."""
    config = load_adapter_config(path)
    if mqtt_urls:
        config = dataclasses.replace(config, mqtt=config.mqtt.with_urls(mqtt_urls))
    assert config.registry is not None  # always set when read from a file
    try:
        registry = load_registry(config.registry)
    except RegistryError as exc:
        raise AdapterConfigError(f"{config.source}: [adapter] registry: {exc}") from exc
    return Adapter(config, registry)
