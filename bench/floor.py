"""The floor under each target: what the whole job cannot do without, measured in the run.

    python -m bench.floor crypto --question-bytes Q --reply-bytes R
    python -m bench.floor algorithms --question-bytes Q --reply-bytes R
    python -m bench.floor http --port P [--answer-first N]

``crypto`` times, in this process, the signatures the whole job cannot skip, with the code
the broker and the adapters use (:func:`schemas.jose.sign` and :func:`schemas.jose.verify`,
Ed25519 through libsodium): verifying a query JWT, signing a question, an adapter verifying
that question and signing its reply, the broker verifying the reply. It prints one JSON
object of microseconds.

``algorithms`` times the signature algorithms the registry allows, on signing inputs of
the real sizes (a query JWT, a question, a reply), each through the library that would
do it: Ed25519 through libsodium (:mod:`schemas.jose`'s keys, the default) and through
OpenSSL (``cryptography``'s Ed25519 keys), and ES256 (P-256, OpenSSL, through
:mod:`schemas.jose`'s keys: the raw r||s signature converted to and from DER). It prints,
per algorithm, µs per operation and what one answer at fan-out 5 costs: the broker's
part, and the whole job's (every key of that algorithm): the default should be the least.

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
from collections.abc import Callable, Iterator

import msgspec
from aiohttp import web

from samsvar.cli import event_loop_factory
from schemas.jose import (
    DEFAULT_ALG,
    Alg,
    Header,
    PrivateKey,
    PublicKey,
    generate_key,
    sign,
    verify,
)

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
    signers = [generate_key(DEFAULT_ALG) for _ in range(16)]
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
        _cpu_us(fn, number // 10)
    for _ in range(7):
        for name, fn in operations.items():
            rounds[name].append(_cpu_us(fn, number))
    return {name: statistics.median(times) for name, times in rounds.items()}


def _cpu_us(fn: Callable[[], object], number: int) -> float:
    """µs of this process's CPU time per call: the machine is shared, and wall time would
    count the time another process had the core (the broker's figures are CPU time too)."""
    return timeit.Timer(fn, timer=time.process_time).timeit(number) / number * 1e6


ALGORITHMS: dict[str, Alg] = {
    "Ed25519 (libsodium)": "EdDSA",
    "Ed25519 (OpenSSL)": "EdDSA",
    "ES256 (OpenSSL)": "ES256",
}
"""The signature algorithms the registry allows (schemas.jose.ALGORITHMS), by library."""
_SIGNATURE_PART = 87
"""A compact JWS's ``.`` and base64url signature (64 bytes, both algorithms)."""


def algorithms(question_bytes: int, reply_bytes: int, *, rounds: int = 15,
               number: int = 200) -> dict[str, dict[str, float]]:
    """µs per sign and verify for each algorithm on the real sizes, the median of
    ``rounds`` rounds taking turns, and the cost of one answer at fan-out 5."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    sizes = {"query": 700, "question": question_bytes, "reply": reply_bytes}
    inputs = {what: b"e" * (size - _SIGNATURE_PART) for what, size in sizes.items()}
    operations: dict[tuple[str, str], Callable[[], object]] = {}
    for name, alg in ALGORITHMS.items():
        keys = [generate_key(alg) for _ in range(16)]  # 16 keys, as :func:`crypto`
        for what, data in inputs.items():
            if name == "Ed25519 (OpenSSL)":
                raw = [ed25519.Ed25519PrivateKey.from_private_bytes(_ed_seed(k)) for k in keys]
                sigs = [(k.public_key(), k.sign(data)) for k in raw]
                s_turn, v_turn = itertools.cycle(raw), itertools.cycle(sigs)

                def ossl_sign(t: Iterator[ed25519.Ed25519PrivateKey] = s_turn,
                              d: bytes = data) -> object:
                    return next(t).sign(d)

                def ossl_verify(t: Iterator[tuple[ed25519.Ed25519PublicKey, bytes]] = v_turn,
                                d: bytes = data) -> None:
                    p, sg = next(t)
                    p.verify(sg, d)

                operations[name, f"sign_{what}"] = ossl_sign
                operations[name, f"verify_{what}"] = ossl_verify
            else:
                pairs = [(k.public, k.sign(data)) for k in keys]
                ks, vs = itertools.cycle(keys), itertools.cycle(pairs)

                def jose_sign(t: Iterator[PrivateKey] = ks, d: bytes = data) -> object:
                    return next(t).sign(d)

                def jose_verify(t: Iterator[tuple[PublicKey, bytes]] = vs,
                                d: bytes = data) -> None:
                    _verified(*next(t), d)

                operations[name, f"sign_{what}"] = jose_sign
                operations[name, f"verify_{what}"] = jose_verify
    times: dict[tuple[str, str], list[float]] = {op: [] for op in operations}
    for fn in operations.values():
        _cpu_us(fn, number // 10)
    for _ in range(rounds):
        for op, fn in operations.items():
            times[op].append(_cpu_us(fn, number))
    out: dict[str, dict[str, float]] = {}
    for name in ALGORITHMS:
        us = {op: statistics.median(times[name, op]) for _, op in
              (k for k in operations if k[0] == name)}
        us["broker_per_answer_n5"] = (us["verify_query"] + us["sign_question"]
                                      + 5 * us["verify_reply"])
        us["job_per_answer_n5"] = (us["sign_query"] + us["verify_query"] + us["sign_question"]
                                   + 5 * (us["verify_question"] + us["sign_reply"]
                                          + us["verify_reply"]))
        out[name] = us
    return out


def _ed_seed(key: PrivateKey) -> bytes:
    """An Ed25519 key's 32-byte seed (from its private JWK)."""
    from schemas.jose import b64url_decode

    return b64url_decode(key.to_jwk()["d"])


def _verified(key: PublicKey, signature: bytes, data: bytes) -> None:
    if not key.verify(data, signature):
        raise AssertionError("a benchmark signature does not verify")


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
    a = sub.add_parser("algorithms")
    a.add_argument("--question-bytes", type=int, required=True)
    a.add_argument("--reply-bytes", type=int, required=True)
    h = sub.add_parser("http")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--answer-first", type=int)
    args = p.parse_args(argv)
    if args.what == "algorithms":
        found = algorithms(args.question_bytes, args.reply_bytes)
        sys.stdout.write(msgspec.json.encode(found).decode() + "\n")
        return 0
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
