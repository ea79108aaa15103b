"""Answering one question, without MQTT: verification, the rules, failing closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from producer_adapter import (
    Adapter,
    AdapterConfig,
    BackendError,
    BackendResult,
    Block,
    BlockSourceError,
    InMemoryBlockSource,
    JsonDirBackend,
    SignedReply,
    daemon,
)
from schemas.jose import sign, verify
from schemas.messages import QUESTION_TYP, REPLY_TYP, Period, Question, Reply, Unblock
from schemas.registry import Registry
from transport.settings import MqttSettings

READ_HERE = Unblock(step="read", producers=["SE2321000999-P001"])


class FailingBackend:
    def __init__(self, exc: BaseException | None = None, delay: float = 0.0) -> None:
        self.exc = exc
        self.delay = delay
        self.calls = 0

    async def fetch(self, subject: str, types: frozenset[str], period: Period | None
                    ) -> BackendResult:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.exc is not None:
            raise self.exc
        return BackendResult(records=[])

    async def aclose(self) -> None:
        return None


class FailingBlocks:
    async def blocks_for(self, subject: str) -> list[Block]:
        raise BlockSourceError("register down")


@pytest.fixture
def make_adapter(keys: Any, kit: Any, registry: Registry, data_dir: Path) -> Any:
    def make(*, backend: Any = None, blocks: Any = None, **overrides: Any) -> Adapter:
        cfg = AdapterConfig(**{**kit.adapter_config_kwargs(keys, MqttSettings()), **overrides})
        return Adapter(cfg, registry,
                       backend=backend or JsonDirBackend.load(data_dir, kit.PRODUCER),
                       blocks=blocks or InMemoryBlockSource())
    return make


def open_reply(out: SignedReply | None, registry: Registry, kit: Any) -> Reply:
    assert out is not None
    _, payload = verify(out.token, lambda h: registry.producer_key(kit.PRODUCER, h), typ=REPLY_TYP)
    reply = msgspec.json.decode(payload, type=Reply)
    assert reply == out.reply
    return reply


async def test_records_come_back_signed_and_filtered(make_adapter: Any, keys: Any, kit: Any,
                                                     registry: Registry) -> None:
    q = kit.make_question()
    out = await make_adapter().answer(kit.sign_question(q, keys.broker))
    reply = open_reply(out, registry, kit)
    assert out is not None and out.topic == q.reply_topic and out.deadline == q.deadline
    assert reply.query_id == q.query_id and reply.producer == kit.PRODUCER
    assert reply.status == "ok" and reply.blocked is False
    # sol_other and the excluded unit's record never leave
    assert sorted(r.id for r in reply.records) == ["a1", "m1", "s1"]


async def test_types_are_intersected_with_the_registered_ones(make_adapter: Any, keys: Any,
                                                              kit: Any, registry: Registry) -> None:
    backend = FailingBackend()
    adapter = make_adapter(backend=backend)
    q = kit.make_question(types=["lab_results"])
    reply = open_reply(await adapter.answer(kit.sign_question(q, keys.broker)), registry, kit)
    assert reply.status == "no_data" and backend.calls == 0
    q = kit.make_question(types=["medication", "lab_results"])
    reply = open_reply(await make_adapter().answer(kit.sign_question(q, keys.broker)),
                       registry, kit)
    assert [r.id for r in reply.records] == ["m1"]


async def test_only_blocked_records_look_like_no_data(make_adapter: Any, keys: Any, kit: Any,
                                                      registry: Registry) -> None:
    blocks = InMemoryBlockSource([Block(subject=kit.PERSON_2, level="unit", target=kit.UNIT_2)])
    blocked = open_reply(await make_adapter(blocks=blocks).answer(
        kit.sign_question(kit.make_question(subject=kit.PERSON_2), keys.broker)), registry, kit)
    empty = open_reply(await make_adapter(blocks=blocks).answer(
        kit.sign_question(kit.make_question(subject=kit.CHILD), keys.broker)), registry, kit)
    assert blocked.status == "no_data" and blocked.records == [] and blocked.blocked is True
    # Apart from the query id and the blocked flag, the two replies are the same bytes.
    same = {"query_id": "q", "blocked": False}
    assert msgspec.json.encode(msgspec.structs.replace(blocked, **same)) == \
        msgspec.json.encode(msgspec.structs.replace(empty, **same))


async def test_block_withholds_some_records(make_adapter: Any, keys: Any, kit: Any,
                                            registry: Registry) -> None:
    blocks = InMemoryBlockSource([Block(subject=kit.PERSON, level="unit", target=kit.UNIT_2)])
    reply = open_reply(await make_adapter(blocks=blocks).answer(
        kit.sign_question(kit.make_question(), keys.broker)), registry, kit)
    assert reply.status == "ok" and reply.blocked is True
    assert sorted(r.id for r in reply.records) == ["a1", "m1"]


@pytest.mark.parametrize(
    "unblock, basis, kind, released",
    [
        (READ_HERE, "consent", "vårdgivare", True),
        (READ_HERE, "emergency", "vårdgivare", True),
        (READ_HERE, "emergency", "omsorgsgivare", False),  # never for a social care giver
        (READ_HERE, "lacks_capacity", "vårdgivare", False),
        (READ_HERE, "child", "vårdgivare", False),
        (Unblock(step="read", producers=["SE2321000999-P002"]), "consent", "vårdgivare", False),
        (Unblock(step="read"), "consent", "vårdgivare", False),
        (Unblock(step="locate"), "consent", "vårdgivare", False),
        (None, "consent", "vårdgivare", False),
    ],
)
async def test_unblock_read(make_adapter: Any, keys: Any, kit: Any, registry: Registry,
                            unblock: Unblock | None, basis: str, kind: str,
                            released: bool) -> None:
    blocks = InMemoryBlockSource([Block(subject=kit.PERSON_2, level="organisation",
                                        target=kit.ORG)])
    q = kit.make_question(subject=kit.PERSON_2, unblock=unblock, basis=basis)
    q = msgspec.structs.replace(q, consumer=msgspec.structs.replace(q.consumer, kind=kind))
    reply = open_reply(await make_adapter(blocks=blocks).answer(
        kit.sign_question(q, keys.broker)), registry, kit)
    if released:
        assert reply.status == "ok" and reply.blocked is False
        assert [(r.id, r.blocked) for r in reply.records] == [("n-blocked", True)]
    else:
        assert reply.status == "no_data" and reply.blocked is True and reply.records == []


async def test_unreadable_block_register_fails_closed(make_adapter: Any, keys: Any, kit: Any,
                                                      registry: Registry) -> None:
    backend = FailingBackend()
    reply = open_reply(await make_adapter(blocks=FailingBlocks(), backend=backend).answer(
        kit.sign_question(kit.make_question(), keys.broker)), registry, kit)
    assert reply.status == "error" and reply.records == [] and reply.reason
    assert backend.calls == 0


@pytest.mark.parametrize(
    "backend, reason",
    [
        (FailingBackend(BackendError("db down")), "record system error"),
        (FailingBackend(RuntimeError("bug")), "record system error"),
        (FailingBackend(TimeoutError()), "record system error"),  # the driver's own timeout
    ],
)
async def test_backend_failure_is_an_error_reply(make_adapter: Any, keys: Any, kit: Any,
                                                 registry: Registry, backend: Any,
                                                 reason: str) -> None:
    q = kit.make_question(deadline_in=0.5)
    started = time.monotonic()
    reply = open_reply(await make_adapter(backend=backend).answer(
        kit.sign_question(q, keys.broker)), registry, kit)
    assert time.monotonic() - started < 0.5
    assert reply.status == "error" and reply.reason == reason and reply.records == []


@pytest.mark.parametrize("slow", ["backend", "blocks"])
async def test_no_reply_when_the_deadline_passes(make_adapter: Any, keys: Any, kit: Any,
                                                 slow: str) -> None:
    class SlowBlocks:
        async def blocks_for(self, subject: str) -> list[Block]:
            await asyncio.sleep(5)
            return []

    adapter = (make_adapter(backend=FailingBackend(delay=5)) if slow == "backend"
               else make_adapter(blocks=SlowBlocks()))
    started = time.monotonic()
    with capture_logs() as logs:
        out = await adapter.answer(kit.sign_question(kit.make_question(deadline_in=0.3),
                                                     keys.broker))
    assert out is None  # the broker reports the source as timed out
    assert 0.2 < time.monotonic() - started < 0.6
    assert adapter.handled == 0
    assert [e["status"] for e in logs] == ["timeout"]


def tamper(token: str) -> str:
    head, body, sig = token.split(".")
    return f"{head}.{body}.{sig[:-4]}AAAA"


@pytest.mark.parametrize(
    "make_token, reason",
    [
        (lambda kit, keys: msgspec.json.encode(kit.make_question()).decode(), "not-a-jws"),
        (lambda kit, keys: "a.b", "not-a-jws"),
        (lambda kit, keys: "å.ä.ö".encode(), "not-a-jws"),
        (lambda kit, keys: kit.sign_question(kit.make_question(), keys.stranger), "unknown-key"),
        (lambda kit, keys: kit.sign_question(kit.make_question(), keys.producer), "unknown-key"),
        (lambda kit, keys: tamper(kit.sign_question(kit.make_question(), keys.broker)),
         "bad-signature"),
        (lambda kit, keys: sign(msgspec.json.encode(kit.make_question()), keys.broker,
                                typ="samsvar-reply+jws"), "not-a-jws"),
        (lambda kit, keys: sign(b'{"query_id": 1}', keys.broker, typ=QUESTION_TYP),
         "bad-payload"),
        (lambda kit, keys: kit.sign_question(kit.make_question(broker="SE0000000000-BRK2"),
                                             keys.broker), "wrong-broker"),
        (lambda kit, keys: kit.sign_question(kit.make_question(reply_topic="elsewhere/r/x"),
                                             keys.broker), "bad-reply-topic"),
        (lambda kit, keys: kit.sign_question(
            kit.make_question(reply_topic="samsvar/v1/r/#"), keys.broker), "bad-reply-topic"),
        (lambda kit, keys: kit.sign_question(kit.make_question(reply_topic="samsvar/v1/r/"),
                                             keys.broker), "bad-reply-topic"),
        (lambda kit, keys: kit.sign_question(kit.make_question(subject="19500118-2046"),
                                             keys.broker), "bad-subject"),
        (lambda kit, keys: kit.sign_question(kit.make_question(deadline_in=-1), keys.broker),
         "expired"),
        (lambda kit, keys: kit.sign_question(kit.make_question(iat=int(time.time()) + 120),
                                             keys.broker), "not-yet-valid"),
        (lambda kit, keys: kit.sign_question(kit.make_question(deadline_in=3600), keys.broker),
         "deadline-too-far"),
    ],
)
async def test_refused_questions_get_no_reply(make_adapter: Any, keys: Any, kit: Any,
                                              make_token: Any, reason: str) -> None:
    with capture_logs() as logs:
        adapter = make_adapter()
        assert await adapter.answer(make_token(kit, keys)) is None
    assert [(e["event"], e["reason"], e["log_level"]) for e in logs] == \
        [("question refused", reason, "warning")]


async def test_duplicate_question_is_answered_once(make_adapter: Any, keys: Any,
                                                   kit: Any) -> None:
    adapter = make_adapter()
    token = kit.sign_question(kit.make_question(), keys.broker)
    assert await adapter.answer(token) is not None
    assert await adapter.answer(token) is None
    assert adapter.handled == 1


async def test_answered_ids_are_forgotten_once_expired_and_stay_bounded(
        make_adapter: Any, keys: Any, kit: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "MAX_SEEN", 20)
    adapter = make_adapter()
    short = kit.make_question(deadline_in=0.05)
    assert await adapter.answer(kit.sign_question(short, keys.broker)) is not None
    for _ in range(60):
        assert await adapter.answer(kit.sign_question(kit.make_question(), keys.broker))
    assert len(adapter._seen) == len(adapter._seen_until) == 20  # the oldest 41 forgotten
    await asyncio.sleep(0.1)
    latest = kit.make_question()
    token = kit.sign_question(latest, keys.broker)
    assert await adapter.answer(token) is not None
    assert short.query_id not in adapter._seen  # expired: a replay is refused as expired
    assert await adapter.answer(token) is None  # a recent one is still a duplicate


async def test_log_lines_carry_no_content(make_adapter: Any, keys: Any, kit: Any) -> None:
    q: Question = kit.make_question()
    with capture_logs() as logs:
        adapter = make_adapter()
        await adapter.answer(kit.sign_question(q, keys.broker))
    [line] = logs
    assert line["event"] == "question answered"
    assert line["query_id"] == q.query_id and line["producer"] == kit.PRODUCER
    assert line["status"] == "ok" and line["records"] == 3
    assert line["disclosed"] == {"medication": 1, "alerts": 1, "social_care_interventions": 1}
    assert line["dropped"] == {"scope-not-disclosable": 1, "excluded-unit": 1}
    text = repr(logs)
    for secret in (kit.PERSON, "Doktor Test", "Alvedon", "Penicillin", "Hemlig", "Hemtjänst"):
        assert secret not in text

