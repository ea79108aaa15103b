"""What the adapter's two SQLite files share: connecting, marking and migrating them.

Every operation opens the file anew, so a register edited by ``samsvar adapter block``
applies to the next question, and a file that vanished or broke is noticed at once.
Callers translate :class:`sqlite3.Error` and :class:`SchemaMismatch` into their own
errors (``BlockSourceError``, ``DisclosureLogError``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Schema", "SchemaMismatch", "check_schema", "connect", "migrate", "transaction"]

Mode = Literal["ro", "rw", "rwc"]
"""Read only; read-write of an existing file; read-write, creating the file."""


class SchemaMismatch(Exception):
    """The file is an SQLite database, but not this kind, or not this version."""


@dataclass(frozen=True, kw_only=True)
class Schema:
    """A kind of file: its ``application_id`` and the migrations that build it, in order.

    Migration ``i`` (from 1) takes the file from ``user_version`` ``i - 1`` to ``i``;
    migrations are only ever appended.
    """

    name: str
    application_id: int
    migrations: Sequence[Sequence[str]]

    @property
    def version(self) -> int:
        return len(self.migrations)


@contextmanager
def connect(path: Path, *, mode: Mode, timeout: float) -> Iterator[sqlite3.Connection]:
    """An autocommit connection (transactions are explicit), closed on exit.

    ``timeout`` bounds how long it waits for another process's lock.
    """
    uri = f"{path.absolute().as_uri()}?mode={mode}"
    con = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    with closing(con):
        if mode != "ro":
            con.execute("PRAGMA synchronous = FULL")
        yield con


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error (or cancellation)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _marks(con: sqlite3.Connection) -> tuple[int, int]:
    app = con.execute("PRAGMA application_id").fetchone()[0]
    version = con.execute("PRAGMA user_version").fetchone()[0]
    return int(app), int(version)


def check_schema(con: sqlite3.Connection, schema: Schema) -> None:
    """Refuse a file of another kind, an empty one, or one of another version."""
    app, version = _marks(con)
    if app != schema.application_id or version == 0:
        raise SchemaMismatch(f"not a samsvar {schema.name}")
    if version != schema.version:
        raise SchemaMismatch(
            f"{schema.name} schema is version {version}, this adapter reads version "
            f"{schema.version}" + (" (run any `samsvar adapter` command on it to migrate)"
                                   if version < schema.version else "")
        )


def migrate(con: sqlite3.Connection, schema: Schema) -> None:
    """Bring the file to the current version; idempotent, safe between processes."""
    if _marks(con) == (schema.application_id, schema.version):
        return
    with transaction(con):
        app, version = _marks(con)
        if version == 0 and app == 0:
            if con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise SchemaMismatch(f"not a samsvar {schema.name}: it holds other tables")
            con.execute(f"PRAGMA application_id = {int(schema.application_id)}")
        elif app != schema.application_id:
            raise SchemaMismatch(f"not a samsvar {schema.name}")
        if version > schema.version:
            raise SchemaMismatch(
                f"{schema.name} schema is version {version}, newer than this adapter's "
                f"{schema.version}"
            )
        for number in range(version + 1, schema.version + 1):
            for statement in schema.migrations[number - 1]:
                con.execute(statement)
            con.execute(f"PRAGMA user_version = {number}")
