"""The access log's entries and the person's log extract (SPEC section 7).

An entry says who asked what about whom, on which basis, and how many records of each
type each producer disclosed. It never holds content: no record, no text, no name of
the person. Entries are hash-chained in the order the log store commits them, and the
log is an RFC 9162 Merkle tree over them (see :mod:`schemas.merkle`).
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
    "CheckpointMessage",
    "ConsistencyProof",
    "EntryProof",
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
    """A signed tree head: the log had ``seq`` entries, the last with chain hash
    ``head_hash``, and the RFC 9162 Merkle tree over them has root ``root``.

    Signed (compact JWS, ``typ`` :data:`CHECKPOINT_TYP`) by the broker instance that made
    it, published retained on ``{prefix}/checkpoint/{instance}`` and kept by every producer
    adapter that sees it (a witness).
    """

    seq: int
    """The tree size: the last entry covered (0 for an empty log)."""
    head_hash: str
    time: dt.datetime
    instance: str
    reason: Literal["interval", "shutdown", "prune", "start", "extract"] = "interval"
    first_seq: int = 1
    """The first entry still kept; after ``samsvar log prune`` it is above 1."""
    root: str | None = None
    """The Merkle tree head over entries 1..``seq`` (hex); ``None`` only in checkpoints
    signed before the log was a Merkle tree."""
    kid: str | None = None
    """The key that signed it (also in the JWS header)."""


class ConsistencyProof(_Log, frozen=True, kw_only=True):
    """RFC 9162 consistency proof from the tree of ``from_size`` entries to a checkpoint's."""

    from_size: int
    path: list[str]
    """Hex."""


class CheckpointMessage(_Log, frozen=True, kw_only=True):
    """What a broker instance publishes, retained, on ``{prefix}/checkpoint/{instance}``:
    a signed checkpoint, with consistency proofs to it from the sizes the witnesses likely
    hold (the checkpoint this instance published before, and the last one stored before
    it). A witness replaces the head it holds only by one proven to extend it."""

    checkpoint: str
    """The compact JWS of a :class:`Checkpoint`."""
    consistency: list[ConsistencyProof] = []


class EntryProof(_Log, frozen=True, kw_only=True):
    """An entry of the person's extract, as stored, with its RFC 9162 inclusion proof
    against the extract's ``checkpoint``."""

    seq: int
    """Its place in the log (leaf index ``seq - 1``)."""
    entry: str
    """The entry's stored bytes (UTF-8 JSON of an :class:`AccessEntry`): the leaf is
    ``SHA-256(0x00 || entry)``."""
    path: list[str]
    """The audit path, hex, leaf to root."""


class ExtractClaims(TokenClaims, _Log, frozen=True, kw_only=True):
    """A log-extract request: a JWT (``typ`` ``samsvar-extract+jwt``) from a participant
    holding the ``log-extract`` role, e.g. a citizen portal, on the person's behalf."""

    period: Period | None = None


class ExtractResponse(_Log, frozen=True, kw_only=True):
    subject: str
    period: Period | None = None
    accesses: list[AccessEntry]
    """Every access to the person in the period, oldest first."""
    checkpoint: str | None = None
    """The signed tree head (compact JWS of a :class:`Checkpoint`) the proofs lead to."""
    proofs: list[EntryProof] = []
    """Every stored entry the accesses come from, each with its inclusion proof."""
