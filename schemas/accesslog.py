"""The access log's entries and the person's log extract (SPEC section 7).

An entry says who asked what about whom, on which basis, and how many records of each
type each producer disclosed. It never holds content: no record, no text, no name of
the person. Entries are hash-chained in the order the log store commits them.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

import msgspec

from .messages import (
    ActingAs,
    Basis,
    Mandate,
    ParticipantKind,
    Period,
    SourceStatus,
    TokenClaims,
    Unblock,
)
from .records import OrgRef, UnitRef

__all__ = [
    "CHECKPOINT_TYP",
    "EXTRACT_TYP",
    "AccessEntry",
    "Checkpoint",
    "ExtractClaims",
    "ExtractResponse",
    "LoggedSource",
    "LoggedUser",
    "StoredEntry",
]

EXTRACT_TYP: Final = "samsvar-extract+jwt"
CHECKPOINT_TYP: Final = "samsvar-checkpoint+jws"


class _Log(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    pass


class LoggedUser(_Log, frozen=True, kw_only=True):
    id: str
    name: str
    role: str


class LoggedSource(_Log, frozen=True, kw_only=True):
    """One producer's part in an answer: its status and what it disclosed, by type."""

    producer: str
    organisation: OrgRef
    status: SourceStatus | Literal["pending"]
    """``pending`` only in an ``opened`` entry: asked, not yet answered."""
    disclosed: dict[str, int] = {}
    """Information type → number of records that reached the consumer."""


class AccessEntry(_Log, frozen=True, kw_only=True):
    """One question, answered or refused. Written durably before the answer leaves.

    A streamed answer (``application/x-ndjson``) has two entries with one ``query_id``:
    ``opened`` (every producer asked, status ``pending``) before its first line leaves,
    and ``answered`` (the disclosure counts) before its summary line. An ``opened`` entry
    with no ``answered`` one means the stream broke: read it as "anything the listed
    producers hold may have been disclosed".
    """

    time: dt.datetime
    query_id: str
    instance: str
    outcome: Literal["opened", "answered", "refused"]
    status: int
    """The HTTP status the consumer got."""
    rule: str | None = None
    """For a refusal: the rule of the law or the problem that refused it."""
    consumer: OrgRef | None = None
    consumer_kind: ParticipantKind | None = None
    unit: UnitRef | None = None
    user: LoggedUser | None = None
    basis: Basis | None = None
    flags: list[str] = []
    """E.g. ``lacks_capacity``: the basis the law asks to be visible in the log."""
    unblock: Unblock | None = None
    subject: str | None = None
    types: list[str] = []
    period: Period | None = None
    sources: list[LoggedSource] = []
    blocked_information_exists: bool = False
    action: Literal["query", "own_view", "extract"] = "query"
    """``own_view``: the person's own view through a citizen portal (SPEC section 9), with
    ``actor``, ``acting_as``, ``loa`` and ``mandate``; ``extract``: a call to
    ``POST /v1/access-log/extract`` about ``subject``, by ``consumer`` (the person's own
    portal, say); both show in the person's next extract."""
    actor: str | None = None
    """Own view: the signed-in person's 12-digit identity number."""
    acting_as: ActingAs | None = None
    loa: str | None = None
    """Own view: the assurance level of the actor's sign-in."""
    mandate: Mandate | None = None


class StoredEntry(_Log, frozen=True, kw_only=True):
    """An entry as the store keeps it: its place in the chain and its hashes."""

    seq: int
    prev_hash: str
    hash: str
    entry: AccessEntry


class Checkpoint(_Log, frozen=True, kw_only=True):
    """Signed by the broker: the chain had ``count`` entries ending in ``head_hash``."""

    seq: int
    """The last entry covered (0 for an empty log)."""
    head_hash: str
    time: dt.datetime
    instance: str
    reason: Literal["interval", "shutdown", "prune", "start"] = "interval"
    first_seq: int = 1
    """The first entry still kept; after ``samsvar log prune`` it is above 1."""


class ExtractClaims(TokenClaims, _Log, frozen=True, kw_only=True):
    """A log-extract request: a JWT (``typ`` ``samsvar-extract+jwt``) from a participant
    holding the ``log-extract`` role, e.g. a citizen portal, on the person's behalf."""

    period: Period | None = None


class ExtractResponse(_Log, frozen=True, kw_only=True):
    subject: str
    period: Period | None = None
    accesses: list[AccessEntry]
    """Every access to the person in the period, oldest first."""
