"""Liveness without wills, one answering replica without shared subscriptions, presence
that corrects itself, and the size limit, on a real Mosquitto (SPEC section 4).

* An adapter's heartbeats: a producer whose heartbeats stop (and whose will never comes,
  as on a cluster whose node died) counts as unavailable after three intervals, and a
  question open to it ends ``unavailable``, not ``timeout``.
* Two or three replicas on a server without ``$share``: each question is answered, and
  its disclosure logged, by one replica only; when that replica dies another takes over
  within seconds (the time is printed).
* A retained presence of a live producer that is empty, malformed, another producer's or
  offline is corrected by the adapter at once.
* Messages above ``[mqtt] max_message_bytes`` are dropped and counted, by the broker (in
  its metrics) and by the adapter, which go on answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from typing import Any

import aiomqtt
import msgspec
import pytest
import structlog

from producer_adapter import Adapter
from schemas.messages import Presence
from schemas.topics import presence_topic, question_topic
from tests.conftest import MqttServer
from tests.e2e.conftest import PERSON, Federation, ProducerSpec, record, until

pytestmark = pytest.mark.mosquitto

P1_RECORDS = [record("P1", 1, when="2026-11-01T10:00:00+01:00")]


async def _federation(federation_factory: Any, *, with_p2: bool = True) -> Federation:
    specs = [ProducerSpec("P1", records={PERSON: P1_RECORDS})]
    if with_p2:
        specs.append(ProducerSpec("P2", records={}))
    fed: Federation = await federation_factory(specs)
    await fed.start_broker()
    return fed


async def _start_replica(fed: Federation, producer: str, replica: str, **mqtt: Any) -> Adapter:
    config = fed.adapter_config(producer, replica=replica)
    config = dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, **mqtt))
    adapter = Adapter(config, fed.registry)
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(shutdown=stop))
    fed.adapters.setdefault(producer, []).append((adapter, stop, task))
    await asyncio.wait_for(adapter.ready.wait(), 10)
    return adapter


async def _publish(server: MqttServer, topic: str, payload: bytes, *, retain: bool) -> None:
    """One message from a client that then disconnects cleanly (so no will is sent)."""
    async with aiomqtt.Client("127.0.0.1", server.port) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


async def _retained(server: MqttServer, topic: str) -> bytes | None:
    """The retained message on ``topic`` as a new subscriber gets it (None if there is none)."""
    async with aiomqtt.Client("127.0.0.1", server.port) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(0.5):
                async for message in client.messages:
                    return bytes(message.payload)
        except TimeoutError:
            return None
    return None


# -- heartbeats ------------------------------------------------------------------------------


async def test_a_producer_whose_heartbeats_stop_is_unavailable_not_timeout(
        federation_factory: Any) -> None:
    fed = await _federation(federation_factory)
    await fed.start_adapter("P1")
    await fed.wait_presence("P1")
    # P2 announces itself online with a heartbeat of 0.3 s, then goes without a word: no
    # will reaches the broker (as when a cluster node dies with it).
    beat = Presence(producer="P2", online=True, since=int(time.time() * 1000),
                    at=int(time.time() * 1000), heartbeat_ms=300, replica="gone")
    await _publish(fed.server, presence_topic(fed.prefix, "P2"), msgspec.json.encode(beat),
                   retain=True)
    await fed.wait_presence("P2")
    with structlog.testing.capture_logs() as logs:
        answer = await fed.ask(deadline_ms=8000)
    sources = {s["producer"]: s["status"] for s in answer["sources"]}
    assert sources == {"P1": "ok", "P2": "unavailable"}, answer["sources"]
    assert any(e["event"] == "producer_stale" and e["producer"] == "P2" for e in logs)
    assert not fed.broker.service.presence.is_online("P2")  # type: ignore[union-attr]
    # A live adapter's heartbeats keep it online past three of its intervals.
    await _start_replica(fed, "P2", "alive", heartbeat_s=0.2)
    await fed.wait_presence("P2")
    presence = fed.broker.service.presence  # type: ignore[union-attr]
    first = presence.get("P2")
    assert first is not None
    # Past the moment the first beat alone would have gone stale (three intervals).
    await until(lambda: time.monotonic() > first.stale_at + 0.2,
                "three heartbeat intervals after the first beat")
    assert presence.is_online("P2")
    answer = await fed.ask()
    assert {s["producer"]: s["status"] for s in answer["sources"]} == {"P1": "ok",
                                                                        "P2": "no_data"}


# -- replicas without shared subscriptions ---------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
async def test_replicas_without_shared_subscriptions_answer_once_and_take_over(
        federation_factory: Any, count: int) -> None:
    fed = await _federation(federation_factory, with_p2=False)
    replicas = [await _start_replica(fed, "P1", f"r{i}", shared_subscriptions=False,
                                     heartbeat_s=0.3) for i in range(count)]
    await fed.wait_presence("P1")

    async def ask_many(n: int) -> list[tuple[str, str]]:
        with structlog.testing.capture_logs() as logs:
            for _ in range(n):
                answer = await fed.ask()
                assert [s["status"] for s in answer["sources"]] == ["ok"], answer["sources"]
                assert [r["id"] for r in answer["records"]] == ["P1-1"]
        return [(e["query_id"], e["replica"]) for e in logs
                if e.get("event") == "question answered"]

    answered = await ask_many(10)
    per_query = Counter(q for q, _ in answered)
    assert len(per_query) == 10 and set(per_query.values()) == {1}, answered
    [answerer] = {r for _, r in answered}
    assert answerer == "r0"  # the oldest answers; the others only listen

    # The answering replica dies without a goodbye: its heartbeats just stop.
    _, _, task = fed.adapters["P1"][0]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    fed.adapters["P1"].pop(0)
    died = time.monotonic()
    while True:
        status, _, body = await fed.post(fed.token(deadline_ms=1000))
        assert status == 200, body
        if body["sources"][0]["status"] == "ok":
            break
        assert body["sources"][0]["status"] in ("timeout", "unavailable"), body
    took = time.monotonic() - died
    print(f"\n{count} replicas: another took over {took:.2f} s after the answering one died")
    assert took < 10

    answered = await ask_many(10)
    per_query = Counter(q for q, _ in answered)
    assert len(per_query) == 10 and set(per_query.values()) == {1}, answered
    assert {r for _, r in answered} == {"r1"}
    assert sum(r.handled for r in replicas) >= 20


async def test_a_replica_that_stops_hands_over_at_once(federation_factory: Any) -> None:
    fed = await _federation(federation_factory, with_p2=False)
    for i in range(2):
        await _start_replica(fed, "P1", f"r{i}", shared_subscriptions=False, heartbeat_s=30)
    await fed.wait_presence("P1")
    _, stop, task = fed.adapters["P1"].pop(0)
    stop.set()
    await task
    # With a 30 s heartbeat, only the stopping replica's cleared heartbeat lets r1 answer now.
    answer = await fed.ask()
    assert [s["status"] for s in answer["sources"]] == ["ok"], answer["sources"]


# -- presence that corrects itself -------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"",
    b"{not json",
    b'{"producer": "P1", "online": false, "since": 0}',
    b'{"producer": "P2", "online": true, "since": 0}',
], ids=["empty", "malformed", "offline", "another-producers"])
async def test_adapter_corrects_any_presence_of_its_own_that_is_not_online(
        federation_factory: Any, payload: bytes) -> None:
    fed = await _federation(federation_factory)
    await fed.start_adapter("P1")
    await fed.wait_presence("P1")
    topic = presence_topic(fed.prefix, "P1")
    await _publish(fed.server, topic, payload, retain=True)
    async with asyncio.timeout(10):
        while True:
            retained = await _retained(fed.server, topic)
            if retained:
                presence = msgspec.json.decode(retained, type=Presence)
                if presence.producer == "P1" and presence.online:
                    break
    await fed.wait_presence("P1")
    answer = await fed.ask()
    assert {s["producer"]: s["status"] for s in answer["sources"]}["P1"] == "ok"


# -- the size limit ----------------------------------------------------------------------------


async def _dropped_metric(fed: Federation) -> float:
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith('samsvar_mqtt_messages_dropped_total{reason="too_large"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no samsvar_mqtt_messages_dropped_total in /metrics:\n" + text)


async def test_oversized_messages_are_dropped_and_counted_and_answering_goes_on(
        federation_factory: Any) -> None:
    fed = await _federation(federation_factory)
    adapter = await fed.start_adapter("P1")
    await fed.start_adapter("P2")
    await fed.wait_presence("P1")
    await fed.wait_presence("P2")
    assert fed.broker is not None
    limit = fed.broker.config.mqtt.max_message_bytes
    assert limit == 4 * 1024 * 1024 == adapter.config.mqtt.max_message_bytes
    assert await _dropped_metric(fed) == 0
    # Just above the limit, and far above it (read past without being buffered, on gmqtt).
    await _publish(fed.server, fed.broker.bus.reply_topic, b"x" * (limit + 1), retain=False)
    await _publish(fed.server, presence_topic(fed.prefix, "P2"), b"{" * (3 * limit),
                   retain=False)
    await _publish(fed.server, question_topic(fed.prefix, "P1"), b"q" * (2 * limit),
                   retain=False)
    async with asyncio.timeout(20):
        while await _dropped_metric(fed) < 2 or adapter._link is None or \
                adapter._link.too_large < 1:
            await asyncio.sleep(0.05)
    assert await _dropped_metric(fed) == 2
    assert fed.broker.service.presence.is_online("P2")  # the oversized presence was not read
    answer = await fed.ask()
    assert {s["producer"]: s["status"] for s in answer["sources"]} == {"P1": "ok",
                                                                        "P2": "no_data"}


async def test_generated_mosquitto_config_refuses_what_the_roles_drop(
        tmp_path: Any, mosquitto: MqttServer) -> None:
    from samsvar.mosquitto import size_limits, write_mosquitto_security
    from tests.conftest import start_mosquitto
    from tests.e2e.conftest import build_federation
    from transport.settings import HEADROOM

    fed = build_federation(tmp_path, mosquitto, "test/size", [ProducerSpec("P1")])
    written = write_mosquitto_security(fed.registry, tmp_path / "tls")
    conf = written.conf.read_text()
    assert "message_size_limit 4194304" in conf
    assert f"max_packet_size {4194304 + HEADROOM}" in conf
    # The same lines on a real Mosquitto (a small limit, on a plain listener): a message at
    # the limit passes, one byte more never reaches a subscriber.
    (tmp_path / "small").mkdir()
    server = start_mosquitto(tmp_path / "small", extra="\n".join(size_limits(100_000)) + "\n")
    try:
        async with aiomqtt.Client("127.0.0.1", server.port) as sub:
            await sub.subscribe("size/#", qos=1)
            await _publish(server, "size/over", b"o" * 100_001, retain=False)
            await _publish(server, "size/at", b"a" * 100_000, retain=False)
            async with asyncio.timeout(5):
                async for message in sub.messages:
                    assert message.topic.value == "size/at"  # the larger one never came
                    break
    finally:
        server.stop()
