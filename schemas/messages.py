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
    "ANSWER_MEDIA_TYPE",
    "PROBLEM_MEDIA_TYPE",
    "QUERY_MEDIA_TYPE",
    "QUERY_TYP",
    "QUESTION_TYP",
    "REPLY_TYP",
    "Answer",
    "Basis",
    "Consumer",
    "ParticipantKind",
    "Period",
    "Presence",
    "Problem",
    "ProducerStatus",
    "QueryClaims",
    "Question",
    "Reply",
    "SourceResult",
    "SourceStatus",
    "Unblock",
    "User",
]

QUERY_TYP: Final = "samsvar-query+jwt"
QUESTION_TYP: Final = "samsvar-question+jws"
REPLY_TYP: Final = "samsvar-reply+jws"
QUERY_MEDIA_TYPE: Final = "application/jwt"
ANSWER_MEDIA_TYPE: Final = "application/json"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"

Basis = Literal["consent", "emergency", "lacks_capacity", "child"]
"""Legal basis for the access (SPEC section 6)."""

ParticipantKind = Literal["vårdgivare", "omsorgsgivare", "annan"]
"""Care giver, social care giver, or another participant (e.g. a citizen portal)."""

SourceStatus = Literal["ok", "no_data", "timeout", "unavailable", "error", "refused"]
ProducerStatus = Literal["ok", "no_data", "error", "refused"]
"""What a producer itself may say; ``timeout`` and ``unavailable`` are the broker's."""


class _Msg(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    pass


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


class QueryClaims(_Msg, frozen=True, kw_only=True):
    """The claims of a consumer's query JWT (SPEC section 3)."""

    iss: str
    aud: str
    iat: int
    exp: int
    jti: str
    sub: str
    user: User
    relation: bool
    basis: Basis
    types: Annotated[list[InfoType], msgspec.Meta(min_length=1)]
    period: Period | None = None
    unblock: Unblock | None = None
    deadline_ms: int | None = None


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
    basis: Basis
    unblock: Unblock | None = None


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


class Presence(_Msg, frozen=True, kw_only=True):
    """Retained on ``{prefix}/presence/{producer}``; the last will says ``online: false``."""

    producer: str
    online: bool
    since: int = 0
    """Epoch milliseconds of the change."""


class SourceResult(_Msg, frozen=True, kw_only=True, omit_defaults=False):
    producer: str
    organisation: OrgRef
    status: SourceStatus
    records: int = 0
    latency_ms: int | None = None
    truncated: bool = False


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


class Problem(_Msg, frozen=True, kw_only=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    rule: str | None = None
    """The named rule of the law that refused the query, for 403s."""
