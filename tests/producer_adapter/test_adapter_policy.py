"""Stage 1 of the law, rule by rule, each both ways."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest

from producer_adapter.backends.base import Unreadable
from producer_adapter.policy import (
    RULE_BLOCK,
    RULE_EXCLUDED_UNIT,
    RULE_SCOPE,
    RULE_TYPE,
    Block,
    countable_unreadable,
    make_available,
    record_type,
)
from schemas.records import Medication, OrgRef, Record, RecordSource, UnitRef

PERSON = "195001182046"
ORG, OTHER_ORG = "SE2321000999-RE01", "SE2321000999-RE02"
UNIT, OTHER_UNIT, EXCLUDED = "SE2321000999-U100", "SE2321000999-U200", "SE2321000999-U900"


def rec(*, scope: str = "hsl", unit: str = UNIT, org: str = ORG,
        care_process: str | None = None, blocked: bool = False) -> Medication:
    return Medication(
        id="m1",
        source=RecordSource(producer="P1", organisation=OrgRef(id=org, name="Org"),
                            unit=UnitRef(id=unit, name="Unit")),
        time=dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.UTC),
        scope=scope,  # type: ignore[arg-type]
        drug="Alvedon",
        care_process=care_process,
        blocked=blocked,
    )


def block(level: str, target: str) -> Block:
    return Block(subject=PERSON, level=level, target=target,  # type: ignore[arg-type]
                 registered_by=PERSON)


@dataclass
class Case:
    record: Record
    blocks: list[Block] = field(default_factory=list)
    unblock_read: bool = False
    types: frozenset[str] | None = None
    disclosed: bool = True
    marked_blocked: bool = False
    withheld: bool = False
    rule: str | None = None


CASES = {
    # scope: the four disclosable markings pass, sol_other never leaves
    "scope hsl passes": Case(rec(scope="hsl")),
    "scope sol_elderly passes": Case(rec(scope="sol_elderly")),
    "scope sol_disability passes": Case(rec(scope="sol_disability")),
    "scope lss passes": Case(rec(scope="lss")),
    "scope sol_other dropped": Case(rec(scope="sol_other"), disclosed=False, rule=RULE_SCOPE),
    "sol_other dropped even with unblock read": Case(
        rec(scope="sol_other"), blocks=[block("unit", UNIT)], unblock_read=True,
        disclosed=False, rule=RULE_SCOPE),
    # excluded units
    "unit not excluded passes": Case(rec(unit=OTHER_UNIT)),
    "excluded unit dropped": Case(rec(unit=EXCLUDED), disclosed=False, rule=RULE_EXCLUDED_UNIT),
    "excluded unit dropped even with unblock read": Case(
        rec(unit=EXCLUDED), blocks=[block("unit", EXCLUDED)], unblock_read=True,
        disclosed=False, rule=RULE_EXCLUDED_UNIT),
    # types
    "asked type passes": Case(rec(), types=frozenset({"medication"})),
    "type not asked dropped": Case(rec(), types=frozenset({"alerts"}), disclosed=False,
                                   rule=RULE_TYPE),
    # blocks at each level, matching and not
    "organisation block withholds": Case(rec(), blocks=[block("organisation", ORG)],
                                         disclosed=False, withheld=True, rule=RULE_BLOCK),
    "organisation block elsewhere passes": Case(rec(), blocks=[block("organisation", OTHER_ORG)]),
    "unit block withholds": Case(rec(), blocks=[block("unit", UNIT)],
                                 disclosed=False, withheld=True, rule=RULE_BLOCK),
    "unit block elsewhere passes": Case(rec(), blocks=[block("unit", OTHER_UNIT)]),
    "care process block withholds": Case(rec(care_process="cp-1"),
                                         blocks=[block("care_process", "cp-1")],
                                         disclosed=False, withheld=True, rule=RULE_BLOCK),
    "care process block elsewhere passes": Case(rec(care_process="cp-1"),
                                                blocks=[block("care_process", "cp-2")]),
    "care process block, record without process passes": Case(
        rec(), blocks=[block("care_process", "cp-1")]),
    "unit id used as organisation block does not match": Case(
        rec(), blocks=[block("organisation", UNIT)]),
    # unblock read releases, marked
    "unblock read releases blocked record, marked": Case(
        rec(), blocks=[block("unit", UNIT)], unblock_read=True, marked_blocked=True),
    "unblock read leaves unblocked record unmarked": Case(
        rec(), blocks=[block("unit", OTHER_UNIT)], unblock_read=True),
    "a record cannot arrive pre-marked blocked": Case(rec(blocked=True)),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_rule(case: Case) -> None:
    result = make_available([case.record], excluded_units=frozenset({EXCLUDED}),
                            blocks=case.blocks, unblock_read=case.unblock_read, types=case.types)
    assert (len(result.records) == 1) is case.disclosed
    assert result.withheld_blocked is case.withheld
    if case.disclosed:
        assert result.records[0].blocked is case.marked_blocked
        assert result.dropped == {}
    else:
        assert result.dropped == {case.rule: 1}


def test_counts_each_rule_once_and_keeps_order() -> None:
    records = [rec(), rec(scope="sol_other"), rec(unit=EXCLUDED), rec(unit=OTHER_UNIT),
               rec(scope="sol_other", unit=EXCLUDED)]
    result = make_available(records, excluded_units={EXCLUDED},
                            blocks=[block("unit", OTHER_UNIT)], unblock_read=False)
    assert result.records == [records[0]]
    assert result.withheld_blocked is True
    assert result.dropped == {RULE_SCOPE: 2, RULE_EXCLUDED_UNIT: 1, RULE_BLOCK: 1}


def test_only_blocked_records_leaves_nothing_but_the_flag() -> None:
    result = make_available([rec()], excluded_units=frozenset(),
                            blocks=[block("organisation", ORG)], unblock_read=False)
    assert result.records == []
    assert result.withheld_blocked is True


def test_empty_input() -> None:
    result = make_available([], excluded_units=frozenset(), blocks=[], unblock_read=True)
    assert result.records == [] and result.withheld_blocked is False and result.dropped == {}


def test_record_type_is_the_tag() -> None:
    assert record_type(rec()) == "medication"


@pytest.mark.parametrize("level, target", [("person", "x"), ("unit", "")])
def test_block_refuses_bad_level_or_target(level: str, target: str) -> None:
    with pytest.raises(ValueError):
        block(level, target)


# -- the unreadable count never reveals withheld records -----------------------------------

def _unreadable(unit: str | None, kind: str = "diagnoses") -> Unreadable:
    return Unreadable(type=kind, resource="Condition", reason="no-time",
                      organisation="ORG-1", unit=unit)


@pytest.mark.parametrize(
    "blocks, excluded, expected",
    [
        ([], set(), {"diagnoses:no-time": 2}),
        ([], {"U2"}, {"diagnoses:no-time": 1}),                        # excluded unit
        ([Block(subject="x", level="unit", target="U1")], set(), {"diagnoses:no-time": 1}),
        ([Block(subject="x", level="organisation", target="ORG-1")], set(), {}),
        ([Block(subject="x", level="care_process", target="CP-9")], set(), {}),  # unknowable
    ],
)
def test_unreadable_records_are_counted_only_where_no_rule_withholds(
    blocks: list[Block], excluded: set[str], expected: dict[str, int],
) -> None:
    held = [_unreadable("U1"), _unreadable("U2"), _unreadable(None),  # no unit: not counted
            _unreadable("U1", kind="lab_results")]                     # not asked
    counted = countable_unreadable(held, excluded_units=excluded, blocks=blocks,
                                   types=frozenset({"diagnoses"}))
    assert dict(counted) == expected
