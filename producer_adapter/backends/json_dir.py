"""A record backend over a directory of JSON files, one per person.

``<dir>/<12-digit personnummer>.json`` holds a JSON array of records (the ``Record``
union of ``schemas.records``). Everything is read and checked at start-up, so a bad
file stops the adapter with a message naming it, never a failed question later.
Files not ending in ``.json`` are ignored.

::

    [backend]
    kind = "json_dir"
    path = "data"                  # relative to the config file
    max_records_per_type = 500     # optional: the newest N of each type; more is "truncated"
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from schemas.errors import InvalidPersonId
from schemas.identity import normalise
from schemas.messages import Period
from schemas.records import Record

from ..errors import AdapterConfigError
from ..policy import record_type
from ._common import check_keys
from .base import BackendResult, RecordBackend, in_period, newest_per_type

__all__ = ["JsonDirBackend"]

_decoder: Final = msgspec.json.Decoder(list[Record])
_KEYS: Final = frozenset({"kind", "path", "max_records_per_type"})


def _limit(table: Mapping[str, Any]) -> int | None:
    value = table.get("max_records_per_type")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AdapterConfigError("[backend] max_records_per_type must be a positive integer")
    return value


def _read_person(file: Path, producer_id: str) -> tuple[str, list[Record]]:
    subject = file.stem
    try:
        if normalise(subject) != subject:
            raise InvalidPersonId("the name must be the identity number as 12 digits")
    except InvalidPersonId as exc:
        raise AdapterConfigError(
            f"{file}: file name is not a valid identity number: {exc}"
        ) from exc
    try:
        records = _decoder.decode(file.read_bytes())
    except OSError as exc:
        raise AdapterConfigError(f"{file}: cannot read: {exc.strerror}") from exc
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise AdapterConfigError(f"{file}: invalid records: {exc}") from exc
    seen: set[str] = set()
    for i, record in enumerate(records):
        if record.source.producer != producer_id:
            raise AdapterConfigError(
                f"{file}: record #{i + 1} ({record.id!r}) has source.producer "
                f"{record.source.producer!r}, not this producer {producer_id!r}"
            )
        if record.id in seen:
            raise AdapterConfigError(f"{file}: record #{i + 1}: duplicate id {record.id!r}")
        seen.add(record.id)
    return subject, records


class JsonDirBackend:
    """Records read from ``path`` at construction; ``fetch`` filters in memory."""

    def __init__(self, path: str | Path, producer_id: str, *,
                 max_records_per_type: int | None = None) -> None:
        self.path = Path(path)
        self.producer_id = producer_id
        self.max_records_per_type = max_records_per_type
        if not self.path.is_dir():
            raise AdapterConfigError(f"{self.path}: backend path is not a directory")
        people: dict[str, list[Record]] = {}
        for file in sorted(self.path.iterdir()):
            if file.suffix != ".json" or not file.is_file():
                continue
            subject, records = _read_person(file, producer_id)
            people[subject] = records
        self._people: Mapping[str, list[Record]] = people

    @classmethod
    def load(cls, path: str | Path, producer_id: str, *,
             max_records_per_type: int | None = None) -> JsonDirBackend:
        """Read and check every file; raises :class:`AdapterConfigError` naming the bad one."""
        return cls(path, producer_id, max_records_per_type=max_records_per_type)

    @classmethod
    def check_config(cls, table: Mapping[str, Any]) -> None:
        """Refuse unknown keys, a missing ``path`` or a bad limit."""
        check_keys(table, _KEYS)
        path = table.get("path")
        if not isinstance(path, str) or not path:
            raise AdapterConfigError("[backend] path must be a non-empty string")
        _limit(table)

    @classmethod
    async def open(cls, table: Mapping[str, Any], *, base: Path,
                   producer_id: str) -> RecordBackend:
        """Read the directory ``table["path"]`` (relative to ``base``) in a thread."""
        cls.check_config(table)
        return await asyncio.to_thread(cls.load, base / table["path"], producer_id,
                                       max_records_per_type=_limit(table))

    @property
    def subjects(self) -> frozenset[str]:
        return frozenset(self._people)

    async def fetch(
        self, subject: str, types: frozenset[str], period: Period | None
    ) -> BackendResult:
        records, truncated = newest_per_type(
            (r for r in self._people.get(subject, ())
             if record_type(r) in types and in_period(r, period)),
            self.max_records_per_type, record_type)
        return BackendResult(records=records, truncated=truncated)

    async def aclose(self) -> None:
        return None
