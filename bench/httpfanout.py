"""The incumbent design as a peer (issue 21): the same job, fanned out as one HTTP call per
producer instead of one MQTT message.

    python -m bench.httpfanout producers SPEC.json
    python -m bench.httpfanout peer --config BROKER.toml --ports PORTS.json

Today's national aggregating platform asks each producer over its own HTTP (SOAP)
endpoint. Here that design does exactly samsvar's job, with everything but the fan-out
shared, so that the comparison measures the design and not two implementations:

* ``producers``: one process hosting a group of producers (the same group spec as
  :mod:`bench.producers`), each a real :class:`producer_adapter.Adapter` (question
  verified, stage 1 of the law, records read, reply signed:
  :meth:`~producer_adapter.Adapter.answer`) behind its own HTTP endpoint (aiohttp, one
  port per producer, keep-alive):
  ``POST /question`` with the signed question answers ``200`` with the signed reply, or
  ``204`` when the question is refused. Prints ``ready {"producer id": port, ...}``.
* ``peer``: samsvar's own broker (:class:`broker.BrokerServer`: the HTTP API, the query
  JWT, the law, the gathering, reply verification, the merge, the same kind of access
  log) with :class:`HttpBus` in place of MQTT behind the :class:`~broker.ports.QuestionBus`
  port: each question is POSTed to each asked producer at once, over keep-alive
  connections (one per call in flight, reused), and each reply goes to the same
  ``Gatherer.on_reply`` an MQTT reply goes to. There is no presence (every endpoint is
  taken to be up) and no witness: the access log's checkpoints are signed and stored,
  and published nowhere.

The peer's HTTP client is the load generator's lean HTTP/1.1 client
(:class:`bench.loadgen._Client`), not aiohttp's, which costs about three times the CPU
per request (bench/loadgen.py): the peer gets the cheaper of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec
import structlog
from aiohttp import web

from schemas.messages import Presence
from schemas.topics import reply_topic

from .loadgen import HTTPError, _Client, _Stale

if TYPE_CHECKING:
    from broker import BrokerServer

    from .running import Bench

__all__ = ["LABEL", "HttpBus", "Peer", "main", "make_peer", "start", "start_producers"]

LABEL: Final = "HTTP fan-out"
"""The peer's name in the report."""
PATH: Final = "/question"

log = structlog.get_logger("samsvar.bench.httpfanout")


# -- the producers' side --------------------------------------------------------------------

async def start_producers(spec_path: Path) -> tuple[list[web.AppRunner], dict[str, int]]:
    """Each producer of the group spec behind its own endpoint on a free port: the runners
    (to clean up) and each producer's port."""
    from producer_adapter import Adapter, AdapterConfig, InMemoryBlockSource
    from schemas.jose import load_private_key
    from schemas.registry import load_registry
    from transport.settings import MqttSettings

    from .backend import InMemoryBackend

    spec = json.loads(spec_path.read_text(encoding="utf-8"))  # noqa: ASYNC240 - once, at start
    registry = load_registry(spec["registry"])
    mqtt = MqttSettings(port=spec["mqtt_port"], prefix=spec["prefix"])  # unused: no link
    runners: list[web.AppRunner] = []
    ports: dict[str, int] = {}

    def endpoint(adapter: Adapter) -> web.Application:
        async def question(request: web.Request) -> web.Response:
            out = await adapter.answer(await request.read())
            if out is None:  # refused, a duplicate, or past its deadline: logged by the adapter
                return web.Response(status=204)
            return web.Response(body=out.token.encode("ascii"),
                                content_type="application/jose")

        app = web.Application()
        app.router.add_post(PATH, question)
        return app

    try:
        for p in spec["producers"]:
            config = AdapterConfig(producer=p["id"], key=load_private_key(p["key"]), mqtt=mqtt,
                                   replica=f"http-{p['id'][-3:]}", base=spec_path.parent,
                                   max_concurrent=64)
            adapter = Adapter(config, registry,
                              backend=InMemoryBackend(p["id"], pad=spec["pad"]),
                              blocks=InMemoryBlockSource())
            runner = web.AppRunner(endpoint(adapter), access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            ports[p["id"]] = int(runner.addresses[0][1])
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        raise
    return runners, ports


async def serve_producers(spec_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runners, ports = await start_producers(spec_path)
    try:
        print("ready " + json.dumps(ports), flush=True)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


# -- the peer broker's side -------------------------------------------------------------------

class HttpBus:
    """The :class:`~broker.ports.QuestionBus` of the HTTP fan-out: one POST per producer."""

    def __init__(self, ports: dict[str, int], *, prefix: str, instance: str,
                 on_reply: Callable[[bytes], None],
                 on_presence: Callable[[str, bytes], None]) -> None:
        self.connected = asyncio.Event()
        self.reply_topic = reply_topic(prefix, instance)
        """Named in the question as the broker signs it; the reply comes back in the
        HTTP response instead."""
        self._clients = {pid: _Client(f"http://127.0.0.1:{port}", PATH)
                         for pid, port in ports.items()}
        self._on_reply = on_reply
        self._on_presence = on_presence
        self._calls: set[asyncio.Task[None]] = set()
        self.failures = 0
        self.on_connect: Callable[[], None] = lambda: None
        """Called once the bus is up (the broker then publishes its latest checkpoint)."""

    async def run(self, shutdown: asyncio.Event) -> None:
        now = int(time.time() * 1000)
        for pid in self._clients:
            self._on_presence(pid, msgspec.json.encode(Presence(producer=pid, online=True,
                                                                since=now)))
        self.connected.set()
        self.on_connect()
        try:
            await shutdown.wait()
        finally:
            self.connected.clear()
            for task in list(self._calls):
                task.cancel()
            await asyncio.gather(*self._calls, return_exceptions=True)
            for client in self._clients.values():
                client.close()

    async def publish_question(self, producer_id: str, token: bytes, *, expiry_s: int) -> None:
        self._call(producer_id, token)

    async def publish_checkpoint(self, token: bytes) -> None:
        """The incumbent design has no witnesses to publish the access log's checkpoints
        to: they are signed and stored as samsvar's are, and go nowhere."""

    async def publish_questions(self, producer_ids: Sequence[str], token: bytes, *,
                                expiry_s: int, timeout_s: float) -> dict[str, Exception]:
        for pid in producer_ids:
            self._call(pid, token)
        return {}

    def _call(self, producer_id: str, token: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._ask(producer_id, token))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _ask(self, producer_id: str, token: bytes) -> None:
        client = self._clients[producer_id]
        request = client.post(token)
        for _ in range(3):  # a keep-alive connection the producer closed while idle: again
            conn = client.idle.pop() if client.idle else await client.connect()
            try:
                status, body = await conn.request(request)
            except _Stale:
                continue
            except (OSError, HTTPError) as exc:
                self.failures += 1
                log.warning("producer_call_failed", producer=producer_id, error=str(exc))
                return
            finally:
                if conn.open:
                    client.idle.append(conn)
            if status == 200:
                self._on_reply(body)
            return


def make_peer(config_path: Path, ports: dict[str, int]) -> BrokerServer:
    """samsvar's broker from its config, with :class:`HttpBus` as its question bus."""
    from broker import BrokerServer, load_broker_config

    config = load_broker_config(config_path)

    def make_bus(*, on_reply: Callable[[bytes], None],
                 on_presence: Callable[[str, bytes], None],
                 on_disconnect: Callable[[], None]) -> HttpBus:
        # no connection to lose: on_disconnect is never called
        return HttpBus(ports, prefix=config.mqtt.prefix, instance=config.instance,
                       on_reply=on_reply, on_presence=on_presence)

    return BrokerServer(config, make_bus=make_bus)  # type: ignore[arg-type]  # HTTP, not MQTT


async def serve_peer(config_path: Path, ports_path: Path, shutdown: asyncio.Event) -> None:
    ports = json.loads(ports_path.read_text(encoding="utf-8"))  # noqa: ASYNC240 - once, at start
    await make_peer(config_path, ports).run(shutdown=shutdown)


# -- started by ``python -m bench`` --------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """The running peer: its URL, its broker process, and its producers' processes."""

    url: str
    pid: int
    producer_pids: list[int]


def start(b: Bench, groups: int) -> Peer:
    """Start the HTTP producers (``groups`` processes) and the peer broker; wait until every
    producer is online at the peer."""
    from ._procs import PYTHON, free_port

    fed = b.fed
    assert fed is not None
    procs = []
    for g in range(groups):
        spec = fed.group_spec(g, groups)
        procs.append(b.procs.start(f"http-producers-{g}",
                                   [PYTHON, "-m", "bench.httpfanout", "producers", str(spec)],
                                   stdout=subprocess.PIPE))
    ports: dict[str, int] = {}
    for proc in procs:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline().decode(errors="replace") if ready else ""
        if not line.startswith("ready "):
            b.procs.check_alive()
            raise RuntimeError(f"HTTP producers not ready: {line[:200]!r}")
        ports.update(json.loads(line.removeprefix("ready ")))
    ports_path = fed.root / "httpfanout-ports.json"
    ports_path.write_text(json.dumps(ports), encoding="utf-8")
    port = free_port()
    config = fed.broker_config("httpfanout", port=port)
    peer = b.procs.start("httpfanout-peer", [PYTHON, "-m", "bench.httpfanout", "peer",
                                             "--config", str(config), "--ports", str(ports_path)],
                         grace=8)
    url = f"http://127.0.0.1:{port}"
    b.wait_online(120, url=url)
    return Peer(url, peer.pid, [p.pid for p in procs])


def main(argv: list[str] | None = None) -> int:
    from samsvar.cli import event_loop_factory

    p = argparse.ArgumentParser(prog="python -m bench.httpfanout")
    sub = p.add_subparsers(dest="what", required=True)
    pr = sub.add_parser("producers", help="a group of producers behind HTTP endpoints")
    pr.add_argument("spec")
    pe = sub.add_parser("peer", help="the broker, fanning out over HTTP")
    pe.add_argument("--config", required=True)
    pe.add_argument("--ports", required=True)
    args = p.parse_args(argv)
    if args.what == "producers":
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
                            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
                            cache_logger_on_first_use=True)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve_producers(Path(args.spec)))
        return 0
    from samsvar.logs import configure_logging

    configure_logging("json", level="warning", final=True)  # as `samsvar broker` in the bench

    async def peer() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown.set)
        await serve_peer(Path(args.config), Path(args.ports), shutdown)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(peer())
    return 0


if __name__ == "__main__":
    sys.exit(main())
