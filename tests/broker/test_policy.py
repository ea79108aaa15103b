"""Stage 2 of the law, one row per rule and outcome (allowed and refused)."""

from __future__ import annotations

import datetime as dt

import pytest

from broker import policy
from schemas.messages import QueryClaims, Unblock, User
from schemas.records import UnitRef

TODAY = dt.date(2026, 11, 27)
ADULT = "193803039142"
CHILD = "201503012385"
# Turns 18 on 2026-11-28: the day before, still a child.
TURNS_18_TOMORROW = "200811282383"


def claims(**overrides: object) -> QueryClaims:
    base: dict[str, object] = dict(
        iss="X", aud="B", iat=0, exp=60, jti="j", sub=ADULT,
        user=User(id="u", name="n", role="r", unit=UnitRef(id="U", name="N")),
        relation=True, basis="consent", types=["medication"],
    )
    base.update(overrides)
    return QueryClaims(**base)  # type: ignore[arg-type]


CASES = [
    # (name, claims overrides, kind, subject, allowed, rule)
    ("consent by care giver", {}, "vårdgivare", ADULT, True, None),
    ("consent by social care giver", {}, "omsorgsgivare", ADULT, True, None),
    ("no relation", {"relation": False}, "vårdgivare", ADULT, False,
     policy.RULE_RELATION_REQUIRED),
    ("emergency by care giver", {"basis": "emergency"}, "vårdgivare", ADULT, True, None),
    ("emergency by social care giver", {"basis": "emergency"}, "omsorgsgivare", ADULT, False,
     policy.RULE_EMERGENCY_CARE_GIVER_ONLY),
    ("lacks capacity", {"basis": "lacks_capacity"}, "omsorgsgivare", ADULT, True, None),
    ("child basis for a child", {"basis": "child"}, "vårdgivare", CHILD, True, None),
    ("child basis for an adult", {"basis": "child"}, "vårdgivare", ADULT, False,
     policy.RULE_CHILD_UNDER_18),
    ("child basis the day before 18", {"basis": "child"}, "vårdgivare", TURNS_18_TOMORROW,
     True, None),
    ("locate with consent", {"unblock": Unblock(step="locate")}, "omsorgsgivare", ADULT,
     True, None),
    ("locate in emergency by care giver", {"basis": "emergency",
     "unblock": Unblock(step="locate")}, "vårdgivare", ADULT, True, None),
    ("locate in emergency by social care giver", {"basis": "emergency",
     "unblock": Unblock(step="locate")}, "omsorgsgivare", ADULT, False,
     policy.RULE_UNBLOCK_EMERGENCY_CARE_GIVER_ONLY),
    ("locate on lacks_capacity", {"basis": "lacks_capacity",
     "unblock": Unblock(step="locate")}, "vårdgivare", ADULT, False, policy.RULE_UNBLOCK_BASIS),
    ("read naming producers", {"unblock": Unblock(step="read", producers=["P1"])},
     "vårdgivare", ADULT, True, None),
    ("read naming nobody", {"unblock": Unblock(step="read")}, "vårdgivare", ADULT, False,
     policy.RULE_UNBLOCK_READ_NAMES_PRODUCERS),
]


@pytest.mark.parametrize(("name", "overrides", "kind", "subject", "allowed", "rule"), CASES,
                         ids=[c[0] for c in CASES])
def test_stage_two(name: str, overrides: dict[str, object], kind: str, subject: str,
                   allowed: bool, rule: str | None) -> None:
    decision = policy.decide(claims(sub=subject, **overrides), kind=kind,  # type: ignore[arg-type]
                             subject=subject, today=TODAY)
    assert decision.allowed is allowed
    assert decision.rule == rule


def test_lacks_capacity_is_flagged_for_the_log() -> None:
    decision = policy.decide(claims(basis="lacks_capacity"), kind="vårdgivare", subject=ADULT,
                             today=TODAY)
    assert "lacks_capacity" in decision.flags
