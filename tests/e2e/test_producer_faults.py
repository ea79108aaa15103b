"""Misbehaving producers over a real MQTT server: the others' answer is unaffected,
each faulty source gets an honest status, and the broker's memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import aiomqtt
import msgspec
import psutil
import pytest

from broker.replay import SqliteReplayStore
from producer_adapter.backends import BackendResult
from schemas.jose import PrivateKey, b64url_decode, b64url_encode, generate_key, sign
from schemas.messages import REPLY_TYP, Period, Presence, Reply
from schemas.topics import presence_topic, question_topic
from tests.e2e.conftest import (
    PERSON,
    SOCIAL_CARE_GIVER,
    Federation,
    ProducerSpec,
    record,
    until,
)

Behaviour = Callable[["Rogue", dict[str, Any]], Awaitable[None]]


class Rogue:
    """A hand-driven producer: a raw MQTT client holding a producer's presence and topic."""

    def __init__(self, fed: Federation, producer: str, behaviour: Behaviour) -> None:
        self.fed = fed
        self.producer = producer
        self.behaviour = behaviour
        self.key: PrivateKey = fed.keys[producer]
        settings = fed.server.settings(fed.prefix)
        version = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
                   else aiomqtt.ProtocolVersion.V311)
        offline = msgspec.json.encode(Presence(producer=producer, online=False))
        self.client = aiomqtt.Client(
            "127.0.0.1", settings.port, protocol=version, identifier=f"rogue-{uuid.uuid4().hex}",
            will=aiomqtt.Will(presence_topic(fed.prefix, producer), offline, qos=1, retain=True),
        )

    async def publish_reply(self, question: dict[str, Any], payload: bytes,
                            key: PrivateKey | None = None) -> None:
        token = sign(payload, key or self.key, typ=REPLY_TYP)
        await self.client.publish(question["reply_topic"], token.encode(), qos=1)

    def reply(self, question: dict[str, Any], producer: str | None = None,
              status: str = "ok") -> bytes:
        return msgspec.json.encode(Reply(query_id=question["query_id"],
                                         producer=producer or self.producer,
                                         status=status))  # type: ignore[arg-type]

    async def run(self, ready: asyncio.Event) -> None:
        async with self.client:
            await self.client.subscribe(question_topic(self.fed.prefix, self.producer), qos=1)
            await self.client.publish(
                presence_topic(self.fed.prefix, self.producer),
                msgspec.json.encode(Presence(producer=self.producer, online=True)),
                qos=1, retain=True)
            ready.set()
            topic = question_topic(self.fed.prefix, self.producer)
            async for message in self.client.messages:
                if not message.topic.matches(topic):
                    continue  # amqtt also sends retained messages nobody subscribed to
                token = bytes(message.payload)
                question = msgspec.json.decode(b64url_decode(token.split(b".")[1]))
                await self.behaviour(self, question)


@contextlib.asynccontextmanager
async def rogues(fed: Federation, **behaviours: Behaviour) -> AsyncIterator[list[Rogue]]:
    started = [Rogue(fed, pid, b) for pid, b in behaviours.items()]
    tasks = []
    for rogue in started:
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(rogue.run(ready)))
        await asyncio.wait_for(ready.wait(), 10)
        await fed.wait_presence(rogue.producer)
    try:
        yield started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def hang(rogue: Rogue, question: dict[str, Any]) -> None:
    """Takes the question and never answers."""


async def malformed(rogue: Rogue, question: dict[str, Any]) -> None:
    """A signed reply whose payload is not JSON, and one that is JSON but not a reply."""
    garbage = b"{not json"
    token = f"{b64url_encode(b'{}')}.{b64url_encode(garbage)}.{b64url_encode(bytes(64))}"
    await rogue.client.publish(question["reply_topic"], token.encode(), qos=1)
    bad = msgspec.json.encode({"query_id": question["query_id"], "producer": rogue.producer,
                               "status": "ok", "records": [{"type": "x-rays"}]})
    await rogue.publish_reply(question, bad)


async def impostor(rogue: Rogue, question: dict[str, Any]) -> None:
    """Replies in another producer's name (P-OK), signed with its own key."""
    await rogue.publish_reply(question, rogue.reply(question, producer="P-OK", status="no_data"))


async def wrong_key(rogue: Rogue, question: dict[str, Any]) -> None:
    await rogue.publish_reply(question, rogue.reply(question), key=generate_key("EdDSA"))


async def twice(rogue: Rogue, question: dict[str, Any]) -> None:
    await rogue.publish_reply(question, rogue.reply(question, status="no_data"))
    await rogue.publish_reply(question, rogue.reply(question, status="error"))


async def late(rogue: Rogue, question: dict[str, Any]) -> None:
    await asyncio.sleep(1.2)
    await rogue.publish_reply(question, rogue.reply(question))


async def flood(rogue: Rogue, question: dict[str, Any]) -> None:
    for _ in range(300):
        fake = dict(question, query_id=str(uuid.uuid4()))
        await rogue.publish_reply(fake, rogue.reply(fake))
    await rogue.publish_reply(question, rogue.reply(question, status="no_data"))


async def crash(rogue: Rogue, question: dict[str, Any]) -> None:
    """Dies mid-question: the connection drops without a DISCONNECT, so the last will fires."""
    import socket

    sock = rogue.client._client.socket()  # an abrupt network loss
    assert isinstance(sock, socket.socket), sock
    sock.shutdown(socket.SHUT_RDWR)


FAULTY = {"P-HANG": hang, "P-MALFORMED": malformed, "P-IMPOSTOR": impostor,
          "P-WRONGKEY": wrong_key, "P-TWICE": twice, "P-LATE": late, "P-FLOOD": flood,
          "P-CRASH": crash}


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    specs = [ProducerSpec("P-OK", records={PERSON: [
        record("P-OK", 1, when="2026-11-01T10:00:00+01:00", text="Levaxin")]})]
    specs += [ProducerSpec(pid) for pid in FAULTY]
    fed: Federation = await federation_factory(specs)
    await fed.start_broker()
    await fed.start_adapter("P-OK")
    await fed.wait_presence("P-OK")
    return fed


async def test_each_fault_gets_an_honest_status(fed: Federation) -> None:
    assert fed.broker is not None
    counters = fed.broker.service.gatherer.counters
    async with rogues(fed, **FAULTY):
        answer = await fed.ask(deadline_ms=1000)
        await until(lambda: counters.unknown_query >= 301,
                    "the flood's 300 replies and the late one, after the query closed")
    statuses = {s["producer"]: s["status"] for s in answer["sources"]}
    assert statuses == {
        "P-OK": "ok",             # unaffected by the impostor's reply in its name
        "P-HANG": "timeout",
        "P-MALFORMED": "error",   # its signed reply does not match the schema
        "P-IMPOSTOR": "timeout",  # it never answered for itself
        "P-WRONGKEY": "error",    # only an unverifiable reply came
        "P-TWICE": "no_data",     # the first reply counts, the second ("error") is ignored
        "P-LATE": "timeout",
        "P-FLOOD": "no_data",
        "P-CRASH": "unavailable",  # its last will arrived while the question was open
    }
    assert [r["drug"] for r in answer["records"]] == ["Levaxin"]
    assert answer["complete"] is False
    assert counters.duplicate >= 1
    assert counters.unknown_query >= 301  # the flood and the late reply
    assert counters.unverifiable >= 1     # the wrong key (and the impostor, if it came first)
    assert len(fed.broker.service.gatherer) == 0, "no query is left open"


async def test_a_flood_of_unknown_replies_keeps_memory_bounded(fed: Federation) -> None:
    assert fed.broker is not None
    async with rogues(fed, **{"P-FLOOD": flood}):
        for _ in range(5):
            answer = await fed.ask(deadline_ms=3000)
            statuses = {s["producer"]: s["status"] for s in answer["sources"]}
            assert statuses["P-OK"] == "ok" and statuses["P-FLOOD"] == "no_data"
    service = fed.broker.service
    assert len(service.gatherer) == 0
    assert service.gatherer.counters.unknown_query >= 1500
    # Nothing is kept per unknown reply: the broker holds no state for 1,500 of them.
    assert isinstance(service.replay, SqliteReplayStore)
    with sqlite3.connect(service.replay.path) as db:
        assert db.execute("SELECT count(*) FROM used_jti").fetchone() == (5,)


class HangingBackend:
    async def fetch(self, subject: str, types: frozenset[str],
                    period: Period | None) -> BackendResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        return None


async def test_overload_is_refused_with_429_not_queued(federation_factory: Any) -> None:
    fed: Federation = await federation_factory([ProducerSpec("P-SLOW")])
    await fed.start_broker(max_in_flight=20, max_in_flight_per_consumer=12)
    await fed.start_adapter("P-SLOW", backend=HangingBackend())
    await fed.wait_presence("P-SLOW")
    process = psutil.Process()
    rss_before = process.memory_info().rss
    # Admitted queries hang until their deadline: long enough that none frees its slot
    # while the 400 are still arriving, even on a loaded machine (1.5 s was not, once).
    tokens = [fed.token(deadline_ms=4000) for _ in range(200)]
    tokens += [fed.token(SOCIAL_CARE_GIVER, deadline_ms=4000) for _ in range(200)]

    async def post(http: aiohttp.ClientSession, token: str) -> tuple[int, Any, Any]:
        async with http.post(f"{fed.url}/v1/queries", data=token.encode(),
                             headers={"Content-Type": "application/jwt"}) as resp:
            return resp.status, dict(resp.headers), await resp.json(content_type=None)

    # All 400 at once: no client-side connection limit queues them.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        results = await asyncio.gather(*(post(http, t) for t in tokens))
    rss_after = process.memory_info().rss
    admitted = [body for status, _, body in results if status == 200]
    rejected = [(headers, body) for status, headers, body in results if status == 429]
    assert len(admitted) + len(rejected) == len(tokens)
    assert 0 < len(admitted) <= 20
    assert all(a["sources"][0]["status"] == "timeout" for a in admitted)
    assert all(h["Retry-After"].isdigit() for h, _ in rejected)
    assert {b["type"] for _, b in rejected} <= {"urn:samsvar:problem:overloaded",
                                                "urn:samsvar:problem:overloaded-consumer"}
    # Stated bound: 400 refused requests may not grow this test process by 64 MiB.
    assert rss_after - rss_before < 64 * 1024 * 1024
