"""Query claims: built right, signed, verifiable by the broker's code path."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import msgspec
import pytest

from consumer_client import Client, make_claims, sign_query
from consumer_client.client import MAX_LIFETIME
from schemas import BadSignature, InvalidPersonId, UnknownKey
from schemas.jose import (
    Header,
    PrivateKey,
    PublicKey,
    generate_key,
    public_key_from_jwk,
    read_header,
    verify,
)
from schemas.messages import QUERY_TYP, Period, QueryClaims, Unblock, User

ISSUER = "SE2321000016-0001"
AUDIENCE = "SE0000000000-BRK1"


def claims(user: User, **overrides: object) -> QueryClaims:
    args: dict[str, object] = {
        "issuer": ISSUER, "audience": AUDIENCE, "user": user, "subject": "19380303-9142",
        "types": ["medication"], "basis": "consent",
    }
    args.update(overrides)
    return make_claims(**args)  # type: ignore[arg-type]


def key_for(key: PublicKey):  # type: ignore[no-untyped-def]
    def lookup(header: Header) -> PublicKey:
        if header.kid != key.kid:
            raise UnknownKey(header.kid)
        return key
    return lookup


def test_claims_defaults(user: User) -> None:
    before = int(time.time())
    c = claims(user)
    assert c.iss == ISSUER and c.aud == AUDIENCE and c.user == user
    assert c.sub == "193803039142"
    assert c.relation is True
    assert before <= c.iat <= int(time.time())
    assert c.exp - c.iat == 60
    assert c.types == ["medication"]
    assert c.period is None and c.unblock is None and c.deadline_ms is None


def test_claims_jti_is_fresh_uuid(user: User) -> None:
    jtis = {claims(user).jti for _ in range(50)}
    assert len(jtis) == 50
    assert all(len(j) == 36 and j.count("-") == 4 for j in jtis)


@pytest.mark.parametrize("form", ["193803039142", "19380303-9142", "380303-9142", " 380303-9142 "])
def test_subject_forms_normalise(user: User, form: str) -> None:
    assert claims(user, subject=form).sub == "193803039142"


@pytest.mark.parametrize("bad", ["193803039143", "3803039142", "19380303 9142", "", "abc"])
def test_bad_subject_is_refused_before_signing(user: User, bad: str) -> None:
    with pytest.raises(InvalidPersonId):
        claims(user, subject=bad)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"types": []}, "at least one"),
        ({"types": ["medication", "x-ray"]}, "unknown information type"),
        ({"basis": "curiosity"}, "basis must be"),
        ({"lifetime": MAX_LIFETIME + 1}, "lifetime"),
        ({"lifetime": 0}, "lifetime"),
        ({"deadline_ms": 0}, "deadline_ms"),
    ],
)
def test_bad_arguments_raise_value_error(
    user: User, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        claims(user, **overrides)


def test_duplicate_types_collapse_in_order(user: User) -> None:
    c = claims(user, types=["diagnoses", "medication", "diagnoses"])
    assert c.types == ["diagnoses", "medication"]


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_signed_query_verifies(user: User, alg: str) -> None:
    key = generate_key(alg)  # type: ignore[arg-type]
    c = claims(user, period=Period(from_=None, to=None), unblock=Unblock(step="locate"),
               deadline_ms=1500)
    token = sign_query(c, key)
    header, payload = verify(token, key_for(key.public), typ=QUERY_TYP)
    assert header.alg == alg and header.kid == key.kid and header.typ == QUERY_TYP
    assert msgspec.json.decode(payload, type=QueryClaims) == c


def test_period_is_sent_as_from(user: User) -> None:
    c = claims(user, period=Period(from_=dt.date(2026, 1, 1), to=dt.date(2026, 6, 30)))
    key = generate_key()
    _, payload = verify(sign_query(c, key), key_for(key.public), typ=QUERY_TYP)
    assert json.loads(payload)["period"] == {"from": "2026-01-01", "to": "2026-06-30"}


def test_other_key_does_not_verify(user: User, key: PrivateKey) -> None:
    token = sign_query(claims(user), key)
    other = public_key_from_jwk({**generate_key().public.to_jwk(), "kid": key.kid})
    with pytest.raises(BadSignature):
        verify(token, key_for(other), typ=QUERY_TYP)


def test_from_files_reads_private_jwk(tmp_path: Path, user: User, key: PrivateKey) -> None:
    path = tmp_path / "consumer.jwk"
    path.write_text(json.dumps(key.to_jwk()))
    client = Client.from_files("http://127.0.0.1:1/", path, ISSUER, AUDIENCE, user)
    assert client.key.kid == key.kid
    assert client.broker_url == "http://127.0.0.1:1"
    token = sign_query(claims(user), client.key)
    assert read_header(token).kid == key.kid
    verify(token, key_for(key.public), typ=QUERY_TYP)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("{", "not a JSON JWK"), ("[]", "not a JSON JWK object"),
     ('{"kty": "RSA"}', "unsupported JWK")],
)
def test_from_files_names_the_file(
    tmp_path: Path, user: User, content: str | None, message: str
) -> None:
    path = tmp_path / "bad.jwk"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        Client.from_files("http://x", path, ISSUER, AUDIENCE, user)
    assert str(path) in str(info.value)


def test_from_files_refuses_a_public_jwk(tmp_path: Path, user: User, key: PrivateKey) -> None:
    path = tmp_path / "public.jwk"
    path.write_text(json.dumps(key.public.to_jwk()))
    with pytest.raises(ValueError, match="'d'"):
        Client.from_files("http://x", path, ISSUER, AUDIENCE, user)
