"""The port to a producer's local record system."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from schemas.messages import Period
from schemas.records import Record

__all__ = ["BackendResult", "RecordBackend", "in_period"]


@dataclass(frozen=True, kw_only=True)
class BackendResult:
    """One person's records of the asked types; ``truncated`` if the system cut the list."""

    records: list[Record] = field(default_factory=list)
    truncated: bool = False


@runtime_checkable
class RecordBackend(Protocol):
    """Reads one person's records; raises :class:`~producer_adapter.errors.BackendError`."""

    async def fetch(
        self, subject: str, types: frozenset[str], period: Period | None
    ) -> BackendResult:
        """Records of ``subject`` whose type is in ``types`` and time within ``period``."""
        ...

    async def aclose(self) -> None:
        """Release connections; the adapter calls it once on shutdown."""
        ...


def in_period(record: Record, period: Period | None) -> bool:
    """True when the record's date lies within ``period`` (both ends inclusive)."""
    if period is None:
        return True
    day = record.time.date()
    if period.from_ is not None and day < period.from_:
        return False
    return period.to is None or day <= period.to
