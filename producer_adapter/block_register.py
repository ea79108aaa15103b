"""The producer's block register (spärrar) in SQLite: the adapter's side of the law.

A person may block (spärra) their information at this producer at the level of the
whole organisation, one unit, or one care process (SPEC section 6). The register holds
the blocks in force and, append-only, the history of every block added and removed
(when, by which operator). It is the production kind of ``[blocks]`` for replicas on one
host (replicas on several hosts share :class:`~producer_adapter.PostgresBlockRegister`)::

    [blocks]
    kind = "sqlite"
    path = "blocks.db"          # relative to the config file
    lock_timeout = 2.0          # seconds to wait for a writer's lock; optional

Rules enforced at registration (:meth:`SqliteBlockRegister.add`; they are
:mod:`producer_adapter.block_rules`', shared with the PostgreSQL register):

* the person registers their own block (``registered_by = "person"``); a guardian
  (vårdnadshavare) cannot block a child's information (Lag 2022:913), and has no say
  over an adult's: both are refused with :class:`BlockRefused`;
* an organisation-level target must be this producer's organisation, a unit-level target
  one of its units in the registry (:class:`BlockScope`); care processes are the record
  system's own ids and are not checked.

The adapter reads the register once per question (:meth:`~SqliteBlockRegister.blocks_for`),
read-only. A file that is missing, corrupt, of another kind or version, unreadable, or
locked longer than ``lock_timeout`` raises :class:`BlockSourceError`, and the adapter
replies ``error`` with no records: never as if there were no blocks. For the same reason
the adapter never creates the register; ``samsvar adapter block init`` (or the first
``block add``) does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from ._sqlite import Mode, Schema, SchemaMismatch, check_schema, connect, migrate, transaction
from .block_rules import (
    ADULT_AGE,
    BLOCK_COLUMNS,
    EVENT_COLUMNS,
    GUARDIAN_CHILD_MESSAGE,
    INIT_HINT,
    REGISTRANTS,
    BlockEvent,
    BlockKey,
    BlockRegisterRules,
    BlockScope,
    NewBlock,
    RegisteredBlock,
    Registrant,
    block_from_row,
    check_registrant,
    duplicate_message,
    event_from_row,
)
from .errors import BlockRefused, BlockSourceError
from .policy import Block

__all__ = [
    "ADULT_AGE",
    "DEFAULT_LOCK_TIMEOUT",
    "GUARDIAN_CHILD_MESSAGE",
    "REGISTRANTS",
    "BlockEvent",
    "BlockScope",
    "RegisteredBlock",
    "Registrant",
    "SqliteBlockRegister",
    "check_registrant",
]

DEFAULT_LOCK_TIMEOUT: Final = 2.0


_SCHEMA: Final = Schema(
    name="block register",
    application_id=0x53535642,  # "SSVB"
    migrations=[
        [
            """CREATE TABLE blocks (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                subject TEXT NOT NULL
                    CHECK (length(subject) = 12 AND subject NOT GLOB '*[^0-9]*'),
                level TEXT NOT NULL CHECK (level IN ('organisation', 'unit', 'care_process')),
                target TEXT NOT NULL CHECK (target <> ''),
                registered_by TEXT NOT NULL CHECK (registered_by = 'person'),
                operator TEXT NOT NULL CHECK (operator <> ''),
                created TEXT NOT NULL,
                note TEXT NOT NULL DEFAULT '',
                UNIQUE (subject, level, target)
            )""",
            """CREATE TABLE block_history (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                block_id INTEGER NOT NULL,
                action TEXT NOT NULL CHECK (action IN ('added', 'removed')),
                at TEXT NOT NULL,
                operator TEXT NOT NULL,
                subject TEXT NOT NULL,
                level TEXT NOT NULL,
                target TEXT NOT NULL,
                registered_by TEXT NOT NULL,
                note TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX block_history_by_subject ON block_history (subject, seq)",
            """CREATE TRIGGER block_history_no_update BEFORE UPDATE ON block_history
               BEGIN SELECT RAISE(ABORT, 'the block history is append-only'); END""",
            """CREATE TRIGGER block_history_no_delete BEFORE DELETE ON block_history
               BEGIN SELECT RAISE(ABORT, 'the block history is append-only'); END""",
        ],
    ],
)


class SqliteBlockRegister(BlockRegisterRules):
    """The block register in one SQLite file; a :class:`~producer_adapter.BlockSource`.

    ``scope`` (this producer's organisation and units) is needed to :meth:`add` a block;
    reading needs nothing but the file.
    """

    def __init__(self, path: str | Path, *, scope: BlockScope | None = None,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.path = Path(path)
        self.scope = scope
        self.lock_timeout = lock_timeout
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteBlockRegister({str(self.path)!r})"

    @property
    def location(self) -> str:
        return str(self.path)

    # -- the BlockSource port -------------------------------------------------------------

    async def blocks_for(self, subject: str) -> list[Block]:
        """Every block in force for ``subject``; :class:`BlockSourceError` if unreadable."""
        registered = await asyncio.to_thread(self.blocks, subject)
        return [b.block() for b in registered]

    # -- reading -------------------------------------------------------------------------

    def blocks(self, subject: str | None = None) -> list[RegisteredBlock]:
        """The blocks in force, for one person or all, oldest first."""
        where, params = ("WHERE subject = ?", (subject,)) if subject is not None else ("", ())
        with self._open("ro") as con:
            rows = con.execute(
                f"SELECT {BLOCK_COLUMNS} FROM blocks {where} ORDER BY id", params).fetchall()
        return [block_from_row(r) for r in rows]

    def history(self, subject: str | None = None) -> list[BlockEvent]:
        """Every block added and removed, for one person or all, in order."""
        where, params = ("WHERE subject = ?", (subject,)) if subject is not None else ("", ())
        with self._open("ro") as con:
            rows = con.execute(
                f"SELECT {EVENT_COLUMNS} FROM block_history {where} ORDER BY seq",
                params).fetchall()
        return [event_from_row(r) for r in rows]

    # -- writing -------------------------------------------------------------------------

    def create(self) -> None:
        """Create the register if it does not exist, or migrate it; idempotent."""
        with self._open("rwc"):
            pass

    def upgrade(self) -> None:
        """Migrate an existing register; never create one (raises if it is missing)."""
        with self._open("rw"):
            pass

    # -- writing (the rules are BlockRegisterRules') ----------------------------------------

    def _insert(self, block: NewBlock) -> int:
        with self._open("rwc") as con, transaction(con):
            existing = con.execute(
                "SELECT id FROM blocks WHERE subject = ? AND level = ? AND target = ?",
                (block.subject, block.level, block.target)).fetchone()
            if existing is not None:
                raise BlockRefused(duplicate_message(block, int(existing[0])))
            cur = con.execute(
                "INSERT INTO blocks (subject, level, target, registered_by, operator, created,"
                " note) VALUES (?, ?, ?, 'person', ?, ?, ?)",
                (block.subject, block.level, block.target, block.operator,
                 block.created.isoformat(), block.note))
            block_id = int(cur.lastrowid or 0)
            self._log_event(con, block_id, "added", block.created, block.operator,
                            block.subject, block.level, block.target, block.note)
        return block_id

    def _delete(self, key: BlockKey, *, operator: str, note: str,
                at: dt.datetime) -> RegisteredBlock | None:
        where, params = (("id = ?", (key,)) if isinstance(key, int)
                         else ("subject = ? AND level = ? AND target = ?", key))
        with self._open("rw") as con, transaction(con):
            row = con.execute(f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE {where}",
                              params).fetchone()
            if row is None:
                return None
            block = block_from_row(row)
            con.execute("DELETE FROM blocks WHERE id = ?", (block.id,))
            self._log_event(con, block.id, "removed", at, operator, block.subject, block.level,
                            block.target, note)
        return block

    @staticmethod
    def _log_event(con: sqlite3.Connection, block_id: int, action: str, at: dt.datetime,
                   operator: str, subject: str, level: str, target: str, note: str) -> None:
        con.execute(
            "INSERT INTO block_history (block_id, action, at, operator, subject, level, target,"
            " registered_by, note) VALUES (?, ?, ?, ?, ?, ?, ?, 'person', ?)",
            (block_id, action, at.isoformat(), operator, subject, level, target, note))

    @contextmanager
    def _open(self, mode: Mode) -> Iterator[sqlite3.Connection]:
        """A checked connection; every failure of the file becomes :class:`BlockSourceError`."""
        if mode != "rwc" and not self.path.exists():
            raise BlockSourceError(
                f"{self.path}: the block register does not exist ({INIT_HINT})"
            )
        if self.path.exists() and not self.path.is_file():
            raise BlockSourceError(f"{self.path}: the block register is not a file")
        try:
            with self._exclusive(mode), connect(self.path, mode=mode,
                                                timeout=self.lock_timeout) as con:
                if mode == "ro":
                    check_schema(con, _SCHEMA)
                else:
                    migrate(con, _SCHEMA)
                yield con
        except (sqlite3.Error, SchemaMismatch) as exc:
            raise BlockSourceError(f"{self.path}: block register unusable: {exc}") from exc
        except OSError as exc:
            raise BlockSourceError(f"{self.path}: block register unusable: {exc}") from exc

    @contextmanager
    def _exclusive(self, mode: Mode) -> Iterator[None]:
        if mode == "ro":
            yield
            return
        with self._write_lock:
            yield

