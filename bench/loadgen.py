"""The load generator: signs real query JWTs and POSTs them to the broker, in its own process.

    python -m bench.loadgen --url URL --key KEY.jwk --type care_contacts \
        --concurrency 64 --warmup 2 --seconds 10 [--count 1000] --broker-pid PID

Prints one JSON object on stdout: per-request latencies (ms) of the measured window, the
answers' statuses, and the broker process's CPU time and RSS at the window's edges
(psutil, read here so the window is exact). ``--hold N`` is the memory scenario: warm up,
read the broker's idle RSS, put N never-answered queries in flight, wait until the broker
is quiet, and read its RSS again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from typing import Any

import aiohttp
import msgspec
import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from consumer_client import make_claims, sign_query
from schemas.jose import PrivateKey, load_private_key

from .federation import BROKER_ID, CONSUMER, SUBJECT, bench_user

__all__ = ["main"]


class _Signer:
    def __init__(self, key: PrivateKey, type_: str, deadline_ms: int | None,
                 lifetime: int = 120) -> None:
        self._key, self._type, self._deadline, self._lifetime = key, type_, deadline_ms, lifetime
        self._user = bench_user()

    def token(self) -> bytes:
        claims = make_claims(issuer=CONSUMER, audience=BROKER_ID, user=self._user,
                             subject=SUBJECT, types=[self._type], basis="consent",
                             deadline_ms=self._deadline, lifetime=self._lifetime)
        return sign_query(claims, self._key).encode("ascii")


class _Broker:
    """The broker process, read with psutil (CPU time of all its threads, RSS)."""

    def __init__(self, pid: int | None) -> None:
        self._p = psutil.Process(pid) if pid else None

    def cpu(self) -> float:
        if self._p is None:
            return float("nan")
        t = self._p.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self._p.memory_info().rss) if self._p else 0

    def connections(self, port: int) -> int:
        if self._p is None:
            return 0
        return sum(1 for c in self._p.net_connections("tcp")
                   if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


async def _post(http: aiohttp.ClientSession, url: str, token: bytes) -> tuple[int, bool]:
    async with http.post(url, data=token, headers={"Content-Type": "application/jwt"}) as resp:
        body = await resp.read()
        return resp.status, resp.status == 200 and b'"complete":true' in body


async def load(args: argparse.Namespace) -> dict[str, Any]:
    signer = _Signer(load_private_key(args.key), args.type, args.deadline_ms)
    broker = _Broker(args.broker_pid)
    url = f"{args.url}/v1/queries"
    connector = aiohttp.TCPConnector(limit=max(args.concurrency, 1) + 8, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    incomplete = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()
        measuring = False
        stop_at = loop.time() + args.warmup
        left = [args.warmup_count]

        async def worker() -> None:
            nonlocal incomplete
            while loop.time() < stop_at and left[0] > 0:
                left[0] -= 1
                token = signer.token()
                started = time.perf_counter()
                status, complete = await _post(http, url, token)
                if measuring:
                    latencies.append((time.perf_counter() - started) * 1000)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if not complete:
                        incomplete += 1

        async def phase() -> float:
            started = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for _ in range(args.concurrency):
                    tg.create_task(worker())
            return time.perf_counter() - started

        await phase()  # warm-up: connections, caches, the broker's JIT-less paths
        measuring = True
        stop_at = loop.time() + args.seconds
        left = [args.count]
        commits0 = await _commits(http, args.url) if args.metrics else None
        cpu0, rss0 = broker.cpu(), broker.rss()
        elapsed = await phase()
        cpu1, rss1 = broker.cpu(), broker.rss()
        commits1 = await _commits(http, args.url) if args.metrics else None
    extra: dict[str, Any] = {}
    if commits0 is not None and commits1 is not None:
        extra["commits_per_s"] = (commits1 - commits0) / elapsed
    return {**extra, "latencies_ms": latencies, "statuses": statuses, "incomplete": incomplete,
            "elapsed_s": elapsed, "broker_cpu_s": cpu1 - cpu0, "broker_rss": [rss0, rss1],
            "concurrency": args.concurrency}


async def _metrics(http: aiohttp.ClientSession, base: str) -> str | None:
    try:
        async with http.get(f"{base}/metrics") as resp:
            return await resp.text() if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def _commits(http: aiohttp.ClientSession, base: str) -> float | None:
    """The access log's commit counter from /metrics (any ``*commits_total``), if served."""
    text = await _metrics(http, base)
    if text is None:
        return None
    found = [float(line.split()[-1]) for line in text.splitlines()
             if not line.startswith("#") and re.match(r"^\w*commits?_total(\{.*\})? ", line)]
    return sum(found) if found else None


async def _in_flight(http: aiohttp.ClientSession, base: str) -> float | None:
    """``samsvar_queries_in_flight`` from /metrics, when the broker serves it."""
    try:
        async with http.get(f"{base}/metrics") as resp:
            if resp.status != 200:
                return None
            for line in (await resp.text()).splitlines():
                if line.startswith("samsvar_queries_in_flight "):
                    return float(line.split()[1])
    except aiohttp.ClientError:
        return None
    return None


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    """Memory: RSS idle, then with ``args.hold`` never-answered queries in flight."""
    broker = _Broker(args.broker_pid)
    port = int(args.url.rsplit(":", 1)[1])
    key = load_private_key(args.key)
    # Warm up with answered queries so allocator pools and caches are at steady state.
    warm = argparse.Namespace(**{**vars(args), "concurrency": 64, "seconds": 0,
                                 "type": args.warm_type, "deadline_ms": None})
    await load(warm)
    await asyncio.sleep(1.0)
    rss_idle = broker.rss()
    signer = _Signer(key, args.type, args.deadline_ms, lifetime=300)
    tokens = [signer.token() for _ in range(args.hold)]
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http, \
            aiohttp.ClientSession() as probe:
        url = f"{args.url}/v1/queries"
        tasks: list[asyncio.Task[tuple[int, bool]]] = []
        started = time.perf_counter()
        in_flight: float | None = None
        # Launch no faster than the broker takes them in (its listen backlog is small, and a
        # dropped SYN costs a 1 s retransmit): at most 500 ahead of its in-flight gauge.
        for i, token in enumerate(tokens):
            tasks.append(asyncio.create_task(_post(http, url, token)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)
                while time.perf_counter() - started < args.seconds:
                    in_flight = await _in_flight(probe, args.url)
                    if in_flight is None or len(tasks) - in_flight <= 500:
                        break
                    await asyncio.sleep(0.1)
        # Until the broker holds them all, and its CPU has gone quiet.
        quiet, last = 0, broker.cpu()
        while time.perf_counter() - started < args.seconds:
            await asyncio.sleep(0.5)
            now = broker.cpu()
            quiet = quiet + 1 if now - last < 0.1 else 0
            last = now
            in_flight = await _in_flight(probe, args.url)
            held = (in_flight if in_flight is not None
                    else broker.connections(port))
            if quiet >= 2 and held >= 0.999 * args.hold:
                break
        settle = time.perf_counter() - started
        rss_loaded = broker.rss()
        in_flight = await _in_flight(probe, args.url)
        established = broker.connections(port)
        done = sum(t.done() for t in tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"rss_idle": rss_idle, "rss_loaded": rss_loaded, "held": args.hold,
            "in_flight_metric": in_flight, "established": established,
            "finished_early": done, "settle_s": settle}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True, help="the consumer's private JWK")
    p.add_argument("--type", required=True, help="the information type (chooses the fan-out)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds")
    p.add_argument("--warmup-count", type=int, default=1_000_000)
    p.add_argument("--seconds", type=float, default=10.0, help="measured window, at most")
    p.add_argument("--count", type=int, default=1_000_000, help="measured answers, at most")
    p.add_argument("--deadline-ms", type=int)
    p.add_argument("--broker-pid", type=int)
    p.add_argument("--hold", type=int, help="memory scenario: queries to hold in flight")
    p.add_argument("--warm-type", default="care_contacts")
    p.add_argument("--metrics", action="store_true",
                   help="read the access log's commit counter from /metrics at the window edges")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(hold(args) if args.hold else load(args))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
