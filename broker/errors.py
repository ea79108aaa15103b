"""The broker's errors. Every refusal of a query carries its problem type.

    BrokerError(Exception)
    ├── ConfigError(BrokerError, ValueError)
    └── QueryRejected(BrokerError)              → problem+json with ``status`` and ``type``
        ├── MalformedQuery(QueryRejected)        400
        ├── RequestTimeout(QueryRejected)        408
        ├── UnsupportedMediaType(QueryRejected)  415
        ├── Unauthenticated(QueryRejected)       401
        ├── PolicyRefused(QueryRejected)         403, ``rule`` names the rule of the law
        ├── PayloadTooLarge(QueryRejected)       413
        ├── Overloaded(QueryRejected)            429, with ``retry_after``
        └── NotReady(QueryRejected)              503

A refusal carries a :class:`RefusalContext`: what was verified before it (participant,
claims, subject), which its access-log entry may state as fact.

:data:`PROBLEM_TYPES` lists every slug the broker raises, with its status: the OpenAPI
document is built from it and a test keeps it in step with the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar, Final, Literal, NamedTuple

if TYPE_CHECKING:
    from schemas.messages import OwnQueryClaims, QueryClaims
    from schemas.registry import Participant

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_TYPES",
    "BrokerError",
    "ConfigError",
    "Endpoint",
    "MalformedQuery",
    "NotReady",
    "Overloaded",
    "PayloadTooLarge",
    "PolicyRefused",
    "ProblemType",
    "QueryRejected",
    "RefusalContext",
    "RequestTimeout",
    "Unauthenticated",
    "UnsupportedMediaType",
]

PROBLEM_BASE: Final = "urn:samsvar:problem:"
"""Every problem ``type`` is this prefix and a stable slug, e.g.
``urn:samsvar:problem:replayed``."""


Endpoint = Literal["query", "extract", "own"]
"""``/v1/queries``, ``/v1/access-log/extract``, ``/v1/own/queries``."""


class ProblemType(NamedTuple):
    """What one problem slug means, its HTTP status, and which endpoints raise it:
    ``both`` is every endpoint (every signed request), ``queries`` the staff and the own
    view's queries."""

    status: int
    summary: str
    endpoints: Literal["query", "extract", "both", "own", "queries"] = "both"

    def raised_by(self, endpoint: Endpoint) -> bool:
        return self.endpoints in (endpoint, "both") or (
            self.endpoints == "queries" and endpoint in ("query", "own"))


PROBLEM_TYPES: Final[Mapping[str, ProblemType]] = MappingProxyType({
    "malformed-token": ProblemType(400, "the body is not a compact JWS, or its payload not JSON"),
    "malformed-claims": ProblemType(400, "the claims do not match their schema"),
    "invalid-person-id": ProblemType(400, "`sub` is not a valid personnummer or samordningsnummer"),
    "no-types": ProblemType(400, "`types` names no information type", "queries"),
    "invalid-period": ProblemType(400, "`period.from` is after `period.to`"),
    "invalid-deadline": ProblemType(400, "`deadline_ms` is not positive", "queries"),
    "staff-claims-in-own-view": ProblemType(
        400, "an own-view token carries `user`, `relation`, `basis` or `unblock`", "own"),
    "duplicate-member": ProblemType(
        400, "the claims name a member twice (never read as \"last one wins\")"),
    "unknown-key": ProblemType(
        401, "`iss` and `kid` name no key of a participant with the role the request needs "
             "(an unknown issuer, an unknown key and a missing role get this same answer, "
             "before the signature is checked)"),
    "bad-signature": ProblemType(401, "the signature does not verify, or `alg` is not accepted"),
    "bad-token": ProblemType(401, "the JOSE header is unreadable, names a member twice, has "
                                  "`crit`, or `typ` is wrong"),
    "wrong-audience": ProblemType(401, "`aud` is not this broker's id"),
    "expired": ProblemType(401, "`exp` has passed"),
    "not-yet-valid": ProblemType(401, "`iat` or `nbf` is in the future"),
    "lifetime": ProblemType(401, "`exp - iat` is not 1..300 s (the configured maximum)"),
    "replayed": ProblemType(401, "this `jti` has been used before, within its lifetime"),
    "unit-not-of-issuer": ProblemType(
        403, "`user.id` or `user.unit.id` is not an HSA-id of the issuing organisation", "query"),
    "relation-required": ProblemType(403, "`relation` is not true", "query"),
    "emergency-care-giver-only": ProblemType(
        403, "basis `emergency`: only a care giver (vårdgivare)", "query"),
    "child-under-18": ProblemType(403, "basis `child`: the person is 18 or older", "query"),
    "unblock-basis": ProblemType(
        403, "lifting a block needs basis `consent` or `emergency`", "query"),
    "unblock-emergency-care-giver-only": ProblemType(
        403, "a social care giver never lifts a block in an emergency", "query"),
    "unblock-read-names-producers": ProblemType(
        403, "unblock step `read` must name the producers", "query"),
    "assurance-too-low": ProblemType(
        403, "the sign-in is below assurance level 3 (loa3), or older than one hour", "own"),
    "type-not-for-person": ProblemType(
        403, "`care_documentation`, `alerts` and `functional_status` are never in the own "
             "view", "own"),
    "ombud-not-permitted": ProblemType(403, "acting as an ombud is off", "own"),
    "actor-not-subject": ProblemType(403, "acting as `self`, `actor.id` must be `sub`", "own"),
    "self-under-age": ProblemType(
        403, "under 13 no own access; 13-15 only `bookings` and `fixed_contacts`", "own"),
    "mandate-missing": ProblemType(
        403, "acting as `guardian` needs a `folkbokforing` mandate", "own"),
    "guardian-child-too-old": ProblemType(
        403, "a guardian reads only for a child under 13", "own"),
    "protected-identity": ProblemType(
        403, "with protected personal data only the person reads", "own"),
    "body-timeout": ProblemType(
        408, "the body did not arrive within the configured time; the connection is closed"),
    "too-large": ProblemType(413, "the body exceeds the configured maximum"),
    "unsupported-media-type": ProblemType(415, "the body is not sent as `application/jwt`"),
    "overloaded": ProblemType(429, "too many queries in flight; see `Retry-After`", "queries"),
    "overloaded-consumer": ProblemType(
        429, "too many queries in flight for this consumer organisation", "queries"),
    "mqtt-disconnected": ProblemType(503, "the broker is not connected to MQTT", "queries"),
    "access-log-unavailable": ProblemType(
        503, "the access log cannot be written or read; nothing is disclosed"),
    "replay-store-unavailable": ProblemType(
        503, "the shared replay store (PostgreSQL) cannot be reached; no token is accepted"),
})
"""Every problem slug the broker raises. A 403's slug is the rule of the law that refused."""


@dataclass(frozen=True, slots=True)
class RefusalContext:
    """What was verified of a request before it was refused; ``None``: not (yet) verified,
    so not logged as fact."""

    participant: Participant | None = None
    """The participant whose key signed the request."""
    claims: QueryClaims | OwnQueryClaims | None = None
    """A query's claims, once its signature verified (never a log extract's)."""
    subject: str | None = None
    """The person asked about, normalised."""

    def adding(self, *, participant: Participant | None = None,
               claims: QueryClaims | OwnQueryClaims | None = None,
               subject: str | None = None) -> RefusalContext:
        """This context with what it did not hold yet (what it holds stays)."""
        return RefusalContext(
            participant=self.participant if self.participant is not None else participant,
            claims=self.claims if self.claims is not None else claims,
            subject=self.subject if self.subject is not None else subject)


_NOTHING_VERIFIED: Final = RefusalContext()


class BrokerError(Exception):
    """Root of every error the broker raises."""


class ConfigError(BrokerError, ValueError):
    """The broker's configuration cannot be used."""


class QueryRejected(BrokerError):
    """A query the broker answers with a problem instead of an answer."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init__(self, slug: str, detail: str, *, rule: str | None = None) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.rule = rule
        self.context = _NOTHING_VERIFIED
        """What was verified before the refusal: for the log."""

    def verified(self, *, participant: Participant | None = None,
                 claims: QueryClaims | OwnQueryClaims | None = None,
                 subject: str | None = None) -> None:
        """Add to :attr:`context` what was verified and it does not hold yet."""
        self.context = self.context.adding(participant=participant, claims=claims,
                                           subject=subject)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class MalformedQuery(QueryRejected):
    status = 400
    title = "Malformed query"


class RequestTimeout(QueryRejected):
    status = 408
    title = "Request body too slow"


class UnsupportedMediaType(QueryRejected):
    status = 415
    title = "Unsupported media type"


class Unauthenticated(QueryRejected):
    status = 401
    title = "Not authenticated"


class PolicyRefused(QueryRejected):
    status = 403
    title = "Refused by the law's access rules"


class PayloadTooLarge(QueryRejected):
    status = 413
    title = "Request too large"


class Overloaded(QueryRejected):
    status = 429
    title = "Too many queries in flight"

    def __init__(self, slug: str, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(slug, detail)
        self.retry_after = retry_after


class NotReady(QueryRejected):
    status = 503
    title = "Broker not ready"
