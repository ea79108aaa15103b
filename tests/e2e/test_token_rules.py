"""Strict token parsing at the running broker (SPEC section 3, "Token rules beyond the
table"): every token here is signed with the issuer's registered key, so only the rule
under test can refuse it."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import pytest

from schemas.jose import PrivateKey, b64url_encode
from schemas.messages import QUERY_TYP, User
from schemas.records import UnitRef
from tests.e2e.conftest import CARE_GIVER, SOCIAL_CARE_GIVER, Federation, ProducerSpec
from tests.e2e.test_refusals import refused

OTHER_PERSON = "195001182046"  # Skatteverket's test personnummer


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    await fed.start_broker()
    return fed


def signed(header: bytes, claims: bytes, key: PrivateKey) -> str:
    """A compact JWS over exactly these header and claims bytes."""
    signing_input = f"{b64url_encode(header)}.{b64url_encode(claims)}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


def header(key: PrivateKey, **extra: Any) -> bytes:
    return json.dumps({"alg": key.alg, "kid": key.kid, "typ": QUERY_TYP, **extra}).encode()


def claims_json(fed: Federation, **kw: Any) -> bytes:
    return msgspec.json.encode(fed.claims(**kw))


def with_member(document: bytes, name: str, value: Any, *, first: bool = False) -> bytes:
    """``document`` (a JSON object) with one more member, last (or first)."""
    member = json.dumps(name).encode() + b":" + json.dumps(value).encode()
    if first:
        return b"{" + member + b"," + document[1:]
    return document[:-1] + b"," + member + b"}"


async def test_the_plain_token_built_here_is_answered(fed: Federation) -> None:
    """The baseline: what the tests below change is all that makes them refused."""
    key = fed.keys[CARE_GIVER]
    status, _, body = await fed.post(signed(header(key), claims_json(fed), key))
    assert status == 200, body


async def test_a_header_naming_alg_twice_is_refused(fed: Federation) -> None:
    """``{"alg": "none", ..., "alg": "EdDSA"}``: a last-wins reader verifies EdDSA while
    another reads "none"."""
    key = fed.keys[CARE_GIVER]
    head = b'{"alg":"none","kid":' + json.dumps(key.kid).encode() + b',"typ":"' + \
        QUERY_TYP.encode() + b'","alg":"' + key.alg.encode() + b'"}'
    body = await refused(fed, signed(head, claims_json(fed), key), 401, "bad-token")
    assert "alg" in body["detail"]


@pytest.mark.parametrize(("name", "value", "first"), [
    ("sub", OTHER_PERSON, False),
    ("basis", "emergency", False),
    ("iss", SOCIAL_CARE_GIVER, True),  # the signer's own iss comes last
    ("relation", True, False),
])
async def test_claims_naming_a_member_twice_are_refused(fed: Federation, name: str,
                                                        value: Any, first: bool) -> None:
    key = fed.keys[CARE_GIVER]
    token = signed(header(key), with_member(claims_json(fed), name, value, first=first), key)
    body = await refused(fed, token, 400, "duplicate-member")
    assert name in body["detail"]


async def test_a_duplicate_in_a_nested_object_is_refused(fed: Federation) -> None:
    key = fed.keys[CARE_GIVER]
    raw = claims_json(fed).replace(b'"role":', b'"role":"Admin","role":', 1)
    await refused(fed, signed(header(key), raw, key), 400, "duplicate-member")


@pytest.mark.parametrize("crit", [[], ["exp"], None], ids=["empty", "exp", "null"])
async def test_crit_present_at_all_is_refused(fed: Federation, crit: Any) -> None:
    key = fed.keys[CARE_GIVER]
    token = signed(header(key, crit=crit), claims_json(fed), key)
    body = await refused(fed, token, 401, "bad-token")
    assert "crit" in body["detail"]


async def test_nbf_in_the_future_is_refused_and_in_the_past_honoured(fed: Federation) -> None:
    key = fed.keys[CARE_GIVER]
    now = int(time.time())
    future = signed(header(key), with_member(claims_json(fed), "nbf", now + 120), key)
    await refused(fed, future, 401, "not-yet-valid")
    past = signed(header(key), with_member(claims_json(fed), "nbf", now - 5), key)
    status, _, body = await fed.post(past)
    assert status == 200, body


@pytest.mark.parametrize("jti", ["", "x" * 129], ids=["empty", "129-characters"])
async def test_jti_must_be_1_to_128_characters(fed: Federation, jti: str) -> None:
    claims = msgspec.structs.replace(fed.claims(), jti=jti)
    body = await refused(fed, fed.claims_token(claims), 400, "malformed-claims")
    assert "jti" in body["detail"]


async def test_jti_of_128_characters_is_accepted(fed: Federation) -> None:
    status, _, body = await fed.post(fed.token(jti="j" * 128))
    assert status == 200, body


@pytest.mark.parametrize("where", ["user", "unit", "both"])
async def test_user_or_unit_of_another_organisation_is_refused(fed: Federation,
                                                               where: str) -> None:
    """The care giver SE2321000999 signs for a user or unit of SE2120009999."""
    own, other = CARE_GIVER.split("-")[0], SOCIAL_CARE_GIVER.split("-")[0]
    user = User(id=f"{other if where != 'unit' else own}-ANLI", name="Anna Lind", role="Läkare",
                unit=UnitRef(id=f"{other if where != 'user' else own}-U100", name="Akuten"))
    body = await refused(fed, fed.token(user=user), 403, "unit-not-of-issuer")
    assert body["rule"] == "unit-not-of-issuer"
    assert own in body["detail"]
