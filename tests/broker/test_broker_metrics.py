"""``GET /metrics`` (Prometheus), ``/healthz`` and ``/readyz`` on a real federation."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

import broker.service
from broker import BrokerConfig, BrokerServer
from broker.accesslog import AccessLogConfig
from broker.accesslog.sqlite import SqliteStore
from tests.conftest import MqttServer, require_mosquitto
from tests.e2e.conftest import (
    PERSON,
    Federation,
    ProducerSpec,
    build_federation,
    record,
)


def specs() -> list[ProducerSpec]:
    return [ProducerSpec(pid, records={PERSON: [
        record(pid, 1, when="2026-11-01T10:00:00+01:00")]}) for pid in ("P1", "P2")]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(fed: Federation) -> Samples:
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(fed: Federation, name: str, expected: float, **labels: str) -> Samples:
    async with asyncio.timeout(10):
        while True:
            samples = await scrape(fed)
            if value(samples, name, **labels) == expected:
                return samples
            await asyncio.sleep(0.02)


async def test_metrics_count_outcomes_sources_latencies_and_dropped_replies(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory(specs())
    broker = await fed.start_broker()
    await fed.start_adapter("P1")  # P2 never comes: unavailable
    await fed.wait_presence("P1")

    answer = await fed.ask()
    assert [s["status"] for s in answer["sources"]] == ["ok", "unavailable"]
    status, _, problem = await fed.post(fed.token(relation=False))
    assert status == 403 and problem["rule"] == "relation-required"
    status, _, problem = await fed.post(fed.token(key=fed.keys["PRODORG"]))
    assert status == 401 and problem["type"].endswith(":unknown-key")
    status, _, _ = await fed.post("not a token")
    assert status == 400

    samples = await scrape(fed)
    q = "samsvar_queries_total"
    assert value(samples, q, outcome="answered", reason="") == 1
    assert value(samples, q, outcome="refused", reason="relation-required") == 1
    assert value(samples, q, outcome="refused", reason="unknown-key") == 1
    assert value(samples, q, outcome="refused", reason="malformed-token") == 1
    assert value(samples, "samsvar_answer_seconds_count") == 1
    assert 0 < value(samples, "samsvar_answer_seconds_sum") < 5
    src = "samsvar_producer_sources_total"
    assert value(samples, src, producer="P1", status="ok") == 1
    assert value(samples, src, producer="P2", status="unavailable") == 1
    assert value(samples, src, producer="P2", status="timeout") == 0
    assert value(samples, "samsvar_producer_reply_seconds_count", producer="P1") == 1
    assert value(samples, "samsvar_producer_reply_seconds_count", producer="P2") == 0
    # the answer's entry and the two refusals' (401, 403); a 400 is not logged
    assert value(samples, "samsvar_access_log_commit_seconds_count") == 3
    # one at a time, so each entry was its own durable commit
    assert value(samples, "samsvar_access_log_commits_total") == 3
    assert value(samples, "samsvar_mqtt_connected") == 1
    assert value(samples, "samsvar_queries_in_flight") == 0
    assert value(samples, "samsvar_replies_dropped_total", reason="malformed") == 0

    # Replies nobody waits for are dropped and counted, by reason.
    routing = base64.urlsafe_b64encode(
        json.dumps({"query_id": "no-such-query", "producer": "P1"}).encode()).rstrip(b"=")
    settings = fed.server.settings(fed.prefix)
    async with aiomqtt.Client(settings.host, settings.port,
                              identifier=f"intruder-{fed.prefix[-12:]}") as client:
        await client.publish(broker.bus.reply_topic, b"garbage", qos=1)
        await client.publish(broker.bus.reply_topic, b"e30." + routing + b".c2ln", qos=1)
    samples = await eventually(fed, "samsvar_replies_dropped_total", 1, reason="unknown_query")
    assert value(samples, "samsvar_replies_dropped_total", reason="malformed") == 1


async def test_mqtt_loss_shows_in_gauge_readyz_and_error_outcome(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(specs())
    require_mosquitto(fed.server, "the test stops the MQTT server")
    broker = await fed.start_broker()
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "alive"
    async with fed.http.get(f"{fed.url}/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ready"

    fed.server.stop()
    try:
        async with asyncio.timeout(10):
            while broker.bus.connected.is_set():
                await asyncio.sleep(0.02)
        samples = await scrape(fed)
        assert value(samples, "samsvar_mqtt_connected") == 0
        async with fed.http.get(f"{fed.url}/readyz") as resp:
            body = await resp.json()
            assert resp.status == 503
            assert body == {"status": "not ready", "reasons": ["not connected to MQTT"]}
        async with fed.http.get(f"{fed.url}/healthz") as resp:
            assert resp.status == 200  # alive, only not ready
        status, _, problem = await fed.post(fed.token())
        assert status == 503 and problem["type"].endswith(":mqtt-disconnected")
        samples = await scrape(fed)
        assert value(samples, "samsvar_queries_total",
                     outcome="error", reason="mqtt-disconnected") == 1
    finally:
        fed.server.start()
    await asyncio.wait_for(broker.bus.connected.wait(), 15)
    await eventually(fed, "samsvar_mqtt_connected", 1)
    async with fed.http.get(f"{fed.url}/readyz") as resp:
        assert resp.status == 200


async def test_readyz_says_when_the_access_log_is_not_writable(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(specs())
    broker = await fed.start_broker()
    assert fed.http is not None and broker.service.access_log is not None
    await broker.service.access_log.close()  # run() closes it again on shutdown: a no-op
    async with fed.http.get(f"{fed.url}/readyz") as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "not ready",
                                     "reasons": ["the access log is not writable"]}
    status, _, problem = await fed.post(fed.token())
    assert status == 503 and problem["type"].endswith(":access-log-unavailable")


async def test_readyz_is_503_while_the_access_log_s_disk_is_full(
        federation_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite caps the file at the pages it has (``max_page_count``): an append then fails
    with SQLITE_FULL, "database or disk is full", as on a full disk. Every query gets
    503, and so does ``/readyz``, with the reason; once there is room it is ready again."""
    monkeypatch.setattr(broker.service, "LOG_FAILURE_HOLD_S", 0.5)
    fed: Federation = await federation_factory(specs())
    server = await fed.start_broker()
    assert fed.http is not None and server.service.access_log is not None
    store = server.service.access_log._store  # type: ignore[attr-defined]  # the SqliteStore
    assert isinstance(store, SqliteStore)

    def cap(pages: int | None) -> None:
        conn = store._c
        if pages is None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._call(cap, None)
    for _ in range(200):  # until an entry needs a page the file may not have
        status, _, problem = await fed.post(fed.token())
        if status != 200:
            break
    assert status == 503 and problem["type"].endswith(":access-log-unavailable")
    async with fed.http.get(f"{fed.url}/readyz") as resp:
        body = await resp.json()
        assert resp.status == 503, body
    [reason] = body["reasons"]
    assert reason.startswith("the access log is not writable") and "full" in reason
    await store._call(cap, 1 << 30)
    async with asyncio.timeout(10):  # ready again once the log is writable
        while True:
            async with fed.http.get(f"{fed.url}/readyz") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.02)
    status, _, body = await fed.post(fed.token())
    assert status == 200, body


async def test_readyz_is_503_when_the_replay_store_is_down(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(specs())
    server = await fed.start_broker()
    assert fed.http is not None
    await server.service.replay.close()  # run() closes it again on shutdown: a no-op
    async with fed.http.get(f"{fed.url}/readyz") as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "not ready",
                                     "reasons": ["the replay store cannot be reached"]}
    status, _, problem = await fed.post(fed.token())
    assert status == 503 and problem["type"].endswith(":replay-store-unavailable")


def test_two_brokers_in_one_process_have_their_own_metrics(tmp_path: Path) -> None:
    server = MqttServer("mosquitto", 1, None, None)  # never connected to: nothing runs
    fed = build_federation(tmp_path, server, "test/metrics", specs())

    def make(instance: str) -> BrokerServer:
        config = BrokerConfig(registry_path=tmp_path / "registry.toml",
                              key_path=tmp_path / "broker.jwk", instance=instance, port=0,
                              access_log=AccessLogConfig(path=tmp_path / f"{instance}.db"))
        return BrokerServer(config, registry=fed.registry, key=fed.keys["broker"])

    one, two = make("one"), make("two")
    assert one.metrics.registry is not two.metrics.registry
    one.service.observers.query_rejected(status=403, reason="relation-required")
    one.service.observers.source_finished("P1", "ok", 0.012)

    def sample(b: BrokerServer, name: str, **labels: str) -> float | None:
        return b.metrics.registry.get_sample_value(name, labels)

    assert sample(one, "samsvar_queries_total", outcome="refused",
                  reason="relation-required") == 1
    assert sample(two, "samsvar_queries_total", outcome="refused",
                  reason="relation-required") is None
    assert sample(one, "samsvar_producer_reply_seconds_count", producer="P1") == 1
    assert sample(two, "samsvar_producer_reply_seconds_count", producer="P1") == 0
    # every registered producer and status is there from the start, at zero
    assert sample(two, "samsvar_producer_sources_total", producer="P2", status="timeout") == 0
    assert sample(two, "samsvar_mqtt_connected") == 0
