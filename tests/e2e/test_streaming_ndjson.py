"""``Accept: application/x-ndjson``: one line per source as it answers, then a summary,
and never a line before the access-log entry that covers it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from broker.accesslog import AccessLogError
from consumer_client import Client, QueryRefused, assemble_answer
from producer_adapter import Adapter
from producer_adapter.backends import BackendResult, JsonDirBackend
from producer_adapter.blocks import InMemoryBlockSource
from producer_adapter.policy import Block
from schemas.accesslog import AccessEntry, StoredEntry
from schemas.messages import Period, SourceLine, SummaryLine, Unblock
from tests.e2e.conftest import (
    BROKER_ID,
    CARE_GIVER,
    PERSON,
    USER,
    Federation,
    ProducerSpec,
    record,
)
from tests.e2e.test_access_log_api import extract, extract_token

NDJSON = "application/x-ndjson"
OTHER_PERSON = "195001182046"  # Skatteverket test personnummer


class GatedBackend:
    """A real JSON backend that answers only once the test opens the gate."""

    def __init__(self, inner: JsonDirBackend, gate: asyncio.Event) -> None:
        self.inner = inner
        self.gate = gate

    async def fetch(self, subject: str, types: frozenset[str],
                    period: Period | None) -> BackendResult:
        await self.gate.wait()
        return await self.inner.fetch(subject, types, period)

    async def aclose(self) -> None:
        await self.inner.aclose()


def producers() -> list[ProducerSpec]:
    return [
        ProducerSpec("P-FAST", records={PERSON: [
            record("P-FAST", 1, when="2026-11-01T10:00:00+01:00", text="Waran"),
            record("P-FAST", 2, when="2026-10-01T10:00:00+02:00", text="Furosemid"),
            record("P-FAST", 3, when="2026-10-02T10:00:00+02:00", scope="sol_other",
                   text="Aldrig-Utlamnad")]}),
        ProducerSpec("P-EMPTY"),
        ProducerSpec("P-SLOW", records={PERSON: [
            record("P-SLOW", 1, when="2026-11-20T08:00:00+01:00", text="Alvedon")]}),
    ]


async def start(fed: Federation, *, gate: asyncio.Event | None = None,
                blocks: dict[str, Sequence[Block]] | None = None) -> None:
    await fed.start_broker()
    for pid in fed.producers:
        backend = None
        if pid == "P-SLOW" and gate is not None:
            backend = GatedBackend(JsonDirBackend.load(fed.tmp / "data" / pid, pid), gate)
        adapter = Adapter(fed.adapter_config(pid), fed.registry, backend=backend,
                          blocks=InMemoryBlockSource((blocks or {}).get(pid, ())))
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(shutdown=stop))
        fed.adapters.setdefault(pid, []).append((adapter, stop, task))
        await asyncio.wait_for(adapter.ready.wait(), 10)
        await fed.wait_presence(pid)


async def logged(fed: Federation) -> list[AccessEntry]:
    """Every entry about the person as the log holds them (no collapsing)."""
    assert fed.broker is not None and fed.broker.service.access_log is not None
    return await fed.broker.service.access_log.extract(PERSON, None)


async def read_stream(fed: Federation, token: str) -> tuple[dict[str, str], list[Any]]:
    assert fed.http is not None
    async with fed.http.post(f"{fed.url}/v1/queries", data=token.encode(),
                             headers={"Content-Type": "application/jwt",
                                      "Accept": NDJSON}) as resp:
        assert resp.status == 200
        body = await resp.read()
        return dict(resp.headers), [json.loads(line) for line in body.splitlines()]


async def test_lines_come_as_sources_answer_each_covered_by_a_durable_entry(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory(producers())
    gate = asyncio.Event()
    await start(fed, gate=gate)
    assert fed.http is not None
    async with fed.http.post(f"{fed.url}/v1/queries", data=fed.token(deadline_ms=15000).encode(),
                             headers={"Content-Type": "application/jwt",
                                      "Accept": NDJSON}) as resp:
        assert resp.status == 200
        assert resp.content_type == NDJSON
        assert resp.headers["Cache-Control"] == "no-store"
        early = [json.loads(await resp.content.readline()) for _ in range(2)]
        # Two sources are out while P-SLOW has not even read its records: the "opened"
        # entry, durable, covers them; the "answered" entry does not exist yet.
        entries = await logged(fed)
        assert [e.outcome for e in entries] == ["opened"]
        opened = entries[0]
        assert {(s.producer, s.status) for s in opened.sources} == {
            ("P-FAST", "pending"), ("P-EMPTY", "pending"), ("P-SLOW", "pending")}
        assert (opened.consumer and opened.consumer.id) == CARE_GIVER
        assert opened.user is not None and opened.user.id == USER.id
        gate.set()
        rest = [json.loads(line) for line in (await resp.read()).splitlines()]
    lines = early + rest
    assert [line["kind"] for line in lines] == ["source"] * 3 + ["summary"]
    assert {line["source"]["producer"] for line in early} == {"P-FAST", "P-EMPTY"}
    assert lines[2]["source"]["producer"] == "P-SLOW"
    assert [(line["done"], line["total"]) for line in lines[:3]] == [(1, 3), (2, 3), (3, 3)]
    by_producer = {line["source"]["producer"]: line for line in lines[:3]}
    assert [r["drug"] for r in by_producer["P-FAST"]["records"]] == ["Waran", "Furosemid"]
    assert "Aldrig-Utlamnad" not in json.dumps(lines)
    assert by_producer["P-EMPTY"]["source"]["status"] == "no_data"
    assert by_producer["P-EMPTY"]["records"] == []
    summary = lines[-1]
    assert summary["complete"] is True and summary["blocked_information_exists"] is False
    assert "blocked_at" not in summary and "records" not in summary
    assert [s["producer"] for s in summary["sources"]] == ["P-FAST", "P-EMPTY", "P-SLOW"]
    in_summary = {s["producer"]: s for s in summary["sources"]}
    assert all(line["source"] == in_summary[line["source"]["producer"]] for line in lines[:3])
    entries = await logged(fed)
    assert [e.outcome for e in entries] == ["opened", "answered"]
    assert entries[1].query_id == entries[0].query_id == summary["query_id"]
    assert {s.producer: s.disclosed for s in entries[1].sources} == {
        "P-FAST": {"medication": 2}, "P-EMPTY": {}, "P-SLOW": {"medication": 1}}
    # The person's extract shows the streamed answer once, with its counts.
    status, body = await extract(fed, extract_token(fed))
    assert status == 200, body
    assert [(a["query_id"], a["outcome"]) for a in body["accesses"]] == [
        (summary["query_id"], "answered")]


async def test_the_stream_assembles_into_the_json_answer(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(producers())
    await start(fed)
    async with Client(broker_url=fed.url, issuer=CARE_GIVER, key=fed.keys[CARE_GIVER],
                      audience=BROKER_ID, user=USER) as client:
        lines = [line async for line in client.stream(subject=PERSON, types=["medication"],
                                                      basis="consent")]
        plain = await client.query(subject=PERSON, types=["medication"], basis="consent")
    assert isinstance(lines[-1], SummaryLine)
    assert all(isinstance(line, SourceLine) for line in lines[:-1])
    streamed = assemble_answer(lines)

    def comparable(answer: Any) -> Any:
        raw = json.loads(msgspec.json.encode(answer))
        raw["query_id"] = "q"
        for source in raw["sources"]:
            source["latency_ms"] = 0
        return raw

    assert comparable(streamed) == comparable(plain)
    assert [r.source.producer for r in streamed.records] == ["P-SLOW", "P-FAST", "P-FAST"]


def person_block(level: str, target: str) -> Block:
    return Block(subject=PERSON, level=level, target=target,  # type: ignore[arg-type]
                 registered_by=PERSON)


async def test_a_source_holding_only_blocked_records_streams_as_no_data(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory([
        ProducerSpec("P-A", records={PERSON: [
            record("P-A", 1, when="2026-11-01T10:00:00+01:00", unit="U-PSYK",
                   text="Sparrad-Litium")]}),
        ProducerSpec("P-B", records={OTHER_PERSON: [
            record("P-B", 1, when="2026-11-01T10:00:00+01:00", text="Annan-Person")]}),
    ])
    await start(fed, blocks={"P-A": [person_block("unit", "U-PSYK")]})
    _, lines = await read_stream(fed, fed.token())
    sources = {line["source"]["producer"]: line for line in lines if line["kind"] == "source"}
    a, b = sources["P-A"], sources["P-B"]
    assert set(a) == set(b) and set(a["source"]) == set(b["source"])
    ignore = {"producer", "organisation", "latency_ms"}
    assert {k: v for k, v in a["source"].items() if k not in ignore} == \
        {k: v for k, v in b["source"].items() if k not in ignore}
    assert a["records"] == b["records"] == []
    assert "blocked" not in json.dumps([a, b]) and "Sparrad" not in json.dumps(lines)
    summary = lines[-1]
    assert summary["kind"] == "summary"
    assert summary["blocked_information_exists"] is True and "blocked_at" not in summary

    # Unblock, step "read" for P-A: its blocked record comes in its line, marked.
    _, lines = await read_stream(fed, fed.token(unblock=Unblock(step="read",
                                                                  producers=["P-A"])))
    released = next(line for line in lines if line["kind"] == "source"
                    and line["source"]["producer"] == "P-A")
    assert [(r["drug"], r["blocked"]) for r in released["records"]] == [("Sparrad-Litium", True)]
    assert lines[-1]["blocked_at"] == ["P-A"]


async def test_refusals_before_the_stream_are_problems(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(producers())
    await start(fed)
    status, headers, body = await fed.post(fed.token(relation=False), accept=NDJSON)
    assert status == 403 and headers["Content-Type"].startswith("application/problem+json")
    assert body["type"] == "urn:samsvar:problem:relation-required"
    token = fed.token()
    status, headers, body = await fed.post(token[:-4] + "AAAA", accept=NDJSON)
    assert status == 401 and headers["Content-Type"].startswith("application/problem+json")


async def test_no_line_and_no_question_when_the_opened_entry_cannot_be_written(
    federation_factory: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed: Federation = await federation_factory(producers())
    await start(fed)
    assert fed.broker is not None
    access_log = fed.broker.service.access_log

    async def failing(entry: AccessEntry) -> StoredEntry:
        raise AccessLogError("disk full")

    monkeypatch.setattr(access_log, "append", failing)
    with capture_logs() as logs:
        status, headers, body = await fed.post(fed.token(), accept=NDJSON)
    assert status == 503 and headers["Content-Type"].startswith("application/problem+json")
    assert body["type"] == "urn:samsvar:problem:access-log-unavailable"
    assert not [e for e in logs if e["event"] == "query_fanout"]  # nobody was asked


async def test_when_the_answered_entry_fails_the_stream_ends_with_an_error_line(
    federation_factory: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed: Federation = await federation_factory(producers())
    await start(fed)
    assert fed.broker is not None
    access_log = fed.broker.service.access_log
    assert access_log is not None
    real = access_log.append

    async def fails_to_complete(entry: AccessEntry) -> StoredEntry:
        if entry.outcome == "answered" and entry.action == "query":  # extract calls log too
            raise AccessLogError("disk full")
        return await real(entry)

    monkeypatch.setattr(access_log, "append", fails_to_complete)
    with capture_logs() as logs:
        _, lines = await read_stream(fed, fed.token())
    assert [line["kind"] for line in lines] == ["source"] * 3 + ["error"]
    problem = lines[-1]["problem"]
    assert problem["status"] == 503
    assert problem["type"] == "urn:samsvar:problem:access-log-unavailable"
    assert [e for e in logs if e["event"] == "stream_log_failed"]
    # The "opened" entry stands alone, and the person's extract shows it.
    entries = await logged(fed)
    assert [e.outcome for e in entries] == ["opened"]
    status, body = await extract(fed, extract_token(fed))
    assert status == 200, body
    assert [a["outcome"] for a in body["accesses"]] == ["opened"]
    # The client reports the error line as a refusal, after the lines it got.
    async with Client(broker_url=fed.url, issuer=CARE_GIVER, key=fed.keys[CARE_GIVER],
                      audience=BROKER_ID, user=USER) as client:
        got = []
        with pytest.raises(QueryRefused) as refused:
            async for line in client.stream(subject=PERSON, types=["medication"],
                                            basis="consent"):
                got.append(line)
    assert refused.value.status == 503 and len(got) == 3


async def test_samsvar_query_json_prints_the_apis_answer(
    federation_factory: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    """``samsvar query --json`` reads the stream and prints what the JSON API returns."""
    from samsvar.cli import build_parser
    from samsvar.common import write_private_jwk
    from samsvar.query import run_query

    fed: Federation = await federation_factory(producers())
    await start(fed)
    key_file = fed.tmp / "consumer.jwk"
    write_private_jwk(key_file, fed.keys[CARE_GIVER].to_jwk())
    args = build_parser().parse_args([
        "query", "--broker", fed.url, "--aud", BROKER_ID, "--key", str(key_file),
        "--as", CARE_GIVER, "--subject", PERSON, "--types", "medication", "--json"])
    assert await run_query(args) == 0
    # the broker's own log lines share stdout in-process; the answer is one JSON line
    out = capsys.readouterr().out.splitlines()
    [printed] = [json.loads(line) for line in out if line.startswith('{"query_id"')]
    _, _, api = await fed.post(fed.token())
    for answer in (printed, api):
        answer["query_id"] = "q"
        for source in answer["sources"]:
            source["latency_ms"] = 0
    assert printed == api
