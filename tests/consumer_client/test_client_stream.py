"""``Client.stream``: lines as they come, in any chunking; errors as the client's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import web

from consumer_client import (
    BadResponse,
    Client,
    QueryRefused,
    TransportError,
    assemble_answer,
)
from consumer_client.streaming import split_lines
from schemas.jose import PrivateKey
from schemas.messages import (
    Answer,
    ErrorLine,
    Problem,
    SourceLine,
    StreamLine,
    SummaryLine,
    User,
)
from tests.consumer_client.conftest import AUDIENCE, ISSUER, SUBJECT, StubBroker

NDJSON = "application/x-ndjson"


def lines_for(answer: Answer) -> list[StreamLine]:
    """The stream a broker sends for ``answer``: sources in an order of their own."""
    lines: list[StreamLine] = []
    for n, source in enumerate(reversed(answer.sources), 1):
        records = [r for r in answer.records if r.source.producer == source.producer]
        lines.append(SourceLine(source=source, records=records, done=n,
                                total=len(answer.sources)))
    lines.append(SummaryLine(query_id=answer.query_id, subject=answer.subject,
                             complete=answer.complete,
                             blocked_information_exists=answer.blocked_information_exists,
                             sources=answer.sources, blocked_at=answer.blocked_at))
    return lines


def streaming(lines: list[StreamLine], *, chunk: int = 7, pause: float = 0.0,
              seen: list[str] | None = None) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append(request.headers["Accept"])
        response = web.StreamResponse(headers={"Cache-Control": "no-store"})
        response.content_type = NDJSON
        await response.prepare(request)
        data = b"".join(msgspec.json.encode(line) + b"\n" for line in lines)
        for i in range(0, len(data), chunk):
            await response.write(data[i:i + chunk])
            if pause:
                await asyncio.sleep(pause)
        await response.write_eof()
        return response
    return handler


async def collect(url: str, key: PrivateKey, user: User) -> list[SourceLine | SummaryLine]:
    async with Client(broker_url=url, issuer=ISSUER, key=key, audience=AUDIENCE,
                      user=user) as client:
        return [line async for line in client.stream(subject=SUBJECT, types=["medication"],
                                                     basis="consent")]


async def test_lines_in_small_chunks_assemble_into_the_answer(
    stub_broker: StubBroker, key: PrivateKey, user: User, sample_answer: Answer,
) -> None:
    seen: list[str] = []
    url = await stub_broker(streaming(lines_for(sample_answer), chunk=5, seen=seen))
    got = await collect(url, key, user)
    assert seen == [f"{NDJSON}, application/problem+json"]
    assert [type(line) for line in got] == [SourceLine] * 3 + [SummaryLine]
    assert msgspec.json.encode(assemble_answer(got)) == msgspec.json.encode(sample_answer)


async def test_lines_are_yielded_before_the_stream_ends(
    stub_broker: StubBroker, key: PrivateKey, user: User, sample_answer: Answer,
) -> None:
    release = asyncio.Event()
    first, *rest = lines_for(sample_answer)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = NDJSON
        await response.prepare(request)
        await response.write(msgspec.json.encode(first) + b"\n")
        await release.wait()
        for line in rest:
            await response.write(msgspec.json.encode(line) + b"\n")
        return response

    url = await stub_broker(handler)
    async with Client(broker_url=url, issuer=ISSUER, key=key, audience=AUDIENCE,
                      user=user) as client:
        stream = client.stream(subject=SUBJECT, types=["medication"], basis="consent")
        assert await asyncio.wait_for(anext(stream), 5) == first
        release.set()
        assert len([line async for line in stream]) == len(rest)


async def test_an_error_line_is_a_refusal(
    stub_broker: StubBroker, key: PrivateKey, user: User, sample_answer: Answer,
) -> None:
    problem = Problem(type="urn:samsvar:problem:access-log-unavailable", title="Broker not ready",
                      status=503, detail="the access log cannot be written")
    lines = [*lines_for(sample_answer)[:1], ErrorLine(problem=problem)]
    url = await stub_broker(streaming(lines))
    got: list[Any] = []
    with pytest.raises(QueryRefused) as refused:
        async with Client(broker_url=url, issuer=ISSUER, key=key, audience=AUDIENCE,
                          user=user) as client:
            async for line in client.stream(subject=SUBJECT, types=["medication"],
                                            basis="consent"):
                got.append(line)
    assert len(got) == 1
    assert refused.value.problem == problem


async def test_a_stream_that_ends_before_its_summary_is_a_transport_error(
    stub_broker: StubBroker, key: PrivateKey, user: User, sample_answer: Answer,
) -> None:
    url = await stub_broker(streaming(lines_for(sample_answer)[:2]))
    with pytest.raises(TransportError, match="before its summary"):
        await collect(url, key, user)


async def test_a_problem_before_the_stream_is_a_refusal(
    stub_broker: StubBroker, key: PrivateKey, user: User,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = b'{"type":"urn:samsvar:problem:overloaded","title":"Busy","status":429}'
        return web.Response(status=429, body=body, content_type="application/problem+json",
                            headers={"Retry-After": "2"})

    url = await stub_broker(handler)
    with pytest.raises(QueryRefused) as refused:
        await collect(url, key, user)
    assert refused.value.status == 429 and refused.value.retry_after == 2


@pytest.mark.parametrize("body", [b'{"kind":"source","nonsense":1}\n', b"not json\n"])
async def test_a_line_off_the_schema_is_a_bad_response(
    stub_broker: StubBroker, key: PrivateKey, user: User, body: bytes,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=NDJSON)

    url = await stub_broker(handler)
    with pytest.raises(BadResponse):
        await collect(url, key, user)


async def test_a_json_answer_where_a_stream_was_asked_is_a_bad_response(
    stub_broker: StubBroker, key: PrivateKey, user: User, sample_answer: Answer,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(sample_answer),
                            content_type="application/json")

    url = await stub_broker(handler)
    with pytest.raises(BadResponse):
        await collect(url, key, user)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_split_lines_handles_any_cut_and_refuses_endless_lines() -> None:
    got = [line async for line in split_lines(chunks(b'{"a"', b':1}\n\n{"b":2}', b"\r\n",
                                                     b'{"c":3}'))]
    assert got == [b'{"a":1}', b'{"b":2}\r', b'{"c":3}']
    with pytest.raises(BadResponse):
        _ = [line async for line in split_lines(chunks(b"x" * 10, b"y" * 10), max_line=15)]


def test_assemble_refuses_a_summary_without_its_records(sample_answer: Answer) -> None:
    lines = lines_for(sample_answer)
    usable = [line for line in lines if isinstance(line, SourceLine | SummaryLine)]
    with pytest.raises(ValueError, match="records"):
        assemble_answer([line for line in usable if not (
            isinstance(line, SourceLine) and line.source.records)])
    with pytest.raises(ValueError, match="summary"):
        assemble_answer(usable[:-1])
