"""Messages and records on the wire: field names, omitted defaults, the ``type`` tag."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
import pytest

from schemas.messages import (
    Answer,
    Consumer,
    Period,
    Presence,
    Problem,
    QueryClaims,
    Question,
    Reply,
    SourceResult,
    Unblock,
    User,
)
from schemas.records import (
    INFORMATION_TYPES,
    SBAR,
    Activity,
    Alert,
    Author,
    Booking,
    CareContact,
    CareDocumentation,
    CarePlan,
    Code,
    ContactPoint,
    Diagnosis,
    FixedContact,
    FunctionalStatus,
    LabResult,
    Medication,
    OrgRef,
    PersonRef,
    Record,
    RecordSource,
    SelfCare,
    SocialCareIntervention,
    UnitRef,
)

UTC = dt.UTC
ORG = OrgRef(id="SE2321000016-0001", name="Region Exempel")
SOURCE = RecordSource(producer="SE2321000016-P001", organisation=ORG,
                      unit=UnitRef(id="SE2321000016-U100", name="Akutmottagningen"),
                      system="journal")
BASE: dict[str, Any] = {
    "source": SOURCE, "time": dt.datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
    "author": Author(name="Anna Läkare", role="läkare"), "scope": "hsl",
    "codes": [Code(system="1.2.752.116.1.1.1", code="I10", display="Hypertoni")],
    "care_process": "vp-1",
}

RECORDS: list[Record] = [
    CareDocumentation(id="c1", title="Inskrivning", note_type="Anteckning", text="Fritext",
                      sbar=SBAR(situation="S", background="B", assessment="A",
                                recommendation="R"), **BASE),
    Diagnosis(id="d1", display="Essentiell hypertoni", primary=True, status="resolved",
              onset=dt.date(2020, 1, 1), **BASE),
    Medication(id="m1", drug="Metformin", dose="500 mg", route="oral", schedule="1x2",
               purpose="diabetes", start=dt.date(2026, 1, 1), stop=dt.date(2026, 12, 31),
               status="paused", administered_by="hemsjukvården", **BASE),
    Alert(id="a1", category="allergy", description="Penicillin", severity="life_threatening",
          substance="penicillin", valid_until=dt.date(2030, 1, 1), **BASE),
    LabResult(id="l1", analysis="P-Glukos", value="9.1", unit="mmol/L",
              reference_range="4.0-6.0", abnormal=True, **BASE),
    CareContact(id="k1", contact_type="Akutbesök", reason="Yrsel",
                start=dt.datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
                end=dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC), **BASE),
    CarePlan(id="p1", title="SIP", plan_type="SIP", goals=["Bo hemma"],
             activities=[Activity(description="Genomgång", responsible="Region", when="v. 2")],
             follow_up=dt.date(2026, 12, 15), participants=["Region", "Kommun"], **BASE),
    SocialCareIntervention(id="s1", intervention="Hemtjänst", legal_basis="SoL 4 kap. 1 §",
                           phase="verkstallighet", decision_date=dt.date(2026, 1, 1),
                           start=dt.date(2026, 2, 1), end=dt.date(2027, 2, 1),
                           extent="20 h/mån", description="Stöd", **{**BASE,
                                                                      "scope": "sol_elderly"}),
    FunctionalStatus(id="f1", domain="Förflyttning", assessment="Behöver hjälp",
                     description="Rullator", **BASE),
    CarePlan(id="p2", title="SIP hemgång", plan_type="SIP", status="active",
             needs=["Stöd i hemmet"],
             activities=[Activity(what="Hemtjänst morgon och kväll",
                                  responsible_org=OrgRef(id="SE2120009999-0001",
                                                         name="Exempla kommun"),
                                  responsible="Hemtjänsten Norra", when="dagligen",
                                  status="in_progress")],
             overall_responsible_org=ORG,
             coordinator=PersonRef(name="Sara SIP", role="SIP-samordnare", organisation=ORG),
             participants=["Personen", "Dottern"], follow_up_date=dt.date(2027, 1, 10),
             approved_for_patient=False, **BASE),
    Booking(id="b1", start=dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
            end=dt.datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
            unit=UnitRef(id="SE2321000016-U200", name="Vårdcentralen"),
            performer=PersonRef(name="Per Doktor", hsa_id="SE2321000016-1XYZ", role="Läkare"),
            purpose="Återbesök", status="booked", invitation=True, time_type="Besök",
            care_type="Läkare", **BASE),
    FixedContact(id="fc1", role="fast_vardkontakt", person=PersonRef(name="Siv Sjuksköterska"),
                 care_team="Team Norr", unit=UnitRef(id="SE2321000016-U200", name="VC"),
                 start=dt.date(2026, 1, 1),
                 contact=[ContactPoint(system="phone", value="010-123 45 67",
                                       hours="vardagar 8-10")],
                 note="Ring vid frågor", internal_note="Personal: se journal", **BASE),
    SelfCare(id="sc1", activity="Blodsockermätning", instructions="Före frukost",
             performed_by="Personen själv", assessed_by=PersonRef(name="Siv"),
             follow_up_date=dt.date(2027, 3, 1), **BASE),
]

record_decoder = msgspec.json.Decoder(Record)


def test_care_plan_reads_the_names_before_spec_9() -> None:
    """An older producer's plan (activity ``description``, ``follow_up``) still decodes, and
    its values are read under the new names."""
    old = {"type": "care_plans", "id": "p", "time": "2026-01-01T00:00:00Z", "scope": "hsl",
           "source": {"producer": "P", "organisation": {"id": "O", "name": "O"},
                      "unit": {"id": "U", "name": "U"}},
           "title": "SIP", "follow_up": "2026-12-15",
           "activities": [{"description": "Genomgång", "responsible": "Region"}]}
    plan = record_decoder.decode(json.dumps(old))
    assert isinstance(plan, CarePlan)
    assert plan.follow_up_date == dt.date(2026, 12, 15)
    assert plan.activities[0].what == "Genomgång"


def test_approved_for_patient_is_sent_only_when_false() -> None:
    shown = msgspec.json.decode(msgspec.json.encode(RECORDS[0]))
    hidden = msgspec.json.decode(msgspec.json.encode(RECORDS[9]))
    assert "approved_for_patient" not in shown
    assert hidden["approved_for_patient"] is False


def user() -> User:
    return User(id="SE2321000016-1ABC", name="Anna", role="läkare",
                unit=UnitRef(id="SE2321000016-7Z3B", name="Akuten"))


# -- QueryClaims -------------------------------------------------------------------------


def claims_json(**extra: Any) -> dict[str, Any]:
    return {
        "iss": "SE2321000016-0001", "aud": "SE0000000000-BRK1", "iat": 1, "exp": 61,
        "jti": "j", "sub": "193803039142",
        "user": {"id": "SE2321000016-1ABC", "name": "Anna", "role": "läkare",
                 "unit": {"id": "SE2321000016-7Z3B", "name": "Akuten"}},
        "relation": True, "basis": "consent", "types": ["medication", "diagnoses"], **extra,
    }


def test_query_claims_period_from_is_renamed() -> None:
    raw = claims_json(period={"from": "2026-01-01", "to": "2026-06-30"},
                      unblock={"step": "read", "producers": ["P1"]}, deadline_ms=1500)
    claims = msgspec.json.decode(json.dumps(raw), type=QueryClaims)
    assert claims.period == Period(from_=dt.date(2026, 1, 1), to=dt.date(2026, 6, 30))
    assert claims.unblock == Unblock(step="read", producers=["P1"])
    assert claims.user == user()
    assert json.loads(msgspec.json.encode(claims)) == raw


def test_period_with_only_from() -> None:
    period = msgspec.json.decode(b'{"from": "2026-01-01"}', type=Period)
    assert period.from_ == dt.date(2026, 1, 1) and period.to is None
    assert msgspec.json.encode(period) == b'{"from":"2026-01-01"}'
    # The Python name is not a wire name.
    assert msgspec.json.decode(b'{"from_": "2026-01-01"}', type=Period).from_ is None


def test_query_claims_optional_members_are_omitted() -> None:
    claims = msgspec.json.decode(json.dumps(claims_json()), type=QueryClaims)
    assert claims.period is None and claims.unblock is None and claims.deadline_ms is None
    assert set(json.loads(msgspec.json.encode(claims))) == set(claims_json())


@pytest.mark.parametrize(
    "change",
    [
        {"basis": "curiosity"},
        {"types": ["x_ray"]},
        {"relation": "yes"},
        {"iat": "now"},
        {"period": {"from": "2026-13-01"}},
        {"unblock": {"step": "open"}},
        {"user": {"id": "u", "name": "n", "role": "r"}},  # unit missing
    ],
)
def test_query_claims_invalid(change: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(claims_json(**change)), type=QueryClaims)


@pytest.mark.parametrize("missing", ["iss", "aud", "iat", "exp", "jti", "sub", "user",
                                     "relation", "basis", "types"])
def test_query_claims_required(missing: str) -> None:
    raw = claims_json()
    del raw[missing]
    with pytest.raises(msgspec.ValidationError, match=missing):
        msgspec.json.decode(json.dumps(raw), type=QueryClaims)


def test_query_claims_need_a_type() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(claims_json(types=[])), type=QueryClaims)


def test_unknown_fields_are_ignored() -> None:
    """Schema evolution: a newer peer's extra members never break an older one."""
    raw = claims_json(future_member={"x": 1})
    assert msgspec.json.decode(json.dumps(raw), type=QueryClaims).jti == "j"


# -- Answer ----------------------------------------------------------------------------------


def answer(**extra: Any) -> Answer:
    return Answer(query_id="q1", subject="193803039142", complete=True,
                  blocked_information_exists=False,
                  sources=[SourceResult(producer="P1", organisation=ORG, status="ok",
                                        records=9, latency_ms=12)],
                  records=list(RECORDS), **extra)


def test_answer_omits_blocked_at_when_none() -> None:
    raw = json.loads(msgspec.json.encode(answer()))
    assert "blocked_at" not in raw
    assert {"query_id", "subject", "complete", "blocked_information_exists", "sources",
            "records"} <= set(raw)
    assert raw["complete"] is True and raw["blocked_information_exists"] is False


def test_answer_keeps_blocked_at_when_given() -> None:
    raw = json.loads(msgspec.json.encode(answer(blocked_at=["P1"])))
    assert raw["blocked_at"] == ["P1"]
    empty = json.loads(msgspec.json.encode(answer(blocked_at=[])))
    assert empty["blocked_at"] == []  # "located, nowhere" is not "not asked"


def test_answer_round_trip() -> None:
    a = answer(blocked_at=["P1"])
    assert msgspec.json.decode(msgspec.json.encode(a), type=Answer) == a


def test_answer_source_members() -> None:
    raw = json.loads(msgspec.json.encode(answer()))["sources"][0]
    expected = {"producer": "P1", "organisation": {"id": ORG.id, "name": ORG.name},
                "status": "ok", "records": 9, "latency_ms": 12}
    assert raw.items() >= expected.items()
    assert set(raw) <= {*expected, "truncated", "unreadable"}


def test_answer_source_always_says_how_many_are_unreadable() -> None:
    """SPEC section 3: every client shows the count, so every source carries it (0 too)."""
    src = SourceResult(producer="P2", organisation=ORG, status="no_data", latency_ms=3)
    assert json.loads(msgspec.json.encode(src))["unreadable"] == 0


def test_answer_source_always_says_how_many_records() -> None:
    """SPEC section 3 lists ``records`` for every source, also one with no data."""
    src = SourceResult(producer="P2", organisation=ORG, status="no_data", latency_ms=3)
    assert json.loads(msgspec.json.encode(src)).get("records") == 0


# -- records -----------------------------------------------------------------------------------


def test_every_information_type_has_a_record() -> None:
    tags = {type(r).__struct_config__.tag for r in RECORDS}
    assert tags == set(INFORMATION_TYPES)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_record_round_trip_with_type_tag(record: Record) -> None:
    encoded = msgspec.json.encode(record)
    raw = json.loads(encoded)
    assert raw["type"] == type(record).__struct_config__.tag
    assert next(iter(raw)) == "type"  # the tag leads, for streaming readers
    decoded = record_decoder.decode(encoded)
    assert type(decoded) is type(record)
    assert decoded == record
    assert raw["source"]["producer"] == "SE2321000016-P001"
    assert raw["time"] == "2026-11-20T09:30:00Z"


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_record_defaults_are_omitted(record: Record) -> None:
    raw = json.loads(msgspec.json.encode(record))
    assert "blocked" not in raw  # only released records say blocked: true
    released = msgspec.structs.replace(record, blocked=True)
    assert json.loads(msgspec.json.encode(released))["blocked"] is True


def test_record_without_type_or_unknown_type_is_refused() -> None:
    raw = json.loads(msgspec.json.encode(RECORDS[0]))
    del raw["type"]
    with pytest.raises(msgspec.ValidationError):
        record_decoder.decode(json.dumps(raw))
    raw["type"] = "x_ray_images"
    with pytest.raises(msgspec.ValidationError):
        record_decoder.decode(json.dumps(raw))


def test_record_scope_is_checked() -> None:
    raw = json.loads(msgspec.json.encode(RECORDS[0]))
    raw["scope"] = "secret"
    with pytest.raises(msgspec.ValidationError):
        record_decoder.decode(json.dumps(raw))


def test_answer_decodes_mixed_records_in_order() -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(answer()), type=Answer)
    assert [type(r) for r in decoded.records] == [type(r) for r in RECORDS]


# -- MQTT messages -------------------------------------------------------------------------------


def test_question_and_reply_round_trip() -> None:
    q = Question(query_id="q1", broker="SE0000000000-BRK1", reply_topic="samsvar/v1/r/b1",
                 iat=1, deadline=2, consumer=Consumer(organisation=ORG, kind="vårdgivare",
                                                      user=user()),
                 subject="193803039142", types=["medication"], basis="emergency",
                 period=Period(from_=dt.date(2026, 1, 1)), unblock=Unblock(step="locate"))
    raw = json.loads(msgspec.json.encode(q))
    assert raw["period"] == {"from": "2026-01-01"}
    assert msgspec.json.decode(msgspec.json.encode(q), type=Question) == q

    r = Reply(query_id="q1", producer="P1", status="ok", records=list(RECORDS), blocked=True)
    assert msgspec.json.decode(msgspec.json.encode(r), type=Reply) == r
    empty = Reply(query_id="q1", producer="P1", status="no_data")
    assert msgspec.json.decode(msgspec.json.encode(empty), type=Reply) == empty


@pytest.mark.parametrize("message", [
    Question(query_id="q1", broker="B", reply_topic="t", iat=1, deadline=2,
             consumer=Consumer(organisation=ORG, kind="vårdgivare", user=user()),
             subject="193803039142", types=["medication"], basis="consent"),
    Reply(query_id="q1", producer="P1", status="no_data"),
], ids=["Question", "Reply"])
def test_protocol_version_is_on_the_wire(message: Question | Reply) -> None:
    """A peer must see ``v`` to tell a future version from this one."""
    assert json.loads(msgspec.json.encode(message)).get("v") == 1


def test_reply_status_is_the_producers_own() -> None:
    """``timeout`` and ``unavailable`` are the broker's words, never a producer's."""
    for status in ("timeout", "unavailable"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(json.dumps({"query_id": "q", "producer": "P",
                                            "status": status}), type=Reply)


def test_presence_and_problem() -> None:
    p = Presence(producer="P1", online=False, since=5)
    assert msgspec.json.decode(msgspec.json.encode(p), type=Presence) == p
    prob = Problem(type="https://samsvar.se/problems/policy", title="Forbidden", status=403,
                   rule="relation_required")
    assert json.loads(msgspec.json.encode(prob)) == {
        "type": "https://samsvar.se/problems/policy", "title": "Forbidden", "status": 403,
        "rule": "relation_required"}


def test_own_query_claims() -> None:
    from schemas.messages import OwnQueryClaims

    raw = {"iss": "SE5560000000-0003", "aud": "B", "iat": 1, "exp": 61, "jti": "j",
           "sub": "201503012385", "types": ["bookings"], "acting_as": "guardian",
           "actor": {"id": "198203012391", "loa": "http://id.elegnamnden.se/loa/1.0/loa3",
                     "auth_time": 1},
           "mandate": {"source": "folkbokforing", "checked_at": "2026-12-08"}}
    claims = msgspec.json.decode(json.dumps(raw), type=OwnQueryClaims)
    assert claims.actor.id == "198203012391"
    assert claims.mandate is not None and claims.mandate.source == "folkbokforing"
    assert claims.protected_identity is False
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps({**raw, "acting_as": "neighbour"}), type=OwnQueryClaims)
