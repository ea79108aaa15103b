"""Stage 1 of the law: what a producer makes available (SPEC section 6).

Pure functions, no I/O. Every record that does not leave is counted under the named
rule that stopped it; the first rule that matches wins, in this order:

* ``RULE_TYPE`` — not one of the information types asked for (and served);
* ``RULE_SCOPE`` — marked ``sol_other`` (or anything outside ``DISCLOSABLE_SCOPES``):
  never disclosed, whatever the basis or unblock step;
* ``RULE_EXCLUDED_UNIT`` — from a unit the producer has not joined: never disclosed;
* ``RULE_BLOCK`` — covered by a block (spärr) at organisation, unit or care-process
  level: withheld, unless an unblock ``read`` step releases it, then marked ``blocked``.

The person's own view (SPEC section 9) then applies :func:`for_the_person` to what is left:

* ``RULE_NOT_FOR_PATIENT`` — ``approved_for_patient: false``: never shown to the person;
* ``RULE_RELEASE_DELAY`` — younger than the producer's release delay for its type: withheld
  until due, and counted nowhere the person (or the broker) can see;
* a fixed contact's ``internal_note`` is for staff: it is emptied.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from msgspec.structs import replace

from schemas.records import DISCLOSABLE_SCOPES, FixedContact, Record

from .backends.base import Unreadable

__all__ = [
    "BLOCK_LEVELS",
    "RULE_BLOCK",
    "RULE_EXCLUDED_UNIT",
    "RULE_NOT_FOR_PATIENT",
    "RULE_RELEASE_DELAY",
    "RULE_SCOPE",
    "RULE_TYPE",
    "Block",
    "BlockLevel",
    "Disclosure",
    "countable_unreadable",
    "for_the_person",
    "is_blocked",
    "make_available",
    "record_type",
]

RULE_TYPE: Final = "type-not-asked"
RULE_SCOPE: Final = "scope-not-disclosable"
RULE_EXCLUDED_UNIT: Final = "excluded-unit"
RULE_BLOCK: Final = "blocked"
RULE_NOT_FOR_PATIENT: Final = "not-approved-for-patient"
RULE_RELEASE_DELAY: Final = "release-delay"

BlockLevel = Literal["organisation", "unit", "care_process"]
BLOCK_LEVELS: Final[tuple[str, ...]] = get_args(BlockLevel)

_TAGS: Final[dict[type, str]] = {cls: str(cls.__struct_config__.tag) for cls in get_args(Record)}


def record_type(record: Record) -> str:
    """The information type (the ``type`` tag) of a record."""
    return _TAGS[type(record)]


@dataclass(frozen=True, kw_only=True)
class Block:
    """A block (spärr) the person registered on one organisation, unit or care process."""

    subject: str
    level: BlockLevel
    target: str
    """The organisation id, unit id or care-process id the block covers."""
    registered_by: str = ""

    def __post_init__(self) -> None:
        if self.level not in BLOCK_LEVELS:
            raise ValueError(f"block level must be one of {', '.join(BLOCK_LEVELS)}")
        if not self.target:
            raise ValueError("block target must not be empty")


@dataclass(frozen=True, kw_only=True)
class Disclosure:
    """What may leave: the records, whether a block withheld any, and what was dropped."""

    records: list[Record]
    withheld_blocked: bool = False
    dropped: Mapping[str, int] = field(default_factory=dict)


def is_blocked(record: Record, blocks: Iterable[Block]) -> bool:
    """True when any block covers the record's organisation, unit or care process."""
    for block in blocks:
        match block.level:
            case "organisation":
                if record.source.organisation.id == block.target:
                    return True
            case "unit":
                if record.source.unit.id == block.target:
                    return True
            case "care_process":
                if record.care_process is not None and record.care_process == block.target:
                    return True
    return False


def make_available(
    records: Iterable[Record],
    *,
    excluded_units: frozenset[str] | set[str],
    blocks: Sequence[Block],
    unblock_read: bool,
    types: frozenset[str] | None = None,
) -> Disclosure:
    """Apply stage 1 to one person's records; ``types=None`` keeps every type."""
    out: list[Record] = []
    dropped: Counter[str] = Counter()
    withheld = False
    for record in records:
        if types is not None and record_type(record) not in types:
            dropped[RULE_TYPE] += 1
        elif record.scope not in DISCLOSABLE_SCOPES:
            dropped[RULE_SCOPE] += 1
        elif record.source.unit.id in excluded_units:
            dropped[RULE_EXCLUDED_UNIT] += 1
        elif is_blocked(record, blocks):
            if unblock_read:
                out.append(replace(record, blocked=True))
            else:
                withheld = True
                dropped[RULE_BLOCK] += 1
        else:
            # A record can only be marked blocked by this function.
            out.append(replace(record, blocked=False) if record.blocked else record)
    return Disclosure(records=out, withheld_blocked=withheld, dropped=dict(dropped))


def countable_unreadable(
    unreadable: Iterable[Unreadable],
    *,
    excluded_units: frozenset[str] | set[str],
    blocks: Sequence[Block],
    types: frozenset[str] | None = None,
) -> Counter[str]:
    """What may be counted as unreadable in a reply, by ``type:reason``.

    Never a record the rules would withhold: not one of an excluded unit, nor one a block at
    organisation or unit level covers; and none at all while the person has a block at
    care-process level (an unreadable record's care process is unknown). A record whose
    unit is unknown is not counted either: its unit could be excluded or blocked.
    """
    if any(b.level == "care_process" for b in blocks):
        return Counter()
    counted: Counter[str] = Counter()
    for u in unreadable:
        if types is not None and u.type not in types:
            continue
        if u.unit is None or u.unit in excluded_units:
            continue
        if any((b.level == "organisation" and b.target == u.organisation)
               or (b.level == "unit" and b.target == u.unit) for b in blocks):
            continue
        counted[f"{u.type}:{u.reason}"] += 1
    return counted


def for_the_person(
    records: Iterable[Record], *, now: dt.datetime, release_delay_days: Mapping[str, int],
) -> tuple[list[Record], dict[str, int]]:
    """The own view's rules on records stage 1 made available: what the person may see,
    and what was held back by rule (for the adapter's own log only)."""
    out: list[Record] = []
    dropped: Counter[str] = Counter()
    for record in records:
        if not record.approved_for_patient:
            dropped[RULE_NOT_FOR_PATIENT] += 1
            continue
        delay = release_delay_days.get(record_type(record))
        if delay and record.time + dt.timedelta(days=delay) > now:
            dropped[RULE_RELEASE_DELAY] += 1
            continue
        if isinstance(record, FixedContact) and record.internal_note:
            record = replace(record, internal_note="")
        out.append(record)
    return out, dict(dropped)
