"""The person's own view end to end (SPEC section 9): a citizen portal asks over HTTP, the
broker applies the own view's rules, real adapters over a real Mosquitto apply theirs.

Every broker rule is tested on its own (its problem type, nothing disclosed, the refusal
in the access log), and so is every producer rule (not approved for the patient, release
delay, blocks said only to the person, a unit's block of a guardian, internal notes).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import msgspec
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from structlog.testing import capture_logs

from consumer_client import make_own_claims, sign_own_query
from consumer_client.render import describe_access
from producer_adapter.guardian_blocks import GuardianBlockRegister
from schemas.accesslog import EXTRACT_TYP, AccessEntry, ExtractClaims
from schemas.jose import sign
from schemas.messages import LOA3, LOA4, OWN_QUERY_TYP, Actor, Mandate
from tests.e2e.conftest import (
    BROKER_ID,
    CARE_GIVER,
    CITIZEN_PORTAL,
    Federation,
    ProducerSpec,
)

# Skatteverket's test personnummer; ages hold from 2026 until 2028 (the child turns 13 on
# 2028-03-01, the teenager 16 on 2028-04-01).
ADULT = "195205131575"
CHILD = "201503012385"
GUARDIAN = "198504012389"
OTHER_GUARDIAN = "198504012397"
TEEN = "201204012395"
SIXTEEN = "201001012382"
DELAYED_ONLY = "199012012390"
OWN = "/v1/own/queries"
NOW = dt.datetime.now(dt.UTC)
LOA2 = "http://id.elegnamnden.se/loa/1.0/loa2"
EVERY_OWN_TYPE = ["care_plans", "bookings", "fixed_contacts", "self_care", "medication",
                  "lab_results"]
REGION = {"id": "SE2321000999-RE01", "name": "Region Exempel"}
KOMMUN = {"id": "SE2120009999-EK01", "name": "Exempel kommun"}


def rec(producer: str, rid: str, type_: str, *, days_ago: float = 30, at_unit: str = "U1",
        **fields: Any) -> dict[str, Any]:
    when = (NOW - dt.timedelta(days=days_ago)).isoformat()
    return {"type": type_, "id": rid, "time": when, "scope": "hsl",
            "source": {"producer": producer, "organisation": {"id": "PRODORG",
                                                               "name": "Producentorganisation"},
                       "unit": {"id": at_unit, "name": f"Enhet {at_unit}"}, "system": "test"},
            **fields}


def sip(producer: str, rid: str, **extra: Any) -> dict[str, Any]:
    return rec(producer, rid, "care_plans", title="SIP", plan_type="SIP", needs=["Bo hemma"],
               activities=[{"what": "Hemtjänst", "responsible_org": KOMMUN,
                            "status": "in_progress"},
                           {"what": "Fysioterapi", "responsible_org": REGION}],
               overall_responsible_org=KOMMUN,
               coordinator={"name": "Lena Fors", "role": "SIP-samordnare"},
               follow_up_date=(NOW + dt.timedelta(days=40)).date().isoformat(), **extra)


def booking(producer: str, rid: str, **extra: Any) -> dict[str, Any]:
    start = NOW + dt.timedelta(days=7)
    return rec(producer, rid, "bookings", days_ago=3, start=start.isoformat(),
               end=(start + dt.timedelta(minutes=30)).isoformat(),
               unit={"id": "U1", "name": "Vårdcentralen"}, purpose="Återbesök",
               performer={"name": "Per Doktor", "role": "Läkare"}, **extra)


def contact(producer: str, rid: str) -> dict[str, Any]:
    return rec(producer, rid, "fixed_contacts", role="fast_vardkontakt",
               person={"name": "Siv Mattsson"},
               contact=[{"system": "phone", "value": "010-123 40 00", "hours": "8-10"}],
               note="Ring mig", internal_note="INTERNAL-ONLY staff note")


R1 = ProducerSpec(
    "R1", types=["care_plans", "bookings", "fixed_contacts", "self_care", "medication",
                 "lab_results", "care_documentation", "alerts"],
    own_view_types=["care_plans", "bookings", "fixed_contacts", "self_care", "medication",
                    "lab_results"],
    release_delay_days={"lab_results": 14}, excluded_units=["U9"], units=["U1", "U2"],
    blocks=[{"subject": ADULT, "level": "unit", "target": "U2", "registered_by": "person"},
            {"subject": CHILD, "level": "unit", "target": "U2", "registered_by": "person"}],
    records={
        ADULT: [sip("R1", "R1-SIP"), booking("R1", "R1-BOK"), contact("R1", "R1-FVK"),
                rec("R1", "R1-EGV", "self_care", activity="Blodtrycksmätning"),
                rec("R1", "R1-LAB-OLD", "lab_results", days_ago=30, analysis="P-Krea",
                    value="90"),
                rec("R1", "R1-LAB-NEW", "lab_results", days_ago=2, analysis="P-PSA",
                    value="6.8"),
                rec("R1", "R1-LKM-HIDDEN", "medication", drug="Utreds",
                    approved_for_patient=False),
                rec("R1", "R1-LKM", "medication", drug="Apixaban"),
                rec("R1", "R1-DOC", "care_documentation", title="Anteckning"),
                rec("R1", "R1-BLOCKED", "medication", drug="Spärrad", at_unit="U2"),
                rec("R1", "R1-EXCLUDED", "medication", drug="Psykiatri", at_unit="U9")],
        CHILD: [booking("R1", "R1-CHILD-BOK"), rec("R1", "R1-CHILD-LKM", "medication",
                                                   drug="Ventoline"),
                rec("R1", "R1-CHILD-BLOCKED", "medication", drug="Spärrad", at_unit="U2")],
        TEEN: [booking("R1", "R1-TEEN-BOK"), contact("R1", "R1-TEEN-FVK"),
               rec("R1", "R1-TEEN-LKM", "medication", drug="Insulin")],
        SIXTEEN: [rec("R1", "R1-16-LKM", "medication", drug="Desloratadin")],
        DELAYED_ONLY: [rec("R1", "R1-DELAYED-ONLY", "lab_results", days_ago=13.9,
                           analysis="P-PSA", value="6.8")],
    },
)
K1 = ProducerSpec(
    "K1", types=["care_plans", "bookings", "fixed_contacts", "medication"],
    own_view_types=["care_plans", "bookings", "fixed_contacts"], ombud_types=["bookings"],
    records={ADULT: [sip("K1", "K1-SIP"), booking("K1", "K1-BOK"), contact("K1", "K1-FOK"),
                     {**sip("K1", "K1-IFO-PLAN"), "scope": "sol_other"},
                     rec("K1", "K1-LKM", "medication", drug="Not offered in the own view")],
             CHILD: [booking("K1", "K1-CHILD-BOK")]},
)
S1 = ProducerSpec("S1", types=["medication", "bookings"], own_view_types=[],
                  records={ADULT: [rec("S1", "S1-LKM", "medication", drug="Staff only")]})


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([R1, K1, S1])
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)
    return fed


def own_token(fed: Federation, *, subject: str = ADULT, actor: str | None = None,
              acting_as: str = "self", types: list[str] | None = None, loa: str = LOA3,
              auth_age: int = 60, mandate: Mandate | None = None, protected: bool = False,
              issuer: str = CITIZEN_PORTAL, extra: dict[str, Any] | None = None) -> str:
    claims = make_own_claims(
        issuer=issuer, audience=BROKER_ID, subject=subject,
        types=types or EVERY_OWN_TYPE,
        actor=Actor(id=actor or subject, loa=loa, auth_time=int(time.time()) - auth_age),
        acting_as=acting_as,  # type: ignore[arg-type]
        mandate=mandate, protected_identity=protected)
    if extra:
        payload = {**msgspec.to_builtins(claims), **extra}
        return sign(json.dumps(payload).encode(), fed.keys[issuer], typ=OWN_QUERY_TYP)
    return sign_own_query(claims, fed.keys[issuer])


def guardian_token(fed: Federation, **kw: Any) -> str:
    args: dict[str, Any] = {"subject": CHILD, "actor": GUARDIAN, "acting_as": "guardian",
                            "mandate": Mandate(source="folkbokforing",
                                               checked_at=NOW.date().isoformat())}
    args.update(kw)
    return own_token(fed, **args)


async def ask_own(fed: Federation, token: str, **kw: Any) -> tuple[int, Any]:
    status, _, body = await fed.post(token, path=OWN, **kw)
    return status, body


async def log_entries(fed: Federation) -> list[AccessEntry]:
    assert fed.broker is not None and fed.broker.service.access_log is not None
    return [e for e in await fed.broker.service.access_log.extract(ADULT, None)] + [
        e for s in (CHILD, TEEN, SIXTEEN)
        for e in await fed.broker.service.access_log.extract(s, None)]


def ids(body: dict[str, Any]) -> set[str]:
    return {r["id"] for r in body["records"]}


# -- what the person sees ---------------------------------------------------------------


async def test_the_person_sees_their_plans_bookings_and_contacts_at_region_and_municipality(
    fed: Federation,
) -> None:
    with capture_logs() as logs:
        status, body = await ask_own(fed, own_token(fed))
    assert status == 200, body
    # The adapters withheld it all themselves: the broker's re-check found nothing to drop.
    assert not [e for e in logs if e["event"] == "producer_violation"]
    assert body["acting_as"] == "self" and "blocked_at" not in body
    # Only producers offering the types in the own view are asked: S1 offers none.
    assert {s["producer"]: s["status"] for s in body["sources"]} == {"R1": "ok", "K1": "ok"}
    assert ids(body) == {"R1-SIP", "R1-BOK", "R1-FVK", "R1-EGV", "R1-LAB-OLD", "R1-LKM",
                         "K1-SIP", "K1-BOK", "K1-FOK"}
    # what the person must never see, and what nothing may reveal
    text = json.dumps(body)
    for hidden in ("INTERNAL-ONLY", "R1-LKM-HIDDEN", "R1-LAB-NEW", "R1-BLOCKED", "K1-LKM",
                   "S1-LKM", "R1-EXCLUDED", "K1-IFO-PLAN", "internal_note",
                   "approved_for_patient"):
        assert hidden not in text, hidden
    sources = {s["producer"]: s for s in body["sources"]}
    assert sources["R1"]["records"] == 6 and sources["K1"]["records"] == 3
    # the SIP as structure: who does what
    plan = next(r for r in body["records"] if r["id"] == "K1-SIP")
    assert [(a["what"], a["responsible_org"]["name"]) for a in plan["activities"]] == [
        ("Hemtjänst", "Exempel kommun"), ("Fysioterapi", "Region Exempel")]
    assert plan["coordinator"]["role"] == "SIP-samordnare"
    assert plan["needs"] == ["Bo hemma"] and plan["follow_up_date"]
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/v1/producers") as resp:
        listed = {p["id"]: p["own_view_types"] for p in (await resp.json())["producers"]}
    assert listed == {"R1": sorted(R1.own_view_types), "K1": sorted(K1.own_view_types),
                      "S1": []}
    # acting as self, the person is told that blocked information exists (never where)
    assert body["blocked_information_exists"] is True


async def test_staff_see_what_the_person_does_not_with_approved_for_patient_false(
    fed: Federation,
) -> None:
    body = await fed.ask(subject=ADULT, types=["medication", "lab_results", "fixed_contacts"])
    records = {r["id"]: r for r in body["records"]}
    assert records["R1-LKM-HIDDEN"]["approved_for_patient"] is False
    assert "R1-LAB-NEW" in records  # the release delay is the own view's only
    assert records["R1-FVK"]["internal_note"] == "INTERNAL-ONLY staff note"
    assert "S1-LKM" in records and "acting_as" not in body


async def test_a_record_inside_its_release_delay_is_withheld_and_nothing_says_so(
    fed: Federation,
) -> None:
    # R1 shows lab results 14 days after their time: the 30-day-old one, not the 2-day-old
    status, body = await ask_own(fed, own_token(fed, types=["lab_results"]))
    assert status == 200 and ids(body) == {"R1-LAB-OLD"}
    [source] = body["sources"]
    assert (source["status"], source["records"], body["complete"]) == ("ok", 1, True)
    # A person whose only result is inside the delay: R1 says exactly what it says for a
    # person with no result at all.
    status, pending = await ask_own(fed, own_token(fed, subject=DELAYED_ONLY,
                                                   types=["lab_results"]))
    status_none, nothing = await ask_own(fed, own_token(fed, subject=SIXTEEN,
                                                        types=["lab_results"]))
    assert status == status_none == 200

    def shape(answer: dict[str, Any]) -> Any:
        return ({k: v for k, v in answer.items() if k not in ("query_id", "subject", "sources")},
                [{k: v for k, v in s.items() if k != "latency_ms"} for s in answer["sources"]])

    assert shape(pending) == shape(nothing)
    assert pending["records"] == [] and pending["sources"][0]["status"] == "no_data"
    # staff see it at once
    staff = await fed.ask(subject=DELAYED_ONLY, types=["lab_results"])
    assert [r["id"] for r in staff["records"]] == ["R1-DELAYED-ONLY"]


async def test_a_guardian_reads_a_child_under_13_and_is_never_told_of_blocks(
    fed: Federation,
) -> None:
    status, body = await ask_own(fed, guardian_token(fed))
    assert status == 200, body
    assert body["acting_as"] == "guardian"
    assert ids(body) == {"R1-CHILD-BOK", "R1-CHILD-LKM", "K1-CHILD-BOK"}
    # The child's block withholds R1-CHILD-BLOCKED; the guardian is not told it exists.
    assert body["blocked_information_exists"] is False


async def test_a_unit_s_block_of_one_guardian_makes_its_source_look_like_no_data(
    fed: Federation,
) -> None:
    GuardianBlockRegister(fed.tmp / "guardian-blocks-R1.db").add(
        child=CHILD, guardian=GUARDIAN, unit="U1", operator="test",
        units=frozenset({"U1", "U2"}))
    status, body = await ask_own(fed, guardian_token(fed))
    assert status == 200, body
    sources = {s["producer"]: s for s in body["sources"]}
    # exactly what a source with nothing for the child says
    assert {k: v for k, v in sources["R1"].items() if k != "latency_ms"} == {
        "producer": "R1", "organisation": sources["R1"]["organisation"], "status": "no_data",
        "records": 0, "truncated": False, "unreadable": 0}
    assert ids(body) == {"K1-CHILD-BOK"}
    assert body["complete"] is True and body["blocked_information_exists"] is False
    # the other guardian is not blocked
    status, other = await ask_own(fed, guardian_token(fed, actor=OTHER_GUARDIAN))
    assert status == 200 and "R1-CHILD-BOK" in ids(other)


async def test_a_13_to_15_year_old_sees_bookings_and_fixed_contacts_only(
    fed: Federation,
) -> None:
    status, body = await ask_own(fed, own_token(fed, subject=TEEN,
                                                types=["bookings", "fixed_contacts"]))
    assert status == 200, body
    assert ids(body) == {"R1-TEEN-BOK", "R1-TEEN-FVK"}
    assert "INTERNAL-ONLY" not in json.dumps(body)
    status, sixteen = await ask_own(fed, own_token(fed, subject=SIXTEEN,
                                                   types=["medication"]))
    assert status == 200 and ids(sixteen) == {"R1-16-LKM"}


# -- the broker's rules, one by one ---------------------------------------------------------


REFUSALS = [
    ("loa2", {"loa": LOA2}, "assurance-too-low"),
    ("unknown loa", {"loa": "urn:example:loa"}, "assurance-too-low"),
    ("sign-in over an hour ago", {"auth_age": 3601}, "assurance-too-low"),
    ("actor is not the subject", {"actor": GUARDIAN}, "actor-not-subject"),
    ("self under 13", {"subject": CHILD}, "self-under-age"),
    ("13-15 asks for medication", {"subject": TEEN, "types": ["bookings", "medication"]},
     "self-under-age"),
    ("a type never in the own view", {"types": ["bookings", "alerts"]},
     "type-not-for-person"),
    ("care documentation", {"types": ["care_documentation"]}, "type-not-for-person"),
    ("functional status", {"types": ["functional_status"]}, "type-not-for-person"),
    ("ombud", {"acting_as": "ombud", "actor": GUARDIAN,
                   "mandate": Mandate(source="fullmaktsregistret", id="F-1",
                                   valid_to="2027-12-31")}, "ombud-not-permitted"),
    ("guardian without mandate", {"subject": CHILD, "actor": GUARDIAN, "acting_as": "guardian"},
     "mandate-missing"),
    ("guardian, mandate of another source",
     {"subject": CHILD, "actor": GUARDIAN, "acting_as": "guardian",
          "mandate": Mandate(source="the-portal-says-so", checked_at="2026-12-01")},
     "mandate-missing"),
    ("guardian of a 14-year-old",
     {"subject": TEEN, "actor": GUARDIAN, "acting_as": "guardian",
          "mandate": Mandate(source="folkbokforing", checked_at="2026-12-01")},
     "guardian-child-too-old"),
    ("guardian of a 16-year-old",
     {"subject": SIXTEEN, "actor": GUARDIAN, "acting_as": "guardian",
          "mandate": Mandate(source="folkbokforing", checked_at="2026-12-01")},
     "guardian-child-too-old"),
    ("guardian with protected identity",
     {"subject": CHILD, "actor": GUARDIAN, "acting_as": "guardian", "protected": True,
          "mandate": Mandate(source="folkbokforing", checked_at="2026-12-01")},
     "protected-identity"),
]


@pytest.mark.parametrize(("case", "kw", "rule"), REFUSALS, ids=[c for c, _, _ in REFUSALS])
async def test_each_broker_rule_refuses_with_its_own_problem_type_and_is_logged(
    fed: Federation, case: str, kw: dict[str, Any], rule: str,
) -> None:
    status, body = await ask_own(fed, own_token(fed, **kw))
    assert status == 403, (case, body)
    assert body["type"] == f"urn:samsvar:problem:{rule}" and body["rule"] == rule
    assert body["status"] == 403 and body["title"] and body["detail"]
    assert "records" not in body and "sources" not in body
    [entry] = [e for e in await log_entries(fed) if e.outcome == "refused"]
    assert entry.rule == rule and entry.action == "own_view" and entry.status == 403
    assert entry.acting_as == kw.get("acting_as", "self")
    assert entry.loa == kw.get("loa", LOA3)


async def test_the_person_with_protected_identity_reads_their_own_view(
    fed: Federation,
) -> None:
    status, body = await ask_own(fed, own_token(fed, protected=True, types=["bookings"]))
    assert status == 200 and ids(body) == {"R1-BOK", "K1-BOK"}


async def test_loa4_is_accepted(fed: Federation) -> None:
    status, body = await ask_own(fed, own_token(fed, loa=LOA4, types=["bookings"]))
    assert status == 200, body


async def test_a_staff_token_is_refused_here_and_an_own_view_token_at_v1_queries(
    fed: Federation,
) -> None:
    # a staff query's typ is not an own-view query's, and the other way round
    status, body = await ask_own(fed, fed.token(subject=ADULT))
    assert status == 401 and body["type"] == "urn:samsvar:problem:bad-token"
    assert "samsvar-own-query+jwt" in body["detail"]
    status, _, body = await fed.post(own_token(fed))
    assert status == 401 and body["type"] == "urn:samsvar:problem:bad-token"
    # the care giver lacks the citizen-portal role: the 401 of an unknown issuer or key
    status, body = await ask_own(fed, own_token(fed, issuer=CARE_GIVER))
    assert status == 401 and body["type"] == "urn:samsvar:problem:unknown-key"
    assert not [e for e in await log_entries(fed) if e.outcome == "answered"]


@pytest.mark.parametrize("claim", ["user", "relation", "basis", "unblock"])
async def test_an_own_view_token_with_a_staff_claim_is_malformed(
    fed: Federation, claim: str,
) -> None:
    value: Any = {"user": {"id": "x", "name": "x", "role": "x",
                           "unit": {"id": "x", "name": "x"}},
                  "relation": True, "basis": "consent", "unblock": {"step": "locate"}}[claim]
    status, body = await ask_own(fed, own_token(fed, extra={claim: value}))
    assert status == 400 and body["type"] == "urn:samsvar:problem:staff-claims-in-own-view"
    assert claim in body["detail"]


@pytest.mark.parametrize(("extra", "slug"), [
    ({"acting_as": "neighbour"}, "malformed-claims"),
    ({"actor": {"id": "195205131576", "loa": LOA3, "auth_time": 1}}, "invalid-person-id"),
    ({"sub": "12345"}, "invalid-person-id"),
    ({"types": []}, "malformed-claims"),
])
async def test_bad_own_view_input_is_a_clear_400_and_discloses_nothing(
    fed: Federation, extra: dict[str, Any], slug: str,
) -> None:
    status, body = await ask_own(fed, own_token(fed, extra=extra))
    assert status == 400, body
    assert body["type"] == f"urn:samsvar:problem:{slug}" and body["detail"]
    assert "records" not in body


# -- the access log and the person's extract -----------------------------------------------


async def test_own_view_reads_are_logged_with_the_actor_and_shown_in_words(
    fed: Federation,
) -> None:
    status, _ = await ask_own(fed, guardian_token(fed))
    assert status == 200
    assert fed.broker is not None and fed.broker.service.access_log is not None
    [entry] = await fed.broker.service.access_log.extract(CHILD, None)
    assert entry.outcome == "answered" and entry.action == "own_view"
    assert (entry.actor, entry.acting_as, entry.loa) == (GUARDIAN, "guardian", LOA3)
    assert entry.mandate is not None and entry.mandate.source == "folkbokforing"
    assert entry.consumer is not None and entry.consumer.id == CITIZEN_PORTAL
    assert entry.user is None and entry.basis is None
    assert {s.producer: s.disclosed for s in entry.sources} == {
        "R1": {"bookings": 1, "medication": 1}, "K1": {"bookings": 1}}

    now = int(time.time())
    extract_claims = ExtractClaims(iss=CITIZEN_PORTAL, aud=BROKER_ID, iat=now, exp=now + 60,
                                   jti=str(uuid.uuid4()), sub=CHILD)
    token = sign(msgspec.json.encode(extract_claims), fed.keys[CITIZEN_PORTAL],
                 typ=EXTRACT_TYP)
    assert fed.http is not None
    async with fed.http.post(f"{fed.url}/v1/access-log/extract", data=token.encode(),
                             headers={"Content-Type": "application/jwt"}) as resp:
        assert resp.status == 200
        extract = await resp.json()
    [shown] = extract["accesses"]
    assert shown["actor"] == GUARDIAN and shown["acting_as"] == "guardian"
    sv, en = describe_access(msgspec.convert(shown, AccessEntry))
    assert sv.startswith("Din vårdnadshavare (19850401-2389) läste dina")
    assert "through Invånartjänst" in en
    # the extract call is itself logged and shows in the next extract
    logged = await fed.broker.service.access_log.extract(CHILD, None)
    assert [e.action for e in logged] == ["own_view", "extract"]


# -- FHIR and NDJSON ------------------------------------------------------------------------


async def test_the_own_view_as_fhir_is_valid_r4_with_appointments_and_care_teams(
    fed: Federation,
) -> None:
    status, _, bundle = await fed.post(own_token(fed), path=OWN,
                                       accept="application/fhir+json")
    assert status == 200
    Bundle.model_validate(bundle)
    kinds = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        kinds.append(resource["resourceType"])
    assert {"Appointment", "CareTeam", "CarePlan", "MedicationRequest",
            "Observation"} <= set(kinds)
    team = next(e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "CareTeam")
    assert team["contained"][0]["resourceType"] == "PractitionerRole"
    plans = [e["resource"] for e in bundle["entry"]
             if e["resource"]["resourceType"] == "CarePlan" and e["resource"].get("activity")]
    assert any(len(p["activity"]) == 2 for p in plans)
    assert "INTERNAL-ONLY" not in json.dumps(bundle)


async def test_the_own_view_streams_with_acting_as_in_the_summary(fed: Federation) -> None:
    status, _, _ = await fed.post(guardian_token(fed), path=OWN, accept="application/json")
    assert status == 200
    assert fed.http is not None
    async with fed.http.post(f"{fed.url}{OWN}", data=guardian_token(fed).encode(),
                             headers={"Content-Type": "application/jwt",
                                      "Accept": "application/x-ndjson"}) as resp:
        assert resp.status == 200
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["acting_as"] == "guardian"
    assert summary["blocked_information_exists"] is False
    streamed = {r["id"] for line in lines[:-1] for r in line["records"]}
    assert streamed == {"R1-CHILD-BOK", "R1-CHILD-LKM", "K1-CHILD-BOK"}


# -- an ombud, where a deployment enables it -----------------------------------------------


@pytest.fixture
async def ombud_fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([R1, K1, S1])
    await fed.start_broker(ombud_types=frozenset({"bookings"}))
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)
    return fed


def ombud_token(fed: Federation, *, valid_to: str = "2099-12-31", **kw: Any) -> str:
    args: dict[str, Any] = {"actor": GUARDIAN, "acting_as": "ombud", "types": ["bookings"],
                            "mandate": Mandate(source="fullmakt", id="F-2026-17",
                                               valid_to=valid_to)}
    args.update(kw)
    return own_token(fed, **args)


async def test_an_enabled_ombud_reads_only_the_named_types_from_producers_that_opt_in(
    ombud_fed: Federation,
) -> None:
    status, body = await ask_own(ombud_fed, ombud_token(ombud_fed))
    assert status == 200, body
    # K1 opted in for bookings; R1 offers bookings in the own view but not to an ombud
    assert [s["producer"] for s in body["sources"]] == ["K1"]
    assert ids(body) == {"K1-BOK"} and body["acting_as"] == "ombud"
    assert body["blocked_information_exists"] is False
    status, body = await ask_own(ombud_fed, ombud_token(ombud_fed,
                                                        types=["bookings", "care_plans"]))
    assert status == 403 and body["type"] == "urn:samsvar:problem:ombud-not-permitted"
    assert "bookings" in body["detail"]
    yesterday = (NOW - dt.timedelta(days=1)).date().isoformat()
    status, body = await ask_own(ombud_fed, ombud_token(ombud_fed, valid_to=yesterday))
    assert status == 403 and body["type"] == "urn:samsvar:problem:mandate-missing"
    status, body = await ask_own(ombud_fed, ombud_token(ombud_fed, protected=True))
    assert status == 403 and body["type"] == "urn:samsvar:problem:protected-identity"
    assert fed_entries_with(await log_entries(ombud_fed), "ombud") == 4


def fed_entries_with(entries: list[AccessEntry], acting_as: str) -> int:
    return sum(1 for e in entries if e.acting_as == acting_as)
