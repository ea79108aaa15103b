"""Run one broker instance: HTTP API, MQTT bus and core, until told to stop.

:class:`BrokerServer` is where the parts are put together: it builds the core's ports (the
MQTT bus, the access log, the replay store) and gives them to the
:class:`~broker.service.QueryService`; the HTTP app's ``cleanup_ctx`` opens the log and the
store before the first request and closes them after the last.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final, Protocol

import msgspec
import structlog
from aiohttp import web

from schemas.accesslog import Checkpoint, CheckpointMessage, ConsistencyProof
from schemas.jose import PrivateKey, load_private_key
from schemas.registry import Registry, load_registry

from .accesslog import AccessLog, AccessLogError, open_access_log
from .config import BrokerConfig
from .errors import ConfigError, NotReady
from .http_api import METRICS, create_app
from .http_server import ProblemAppRunner
from .mqtt import MqttBus
from .replay import ReplayStore, ReplayStoreError, replay_store_for
from .service import QueryService

__all__ = ["BrokerServer", "BusFactory"]

log = structlog.get_logger("samsvar.broker")

_LINGERING_S = 2.0
_PROOFS_FROM: Final = 8
"""Each checkpoint published carries consistency proofs from this many published before."""
_SHUTDOWN_PUBLISH_S: Final = 5.0
"""How long a stopping broker waits for MQTT to take its last checkpoint."""


class BusFactory(Protocol):
    """Builds the broker's bus, handing what arrives to the three callbacks."""

    def __call__(self, *, on_reply: Callable[[bytes], None],
                 on_presence: Callable[[str, bytes], None],
                 on_disconnect: Callable[[], None]) -> MqttBus: ...


class BrokerServer:
    """One broker instance. ``started`` is set once it listens; ``port`` is the real port."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        registry: Registry | None = None,
        key: PrivateKey | None = None,
        make_bus: BusFactory | None = None,
    ) -> None:
        """``make_bus``: the bus, if not the MQTT client ``[mqtt] client`` names (the
        benchmark's HTTP fan-out peer gives its own)."""
        self.config = config
        self._checkpoint: tuple[Checkpoint, str] | None = None
        """The latest signed checkpoint and its token, to publish (again on reconnect)."""
        self._published_sizes: deque[int] = deque(maxlen=_PROOFS_FROM)
        """The sizes of the last checkpoints published: what the witnesses likely hold."""
        self._prepared: tuple[str, bytes] | None = None
        self._checkpoint_signed = asyncio.Event()
        self.published_checkpoint: bytes | None = None
        """The last checkpoint the MQTT server acknowledged."""
        if make_bus is None:
            self.bus = MqttBus(config.mqtt, instance=config.instance, on_reply=self._on_reply,
                               on_presence=self._on_presence,
                               on_disconnect=self._on_disconnect)
        else:
            self.bus = make_bus(on_reply=self._on_reply, on_presence=self._on_presence,
                                on_disconnect=self._on_disconnect)
        self.bus.on_connect = self._checkpoint_signed.set
        try:
            self.registry = registry or load_registry(config.registry_path)
            self.key = key or load_private_key(config.key_path)
            self.access_log: AccessLog = open_access_log(config.access_log, key=self.key,
                                                         instance=config.instance)
            self.replay: ReplayStore = replay_store_for(config.access_log)
            self.service = QueryService(config=config, registry=self.registry, key=self.key,
                                        bus=self.bus, access_log=self.access_log,
                                        replay=self.replay)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.access_log.on_checkpoint = self._on_checkpoint
        self.access_log.before_close = self._prepare_last_message
        self.app = create_app(self.service)
        self.app.cleanup_ctx.append(self._open_stores)
        self.metrics = self.app[METRICS]
        """This broker's Prometheus metrics, in a registry of their own."""
        self.started = asyncio.Event()
        self.port = config.port

    # What the bus hands over goes to the service, which is built after the bus (its port).

    def _on_reply(self, token: bytes) -> None:
        self.service.gatherer.on_reply(token)

    def _on_presence(self, producer_id: str, payload: bytes) -> None:
        self.service.on_presence(producer_id, payload)

    def _on_disconnect(self) -> None:
        self.service.on_disconnect()

    def _on_checkpoint(self, checkpoint: Checkpoint, token: str) -> None:
        self._checkpoint = (checkpoint, token)
        self._checkpoint_signed.set()

    async def _prepare_last_message(self) -> None:
        """While the log is still open at shutdown: the message of its last checkpoint."""
        if self._checkpoint is not None:
            token = self._checkpoint[1]
            self._prepared = (token, await self._message(*self._checkpoint))

    async def _message(self, checkpoint: Checkpoint, token: str) -> bytes:
        """The checkpoint with consistency proofs from the sizes published last (what the
        witnesses hold, also after a short outage of theirs) and from the last one stored
        before it."""
        if self._prepared is not None and self._prepared[0] == token:
            return self._prepared[1]
        proofs: dict[int, list[bytes]] = {}
        try:
            proofs = await self.access_log.consistency_to(checkpoint.seq,
                                                          list(self._published_sizes))
        except AccessLogError as exc:
            log.warning("checkpoint_proofs_failed", error=str(exc))
        return msgspec.json.encode(CheckpointMessage(checkpoint=token, consistency=[
            ConsistencyProof(from_size=m, path=[h.hex() for h in path])
            for m, path in sorted(proofs.items())]))

    async def _publish_checkpoint(self) -> None:
        """Publish the latest checkpoint retained, waiting for MQTT while it is down and
        trying again (with the latest one then) until the server has it."""
        while True:
            await self.bus.connected.wait()
            latest = self._checkpoint
            if latest is None:
                return
            try:
                async with asyncio.timeout(10):
                    await self.bus.publish_checkpoint(await self._message(*latest))
            except (NotReady, TimeoutError) as exc:
                log.warning("checkpoint_publish_failed", reason=str(exc) or type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            self.published_checkpoint = latest[1].encode("ascii")
            if latest[0].seq not in self._published_sizes:
                self._published_sizes.append(latest[0].seq)
            return

    async def _publish_checkpoints(self) -> None:
        """Publish each new checkpoint, and the latest again after each reconnect (a server
        restarted without persistence has lost its retained messages)."""
        while True:
            await self._checkpoint_signed.wait()
            self._checkpoint_signed.clear()
            try:
                await self._publish_checkpoint()
            except Exception:  # a client library's surprise: the next one retries
                log.exception("checkpoint_publish_failed")

    async def _open_stores(self, _app: web.Application) -> AsyncIterator[None]:
        """The app's ``cleanup_ctx``: the access log and the replay store open before the
        first request and close after the last, the log signing its shutdown checkpoint."""
        try:
            await self.access_log.open()
        except AccessLogError as exc:
            raise ConfigError(f"cannot open the access log: {exc}") from exc
        try:
            try:
                await self.replay.open()
            except ReplayStoreError as exc:
                raise ConfigError(f"cannot open the replay store: {exc}") from exc
            try:
                yield
            finally:
                await self.replay.close()
        finally:
            await self.access_log.close()

    async def run(self, *, shutdown: asyncio.Event | None = None) -> None:
        """Serve until ``shutdown`` is set (or the task is cancelled)."""
        shutdown = shutdown or asyncio.Event()
        if self.config.embedded_mqtt:
            log.warning("embedded_mqtt",
                        message="the in-process MQTT server (amqtt) is for a laptop demo only: "
                                "MQTT 3.1.1, no shared subscriptions, no TLS/ACLs. Never use it "
                                "in production; use Mosquitto or an MQTT cluster.")
        runner = ProblemAppRunner(
            self.app, access_log=None, handle_signals=False,
            # a request head must arrive this soon after a connection opens or its last
            # response, and an idle keep-alive connection closes then (broker.http_server)
            keepalive_timeout=self.config.http_idle_timeout_s,
            # after a refusal that leaves the body unread (408, 413), read and drop the
            # rest for at most this long before closing
            lingering_time=_LINGERING_S)
        await runner.setup()  # opens the stores (_open_stores)
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
            if runner.addresses:  # the real port when the config asked for port 0
                self.port = int(runner.addresses[0][1])
            log.info("broker_listening", url=f"http://{self.config.host}:{self.port}",
                     instance=self.config.instance, mqtt=self.config.mqtt.urls,
                     producers=len(self.registry.producers))
            self.started.set()
            # Drain before leaving MQTT: stop taking queries, let those in flight get their
            # producers' replies and their log entries, then disconnect.
            bus_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.bus.run(bus_stop), name="broker-mqtt")
                publisher = tg.create_task(self._publish_checkpoints(),
                                           name="broker-checkpoints")
                tg.create_task(self.service.watch_heartbeats(bus_stop), name="broker-heartbeats")
                try:
                    await shutdown.wait()
                    log.info("broker_draining", in_flight=self.service.in_flight)
                    # closes the stores: the checkpoint signed at shutdown goes out
                    # before MQTT does
                    await runner.cleanup()
                    publisher.cancel()
                    if (self._checkpoint is not None
                            and self._checkpoint[1].encode("ascii") != self.published_checkpoint):
                        try:
                            async with asyncio.timeout(_SHUTDOWN_PUBLISH_S):
                                await self._publish_checkpoint()
                        except TimeoutError:
                            log.warning("checkpoint_not_published",
                                        reason="MQTT did not take the shutdown checkpoint")
                finally:
                    publisher.cancel()
                    bus_stop.set()
        finally:
            await runner.cleanup()
            log.info("broker_stopped", instance=self.config.instance)
