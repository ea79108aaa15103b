"""MQTT security as deployed: a real Mosquitto with the config, ACL and certificates that
``samsvar registry mosquitto`` generates, real clients over TLS with client certificates.

* a producer cannot read another producer's questions (plain or ``$share``), cannot read a
  broker's replies and cannot publish questions or another producer's presence; with the
  dynamic-security plugin it cannot even subscribe, so it cannot take another producer's
  share of questions either (Mosquitto's ACL file never checks subscriptions);
* a client without a certificate, or with one from another CA, cannot connect at all; a
  certificate of the right CA whose CN the registry no longer lists can touch nothing;
* the whole query path works over ``mqtts://`` with client certificates.

Mosquitto is required: under ``CI=true`` a missing binary fails, elsewhere it skips.
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import json
import os
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import aiomqtt
import pytest

from broker import BrokerConfig, BrokerServer
from broker.accesslog import AccessLogConfig
from broker.errors import ConfigError
from broker.mqtt import MqttBus
from producer_adapter import Adapter
from samsvar.cli import main
from samsvar.mosquitto import (
    CertificateAuthority,
    MosquittoSetupError,
    acl_text,
    broker_cn,
    write_mosquitto_security,
)
from schemas.topics import presence_topic, question_topic, reply_topic, shared
from tests.conftest import (
    IN_CI,
    MqttServer,
    _wait_for_port,
    free_port,
    mosquitto_available,
)
from tests.e2e.conftest import (
    PERSON,
    Federation,
    ProducerSpec,
    build_federation,
    record,
)
from transport.settings import MqttSettings

pytestmark = pytest.mark.mosquitto

P1: Final = "P1"
P2: Final = "P2"
BROKERS: Final = ("b1", "b2")
POOL: Final = "pool"
"""A broker pool (``--broker-pool``): instances named at start share its certificate."""
LINGER: Final = 0.7
"""Seconds to wait for a message that must not come (after a positive control arrived)."""
BOTH: Final = pytest.mark.parametrize("secured", ["acl_file", "dynsec"], indirect=True)
"""Run the test against each way of authorising: the ACL file and the dynsec plugin."""


def dynsec_plugin() -> str | None:
    """Where this machine's Mosquitto keeps its dynamic-security plugin, if it has one."""
    candidates = [*sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")),
                  "/usr/lib/mosquitto_dynamic_security.so",
                  "/usr/local/lib/mosquitto_dynamic_security.so"]
    return next((c for c in candidates if os.path.exists(c)), None)


@dataclass
class Secured:
    """A federation behind a TLS Mosquitto that enforces the generated ACL."""

    fed: Federation
    server: MqttServer
    tls_dir: Path
    port: int
    mode: str
    """``acl_file`` or ``dynsec``."""

    def settings(self, cn: str) -> MqttSettings:
        """TLS settings for the client whose certificate has this CN, from an mqtts:// URL."""
        folder, name = (("brokers", cn.removeprefix("broker:")) if cn.startswith("broker:")
                        else ("producers", cn))
        return MqttSettings.from_url(
            f"mqtts://127.0.0.1:{self.port}", prefix=self.fed.prefix,
            ca=str(self.tls_dir / "ca.pem"), cert=str(self.tls_dir / folder / f"{name}.pem"),
            key=str(self.tls_dir / folder / f"{name}.key"),
        )

    @asynccontextmanager
    async def client(self, cn: str, *subscriptions: str) -> AsyncIterator[aiomqtt.Client]:
        async with connect(self.settings(cn)) as c:
            for topic in subscriptions:
                await c.subscribe(topic, qos=1)
            yield c


def connect(settings: MqttSettings, *, tls: Any = None, timeout: float = 5) -> aiomqtt.Client:
    return aiomqtt.Client(
        settings.host, settings.port, identifier=f"test-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=tls if tls is not None else settings.ssl_context(), timeout=timeout,
    )


def start_secured_mosquitto(conf: Path, port: int, log: Path) -> MqttServer:
    extra = "log_type all\n"
    if os.geteuid() == 0:  # else Mosquitto drops to user "mosquitto", who cannot read tmp_path
        extra += "user root\n"
    conf.write_text(conf.read_text(encoding="utf-8") + extra, encoding="utf-8")
    with log.open("wb") as out:
        process = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=out,
                                   stderr=subprocess.STDOUT)
    server = MqttServer("mosquitto", port, process, conf)
    try:
        _wait_for_port(port)
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(f"mosquitto did not start:\n{log.read_text(errors='replace')}") from exc
    return server


@pytest.fixture
def require_mosquitto() -> None:
    if not mosquitto_available():
        if IN_CI:
            pytest.fail("mosquitto is not installed, and CI=true forbids skipping MQTT tests")
        pytest.skip("mosquitto is not installed")


@pytest.fixture
def secured(request: pytest.FixtureRequest, require_mosquitto: None, tmp_path: Path,
            unique_prefix: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Secured]:
    """Registry → ``samsvar registry mosquitto --make-ca`` → a running TLS Mosquitto,
    authorised by the ACL file (the default) or, parametrized, the dynsec plugin."""
    mode: str = getattr(request, "param", "acl_file")
    authz: list[str] = []
    if mode == "dynsec":
        plugin = dynsec_plugin()
        if plugin is None:
            message = "Mosquitto's dynamic-security plugin is not installed"
            if IN_CI:
                pytest.fail(f"{message}, and CI=true forbids skipping MQTT tests")
            pytest.skip(message)
        authz = ["--dynsec", plugin]
    port = free_port()
    stub = MqttServer("mosquitto", port, None, None)
    fed = build_federation(tmp_path, stub, unique_prefix, [
        ProducerSpec(P1, records={PERSON: [record(P1, 1, when="2024-03-01T10:00:00+01:00")]}),
        ProducerSpec(P2),
    ])
    tls_dir = tmp_path / "mqtt"
    assert main(["registry", "mosquitto", str(tmp_path / "registry.toml"), "--out", str(tls_dir),
                 "--make-ca", "--port", str(port), "--bind", "127.0.0.1",
                 "--prefix", unique_prefix, "--brokers", ",".join(BROKERS),
                 "--broker-pool", POOL, *authz]) == 0
    printed = capsys.readouterr().out
    assert "broker:b1" in printed and f"broker:{POOL}" in printed and P1 in printed
    server = start_secured_mosquitto(tls_dir / "mosquitto.conf", port, tmp_path / "mosquitto.log")
    fed.server = server
    try:
        yield Secured(fed, server, tls_dir, port, mode)
    finally:
        server.stop()


async def received(c: aiomqtt.Client, *, count: int, linger: float = LINGER,
                   step: float = 5.0) -> list[tuple[str, bytes]]:
    """``count`` messages (or fail), then whatever else arrives within ``linger``."""
    got: list[tuple[str, bytes]] = []

    async def read(until: int | None) -> None:
        async for message in c.messages:
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, message.payload))
            if until is not None and len(got) >= until:
                return

    if count:
        async with asyncio.timeout(step):
            await read(count)
    try:
        async with asyncio.timeout(linger):
            await read(None)
    except TimeoutError:
        pass
    return got


# -- what the generator writes ----------------------------------------------------------------


def test_generated_config_acl_and_key_modes(secured: Secured) -> None:
    conf = (secured.tls_dir / "mosquitto.conf").read_text()
    for line in ("require_certificate true", "use_identity_as_username true",
                 "set_tcp_nodelay true", "allow_anonymous false",
                 f"cafile {secured.tls_dir / 'ca.pem'}", f"acl_file {secured.tls_dir / 'acl'}",
                 f"listener {secured.port} 127.0.0.1"):
        assert line in conf.splitlines(), line
    acl = (secured.tls_dir / "acl").read_text().splitlines()
    p = secured.fed.prefix
    assert acl[acl.index(f"user {P1}") + 1:acl.index(f"user {P1}") + 5] == [
        f"topic read {p}/q/{P1}", f"topic read $share/{P1}/{p}/q/{P1}",
        f"topic write {p}/r/+", f"topic readwrite {p}/presence/{P1}"]
    assert acl[acl.index("user broker:b1") + 1:acl.index("user broker:b1") + 4] == [
        f"topic write {p}/q/+", f"topic read {p}/r/b1", f"topic read {p}/presence/+"]
    at = acl.index(f"user broker:{POOL}")
    assert acl[at + 1:at + 4] == [
        f"topic write {p}/q/+", f"topic read {p}/r/+", f"topic read {p}/presence/+"]
    keys = [secured.tls_dir / "ca.key", secured.tls_dir / "server.key",
            *secured.tls_dir.glob("producers/*.key"), *secured.tls_dir.glob("brokers/*.key")]
    assert len(keys) == 2 + 2 + len(BROKERS) + 1
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


@pytest.mark.parametrize("secured", ["dynsec"], indirect=True)
def test_generated_dynsec_config(secured: Secured) -> None:
    conf = (secured.tls_dir / "mosquitto.conf").read_text().splitlines()
    assert not [line for line in conf if line.startswith("acl_file")]
    assert f"plugin_opt_config_file {secured.tls_dir / 'dynamic-security.json'}" in conf
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    dynsec = json.loads((secured.tls_dir / "dynamic-security.json").read_text())
    assert dynsec["defaultACLAccess"] == {"publishClientSend": False,
                                          "publishClientReceive": False,
                                          "subscribe": False, "unsubscribe": True}
    assert [c["username"] for c in dynsec["clients"]] == ["broker:b1", "broker:b2",
                                                          f"broker:{POOL}", P1, P2]
    assert not (secured.tls_dir / "acl").exists()


def test_rerun_keeps_certificates_and_follows_the_registry(tmp_path: Path,
                                                           unique_prefix: str) -> None:
    stub = MqttServer("mosquitto", 1, None, None)
    fed = build_federation(tmp_path, stub, unique_prefix, [ProducerSpec(P1)])
    out = tmp_path / "mqtt"
    first = write_mosquitto_security(fed.registry, out, make_ca=True, brokers=["b1"])
    assert sorted(first.issued) == sorted(["localhost", "broker:b1", P1])
    again = write_mosquitto_security(fed.registry, out, make_ca=True, brokers=["b1", "b2"])
    assert again.issued == ["broker:b2"]  # the CA and every valid certificate are kept
    ca = CertificateAuthority.load(out / "ca.pem", out / "ca.key")
    issued_elsewhere = tmp_path / "other"
    elsewhere = write_mosquitto_security(fed.registry, issued_elsewhere, ca=ca, brokers=["b1"])
    assert (issued_elsewhere / "ca.pem").read_bytes() == (out / "ca.pem").read_bytes()
    assert not (issued_elsewhere / "ca.key").exists()
    assert sorted(elsewhere.issued) == sorted(["localhost", "broker:b1", P1])
    assert [line for line in acl_text(fed.registry, brokers=["b1"]).splitlines()
            if line.startswith("user ")] == ["user broker:b1", f"user {P1}"]
    with pytest.raises(MosquittoSetupError, match="wildcards"):
        acl_text(fed.registry, prefix="samsvar/#")
    with pytest.raises(MosquittoSetupError, match="instance"):
        acl_text(fed.registry, brokers=["b/1"])
    with pytest.raises(MosquittoSetupError, match="both a broker instance and a pool"):
        acl_text(fed.registry, brokers=["b1"], pools=["b1"])
    with pytest.raises(MosquittoSetupError, match="pool"):
        acl_text(fed.registry, brokers=[], pools=["k8s/pods"])
    with pytest.raises(MosquittoSetupError, match="at least one"):
        acl_text(fed.registry, brokers=[])


def test_a_pool_alone_needs_no_instance_names(tmp_path: Path, unique_prefix: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``--broker-pool`` without ``--brokers``: one certificate for the pool, no
    ``broker-1`` beside it (what the Kubernetes deployment uses)."""
    stub = MqttServer("mosquitto", 1, None, None)
    build_federation(tmp_path, stub, unique_prefix, [ProducerSpec(P1)])
    out = tmp_path / "mqtt"
    assert main(["registry", "mosquitto", str(tmp_path / "registry.toml"), "--out", str(out),
                 "--make-ca", "--broker-pool", "samsvar-broker"]) == 0
    assert "0 broker instance(s), 1 broker pool(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "brokers").iterdir()) == [
        "samsvar-broker.key", "samsvar-broker.pem"]
    assert [line for line in (out / "acl").read_text().splitlines()
            if line.startswith("user ")] == ["user broker:samsvar-broker", f"user {P1}"]


def test_broker_cn_cannot_be_a_producer_id() -> None:
    from schemas.registry import _ID  # the registry's own rule for ids

    assert not _ID.match(broker_cn("b1"))


def test_missing_tls_files_are_a_config_error() -> None:
    settings = MqttSettings.from_url("mqtts://127.0.0.1:8883", ca="/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="TLS"):
        MqttBus(settings, instance="b1", on_reply=lambda _: None,
                on_presence=lambda _p, _b: None)


# -- what a producer may not do -----------------------------------------------------------------


@BOTH
async def test_producer_cannot_read_another_producers_questions(secured: Secured) -> None:
    p = secured.fed.prefix
    other_q = question_topic(p, P2)
    async with secured.client(P1, other_q, shared(P1, other_q), f"{p}/q/+", f"{p}/#") as snoop, \
            secured.client(P2, shared(P2, other_q)) as victim, \
            secured.client("broker:b1") as broker:
        await broker.publish(other_q, b"question for P2", qos=1)
        assert await received(victim, count=1) == [(other_q, b"question for P2")]
        assert await received(snoop, count=0) == []


@BOTH
async def test_producer_cannot_join_another_producers_share_group(secured: Secured) -> None:
    """Joining ``$share/{other}/...`` never discloses a question. With dynsec the
    subscription itself is refused and the other producer gets every question; Mosquitto's
    ACL file grants it, and then drops the questions whose turn falls to the intruder
    (a denial of service that docs/security.md describes), so only dynsec asserts delivery."""
    p = secured.fed.prefix
    q2 = question_topic(p, P2)
    async with secured.client(P2, shared(P2, q2)) as victim, secured.client(P1) as intruder, \
            secured.client("broker:b1") as broker:
        granted = await intruder.subscribe(shared(P2, q2), qos=1)
        questions = [f"question {i}".encode() for i in range(4)]
        for question in questions:
            await broker.publish(q2, question, qos=1)
        if secured.mode == "dynsec":
            assert [code.is_failure for code in granted] == [True]  # type: ignore[union-attr]
            assert [m for _, m in await received(victim, count=len(questions))] == questions
        assert await received(intruder, count=0) == []


@BOTH
async def test_producer_cannot_read_the_brokers_replies(secured: Secured) -> None:
    p = secured.fed.prefix
    replies = reply_topic(p, "b1")
    async with secured.client(P1, replies, f"{p}/r/+", f"{p}/r/#") as snoop, \
            secured.client("broker:b2", replies) as other_instance, \
            secured.client("broker:b1", replies) as broker, \
            secured.client(P2) as producer:
        await producer.publish(replies, b"reply from P2", qos=1)
        assert await received(broker, count=1) == [(replies, b"reply from P2")]
        assert await received(snoop, count=0) == []
        assert await received(other_instance, count=0) == []


@BOTH
async def test_a_pool_member_reads_its_own_replies_under_any_name(secured: Secured) -> None:
    """Two pods under the pool's certificate, with names nobody listed: each subscribes to
    its own reply topic and gets its replies, and the pool may ask a producer. A named
    instance still reads only its own replies."""
    p = secured.fed.prefix
    pod_a, pod_b = reply_topic(p, "samsvar-broker-7f9c4-xk2lp"), reply_topic(p, "pod-b")
    async with secured.client(f"broker:{POOL}", pod_a) as a, \
            secured.client(f"broker:{POOL}", pod_b) as b, \
            secured.client("broker:b1", pod_a) as named, \
            secured.client(P1, question_topic(p, P1)) as producer:
        await producer.publish(pod_a, b"reply to a", qos=1)
        await producer.publish(pod_b, b"reply to b", qos=1)
        assert await received(a, count=1) == [(pod_a, b"reply to a")]
        assert await received(b, count=1) == [(pod_b, b"reply to b")]
        assert await received(named, count=0) == []
        await a.publish(question_topic(p, P1), b"a question", qos=1)
        assert await received(producer, count=1) == [(question_topic(p, P1), b"a question")]


@BOTH
async def test_producer_cannot_publish_questions_or_anothers_presence(secured: Secured) -> None:
    p = secured.fed.prefix
    q2, q1 = question_topic(p, P2), question_topic(p, P1)
    async with secured.client(P2, q2) as victim, secured.client(P1, q1) as forger, \
            secured.client("broker:b1", presence_topic(p, "+")) as broker:
        await forger.publish(q2, b"forged question", qos=1)
        await forger.publish(q1, b"forged question to itself", qos=1)
        await forger.publish(presence_topic(p, P2), b'{"producer":"P2","online":false}', qos=1)
        await victim.publish(presence_topic(p, P2), b'{"producer":"P2","online":true}', qos=1)
        await broker.publish(q2, b"real question", qos=1)
        assert await received(victim, count=1) == [(q2, b"real question")]
        assert await received(forger, count=0) == []
        assert await received(broker, count=1) == [
            (presence_topic(p, P2), b'{"producer":"P2","online":true}')]


# -- who may connect at all ------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["no-certificate", "plain-tcp", "foreign-ca"])
async def test_client_without_a_valid_certificate_cannot_connect(secured: Secured, tmp_path: Path,
                                                                 client: str) -> None:
    settings = secured.settings(P1)
    if client == "no-certificate":
        settings = dataclasses.replace(settings, cert=None, key=None)
        tls = settings.ssl_context()
    elif client == "plain-tcp":
        settings = dataclasses.replace(settings, tls=False)
        tls = None
    else:  # a certificate with the right CN, from a CA the server does not trust
        foreign = write_mosquitto_security(secured.fed.registry, tmp_path / "foreign",
                                           make_ca=True, brokers=["b1"])
        cert, key = foreign.clients[P1]
        settings = dataclasses.replace(settings, cert=str(cert), key=str(key))
        tls = settings.ssl_context()
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(settings.host, settings.port, tls_context=tls, timeout=2,
                                  protocol=aiomqtt.ProtocolVersion.V5,
                                  identifier=f"test-{uuid.uuid4().hex[:8]}") as c:
            await c.subscribe(f"{secured.fed.prefix}/#", qos=1)
            await c.publish(question_topic(secured.fed.prefix, P2), b"x", qos=1)


@BOTH
async def test_certificate_unknown_to_the_registry_touches_nothing(secured: Secured) -> None:
    """Removing a producer from the registry and regenerating the ACL revokes it: its
    certificate still connects but may read and write nothing."""
    ca = CertificateAuthority.load(secured.tls_dir / "ca.pem", secured.tls_dir / "ca.key")
    gone = secured.tls_dir / "producers"
    cert, key = ca.issue("SE0000000000-GONE")
    from cryptography.hazmat.primitives import serialization

    (gone / "SE0000000000-GONE.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (gone / "SE0000000000-GONE.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    p = secured.fed.prefix
    async with secured.client("SE0000000000-GONE", f"{p}/#") as stranger, \
            secured.client(P1, question_topic(p, P1)) as producer, \
            secured.client("broker:b1", reply_topic(p, "b1")) as broker:
        await stranger.publish(reply_topic(p, "b1"), b"from nobody", qos=1)
        await broker.publish(question_topic(p, P1), b"question", qos=1)
        assert await received(producer, count=1) == [(question_topic(p, P1), b"question")]
        assert await received(stranger, count=0) == []
        assert await received(broker, count=0) == []


# -- the whole path over TLS -----------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(("instance", "cn"), [
    ("b1", "broker:b1"),
    ("samsvar-broker-7f9c4-xk2lp", f"broker:{POOL}"),  # a pod, named at start
], ids=["named-instance", "pool-member"])
async def test_query_is_answered_over_tls_with_client_certificates(
        secured: Secured, instance: str, cn: str) -> None:
    fed = secured.fed
    shutdown = asyncio.Event()
    config = BrokerConfig(
        registry_path=fed.tmp / "registry.toml", key_path=fed.tmp / "broker.jwk",
        instance=instance, port=0, mqtt=secured.settings(cn),
        access_log=AccessLogConfig(path=fed.tmp / "access-log.db"),
    )
    assert config.mqtt.tls and config.mqtt.url.startswith("mqtts://")
    broker = BrokerServer(config, registry=fed.registry, key=fed.keys["broker"])
    fed.broker = broker
    broker_task = asyncio.create_task(broker.run(shutdown=shutdown))
    adapters: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    witnesses: list[Adapter] = []
    try:
        await asyncio.wait_for(broker.started.wait(), 10)
        await asyncio.wait_for(broker.bus.connected.wait(), 10)
        fed.url = f"http://127.0.0.1:{broker.port}"
        for pid in (P1, P2):
            cfg = dataclasses.replace(fed.adapter_config(pid),
                                      mqtt=secured.settings(pid))
            adapter = Adapter(cfg, fed.registry)
            witnesses.append(adapter)
            stop = asyncio.Event()
            adapters.append((stop, asyncio.create_task(adapter.run(shutdown=stop))))
            await asyncio.wait_for(adapter.ready.wait(), 10)
            await fed.wait_presence(pid)
        async with aiohttp.ClientSession() as http:
            fed.http = http
            answer = await fed.ask(types=["medication"])
        fed.http = None
        assert answer["complete"] is True
        assert {s["producer"]: s["status"] for s in answer["sources"]} == {P1: "ok", P2: "no_data"}
        assert [r["id"] for r in answer["records"]] == [f"{P1}-1"]
        # The ACLs let the broker publish its checkpoint and every producer witness it.
        async with asyncio.timeout(10):
            while not all(a.witness is not None and instance in a.witness.latest
                          for a in witnesses):
                await asyncio.sleep(0.05)
    finally:
        for stop, task in adapters:
            stop.set()
            await asyncio.wait_for(task, 10)
        shutdown.set()
        await asyncio.wait_for(broker_task, 10)
