"""Record backends: the ``RecordBackend`` port and the adapters behind it.

Chosen by the ``kind`` of the config's ``[backend]`` table::

    [backend]
    kind = "json_dir"                 # one JSON file per person (demo, tests, small producers)
    path = "data/SE2321000999-P001"   # relative to the config file

Four kinds are built in: ``json_dir`` (:mod:`.json_dir`), ``sql`` (SQLite or PostgreSQL,
:mod:`.sql`), ``fhir`` (a FHIR R4 REST server, :mod:`.fhir`) and ``rivta`` (a producer's
RIV-TA service contracts, :mod:`.rivta`). Any other ``kind`` is looked
up among the installed plugins: the entry point of that name in the group
``samsvar.backends`` (``[project.entry-points."samsvar.backends"]`` in the plugin's
``pyproject.toml``). It names a :class:`BackendFactory`: an object (usually a class) with
``async open(table, *, base, producer_id) -> RecordBackend`` and, optionally,
``check_config(table)`` which raises ``ValueError`` naming a bad key. A plugin cannot
replace a built-in kind: the built-in names are resolved first.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Final

from ..errors import AdapterConfigError
from .base import BackendFactory, BackendResult, RecordBackend, in_period
from .fhir import FhirBackend
from .json_dir import JsonDirBackend
from .rivta import RivtaBackend
from .sql import SqlBackend

__all__ = [
    "BACKEND_KINDS",
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "BackendResult",
    "FhirBackend",
    "JsonDirBackend",
    "RecordBackend",
    "RivtaBackend",
    "SqlBackend",
    "check_backend_table",
    "in_period",
    "open_backend",
    "resolve_kind",
]

ENTRY_POINT_GROUP: Final = "samsvar.backends"

BACKEND_KINDS: Final[Mapping[str, BackendFactory]] = {
    "json_dir": JsonDirBackend,
    "sql": SqlBackend,
    "fhir": FhirBackend,
    "rivta": RivtaBackend,
}
"""The built-in kinds; plugins add theirs through the ``samsvar.backends`` entry points."""


def _describe(ep: EntryPoint) -> str:
    dist = f" (from {ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
    return f"{ep.name} = {ep.value}{dist}"


def _plugin(kind: str, prefix: str) -> BackendFactory:
    found = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind)}
    if not found:
        raise AdapterConfigError(
            f"{prefix}[backend] kind {kind!r} is neither built in "
            f"({', '.join(sorted(BACKEND_KINDS))}) nor an installed plugin "
            f"(entry point group {ENTRY_POINT_GROUP!r})"
        )
    if len(found) > 1:
        names = "; ".join(_describe(ep) for ep in found.values())
        raise AdapterConfigError(
            f"{prefix}[backend] kind {kind!r} is named by several plugins: {names}"
        )
    [ep] = found.values()
    try:
        factory = ep.load()
    except Exception as exc:  # any import-time failure of the plugin's code
        raise AdapterConfigError(
            f"{prefix}[backend] kind {kind!r}: plugin {_describe(ep)} cannot be loaded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(getattr(factory, "open", None)):
        raise AdapterConfigError(
            f"{prefix}[backend] kind {kind!r}: plugin {_describe(ep)} has no "
            "open(table, *, base, producer_id) method"
        )
    return factory  # type: ignore[no-any-return]  # checked just above


def resolve_kind(kind: object, *, where: str = "") -> BackendFactory:
    """The factory for ``kind``: a built-in one, else the installed plugin of that name."""
    prefix = f"{where}: " if where else ""
    if not isinstance(kind, str) or not kind:
        raise AdapterConfigError(
            f"{prefix}[backend] kind must be one of {', '.join(sorted(BACKEND_KINDS))} "
            f"or the name of an installed plugin, not {kind!r}"
        )
    builtin = BACKEND_KINDS.get(kind)
    return builtin if builtin is not None else _plugin(kind, prefix)


def check_backend_table(table: Mapping[str, Any], *, where: str = "") -> None:
    """Refuse an unknown ``kind``, unknown keys or bad values, naming them."""
    prefix = f"{where}: " if where else ""
    factory = resolve_kind(table.get("kind"), where=where)
    check = getattr(factory, "check_config", None)
    if check is None:
        return
    try:
        check(table)
    except AdapterConfigError as exc:
        raise AdapterConfigError(f"{prefix}{exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        message = str(exc)
        if not message.startswith("[backend"):
            message = f"[backend]: {message}"
        raise AdapterConfigError(f"{prefix}{message}") from exc


async def open_backend(
    table: Mapping[str, Any], *, base: Path, producer_id: str, where: str = ""
) -> RecordBackend:
    """Open the backend a ``[backend]`` table names; paths are relative to ``base``."""
    check_backend_table(table, where=where)
    factory = resolve_kind(table["kind"], where=where)
    try:
        return await factory.open(table, base=base, producer_id=producer_id)
    except AdapterConfigError as exc:
        prefix = f"{where}: " if where else ""
        raise AdapterConfigError(f"{prefix}{exc}") from exc
