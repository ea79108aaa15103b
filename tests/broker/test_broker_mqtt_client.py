"""The broker's MQTT bus (gmqtt, the one client) keeps the port's contract: TCP_NODELAY,
message expiry, more questions at once than the server's Receive Maximum, NotReady while
disconnected, reconnecting after the server restarts. ``[mqtt] client`` is gone: "gmqtt"
still loads, anything else is refused in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerConfig, BrokerServer
from broker.accesslog import AccessLogConfig
from broker.config import load_broker_config
from broker.errors import ConfigError, NotReady
from broker.mqtt import MqttBus
from schemas.topics import question_topic
from tests.conftest import MqttServer
from tests.e2e.conftest import ProducerSpec, build_federation
from transport.settings import MqttSettings


def test_the_old_client_key_loads_as_gmqtt_and_any_other_is_refused(tmp_path: Path) -> None:
    assert (MqttSettings.from_table({"client": "gmqtt"}, base=tmp_path)
            == MqttSettings.from_table({}, base=tmp_path))
    for other in ("aiomqtt", "paho"):
        with pytest.raises(ValueError, match="no longer supported: samsvar drives gmqtt only"):
            MqttSettings.from_table({"client": other}, base=tmp_path)
    config = tmp_path / "broker.toml"
    config.write_text('[broker]\nregistry = "r.toml"\nkey = "k.jwk"\n[mqtt]\nclient = "aiomqtt"\n')
    with pytest.raises(ConfigError, match=r"broker\.toml: \[mqtt\] client 'aiomqtt' is no"):
        load_broker_config(config)


def test_broker_uses_the_gmqtt_bus(tmp_path: Path) -> None:
    server = MqttServer("mosquitto", 1, None, None)  # never connected to
    fed = build_federation(tmp_path, server, "test/client", [ProducerSpec("P1")])
    config = BrokerConfig(registry_path=tmp_path / "registry.toml",
                          key_path=tmp_path / "broker.jwk", port=0,
                          mqtt=MqttSettings(port=1),
                          access_log=AccessLogConfig(path=tmp_path / "log.db"))
    assert type(BrokerServer(config, registry=fed.registry, key=fed.keys["broker"]).bus) is MqttBus


def test_missing_tls_files_are_a_config_error() -> None:
    settings = MqttSettings.from_url("mqtts://127.0.0.1:8883", ca="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="TLS"):
        MqttBus(settings, instance="b1", on_reply=lambda _: None,
                on_presence=lambda _p, _b: None)


async def test_gmqtt_bus_keeps_the_port_contract(mosquitto: MqttServer,
                                                 unique_prefix: str) -> None:
    settings = MqttSettings(port=mosquitto.port, prefix=unique_prefix)
    replies: list[bytes] = []
    disconnects: list[int] = []
    bus = MqttBus(settings, instance="b1", on_reply=replies.append,
                   on_presence=lambda _p, _b: None,
                   on_disconnect=lambda: disconnects.append(1))
    with pytest.raises(NotReady):
        await bus.publish_question("P1", b"q", expiry_s=5)
    shutdown = asyncio.Event()
    task = asyncio.create_task(bus.run(shutdown))
    try:
        await asyncio.wait_for(bus.connected.wait(), 10)
        # asyncio's transports set TCP_NODELAY themselves (paho's sockets need NODELAY).
        assert bus.transport is not None
        sock: Any = bus.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1

        async with aiomqtt.Client("127.0.0.1", mosquitto.port,
                                  identifier=f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=aiomqtt.ProtocolVersion.V5) as spy:
            await spy.subscribe(question_topic(unique_prefix, "+"), qos=1)
            await spy.publish(bus.reply_topic, b"a reply", qos=1)
            # 300 questions at once: far beyond Mosquitto's Receive Maximum of 20.
            n = 300
            await asyncio.wait_for(asyncio.gather(*(
                bus.publish_question(f"P{i}", f"q{i}".encode(), expiry_s=7)
                for i in range(n))), 10)
            got: dict[str, tuple[bytes, Any]] = {}
            async with asyncio.timeout(10):
                async for message in spy.messages:
                    got[message.topic.value] = (message.payload,
                                                message.properties)
                    if len(got) == n:
                        break
            assert got[question_topic(unique_prefix, "P7")][0] == b"q7"
            assert 0 < got[question_topic(unique_prefix, "P7")][1].MessageExpiryInterval <= 7
        async with asyncio.timeout(5):
            while not replies:
                await asyncio.sleep(0.01)
        assert replies == [b"a reply"]

        mosquitto.stop()
        async with asyncio.timeout(10):
            while bus.connected.is_set():
                await asyncio.sleep(0.01)
        assert disconnects == [1]
        with pytest.raises(NotReady):
            await bus.publish_question("P1", b"q", expiry_s=5)
        mosquitto.start()
        await asyncio.wait_for(bus.connected.wait(), 15)
    finally:
        shutdown.set()
        await asyncio.wait_for(task, 10)
    assert not bus.connected.is_set() and disconnects == [1, 1]


async def test_one_question_to_many_producers_in_one_call(mosquitto: MqttServer,
                                                          unique_prefix: str) -> None:
    """publish_questions reaches every producer, and none waits past its timeout: what the
    server cannot take in time (here: a frozen server, no PUBACK) comes back as failed."""
    settings = MqttSettings(port=mosquitto.port, prefix=unique_prefix)
    bus = MqttBus(settings, instance="b1", on_reply=lambda _: None,
                   on_presence=lambda _p, _b: None)
    producers = [f"P{i}" for i in range(100)]
    failed = await bus.publish_questions(producers, b"q", expiry_s=5, timeout_s=1)
    assert set(failed) == set(producers)  # not connected: nobody is reached
    assert all(isinstance(exc, NotReady) for exc in failed.values())
    shutdown = asyncio.Event()
    task = asyncio.create_task(bus.run(shutdown))
    try:
        await asyncio.wait_for(bus.connected.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port,
                                  identifier=f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=aiomqtt.ProtocolVersion.V5) as spy:
            await spy.subscribe(question_topic(unique_prefix, "+"), qos=1)
            assert await bus.publish_questions(producers, b"q", expiry_s=5, timeout_s=10) == {}
            got: list[str] = []
            async with asyncio.timeout(10):
                async for message in spy.messages:
                    got.append(message.topic.value)
                    if len(set(got)) == len(producers):
                        break
            with contextlib.suppress(TimeoutError):  # and no producer is asked twice
                async with asyncio.timeout(0.5):
                    async for message in spy.messages:
                        got.append(message.topic.value)
            assert sorted(got) == sorted(question_topic(unique_prefix, p) for p in producers)

            server = mosquitto.process
            assert server is not None
            server.send_signal(signal.SIGSTOP)  # no PUBACK comes any more
            try:
                loop = asyncio.get_running_loop()
                started = loop.time()
                failed = await bus.publish_questions(producers, b"q", expiry_s=5, timeout_s=0.5)
                waited = loop.time() - started
            finally:
                server.send_signal(signal.SIGCONT)
            assert 0.4 < waited < 5
            # The server's Receive Maximum (20) bounds what can be in flight unacknowledged.
            assert len(failed) >= len(producers) - 20
    finally:
        shutdown.set()
        await asyncio.wait_for(task, 10)
