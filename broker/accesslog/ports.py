"""The access log's ports: what the broker uses (:class:`AccessLog`) and the storage
underneath it (:class:`LogStore`), with its SQLite and PostgreSQL adapters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from schemas.accesslog import AccessEntry, Checkpoint, EntryProof, StoredEntry
from schemas.merkle import Leaves
from schemas.messages import Period

from .chain import CheckpointReason, Encoded, Head, NewRow

__all__ = ["AccessLog", "CheckpointRow", "EntryRow", "LogSnapshot", "LogStore", "ProvenExtract",
           "Sealer"]


@dataclass(frozen=True, slots=True)
class ProvenExtract:
    """A person's entries with their inclusion proofs against one signed tree head."""

    checkpoint: Checkpoint
    token: str
    """The checkpoint's compact JWS."""
    proofs: list[EntryProof]
    """Oldest first, as :meth:`AccessLog.extract` orders them."""
    entries: list[AccessEntry]
    """The same entries, decoded."""


class AccessLog(Protocol):
    """The broker's access log: tamper-evident, durable before the answer leaves."""

    on_checkpoint: Callable[[Checkpoint, str], None]
    """Called with every checkpoint this log signs and its token (to publish it)."""
    last_checkpoint: tuple[Checkpoint, str] | None
    """The last checkpoint this log signed, and its token."""
    before_close: Callable[[], Awaitable[None]]
    """Awaited in ``close`` after the shutdown checkpoint, while the store is still open."""

    @property
    def commits(self) -> int:
        """Append transactions committed by this object (entries share them under load)."""
        ...

    async def open(self) -> None:
        """Connect, create or migrate the tables, start the writer and the checkpointer."""
        ...

    async def append(self, entry: AccessEntry) -> StoredEntry:
        """Return once ``entry`` is committed durably; raise :class:`AccessLogError` if not."""
        ...

    async def extract(self, subject: str, period: Period | None) -> list[AccessEntry]:
        """Every entry about ``subject`` whose date is in ``period``, oldest first."""
        ...

    async def consistency_to(self, size: int, sizes: Sequence[int]) -> dict[int, list[bytes]]:
        """Consistency proofs to the tree of ``size`` entries (see :class:`LogStore`)."""
        ...

    async def extract_proven(self, subject: str, period: Period | None) -> ProvenExtract:
        """As :meth:`extract`, up to a signed tree head, each entry with its inclusion proof."""
        ...

    async def checkpoint(self, reason: CheckpointReason) -> Checkpoint:
        """Sign and store the log's current tree head."""
        ...

    async def close(self) -> None:
        """Commit what is queued, sign a ``shutdown`` checkpoint, disconnect."""
        ...

    async def writable(self) -> bool:
        """Whether an append could commit now (for ``/readyz``)."""
        ...


@dataclass(frozen=True, slots=True)
class EntryRow:
    """A stored entry as read back, unchecked."""

    seq: int
    time: str
    """As :func:`chain.time_text` writes it (verify compares it with the body)."""
    day: str
    """ISO date."""
    subject: str | None
    prev_hash: str
    hash: str
    body: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A stored checkpoint: its ``seq`` column and its token (the token is what counts)."""

    id: int
    seq: int
    token: str


Sealer = Callable[[Head], tuple[Checkpoint, str]]
"""Signs a head: returns the checkpoint and its compact JWS."""


class LogSnapshot(Protocol):
    """A consistent read-only view of the log (for verify)."""

    async def checkpoints(self) -> list[CheckpointRow]:
        ...

    async def entries(self, after_seq: int, limit: int) -> list[EntryRow]:
        """Up to ``limit`` entries with ``seq > after_seq``, in seq order."""
        ...

    async def leaves(self, after: int, upto: int) -> Leaves:
        """The stored Merkle leaves ``after + 1 .. upto``; :class:`AccessLogError` on a gap."""
        ...


class LogStore(Protocol):
    """Storage for the chain. Each write is one transaction that reads the head inside it,
    so the chain is one history whoever writes. Raises :class:`AccessLogError` only."""

    commits: int
    """Append transactions committed."""

    async def open(self, *, create: bool) -> None:
        """Connect; with ``create``, make or migrate the tables, else require them."""
        ...

    async def close(self) -> None:
        ...

    async def append(self, batch: Sequence[Encoded]) -> list[NewRow]:
        """Chain and insert ``batch`` in one transaction; return the rows once committed."""
        ...

    async def write_checkpoint(self, sealer: Sealer) -> Checkpoint:
        """Sign the current head with ``sealer`` and store it, in one transaction."""
        ...

    async def current_checkpoint(self, sealer: Sealer) -> tuple[Checkpoint, str, bool]:
        """The stored checkpoint of the current head, or a new one signed with ``sealer``
        (then the flag is true): its checkpoint and token."""
        ...

    async def extract_rows(self, subject: str, since: dt.date | None, until: dt.date | None,
                           upto: int) -> list[tuple[int, bytes]]:
        """``(seq, body)`` of ``subject``'s entries dated in [since, until] with ``seq <= upto``."""
        ...

    async def leaves(self, upto: int) -> Leaves:
        """The Merkle leaves of entries 1..``upto``."""
        ...

    async def consistency_to(self, size: int, sizes: Sequence[int]) -> dict[int, list[bytes]]:
        """Consistency proofs to the tree of ``size`` entries from each of ``sizes`` and from
        the largest checkpoint stored below ``size``, where a frontier is stored for it."""
        ...

    async def prune(self, before: dt.datetime, sealer: Sealer) -> int:
        """Delete the longest prefix of entries older than ``before`` and store a checkpoint
        (``sealer`` gets the new start) in the same transaction; return how many went."""
        ...

    async def extract(self, subject: str, since: dt.date | None,
                      until: dt.date | None) -> list[bytes]:
        """The bodies of ``subject``'s entries dated in [since, until], oldest first."""
        ...

    def snapshot(self) -> AbstractAsyncContextManager[LogSnapshot]:
        ...

    async def writable(self) -> bool:
        ...
