"""Checks of ``[backend]`` tables and tables the built-in backends share (not a plugin API)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schemas.records import Record

from ..errors import AdapterConfigError

__all__ = ["RECORD_CLASSES", "check_keys", "named_ref", "positive", "zone"]

RECORD_CLASSES: Final[Mapping[str, type[Any]]] = {
    str(cls.__struct_config__.tag): cls for cls in get_args(Record)
}
"""Each information type's record class, by its tag."""


def check_keys(table: Mapping[str, Any], keys: Collection[str], where: str = "[backend]") -> None:
    """Refuse keys of ``table`` not among ``keys``; ``where`` names the table."""
    unknown = set(table) - set(keys)
    if unknown:
        raise AdapterConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")


def positive(table: Mapping[str, Any], key: str, default: float, *, integer: bool) -> Any:
    """``table[key]`` (or ``default``): a positive integer, or with ``integer=False`` number."""
    value = table.get(key, default)
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise AdapterConfigError(f"[backend] {key} must be {kind}")
    return value


def named_ref(value: Any, key: str, cls: type[Any]) -> Any:
    """``value`` as ``cls`` (``{ id, name }`` such as OrgRef, UnitRef), or None for None."""
    if value is None:
        return None
    try:
        found = msgspec.convert(value, cls)
    except msgspec.ValidationError as exc:
        raise AdapterConfigError(
            f"[backend] {key} must be {{ id = \"…\", name = \"…\" }}: {exc}") from exc
    if not found.id or not found.name:
        raise AdapterConfigError(f"[backend] {key} needs a non-empty id and name")
    return found


def zone(value: Any) -> ZoneInfo:
    """The ``timezone`` key: an IANA zone name."""
    if not isinstance(value, str) or not value:
        raise AdapterConfigError("[backend] timezone must be an IANA zone name")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise AdapterConfigError(f"[backend] timezone {value!r} is not a known zone") from exc
