"""The port to a producer's local record system."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from schemas.messages import Period
from schemas.records import Record

__all__ = [
    "BackendFactory",
    "BackendResult",
    "RecordBackend",
    "Unreadable",
    "in_period",
    "newest_per_type",
]


@dataclass(frozen=True, kw_only=True)
class Unreadable:
    """A record the system holds for the question but could not turn into a record.

    ``reason`` is a short stable word (``no-time``, ``no-code``, …), never content;
    ``organisation`` and ``unit`` (HSA-ids, the unit when known) let the adapter leave out
    what excluded units and blocks cover, so that the count never reveals withheld records.
    """

    type: str
    resource: str
    reason: str
    organisation: str
    unit: str | None = None


@dataclass(frozen=True, kw_only=True)
class BackendResult:
    """One person's records of the asked types; ``truncated`` if the system cut the list.

    ``unreadable`` lists what could not be read (the reply counts it, SPEC section 3);
    ``withheld`` counts records the backend's own rules held back (e.g. a security label
    configured ``withhold``): the reply treats them as a block would.
    """

    records: list[Record] = field(default_factory=list)
    truncated: bool = False
    unreadable: list[Unreadable] = field(default_factory=list)
    withheld: int = 0


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

    # A backend may also have ``async def readiness(units: Sequence[UnitRef]) -> list[str]``:
    # the adapter calls it once at start-up and logs each reason it cannot answer as
    # configured (kept as ``Adapter.not_ready``).


class BackendFactory(Protocol):
    """What a backend ``kind`` names: usually the backend class itself.

    It may also have ``check_config(table) -> None``, called when the config is read, which
    raises ``ValueError`` (or :class:`~producer_adapter.errors.AdapterConfigError`) whose
    message names the bad key of ``[backend]``.
    """

    async def open(
        self, table: Mapping[str, Any], *, base: Path, producer_id: str
    ) -> RecordBackend:
        """The backend for the whole ``[backend]`` table; relative paths are against ``base``.

        Raises :class:`~producer_adapter.errors.AdapterConfigError` when it cannot start.
        """
        ...


def in_period(record: Record, period: Period | None) -> bool:
    """True when the record's date lies within ``period`` (both ends inclusive)."""
    if period is None:
        return True
    day = record.time.date()
    if period.from_ is not None and day < period.from_:
        return False
    return period.to is None or day <= period.to


def newest_per_type(
    records: Iterable[Record], limit: int | None, type_of: Callable[[Record], str]
) -> tuple[list[Record], bool]:
    """At most ``limit`` records of each type (the newest), in their given order.

    ``type_of`` maps a record to its type. The flag says whether any type was cut.
    """
    kept = list(records)
    if limit is None:
        return kept, False
    by_type: dict[str, list[int]] = {}
    for i, record in enumerate(kept):
        by_type.setdefault(type_of(record), []).append(i)
    dropped: set[int] = set()
    for indexes in by_type.values():
        if len(indexes) > limit:
            newest = sorted(indexes, key=lambda i: kept[i].time, reverse=True)
            dropped.update(newest[limit:])
    return [r for i, r in enumerate(kept) if i not in dropped], bool(dropped)
