"""Units' blocks of a guardian's access to a child, for the person's own view (SPEC 9).

A unit may decide that a guardian (vårdnadshavare) must not read a child's information
in the own view, e.g. when reading it could harm the child (Patientdatalagen 5 kap. 4 §
read with Offentlighets- och sekretesslagen 12 kap. 3 §: a guardian's right does not
reach what would put the child at risk). The register holds these decisions; while one is
in force for a child and a guardian at any of this producer's units, the producer answers
that guardian's own-view questions about that child ``no_data``: the guardian cannot tell
a block from a source with nothing to show.

Managed with ``samsvar adapter guardian-block add|remove|list --config adapter.toml``;
read per question. An unreadable register fails closed (the reply says ``error``). The
file is created by its first ``add`` (or ``init``); without one no guardian is blocked.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from schemas.identity import normalise

from ._sqlite import Schema, SchemaMismatch, check_schema, connect, migrate, transaction
from .errors import BlockNotFound, BlockRefused, BlockSourceError

__all__ = ["GuardianBlock", "GuardianBlockRegister"]

_SCHEMA: Final = Schema(
    name="guardian block register",
    application_id=0x53535647,  # "SSVG"
    migrations=[[
        """CREATE TABLE guardian_blocks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            child TEXT NOT NULL CHECK (length(child) = 12 AND child NOT GLOB '*[^0-9]*'),
            guardian TEXT NOT NULL
                CHECK (length(guardian) = 12 AND guardian NOT GLOB '*[^0-9]*'),
            unit TEXT NOT NULL CHECK (unit <> ''),
            operator TEXT NOT NULL CHECK (operator <> ''),
            created TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            UNIQUE (child, guardian, unit)
        )""",
        """CREATE TABLE guardian_block_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            action TEXT NOT NULL CHECK (action IN ('added', 'removed')),
            at TEXT NOT NULL, operator TEXT NOT NULL,
            child TEXT NOT NULL, guardian TEXT NOT NULL, unit TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TRIGGER guardian_history_no_update BEFORE UPDATE ON guardian_block_history
           BEGIN SELECT RAISE(ABORT, 'the history is append-only'); END""",
        """CREATE TRIGGER guardian_history_no_delete BEFORE DELETE ON guardian_block_history
           BEGIN SELECT RAISE(ABORT, 'the history is append-only'); END""",
    ]],
)


@dataclass(frozen=True, kw_only=True)
class GuardianBlock:
    """A unit's decision: ``guardian`` may not read ``child``'s information here."""

    child: str
    guardian: str
    unit: str
    operator: str
    created: str
    note: str = ""


class GuardianBlockRegister:
    """The register in one SQLite file (opened anew for each operation)."""

    def __init__(self, path: Path, *, lock_timeout: float = 2.0) -> None:
        self.path = path
        self._timeout = lock_timeout

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> None:
        try:
            with connect(self.path, mode="rwc", timeout=self._timeout) as con:
                migrate(con, _SCHEMA)
        except (sqlite3.Error, SchemaMismatch) as exc:
            raise BlockSourceError(f"{self.path}: {exc}") from exc

    def add(self, *, child: str, guardian: str, unit: str, operator: str,
            units: frozenset[str], note: str = "") -> GuardianBlock:
        """Register a unit's block; ``units`` are the producer's units (the registry's)."""
        child, guardian = normalise(child), normalise(guardian)
        if unit not in units:
            raise BlockRefused(f"unit {unit!r} is not a unit of this producer in the registry")
        if child == guardian:
            raise BlockRefused("the child and the guardian are the same person")
        if not operator:
            raise BlockRefused("an operator must be named")
        self.create()
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        try:
            with connect(self.path, mode="rw", timeout=self._timeout) as con, transaction(con):
                try:
                    con.execute("INSERT INTO guardian_blocks (child, guardian, unit, operator,"
                                " created, note) VALUES (?, ?, ?, ?, ?, ?)",
                                (child, guardian, unit, operator, created, note))
                except sqlite3.IntegrityError as exc:
                    raise BlockRefused("this guardian is already blocked from this child "
                                       "at this unit") from exc
                con.execute("INSERT INTO guardian_block_history (action, at, operator, child,"
                            " guardian, unit, note) VALUES ('added', ?, ?, ?, ?, ?, ?)",
                            (created, operator, child, guardian, unit, note))
        except sqlite3.Error as exc:
            raise BlockSourceError(f"{self.path}: {exc}") from exc
        return GuardianBlock(child=child, guardian=guardian, unit=unit, operator=operator,
                             created=created, note=note)

    def remove(self, *, child: str, guardian: str, unit: str, operator: str) -> None:
        child, guardian = normalise(child), normalise(guardian)
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        try:
            with connect(self.path, mode="rw", timeout=self._timeout) as con, transaction(con):
                gone = con.execute("DELETE FROM guardian_blocks WHERE child = ? AND guardian = ?"
                                   " AND unit = ?", (child, guardian, unit)).rowcount
                if not gone:
                    raise BlockNotFound("no such guardian block")
                con.execute("INSERT INTO guardian_block_history (action, at, operator, child,"
                            " guardian, unit) VALUES ('removed', ?, ?, ?, ?, ?)",
                            (at, operator, child, guardian, unit))
        except sqlite3.Error as exc:
            raise BlockSourceError(f"{self.path}: {exc}") from exc

    def list(self, child: str | None = None) -> list[GuardianBlock]:
        if not self.path.exists():
            return []
        where, args = ("WHERE child = ?", (normalise(child),)) if child else ("", ())
        try:
            with connect(self.path, mode="ro", timeout=self._timeout) as con:
                check_schema(con, _SCHEMA)
                rows = con.execute("SELECT child, guardian, unit, operator, created, note FROM "
                                   f"guardian_blocks {where} ORDER BY id", args).fetchall()
        except (sqlite3.Error, SchemaMismatch) as exc:
            raise BlockSourceError(f"{self.path}: {exc}") from exc
        return [GuardianBlock(child=r[0], guardian=r[1], unit=r[2], operator=r[3],
                              created=r[4], note=r[5]) for r in rows]

    def is_blocked(self, *, child: str, guardian: str) -> bool:
        """Has any unit of this producer blocked ``guardian`` from ``child``? A register
        that does not exist blocks nobody; one that cannot be read raises."""
        if not self.path.exists():
            return False
        try:
            with connect(self.path, mode="ro", timeout=self._timeout) as con:
                check_schema(con, _SCHEMA)
                row = con.execute("SELECT 1 FROM guardian_blocks WHERE child = ? AND "
                                  "guardian = ? LIMIT 1", (child, guardian)).fetchone()
        except (sqlite3.Error, SchemaMismatch) as exc:
            raise BlockSourceError(f"{self.path}: {exc}") from exc
        return row is not None
