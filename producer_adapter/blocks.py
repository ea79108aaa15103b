"""Where the adapter learns a person's blocks (spärrar): the ``BlockSource`` port.

A source that cannot answer raises; the daemon then replies ``error`` with no
records (fail closed), never as if there were no blocks.

Config (optional ``[blocks]`` table; without it the adapter applies no blocks and
says so at start-up)::

    [blocks]
    kind = "json_file"              # a JSON array of {subject, level, target, registered_by}
    path = "blocks.json"            # relative to the config file
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from schemas.errors import InvalidPersonId
from schemas.identity import normalise

from .errors import AdapterConfigError
from .policy import Block

__all__ = [
    "BlockSource",
    "InMemoryBlockSource",
    "check_blocks_table",
    "load_blocks_file",
    "open_blocks",
]


@runtime_checkable
class BlockSource(Protocol):
    """The port to the block register."""

    async def blocks_for(self, subject: str) -> list[Block]:
        """Every block registered for ``subject``; raise if the register is unreadable."""
        ...


class InMemoryBlockSource:
    """Blocks held in memory, e.g. read from a file at start-up, or built by a test."""

    def __init__(self, blocks: Iterable[Block] = ()) -> None:
        self._by_subject: dict[str, list[Block]] = defaultdict(list)
        for block in blocks:
            self._by_subject[block.subject].append(block)

    def add(self, block: Block) -> None:
        self._by_subject[block.subject].append(block)

    async def blocks_for(self, subject: str) -> list[Block]:
        return list(self._by_subject.get(subject, ()))


def load_blocks_file(path: str | Path) -> InMemoryBlockSource:
    """Read a JSON array of blocks; raises :class:`AdapterConfigError` naming the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise AdapterConfigError(f"{p}: cannot read block file: {exc.strerror}") from exc
    try:
        blocks = msgspec.json.decode(raw, type=list[Block])
    except (msgspec.DecodeError, ValueError) as exc:
        raise AdapterConfigError(f"{p}: invalid block file: {exc}") from exc
    for i, block in enumerate(blocks):
        try:
            if normalise(block.subject) != block.subject:
                raise InvalidPersonId("identity number must be written as 12 digits")
        except InvalidPersonId as exc:
            raise AdapterConfigError(f"{p}: block #{i + 1}: subject: {exc}") from exc
    return InMemoryBlockSource(blocks)


def check_blocks_table(table: Mapping[str, Any], *, where: str = "") -> None:
    """Refuse an unknown ``kind``, unknown keys or a missing ``path``, naming them."""
    prefix = f"{where}: " if where else ""
    kind = table.get("kind")
    if kind != "json_file":
        raise AdapterConfigError(f"{prefix}[blocks] kind must be \"json_file\", not {kind!r}")
    unknown = set(table) - {"kind", "path"}
    if unknown:
        raise AdapterConfigError(f"{prefix}[blocks] has unknown keys: {', '.join(sorted(unknown))}")
    path = table.get("path")
    if not isinstance(path, str) or not path:
        raise AdapterConfigError(f"{prefix}[blocks] path must be a non-empty string")


def open_blocks(table: Mapping[str, Any] | None, *, base: Path, where: str = "") -> BlockSource:
    """The block source a config's ``[blocks]`` table names (``None``: no blocks)."""
    if table is None:
        return InMemoryBlockSource()
    check_blocks_table(table, where=where)
    return load_blocks_file(base / table["path"])
