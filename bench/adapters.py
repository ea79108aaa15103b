"""What one adapter costs per question, beside a minimal MQTT responder, with nothing else.

    python -m bench.adapters [--producers 38] [--seconds 8]

The whole-job benchmark runs 311 adapters, the broker, Mosquitto and the load generator
on the same two cores, so an adapter's CPU per question there includes what everything
else does to its caches and scheduling. This measures the adapter alone: one process
hosting ``--producers`` real :class:`producer_adapter.Adapter` instances (as
:mod:`bench.producers` runs them), its own Mosquitto, and a requester here that publishes
one signed question to every producer and waits for all the replies, again and again,
one round at a time. Then the same with the raw baseline's gmqtt responders
(:mod:`bench.raw`), which answer with an unsigned reply of the same size: the transport
alone. Prints the CPU (user + system) of the responding process per question, and of
Mosquitto and of this requester beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gmqtt  # type: ignore[import-untyped]  # gmqtt ships no type hints
import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs installed

from schemas.jose import load_private_key
from schemas.topics import question_topic

from ._procs import PYTHON, Processes, start_mosquitto
from .federation import build, producer_id, signed_question

__all__ = ["main"]

WARMUP_ROUNDS = 20


async def _measure(responder: subprocess.Popen[bytes], mosquitto: int, port: int,
                   topics: list[str], reply_topic: str, question: Any,
                   seconds: float) -> dict[str, float]:
    """Rounds of one question to every topic and all replies back, for ``seconds``."""
    assert responder.stdout is not None
    line = await asyncio.to_thread(responder.stdout.readline)
    if not line.startswith(b"ready"):
        raise RuntimeError(f"the responders did not start: {line!r}")
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    client = gmqtt.Client(f"bench-adapters-{uuid.uuid4().hex[:6]}")

    def on_message(_client: Any, _topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        replies.put_nowait(payload)
        return 0

    client.on_message = on_message
    await client.connect("127.0.0.1", port, version=5)
    client.subscribe(reply_topic, qos=1)
    await asyncio.sleep(0.3)  # the SUBACK

    async def one_round() -> None:
        payload = question()
        for topic in topics:
            client.publish(topic, payload, qos=1)
        for _ in topics:
            await asyncio.wait_for(replies.get(), 10)

    for _ in range(WARMUP_ROUNDS):
        await one_round()
    them, broker = psutil.Process(responder.pid), psutil.Process(mosquitto)
    cpu = [sum(p.cpu_times()[:2]) for p in (them, broker)]
    own, started, rounds = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        await one_round()
        rounds += 1
    elapsed = time.perf_counter() - started
    after = [sum(p.cpu_times()[:2]) for p in (them, broker)]
    own = time.process_time() - own
    await client.disconnect()
    questions = rounds * len(topics)
    return {"rounds_per_s": rounds / elapsed,
            "responder_us": (after[0] - cpu[0]) / questions * 1e6,
            "mosquitto_us": (after[1] - cpu[1]) / questions * 1e6,
            "requester_us": own / questions * 1e6}


def run(producers: int, seconds: float) -> dict[str, dict[str, float]]:
    root = Path(tempfile.mkdtemp(prefix="samsvar-bench-adapters-"))
    results: dict[str, dict[str, float]] = {}
    with Processes(root) as procs:
        port, mosquitto = start_mosquitto(procs, root)
        prefix = f"bench/{uuid.uuid4().hex[:8]}/samsvar/v1"
        fed = build(root, total=producers, mqtt_port=port, prefix=prefix)
        key = load_private_key(root / "keys" / "broker.jwk")
        reply_topic = f"{prefix}/r/bench-adapters"

        def question() -> bytes:
            now = int(time.time() * 1000)
            return signed_question(key, reply_topic=reply_topic, query_id=str(uuid.uuid4()),
                                   iat=now // 1000, deadline=now + 5000, types=["medication"])

        adapters = procs.start("producers", [PYTHON, "-m", "bench.producers",
                                             str(fed.group_spec(0, 1))], stdout=subprocess.PIPE)
        results["samsvar adapters"] = asyncio.run(_measure(
            adapters, mosquitto, port,
            [question_topic(prefix, producer_id(i)) for i in range(producers)],
            reply_topic, question, seconds))
        procs.stop(adapters)
        raw_prefix = f"bench/raw-{uuid.uuid4().hex[:6]}"
        raw = procs.start("raw", [PYTHON, "-m", "bench.raw", "respond", "--lib", "gmqtt",
                                  "--port", str(port), "--prefix", raw_prefix,
                                  "--n", str(producers), "--reply-bytes", str(fed.reply_bytes)],
                          stdout=subprocess.PIPE)
        one = question()  # the raw responders only echo: the same bytes every round
        results["raw gmqtt responders"] = asyncio.run(_measure(
            raw, mosquitto, port, [f"{raw_prefix}/q/{i}" for i in range(producers)],
            f"{raw_prefix}/r/requester", lambda: one, seconds))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.adapters", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--producers", type=int, default=38,
                   help="adapters in the one process (the whole-job bench hosts ~38 each)")
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args(argv)
    for name, r in run(args.producers, args.seconds).items():
        print(f"{name:>22}: {r['responder_us']:6.1f} µs of CPU per question "
              f"(Mosquitto {r['mosquitto_us']:.1f}, requester {r['requester_us']:.1f}; "
              f"{r['rounds_per_s']:.0f} rounds of {args.producers} per s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
