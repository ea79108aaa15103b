"""What every block register shares, whatever database holds it: the law at registration.

The SQLite register (:mod:`producer_adapter.block_register`) and the PostgreSQL one
(:mod:`producer_adapter.block_register_pg`) differ only in how they read and write rows.
The rules (who may register a block, which targets this producer may block, what a
subject, target, operator and note must look like), the refusals' messages, the two row
types and the public ``add``/``remove``/``remove_id`` steps are here, once
(:class:`BlockRegisterRules`).
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schemas.errors import InvalidPersonId
from schemas.identity import age_on, normalise
from schemas.registry import Producer

from .errors import BlockNotFound, BlockRefused
from .policy import BLOCK_LEVELS, Block, BlockLevel

__all__ = [
    "ADULT_AGE",
    "BLOCK_COLUMNS",
    "EVENT_COLUMNS",
    "GUARDIAN_CHILD_MESSAGE",
    "INIT_HINT",
    "REGISTRANTS",
    "BlockEvent",
    "BlockKey",
    "BlockRegisterRules",
    "BlockScope",
    "NewBlock",
    "RegisteredBlock",
    "Registrant",
    "block_from_row",
    "check_new_block",
    "check_registrant",
    "event_from_row",
    "swedish_today",
]

ADULT_AGE: Final = 18

Registrant = Literal["person", "guardian"]
"""Who asks for the block. Only ``person`` is ever accepted; ``guardian`` is named so that
the refusal can say why."""
REGISTRANTS: Final[tuple[str, ...]] = get_args(Registrant)

GUARDIAN_CHILD_MESSAGE: Final = (
    "a guardian (vårdnadshavare) cannot block a child's information (Lag 2022:913)"
)
INIT_HINT: Final = "create it with `samsvar adapter block init`"

BLOCK_COLUMNS: Final = "id, subject, level, target, registered_by, operator, created, note"
EVENT_COLUMNS: Final = (
    "seq, block_id, action, at, operator, subject, level, target, registered_by, note"
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


def now() -> dt.datetime:
    """The time a register writes: UTC, to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def subject_id(raw: str) -> str:
    """The normalised identity number; :class:`BlockRefused` if it is not one."""
    try:
        return normalise(raw)
    except InvalidPersonId as exc:
        raise BlockRefused(f"subject: {exc}") from exc


def one_line(value: str, name: str, *, required: bool = True) -> str:
    text = value.strip()
    if required and not text:
        raise BlockRefused(f"{name} must not be empty")
    if any(c in text for c in "\0\r\n"):
        raise BlockRefused(f"{name} must be one line")
    return text


@dataclass(frozen=True, kw_only=True)
class NewBlock:
    """A block that passed every rule, ready to be written."""

    subject: str
    level: BlockLevel
    target: str
    operator: str
    note: str
    created: dt.datetime


def check_new_block(scope: BlockScope | None, *, subject: str, level: str, target: str,
                    registered_by: str, operator: str, note: str = "",
                    today: dt.date | None = None) -> NewBlock:
    """Apply every rule of registration; :class:`BlockRefused` names the one broken."""
    pid = subject_id(subject)
    check_registrant(pid, registered_by, today=today)
    if level not in BLOCK_LEVELS:
        raise BlockRefused(f"level must be one of {', '.join(BLOCK_LEVELS)}, not {level!r}")
    target = one_line(target, "target")
    operator = one_line(operator, "operator")
    note = one_line(note, "note", required=False)
    if scope is None:
        raise BlockRefused("the register needs this producer's organisation and units "
                           "(a BlockScope) to check a block's target")
    scope.check(level, target)
    return NewBlock(subject=pid, level=level, target=target,  # type: ignore[arg-type]
                    operator=operator, note=note, created=now())


def duplicate_message(block: NewBlock, existing_id: int) -> str:
    return (f"{block.subject} already has a {block.level} block on {block.target} "
            f"(block #{existing_id})")


BlockKey = tuple[str, str, str] | int
"""Which block to remove: ``(subject, level, target)``, or its id."""


def _when(value: object) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def block_from_row(row: Sequence[object]) -> RegisteredBlock:
    """A row of :data:`BLOCK_COLUMNS` (times as text or as datetimes)."""
    id_, subject, level, target, registered_by, operator, created, note = row
    return RegisteredBlock(id=int(str(id_)), subject=str(subject), level=str(level),  # type: ignore[arg-type]
                           target=str(target), registered_by=str(registered_by),
                           operator=str(operator), created=_when(created), note=str(note))


def event_from_row(row: Sequence[object]) -> BlockEvent:
    """A row of :data:`EVENT_COLUMNS` (times as text or as datetimes)."""
    seq, block_id, action, at, operator, subject, level, target, registered_by, note = row
    return BlockEvent(seq=int(str(seq)), block_id=int(str(block_id)), action=str(action),  # type: ignore[arg-type]
                      at=_when(at), operator=str(operator),
                      subject=str(subject), level=str(level), target=str(target),  # type: ignore[arg-type]
                      registered_by=str(registered_by), note=str(note))


class BlockRegisterRules(ABC):
    """The register's public writing steps over two primitives a database provides.

    ``_insert`` writes the block and its ``added`` event in one transaction (refusing a
    duplicate with :func:`duplicate_message`); ``_delete`` removes the block and writes its
    ``removed`` event in one transaction (``None`` if there is no such block).
    """

    scope: BlockScope | None

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the register is, for messages (never a password)."""

    @abstractmethod
    def _insert(self, block: NewBlock) -> int: ...

    @abstractmethod
    def _delete(self, key: BlockKey, *, operator: str, note: str,
                at: dt.datetime) -> RegisteredBlock | None: ...

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
        new = check_new_block(self.scope, subject=subject, level=level, target=target,
                              registered_by=registered_by, operator=operator, note=note,
                              today=today)
        block_id = self._insert(new)
        return RegisteredBlock(id=block_id, subject=new.subject, level=new.level,
                               target=new.target, registered_by="person",
                               operator=new.operator, created=new.created, note=new.note)

    def remove(self, *, subject: str, level: str, target: str, operator: str,
               note: str = "") -> RegisteredBlock:
        """Lift the person's block (the history keeps it); :class:`BlockNotFound` if none."""
        pid = subject_id(subject)
        target = target.strip()
        return self._remove((pid, level, target), f"{pid} has no {level} block on {target!r}",
                            operator, note)

    def remove_id(self, block_id: int, *, operator: str, note: str = "") -> RegisteredBlock:
        """Lift a block by its id (the history keeps it); :class:`BlockNotFound` if none."""
        return self._remove(block_id, f"no block #{block_id} in the register", operator, note)

    def _remove(self, key: BlockKey, missing: str, operator: str,
                note: str) -> RegisteredBlock:
        operator = one_line(operator, "operator")
        note = one_line(note, "note", required=False)
        block = self._delete(key, operator=operator, note=note, at=now())
        if block is None:
            raise BlockNotFound(missing)
        return block
