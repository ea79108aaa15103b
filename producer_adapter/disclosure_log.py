"""The adapter's own disclosure log: what it gave to whom (SPEC section 7).

One entry per answered question — ``ok``, ``no_data`` and ``error`` alike — written
before the reply is published. If the write fails, the reply becomes ``error`` with no
records: nothing leaves without an entry. An entry says who asked (organisation, kind,
unit, user, role), on which basis and unblock step, about whom, and how many records of
each type left; whether blocked records were withheld or released. Never content.

Config (``[disclosure_log]``; when the adapter's config is read from a file the log is
always on, by default ``disclosures.db`` beside the config)::

    [disclosure_log]
    path = "disclosures.db"     # relative to the config file

An :class:`~producer_adapter.AdapterConfig` built in code has ``disclosure_log=None``:
no log, and the adapter warns at start-up. ``samsvar adapter log`` reads the file.

Unlike the block register, the log file is created when missing (a rotated log starts a
new file); a file that cannot be written, is corrupt or of another kind, or is locked
longer than ``lock_timeout``, raises :class:`DisclosureLogError`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Literal, Protocol, runtime_checkable

import msgspec

from schemas.accesslog import LoggedUser
from schemas.messages import Basis, ParticipantKind, ProducerStatus, Question, Reply
from schemas.records import OrgRef, UnitRef

from ._sqlite import Mode, Schema, SchemaMismatch, check_schema, connect, migrate, transaction
from .errors import DisclosureLogError
from .policy import record_type

__all__ = [
    "DEFAULT_DISCLOSURE_LOG",
    "DisclosureEntry",
    "DisclosureLog",
    "SqliteDisclosureLog",
    "disclosure_entry",
]

DEFAULT_DISCLOSURE_LOG: Final = "disclosures.db"
_LOCK_TIMEOUT: Final = 2.0


class DisclosureEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One answered question, as the producer saw it. Never any content."""

    time: dt.datetime
    query_id: str
    replica: str
    consumer: OrgRef
    consumer_kind: ParticipantKind
    unit: UnitRef
    """The asking user's unit."""
    user: LoggedUser
    """In the own view: the signed-in person (``id``, a personnummer) and ``role``
    ``own_view:<acting_as>``."""
    basis: Basis | Literal["own_view"]
    """``own_view`` for the person's own view (SPEC section 9), which has no basis."""
    unblock: str | None
    """The unblock step asked for (``locate`` or ``read``), if any."""
    subject: str
    types: list[str]
    """The information types asked for."""
    status: ProducerStatus
    disclosed: dict[str, int]
    """Information type → number of records in the reply."""
    blocked_withheld: bool
    """A block withheld records (the reply said ``blocked``)."""
    blocked_released: bool
    """Blocked records left, marked ``blocked``, after an unblock ``read`` step."""
    reason: str | None = None
    """For an ``error`` reply: the short reason it gave."""
    seq: int | None = None
    """The entry's number in the log, once stored."""


def disclosure_entry(question: Question, reply: Reply, *, replica: str,
                     now: dt.datetime | None = None) -> DisclosureEntry:
    """The entry for ``reply`` to ``question``."""
    user = question.consumer.user
    return DisclosureEntry(
        time=(now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC),
        query_id=question.query_id,
        replica=replica,
        consumer=question.consumer.organisation,
        consumer_kind=question.consumer.kind,
        unit=user.unit,
        user=LoggedUser(id=user.id, name=user.name, role=user.role),
        basis=question.basis if question.basis is not None else "own_view",
        unblock=question.unblock.step if question.unblock is not None else None,
        subject=question.subject,
        types=list(question.types),
        status=reply.status,
        disclosed=dict(Counter(record_type(r) for r in reply.records)),
        blocked_withheld=reply.blocked,
        blocked_released=any(r.blocked for r in reply.records),
        reason=reply.reason,
    )


@runtime_checkable
class DisclosureLog(Protocol):
    """The port to the disclosure log."""

    async def record(self, entry: DisclosureEntry) -> None:
        """Store ``entry`` durably; raise if it cannot be stored."""
        ...


_SCHEMA: Final = Schema(
    name="disclosure log",
    application_id=0x53535644,  # "SSVD"
    migrations=[
        [
            """CREATE TABLE disclosures (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                time TEXT NOT NULL,
                query_id TEXT NOT NULL,
                replica TEXT NOT NULL,
                consumer_id TEXT NOT NULL,
                consumer_name TEXT NOT NULL,
                consumer_kind TEXT NOT NULL,
                unit_id TEXT NOT NULL,
                unit_name TEXT NOT NULL,
                user_id TEXT NOT NULL,
                user_name TEXT NOT NULL,
                user_role TEXT NOT NULL,
                basis TEXT NOT NULL,
                unblock TEXT,
                subject TEXT NOT NULL,
                types TEXT NOT NULL,
                status TEXT NOT NULL,
                disclosed TEXT NOT NULL,
                blocked_withheld INTEGER NOT NULL,
                blocked_released INTEGER NOT NULL,
                reason TEXT
            )""",
            "CREATE INDEX disclosures_by_subject ON disclosures (subject, seq)",
            """CREATE TRIGGER disclosures_no_update BEFORE UPDATE ON disclosures
               BEGIN SELECT RAISE(ABORT, 'the disclosure log is append-only'); END""",
            """CREATE TRIGGER disclosures_no_delete BEFORE DELETE ON disclosures
               BEGIN SELECT RAISE(ABORT, 'the disclosure log is append-only'); END""",
        ],
    ],
)

_COLUMNS: Final = (
    "time, query_id, replica, consumer_id, consumer_name, consumer_kind, unit_id, unit_name, "
    "user_id, user_name, user_role, basis, unblock, subject, types, status, disclosed, "
    "blocked_withheld, blocked_released, reason"
)


def _row(e: DisclosureEntry) -> tuple[object, ...]:
    return (e.time.isoformat(), e.query_id, e.replica, e.consumer.id, e.consumer.name,
            e.consumer_kind, e.unit.id, e.unit.name, e.user.id, e.user.name, e.user.role,
            e.basis, e.unblock, e.subject, json.dumps(e.types),
            e.status, json.dumps(e.disclosed, sort_keys=True), int(e.blocked_withheld),
            int(e.blocked_released), e.reason)


def _entry(row: tuple[object, ...]) -> DisclosureEntry:
    (seq, time, query_id, replica, consumer_id, consumer_name, consumer_kind, unit_id,
     unit_name, user_id, user_name, user_role, basis, unblock, subject, types, status,
     disclosed, withheld, released, reason) = row
    return msgspec.convert({
        "seq": seq, "time": time, "query_id": query_id, "replica": replica,
        "consumer": {"id": consumer_id, "name": consumer_name},
        "consumer_kind": consumer_kind,
        "unit": {"id": unit_id, "name": unit_name},
        "user": {"id": user_id, "name": user_name, "role": user_role},
        "basis": basis, "unblock": unblock, "subject": subject,
        "types": json.loads(str(types)), "status": status,
        "disclosed": json.loads(str(disclosed)),
        "blocked_withheld": bool(withheld), "blocked_released": bool(released),
        "reason": reason,
    }, DisclosureEntry)


class SqliteDisclosureLog:
    """The disclosure log in one SQLite file; a :class:`DisclosureLog`."""

    def __init__(self, path: str | Path, *, lock_timeout: float = _LOCK_TIMEOUT) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteDisclosureLog({str(self.path)!r})"

    def create(self) -> None:
        """Create the file if needed and migrate it; idempotent."""
        with self._open("rwc"):
            pass

    async def record(self, entry: DisclosureEntry) -> None:
        await asyncio.to_thread(self.append, entry)

    def append(self, entry: DisclosureEntry) -> int:
        """Store ``entry`` durably (committed, fsynced); its ``seq``."""
        with self._open("rwc") as con, transaction(con):
            cur = con.execute(
                f"INSERT INTO disclosures ({_COLUMNS}) VALUES ({', '.join('?' * 20)})",
                _row(entry))
            return int(cur.lastrowid or 0)

    def entries(self, subject: str | None = None, *, limit: int | None = None
                ) -> list[DisclosureEntry]:
        """Stored entries, oldest first; with ``limit``, only the newest ``limit``."""
        if not self.path.is_file():
            raise DisclosureLogError(
                f"{self.path}: there is no disclosure log (the adapter creates it when it starts)")
        params: list[object] = []
        where = ""
        if subject is not None:
            where, params = "WHERE subject = ?", [subject]
        tail = ""
        if limit is not None:
            tail, params = "LIMIT ?", [*params, limit]
        with self._open("ro") as con:
            rows = con.execute(
                f"SELECT * FROM (SELECT seq, {_COLUMNS} FROM disclosures {where} "
                f"ORDER BY seq DESC {tail}) ORDER BY seq", params).fetchall()
        try:
            return [_entry(r) for r in rows]
        except (msgspec.ValidationError, ValueError) as exc:
            raise DisclosureLogError(f"{self.path}: disclosure log holds a bad entry: {exc}"
                                     ) from exc

    @contextmanager
    def _open(self, mode: Mode) -> Iterator[sqlite3.Connection]:
        try:
            if mode == "ro":
                with connect(self.path, mode=mode, timeout=self.lock_timeout) as con:
                    check_schema(con, _SCHEMA)
                    yield con
                return
            with self._write_lock, connect(self.path, mode=mode,
                                           timeout=self.lock_timeout) as con:
                migrate(con, _SCHEMA)
                yield con
        except (sqlite3.Error, SchemaMismatch, OSError) as exc:
            raise DisclosureLogError(f"{self.path}: disclosure log unusable: {exc}") from exc
