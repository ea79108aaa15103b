"""The whole path over a real MQTT server: signed query in, one aggregated answer out."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from typing import Any

import aiomqtt
import msgspec

from producer_adapter.backends import BackendResult, JsonDirBackend
from schemas.jose import b64url_decode, generate_key, sign
from schemas.messages import REPLY_TYP, Period, Presence, Reply
from schemas.topics import presence_topic, question_topic
from tests.conftest import require_mosquitto
from tests.e2e.conftest import (
    PERSON,
    SOCIAL_CARE_GIVER,
    Federation,
    ProducerSpec,
    record,
    until,
)


def three_producers() -> list[ProducerSpec]:
    return [
        ProducerSpec("P-REGION", records={PERSON: [
            record("P-REGION", 1, when="2026-11-01T10:00:00+01:00", text="Waran"),
            record("P-REGION", 2, when="2026-10-01T10:00:00+02:00", text="Furosemid"),
        ]}),
        ProducerSpec("P-KOMMUN", records={PERSON: [
            record("P-KOMMUN", 1, when="2026-11-20T08:00:00+01:00", text="Alvedon"),
        ]}),
        ProducerSpec("P-LSS", records={PERSON: [
            record("P-LSS", 1, when="2026-09-15T08:00:00+02:00", text="Melatonin"),
        ]}),
    ]


async def start_all(fed: Federation) -> None:
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)


async def test_aggregated_answer_from_three_producers(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(three_producers())
    await start_all(fed)
    status, headers, answer = await fed.post(fed.token())
    assert status == 200, answer
    assert headers["Cache-Control"] == "no-store"
    assert answer["subject"] == PERSON
    assert answer["complete"] is True
    assert answer["blocked_information_exists"] is False
    assert "blocked_at" not in answer
    assert {s["producer"]: (s["status"], s["records"]) for s in answer["sources"]} == {
        "P-REGION": ("ok", 2), "P-KOMMUN": ("ok", 1), "P-LSS": ("ok", 1)}
    drugs = [r["drug"] for r in answer["records"]]
    assert drugs == ["Alvedon", "Waran", "Furosemid", "Melatonin"]  # newest first
    assert all(r["type"] == "medication" for r in answer["records"])
    assert [r["source"]["producer"] for r in answer["records"]] == [
        "P-KOMMUN", "P-REGION", "P-REGION", "P-LSS"]


async def test_period_and_types_narrow_the_answer(federation_factory: Any) -> None:
    specs = three_producers()
    specs[0].records[PERSON].append(
        record("P-REGION", 3, when="2026-11-02T10:00:00+01:00", type_="alerts"))
    fed: Federation = await federation_factory(specs)
    await start_all(fed)
    answer = await fed.ask(types=["medication", "alerts"],
                           period=Period(from_=dt.date(2026, 10, 15), to=dt.date(2026, 11, 30)))
    got = [(r["type"], r["id"]) for r in answer["records"]]
    assert got == [("medication", "P-KOMMUN-1"), ("alerts", "P-REGION-3"),
                   ("medication", "P-REGION-1")]
    assert {s["producer"]: s["status"] for s in answer["sources"]}["P-LSS"] == "no_data"


async def test_producer_without_the_type_is_not_asked(federation_factory: Any) -> None:
    specs = three_producers()
    specs[2].types = ["social_care_interventions"]
    fed: Federation = await federation_factory(specs)
    await start_all(fed)
    answer = await fed.ask()
    assert [s["producer"] for s in answer["sources"]] == ["P-REGION", "P-KOMMUN"]


class SlowBackend:
    """A real JSON backend behind a delay: a producer whose record system is slow."""

    def __init__(self, inner: JsonDirBackend, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def fetch(self, subject: str, types: frozenset[str],
                    period: Period | None) -> BackendResult:
        await asyncio.sleep(self.delay)
        return await self.inner.fetch(subject, types, period)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_slow_producer_times_out_while_others_answer(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(three_producers())
    await fed.start_broker()
    await fed.start_adapter("P-REGION")
    await fed.start_adapter("P-KOMMUN")
    slow = SlowBackend(JsonDirBackend.load(fed.tmp / "data" / "P-LSS", "P-LSS"), delay=5)
    await fed.start_adapter("P-LSS", backend=slow)
    for pid in fed.producers:
        await fed.wait_presence(pid)
    answer = await fed.ask(deadline_ms=700)
    statuses = {s["producer"]: s["status"] for s in answer["sources"]}
    assert statuses == {"P-REGION": "ok", "P-KOMMUN": "ok", "P-LSS": "timeout"}
    assert answer["complete"] is False
    assert {r["source"]["producer"] for r in answer["records"]} == {"P-REGION", "P-KOMMUN"}


async def test_offline_producer_is_unavailable_without_waiting(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(three_producers())
    await fed.start_broker()
    await fed.start_adapter("P-REGION")
    await fed.start_adapter("P-KOMMUN")
    await fed.start_adapter("P-LSS")
    for pid in fed.producers:
        await fed.wait_presence(pid)
    await fed.stop_adapters("P-LSS")  # a clean stop publishes presence offline
    await fed.wait_presence("P-LSS", online=False)
    t0 = time.monotonic()
    answer = await fed.ask(deadline_ms=20_000)
    waited = time.monotonic() - t0
    statuses = {s["producer"]: s["status"] for s in answer["sources"]}
    assert statuses == {"P-REGION": "ok", "P-KOMMUN": "ok", "P-LSS": "unavailable"}
    # Behaviour, not speed: the broker answered without sitting out the 20 s deadline.
    assert waited < 10


async def test_producer_never_seen_is_unavailable(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(three_producers())
    await fed.start_broker()
    await fed.start_adapter("P-REGION")
    await fed.wait_presence("P-REGION")
    answer = await fed.ask(deadline_ms=20_000)
    statuses = {s["producer"]: s["status"] for s in answer["sources"]}
    assert statuses == {"P-REGION": "ok", "P-KOMMUN": "unavailable", "P-LSS": "unavailable"}


async def test_reply_signed_with_wrong_key_is_error(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(three_producers())
    await fed.start_broker()
    await fed.start_adapter("P-REGION")
    await fed.start_adapter("P-KOMMUN")
    settings = fed.server.settings(fed.prefix)
    rogue_key = generate_key("EdDSA")  # not the key registered for P-LSS
    version = (aiomqtt.ProtocolVersion.V5 if settings.protocol == "5"
               else aiomqtt.ProtocolVersion.V311)
    async with aiomqtt.Client("127.0.0.1", settings.port, protocol=version) as rogue:
        await rogue.subscribe(question_topic(fed.prefix, "P-LSS"), qos=1)
        await rogue.publish(presence_topic(fed.prefix, "P-LSS"),
                            msgspec.json.encode(Presence(producer="P-LSS", online=True)),
                            qos=1, retain=True)
        await fed.wait_presence("P-LSS")

        async def answer_badly() -> None:
            async for message in rogue.messages:
                if not message.topic.matches(question_topic(fed.prefix, "P-LSS")):
                    continue  # amqtt also sends retained messages nobody subscribed to
                question = msgspec.json.decode(
                    b64url_decode(bytes(message.payload).split(b".")[1]))
                reply = Reply(query_id=question["query_id"], producer="P-LSS", status="ok")
                token = sign(msgspec.json.encode(reply), rogue_key, typ=REPLY_TYP)
                await rogue.publish(question["reply_topic"], token.encode(), qos=1)

        responder = asyncio.create_task(answer_badly())
        try:
            answer = await fed.ask(deadline_ms=1000)
        finally:
            responder.cancel()
        await rogue.publish(presence_topic(fed.prefix, "P-LSS"), b"", qos=1, retain=True)
    statuses = {s["producer"]: s["status"] for s in answer["sources"]}
    assert statuses == {"P-REGION": "ok", "P-KOMMUN": "ok", "P-LSS": "error"}
    assert fed.broker is not None and fed.broker.service.gatherer.counters.unverifiable >= 1


async def test_two_replicas_answer_each_question_once(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(three_producers()[:1])
    require_mosquitto(fed.server, "shared subscriptions (amqtt has none)")
    await fed.start_broker()
    first = await fed.start_adapter("P-REGION", replica="a")
    second = await fed.start_adapter("P-REGION", replica="b")
    await fed.wait_presence("P-REGION")
    settings = fed.server.settings(fed.prefix)
    replies: Counter[str] = Counter()
    assert fed.broker is not None
    async with aiomqtt.Client("127.0.0.1", settings.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as spy:
        await spy.subscribe(fed.broker.bus.reply_topic, qos=1)

        async def count() -> None:
            async for message in spy.messages:
                body = msgspec.json.decode(
                    b64url_decode(bytes(message.payload).split(b".")[1]))
                replies[body["query_id"]] += 1

        counter = asyncio.create_task(count())
        answers = [await fed.ask() for _ in range(12)]
        await until(lambda: set(replies) >= {a["query_id"] for a in answers},
                    "the spy saw every answer's reply")
        counter.cancel()
    assert all(a["sources"][0]["status"] == "ok" for a in answers)
    assert sorted(replies) == sorted(a["query_id"] for a in answers)
    assert set(replies.values()) == {1}, replies
    assert fed.broker.service.gatherer.counters.duplicate == 0
    assert first.handled + second.handled == len(answers), "no question reached both replicas"
    assert first.handled > 0 and second.handled > 0, "both replicas share the load"


async def test_social_care_giver_may_ask_on_consent(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(three_producers())
    await start_all(fed)
    status, _, body = await fed.post(fed.token(SOCIAL_CARE_GIVER))
    assert status == 200 and body["complete"] is True


async def test_query_reaches_311_producers(federation_factory: Any) -> None:
    specs = [ProducerSpec(f"P{n:03d}", types=["medication"], records={PERSON: [
        record(f"P{n:03d}", 1, when=f"2026-{1 + n % 12:02d}-01T10:00:00+01:00")]})
        for n in range(311)]
    fed: Federation = await federation_factory(specs)
    # amqtt 0.12 raises "dictionary changed size during iteration" in its session loop
    # when hundreds of clients connect at once.
    require_mosquitto(fed.server, "311 concurrent connections (the embedded server breaks)")
    await fed.start_broker()
    # 311 producers as one process's tasks, each with its own MQTT connection.
    await asyncio.gather(*(fed.start_adapter(s.id) for s in specs))
    for s in specs:
        await fed.wait_presence(s.id)
    answer = await fed.ask(deadline_ms=20_000)
    assert len(answer["sources"]) == 311
    assert {s["status"] for s in answer["sources"]} == {"ok"}
    assert len(answer["records"]) == 311
    assert answer["complete"] is True
