"""Where the adapter learns a person's blocks (spärrar): the ``BlockSource`` port.

A source that cannot answer raises; the daemon then replies ``error`` with no
records (fail closed), never as if there were no blocks.

Config (optional ``[blocks]`` table; without it the adapter applies no blocks and
says so at start-up)::

    [blocks]
    kind = "sqlite"                 # the block register, read per question
    path = "blocks.db"              # relative to the config file
    lock_timeout = 2.0              # optional, seconds

``kind = "sqlite"`` is the production kind (:mod:`producer_adapter.block_register`) for
replicas on one host, managed with ``samsvar adapter block init|add|remove|list``. Replicas
on several hosts share one register in PostgreSQL
(:mod:`producer_adapter.block_register_pg`), managed with the same commands::

    [blocks]
    kind = "postgresql"
    dsn = "postgresql://samsvar_blocks@db.example/samsvar"   # password in .pgpass/PGPASSWORD
    schema = "samsvar_blocks"       # optional, default "public"
 ``kind = "json_file"`` (a JSON
array of ``{subject, level, target, registered_by}``, read once at start-up) remains as a
read-only seed format for tests and fixtures; a guardian's block in it is refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

from schemas.errors import InvalidPersonId
from schemas.identity import normalise

from .block_register import DEFAULT_LOCK_TIMEOUT, SqliteBlockRegister, check_registrant
from .block_register_pg import SCHEMA_NAME, PostgresBlockRegister
from .block_rules import BlockScope
from .errors import AdapterConfigError, BlockRefused
from .policy import Block

__all__ = [
    "BLOCK_KINDS",
    "BlockSource",
    "InMemoryBlockSource",
    "check_blocks_table",
    "load_blocks_file",
    "open_blocks",
    "open_register",
]

BLOCK_KINDS: Final[dict[str, frozenset[str]]] = {
    "sqlite": frozenset({"kind", "path", "lock_timeout"}),
    "postgresql": frozenset({"kind", "dsn", "schema"}),
    "json_file": frozenset({"kind", "path"}),
}
"""Each kind of ``[blocks]`` table and the keys it may hold."""


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
        if block.registered_by == "guardian":
            try:
                check_registrant(block.subject, block.registered_by)
            except BlockRefused as exc:
                raise AdapterConfigError(f"{p}: block #{i + 1}: {exc}") from exc
    return InMemoryBlockSource(blocks)


def check_blocks_table(table: Mapping[str, Any], *, where: str = "") -> None:
    """Refuse an unknown ``kind``, unknown keys, a missing ``path`` or ``dsn``, naming them."""
    prefix = f"{where}: " if where else ""
    kind = table.get("kind")
    if not isinstance(kind, str) or kind not in BLOCK_KINDS:
        raise AdapterConfigError(
            f"{prefix}[blocks] kind must be \"sqlite\", \"postgresql\" or \"json_file\", "
            f"not {kind!r}")
    unknown = set(table) - BLOCK_KINDS[kind]
    if unknown:
        raise AdapterConfigError(f"{prefix}[blocks] has unknown keys: {', '.join(sorted(unknown))}")
    if kind == "postgresql":
        dsn = table.get("dsn")
        if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
            raise AdapterConfigError(f"{prefix}[blocks] dsn must be a postgresql:// URL")
        schema = table.get("schema", "public")
        if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema):
            raise AdapterConfigError(
                f"{prefix}[blocks] schema {schema!r} must be a plain identifier "
                "(letters, digits and _, at most 63)")
        return
    path = table.get("path")
    if not isinstance(path, str) or not path:
        raise AdapterConfigError(f"{prefix}[blocks] path must be a non-empty string")
    timeout = table.get("lock_timeout", DEFAULT_LOCK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise AdapterConfigError(f"{prefix}[blocks] lock_timeout must be a positive number")


def open_register(table: Mapping[str, Any], *, base: Path,
                  scope: BlockScope | None = None) -> SqliteBlockRegister | PostgresBlockRegister:
    """The block register a checked ``[blocks]`` table of kind sqlite or postgresql names;
    nothing is read or created here."""
    if table["kind"] == "postgresql":
        return PostgresBlockRegister(dsn=table["dsn"], schema=table.get("schema", "public"),
                                     scope=scope)
    return SqliteBlockRegister(base / table["path"], scope=scope,
                               lock_timeout=float(table.get("lock_timeout",
                                                            DEFAULT_LOCK_TIMEOUT)))


def open_blocks(table: Mapping[str, Any] | None, *, base: Path, where: str = "") -> BlockSource:
    """The block source a config's ``[blocks]`` table names (``None``: no blocks).

    A register (SQLite or PostgreSQL) is not touched here: it is read per question.
    """
    if table is None:
        return InMemoryBlockSource()
    check_blocks_table(table, where=where)
    if table["kind"] in ("sqlite", "postgresql"):
        return open_register(table, base=base)
    return load_blocks_file(base / table["path"])
