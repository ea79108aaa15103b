"""Beyond one machine: several broker processes and several adapter replicas on one Mosquitto.

* Two ``samsvar broker`` processes (their own instance id, reply topic and port) share one
  PostgreSQL access log. Queries are spread over both, one is SIGKILLed mid-load, the other
  keeps answering, every answer a client received has its entry, and the one chain verifies.
* Two ``samsvar adapter`` processes of one producer share its questions through a
  ``$share`` subscription. One is SIGKILLed mid-loop; the survivor answers what comes after
  (only the questions in flight at the dead one may be lost) and keeps the producer online.

Needs a real Mosquitto (shared subscriptions, last wills) and, for the first, PostgreSQL at
127.0.0.1:5432 (database ``test``; ``SAMSVAR_TEST_PG_DSN`` names another). Under
``CI=true`` either missing is a failure; elsewhere the test is skipped.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from producer_adapter import DisclosureLogError, SqliteDisclosureLog
from tests.conftest import MqttServer, PgSchema, free_port
from tests.e2e.conftest import (
    PERSON,
    Federation,
    ProducerSpec,
    federations,
    record,
)
from tests.e2e.processes import SAMSVAR, start_broker, wait_ready

pytestmark = pytest.mark.mosquitto

_TIMEOUT = aiohttp.ClientTimeout(total=30)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
async def federation(tmp_path: Path, mosquitto: MqttServer,
                     unique_prefix: str) -> AsyncIterator[Any]:
    """Builds a federation on the real Mosquitto; stops whatever in-process part it ran."""
    async with federations(tmp_path, mosquitto, unique_prefix, timeout=_TIMEOUT) as make:
        yield make


# -- helpers -------------------------------------------------------------------------------


def _mqtt_table(fed: Federation) -> list[str]:
    s = fed.server.settings(fed.prefix)
    return ["[mqtt]", f'url = "{s.url}"', f'prefix = "{s.prefix}"', f'protocol = "{s.protocol}"',
            f"shared_subscriptions = {'true' if s.shared_subscriptions else 'false'}",
            ""]


def write_pg_broker_config(fed: Federation, *, instance: str, port: int, dsn: str,
                           schema: str) -> Path:
    """``<tmp>/<instance>/broker.toml``: this instance's id and port, the shared log."""
    directory = fed.tmp / instance
    directory.mkdir()
    path = directory / "broker.toml"
    path.write_text("\n".join([
        "[broker]", 'registry = "../registry.toml"', 'key = "../broker.jwk"',
        f'instance = "{instance}"', f'listen = "127.0.0.1:{port}"', "default_deadline_ms = 3000",
        "", *_mqtt_table(fed),
        "[access_log]", 'kind = "postgresql"', f'dsn = "{dsn}"', f'schema = "{schema}"',
        "checkpoint_interval_s = 0.5", "",
    ]), encoding="utf-8")
    return path


def write_adapter_config(fed: Federation, producer: str, *, replica: str) -> Path:
    """``<tmp>/<replica>/adapter.toml``: one replica with its own disclosure log, reading the
    producer's one block register (replicas must never disagree about a person's blocks)."""
    directory = fed.tmp / replica
    directory.mkdir()
    key = fed.tmp / f"{producer}.jwk"
    if not key.exists():
        key.write_bytes(msgspec.json.encode(fed.keys[producer].to_jwk()))
        key.chmod(0o600)
    path = directory / "adapter.toml"
    path.write_text("\n".join([
        "[adapter]", f'producer = "{producer}"', 'registry = "../registry.toml"',
        f'key = "../{producer}.jwk"', f'replica = "{replica}"', "",
        *_mqtt_table(fed),
        "[backend]", 'kind = "json_dir"', f'path = "../data/{producer}"', "",
        "[blocks]", 'kind = "sqlite"', f'path = "../{producer}-blocks.db"', "",
        "[disclosure_log]", 'path = "disclosures.db"', "",
    ]), encoding="utf-8")
    return path


def start_adapter(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([*SAMSVAR, "adapter", "--config", str(config)],
                                stdout=sink, stderr=sink)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM and a clean exit, or SIGKILL if it hangs (then the test fails)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"did not stop on SIGTERM:\n{log.read_text()}") from None
    assert code == 0, log.read_text()


def samsvar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SAMSVAR, *args], check=False, capture_output=True, text=True,
                          timeout=60)


async def post(fed: Federation, url: str, **claims: Any) -> tuple[int, Any]:
    assert fed.http is not None
    async with fed.http.post(f"{url}/v1/queries", data=fed.token(**claims).encode(),
                             headers={"Content-Type": "application/jwt"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def wait_for_log_line(log: Path, text: str, proc: subprocess.Popen[bytes],
                            timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while text not in log.read_text(encoding="utf-8", errors="replace"):
            assert proc.poll() is None, log.read_text()
            await asyncio.sleep(0.05)


# -- several broker instances ----------------------------------------------------------------


@dataclass
class _Load:
    """What the clients saw: answers by instance, and errors by instance."""

    answered: dict[str, str] = field(default_factory=dict)  # query_id -> instance
    after_kill: int = 0
    errors: dict[str, list[str]] = field(default_factory=dict)
    killed: str | None = None


async def test_two_broker_processes_share_one_verifiable_log(
    federation: Any, pg_schema: PgSchema,
) -> None:
    fed: Federation = await federation([
        ProducerSpec("P1", records={PERSON: [record("P1", 1, when="2026-11-01T10:00:00+01:00")]}),
        ProducerSpec("P2", records={PERSON: [record("P2", 1, when="2026-11-02T10:00:00+01:00")]}),
    ])
    for pid in fed.producers:
        await fed.start_adapter(pid)
    instances = {"broker-a": free_port(), "broker-b": free_port()}
    configs = {name: write_pg_broker_config(fed, instance=name, port=port, dsn=pg_schema.dsn,
                                            schema=pg_schema.name)
               for name, port in instances.items()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in instances.items()}
    logs = {name: fed.tmp / f"{name}.log" for name in instances}
    procs = {name: start_broker(configs[name], logs[name]) for name in instances}
    victim, survivor = "broker-a", "broker-b"
    load = _Load()
    try:
        await asyncio.gather(*(wait_ready(urls[n], procs[n], logs[n]) for n in instances))
        order = list(instances)
        turn = iter(range(10**9))
        done = asyncio.Event()

        async def client() -> None:
            """Round-robin over the instances; a refused connection drops the killed one."""
            while not done.is_set():
                live = [n for n in order if n != load.killed]
                name = live[next(turn) % len(live)]
                try:
                    status, body = await post(fed, urls[name])
                except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                    if name != load.killed:
                        load.errors.setdefault(name, []).append(f"{type(exc).__name__}: {exc}")
                    continue
                if status != 200:
                    load.errors.setdefault(name, []).append(f"{status}: {body}")
                    continue
                assert body["complete"], body
                load.answered[body["query_id"]] = name
                if load.killed and name == survivor:
                    load.after_kill += 1

        def count(name: str) -> int:
            return sum(1 for n in load.answered.values() if n == name)

        async with asyncio.timeout(90):
            clients = [asyncio.create_task(client(), name=f"client-{i}") for i in range(8)]
            while min(count(n) for n in instances) < 40:
                await asyncio.sleep(0.02)
            load.killed = victim
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(10)
            while load.after_kill < 80:
                await asyncio.sleep(0.02)
            done.set()
            await asyncio.gather(*clients)
        assert not load.errors.get(survivor), load.errors[survivor][:5]
        # Any instance answers any query, before the kill and after it.
        assert count(victim) >= 40 and count(survivor) >= 40 + 80
        async with fed.http.get(f"{urls[survivor]}/readyz") as resp:  # type: ignore[union-attr]
            assert resp.status == 200, await resp.text()
    finally:
        for name, proc in procs.items():
            if proc.poll() is None and name == victim:
                proc.kill()
                proc.wait()
        stop(procs[survivor], logs[survivor])  # its shutdown checkpoint seals the chain

    verify = samsvar("log", "verify", "--config", str(configs[victim]))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout, verify.stdout
    extracts = []
    for name in instances:  # either instance's config reads the same, single log
        extract = samsvar("log", "extract", "--config", str(configs[name]), "--subject", PERSON,
                          "--json")
        assert extract.returncode == 0, extract.stderr
        extracts.append(json.loads(extract.stdout)["accesses"])
    assert extracts[0] == extracts[1]
    logged = {a["query_id"]: a["instance"] for a in extracts[0] if a["outcome"] == "answered"}
    missing = [q for q in load.answered if q not in logged]
    assert not missing, f"{len(missing)} answers a client received have no log entry"
    # each entry names the instance that answered, and both instances wrote into the one chain
    assert all(logged[q] == name for q, name in load.answered.items())
    assert set(logged.values()) == set(instances)


async def test_a_token_accepted_by_one_instance_is_replayed_at_the_other(
    federation: Any, pg_schema: PgSchema,
) -> None:
    """The seen ``jti``s live beside the shared PostgreSQL log: a captured token is accepted
    once by the whole deployment, not once per instance."""
    fed: Federation = await federation([
        ProducerSpec("P1", records={PERSON: [record("P1", 1, when="2026-11-01T10:00:00+01:00")]}),
    ])
    await fed.start_adapter("P1")
    instances = {"broker-a": free_port(), "broker-b": free_port()}
    configs = {name: write_pg_broker_config(fed, instance=name, port=port, dsn=pg_schema.dsn,
                                            schema=pg_schema.name)
               for name, port in instances.items()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in instances.items()}
    logs = {name: fed.tmp / f"{name}.log" for name in instances}
    procs = {name: start_broker(configs[name], logs[name]) for name in instances}
    assert fed.http is not None
    try:
        await asyncio.gather(*(wait_ready(urls[n], procs[n], logs[n]) for n in instances))
        token = fed.token().encode()
        headers = {"Content-Type": "application/jwt"}
        async with fed.http.post(f"{urls['broker-a']}/v1/queries", data=token,
                                 headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        for url in (urls["broker-b"], urls["broker-a"]):
            async with fed.http.post(f"{url}/v1/queries", data=token, headers=headers) as resp:
                body = await resp.json(content_type=None)
                assert resp.status == 401, body
                assert body["type"] == "urn:samsvar:problem:replayed", body
        # a fresh token is still welcome at the other instance
        async with fed.http.post(f"{urls['broker-b']}/v1/queries",
                                 data=fed.token().encode(), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
    finally:
        for name in instances:
            stop(procs[name], logs[name])


# -- several adapter replicas -----------------------------------------------------------------


async def test_adapter_replica_dies_and_the_survivor_answers(federation: Any) -> None:
    fed: Federation = await federation([
        ProducerSpec("P1", records={PERSON: [record("P1", 1, when="2026-11-01T10:00:00+01:00")]}),
    ])
    broker = await fed.start_broker(default_deadline_ms=2000)
    replicas = ("replica-1", "replica-2")
    configs = {r: write_adapter_config(fed, "P1", replica=r) for r in replicas}
    init = samsvar("adapter", "block", "init", "--config", str(configs[replicas[0]]))
    assert init.returncode == 0, init.stdout + init.stderr
    logs = {r: fed.tmp / f"{r}.log" for r in replicas}
    procs = {r: start_adapter(configs[r], logs[r]) for r in replicas}
    victim, survivor = replicas
    try:
        for r in replicas:
            await wait_for_log_line(logs[r], "mqtt connected", procs[r])
        await fed.wait_presence("P1", online=True)

        statuses: list[tuple[float, str]] = []  # (start, wall clock; P1's status) per query
        done = asyncio.Event()

        async def client() -> None:
            while not done.is_set():
                started = time.time()
                status, body = await post(fed, fed.url)
                assert status == 200, body
                statuses.append((started, body["sources"][0]["status"]))

        async with asyncio.timeout(60):
            clients = [asyncio.create_task(client(), name=f"client-{i}") for i in range(4)]
            # Both replicas take questions from the shared subscription.
            while min(_disclosures(configs[r]) for r in replicas) < 10:
                await asyncio.sleep(0.05)
            killed_at = time.time()
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(10)
            while sum(1 for t, _ in statuses if t > killed_at) < 100:
                await asyncio.sleep(0.02)
            done.set()
            await asyncio.gather(*clients)

        # The dead replica's last will said offline, and the survivor at once said online
        # again: the broker saw the producer offline for a moment at most.
        presence = broker.service.presence.get("P1")
        assert presence is not None and presence.online
        settled = max(killed_at, presence.changed_at)
        assert settled - killed_at < 1.0, "the survivor did not re-announce the producer"
        # Every question asked once the producer was back online was answered by the survivor.
        after = [s for t, s in statuses if t > settled]
        assert len(after) >= 50 and set(after) == {"ok"}, sorted(set(after))
        assert _disclosures(configs[survivor]) >= 50
        # Lost: questions in flight at the kill (the dead replica's own, and the waits the
        # broker ended when the will said offline) and those asked in the offline moment.
        lost = [(t, s) for t, s in statuses if s != "ok"]
        assert {s for _, s in lost} <= {"timeout", "unavailable"}, lost
        assert all(killed_at - 2.5 < t <= settled for t, _ in lost), (killed_at, settled, lost)
    finally:
        for r in replicas:
            if r == victim and procs[r].poll() is None:
                procs[r].kill()
                procs[r].wait()
        stop(procs[survivor], logs[survivor])
    # The survivor's clean stop says offline: nobody is left to answer.
    await fed.wait_presence("P1", online=False)


def _disclosures(config: Path) -> int:
    """How many questions a replica answered, from its own disclosure log."""
    try:
        return len(SqliteDisclosureLog(config.parent / "disclosures.db").entries())
    except DisclosureLogError:  # not created yet
        return 0
