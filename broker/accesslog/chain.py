"""The hash chain and the signed checkpoints: pure functions, no storage.

Entry ``seq`` (from 1) is stored with its canonical body ``B`` (``msgspec.json.encode``
of the :class:`AccessEntry`, fields in struct order, kept verbatim) and::

    hash = sha256(bytes.fromhex(prev_hash) + B).hexdigest()

where ``prev_hash`` is the hash of entry ``seq - 1``, or :data:`GENESIS` (64 zeros) for
entry 1. The entries are also the leaves of an RFC 9162 Merkle tree (:mod:`schemas.merkle`):
leaf ``seq`` is ``SHA-256(0x00 || B)``, kept in a table of their own so that a prune (which
deletes entries) leaves the tree whole. A checkpoint is a compact JWS (``typ``
:data:`CHECKPOINT_TYP`) by the broker's key over a :class:`Checkpoint`, a signed tree head:
the tree's size (``seq``) and ``root``, the chain's head hash, and the first entry still
kept (``first_seq``, above 1 after a prune).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from schemas.accesslog import CHECKPOINT_TYP, AccessEntry, Checkpoint
from schemas.jose import PrivateKey, sign
from schemas.merkle import Frontier, leaf_hash

from .errors import AccessLogError

__all__ = [
    "GENESIS",
    "CheckpointReason",
    "Encoded",
    "Head",
    "NewRow",
    "canonical",
    "checkpoint_of",
    "frontier_from_text",
    "frontier_text",
    "link",
    "link_batch",
    "seal",
    "time_text",
    "utc",
]

GENESIS: Final = "0" * 64

CheckpointReason = Literal["interval", "shutdown", "prune", "start", "extract"]


def utc(t: dt.datetime) -> dt.datetime:
    """``t`` in UTC; a naive time is taken to be UTC already."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def time_text(t: dt.datetime) -> str:
    """UTC, fixed width (microseconds, ``+00:00``): text order is time order."""
    return utc(t).isoformat(timespec="microseconds")


def canonical(entry: AccessEntry) -> bytes:
    """The bytes that are hashed and stored: deterministic, fields in struct order."""
    return msgspec.json.encode(entry)


def link(prev_hash: str, body: bytes) -> str:
    """The hash of an entry with ``body`` following one whose hash is ``prev_hash``.

    Raises ``ValueError`` when ``prev_hash`` is not hex.
    """
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


@dataclass(frozen=True, slots=True)
class Encoded:
    """An entry waiting to be chained: the struct and its canonical body."""

    entry: AccessEntry
    body: bytes


@dataclass(frozen=True, slots=True)
class Head:
    """The chain's last entry (``seq`` 0 and :data:`GENESIS` when empty) and its first kept."""

    seq: int
    hash: str
    first_seq: int
    root: str | None = None
    """The Merkle tree head over entries 1..``seq`` (hex), when the store computed it."""


@dataclass(frozen=True, slots=True)
class NewRow:
    """One row for the entries table."""

    seq: int
    time: dt.datetime
    """``entry.time`` in UTC (prune compares it)."""
    day: dt.date
    """The date of ``entry.time`` as written (extract filters on it)."""
    subject: str | None
    prev_hash: str
    hash: str
    body: str
    entry: AccessEntry
    leaf: str
    """The Merkle leaf hash (hex) of ``body``."""


def link_batch(head_seq: int, head_hash: str, batch: Sequence[Encoded]) -> list[NewRow]:
    """Chain ``batch`` after the head, in order."""
    rows: list[NewRow] = []
    seq, prev = head_seq, head_hash
    for item in batch:
        seq += 1
        digest = link(prev, item.body)
        rows.append(NewRow(
            seq=seq, time=utc(item.entry.time), day=item.entry.time.date(),
            subject=item.entry.subject, prev_hash=prev, hash=digest,
            body=item.body.decode("utf-8"), entry=item.entry, leaf=leaf_hash(item.body).hex(),
        ))
        prev = digest
    return rows


def frontier_text(frontier: Frontier) -> str:
    """A frontier as stored beside its checkpoint: its hashes, hex, space-separated."""
    return " ".join(h.hex() for h in frontier.hashes)


def frontier_from_text(size: int, text: str) -> Frontier:
    """The frontier of ``size`` leaves :func:`frontier_text` wrote."""
    try:
        return Frontier(size, [bytes.fromhex(h) for h in text.split()])
    except ValueError as exc:
        raise AccessLogError(f"the stored Merkle frontier at entry {size} is damaged: "
                             f"{exc}") from exc


_checkpoint_decoder: Final = msgspec.json.Decoder(Checkpoint)


def checkpoint_of(token: str) -> Checkpoint:
    """The checkpoint a token the store wrote itself holds (its signature is not checked)."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        return _checkpoint_decoder.decode(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError, msgspec.DecodeError) as exc:
        raise AccessLogError(f"a stored checkpoint cannot be read: {exc}") from exc


def seal(head: Head, *, key: PrivateKey, instance: str, reason: CheckpointReason,
         now: dt.datetime | None = None) -> tuple[Checkpoint, str]:
    """The checkpoint for ``head`` and its compact JWS."""
    checkpoint = Checkpoint(
        seq=head.seq, head_hash=head.hash, time=now or dt.datetime.now(dt.UTC),
        instance=instance, reason=reason,
        first_seq=head.first_seq, root=head.root, kid=key.kid,
    )
    return checkpoint, sign(msgspec.json.encode(checkpoint), key, typ=CHECKPOINT_TYP)
