"""Every refusal of the query endpoint is problem+json with a stable type."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from typing import Any

import pytest

from broker.replay import ReplayStoreError
from consumer_client import sign_query
from schemas.jose import b64url_encode, generate_key
from tests.conftest import free_port
from tests.e2e.conftest import (
    BROKER_ID,
    CARE_GIVER,
    SOCIAL_CARE_GIVER,
    Federation,
    ProducerSpec,
    user_of,
)
from tests.e2e.processes import start_broker, wait_ready, write_broker_config

PROBLEM = "urn:samsvar:problem:"


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    await fed.start_broker()
    return fed


async def refused(fed: Federation, token: str | bytes, status: int, slug: str,
                  **post: Any) -> dict[str, Any]:
    got, headers, body = await fed.post(token, **post)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["type"] == PROBLEM + slug, body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


async def test_replayed_jti(fed: Federation) -> None:
    token = fed.token()
    status, _, _ = await fed.post(token)
    assert status == 200
    await refused(fed, token, 401, "replayed")


async def test_replay_store_down_fails_closed(fed: Federation) -> None:
    """When the replay store cannot tell whether a token is new, no token is accepted."""
    assert fed.broker is not None

    class Down:
        async def first_use(self, issuer: str, jti: str, exp: int, *, now: int) -> bool:
            raise ReplayStoreError("the database is down")

        async def release(self, issuer: str, jti: str) -> None:
            raise ReplayStoreError("the database is down")

        async def writable(self) -> bool:
            return False

        async def open(self) -> None: ...

        async def close(self) -> None: ...

    fed.broker.service.replay = Down()
    await refused(fed, fed.token(), 503, "replay-store-unavailable")


async def test_expired_token(fed: Federation) -> None:
    claims = fed.claims(now=int(time.time()) - 400, lifetime=60)
    await refused(fed, fed.claims_token(claims), 401, "expired")


async def test_lifetime_over_300_seconds(fed: Federation) -> None:
    import msgspec

    claims = msgspec.structs.replace(fed.claims(), exp=fed.claims().iat + 301)
    await refused(fed, fed.claims_token(claims), 401, "lifetime")


async def test_wrong_audience(fed: Federation) -> None:
    await refused(fed, fed.token(audience="some-other-broker"), 401, "wrong-audience")
    assert BROKER_ID != "some-other-broker"


async def test_unknown_kid(fed: Federation) -> None:
    stranger = generate_key("ES256")
    await refused(fed, fed.token(key=stranger), 401, "unknown-key")


async def test_bad_signature(fed: Federation) -> None:
    token = fed.token()
    head, body, _sig = token.split(".")
    forged = f"{head}.{body}.{b64url_encode(bytes(64))}"
    await refused(fed, forged, 401, "bad-signature")


async def test_unknown_issuer(fed: Federation) -> None:
    import msgspec

    claims = msgspec.structs.replace(fed.claims(), iss="SE0000000000-NOBODY")
    await refused(fed, fed.claims_token(claims), 401, "unknown-key")


async def test_unknown_issuer_unknown_key_and_missing_role_get_one_401(fed: Federation) -> None:
    """The registry cannot be probed: whether the issuer is unknown, its kid is, or it is
    registered without the consumer role, the answer is the same 401, word for word, and
    it comes before the signature is checked (a zero signature changes nothing)."""
    import msgspec

    stranger = generate_key("EdDSA")
    unknown_issuer = sign_query(msgspec.structs.replace(
        fed.claims(), iss="SE0000000000-NOBODY", user=user_of("SE0000000000-NOBODY")), stranger)
    unknown_kid = fed.token(key=stranger)
    no_role = fed.token("PRODORG")  # registered, as a producer's organisation only
    bodies = []
    for token in (unknown_issuer, unknown_kid, no_role):
        head, payload, _ = token.split(".")
        for variant in (token, f"{head}.{payload}.{b64url_encode(bytes(64))}"):
            bodies.append(await refused(fed, variant, 401, "unknown-key"))
    assert all(body == bodies[0] for body in bodies), bodies


async def test_what_the_registry_says_never_changes_a_refusal_before_the_key(
        fed: Federation) -> None:
    """A header the broker refuses on its face (a wrong ``typ``) gets the same answer from
    a registered consumer's key and from a stranger's."""
    import msgspec

    from schemas.accesslog import EXTRACT_TYP
    from schemas.jose import sign

    stranger = generate_key("EdDSA")
    registered = sign(msgspec.json.encode(fed.claims()), fed.keys[CARE_GIVER], typ=EXTRACT_TYP)
    unknown = sign(msgspec.json.encode(msgspec.structs.replace(
        fed.claims(), iss="SE0000000000-NOBODY")), stranger, typ=EXTRACT_TYP)
    first = await refused(fed, registered, 401, "bad-token")
    assert await refused(fed, unknown, 401, "bad-token") == first


async def test_malformed_identity_number(fed: Federation) -> None:
    import msgspec

    claims = msgspec.structs.replace(fed.claims(), sub="19380303-9143")  # bad check digit
    body = await refused(fed, fed.claims_token(claims), 400, "invalid-person-id")
    assert "check digit" in body["detail"]


async def test_not_a_jwt(fed: Federation) -> None:
    await refused(fed, b"hello", 400, "malformed-token")


async def test_claims_of_the_wrong_shape(fed: Federation) -> None:
    import msgspec

    from schemas.jose import sign

    payload = msgspec.json.encode({"iss": CARE_GIVER, "aud": BROKER_ID, "types": "medication"})
    token = sign(payload, fed.keys[CARE_GIVER], typ="samsvar-query+jwt")
    await refused(fed, token, 400, "malformed-claims")


async def test_wrong_content_type(fed: Federation) -> None:
    await refused(fed, fed.token(), 415, "unsupported-media-type", content_type="text/plain")


async def test_body_too_large(fed: Federation) -> None:
    await refused(fed, b"x" * 70_000, 413, "too-large")


async def _chunked(fed: Federation, data: bytes) -> tuple[int, Any]:
    """POST ``data`` in 1 KB chunks with no Content-Length (Transfer-Encoding: chunked)."""
    assert fed.http is not None

    async def chunks() -> Any:
        for i in range(0, len(data), 1024):
            yield data[i:i + 1024]

    async with fed.http.post(f"{fed.url}/v1/queries", data=chunks(),
                             headers={"Content-Type": "application/jwt"}) as resp:
        assert "Content-Length" not in resp.request_info.headers
        return resp.status, await resp.json(content_type=None)


async def test_chunked_body_too_large_without_content_length(fed: Federation) -> None:
    """The limit holds when the consumer does not say the size beforehand."""
    status, body = await _chunked(fed, b"x" * 70_000)
    assert status == 413 and body["type"] == PROBLEM + "too-large", body


async def test_chunked_query_is_answered(fed: Federation) -> None:
    status, body = await _chunked(fed, fed.token().encode())
    assert status == 200, body
    assert body["sources"][0]["producer"] == "P1"


async def test_no_relation_is_refused_by_rule(fed: Federation) -> None:
    body = await refused(fed, fed.token(relation=False), 403, "relation-required")
    assert body["rule"] == "relation-required"


async def test_emergency_by_social_care_giver(fed: Federation) -> None:
    body = await refused(fed, fed.token(SOCIAL_CARE_GIVER, basis="emergency"), 403,
                         "emergency-care-giver-only")
    assert body["rule"] == "emergency-care-giver-only"


async def test_a_token_refused_with_429_is_answered_when_sent_again(fed: Federation) -> None:
    """A client that honours ``Retry-After`` sends the same token again: the 429 did not
    use up its jti. Once answered, the token is used."""
    assert fed.broker is not None
    service = fed.broker.service
    config = service.config
    service.config = dataclasses.replace(config, max_in_flight=0)  # every query is one too many
    token = fed.token()
    try:
        got, headers, _ = await fed.post(token)
        assert got == 429 and int(headers["Retry-After"]) >= 1
    finally:
        service.config = config
    status, _, body = await fed.post(token)
    assert status == 200, body
    await refused(fed, token, 401, "replayed")


async def test_a_streamed_query_refused_with_429_is_answered_when_sent_again(
        fed: Federation) -> None:
    assert fed.broker is not None
    service = fed.broker.service
    config = service.config
    service.config = dataclasses.replace(config, max_in_flight=0)
    token = fed.token()
    try:
        await refused(fed, token, 429, "overloaded", accept="application/x-ndjson")
    finally:
        service.config = config
    assert fed.http is not None
    async with fed.http.post(f"{fed.url}/v1/queries", data=token.encode(),
                             headers={"Content-Type": "application/jwt",
                                      "Accept": "application/x-ndjson"}) as resp:
        lines = [json.loads(line) for line in (await resp.read()).splitlines()]
    assert resp.status == 200
    assert lines[-1]["kind"] == "summary", lines


async def test_a_token_refused_for_its_consumer_s_load_is_answered_when_sent_again(
        fed: Federation) -> None:
    assert fed.broker is not None
    service = fed.broker.service
    config = service.config
    service.config = dataclasses.replace(config, max_in_flight_per_consumer=0)
    token = fed.token()
    try:
        await refused(fed, token, 429, "overloaded-consumer")
    finally:
        service.config = config
    status, _, body = await fed.post(token)
    assert status == 200, body


async def test_a_token_is_still_used_after_the_broker_is_killed_and_restarted(
        federation_factory: Any) -> None:
    """SQLite: the jtis seen live beside the access log, and survive SIGKILL."""
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    await fed.start_adapter("P1")
    port = free_port()
    fed.url = f"http://127.0.0.1:{port}"
    config = write_broker_config(fed, port)
    log = fed.tmp / "broker.log"
    token = fed.token()
    proc = start_broker(config, log)
    try:
        await wait_ready(fed.url, proc, log)
        status, _, body = await fed.post(token)
        assert status == 200, body
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    restarted = start_broker(config, log)
    try:
        await wait_ready(fed.url, restarted, log)
        await refused(fed, token, 401, "replayed")
        status, _, body = await fed.post(fed.token())  # a new token is answered
        assert status == 200, body
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(20) == 0, log.read_text()
