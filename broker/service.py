"""The broker's core: authenticate a query, apply the law, fan out, gather, merge.

No HTTP and no MQTT here: :mod:`broker.http_api` feeds it request bodies and
:class:`~broker.ports.QuestionBus` carries its questions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec
import structlog

from schemas.errors import BadSignature, BadToken, InvalidPersonId, UnknownKey
from schemas.identity import normalise
from schemas.jose import PrivateKey, b64url_decode, sign, verify
from schemas.messages import (
    QUERY_TYP,
    QUESTION_TYP,
    Consumer,
    QueryClaims,
    Question,
)
from schemas.registry import Participant, Registry

from . import policy
from .config import BrokerConfig
from .errors import MalformedQuery, NotReady, Overloaded, PolicyRefused, Unauthenticated
from .fanout import Gatherer, Outcome
from .merge import Merged, merge
from .ports import QuestionBus
from .presence import PresenceTable
from .replay import ReplayGuard

__all__ = ["AuthenticatedQuery", "QueryService"]

log = structlog.get_logger("samsvar.broker")


class _Issuer(msgspec.Struct):
    iss: str


_issuer_decoder: Final = msgspec.json.Decoder(_Issuer)
_claims_decoder: Final = msgspec.json.Decoder(QueryClaims)


@dataclass(frozen=True, slots=True)
class AuthenticatedQuery:
    """A query whose signature, claims and legal basis have been checked."""

    query_id: str
    claims: QueryClaims
    participant: Participant
    subject: str
    decision: policy.Decision


class QueryService:
    """One per broker instance."""

    def __init__(
        self,
        *,
        config: BrokerConfig,
        registry: Registry,
        key: PrivateKey,
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
        self.replay = ReplayGuard()
        self.bus: QuestionBus | None = None
        self.in_flight = 0

    # -- authentication and the law -------------------------------------------------

    def authenticate(self, token: bytes) -> AuthenticatedQuery:
        """Check a query JWT end to end; raises a :class:`QueryRejected` subclass."""
        parts = token.strip().split(b".")
        if len(parts) != 3:
            raise MalformedQuery("malformed-token", "the body must be a compact JWS (a signed JWT)")
        try:
            issuer = _issuer_decoder.decode(b64url_decode(parts[1])).iss
        except (BadToken, msgspec.DecodeError) as exc:
            raise MalformedQuery("malformed-token", f"the JWT payload is unreadable: {exc}") from exc
        participant = self.registry.participants.get(issuer)
        if participant is None:
            raise Unauthenticated("unknown-issuer", f"issuer {issuer!r} is not a registered participant")
        if "consumer" not in participant.roles:
            raise Unauthenticated("not-a-consumer", f"issuer {issuer!r} lacks the consumer role")
        try:
            _, payload = verify(token, lambda h: self.registry.participant_key(issuer, h),
                                typ=QUERY_TYP)
        except UnknownKey as exc:
            raise Unauthenticated("unknown-key", str(exc)) from exc
        except BadSignature as exc:
            raise Unauthenticated("bad-signature", str(exc)) from exc
        except BadToken as exc:
            raise Unauthenticated("bad-token", str(exc)) from exc
        try:
            claims = _claims_decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise MalformedQuery("malformed-claims", f"the JWT claims are invalid: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise MalformedQuery("malformed-token", f"the JWT payload is not JSON: {exc}") from exc
        return self._check_claims(claims, participant)

    def _check_claims(self, claims: QueryClaims, participant: Participant) -> AuthenticatedQuery:
        cfg = self.config
        if claims.aud != self.registry.broker.id:
            raise Unauthenticated("wrong-audience",
                                  f"aud must be this broker's id {self.registry.broker.id!r}")
        now = self._clock()
        if claims.exp < now - cfg.clock_skew_s:
            raise Unauthenticated("expired", "the token has expired")
        if claims.iat > now + cfg.clock_skew_s:
            raise Unauthenticated("not-yet-valid", "the token is issued in the future")
        if not 0 < claims.exp - claims.iat <= cfg.max_token_lifetime_s:
            raise Unauthenticated("lifetime", f"exp - iat must be 1..{cfg.max_token_lifetime_s} s")
        try:
            subject = normalise(claims.sub)
        except InvalidPersonId as exc:
            raise MalformedQuery("invalid-person-id", f"sub: {exc}") from exc
        if not claims.types:
            raise MalformedQuery("no-types", "types must name at least one information type")
        period = claims.period
        if period and period.from_ and period.to and period.from_ > period.to:
            raise MalformedQuery("invalid-period", "period.from is after period.to")
        if claims.deadline_ms is not None and claims.deadline_ms <= 0:
            raise MalformedQuery("invalid-deadline", "deadline_ms must be positive")
        if not self.replay.first_use(participant.id, claims.jti, claims.exp, now=int(now)):
            raise Unauthenticated("replayed", "this jti has been used before")
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        decision = policy.decide(claims, kind=participant.kind, subject=subject, today=today)
        if not decision.allowed:
            assert decision.rule is not None
            raise PolicyRefused(decision.rule, decision.reason, rule=decision.rule)
        return AuthenticatedQuery(str(uuid.uuid4()), claims, participant, subject, decision)

    # -- fan out and gather -------------------------------------------------------

    def deadline_ms(self, claims: QueryClaims) -> int:
        return min(claims.deadline_ms or self.config.default_deadline_ms,
                   self.config.max_deadline_ms)

    async def ask(
        self,
        query: AuthenticatedQuery,
        *,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> Merged:
        """Ask every producer serving the types; return the merged answer."""
        bus = self.bus
        if bus is None or not bus.connected.is_set():
            raise NotReady("mqtt-disconnected", "the broker is not connected to MQTT")
        if self.in_flight >= self.config.max_in_flight:
            raise Overloaded("overloaded", "too many queries in flight; retry shortly")
        self.in_flight += 1
        try:
            return await self._ask(bus, query, on_outcome)
        finally:
            self.in_flight -= 1

    async def _ask(
        self, bus: QuestionBus, query: AuthenticatedQuery,
        on_outcome: Callable[[Outcome], None] | None,
    ) -> Merged:
        claims = query.claims
        producers = self.registry.producers_for(claims.types)
        online = [p for p in producers if self.presence.is_online(p.id)]
        offline = [p for p in producers if not self.presence.is_online(p.id)]
        deadline_ms = self.deadline_ms(claims)
        now_ms = int(self._clock() * 1000)
        question = Question(
            query_id=query.query_id, broker=self.registry.broker.id,
            reply_topic=bus.reply_topic, iat=now_ms // 1000,
            deadline=now_ms + deadline_ms,
            consumer=Consumer(organisation=query.participant.ref, kind=query.participant.kind,
                              user=claims.user),
            subject=query.subject, types=sorted(set(claims.types)), period=claims.period,
            basis=claims.basis, unblock=claims.unblock,
        )
        token = sign(msgspec.json.encode(question), self._key, typ=QUESTION_TYP).encode("ascii")
        pending = self.gatherer.open(query.query_id, online, offline, on_outcome=on_outcome)
        if on_outcome is not None:
            for p in offline:
                on_outcome(pending.outcomes[p.id])
        log.info("query_fanout", query_id=query.query_id, asked=len(online),
                 unavailable=len(offline), deadline_ms=deadline_ms)
        try:
            expiry_s = -(-deadline_ms // 1000)
            results = await asyncio.gather(
                *(bus.publish_question(p.id, token, expiry_s=expiry_s) for p in online),
                return_exceptions=True,
            )
            for p, result in zip(online, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    log.warning("publish_failed", query_id=query.query_id, producer=p.id,
                                reason=str(result))
                    pending.waiting.discard(p.id)
                    pending.outcomes[p.id].status = "unavailable"
            if pending.waiting:
                remaining = pending.started + deadline_ms / 1000 - time.monotonic()
                try:
                    async with asyncio.timeout(max(0.0, remaining)):
                        await pending.done.wait()
                except TimeoutError:
                    pass
        finally:
            self.gatherer.close(query.query_id)
        merged = merge(query_id=query.query_id, subject=query.subject,
                       outcomes=[pending.outcomes[p.id] for p in producers],
                       unblock=claims.unblock)
        for producer_id, count in merged.violations.items():
            log.warning("producer_violation", query_id=query.query_id, producer=producer_id,
                        dropped_records=count)
        return merged
