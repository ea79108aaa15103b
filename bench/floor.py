"""The floor under each target: what the whole job cannot do without, measured in the run.

    python -m bench.floor crypto --question-bytes Q --reply-bytes R
    python -m bench.floor http --port P [--answer-first N]

``crypto`` times, in this process, the signatures the whole job cannot skip, with the code
the broker and the adapters use (:func:`schemas.jose.sign` and :func:`schemas.jose.verify`,
Ed25519 through libsodium): verifying a query JWT, signing a question, an adapter verifying
that question and signing its reply, the broker verifying the reply. It prints one JSON
object of microseconds.

``http`` is the HTTP server the broker is built on (aiohttp, on uvloop, with the broker's
``AppRunner`` settings) with nothing behind it: ``POST /v1/queries`` reads the token and
answers a fixed 2 KB answer, and ``GET /metrics`` gives the number of requests it holds as
``samsvar_queries_in_flight``. With ``--answer-first N`` it answers the first N queries
(the load generator's warm-up) and holds every later one until it is stopped: the memory
one in-flight HTTP request costs before the broker adds anything. Driven by
:mod:`bench.loadgen`, exactly as the broker is.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import time
import timeit
from collections.abc import Callable

import msgspec
from aiohttp import web

from samsvar.cli import event_loop_factory
from schemas.jose import Header, PublicKey, generate_key, sign, verify

__all__ = ["crypto", "main"]

ANSWER: bytes = b'{"complete":true,"padding":"' + b"x" * 2000 + b'"}'
"""A fixed answer of about the size of a real one at fan-out 5."""


def crypto(question_bytes: int, reply_bytes: int) -> dict[str, float]:
    """µs per signature operation the whole job needs, on payloads of the real sizes: the
    median of 7 rounds of 1,000 calls each, the operations taking turns within each round
    (so a machine that speeds up or slows down meanwhile weighs on all of them alike)."""
    # Ed25519 verification takes longer for some keys and signatures than for others:
    # every operation cycles through 16 keys (and so 16 signatures).
    def payload(size: int) -> bytes:
        # A JSON string whose compact JWS is ``size`` bytes, give or take a few.
        return msgspec.json.encode("x" * max(0, (size - 190) * 3 // 4))

    claims, question, reply = payload(700), payload(question_bytes), payload(reply_bytes)
    signers = [generate_key("EdDSA") for _ in range(16)]
    keys: dict[str, PublicKey] = {k.kid: k.public for k in signers}

    def key_for(header: Header) -> PublicKey:
        return keys[header.kid]

    def signing(data: bytes) -> Callable[[], object]:
        turn = itertools.cycle(signers)
        return lambda: sign(data, next(turn), typ="x")

    def verifying(data: bytes) -> Callable[[], object]:
        turn = itertools.cycle([sign(data, k, typ="x") for k in signers])
        return lambda: verify(next(turn), key_for, typ="x")

    operations: dict[str, Callable[[], object]] = {
        "verify_query_jwt_us": verifying(claims),
        "sign_question_us": signing(question),
        "verify_question_us": verifying(question),
        "sign_reply_us": signing(reply),
        "verify_reply_us": verifying(reply),
    }
    number = 1000
    rounds: dict[str, list[float]] = {name: [] for name in operations}
    for fn in operations.values():  # warm up
        timeit.timeit(fn, number=number // 10)
    for _ in range(7):
        for name, fn in operations.items():
            rounds[name].append(timeit.timeit(fn, number=number) / number * 1e6)
    return {name: statistics.median(times) for name, times in rounds.items()}


async def serve_http(port: int, answer_first: int | None) -> None:
    answered = 0
    held = 0
    release = asyncio.Event()

    async def query(request: web.Request) -> web.Response:
        nonlocal answered, held
        await request.content.read()  # as the broker reads it: no copy kept on the request
        if answer_first is not None and answered >= answer_first:
            held += 1
            try:
                await release.wait()
            finally:
                held -= 1
        answered += 1
        return web.Response(body=ANSWER, content_type="application/json")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=f"samsvar_queries_in_flight {held}\n")

    app = web.Application()
    app.router.add_post("/v1/queries", query)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)  # as broker/app.py
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()  # as broker/app.py
        print("ready", flush=True)
        await stop.wait()
        release.set()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor")
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("crypto")
    c.add_argument("--question-bytes", type=int, required=True)
    c.add_argument("--reply-bytes", type=int, required=True)
    h = sub.add_parser("http")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--answer-first", type=int)
    args = p.parse_args(argv)
    if args.what == "crypto":
        started = time.perf_counter()
        result = crypto(args.question_bytes, args.reply_bytes)
        result["seconds"] = time.perf_counter() - started
        result["pid"] = os.getpid()
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
        return 0
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # as `samsvar broker`
        runner.run(serve_http(args.port, args.answer_first))
    return 0


if __name__ == "__main__":
    sys.exit(main())
