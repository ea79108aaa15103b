"""Shared fixtures: a real MQTT server per test, keys, a registry, PostgreSQL.

``mqtt_server`` starts its own Mosquitto (``set_tcp_nodelay true``) on a free port. Under
``CI=true`` a missing ``mosquitto`` binary is a failure, never a skip; elsewhere the tests
fall back to the in-process amqtt server so a laptop without Mosquitto still runs them, and
the report's header line ``mqtt server: ...`` says which one the run used.

``pg_dsn`` is the ``test`` database at 127.0.0.1:5432 (``SAMSVAR_TEST_PG_DSN`` names
another); ``pg_schema`` and :func:`fresh_pg_schema` give a test a schema of its own,
dropped afterwards. Under ``CI=true`` an unreachable PostgreSQL fails the tests that need
it; elsewhere they are skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import pytest

from transport.settings import MqttSettings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_CANDIDATES = (
    [os.environ["SAMSVAR_TEST_PG_DSN"]] if os.environ.get("SAMSVAR_TEST_PG_DSN") else
    ["postgresql://postgres@127.0.0.1:5432/test", "postgresql://root@127.0.0.1:5432/test"]
)

REPO_ROOT: Final = Path(__file__).resolve().parents[1]


def reference_dir() -> Path | None:
    """``../shared/reference`` beside the repository (the repo is ``.../main``), if present."""
    candidate = REPO_ROOT.parent / "shared" / "reference"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def reference() -> Path:
    """The shared reference data (Skatteverket's test personnummer and the rest): a fresh
    clone does not have it beside it, so a missing folder skips, and fails under CI=true."""
    found = reference_dir()
    if found is None:
        message = f"shared reference data not found at {REPO_ROOT.parent / 'shared/reference'}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class MqttServer:
    """A running MQTT server and the settings a role needs to reach it."""

    kind: str  # "mosquitto", "amqtt" or "external" (SAMSVAR_TEST_MQTT)
    port: int
    process: subprocess.Popen[bytes] | None
    config_path: Path | None

    def settings(self, prefix: str) -> MqttSettings:
        """Any role's settings for this server."""
        if self.kind == "external":
            return MqttSettings.from_url(
                EXTERNAL_MQTT, prefix=prefix, protocol="3.1.1", shared_subscriptions=False,
                heartbeat_s=1.0)
        if self.kind == "amqtt":
            return MqttSettings(port=self.port, prefix=prefix,
                                protocol="3.1.1", shared_subscriptions=False)
        return MqttSettings(port=self.port, prefix=prefix)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def start(self) -> None:
        """(Re)start the same server on the same port."""
        assert self.kind == "mosquitto" and self.config_path is not None
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)


def start_mosquitto(tmp: Path, *, extra: str = "") -> MqttServer:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "set_tcp_nodelay true\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        f"{extra}"
    )
    server = MqttServer("mosquitto", port, None, conf)
    server.start()
    return server


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None


@pytest.fixture
def unique_prefix() -> str:
    return f"test/{uuid.uuid4().hex[:12]}/samsvar/v1"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MqttServer]:
    """A real Mosquitto; fails under CI=true when the binary is missing."""
    if not mosquitto_available():
        if IN_CI:
            pytest.fail("mosquitto is not installed, and CI=true forbids skipping MQTT tests")
        pytest.skip("mosquitto is not installed")
    server = start_mosquitto(tmp_path)
    try:
        yield server
    finally:
        server.stop()


EXTERNAL_MQTT = os.environ.get("SAMSVAR_TEST_MQTT", "")
"""An MQTT 3.1.1 server (or cluster: URLs comma-separated) without shared subscriptions for
``mqtt_server``, e.g. RabbitMQ's MQTT plugin (docs/operations.md); tests that start, stop or
configure Mosquitto themselves still do."""


MQTT_SERVER_KINDS: Final = {
    "mosquitto": "Mosquitto",
    "amqtt": "the embedded amqtt server (mosquitto is not installed)",
    "external": "the external server SAMSVAR_TEST_MQTT names",
}


def mqtt_server_kind() -> str:
    """Which server ``mqtt_server`` gives this run: the same for every test of the run."""
    if EXTERNAL_MQTT:
        return "external"
    if mosquitto_available():
        return "mosquitto"
    return "amqtt"


def pytest_report_header() -> str:
    """The run's first lines name the MQTT server the end-to-end tests ran on."""
    kind = mqtt_server_kind()
    where = {"mosquitto": shutil.which("mosquitto"), "external": EXTERNAL_MQTT}.get(kind)
    return f"mqtt server: {MQTT_SERVER_KINDS[kind]}" + (f" ({where})" if where else "")


def require_mosquitto(server: MqttServer, why: str) -> None:
    """For a test that needs Mosquitto itself (to stop it, or for what the embedded server
    lacks): skipped, saying why, on any other server; under CI=true a failure."""
    if server.kind != "mosquitto":
        if IN_CI:
            pytest.fail(f"CI=true needs Mosquitto here ({why}), not {server.kind}")
        pytest.skip(f"needs Mosquitto, not {MQTT_SERVER_KINDS[server.kind]}: {why}")


_USED_MQTT_SERVERS = pytest.StashKey[dict[str, int]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Also under ``-q``: how many tests ran on which MQTT server."""
    used = config.stash.get(_USED_MQTT_SERVERS, {})
    if used:
        terminalreporter.write_line("mqtt server: " + ", ".join(
            f"{MQTT_SERVER_KINDS[kind]} for {n} test(s)" for kind, n in sorted(used.items())))


@pytest.fixture
async def mqtt_server(tmp_path: Path, request: pytest.FixtureRequest,
                      ) -> AsyncIterator[MqttServer]:
    """Mosquitto when installed (always under CI=true), else the in-process amqtt server;
    the server ``SAMSVAR_TEST_MQTT`` names, if set. The report header says which, and each
    test that used it carries the kind as its ``mqtt_server`` user property (JUnit XML)."""
    kind = mqtt_server_kind()
    if kind == "amqtt" and IN_CI:
        pytest.fail("mosquitto is not installed, and CI=true forbids running the end-to-end "
                    "tests on the embedded amqtt server")
    request.node.user_properties.append(("mqtt_server", kind))
    used = request.config.stash.setdefault(_USED_MQTT_SERVERS, {})
    used[kind] = used.get(kind, 0) + 1
    if kind == "external":
        first = MqttSettings.from_url(EXTERNAL_MQTT)
        yield MqttServer("external", first.port, None, None)
        return
    if kind == "mosquitto":
        server = start_mosquitto(tmp_path)
        try:
            yield server
        finally:
            server.stop()
        return
    from amqtt.broker import Broker

    port = free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
    )
    await broker.start()
    try:
        yield MqttServer("amqtt", port, None, None)
    finally:
        await broker.shutdown()


# -- PostgreSQL ----------------------------------------------------------------------------


async def _first_reachable(candidates: Sequence[str]) -> tuple[str | None, str]:
    errors = []
    for dsn in candidates:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            errors.append(f"{dsn}: {type(exc).__name__}: {exc}")
            continue
        await conn.close()
        return dsn, ""
    return None, "; ".join(errors)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A reachable PostgreSQL; fails under CI=true when there is none, else skips."""
    # A thread of its own: the fixture may be requested from inside a running loop.
    with ThreadPoolExecutor(1) as pool:
        dsn, why = pool.submit(asyncio.run, _first_reachable(PG_CANDIDATES)).result()
    if dsn is None:
        message = f"PostgreSQL is not reachable ({why})"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true forbids skipping PostgreSQL tests")
        pytest.skip(message)
    return dsn


@asynccontextmanager
async def fresh_pg_schema(dsn: str, prefix: str, *, create: bool = False) -> AsyncIterator[str]:
    """A schema name of its own (``prefix`` and 12 hex digits), dropped with all in it on
    exit; ``create`` makes it up front, else what is tested is left to make it."""
    schema = f"{prefix}{uuid.uuid4().hex[:12]}"
    if create:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


class PgSchema(NamedTuple):
    """A reachable PostgreSQL and a fresh schema in it."""

    dsn: str
    name: str


@pytest.fixture
async def pg_schema(pg_dsn: str, request: pytest.FixtureRequest) -> AsyncIterator[PgSchema]:
    """A fresh schema, created up front and dropped after the test (named after its module)."""
    module = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    async with fresh_pg_schema(pg_dsn, f"t_{module}_", create=True) as schema:
        yield PgSchema(pg_dsn, schema)


# -- a NATS cluster ------------------------------------------------------------------------


@dataclass
class NatsNode:
    """One nats-server of a cluster, with JetStream and an MQTT listener on loopback."""

    name: str
    config: Path
    mqtt_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(["nats-server", "-c", str(self.config)],
                                            stdout=sink, stderr=sink)

    def kill(self) -> None:
        """kill -9: the node vanishes without a goodbye (no wills are published by NATS)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class NatsCluster:
    """Three nats-server nodes routed into one cluster (Debian's nats-server, MQTT 3.1.1)."""

    nodes: list[NatsNode]

    def urls(self, *first: int) -> list[str]:
        """Every node's MQTT URL, those numbered ``first`` (1-based) first."""
        order = [*(n - 1 for n in first), *(i for i in range(len(self.nodes))
                                           if i + 1 not in first)]
        return [self.nodes[i].url for i in order]

    def settings(self, prefix: str, *first: int, **overrides: object) -> MqttSettings:
        """A role's settings on this cluster, starting at the nodes ``first``."""
        return MqttSettings.from_url(
            self.urls(*first), prefix=prefix, protocol="3.1.1", shared_subscriptions=False,
            **overrides)


def nats_available() -> bool:
    return shutil.which("nats-server") is not None


def _mqtt_ready(port: int, timeout: float = 30.0) -> None:
    """Until the node's MQTT listener accepts a session (JetStream has its streams)."""
    connect = (b"\x10\x14\x00\x04MQTT\x04\x02\x00\x0a\x00\x08" + b"probe-" +
               uuid.uuid4().hex[:2].encode())
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(connect)
                if sock.recv(4)[:1] == b"\x20":
                    sock.sendall(b"\xe0\x00")
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the NATS MQTT listener on {port} never accepted a session")


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A real 3-node NATS cluster (JetStream, routes and MQTT on loopback free ports);
    fails under CI=true when nats-server is missing, else skips."""
    if not nats_available():
        if IN_CI:
            pytest.fail("nats-server is not installed, and CI=true forbids skipping")
        pytest.skip("nats-server is not installed")
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = ", ".join(f"nats-route://127.0.0.1:{route}" for _, route, _ in ports)
    nodes = []
    for i, (client, route, mqtt) in enumerate(ports, start=1):
        store = tmp_path / f"nats-{i}"
        store.mkdir()
        config = tmp_path / f"nats-{i}.conf"
        config.write_text(
            f"server_name: n{i}\n"
            f"listen: 127.0.0.1:{client}\n"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f"cluster {{ name: samsvar-test, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{mqtt} }}\n")
        nodes.append(NatsNode(f"n{i}", config, mqtt, tmp_path / f"nats-{i}.log"))
    for node in nodes:
        node.start()
    try:
        for node in nodes:
            _mqtt_ready(node.mqtt_port)
        yield NatsCluster(nodes)
    finally:
        for node in nodes:
            node.stop()
