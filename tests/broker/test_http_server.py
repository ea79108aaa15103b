"""The broker's HTTP server over real sockets: aiohttp's own errors are problem+json, and
slow or idle connections are closed while everyone else is answered (SPEC section 3)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from broker.http_server import ProblemAppRunner, add_fallback_route
from tests.e2e.conftest import Federation, ProducerSpec

IDLE_S = 1.0
"""The broker's http_idle_timeout_s and http_body_timeout_s in these tests."""
PATIENCE_S = 30.0
"""How long a test waits for the server to close a connection (a liveness bound, far
above IDLE_S: without the timeouts the server never closes them)."""


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([ProducerSpec("P1")])
    await fed.start_adapter("P1")
    await fed.start_broker(http_idle_timeout_s=IDLE_S, http_body_timeout_s=IDLE_S)
    await fed.wait_presence("P1")
    return fed


def _port(fed: Federation) -> int:
    assert fed.broker is not None
    return fed.broker.port


async def raw_exchange(fed: Federation, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a fresh connection; read one response until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(fed))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(PATIENCE_S):
            raw = await reader.read()  # every error response closes the connection
    finally:
        writer.close()
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_problem(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/problem+json"), (headers, body)
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == status
    assert problem["type"].startswith("urn:samsvar:problem:")
    assert problem["title"] and problem["detail"]
    return problem


# -- every error is problem+json ----------------------------------------------------------


async def test_unknown_path_is_a_404_problem(fed: Federation) -> None:
    assert fed.http is not None
    for method in ("GET", "POST", "PUT"):
        async with fed.http.request(method, f"{fed.url}/no/such/endpoint") as resp:
            assert resp.status == 404
            problem = assert_problem(404, {"content-type": resp.headers["Content-Type"]},
                                     await resp.read())
        assert problem["type"].endswith(":not-found")


async def test_wrong_method_is_a_405_problem_with_allow(fed: Federation) -> None:
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/v1/queries") as resp:
        body = await resp.read()
        assert resp.status == 405
        problem = assert_problem(405, {"content-type": resp.headers["Content-Type"]}, body)
        assert resp.headers["Allow"] == "POST"
    assert "POST" in problem["detail"]
    async with fed.http.delete(f"{fed.url}/readyz") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert_problem(405, {"content-type": resp.headers["Content-Type"]}, await resp.read())


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"GARBAGE\r\n\r\n", id="bad-request-line"),
    pytest.param(b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 20000 + b"\r\n",
                 id="header-flood"),
    pytest.param(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
                 id="header-too-long"),
    pytest.param(b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="cl-and-te"),
    pytest.param(b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Content-Length: 40\r\n\r\nabcd", id="two-content-lengths"),
    pytest.param(b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\nabc\r\n0\r\n\r\n", id="bad-chunk-size"),
    pytest.param(b"GET /readyz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
                 id="space-in-header-name"),
])
async def test_what_the_parser_refuses_is_a_problem(fed: Federation,
                                                    request_bytes: bytes) -> None:
    status, headers, body = await raw_exchange(fed, request_bytes)
    assert 400 <= status < 500
    assert_problem(status, headers, body)
    # and the server goes on answering
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/healthz") as resp:
        assert resp.status == 200


# -- slow and idle connections --------------------------------------------------------------


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before it closed the connection."""
    async with asyncio.timeout(PATIENCE_S):
        return await reader.read()


async def test_slowloris_connections_are_closed_and_others_answered(fed: Federation) -> None:
    """Each connection sends one byte of a header value now and then, within every limit
    of size and count, but never ends the line."""
    conns = [await asyncio.open_connection("127.0.0.1", _port(fed)) for _ in range(100)]
    for _, writer in conns:
        writer.write(b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    async def trickle() -> None:
        for _ in range(10 * int(PATIENCE_S)):
            for _, writer in conns:
                if not writer.is_closing():
                    writer.write(b"a")
            await asyncio.sleep(0.1)

    trickler = asyncio.create_task(trickle())
    try:
        # meanwhile a real query is answered
        status, _, body = await fed.post(fed.token())
        assert status == 200, body
        await asyncio.gather(*(_closed_by_server(reader) for reader, _ in conns))
    finally:
        trickler.cancel()
        for _, writer in conns:
            writer.close()


async def test_connections_that_send_nothing_are_closed(fed: Federation) -> None:
    conns = [await asyncio.open_connection("127.0.0.1", _port(fed)) for _ in range(200)]
    try:
        assert fed.http is not None
        async with fed.http.get(f"{fed.url}/readyz") as resp:
            assert resp.status == 200
        sent = await asyncio.gather(*(_closed_by_server(reader) for reader, _ in conns))
        assert set(sent) == {b""}
    finally:
        for _, writer in conns:
            writer.close()


async def test_an_idle_keep_alive_connection_is_closed(fed: Federation) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(fed))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(PATIENCE_S):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        # kept alive, then idle: the server closes it
        assert await _closed_by_server(reader) == b""
    finally:
        writer.close()


async def test_a_body_that_does_not_arrive_is_a_408_problem(fed: Federation) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(fed))
    try:
        writer.write(b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nContent-Type: application/jwt\r\n"
                     b"Content-Length: 1000\r\n\r\neyJhbGciOi")
        await writer.drain()
        raw = await _closed_by_server(reader)
    finally:
        writer.close()
    status, headers, body = parse_response(raw)
    assert status == 408
    problem = assert_problem(408, headers, body)
    assert problem["type"].endswith(":body-timeout")


async def test_an_unhandled_exception_is_a_500_problem() -> None:
    """The runner the broker serves with answers a handler's crash as a problem too."""
    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_get("/crash", crash)
    add_fallback_route(app)
    runner = ProblemAppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(PATIENCE_S):
                raw = await reader.read()
        finally:
            writer.close()
        status, headers, body = parse_response(raw)
        assert status == 500
        problem = assert_problem(500, headers, body)
        assert problem["type"].endswith(":internal-error")
        assert "a bug" not in body.decode()  # nothing of the failure leaks
    finally:
        await runner.cleanup()
