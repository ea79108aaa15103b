"""The load generator: signs real query JWTs and POSTs them to the broker, in its own process.

    python -m bench.loadgen --url URL --key KEY.jwk --type care_contacts \
        --concurrency 64 --warmup 2 --seconds 10 [--count 1000] --broker-pid PID

Prints one JSON object on stdout: per-request latencies (ms) of the measured window, the
answers' statuses, the broker process's CPU time and RSS at the window's edges (psutil, read
here so the window is exact), and this process's own CPU time over the window
(``loadgen_cpu_s``). ``--hold N`` is the memory scenario: warm up, read the broker's idle RSS,
put N never-answered queries in flight, wait until the broker is quiet, and read its RSS again.

The load phase does not use aiohttp's client. On the 2-core bench machine the load generator
shares the CPU with the broker it measures, so every microsecond it spends is one the broker
does not get. Measured with ``time.process_time`` over the window, against a trivial local
aiohttp server answering 1 KB of JSON (a shared, busy machine, so ranges): at concurrency 64,
aiohttp's client with per-request ``make_claims`` cost 145-175 µs of load-generator CPU per
request, the client below 45-60 µs; at concurrency 1, 250-260 µs against 105-125 µs. What
is left is mostly the Ed25519 signature each query needs (``jti`` unique, ``iat``/``exp``
fresh: about 25 µs) and the loopback ``send``, whose kernel work is charged to the sender.
The client (:class:`_Connection`) is an :class:`asyncio.Protocol` with one keep-alive
HTTP/1.1 connection per worker and a fixed request head: the one aiohttp's client sent,
field for field, so the broker parses the same bytes as before. aiohttp stays for the rare
calls (``/metrics``) and for the memory scenario's held queries, where CPU does not count.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
import uuid
import zlib
from typing import Any, Final, cast
from urllib.parse import urlsplit

import aiohttp
import aiohttp.http
import msgspec

from consumer_client import make_claims, sign_query
from schemas.jose import PrivateKey, load_private_key

from ._procs import ProcessGroups
from .federation import BROKER_ID, CONSUMER, SUBJECT, bench_user

__all__ = ["main"]

REQUEST_TIMEOUT: Final = 120.0
"""Seconds one query may take before the run fails (what aiohttp's ``total`` timeout was)."""


class _Signer:
    """Fresh query JWTs: the claims are validated once (:func:`make_claims`), and each token
    only gets a new ``jti``, ``iat`` and ``exp`` before it is encoded and signed."""

    def __init__(self, key: PrivateKey, type_: str, deadline_ms: int | None,
                 lifetime: int = 120) -> None:
        self._key, self._lifetime = key, lifetime
        self._template = make_claims(issuer=CONSUMER, audience=BROKER_ID, user=bench_user(),
                                     subject=SUBJECT, types=[type_], basis="consent",
                                     deadline_ms=deadline_ms, lifetime=lifetime)

    def token(self) -> bytes:
        iat = int(time.time())
        claims = msgspec.structs.replace(self._template, iat=iat, exp=iat + self._lifetime,
                                         jti=str(uuid.uuid4()))
        return sign_query(claims, self._key).encode("ascii")


class _Broker:
    """The broker process, read with psutil (CPU time of all its threads, RSS)."""

    def __init__(self, pid: int | None) -> None:
        # Imported here: bench.httpfanout uses this module's HTTP client without psutil.
        import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

        self._psutil = psutil
        self._p = psutil.Process(pid) if pid else None

    def cpu(self) -> float:
        if self._p is None:
            return float("nan")
        t = self._p.cpu_times()
        return float(t.user + t.system)

    def loop_cpu(self) -> float:
        """The CPU time of the process's main thread (its thread id is the pid): the
        event loop's, without the access log's thread and the others."""
        if self._p is None:
            return float("nan")
        for thread in self._p.threads():
            if thread.id == self._p.pid:
                return float(thread.user_time + thread.system_time)
        return float("nan")

    def rss(self) -> int:
        return int(self._p.memory_info().rss) if self._p else 0

    def connections(self, port: int) -> int:
        if self._p is None:
            return 0
        return sum(1 for c in self._p.net_connections("tcp")
                   if c.laddr and c.laddr.port == port
                   and c.status == self._psutil.CONN_ESTABLISHED)


# -- a minimal HTTP/1.1 keep-alive client ---------------------------------------------------

class HTTPError(Exception):
    """The server's response is not HTTP/1.x this client can read."""


class _Stale(ConnectionError):
    """A reused keep-alive connection closed before any byte of the response: the server
    dropped it while idle, so the request was not taken and may be sent again."""


_HEAD: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_UNTIL_CLOSE: Final = 3
_MAX_HEAD: Final = 64 * 1024


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time (no pipelining).

    The response body is framed by ``Content-Length``, ``Transfer-Encoding: chunked`` or the
    server closing the connection; ``Content-Encoding`` gzip/deflate is undone (the request
    offers them, as aiohttp's client did). ``open`` turns false when the server closes the
    connection or its response says ``Connection: close``: the caller then opens a new one.
    """

    def __init__(self) -> None:
        self.open = False
        self.sent_at = 0.0
        """``loop.time()`` the pending request was sent (for the timeout watchdog)."""
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._answered = False
        self._got = False
        self._state = _HEAD
        self._status = 0
        self._left = 0
        self._keep_alive = True
        self._coding = b""
        self._chunks: list[bytes] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport (the HTTP fan-out peer's loop) is not an asyncio.Transport
        # subclass, though it is one in all but name.
        self._transport = cast(asyncio.Transport, transport)
        self.open = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._state == _UNTIL_CLOSE:
            self._finish(bytes(self._buf))
        elif not self._got and self._answered:
            waiter.set_exception(_Stale("the server closed the idle connection"))
        else:
            err = ConnectionError("the server closed the connection before the response ended")
            err.__cause__ = exc
            waiter.set_exception(err)

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost settles the waiter

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for (a 408, say): the connection is done
            self.close()
            return
        self._buf += data
        self._got = True
        try:
            self._parse()
        except HTTPError as exc:
            self._fail(exc)

    # the client side

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one whole request; the response's status and (decoded) body."""
        assert self._transport is not None and self._waiter is None
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter, self._got = waiter, False
        self.sent_at = asyncio.get_running_loop().time()
        self._transport.write(data)
        try:
            return await waiter
        finally:
            self._waiter = None

    @property
    def busy(self) -> bool:
        return self._waiter is not None

    def time_out(self) -> None:
        self._fail(TimeoutError(f"no answer within {REQUEST_TIMEOUT:.0f} s"))

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.open = False
        if self._transport is not None:
            self._transport.abort()

    # parsing

    def _parse(self) -> None:
        buf = self._buf
        while True:
            if self._state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise HTTPError("response head too long")
                    return
                head = bytes(buf[:end])
                del buf[:end + 4]
                self._read_head(head)
                continue  # a 1xx interim response leaves the state at _HEAD
            if self._state == _LENGTH:
                n = self._left
                if len(buf) < n:
                    return
                body = bytes(buf[:n])
                del buf[:n]
                self._finish(body)
                return
            if self._state == _CHUNKED:
                self._read_chunks()
            return  # _UNTIL_CLOSE: connection_lost ends the body

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise HTTPError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        keep_alive = version != b"HTTP/1.0"
        length = -1
        chunked = False
        coding = b""
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise HTTPError(f"malformed header line: {line[:80]!r}")
            name = name.lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    raise HTTPError(f"bad Content-Length: {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                codings = [c.strip() for c in value.lower().split(b",")]
                if codings != [b"chunked"]:
                    raise HTTPError(f"unsupported Transfer-Encoding: {value.strip()[:40]!r}")
                chunked = True
            elif name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            elif name == b"content-encoding":
                coding = value.strip().lower()
        if status < 200:
            return  # interim (100 Continue, 103 Early Hints): the real response follows
        self._status, self._keep_alive, self._coding = status, keep_alive, coding
        if status in (204, 304):
            self._state, self._left = _LENGTH, 0
        elif chunked:  # overrides Content-Length (RFC 9112 section 6.3)
            self._state, self._left, self._chunks = _CHUNKED, 0, []
        elif length >= 0:
            self._state, self._left = _LENGTH, length
        else:
            self._state, self._keep_alive = _UNTIL_CLOSE, False

    def _read_chunks(self) -> None:
        """``self._left``: > 0, chunk data (and its CRLF) still due; 0, a size line is next;
        -1, the trailer section (ended by an empty line)."""
        buf = self._buf
        while True:
            if self._left > 0:
                n = self._left
                if len(buf) < n:
                    return
                if buf[n - 2:n] != b"\r\n":
                    raise HTTPError("chunk data not followed by CRLF")
                self._chunks.append(bytes(buf[:n - 2]))
                del buf[:n]
                self._left = 0
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise HTTPError("chunk size or trailer line too long")
                return
            line = bytes(buf[:end])
            del buf[:end + 2]
            if self._left < 0:
                if not line:
                    self._finish(b"".join(self._chunks))
                    return
                continue  # a trailer field: ignored
            size = line.partition(b";")[0].strip()
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                raise HTTPError(f"bad chunk size line: {line[:40]!r}")
            n = int(size, 16)
            self._left = n + 2 if n else -1

    def _finish(self, body: bytes) -> None:
        waiter = self._waiter
        assert waiter is not None
        status, coding = self._status, self._coding
        self._state, self._answered = _HEAD, True
        if not self._keep_alive or self._buf:  # more bytes than the response: out of step
            self.close()
        if coding and coding != b"identity":
            try:
                body = _decompress(coding, body)
            except (zlib.error, HTTPError) as exc:
                self._fail(HTTPError(f"cannot decode a {coding!r} body: {exc}"))
                return
        if not waiter.done():
            waiter.set_result((status, body))


def _decompress(coding: bytes, body: bytes) -> bytes:
    if coding in (b"gzip", b"x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == b"deflate":  # zlib-wrapped as RFC 9110 says, or raw as some servers send
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise HTTPError("unsupported Content-Encoding")


class _Client:
    """Keep-alive connections to one origin, and the bytes of a query POST to it."""

    def __init__(self, base: str, path: str) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be an http(s) URL, not {base!r}")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        host = parts.netloc.rpartition("@")[2]
        if parts.port is not None and parts.port == (443 if self._tls else 80):
            host = host.rsplit(":", 1)[0]  # as aiohttp's client: no default port in Host
        # The head aiohttp's client sent (same fields, same order), so the broker's parsing
        # work is what it was.
        self._head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                      "Content-Type: application/jwt\r\nAccept: */*\r\n"
                      "Accept-Encoding: gzip, deflate\r\n"
                      f"User-Agent: {aiohttp.http.SERVER_SOFTWARE}\r\n"
                      "Content-Length: ").encode("latin-1")
        self.idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    def post(self, token: bytes) -> bytes:
        return b"%b%d\r\n\r\n%b" % (self._head, len(token), token)

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self._host, self._port,
                                               ssl=self._tls or None)
        self._all.add(conn)
        return conn

    async def watchdog(self) -> None:
        """Fail requests older than :data:`REQUEST_TIMEOUT` (one timer, not one per request)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            now = loop.time()
            for conn in list(self._all):
                if not conn.open:
                    self._all.discard(conn)
                elif conn.busy and now - conn.sent_at > REQUEST_TIMEOUT:
                    conn.time_out()

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self.idle.clear()


async def load(args: argparse.Namespace) -> dict[str, Any]:
    signer = _Signer(load_private_key(args.key), args.type, args.deadline_ms)
    broker = _Broker(args.broker_pid)
    others = ProcessGroups(args.process)
    client = _Client(args.url, "/v1/queries")
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    incomplete = 0
    loop = asyncio.get_running_loop()
    measuring = False
    stop_at = loop.time() + args.warmup
    left = [args.warmup_count]
    perf_counter = time.perf_counter

    async def worker() -> None:
        nonlocal incomplete
        conn = client.idle.pop() if client.idle else None
        try:
            while loop.time() < stop_at and left[0] > 0:
                left[0] -= 1
                token = signer.token()
                started = perf_counter()
                if conn is None or not conn.open:
                    conn = await client.connect()
                try:
                    status, body = await conn.request(client.post(token))
                except _Stale:
                    left[0] += 1  # not taken: ask again, with a fresh token, on a new connection
                    conn = None
                    continue
                if measuring:
                    latencies.append((perf_counter() - started) * 1000)
                    key = str(status)
                    statuses[key] = statuses.get(key, 0) + 1
                    if status != 200 or b'"complete":true' not in body:
                        incomplete += 1
        finally:
            if conn is not None and conn.open:
                client.idle.append(conn)

    async def phase() -> float:
        started = perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(args.concurrency):
                tg.create_task(worker())
        return perf_counter() - started

    watchdog = asyncio.create_task(client.watchdog())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            await phase()  # warm-up: connections, caches, the broker's JIT-less paths
            measuring = True
            stop_at = loop.time() + args.seconds
            left = [args.count]
            commits0 = await _commits(http, args.url) if args.metrics else None
            cpu0, loop0, rss0 = broker.cpu(), broker.loop_cpu(), broker.rss()
            own0 = time.process_time()
            others0 = others.cpu()
            elapsed = await phase()
            own1, cpu1, loop1 = time.process_time(), broker.cpu(), broker.loop_cpu()
            rss1 = broker.rss()
            others1 = others.cpu()
            commits1 = await _commits(http, args.url) if args.metrics else None
    finally:
        watchdog.cancel()
        client.close()
    extra: dict[str, Any] = {}
    if commits0 is not None and commits1 is not None:
        extra["commits_per_s"] = (commits1 - commits0) / elapsed
    return {**extra, "latencies_ms": latencies, "statuses": statuses, "incomplete": incomplete,
            "elapsed_s": elapsed, "broker_cpu_s": cpu1 - cpu0,
            "broker_loop_cpu_s": loop1 - loop0, "broker_rss": [rss0, rss1],
            "loadgen_cpu_s": own1 - own0, "concurrency": args.concurrency,
            "processes_cpu_s": others.since(others0, others1)}


async def _post(http: aiohttp.ClientSession, url: str, token: bytes) -> tuple[int, bool]:
    async with http.post(url, data=token, headers={"Content-Type": "application/jwt"}) as resp:
        body = await resp.read()
        return resp.status, resp.status == 200 and b'"complete":true' in body


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
    p.add_argument("--process", action="append", metavar="NAME=PID[,PID...]",
                   help="also report these processes' CPU time over the window (summed)")
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
