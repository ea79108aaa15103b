"""The messages of the three channels: consumer → broker (HTTP), broker ↔ producer (MQTT).

Each channel has one decoder built once. Producers and brokers ignore fields they do
not know, so a field added with a default never breaks an older peer.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal

import msgspec

from .records import InfoType, OrgRef, Record, UnitRef

__all__ = [
    "ACTING_AS",
    "ANSWER_MEDIA_TYPE",
    "FHIR_MEDIA_TYPE",
    "LOA3",
    "LOA4",
    "NDJSON_MEDIA_TYPE",
    "OWN_QUERY_TYP",
    "PROBLEM_MEDIA_TYPE",
    "QUERY_MEDIA_TYPE",
    "QUERY_TYP",
    "QUESTION_TYP",
    "REPLY_TYP",
    "STAFF_ONLY_CLAIMS",
    "ActingAs",
    "Actor",
    "Answer",
    "Basis",
    "Consumer",
    "ErrorLine",
    "Health",
    "ListedProducer",
    "Mandate",
    "OwnQueryClaims",
    "OwnView",
    "ParticipantKind",
    "Period",
    "Presence",
    "Problem",
    "ProducerListing",
    "ProducerStatus",
    "QueryClaims",
    "Question",
    "Reply",
    "SourceLine",
    "SourceResult",
    "SourceStatus",
    "StreamLine",
    "SummaryLine",
    "TokenClaims",
    "Unblock",
    "User",
]

QUERY_TYP: Final = "samsvar-query+jwt"
OWN_QUERY_TYP: Final = "samsvar-own-query+jwt"
"""A citizen portal's query for the person's own view (SPEC section 9)."""
QUESTION_TYP: Final = "samsvar-question+jws"
REPLY_TYP: Final = "samsvar-reply+jws"
QUERY_MEDIA_TYPE: Final = "application/jwt"
ANSWER_MEDIA_TYPE: Final = "application/json"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
NDJSON_MEDIA_TYPE: Final = "application/x-ndjson"
"""A streamed answer: one :data:`StreamLine` per line."""
FHIR_MEDIA_TYPE: Final = "application/fhir+json"
"""The answer as a FHIR R4 ``Bundle`` (``docs/fhir.md``)."""

Basis = Literal["consent", "emergency", "lacks_capacity", "child"]
"""Legal basis for the access (SPEC section 6)."""

ActingAs = Literal["self", "guardian", "ombud"]
"""Whom the signed-in person acts as in the own view: themself, a child's guardian
(vårdnadshavare), or an ombud with a power of attorney."""
ACTING_AS: Final[tuple[str, ...]] = ("self", "guardian", "ombud")

LOA3: Final = "http://id.elegnamnden.se/loa/1.0/loa3"
LOA4: Final = "http://id.elegnamnden.se/loa/1.0/loa4"
"""The assurance levels (tillitsnivåer) of Sweden's e-identification framework that the
own view accepts; anything else (loa2, unknown) is below loa3."""

STAFF_ONLY_CLAIMS: Final[tuple[str, ...]] = ("user", "relation", "basis", "unblock")
"""Claims of a staff query that an own-view token must not carry."""

ParticipantKind = Literal["vårdgivare", "omsorgsgivare", "annan"]
"""Care giver, social care giver, or another participant (e.g. a citizen portal)."""

SourceStatus = Literal["ok", "no_data", "timeout", "unavailable", "error", "refused"]
ProducerStatus = Literal["ok", "no_data", "error", "refused"]
"""What a producer itself may say; ``timeout`` and ``unavailable`` are the broker's."""


class _Msg(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """``gc=False``: the garbage collector does not track these (they hold only strings,
    numbers, dates and lists of other wire types, so never a cycle). A reply brings a dozen
    of them, and every tracked one brings the next collection nearer (bench/RESULTS.md)."""


class User(_Msg, frozen=True, kw_only=True):
    """The employee asking, and their unit."""

    id: str
    name: str
    role: str
    unit: UnitRef


class Period(_Msg, frozen=True, kw_only=True):
    from_: dt.date | None = msgspec.field(default=None, name="from")
    to: dt.date | None = None


class Unblock(_Msg, frozen=True, kw_only=True):
    """Two-step unblock: ``locate`` reveals where, ``read`` releases named producers."""

    step: Literal["locate", "read"]
    producers: list[str] | None = None


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The claims every request JWT of a participant carries (RFC 7519): who signed it for
    whom, when, its once-only id, and the person it is about.

    Each kind of token adds its own claims and takes its encoding options from its family
    (:class:`QueryClaims`, :class:`~schemas.accesslog.ExtractClaims`).
    """

    iss: str
    aud: str
    iat: int
    exp: int
    jti: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    """Non-empty, at most 128 characters: the replay guard keeps it for the lifetime."""
    sub: str
    nbf: int | None = None
    """Not before (Unix seconds), honoured when present."""


class QueryClaims(TokenClaims, _Msg, frozen=True, kw_only=True):
    """The claims of a consumer's query JWT (SPEC section 3)."""

    user: User
    relation: bool
    basis: Basis
    types: Annotated[list[InfoType], msgspec.Meta(min_length=1)]
    period: Period | None = None
    unblock: Unblock | None = None
    deadline_ms: int | None = None


class Actor(_Msg, frozen=True, kw_only=True):
    """The signed-in person of an own-view query, as the portal's e-identification said."""

    id: str
    """Personnummer or samordningsnummer (any accepted spelling; normalised by the broker)."""
    loa: str
    """Assurance level URI, e.g. :data:`LOA3`."""
    auth_time: int
    """When the person signed in, epoch seconds."""


class Mandate(_Msg, frozen=True, kw_only=True):
    """Why the actor may act for the subject: for a guardian the population register
    (``source`` ``folkbokforing``, ``checked_at``); for an ombud a power of attorney
    (``source``, ``id``, ``valid_to``). Dates are ISO 8601 dates or date-times."""

    source: str
    checked_at: str | None = None
    id: str | None = None
    valid_to: str | None = None


class OwnQueryClaims(TokenClaims, _Msg, frozen=True, kw_only=True):
    """The claims of a citizen portal's own-view JWT (SPEC section 9): ``typ``
    :data:`OWN_QUERY_TYP`. No ``user``, ``relation``, ``basis`` or ``unblock``."""

    actor: Actor
    acting_as: ActingAs
    types: Annotated[list[InfoType], msgspec.Meta(min_length=1)]
    mandate: Mandate | None = None
    protected_identity: bool = False
    period: Period | None = None
    deadline_ms: int | None = None


class OwnView(_Msg, frozen=True, kw_only=True):
    """In a :class:`Question`: this question is the person's own view, so the producer
    applies the own-view rules (approved for the patient, release delay, a unit's block of
    a guardian) on top of its staff rules. ``actor`` is the 12-digit identity number."""

    actor: str
    acting_as: ActingAs
    loa: str


class Consumer(_Msg, frozen=True, kw_only=True):
    """Who asks, as the broker verified it (kind comes from the registry)."""

    organisation: OrgRef
    kind: ParticipantKind
    user: User


class Question(_Msg, frozen=True, kw_only=True, omit_defaults=False):
    """Broker → producer, signed by the broker once per query.

    Everything needed to route and trust it is here, so MQTT 3.1.1 suffices.
    """

    v: int = 1
    query_id: str
    broker: str
    """The broker's id (``aud`` of consumer queries): who signed this."""
    reply_topic: str
    iat: int
    deadline: int
    """Epoch milliseconds after which the broker no longer listens."""
    consumer: Consumer
    subject: str
    types: list[InfoType]
    period: Period | None = None
    basis: Basis | None
    """``None`` exactly when ``own_view`` is set: the person's own access needs no basis.
    A producer that predates the own view cannot decode such a question, and so never
    answers it by the staff rules."""
    unblock: Unblock | None = None
    own_view: OwnView | None = None


class Reply(_Msg, frozen=True, kw_only=True, omit_defaults=False):
    """Producer → broker, signed by the producer."""

    v: int = 1
    query_id: str
    producer: str
    status: ProducerStatus
    records: list[Record] = []
    blocked: bool = False
    """True when the producer withheld records because of a block (spärr)."""
    truncated: bool = False
    reason: str | None = None
    unreadable: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Records held for the asked types and period that could not be turned into records
    (never counting withheld ones)."""


class Presence(_Msg, frozen=True, kw_only=True):
    """Retained on ``{prefix}/presence/{producer}``; the last will says ``online: false``.

    A live adapter sends it again every ``heartbeat_ms`` (its heartbeat): the broker counts
    a producer whose latest one is older than three intervals as unavailable, as no MQTT
    cluster tested publishes the will of a client whose node died. Each replica also
    sends it on ``{prefix}/presence/{producer}/replica/{replica}``, where ``since`` is
    when the replica started (which replica answers without shared subscriptions:
    docs/operations.md)."""

    producer: str
    online: bool
    since: int = 0
    """Epoch milliseconds of the change (on a replica's topic: of the replica's start)."""
    at: int = 0
    """Epoch milliseconds when this message was sent (0: unknown, e.g. a last will)."""
    heartbeat_ms: int = 0
    """The sender's heartbeat interval; 0 from an adapter without heartbeats."""
    replica: str = ""
    """The replica that sent it."""
    not_ready: list[str] = []
    """Why the producer's record system cannot answer as configured (from the adapter's
    start-up check, e.g. a FHIR server that names no units); online all the same."""


class SourceResult(_Msg, frozen=True, kw_only=True, omit_defaults=False):
    producer: str
    organisation: OrgRef
    status: SourceStatus
    records: int = 0
    latency_ms: int | None = None
    truncated: bool = False
    unreadable: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Records the source holds for the question but could not read (SPEC section 3)."""


class Answer(_Msg, frozen=True, kw_only=True):
    """The aggregated answer to one query (``200 application/json``)."""

    query_id: str
    subject: str
    complete: bool
    blocked_information_exists: bool
    sources: list[SourceResult]
    records: list[Record]
    blocked_at: list[str] | None = None
    """Present only after an unblock ``locate`` (or ``read``) step."""
    acting_as: ActingAs | None = None
    """Present only in an own-view answer (SPEC section 9)."""


class Problem(_Msg, frozen=True, kw_only=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    rule: str | None = None
    """The named rule of the law that refused the query, for 403s."""


class Health(_Msg, frozen=True, kw_only=True):
    """``GET /healthz`` and ``GET /readyz``: ``alive``, ``ready``, or ``not ready`` with reasons."""

    status: Literal["alive", "ready", "not ready"]
    reasons: list[str] = []


class ListedProducer(_Msg, frozen=True, kw_only=True, omit_defaults=False):
    """One producer in ``GET /v1/producers``: its registry entry and its live presence."""

    id: str
    name: str
    organisation: OrgRef
    types: list[InfoType]
    own_view_types: list[InfoType] = []
    """The types this producer offers in the person's own view."""
    online: bool
    changed_at: float | None = None
    """Epoch seconds when the broker learnt of the last presence change; null if never seen."""
    not_ready: list[str] = []
    """What its adapter announced it cannot do as configured (e.g. a FHIR server that names
    no units): it is online, but its answers will lack records."""


class ProducerListing(_Msg, frozen=True, kw_only=True):
    """``GET /v1/producers``: every registered producer, in registry order."""

    producers: list[ListedProducer]


class _Line(_Msg, frozen=True, kw_only=True, tag_field="kind"):
    pass


class SourceLine(_Line, frozen=True, kw_only=True, tag="source"):
    """One source's part of a streamed answer, sent as soon as that source is settled.

    ``records`` went through exactly the filtering of the whole answer, newest first. A
    source holding only blocked information looks like ``no_data`` here too: whether
    anything is blocked is said only by the summary.
    """

    source: SourceResult
    records: list[Record]
    done: int
    """Sources settled so far, this one included."""
    total: int
    """Sources asked: the summary will list this many."""


class SummaryLine(_Line, frozen=True, kw_only=True, tag="summary"):
    """The last line of a streamed answer: the :class:`Answer` without its records.

    Sent only after the access-log entry with the disclosure counts is committed.
    """

    query_id: str
    subject: str
    complete: bool
    blocked_information_exists: bool
    sources: list[SourceResult]
    blocked_at: list[str] | None = None
    acting_as: ActingAs | None = None


class ErrorLine(_Line, frozen=True, kw_only=True, tag="error"):
    """Ends a stream that cannot be completed (no summary follows)."""

    problem: Problem


StreamLine = SourceLine | SummaryLine | ErrorLine
"""One line of ``application/x-ndjson``, tagged by ``kind``."""
