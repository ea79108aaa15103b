"""Client.query against a small aiohttp server: answers, problems, and broken transports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from aiohttp import web

from consumer_client import (
    BadResponse,
    Client,
    ClientError,
    QueryRefused,
    QueryTimeout,
    TransportError,
)
from schemas.jose import Header, PrivateKey, PublicKey, verify
from schemas.messages import QUERY_TYP, Answer, Problem, QueryClaims, User

ISSUER = "SE2321000016-0001"
AUDIENCE = "SE0000000000-BRK1"

StubBroker = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]


def client(url: str, key: PrivateKey, user: User, timeout: float = 5.0) -> Client:
    return Client(broker_url=url, issuer=ISSUER, key=key, audience=AUDIENCE, user=user,
                  timeout=timeout)


def problem_response(status: int, body: dict[str, object],
                     headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body),
                        content_type="application/problem+json", headers=headers)


async def ask(c: Client, **kw: object) -> Answer:
    args: dict[str, object] = {"subject": "19380303-9142", "types": ["medication"],
                               "basis": "consent"}
    args.update(kw)
    return await c.query(**args)  # type: ignore[arg-type]


async def test_answer_is_decoded_and_request_is_well_formed(
    stub_broker: StubBroker, key: PrivateKey, user: User, sample_answer: Answer
) -> None:
    seen: list[QueryClaims] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.content_type == "application/jwt"
        assert "application/json" in request.headers["Accept"]
        token = await request.text()

        def key_for(header: Header) -> PublicKey:
            assert header.kid == key.kid
            return key.public

        _, payload = verify(token, key_for, typ=QUERY_TYP)
        claims = msgspec.json.decode(payload, type=QueryClaims)
        seen.append(claims)
        return web.Response(body=msgspec.json.encode(sample_answer),
                            content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    url = await stub_broker(handler)
    async with client(url + "/", key, user) as c:
        answer = await ask(c, subject="380303-9142", types=["medication", "diagnoses"],
                           deadline_ms=2000)
    assert answer == sample_answer
    (claims,) = seen
    assert claims.iss == ISSUER and claims.aud == AUDIENCE and claims.sub == "193803039142"
    assert claims.types == ["medication", "diagnoses"] and claims.deadline_ms == 2000


async def test_each_query_has_its_own_jti(
    stub_broker: StubBroker, key: PrivateKey, user: User, sample_answer: Answer
) -> None:
    jtis: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        _, payload = verify(await request.text(), lambda h: key.public, typ=QUERY_TYP)
        jtis.append(msgspec.json.decode(payload, type=QueryClaims).jti)
        return web.json_response(text=msgspec.json.encode(sample_answer).decode())

    url = await stub_broker(handler)
    async with client(url, key, user) as c:
        await ask(c)
        await ask(c)
    assert len(set(jtis)) == 2


async def test_policy_refusal_raises_query_refused(
    stub_broker: StubBroker, key: PrivateKey, user: User
) -> None:
    body = {"type": "https://samsvar.se/problems/emergency-not-for-social-care",
            "title": "Forbidden by the law", "status": 403,
            "detail": "an omsorgsgivare cannot use basis emergency",
            "rule": "emergency_care_giver_only"}

    async def handler(request: web.Request) -> web.Response:
        return problem_response(403, body)

    url = await stub_broker(handler)
    async with client(url, key, user) as c:
        with pytest.raises(QueryRefused) as info:
            await ask(c, basis="emergency")
    err = info.value
    assert isinstance(err, ClientError)
    assert err.problem == msgspec.convert(body, Problem)
    assert err.status == 403 and err.rule == "emergency_care_giver_only"
    assert err.type == body["type"] and err.title == "Forbidden by the law"
    assert err.detail == body["detail"]
    text = str(err)
    assert "\n" not in text
    assert text.startswith("403 Forbidden by the law: an omsorgsgivare cannot use")
    assert "rule=emergency_care_giver_only" in text and body["type"] in text


async def test_overload_carries_retry_after(
    stub_broker: StubBroker, key: PrivateKey, user: User
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return problem_response(
            429, {"type": "https://samsvar.se/problems/overloaded", "title": "Too busy",
                  "status": 429, "detail": "try again\nlater"},
            headers={"Retry-After": "3"},
        )

    url = await stub_broker(handler)
    async with client(url, key, user) as c:
        with pytest.raises(QueryRefused) as info:
            await ask(c)
    assert info.value.status == 429 and info.value.retry_after == 3.0
    assert info.value.rule is None
    assert str(info.value) == (
        "429 Too busy: try again later "
        "(type=https://samsvar.se/problems/overloaded, retry after 3 s)"
    )


async def test_sparse_problem_is_still_a_refusal(
    stub_broker: StubBroker, key: PrivateKey, user: User
) -> None:
    """RFC 9457 makes every member optional: fill in from the HTTP status line."""
    async def handler(request: web.Request) -> web.Response:
        return problem_response(401, {"detail": "kid is not registered"})

    url = await stub_broker(handler)
    async with client(url, key, user) as c:
        with pytest.raises(QueryRefused) as info:
            await ask(c)
    p = info.value.problem
    assert (p.status, p.type, p.title, p.detail) == (
        401, "about:blank", "Unauthorized", "kid is not registered")


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, b"<html>Bad Gateway</html>", "text/html"),
        (200, b"not json", "application/json"),
        (200, b'{"query_id": "q"}', "application/json"),
        (200, b"{}", "text/plain"),
        (404, b"404: Not Found", "text/plain"),
    ],
)
async def test_unexpected_responses_raise_bad_response(
    stub_broker: StubBroker, key: PrivateKey, user: User,
    status: int, body: bytes, content_type: str,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type=content_type)

    url = await stub_broker(handler)
    async with client(url, key, user) as c:
        with pytest.raises(BadResponse) as info:
            await ask(c)
    assert info.value.status == status
    assert isinstance(info.value, ClientError)


async def test_connection_refused_is_transport_error(key: PrivateKey, user: User) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with client(f"http://127.0.0.1:{port}", key, user) as c:
        with pytest.raises(TransportError) as info:
            await ask(c)
    assert isinstance(info.value, ConnectionError)
    assert not isinstance(info.value, QueryTimeout)
    assert info.value.__cause__ is not None


async def test_slow_broker_is_query_timeout(
    stub_broker: StubBroker, key: PrivateKey, user: User
) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=204)

    url = await stub_broker(handler)
    try:
        async with client(url, key, user, timeout=0.2) as c:
            with pytest.raises(QueryTimeout) as info:
                await ask(c)
    finally:
        release.set()
    assert isinstance(info.value, TransportError)
    assert isinstance(info.value, TimeoutError)


async def test_query_outside_async_with_is_a_usage_error(key: PrivateKey, user: User) -> None:
    c = client("http://127.0.0.1:1", key, user)
    with pytest.raises(RuntimeError, match="async with"):
        await ask(c)


async def test_bad_arguments_never_reach_the_network(key: PrivateKey, user: User) -> None:
    async with client("http://127.0.0.1:1", key, user) as c:
        with pytest.raises(ValueError):
            await ask(c, subject="19380303-9143")
        with pytest.raises(ValueError):
            await ask(c, types=[])
