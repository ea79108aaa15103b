"""The broker's core: authenticate a query, apply the law, fan out, gather, merge.

No HTTP and no MQTT here: :mod:`broker.http_api` feeds it request bodies and
:class:`~broker.ports.QuestionBus` carries its questions. Its ports (the bus, the access
log, the replay store) are given at construction; :mod:`broker.app` builds them and opens
and closes the log and the store around the HTTP app's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar
from zoneinfo import ZoneInfo

import msgspec
import structlog

from schemas.accesslog import (
    EXTRACT_TYP,
    AccessEntry,
    ExtractClaims,
    ExtractResponse,
    LoggedSource,
    LoggedUser,
)
from schemas.errors import (
    HOSTILE_DECODE_ERRORS,
    BadSignature,
    BadToken,
    DuplicateMember,
    InvalidPersonId,
)
from schemas.identity import hsa_organisation, normalise
from schemas.jose import (
    Header,
    PrivateKey,
    PublicKey,
    b64url_decode,
    read_header,
    reject_duplicate_members,
    sign,
    verify,
)
from schemas.messages import (
    OWN_QUERY_TYP,
    QUERY_TYP,
    QUESTION_TYP,
    STAFF_ONLY_CLAIMS,
    Consumer,
    OwnQueryClaims,
    OwnView,
    QueryClaims,
    Question,
    Unblock,
    User,
)
from schemas.records import UnitRef
from schemas.registry import Participant, Producer, Registry

from . import own_view, policy
from .accesslog import AccessLog, AccessLogError, collapse_streams
from .config import BrokerConfig
from .errors import (
    MalformedQuery,
    NotReady,
    Overloaded,
    PolicyRefused,
    QueryRejected,
    Unauthenticated,
)
from .fanout import Gatherer, Outcome, PendingQuery
from .merge import Merged, merge
from .observe import Observers
from .ports import QuestionBus
from .presence import OFFLINE_GRACE_S, PresenceTable
from .replay import ReplayStore, ReplayStoreError
from .stats import RollingStats

__all__ = ["LOG_FAILURE_HOLD_S", "AuthenticatedQuery", "QueryService"]

log = structlog.get_logger("samsvar.broker")

LOG_FAILURE_HOLD_S: Final = 10.0
"""How long a failed access-log append keeps ``/readyz`` at 503 (see ``not_ready``)."""
SWEDEN: Final = ZoneInfo("Europe/Stockholm")
HEARTBEAT_SWEEP_S: Final = 0.25
"""How often the broker looks for producers whose heartbeats stopped."""
"""Ages are counted on the Swedish calendar date (basis ``child``)."""


class _Issuer(msgspec.Struct):
    iss: str


_NO_SUCH_KEY: Final = ("no participant with the {role} role has a key registered under this iss "
                       "and kid; check both against the registry, and the role")


class _OwnClaimsAsSent(OwnQueryClaims, frozen=True, kw_only=True):
    """Own-view claims, and whether the token also carries a staff query's claims (it
    must not: a portal never speaks for an employee)."""

    user: Any = msgspec.UNSET
    relation: Any = msgspec.UNSET
    basis: Any = msgspec.UNSET
    unblock: Any = msgspec.UNSET


_Claims = TypeVar("_Claims", QueryClaims, ExtractClaims, _OwnClaimsAsSent)
_issuer_decoder: Final = msgspec.json.Decoder(_Issuer)
_claims_decoder: Final = msgspec.json.Decoder(QueryClaims)
_extract_decoder: Final = msgspec.json.Decoder(ExtractClaims)
_own_decoder: Final = msgspec.json.Decoder(_OwnClaimsAsSent)


@dataclass(frozen=True, slots=True)
class AuthenticatedQuery:
    """A query whose signature, claims and legal basis have been checked.

    The claims are kept as the verified JWT payload, one bytes object, and decoded again on
    each use (a few µs): decoded they are 17 objects, about 1 KB, which a query would hold
    for as long as it waits on its producers, and 10,000 may be in flight."""

    query_id: str
    payload: bytes
    """The JWT's payload as verified: :attr:`claims` decodes it."""
    participant: Participant
    subject: str
    decision: policy.Decision
    actor: str | None = None
    """Own view: the signed-in person's 12-digit identity number."""

    @property
    def claims(self) -> QueryClaims | OwnQueryClaims:
        """The claims, decoded from :attr:`payload` (own-view claims when ``actor`` is set)."""
        return (_claims_decoder if self.actor is None else _own_decoder).decode(self.payload)

    @property
    def own(self) -> OwnQueryClaims | None:
        """The own-view claims, or ``None`` for a staff query."""
        if self.actor is None:
            return None
        claims = self.claims
        assert isinstance(claims, OwnQueryClaims)
        return claims

    @property
    def unblock(self) -> Unblock | None:
        if self.actor is not None:
            return None
        claims = self.claims
        assert isinstance(claims, QueryClaims)
        return claims.unblock


class QueryService:
    """One per broker instance."""

    def __init__(
        self,
        *,
        config: BrokerConfig,
        registry: Registry,
        key: PrivateKey,
        bus: QuestionBus,
        access_log: AccessLog,
        replay: ReplayStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if key.kid not in registry.broker.keys:
            raise ValueError(f"the broker's key {key.kid!r} is not registered in [broker] keys")
        self.config = config
        self.registry = registry
        self._key = key
        self._clock = clock
        self.presence = PresenceTable(frozenset(registry.producers))
        self.gatherer = Gatherer(registry)
        self.bus = bus
        self.access_log = access_log
        self.replay = replay
        """Seen ``jti``s: beside the access log (shared by instances with PostgreSQL)."""
        self.in_flight = 0
        self._in_flight_by_org: dict[str, int] = {}
        self._log_failure: tuple[float, str] | None = None
        """When the last append failed, and why; ``None`` once one succeeds."""
        self.stats = RollingStats()
        self.observers = Observers(self.stats)
        """Told what became of each query: the dashboard's stats, and the metrics."""

    # -- readiness -----------------------------------------------------------------

    async def not_ready(self) -> list[str]:
        """Why a query would get 503 now (empty: ready), for ``/readyz``.

        An append that failed (say, the disk is full) makes the log count as unwritable
        for :data:`LOG_FAILURE_HOLD_S`, whatever a probe says: SQLite opens and closes an
        empty transaction on a full disk. After that, or as soon as an append succeeds,
        the probe decides again.
        """
        reasons = []
        if not self.bus.connected.is_set():
            reasons.append("not connected to MQTT")
        failure = self._log_failure
        if failure is not None and time.monotonic() - failure[0] < LOG_FAILURE_HOLD_S:
            reasons.append(f"the access log is not writable: {failure[1]}")
        elif not await self.access_log.writable():
            reasons.append("the access log is not writable")
        if not await self.replay.writable():
            reasons.append("the replay store cannot be reached")
        return reasons

    # -- authentication and the law -------------------------------------------------

    def _verified(
        self, token: bytes, *, typ: str, role: str, decoder: msgspec.json.Decoder[_Claims],
    ) -> tuple[_Claims, Participant, str, bytes]:
        """Signature, issuer, role, audience, lifetime and ``sub`` of a JWT (then the caller
        awaits :meth:`_first_use`, the replay check, before anything else), and its payload.

        Before the signature is checked, an unknown issuer, an unknown key and a participant
        without ``role`` get one and the same 401 (:meth:`_registered_key`).
        """
        parts = token.strip().split(b".")
        if len(parts) != 3:
            raise MalformedQuery("malformed-token", "the body must be a compact JWS (a signed JWT)")
        try:
            issuer = _issuer_decoder.decode(b64url_decode(parts[1])).iss
        except (BadToken, *HOSTILE_DECODE_ERRORS) as exc:
            raise MalformedQuery("malformed-token",
                                 f"the JWT payload is unreadable: {exc}") from exc
        try:
            header = read_header(token)
        except BadSignature as exc:
            raise Unauthenticated("bad-signature", str(exc)) from exc
        except BadToken as exc:
            raise Unauthenticated("bad-token", str(exc)) from exc
        if header.typ != typ:  # before the registry: the answer must not depend on it
            raise Unauthenticated("bad-token", f"JWS typ must be {typ!r}")
        participant, key = self._registered_key(issuer, header, role)
        try:
            _, payload = verify(token, lambda h: key, typ=typ)
        except BadSignature as exc:
            raise Unauthenticated("bad-signature", str(exc)) from exc
        except BadToken as exc:
            raise Unauthenticated("bad-token", str(exc)) from exc
        try:
            try:
                reject_duplicate_members(payload)
            except DuplicateMember as exc:
                raise MalformedQuery("duplicate-member", f"the JWT claims: {exc}") from exc
            except BadToken as exc:
                raise MalformedQuery("malformed-token",
                                     f"the JWT payload is not a JSON object: {exc}") from exc
            try:
                claims = decoder.decode(payload)
            except msgspec.ValidationError as exc:
                raise MalformedQuery("malformed-claims",
                                     f"the JWT claims are invalid: {exc}") from exc
            except HOSTILE_DECODE_ERRORS as exc:
                raise MalformedQuery("malformed-token",
                                     f"the JWT payload is not JSON: {exc}") from exc
        except QueryRejected as exc:
            exc.verified(participant=participant)  # signed by it: logged
            raise
        cfg = self.config
        try:
            if claims.aud != self.registry.broker.id:
                raise Unauthenticated("wrong-audience",
                                      f"aud must be this broker's id {self.registry.broker.id!r}")
            now = self._clock()
            if claims.exp < now - cfg.clock_skew_s:
                raise Unauthenticated("expired", "the token has expired")
            if claims.iat > now + cfg.clock_skew_s:
                raise Unauthenticated("not-yet-valid", "the token is issued in the future")
            if claims.nbf is not None and claims.nbf > now + cfg.clock_skew_s:
                raise Unauthenticated("not-yet-valid", "the token's nbf is in the future")
            if not 0 < claims.exp - claims.iat <= cfg.max_token_lifetime_s:
                raise Unauthenticated("lifetime",
                                      f"exp - iat must be 1..{cfg.max_token_lifetime_s} s")
            try:
                subject = normalise(claims.sub)
            except InvalidPersonId as exc:
                raise MalformedQuery("invalid-person-id", f"sub: {exc}") from exc
        except QueryRejected as exc:
            exc.verified(participant=participant,
                         claims=claims if isinstance(claims, QueryClaims | OwnQueryClaims)
                         else None)
            raise
        return claims, participant, subject, payload

    def _registered_key(self, issuer: str, header: Header,
                        role: str) -> tuple[Participant, PublicKey]:
        """The participant and key a token names, if the participant holds ``role``.

        Whatever is missing (the participant, the key, the role), the refusal is the same
        401, word for word, so nobody can probe the registry; the log line says which.
        """
        participant = self.registry.participants.get(issuer)
        reason = None
        if participant is None:
            reason = "unknown-issuer"
        elif role not in participant.roles:
            reason = f"no-{role}-role"
        elif header.kid not in participant.keys:
            reason = "unknown-kid"
        if reason is not None:
            log.info("token_key_not_registered", issuer=issuer, kid=header.kid, role=role,
                     reason=reason)
            raise Unauthenticated("unknown-key", _NO_SUCH_KEY.format(role=role))
        assert participant is not None
        return participant, participant.keys[header.kid]

    async def _first_use(self, claims: QueryClaims | ExtractClaims | OwnQueryClaims,
                         participant: Participant) -> None:
        """The replay check, right after :meth:`_verified` and before the law: a ``jti`` is
        accepted once within its lifetime (and the clock skew). Fails closed."""
        try:
            # remembered while the token could still pass the lifetime check
            first = await self.replay.first_use(participant.id, claims.jti,
                                                claims.exp + self.config.clock_skew_s,
                                                now=int(self._clock()))
        except ReplayStoreError as exc:
            log.error("replay_store_failed", reason=str(exc))
            # the callers add what was verified to the refusal's context, for the log
            raise NotReady("replay-store-unavailable",
                           "the replay store cannot be reached; no token is accepted") from exc
        if not first:
            raise Unauthenticated("replayed", "this jti has been used before")

    async def authenticate(self, token: bytes) -> AuthenticatedQuery:
        """Check a query JWT end to end, the law included; raises :class:`QueryRejected`."""
        claims, participant, subject, payload = self._verified(
            token, typ=QUERY_TYP, role="consumer", decoder=_claims_decoder)
        try:
            await self._first_use(claims, participant)
            return self._check_query(claims, participant, subject, payload)
        except QueryRejected as exc:
            exc.verified(participant=participant, claims=claims, subject=subject)
            raise

    async def authenticate_own(self, token: bytes) -> AuthenticatedQuery:
        """Check an own-view JWT (SPEC section 9) end to end, its rules included."""
        claims, participant, subject, payload = self._verified(
            token, typ=OWN_QUERY_TYP, role="citizen-portal", decoder=_own_decoder)
        try:
            await self._first_use(claims, participant)
            return self._check_own(claims, participant, subject, payload)
        except QueryRejected as exc:
            exc.verified(participant=participant, claims=claims, subject=subject)
            raise

    def _check_own(self, claims: _OwnClaimsAsSent, participant: Participant,
                   subject: str, payload: bytes) -> AuthenticatedQuery:
        staff = [name for name in STAFF_ONLY_CLAIMS
                 if getattr(claims, name) is not msgspec.UNSET]
        if staff:
            raise MalformedQuery("staff-claims-in-own-view",
                                 f"an own-view token must not carry {', '.join(staff)}: "
                                 "send a staff query to /v1/queries instead")
        try:
            actor = normalise(claims.actor.id)
        except InvalidPersonId as exc:
            raise MalformedQuery("invalid-person-id", f"actor.id: {exc}") from exc
        self._check_shape(claims)
        now = self._clock()
        today = dt.datetime.fromtimestamp(now, SWEDEN).date()
        decision = own_view.decide_own(claims, actor=actor, subject=subject, now=now,
                                       today=today, ombud_types=self.config.ombud_types)
        if not decision.allowed:
            assert decision.rule is not None
            refusal = PolicyRefused(decision.rule, decision.reason, rule=decision.rule)
            refusal.verified(subject=subject)
            raise refusal
        return AuthenticatedQuery(str(uuid.uuid4()), payload, participant, subject,
                                  policy.ALLOWED, actor=actor)

    @staticmethod
    def _check_shape(claims: QueryClaims | OwnQueryClaims) -> None:
        if not claims.types:
            raise MalformedQuery("no-types", "types must name at least one information type")
        period = claims.period
        if period and period.from_ and period.to and period.from_ > period.to:
            raise MalformedQuery("invalid-period", "period.from is after period.to")
        if claims.deadline_ms is not None and claims.deadline_ms <= 0:
            raise MalformedQuery("invalid-deadline", "deadline_ms must be positive")

    async def authenticate_extract(self, token: bytes
                                   ) -> tuple[ExtractClaims, Participant, str]:
        """Check a log-extract JWT: only a participant with the log-extract role."""
        claims, participant, subject, _ = self._verified(
            token, typ=EXTRACT_TYP, role="log-extract", decoder=_extract_decoder)
        try:
            await self._first_use(claims, participant)
        except QueryRejected as exc:
            exc.verified(participant=participant, subject=subject)
            raise
        return claims, participant, subject

    def _check_query(self, claims: QueryClaims, participant: Participant,
                     subject: str, payload: bytes) -> AuthenticatedQuery:
        self._check_shape(claims)
        org = hsa_organisation(participant.id)
        if not (hsa_organisation(claims.user.id) == org
                and hsa_organisation(claims.user.unit.id) == org):
            raise PolicyRefused(
                "unit-not-of-issuer",
                f"user.id and user.unit.id must be HSA-ids of the issuing organisation "
                f"(beginning {org}-): a user asks from a unit of their own organisation",
                rule="unit-not-of-issuer")
        today = dt.datetime.fromtimestamp(self._clock(), SWEDEN).date()
        decision = policy.decide(claims, kind=participant.kind, subject=subject, today=today)
        if not decision.allowed:
            assert decision.rule is not None
            refusal = PolicyRefused(decision.rule, decision.reason, rule=decision.rule)
            refusal.verified(subject=subject)
            raise refusal
        return AuthenticatedQuery(str(uuid.uuid4()), payload, participant, subject, decision)

    # -- fan out and gather -------------------------------------------------------

    def producers_for(self, query: AuthenticatedQuery,
                      claims: QueryClaims | OwnQueryClaims | None = None,
                      ) -> tuple[Producer, ...]:
        """The producers asked: serving the types, or, for the own view, offering them
        there (the registry's ``own_view_types``). ``claims``: the query's, if decoded."""
        claims = query.claims if claims is None else claims
        if isinstance(claims, OwnQueryClaims):
            return self.registry.producers_for_own_view(
                claims.types, ombud=claims.acting_as == "ombud")
        return self.registry.producers_for(claims.types)

    def deadline_ms(self, claims: QueryClaims | OwnQueryClaims) -> int:
        return min(claims.deadline_ms or self.config.default_deadline_ms,
                   self.config.max_deadline_ms)

    async def ask(
        self,
        query: AuthenticatedQuery,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_admitted: Callable[[], Awaitable[None]] | None = None,
        logged: bool = False,
    ) -> Merged:
        """Ask every producer serving the types; return the merged answer.

        ``on_admitted`` is awaited once the query is admitted (connected, under the
        in-flight limits) and before any producer is asked; what it raises ends the query.
        ``logged``: then log the answer durably, as :meth:`answer` says.
        """
        bus = self.bus
        org = query.participant.id
        refusal: QueryRejected | None = None
        if not bus.connected.is_set():
            refusal = NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
        elif self.in_flight >= self.config.max_in_flight:
            refusal = Overloaded("overloaded", "too many queries in flight; retry shortly")
        elif self._in_flight_by_org.get(org, 0) >= self.config.max_in_flight_per_consumer:
            refusal = Overloaded("overloaded-consumer",
                                 f"too many queries in flight for {org}; retry shortly")
        if refusal is not None:
            await self._not_admitted(query, refusal)
            raise refusal
        self.in_flight += 1
        self._in_flight_by_org[org] = self._in_flight_by_org.get(org, 0) + 1
        try:
            if on_admitted is not None:
                await on_admitted()
            # The rest in this frame, not in a coroutine of its own: each frame a query
            # holds while it waits costs ~270 B, and 10,000 queries may be in flight.
            claims = query.claims
            producers = self.producers_for(query, claims)
            deadline_ms = self.deadline_ms(claims)
            pending = self._open(query, producers, deadline_ms, on_outcome)
            try:
                question = self._signed_question(query, claims, bus, deadline_ms)
                del claims  # decoded again below: not held through the wait
                # Neither the question nor the dict of failures is bound past this loop.
                for producer_id, exc in (await bus.publish_questions(
                        [p.id for p in producers if pending.awaits(p.id)],
                        question, expiry_s=-(-deadline_ms // 1000),
                        timeout_s=deadline_ms / 1000)).items():  # never past the deadline
                    log.warning("publish_failed", query_id=query.query_id,
                                producer=producer_id, reason=str(exc) or type(exc).__name__)
                    pending.give_up(Outcome(pending.outcomes[producer_id].producer,
                                            "unavailable"))
                del question
                await self.gatherer.settled(
                    pending, pending.started + deadline_ms / 1000 - time.monotonic())
            finally:
                self.gatherer.close(query.query_id)
            merged = self._merged(query, producers, pending)
        finally:
            self.in_flight -= 1
            left = self._in_flight_by_org[org] - 1
            if left:
                self._in_flight_by_org[org] = left
            else:
                del self._in_flight_by_org[org]
        if logged:
            await self._append(self._answered_entry(query, merged))
            self.observers.query_answered(time.monotonic() - pending.started)
        return merged

    async def _not_admitted(self, query: AuthenticatedQuery, refusal: QueryRejected) -> None:
        """A query refused before any producer was asked (429, or 503 without MQTT): its
        ``jti`` is given back, so the same token may be sent again after ``Retry-After``,
        and the refusal is logged like any other. Raises :class:`NotReady` if it cannot
        be logged."""
        claims = query.claims
        try:
            await self.replay.release(query.participant.id, claims.jti)
        except ReplayStoreError as exc:  # the token stays used: a new one is needed
            log.warning("replay_release_failed", query_id=query.query_id, reason=str(exc))
        refusal.verified(participant=query.participant, claims=claims, subject=query.subject)
        await self.log_refusal(refusal, query_id=query.query_id)

    def on_disconnect(self) -> None:
        """MQTT is gone: nobody's reply can reach this instance, so no question waits on."""
        self.presence.mark_all_offline()
        self.gatherer.everyone_gone()

    def on_presence(self, producer_id: str, payload: bytes) -> None:
        """A presence message: a producer that goes offline ends its waits as ``unavailable``."""
        was_online = self.presence.is_online(producer_id)
        if not (self.presence.update(producer_id, payload) and was_online):
            return
        state = self.presence.get(producer_id)
        if state is not None and not state.online:
            # Another replica may re-announce at once: decide after the grace period.
            asyncio.get_running_loop().call_later(OFFLINE_GRACE_S, self._gone_unless_back,
                                                  producer_id)

    async def watch_heartbeats(self, shutdown: asyncio.Event) -> None:
        """Until ``shutdown``: a producer whose heartbeats stopped (three intervals) is
        unavailable, and its open questions end ``unavailable`` rather than ``timeout``."""
        while not shutdown.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), HEARTBEAT_SWEEP_S)
            for producer_id in self.presence.stale():
                log.warning("producer_stale", producer=producer_id,
                            reason="no heartbeat for three intervals")
                self.gatherer.producer_gone(
                    producer_id, reason="the producer's heartbeats stopped while the question "
                                        "was open")

    def _gone_unless_back(self, producer_id: str) -> None:
        state = self.presence.get(producer_id)
        if state is None or not state.online:
            self.gatherer.producer_gone(producer_id)

    def _signed_question(self, query: AuthenticatedQuery,
                         claims: QueryClaims | OwnQueryClaims, bus: QuestionBus,
                         deadline_ms: int) -> bytes:
        """The question every producer gets, signed once (no frame keeps it while the
        answers are awaited: 10,000 queries may be in flight)."""
        now_ms = int(self._clock() * 1000)
        if isinstance(claims, QueryClaims):
            user, basis, own = claims.user, claims.basis, None
        else:
            assert query.actor is not None
            portal = query.participant
            # The portal asks for the signed-in person; its "unit" is the portal itself.
            user = User(id=query.actor, name="", role=f"own_view:{claims.acting_as}",
                        unit=UnitRef(id=portal.id, name=portal.name))
            basis = None
            own = OwnView(actor=query.actor, acting_as=claims.acting_as, loa=claims.actor.loa)
        question = Question(
            query_id=query.query_id, broker=self.registry.broker.id,
            reply_topic=bus.reply_topic, iat=now_ms // 1000,
            deadline=now_ms + deadline_ms,
            consumer=Consumer(organisation=query.participant.ref, kind=query.participant.kind,
                              user=user),
            subject=query.subject, types=sorted(set(claims.types)), period=claims.period,
            basis=basis, unblock=claims.unblock if isinstance(claims, QueryClaims) else None,
            own_view=own,
        )
        return sign(msgspec.json.encode(question), self._key, typ=QUESTION_TYP).encode("ascii")

    def _open(self, query: AuthenticatedQuery, producers: tuple[Producer, ...],
              deadline_ms: int, on_outcome: Callable[[Outcome], None] | None) -> PendingQuery:
        """Open the query's wait: the producers online are asked, the others are
        ``unavailable`` at once (no list of either outlives this, while the answers are
        awaited)."""
        online = [p for p in producers if self.presence.is_online(p.id)]
        offline = [p for p in producers if not self.presence.is_online(p.id)]
        pending = self.gatherer.open(query.query_id, online, offline, on_outcome=on_outcome)
        if on_outcome is not None:
            for p in offline:
                on_outcome(pending.outcomes[p.id])
        log.info("query_fanout", query_id=query.query_id, asked=len(online),
                 unavailable=len(offline), deadline_ms=deadline_ms)
        return pending

    def _merged(self, query: AuthenticatedQuery, producers: tuple[Producer, ...],
                pending: PendingQuery) -> Merged:
        """The answer from what each producer said, once the wait is over."""
        claims = query.claims
        merged = merge(query_id=query.query_id, subject=query.subject,
                       outcomes=[pending.outcomes[p.id] for p in producers],
                       unblock=claims.unblock if isinstance(claims, QueryClaims) else None,
                       types=frozenset(claims.types),
                       acting_as=(claims.acting_as if isinstance(claims, OwnQueryClaims)
                                  else None))
        for producer_id, count in merged.violations.items():
            log.warning("producer_violation", query_id=query.query_id, producer=producer_id,
                        dropped_records=count)
        for source in merged.answer.sources:
            replied = source.status not in ("timeout", "unavailable")
            self.observers.source_finished(
                source.producer, source.status,
                source.latency_ms / 1000 if replied and source.latency_ms is not None else None,
                source.unreadable)
        return merged

    # -- the access log -----------------------------------------------------------

    def answer(
        self,
        query: AuthenticatedQuery,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_admitted: Callable[[], Awaitable[None]] | None = None,
    ) -> Coroutine[Any, Any, Merged]:
        """Ask, then log durably; the answer may leave only after this returns.

        A streamed answer (:mod:`broker.streaming`) logs :meth:`log_opened` from
        ``on_admitted`` and sends each source from ``on_outcome``; this entry, with the
        disclosure counts, then completes it before the summary leaves.

        The coroutine is :meth:`ask`'s own (``logged``): a frame of its own, held while
        the query waits, would cost ~260 B per query in flight.
        """
        return self.ask(query, on_outcome=on_outcome, on_admitted=on_admitted, logged=True)

    async def log_refusal(self, exc: QueryRejected, *, query_id: str | None = None,
                          action: Literal["query", "extract"] = "query") -> str:
        """Log a refusal (400, 401, 403, 429, 503 but for the log's own) and return its
        query id; what was not verified is not logged as fact."""
        ctx = exc.context
        participant, claims = ctx.participant, ctx.claims
        entry = AccessEntry(
            time=dt.datetime.fromtimestamp(self._clock(), dt.UTC),
            query_id=query_id or str(uuid.uuid4()),
            instance=self.config.instance, outcome="refused", status=exc.status,
            rule=exc.rule or exc.slug,
            consumer=participant.ref if participant else None,
            consumer_kind=participant.kind if participant else None,
            subject=ctx.subject,
            types=sorted(set(claims.types)) if claims else [],
            period=claims.period if claims else None,
            **(_asker(claims) if claims is not None else {"action": action}),
        )
        await self._append(entry)
        return entry.query_id

    async def log_opened(self, query: AuthenticatedQuery) -> None:
        """Log durably that a streamed answer is about to start: who asks what about whom,
        and every producer that will be asked (``pending``). Raises :class:`NotReady`."""
        claims = query.claims
        await self._append(AccessEntry(
            time=dt.datetime.fromtimestamp(self._clock(), dt.UTC), query_id=query.query_id,
            instance=self.config.instance, outcome="opened", status=200,
            consumer=query.participant.ref, consumer_kind=query.participant.kind,
            flags=sorted(query.decision.flags), subject=query.subject,
            types=sorted(set(claims.types)), period=claims.period,
            sources=[LoggedSource(producer=p.id, organisation=p.organisation.ref,
                                  status="pending")
                     for p in self.producers_for(query)],
            **_asker(claims, actor=query.actor),
        ))

    def _answered_entry(self, query: AuthenticatedQuery, merged: Merged) -> AccessEntry:
        claims = query.claims
        answer = merged.answer
        return AccessEntry(
            time=dt.datetime.fromtimestamp(self._clock(), dt.UTC), query_id=query.query_id,
            instance=self.config.instance, outcome="answered", status=200,
            consumer=query.participant.ref, consumer_kind=query.participant.kind,
            flags=sorted(query.decision.flags), subject=query.subject,
            types=sorted(set(claims.types)), period=claims.period,
            **_asker(claims, actor=query.actor),
            sources=[LoggedSource(producer=s.producer, organisation=s.organisation,
                                  status=s.status,
                                  disclosed=merged.disclosed.get(s.producer, {}))
                     for s in answer.sources],
            blocked_information_exists=answer.blocked_information_exists,
        )

    async def _append(self, entry: AccessEntry) -> None:
        started = time.monotonic()
        try:
            await self.access_log.append(entry)
        except AccessLogError as exc:
            self._log_failure = (time.monotonic(), str(exc))
            log.error("access_log_failed", query_id=entry.query_id, reason=str(exc))
            raise NotReady("access-log-unavailable",
                           "the access log cannot be written; nothing is disclosed") from exc
        self._log_failure = None
        self.observers.access_log_committed(time.monotonic() - started)

    async def extract(self, token: bytes) -> ExtractResponse:
        """The person's log extract: every access to ``sub`` in the period."""
        claims, participant, subject = await self.authenticate_extract(token)
        period = claims.period
        if period and period.from_ and period.to and period.from_ > period.to:
            # An empty extract would tell the person nobody looked: refuse instead.
            refusal = MalformedQuery("invalid-period", "period.from is after period.to")
            refusal.verified(participant=participant, subject=subject)
            raise refusal
        try:
            proven = await self.access_log.extract_proven(subject, claims.period)
        except AccessLogError as exc:
            raise NotReady("access-log-unavailable", "the access log cannot be read") from exc
        # Who read the person's log is itself in the log before the extract leaves; the
        # person sees this call in their next extract.
        await self._append(AccessEntry(
            time=dt.datetime.fromtimestamp(self._clock(), dt.UTC), query_id=str(uuid.uuid4()),
            instance=self.config.instance, outcome="answered", status=200, action="extract",
            consumer=participant.ref, consumer_kind=participant.kind, subject=subject,
            period=claims.period))
        return ExtractResponse(subject=subject, period=claims.period,
                               accesses=collapse_streams(proven.entries),
                               checkpoint=proven.token, proofs=proven.proofs)


def _logged_user(claims: QueryClaims) -> LoggedUser:
    return LoggedUser(id=claims.user.id, name=claims.user.name, role=claims.user.role)


def _asker(claims: QueryClaims | OwnQueryClaims, *, actor: str | None = None) -> dict[str, Any]:
    """Who asked, as an access-log entry says it: the employee, unit, basis and unblock
    step of a staff query; the signed-in person, whom they act as, their assurance level
    and mandate for the own view (``actor`` normalised when it was verified)."""
    if isinstance(claims, QueryClaims):
        return {"action": "query", "unit": claims.user.unit, "user": _logged_user(claims),
                "basis": claims.basis, "unblock": claims.unblock}
    if actor is None:
        try:
            actor = normalise(claims.actor.id)
        except InvalidPersonId:
            actor = None  # not verified: not logged as fact
    return {"action": "own_view", "actor": actor, "acting_as": claims.acting_as,
            "loa": claims.actor.loa, "mandate": claims.mandate}
