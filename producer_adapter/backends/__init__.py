"""Record backends: the ``RecordBackend`` port and the adapters behind it.

Chosen by the ``kind`` of the config's ``[backend]`` table::

    [backend]
    kind = "json_dir"                 # one JSON file per person (demo, tests, small producers)
    path = "data/SE2321000999-P001"   # relative to the config file

A new kind (SQL, FHIR) is one module here and one entry in ``BACKEND_KINDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import AdapterConfigError
from .base import BackendResult, RecordBackend, in_period
from .json_dir import JsonDirBackend

__all__ = [
    "BACKEND_KINDS",
    "BackendResult",
    "JsonDirBackend",
    "RecordBackend",
    "check_backend_table",
    "in_period",
    "open_backend",
]


async def _open_json_dir(table: Mapping[str, Any], base: Path, producer_id: str) -> RecordBackend:
    path = table["path"]
    return await asyncio.to_thread(JsonDirBackend.load, base / path, producer_id)


_Opener = Callable[[Mapping[str, Any], Path, str], Awaitable[RecordBackend]]


@dataclass(frozen=True, kw_only=True)
class _Kind:
    required: frozenset[str]
    """Keys (non-empty strings) the table must hold besides ``kind``."""
    optional: frozenset[str]
    opener: _Opener


BACKEND_KINDS: Final[Mapping[str, _Kind]] = {
    "json_dir": _Kind(required=frozenset({"path"}), optional=frozenset(), opener=_open_json_dir),
}


def check_backend_table(table: Mapping[str, Any], *, where: str = "") -> None:
    """Refuse an unknown ``kind``, unknown keys or missing keys, naming them."""
    prefix = f"{where}: " if where else ""
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in BACKEND_KINDS:
        raise AdapterConfigError(
            f"{prefix}[backend] kind must be one of {', '.join(sorted(BACKEND_KINDS))}, "
            f"not {kind!r}"
        )
    spec = BACKEND_KINDS[kind]
    unknown = set(table) - spec.required - spec.optional - {"kind"}
    if unknown:
        raise AdapterConfigError(
            f"{prefix}[backend] has unknown keys: {', '.join(sorted(unknown))}"
        )
    for key in sorted(spec.required):
        value = table.get(key)
        if not isinstance(value, str) or not value:
            raise AdapterConfigError(f"{prefix}[backend] {key} must be a non-empty string")


async def open_backend(
    table: Mapping[str, Any], *, base: Path, producer_id: str, where: str = ""
) -> RecordBackend:
    """Open the backend a ``[backend]`` table names; paths are relative to ``base``."""
    check_backend_table(table, where=where)
    return await BACKEND_KINDS[table["kind"]].opener(table, base, producer_id)
