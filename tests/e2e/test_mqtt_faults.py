"""The MQTT server restarts, or the network to one adapter is cut: nobody hangs, all recover."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from typing import Any

from tests.conftest import require_mosquitto
from tests.e2e.conftest import PERSON, Federation, ProducerSpec, record, until
from tests.e2e.processes import SAMSVAR


def specs() -> list[ProducerSpec]:
    return [ProducerSpec(pid, records={PERSON: [
        record(pid, 1, when="2026-11-01T10:00:00+01:00")]}) for pid in ("P1", "P2")]


async def test_mosquitto_restart_mid_load(federation_factory: Any) -> None:
    fed: Federation = await federation_factory(specs())
    require_mosquitto(fed.server, "the test restarts the MQTT server")
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)
    assert fed.broker is not None

    outcomes: list[tuple[int, float, Any]] = []

    async def load(until: asyncio.Event) -> None:
        while not until.is_set():
            t0 = time.monotonic()
            status, _, body = await fed.post(fed.token(deadline_ms=1500))
            outcomes.append((status, time.monotonic() - t0, body))
            await asyncio.sleep(0.01)

    stop = asyncio.Event()
    loaders = [asyncio.create_task(load(stop)) for _ in range(4)]
    await until(lambda: any(status == 200 for status, _, _ in outcomes), "a first answer")
    before = len(outcomes)
    fed.server.stop()
    await until(lambda: any(status == 503 for status, _, _ in outcomes[before:]),
                "a 503 while the MQTT server is down")
    during = len(outcomes)
    fed.server.start()
    await asyncio.wait_for(fed.broker.bus.connected.wait(), 15)
    for pid in fed.producers:
        await fed.wait_presence(pid, timeout=15)
    after = len(outcomes)
    await until(lambda: any(status == 200 for status, _, _ in outcomes[after:]),
                "an answer after the MQTT server is back", timeout=15)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*loaders), 10)

    assert before > 0 and during > before
    statuses = {status for status, _, _ in outcomes}
    assert statuses <= {200, 503}, statuses
    # No query hangs past its deadline (1.5 s), whatever the server does.
    assert max(elapsed for _, elapsed, _ in outcomes) < 1.5 + 2.0
    for status, _, body in outcomes:
        if status == 200:
            assert {s["status"] for s in body["sources"]} <= {"ok", "timeout", "unavailable"}
        else:
            assert body["type"] == "urn:samsvar:problem:mqtt-disconnected"
    assert any(status == 503 for status, _, _ in outcomes), "the outage was seen"
    answer = await fed.ask()
    assert {s["status"] for s in answer["sources"]} == {"ok"}, "all recovered"


async def test_cut_adapter_becomes_unavailable_through_its_last_will(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory(specs())
    # amqtt 0.12 does not drop a silent client when its keepalive runs out.
    require_mosquitto(fed.server, "a keepalive timeout (the embedded server never fires it)")
    await fed.start_broker()
    await fed.start_adapter("P1")
    settings = fed.server.settings(fed.prefix)
    (fed.tmp / "p2.jwk").write_text(json.dumps(fed.keys["P2"].to_jwk()))
    config = fed.tmp / "p2.toml"
    config.write_text("\n".join([
        "[adapter]", 'producer = "P2"', 'registry = "registry.toml"', 'key = "p2.jwk"',
        "[mqtt]", f'url = "{settings.url}"', f'prefix = "{settings.prefix}"',
        f'protocol = "{settings.protocol}"',
        f"shared_subscriptions = {'true' if settings.shared_subscriptions else 'false'}",
        "keepalive = 2",
        "[backend]", 'kind = "json_dir"', 'path = "data/P2"', "",
    ]))
    log = fed.tmp / "p2.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([*SAMSVAR, "adapter", "--config", str(config)],
                                stdout=sink, stderr=sink)
    try:
        await fed.wait_presence("P1")
        await fed.wait_presence("P2", timeout=20)
        answer = await fed.ask()
        assert {s["status"] for s in answer["sources"]} == {"ok"}
        proc.send_signal(signal.SIGSTOP)  # the process lives, its network is silent
        t0 = time.monotonic()
        await fed.wait_presence("P2", online=False, timeout=15)
        gone_after = time.monotonic() - t0
        t1 = time.monotonic()
        answer = await fed.ask(deadline_ms=10_000)
        assert {s["producer"]: s["status"] for s in answer["sources"]} == {
            "P1": "ok", "P2": "unavailable"}
        assert time.monotonic() - t1 < 5, "unavailable is said at once, not at the deadline"
        # Keepalive 2 s: the server gives up after 1.5 keepalives; allow for scheduling.
        assert gone_after < 10
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)


class _SlowBackend:
    """Answers after a second: a question still open when the broker is told to stop."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def fetch(self, subject: str, types: frozenset[str], period: Any) -> Any:
        await asyncio.sleep(1.0)
        return await self.inner.fetch(subject, types, period)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_shutdown_drains_queries_in_flight(federation_factory: Any) -> None:
    """SIGTERM (shutdown) stops taking queries but lets open ones finish over MQTT."""
    from producer_adapter.backends import JsonDirBackend

    fed: Federation = await federation_factory(specs())
    await fed.start_broker()
    await fed.start_adapter("P1")
    slow = _SlowBackend(JsonDirBackend.load(fed.tmp / "data" / "P2", "P2"))
    await fed.start_adapter("P2", backend=slow)
    for pid in fed.producers:
        await fed.wait_presence(pid)
    in_flight = asyncio.create_task(fed.post(fed.token(deadline_ms=5000)))
    assert fed.broker is not None
    gatherer = fed.broker.service.gatherer
    await until(lambda: len(gatherer) == 1, "the query is open, its questions sent")
    fed.shutdown.set()  # what `samsvar broker` does on SIGTERM
    status, _, answer = await asyncio.wait_for(in_flight, 10)
    assert status == 200
    assert {s["producer"]: s["status"] for s in answer["sources"]} == {"P1": "ok", "P2": "ok"}
