"""samsvar on a real 3-node NATS cluster (MQTT 3.1.1, no shared subscriptions, no wills
across nodes): broker on node 1, each producer's two replicas on nodes 2 and 3.

A node is killed with SIGKILL while queries run. Asserted: no answer lies (a source is
``ok`` with exactly its records, or honestly ``timeout``/``unavailable``, never
``no_data`` or wrong records), no answered query is missing from the access log, each
question is answered (and its disclosure logged) by one replica only, and answers are
complete again within 10 s (the issue's bound; the measured time is printed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog

from broker import BrokerConfig, BrokerServer
from broker.accesslog import AccessLogConfig
from producer_adapter import Adapter
from tests.conftest import NatsCluster
from tests.e2e.conftest import (
    PERSON,
    Federation,
    ProducerSpec,
    build_federation,
    record,
    until,
)
from tests.e2e.test_access_log_api import extract, extract_token

HEARTBEAT_S = 1.0
TIMEOUT_S = 2.0
"""A CONNECT to a node of a cluster that is re-electing hangs (NATS answers after 4 s with
an error): move on sooner."""
QOS = 0
"""NATS runs QoS 1 through JetStream, which stalls for seconds (and then redelivers) while
the cluster recovers from a lost node: docs/operations.md. samsvar needs no QoS 1."""
PRODUCERS = ("P-A", "P-B")
EXPECTED = {pid: {f"{pid}-{n}" for n in (1, 2)} for pid in PRODUCERS}


def _specs() -> list[ProducerSpec]:
    return [ProducerSpec(pid, records={PERSON: [
        record(pid, 1, when="2026-11-01T10:00:00+01:00"),
        record(pid, 2, when="2026-11-02T10:00:00+01:00")]}) for pid in PRODUCERS]


class _OnCluster:
    """What build_federation needs of an MQTT server: the broker's settings (node 1 first)."""

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster

    def settings(self, prefix: str) -> Any:
        return self.cluster.settings(prefix, 1)


async def _start(tmp_path: Path, cluster: NatsCluster) -> Federation:
    prefix = f"test/{uuid.uuid4().hex[:12]}/samsvar/v1"
    fed = build_federation(tmp_path, _OnCluster(cluster), prefix, _specs())  # type: ignore[arg-type]
    import aiohttp

    fed.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
    config = BrokerConfig(
        registry_path=tmp_path / "registry.toml", key_path=tmp_path / "broker.jwk",
        instance=f"b-{uuid.uuid4().hex[:6]}", port=0,
        mqtt=cluster.settings(prefix, 1, qos=QOS, timeout_s=TIMEOUT_S),
        access_log=AccessLogConfig(path=tmp_path / "access-log.db"))
    fed.broker = BrokerServer(config, registry=fed.registry, key=fed.keys["broker"])
    fed.tasks.append(asyncio.create_task(fed.broker.run(shutdown=fed.shutdown)))
    await asyncio.wait_for(fed.broker.started.wait(), 20)
    await asyncio.wait_for(fed.broker.bus.connected.wait(), 20)
    fed.url = f"http://127.0.0.1:{fed.broker.port}"
    for pid in PRODUCERS:
        for node, replica in ((2, "on-node-2"), (3, "on-node-3")):
            config_ = dataclasses.replace(
                fed.adapter_config(pid, replica=replica),
                mqtt=cluster.settings(prefix, node, heartbeat_s=HEARTBEAT_S, qos=QOS,
                                      timeout_s=TIMEOUT_S))
            adapter = Adapter(config_, fed.registry)
            stop = asyncio.Event()
            task = asyncio.create_task(adapter.run(shutdown=stop))
            fed.adapters.setdefault(pid, []).append((adapter, stop, task))
            await asyncio.wait_for(adapter.ready.wait(), 20)
        await fed.wait_presence(pid, timeout=20)
    return fed


async def _stop(fed: Federation) -> None:
    for pid in list(fed.adapters):
        await fed.stop_adapters(pid)
    fed.shutdown.set()
    for task in fed.tasks:
        await asyncio.wait_for(task, 20)
    if fed.http is not None:
        await fed.http.close()


def _check_honest(answer: dict[str, Any]) -> bool:
    """Assert the answer tells no lie; True if it is complete (every source ok)."""
    sources = {s["producer"]: s for s in answer["sources"]}
    assert set(sources) == set(PRODUCERS), answer
    got: dict[str, set[str]] = {pid: set() for pid in PRODUCERS}
    for r in answer["records"]:
        got[r["source"]["producer"]].add(r["id"])
    for pid, source in sources.items():
        assert source["status"] in ("ok", "timeout", "unavailable"), source
        if source["status"] == "ok":
            assert got[pid] == EXPECTED[pid], (pid, got[pid])
        else:
            assert not got[pid], (pid, got[pid])
    return all(s["status"] == "ok" for s in sources.values())


def _last_bad(answers: list[tuple[float, dict[str, Any]]], refused: list[float],
              since: float) -> float:
    """When the last incomplete answer (or refusal) after ``since`` came (else ``since``)."""
    bad = [t for t, a in list(answers) if t > since and not _check_honest(a)]
    bad += [t for t in refused if t > since]
    return max(bad, default=since)


# One rerun: recovery after the broker's node dies is NATS's JetStream re-election, which stalls
# new MQTT sessions in 4 s steps (0.02-8.6 s over 11 runs, once 10.14 s on a loaded machine);
# a rerun starts a new cluster and measures again, and both runs' times are printed.
@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("node", [1, 2], ids=["broker-node", "adapter-node"])
async def test_kill_a_node_under_load(tmp_path: Path, nats_cluster: NatsCluster,
                                      node: int) -> None:
    fed = await _start(tmp_path, nats_cluster)
    answers: list[tuple[float, dict[str, Any]]] = []
    refused: list[float] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            status, _, body = await fed.post(fed.token(deadline_ms=2500))
            if status == 200:
                answers.append((time.monotonic(), body))
            else:
                assert status == 503, body  # while the broker has no MQTT: honest
                refused.append(time.monotonic())
                await asyncio.sleep(0.05)

    with structlog.testing.capture_logs() as logs:
        try:
            workers = [asyncio.create_task(load()) for _ in range(4)]
            await until(lambda: len(answers) >= 5, "five answers before a node is killed",
                        timeout=30)
            assert answers and all(_check_honest(a) for _, a in answers[-5:]), answers[-1:]
            killed_at = time.monotonic()
            nats_cluster.nodes[node - 1].kill()
            # Until answers have been complete for 6 s in a row (longer than a question
            # lives), at most 40 s.
            async with asyncio.timeout(40):
                while time.monotonic() - _last_bad(answers, refused, killed_at) < 6:
                    await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*workers)
        finally:
            stop.set()
            try:
                recovered = {answer["query_id"] for _, answer in answers}
                status, extract_body = await extract(fed, extract_token(fed))
            finally:
                await _stop(fed)
    # Over every answer (those that came while the workers stopped too): the first of the
    # complete answers that followed the last incomplete one.
    last_bad = _last_bad(answers, refused, killed_at)
    complete_again = min(t for t, a in answers if t > last_bad)
    recovery = complete_again - killed_at
    print(f"\nnode {node} killed: answers complete again after {recovery:.2f} s "
          f"({len(answers)} answers, {len(refused)} refused while reconnecting)")
    seen: list[tuple[float, str]] = []
    for t, answer in sorted([*answers, *((r, None) for r in refused)], key=lambda x: x[0]):
        state = "503" if answer is None else ",".join(x["status"] for x in answer["sources"])
        if t > killed_at and (not seen or seen[-1][1] != state):
            seen.append((round(t - killed_at, 2), state))
    print("after the kill (s, statuses):", seen[:10])
    for _, answer in answers:
        _check_honest(answer)
    assert recovery < 10, recovery
    # No access-log entry is lost: every answer the consumer got is in the log.
    assert status == 200, extract_body
    logged = {entry["query_id"] for entry in extract_body["accesses"]}
    assert recovered <= logged, recovered - logged
    # Each question was answered (and its disclosure logged) by one replica only.
    answered = Counter((e["producer"], e["query_id"]) for e in logs
                       if e.get("event") == "question answered")
    assert answered and max(answered.values()) == 1, answered.most_common(3)


def test_the_demo_runs_on_the_cluster_with_the_flags_for_it(
        tmp_path: Path, nats_cluster: NatsCluster) -> None:
    """SPEC section 8: ``--mqtt`` with the cluster's nodes, ``--mqtt-protocol 3.1.1`` and
    ``--no-shared-subscriptions``: the sample query is answered by every demo producer."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "samsvar", "demo", "--json", "--workdir", str(tmp_path / "w"),
         "--mqtt", ",".join(nats_cluster.urls(2)), "--mqtt-protocol", "3.1.1",
         "--no-shared-subscriptions"], capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["complete"] is True, answer["sources"]
    assert {s["status"] for s in answer["sources"]} <= {"ok", "no_data"}
