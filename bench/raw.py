"""The raw baseline: the same scatter-gather over the same Mosquitto, with nothing else.

One question of the size of a real signed question goes out to N topics
(``{prefix}/q/{i}``); N responder connections each answer with one reply of the size of a
real signed reply, on one reply topic; the requester waits for all N. QoS 1 and MQTT 5 both
ways, as the broker and the adapters use them. No HTTP, no JSON, no signatures, no log.

    python -m bench.raw respond --lib aiomqtt|gmqtt|paho --port P --prefix X --n N ...
    python -m bench.raw request --lib aiomqtt|gmqtt|paho --port P --prefix X --n N \
        --concurrency C --warmup S --seconds S [--count K]

``respond`` hosts N responder connections in one process and prints ``ready`` once all are
subscribed; ``request`` prints one JSON object like :mod:`bench.loadgen`'s. ``paho`` is
paho-mqtt driven by hand from one ``selectors`` loop (no threads, no asyncio), i.e. what
aiomqtt wraps.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ._procs import ProcessGroups

__all__ = ["main"]

_ID = 16  # bytes of request id at the start of every payload


def _payload(rid: bytes, size: int) -> bytes:
    return rid + b"x" * max(0, size - _ID)


def _rid(n: int) -> bytes:
    return f"{n:016d}".encode()


class _Gather:
    """Counts replies per request; calls ``done(rid, seconds)`` when all N are in."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pending: dict[bytes, list[Any]] = {}

    def start(self, rid: bytes, on_done: Callable[[float], None]) -> None:
        self.pending[rid] = [self.n, time.perf_counter(), on_done]

    def reply(self, payload: bytes) -> None:
        entry = self.pending.get(bytes(payload[:_ID]))
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self.pending[bytes(payload[:_ID])]
            entry[2](time.perf_counter() - entry[1])


# -- asyncio drivers (aiomqtt, gmqtt) -----------------------------------------------------

async def _drive(args: argparse.Namespace, send: Callable[[bytes], Any], gather: _Gather,
                 ) -> dict[str, Any]:
    """Concurrency loops of send → all replies, a warm-up, then the measured window."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    counter = [0]
    state = {"measuring": False, "stop_at": loop.time() + args.warmup, "left": 10**9}

    async def one() -> None:
        counter[0] += 1
        rid = _rid(counter[0])
        fut: asyncio.Future[float] = loop.create_future()
        def finish(seconds: float) -> None:
            if not fut.done():
                fut.set_result(seconds)

        gather.start(rid, finish)
        sent = send(rid)
        if asyncio.iscoroutine(sent) or isinstance(sent, asyncio.Future):
            await sent
        seconds = await fut
        if state["measuring"]:
            latencies.append(seconds * 1000)

    async def worker() -> None:
        while loop.time() < state["stop_at"] and state["left"] > 0:
            state["left"] -= 1
            await asyncio.wait_for(one(), 30)

    async def phase() -> float:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(args.concurrency):
                tg.create_task(worker())
        return time.perf_counter() - started

    await phase()
    state.update(measuring=True, stop_at=loop.time() + args.seconds, left=args.count)
    others = ProcessGroups(args.process)
    cpu, others0 = time.process_time(), others.cpu()
    elapsed = await phase()
    return {"latencies_ms": latencies, "elapsed_s": elapsed, "concurrency": args.concurrency,
            "cpu_s": time.process_time() - cpu,
            "processes_cpu_s": others.since(others0, others.cpu())}


def _topics(args: argparse.Namespace) -> tuple[list[str], str]:
    return [f"{args.prefix}/q/{i}" for i in range(args.n)], f"{args.prefix}/r/requester"


def _nodelay(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """TCP_NODELAY on the client socket (paho, and so aiomqtt, leave Nagle on)."""
    return [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)] if args.nodelay else []


async def _aiomqtt_respond(args: argparse.Namespace, stop: asyncio.Event) -> None:
    import aiomqtt

    topics, reply_topic = _topics(args)

    async def responder(i: int, ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", args.port, identifier=f"raw-a-{args.prefix}-{i}",
                                  protocol=aiomqtt.ProtocolVersion.V5, keepalive=60,
                                  socket_options=_nodelay(args)) as client:
            await client.subscribe(topics[i], qos=1)
            ready.set()
            async with asyncio.TaskGroup() as tg:
                async for message in client.messages:
                    payload = _payload(bytes(message.payload[:_ID]), args.reply_bytes)  # type: ignore[index,unused-ignore]
                    tg.create_task(client.publish(reply_topic, payload, qos=1))

    readies = [asyncio.Event() for _ in range(args.n)]
    tasks = []
    for i in range(args.n):
        tasks.append(asyncio.create_task(responder(i, readies[i])))
        await asyncio.sleep(0.002)
    await asyncio.gather(*(r.wait() for r in readies))
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _aiomqtt_request(args: argparse.Namespace) -> dict[str, Any]:
    import aiomqtt

    topics, reply_topic = _topics(args)
    gather = _Gather(args.n)
    async with aiomqtt.Client("127.0.0.1", args.port, identifier=f"raw-a-{args.prefix}-req",
                              protocol=aiomqtt.ProtocolVersion.V5, keepalive=60,
                              max_inflight_messages=1000,
                              socket_options=_nodelay(args)) as client:
        await client.subscribe(reply_topic, qos=1)

        async def read() -> None:
            async for message in client.messages:
                gather.reply(message.payload)  # type: ignore[arg-type,unused-ignore]

        reader = asyncio.create_task(read())

        async def send(rid: bytes) -> None:
            q = _payload(rid, args.question_bytes)
            await asyncio.gather(*(client.publish(t, q, qos=1) for t in topics))

        try:
            return await _drive(args, send, gather)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def _gmqtt_connect(client_id: str, port: int) -> Any:
    from gmqtt import Client  # type: ignore[import-untyped]  # gmqtt ships no type hints

    client = Client(client_id)
    await client.connect("127.0.0.1", port, keepalive=60)
    return client


async def _gmqtt_subscribe(client: Any, topic: str) -> None:
    loop = asyncio.get_running_loop()
    acked = loop.create_future()
    def on_subscribe(*_: Any) -> None:
        if not acked.done():
            acked.set_result(None)

    client.on_subscribe = on_subscribe
    client.subscribe(topic, qos=1)
    await asyncio.wait_for(acked, 10)


async def _gmqtt_publish(client: Any, topic: str, payload: bytes) -> None:
    """gmqtt raises when the server's Receive Maximum (Mosquitto's max_inflight_messages)
    is used up; wait."""
    while True:
        try:
            client.publish(topic, payload, qos=1)
            return
        except OverflowError:
            await asyncio.sleep(0)


async def _gmqtt_respond(args: argparse.Namespace, stop: asyncio.Event) -> None:
    topics, reply_topic = _topics(args)
    clients = []
    background: set[asyncio.Future[None]] = set()
    for i in range(args.n):
        client = await _gmqtt_connect(f"raw-g-{args.prefix}-{i}", args.port)

        def on_message(c: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
            reply = _payload(payload[:_ID], args.reply_bytes)
            try:
                c.publish(reply_topic, reply, qos=1)
            except OverflowError:
                background.add(t := asyncio.ensure_future(_gmqtt_publish(c, reply_topic, reply)))
                t.add_done_callback(background.discard)
            return 0

        client.on_message = on_message
        await _gmqtt_subscribe(client, topics[i])
        clients.append(client)
    print("ready", flush=True)
    await stop.wait()
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)


async def _gmqtt_request(args: argparse.Namespace) -> dict[str, Any]:
    topics, reply_topic = _topics(args)
    gather = _Gather(args.n)
    client = await _gmqtt_connect(f"raw-g-{args.prefix}-req", args.port)

    def on_message(c: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        gather.reply(payload)
        return 0

    client.on_message = on_message
    await _gmqtt_subscribe(client, reply_topic)

    async def send(rid: bytes) -> None:
        q = _payload(rid, args.question_bytes)
        for t in topics:
            try:
                client.publish(t, q, qos=1)
            except OverflowError:
                await _gmqtt_publish(client, t, q)

    try:
        return await _drive(args, send, gather)
    finally:
        await client.disconnect()


# -- paho-mqtt by hand ------------------------------------------------------------------

class _PahoLoop:
    """Many paho clients on one selector: read when readable, write when they want to."""

    def __init__(self, *, nodelay: bool) -> None:
        self.nodelay = nodelay
        self.sel = selectors.DefaultSelector()
        self.clients: list[Any] = []
        self._misc = time.monotonic()

    def add(self, client_id: str, port: int, on_message: Callable[[Any, bytes], None],
            subscribe: str) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,  # type: ignore[attr-defined]
                             client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        subscribed: list[bool] = []
        client.on_message = lambda c, u, msg: on_message(c, bytes(msg.payload))
        client.on_subscribe = lambda *a: subscribed.append(True)
        client.connect("127.0.0.1", port, keepalive=60)
        sock = client.socket()
        assert isinstance(sock, socket.socket)  # plain TCP: no TLS, no websockets
        if self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(subscribe, qos=1)
        self.sel.register(sock, selectors.EVENT_READ, client)
        self.clients.append(client)
        end = time.monotonic() + 10
        while not subscribed:
            if time.monotonic() > end:
                raise RuntimeError("paho: no SUBACK")
            self.once(0.01)
        return client

    def once(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            key.data.loop_read(100)
        for c in self.clients:
            if c.want_write():
                c.loop_write()
        now = time.monotonic()
        if now - self._misc > 1.0:
            self._misc = now
            for c in self.clients:
                c.loop_misc()


def _paho_respond(args: argparse.Namespace) -> None:
    topics, reply_topic = _topics(args)
    loop = _PahoLoop(nodelay=args.nodelay)
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(True))

    def on_message(c: Any, payload: bytes) -> None:
        c.publish(reply_topic, _payload(payload[:_ID], args.reply_bytes), qos=1)

    for i in range(args.n):
        loop.add(f"raw-p-{args.prefix}-{i}", args.port, on_message, topics[i])
    print("ready", flush=True)
    while not stop:
        loop.once(0.5)
    for c in loop.clients:
        c.disconnect()


def _paho_request(args: argparse.Namespace) -> dict[str, Any]:
    topics, reply_topic = _topics(args)
    loop = _PahoLoop(nodelay=args.nodelay)
    gather = _Gather(args.n)
    latencies: list[float] = []
    state: dict[str, Any] = {"measuring": False, "counter": 0, "outstanding": 0, "left": 10**9,
                             "stop_at": 0.0}
    client = loop.add(f"raw-p-{args.prefix}-req", args.port, lambda c, p: gather.reply(p),
                      reply_topic)

    def start() -> None:
        if time.monotonic() >= state["stop_at"] or state["left"] <= 0:
            return
        state["left"] -= 1
        state["counter"] += 1
        state["outstanding"] += 1
        rid = _rid(state["counter"])
        gather.start(rid, done)
        q = _payload(rid, args.question_bytes)
        for t in topics:
            client.publish(t, q, qos=1)

    def done(seconds: float) -> None:
        state["outstanding"] -= 1
        if state["measuring"]:
            latencies.append(seconds * 1000)
        start()

    def phase(seconds: float, count: int) -> float:
        state["stop_at"] = time.monotonic() + seconds
        state["left"] = count
        started = time.perf_counter()
        for _ in range(args.concurrency):
            start()
        while state["outstanding"]:
            loop.once(0.05)
            if time.monotonic() > state["stop_at"] + 30:
                raise RuntimeError("paho: replies missing")
        return time.perf_counter() - started

    phase(args.warmup, 10**9)
    state["measuring"] = True
    others = ProcessGroups(args.process)
    cpu, others0 = time.process_time(), others.cpu()
    elapsed = phase(args.seconds, args.count)
    cpu, others1 = time.process_time() - cpu, others.cpu()
    client.disconnect()
    return {"latencies_ms": latencies, "elapsed_s": elapsed, "concurrency": args.concurrency,
            "cpu_s": cpu, "processes_cpu_s": others.since(others0, others1)}


# -- entry point --------------------------------------------------------------------------

async def _respond_async(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.lib == "aiomqtt":
        await _aiomqtt_respond(args, stop)
    else:
        await _gmqtt_respond(args, stop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raw")
    p.add_argument("role", choices=("respond", "request"))
    p.add_argument("--lib", choices=("aiomqtt", "gmqtt", "paho"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--question-bytes", type=int, default=860)
    p.add_argument("--reply-bytes", type=int, default=2048)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--count", type=int, default=10**9)
    p.add_argument("--nodelay", action="store_true",
                   help="aiomqtt/paho: set TCP_NODELAY on the client sockets (gmqtt always does)")
    p.add_argument("--process", action="append", metavar="NAME=PID[,PID...]",
                   help="request: also report these processes' CPU time over the window")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt's "pending publish calls"
    if args.role == "respond":
        if args.lib == "paho":
            _paho_respond(args)
        else:
            asyncio.run(_respond_async(args))
        return 0
    if args.lib == "paho":
        result = _paho_request(args)
    elif args.lib == "aiomqtt":
        result = asyncio.run(_aiomqtt_request(args))
    else:
        result = asyncio.run(_gmqtt_request(args))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
