"""Shared fixtures: a real MQTT server per test, keys, a registry.

``mqtt_server`` starts its own Mosquitto (``set_tcp_nodelay true``) on a free port. Under
``CI=true`` a missing ``mosquitto`` binary is a failure, never a skip; elsewhere the tests
fall back to the in-process amqtt server so a laptop without Mosquitto still runs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.transport import MqttSettings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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

    kind: str  # "mosquitto" or "amqtt"
    port: int
    process: subprocess.Popen[bytes] | None
    config_path: Path | None

    def settings(self, prefix: str) -> MqttSettings:
        if self.kind == "amqtt":
            return MqttSettings(port=self.port, prefix=prefix, protocol="3.1.1",
                                shared_subscriptions=False)
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
    yield server
    server.stop()


@pytest.fixture
async def mqtt_server(tmp_path: Path) -> AsyncIterator[MqttServer]:
    """Mosquitto when installed (always under CI=true), else the in-process amqtt server."""
    if mosquitto_available():
        server = start_mosquitto(tmp_path)
        yield server
        server.stop()
        return
    if IN_CI:
        pytest.fail("mosquitto is not installed, and CI=true forbids skipping MQTT tests")
    from amqtt.broker import Broker

    port = free_port()
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    yield MqttServer("amqtt", port, None, None)
    await broker.shutdown()
