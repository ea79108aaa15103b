"""The producer's block register (spärrar) in SQLite: the adapter's side of the law.

A person may block (spärra) their information at this producer at the level of the
whole organisation, one unit, or one care process (SPEC section 6). The register holds
the blocks in force and, append-only, the history of every block added and removed
(when, by which operator). It is the production kind of ``[blocks]``::

    [blocks]
    kind = "sqlite"
    path = "blocks.db"          # relative to the config file
    lock_timeout = 2.0          # seconds to wait for a writer's lock; optional

Rules enforced at registration (:meth:`SqliteBlockRegister.add`):

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
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schemas.errors import InvalidPersonId
from schemas.identity import age_on, normalise
from schemas.registry import Producer

from ._sqlite import Mode, Schema, SchemaMismatch, check_schema, connect, migrate, transaction
from .errors import BlockNotFound, BlockRefused, BlockSourceError
from .policy import BLOCK_LEVELS, Block, BlockLevel

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
ADULT_AGE: Final = 18

Registrant = Literal["person", "guardian"]
"""Who asks for the block. Only ``person`` is ever accepted; ``guardian`` is named so that
the refusal can say why."""
REGISTRANTS: Final[tuple[str, ...]] = get_args(Registrant)

GUARDIAN_CHILD_MESSAGE: Final = (
    "a guardian (vårdnadshavare) cannot block a child's information (Lag 2022:913)"
)


class RegisteredBlock(msgspec.Struct, frozen=True, kw_only=True):
    """A block in force, as the register holds it."""

    id: int
    subject: str
    level: BlockLevel
    target: str
    registered_by: str
    """Who asked for it: always ``person``, the person themselves."""
    operator: str
    """Who entered it (the producer's staff member or system), free text."""
    created: dt.datetime
    note: str = ""

    def block(self) -> Block:
        """The block as stage 1 of the law applies it."""
        return Block(subject=self.subject, level=self.level, target=self.target,
                     registered_by=self.registered_by)


class BlockEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the register's history: a block added or removed."""

    seq: int
    block_id: int
    action: Literal["added", "removed"]
    at: dt.datetime
    operator: str
    subject: str
    level: BlockLevel
    target: str
    registered_by: str
    note: str = ""
    """The block's note when added; the reason given when removed."""


@dataclass(frozen=True, kw_only=True)
class BlockScope:
    """What this producer may block: its own organisation and its registered units."""

    producer: str
    organisation: str
    units: frozenset[str]

    @classmethod
    def of(cls, producer: Producer) -> BlockScope:
        return cls(producer=producer.id, organisation=producer.organisation.id,
                   units=frozenset(u.id for u in producer.units))

    def check(self, level: str, target: str) -> None:
        """Refuse a target outside this producer's organisation or units."""
        if level == "organisation" and target != self.organisation:
            raise BlockRefused(
                f"organisation {target!r} is not the organisation of producer {self.producer} "
                f"({self.organisation}): a producer registers blocks on its own organisation only"
            )
        if level == "unit" and target not in self.units:
            known = ", ".join(sorted(self.units)) or "none"
            raise BlockRefused(
                f"unit {target!r} is not a unit of producer {self.producer} in the registry "
                f"(its units: {known}); add the unit to the registry first"
            )


def swedish_today() -> dt.date:
    """Today's date in Sweden, where a person's age is counted."""
    try:
        return dt.datetime.now(ZoneInfo("Europe/Stockholm")).date()
    except ZoneInfoNotFoundError:  # no time-zone database: the host's date
        return dt.date.today()


def check_registrant(subject: str, registered_by: str, *, today: dt.date | None = None) -> None:
    """Refuse anyone but the person themselves; ``subject`` is a normalised identity number.

    ``today`` (default: the Swedish date) decides whether the person is a child.
    """
    if registered_by == "guardian":
        if age_on(subject, today or swedish_today()) < ADULT_AGE:
            raise BlockRefused(GUARDIAN_CHILD_MESSAGE)
        raise BlockRefused(
            "a guardian (vårdnadshavare) has no say over an adult's information: "
            "the person registers the block themselves"
        )
    if registered_by != "person":
        raise BlockRefused(
            f"registered_by must be 'person' (the person themselves), not {registered_by!r}"
        )


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

_BLOCK_COLUMNS: Final = "id, subject, level, target, registered_by, operator, created, note"
_EVENT_COLUMNS: Final = (
    "seq, block_id, action, at, operator, subject, level, target, registered_by, note"
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _block(row: tuple[object, ...]) -> RegisteredBlock:
    id_, subject, level, target, registered_by, operator, created, note = row
    return RegisteredBlock(id=int(str(id_)), subject=str(subject), level=str(level),  # type: ignore[arg-type]
                           target=str(target), registered_by=str(registered_by),
                           operator=str(operator), created=dt.datetime.fromisoformat(str(created)),
                           note=str(note))


def _event(row: tuple[object, ...]) -> BlockEvent:
    seq, block_id, action, at, operator, subject, level, target, registered_by, note = row
    return BlockEvent(seq=int(str(seq)), block_id=int(str(block_id)), action=str(action),  # type: ignore[arg-type]
                      at=dt.datetime.fromisoformat(str(at)), operator=str(operator),
                      subject=str(subject), level=str(level), target=str(target),  # type: ignore[arg-type]
                      registered_by=str(registered_by), note=str(note))


def _subject(raw: str) -> str:
    try:
        return normalise(raw)
    except InvalidPersonId as exc:
        raise BlockRefused(f"subject: {exc}") from exc


def _text(value: str, name: str, *, required: bool = True) -> str:
    text = value.strip()
    if required and not text:
        raise BlockRefused(f"{name} must not be empty")
    if any(c in text for c in "\0\r\n"):
        raise BlockRefused(f"{name} must be one line")
    return text


class SqliteBlockRegister:
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
                f"SELECT {_BLOCK_COLUMNS} FROM blocks {where} ORDER BY id", params).fetchall()
        return [_block(r) for r in rows]

    def history(self, subject: str | None = None) -> list[BlockEvent]:
        """Every block added and removed, for one person or all, in order."""
        where, params = ("WHERE subject = ?", (subject,)) if subject is not None else ("", ())
        with self._open("ro") as con:
            rows = con.execute(
                f"SELECT {_EVENT_COLUMNS} FROM block_history {where} ORDER BY seq",
                params).fetchall()
        return [_event(r) for r in rows]

    # -- writing -------------------------------------------------------------------------

    def create(self) -> None:
        """Create the register if it does not exist, or migrate it; idempotent."""
        with self._open("rwc"):
            pass

    def upgrade(self) -> None:
        """Migrate an existing register; never create one (raises if it is missing)."""
        with self._open("rw"):
            pass

    def add(
        self,
        *,
        subject: str,
        level: str,
        target: str,
        registered_by: str,
        operator: str,
        note: str = "",
        today: dt.date | None = None,
    ) -> RegisteredBlock:
        """Register a block, creating the register if needed; :class:`BlockRefused` if the
        law or this producer's scope forbids it, or the same block is already in force."""
        pid = _subject(subject)
        check_registrant(pid, registered_by, today=today)
        if level not in BLOCK_LEVELS:
            raise BlockRefused(f"level must be one of {', '.join(BLOCK_LEVELS)}, not {level!r}")
        target = _text(target, "target")
        operator = _text(operator, "operator")
        note = _text(note, "note", required=False)
        if self.scope is None:
            raise BlockRefused("the register needs this producer's organisation and units "
                               "(a BlockScope) to check a block's target")
        self.scope.check(level, target)
        created = _now()
        with self._open("rwc") as con, transaction(con):
            existing = con.execute(
                "SELECT id FROM blocks WHERE subject = ? AND level = ? AND target = ?",
                (pid, level, target)).fetchone()
            if existing is not None:
                raise BlockRefused(f"{pid} already has a {level} block on {target} "
                                   f"(block #{existing[0]})")
            cur = con.execute(
                "INSERT INTO blocks (subject, level, target, registered_by, operator, created,"
                " note) VALUES (?, ?, ?, 'person', ?, ?, ?)",
                (pid, level, target, operator, created.isoformat(), note))
            block_id = int(cur.lastrowid or 0)
            self._log_event(con, block_id, "added", created, operator, pid, level, target, note)
        return RegisteredBlock(id=block_id, subject=pid, level=level,  # type: ignore[arg-type]
                               target=target, registered_by="person", operator=operator,
                               created=created, note=note)

    def remove(self, *, subject: str, level: str, target: str, operator: str,
               note: str = "") -> RegisteredBlock:
        """Lift the person's block (the history keeps it); :class:`BlockNotFound` if none."""
        pid = _subject(subject)
        target = target.strip()
        return self._remove("subject = ? AND level = ? AND target = ?", (pid, level, target),
                            f"{pid} has no {level} block on {target!r}", operator, note)

    def remove_id(self, block_id: int, *, operator: str, note: str = "") -> RegisteredBlock:
        """Lift a block by its id (the history keeps it); :class:`BlockNotFound` if none."""
        return self._remove("id = ?", (block_id,), f"no block #{block_id} in the register",
                            operator, note)

    # -- internals -----------------------------------------------------------------------

    def _remove(self, where: str, params: tuple[object, ...], missing: str, operator: str,
                note: str) -> RegisteredBlock:
        operator = _text(operator, "operator")
        note = _text(note, "note", required=False)
        at = _now()
        with self._open("rw") as con, transaction(con):
            row = con.execute(f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE {where}",
                              params).fetchone()
            if row is None:
                raise BlockNotFound(missing)
            block = _block(row)
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
                f"{self.path}: the block register does not exist (create it with "
                "`samsvar adapter block init`)"
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

