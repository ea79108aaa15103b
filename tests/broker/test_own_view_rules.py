"""The own view's broker rules as pure functions (broker.own_view), at their edges, and the
broker's re-check of what a producer sends for the own view (broker.merge)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.fanout import Outcome
from broker.merge import merge
from broker.own_view import decide_own
from schemas.messages import LOA3, Actor, Mandate, OwnQueryClaims, Reply
from schemas.records import (
    FixedContact,
    Medication,
    OrgRef,
    PersonRef,
    Record,
    RecordSource,
    UnitRef,
)
from schemas.registry import Participant, Producer

NOW = 1_796_000_000.0  # 2026-11-29
TODAY = dt.date(2026, 11, 29)
TEEN = "201204012395"  # turns 16 on 2028-04-01
CHILD = "201503012385"  # turns 13 on 2028-03-01
ADULT = "195205131575"
GUARDIAN = "198504012389"


def claims(**kw: Any) -> OwnQueryClaims:
    args: dict[str, Any] = {
        "iss": "P", "aud": "B", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j", "sub": ADULT,
        "actor": Actor(id=ADULT, loa=LOA3, auth_time=int(NOW) - 10), "acting_as": "self",
        "types": ["bookings"]}
    args.update(kw)
    return OwnQueryClaims(**args)


def rule(c: OwnQueryClaims, *, today: dt.date = TODAY, now: float = NOW) -> str | None:
    actor = c.actor.id
    return decide_own(c, actor=actor, subject=c.sub, now=now, today=today).rule


def test_sign_in_age_is_at_most_one_hour() -> None:
    at = int(NOW) - 3600
    assert rule(claims(actor=Actor(id=ADULT, loa=LOA3, auth_time=at))) is None
    assert rule(claims(actor=Actor(id=ADULT, loa=LOA3, auth_time=at - 1))) == \
        "assurance-too-low"
    assert rule(claims(actor=Actor(id=ADULT, loa=LOA3, auth_time=int(NOW) + 600))) == \
        "assurance-too-low"


@pytest.mark.parametrize(("today", "types", "expected"), [
    (dt.date(2025, 3, 31), ["bookings"], "self-under-age"),   # 12 the day before 13
    (dt.date(2025, 4, 1), ["bookings", "fixed_contacts"], None),  # 13 today
    (dt.date(2025, 4, 1), ["medication"], "self-under-age"),
    (dt.date(2028, 3, 31), ["medication"], "self-under-age"),  # 15
    (dt.date(2028, 4, 1), ["medication", "care_plans"], None),  # 16 today
])
def test_self_access_by_age_on_the_day(today: dt.date, types: list[str],
                                       expected: str | None) -> None:
    c = claims(sub=TEEN, actor=Actor(id=TEEN, loa=LOA3, auth_time=int(NOW)), types=types)
    assert rule(c, today=today) == expected


@pytest.mark.parametrize(("today", "expected"), [
    (dt.date(2028, 2, 29), None), (dt.date(2028, 3, 1), "guardian-child-too-old")])
def test_a_guardian_reads_until_the_child_turns_13(today: dt.date,
                                                   expected: str | None) -> None:
    c = claims(sub=CHILD, actor=Actor(id=GUARDIAN, loa=LOA3, auth_time=int(NOW)),
               acting_as="guardian", mandate=Mandate(source="folkbokforing",
                                                     checked_at="2026-11-29T08:00:00+01:00"))
    assert rule(c, today=today) == expected


@pytest.mark.parametrize("checked_at", [None, "", "yesterday", "2026-13-01"])
def test_a_guardian_s_mandate_must_say_when_it_was_checked(checked_at: str | None) -> None:
    c = claims(sub=CHILD, actor=Actor(id=GUARDIAN, loa=LOA3, auth_time=int(NOW)),
               acting_as="guardian",
               mandate=Mandate(source="folkbokforing", checked_at=checked_at))
    assert rule(c) == "mandate-missing"


def test_a_guardian_cannot_read_themself_as_a_guardian() -> None:
    c = claims(sub=CHILD, actor=Actor(id=CHILD, loa=LOA3, auth_time=int(NOW)),
               acting_as="guardian",
               mandate=Mandate(source="folkbokforing", checked_at="2026-11-29"))
    assert rule(c) == "actor-not-subject"


def test_protected_identity_stops_only_others() -> None:
    assert rule(claims(protected_identity=True)) is None
    c = claims(sub=CHILD, actor=Actor(id=GUARDIAN, loa=LOA3, auth_time=int(NOW)),
               acting_as="guardian", protected_identity=True,
               mandate=Mandate(source="folkbokforing", checked_at="2026-11-29"))
    assert rule(c) == "protected-identity"


# -- the broker's re-check of a producer's own-view reply ----------------------------------

ORG = Participant(id="ORG", name="Org", kind="vårdgivare", roles=frozenset({"producer"}),
                  keys={})
PRODUCER = Producer(id="P1", name="P1", organisation=ORG,
                    types=frozenset({"medication", "fixed_contacts", "alerts"}), units=(),
                    keys={}, own_view_types=frozenset({"medication", "fixed_contacts"}))
SOURCE = RecordSource(producer="P1", organisation=OrgRef(id="ORG", name="Org"),
                      unit=UnitRef(id="U1", name="U1"))
WHEN = dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)


def test_the_broker_drops_what_a_producer_should_have_withheld_from_the_person() -> None:
    """A producer that ignores the own-view rules still cannot show a record not approved
    for the patient, nor a fixed contact's internal note."""
    records: list[Record] = [
        Medication(id="m1", source=SOURCE, time=WHEN, scope="hsl", drug="A"),
        Medication(id="m2", source=SOURCE, time=WHEN, scope="hsl", drug="B",
                   approved_for_patient=False),
        FixedContact(id="f1", source=SOURCE, time=WHEN, scope="hsl", role="fast_vardkontakt",
                     person=PersonRef(name="Siv"), internal_note="staff only"),
    ]
    outcome = Outcome(PRODUCER, "ok", Reply(query_id="q", producer="P1", status="ok",
                                            records=records, blocked=True), latency_ms=3)
    merged = merge(query_id="q", subject=ADULT, outcomes=[outcome], unblock=None,
                   types=frozenset({"medication", "fixed_contacts"}), acting_as="guardian")
    answer = merged.answer
    assert [r.id for r in answer.records] == ["m1", "f1"]
    assert isinstance(answer.records[1], FixedContact) and answer.records[1].internal_note == ""
    assert answer.blocked_information_exists is False and answer.acting_as == "guardian"
    assert merged.violations == {"P1": 2}
    staff = merge(query_id="q", subject=ADULT, outcomes=[outcome], unblock=None,
                  types=frozenset({"medication", "fixed_contacts"}))
    assert len(staff.answer.records) == 3 and staff.answer.blocked_information_exists
    selfview = merge(query_id="q", subject=ADULT, outcomes=[outcome], unblock=None,
                     types=frozenset({"medication"}), acting_as="self")
    assert selfview.answer.blocked_information_exists is True


def test_ombud_is_off_unless_the_broker_names_types(tmp_path: Any) -> None:
    from broker.config import load_broker_config
    from broker.errors import ConfigError

    base = '[broker]\nregistry = "r.toml"\nkey = "k.jwk"\n'
    (tmp_path / "b.toml").write_text(base, encoding="utf-8")
    assert load_broker_config(tmp_path / "b.toml").ombud_types == frozenset()
    (tmp_path / "b.toml").write_text(base + 'ombud_types = ["bookings"]\n', encoding="utf-8")
    assert load_broker_config(tmp_path / "b.toml").ombud_types == {"bookings"}
    (tmp_path / "b.toml").write_text(base + 'ombud_types = ["alerts"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="ombud_types"):
        load_broker_config(tmp_path / "b.toml")
    mandate = Mandate(source="fullmakt", id="F-1", valid_to="2026-11-29")
    c = claims(actor=Actor(id=GUARDIAN, loa=LOA3, auth_time=int(NOW)), acting_as="ombud",
               mandate=mandate)
    assert rule(c) == "ombud-not-permitted"
    assert decide_own(c, actor=GUARDIAN, subject=ADULT, now=NOW, today=TODAY,
                      ombud_types=frozenset({"bookings"})).allowed
    assert decide_own(c, actor=GUARDIAN, subject=ADULT, now=NOW,
                      today=TODAY + dt.timedelta(days=1),
                      ombud_types=frozenset({"bookings"})).rule == "mandate-missing"
