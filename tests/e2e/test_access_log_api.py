"""Every question is logged before its answer leaves, and the person can see who looked."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from typing import Any

import msgspec
import pytest

from schemas.accesslog import EXTRACT_TYP, ExtractClaims
from schemas.jose import sign
from schemas.messages import Period, Unblock
from tests.e2e.conftest import (
    BROKER_ID,
    CARE_GIVER,
    CITIZEN_PORTAL,
    PERSON,
    SOCIAL_CARE_GIVER,
    Federation,
    ProducerSpec,
    record,
)


def extract_token(fed: Federation, issuer: str = CITIZEN_PORTAL, subject: str = PERSON) -> str:
    now = int(time.time())
    claims = ExtractClaims(iss=issuer, aud=BROKER_ID, iat=now, exp=now + 60,
                           jti=str(uuid.uuid4()), sub=subject)
    return sign(msgspec.json.encode(claims), fed.keys[issuer], typ=EXTRACT_TYP)


async def extract(fed: Federation, token: str) -> tuple[int, dict[str, Any]]:
    assert fed.http is not None
    async with fed.http.post(f"{fed.url}/v1/access-log/extract", data=token.encode(),
                             headers={"Content-Type": "application/jwt"}) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([
        ProducerSpec("P1", records={PERSON: [
            record("P1", 1, when="2026-11-01T10:00:00+01:00"),
            record("P1", 2, when="2026-11-02T10:00:00+01:00", type_="alerts")]}),
        ProducerSpec("P2", records={}),
    ])
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)
    return fed


async def test_answered_query_is_in_the_person_s_extract(fed: Federation) -> None:
    answer = await fed.ask(types=["medication", "alerts"], basis="lacks_capacity")
    status, body = await extract(fed, extract_token(fed))
    assert status == 200, body
    assert body["subject"] == PERSON
    [entry] = body["accesses"]
    assert entry["query_id"] == answer["query_id"]
    assert entry["outcome"] == "answered" and entry["status"] == 200
    assert entry["consumer"] == {"id": CARE_GIVER, "name": "Region Exempel"}
    assert entry["consumer_kind"] == "vårdgivare"
    assert entry["unit"]["name"] == "Akuten"
    assert entry["user"] == {"id": "SE2321000999-ANLI", "name": "Anna Lind", "role": "Läkare"}
    assert entry["basis"] == "lacks_capacity" and entry["flags"] == ["lacks_capacity"]
    assert entry["types"] == ["alerts", "medication"]
    sources = {s["producer"]: s for s in entry["sources"]}
    assert sources["P1"]["disclosed"] == {"medication": 1, "alerts": 1}
    assert sources["P2"]["status"] == "no_data" and sources["P2"]["disclosed"] == {}


async def test_refusal_is_logged_with_its_rule(fed: Federation) -> None:
    status, _, _ = await fed.post(fed.token(SOCIAL_CARE_GIVER, basis="emergency"))
    assert status == 403
    _, body = await extract(fed, extract_token(fed))
    [entry] = body["accesses"]
    assert entry["outcome"] == "refused" and entry["status"] == 403
    assert entry["rule"] == "emergency-care-giver-only"
    assert entry["consumer"]["id"] == SOCIAL_CARE_GIVER
    assert entry["sources"] == []


async def test_unblock_step_is_visible_in_the_log(fed: Federation) -> None:
    await fed.ask(unblock=Unblock(step="locate"))
    await fed.ask(unblock=Unblock(step="read", producers=["P1"]))
    _, body = await extract(fed, extract_token(fed))
    steps = [(e["unblock"]["step"], e["unblock"].get("producers")) for e in body["accesses"]]
    assert steps == [("locate", None), ("read", ["P1"])]


async def test_extract_only_for_the_log_extract_role(fed: Federation) -> None:
    """A participant without the role gets the 401 an unknown issuer gets (SPEC 3)."""
    status, body = await extract(fed, extract_token(fed, issuer=CARE_GIVER))
    assert status == 401
    assert body["type"] == "urn:samsvar:problem:unknown-key"


async def test_extract_of_another_person_is_empty(fed: Federation) -> None:
    await fed.ask()
    status, body = await extract(fed, extract_token(fed, subject="201503012385"))
    assert status == 200 and body["accesses"] == []


async def test_no_answer_without_a_log_entry(fed: Federation) -> None:
    assert fed.broker is not None
    access_log = fed.broker.service.access_log
    assert access_log is not None
    await access_log.close()  # the log can no longer be written
    status, _, body = await fed.post(fed.token())
    assert status == 503
    assert body["type"] == "urn:samsvar:problem:access-log-unavailable"
    assert "records" not in body


async def test_a_429_refusal_is_logged(fed: Federation) -> None:
    assert fed.broker is not None
    service = fed.broker.service
    config = service.config
    service.config = dataclasses.replace(config, max_in_flight=0)
    try:
        status, _, _ = await fed.post(fed.token(types=["alerts"]))
    finally:
        service.config = config
    assert status == 429
    _, body = await extract(fed, extract_token(fed))
    [entry] = body["accesses"]
    assert entry["outcome"] == "refused" and entry["status"] == 429
    assert entry["rule"] == "overloaded"
    assert entry["consumer"]["id"] == CARE_GIVER and entry["types"] == ["alerts"]
    assert entry["user"]["id"].startswith(CARE_GIVER.split("-")[0])


@pytest.mark.parametrize(("change", "rule"), [
    ({"period": Period(from_=dt.date(2026, 2, 1), to=dt.date(2026, 1, 1))}, "invalid-period"),
    ({"deadline_ms": -1}, "invalid-deadline"),
])
async def test_a_400_refusal_of_a_signed_query_is_logged(fed: Federation, change: dict[str, Any],
                                                         rule: str) -> None:
    claims = msgspec.structs.replace(fed.claims(), **change)
    status, _, _ = await fed.post(fed.claims_token(claims))
    assert status == 400
    _, body = await extract(fed, extract_token(fed))
    [entry] = body["accesses"]
    assert entry["outcome"] == "refused" and entry["status"] == 400 and entry["rule"] == rule
    assert entry["consumer"]["id"] == CARE_GIVER


async def test_extract_calls_are_in_the_person_s_next_extract(fed: Federation) -> None:
    status, first = await extract(fed, extract_token(fed))
    assert status == 200 and first["accesses"] == []
    status, second = await extract(fed, extract_token(fed))
    assert status == 200, second
    [entry] = second["accesses"]
    assert entry["action"] == "extract" and entry["outcome"] == "answered"
    assert entry["consumer"]["id"] == CITIZEN_PORTAL and entry["subject"] == PERSON


async def test_a_refused_extract_call_is_logged(fed: Federation) -> None:
    token = extract_token(fed)
    assert (await extract(fed, token))[0] == 200
    status, problem = await extract(fed, token)  # the same jti again
    assert status == 401 and problem["type"].endswith(":replayed")
    _, body = await extract(fed, extract_token(fed))
    assert [(e["action"], e["outcome"], e["status"], e["rule"], e["consumer"]["id"])
            for e in body["accesses"]] == [
        ("extract", "answered", 200, None, CITIZEN_PORTAL),
        ("extract", "refused", 401, "replayed", CITIZEN_PORTAL)]
