"""The scenarios of ``python -m bench``: each measures into :class:`Results` within its
:class:`~bench.running.Budget`."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._procs import PYTHON, free_port, which
from .federation import fanout_type
from .profiles import self_time
from .running import HELD, PEER, RAW_CLIENTS, Bench, Budget, readline, say, summarise

__all__ = [
    "Results",
    "scenario_cpu311",
    "scenario_floor",
    "scenario_latency",
    "scenario_log",
    "scenario_log_pg",
    "scenario_memory",
    "scenario_profile",
    "scenario_throughput",
]


@dataclass
class Results:
    latency: dict[int, dict[str, list[dict[str, Any]]]]
    throughput: dict[str, list[dict[str, Any]]]
    cpu311: dict[str, list[dict[str, Any]]]
    log: dict[str, Any]
    memory: dict[str, Any] | None
    profile: dict[str, dict[str, Any]]
    skipped: dict[str, int]
    floor: dict[str, Any]


def scenario_latency(b: Bench, res: Results, budget: Budget) -> None:
    assert b.fed is not None
    plan = b.plan
    fanouts = [n for n in (1, 10, 100, 311) if n < b.fed.total] + [b.fed.total]
    for run in range(plan.runs):
        for n in fanouts:
            window = plan.latency_window.get(n, plan.latency_window[311])
            if not budget.allows(window + 4):
                continue
            slot = res.latency.setdefault(n, {})
            r = b.product(n, concurrency=1, warmup=plan.warmup, seconds=window,
                          count=plan.latency_count)
            slot.setdefault("samsvar", []).append(r)
            line = [f"samsvar p50 {r['p50']:.2f}"]
            if b.peer is not None and budget.allows(window + 4):
                rp = b.product(n, concurrency=1, warmup=plan.warmup, seconds=window,
                               count=plan.latency_count, peer=True)
                slot.setdefault(PEER, []).append(rp)
                line.append(f"{PEER} {rp['p50']:.2f}")
            for label, _, _ in RAW_CLIENTS:
                if not budget.allows(window * plan.raw_factor + 3):
                    continue
                rr = b.raw(label, n, concurrency=1, warmup=plan.warmup / 2,
                           seconds=window * plan.raw_factor, count=plan.latency_count * 2)
                slot.setdefault(label, []).append(rr)
                line.append(f"{label} {rr['p50']:.2f}")
            say(f"latency run {run + 1} N={n}: " + ", ".join(line) + " ms")


def scenario_throughput(b: Bench, res: Results, budget: Budget, *, with_raw: bool) -> None:
    plan = b.plan
    for run in range(plan.runs):
        if not budget.allows(plan.throughput_window + 5):
            break
        r = b.product(5, concurrency=64, warmup=plan.warmup * 2, seconds=plan.throughput_window)
        res.throughput.setdefault("samsvar", []).append(r)
        line = [f"samsvar {r['per_s']:.0f}/s"]
        if with_raw and b.peer is not None and budget.allows(plan.throughput_window + 5):
            rp = b.product(5, concurrency=64, warmup=plan.warmup * 2,
                           seconds=plan.throughput_window, peer=True)
            res.throughput.setdefault(PEER, []).append(rp)
            line.append(f"{PEER} {rp['per_s']:.0f}/s")
        if with_raw:
            for label, _, _ in RAW_CLIENTS:
                if not budget.allows(plan.throughput_window * plan.raw_factor + 4):
                    continue
                rr = b.raw(label, 5, concurrency=64, warmup=plan.warmup,
                           seconds=plan.throughput_window * plan.raw_factor)
                res.throughput.setdefault(label, []).append(rr)
                line.append(f"{label} {rr['per_s']:.0f}/s")
        say(f"throughput run {run + 1} N=5 x64: " + ", ".join(line))


def scenario_cpu311(b: Bench, res: Results, budget: Budget) -> None:
    assert b.fed is not None
    plan = b.plan
    for run in range(plan.runs):
        if not budget.allows(plan.cpu_window + 5):
            break
        r = b.product(b.fed.total, concurrency=4, warmup=plan.warmup * 2, seconds=plan.cpu_window)
        res.cpu311.setdefault("samsvar", []).append(r)
        line = [f"samsvar {r['cpu_us_per_reply']:.1f} µs/reply ({r['per_s']:.1f} answers/s)"]
        if b.peer is not None and budget.allows(plan.cpu_window + 5):
            rp = b.product(b.fed.total, concurrency=4, warmup=plan.warmup * 2,
                           seconds=plan.cpu_window, peer=True)
            res.cpu311.setdefault(PEER, []).append(rp)
            line.append(f"{PEER} {rp['cpu_us_per_reply']:.1f}")
        for label, _, _ in RAW_CLIENTS:
            if not budget.allows(plan.cpu_window * plan.raw_factor + 4):
                continue
            rr = b.raw(label, b.fed.total, concurrency=4, warmup=plan.warmup,
                       seconds=plan.cpu_window * plan.raw_factor)
            res.cpu311.setdefault(label, []).append(rr)
            line.append(f"{label} {rr['cpu_us_per_reply']:.1f}")
        say(f"cpu run {run + 1} N={b.fed.total} x4: " + ", ".join(line))


def _commit_counter(metrics: str | None) -> str | None:
    if not metrics:
        return None
    for line in metrics.splitlines():
        if not line.startswith("#") and re.match(r"^\w*commits?_total(\{.*\})? ", line):
            return line.split()[0]
    return None


def _entries_sqlite(path: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM access_log_entries").fetchone()[0])
    finally:
        conn.close()


async def _pg(dsn: str, sql: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def scenario_log(b: Bench, res: Results, budget: Budget) -> None:
    """The access log under the throughput load: SQLite (from the throughput scenario's
    runs), then PostgreSQL."""
    assert b.fed is not None
    res.log["sqlite"] = res.throughput.get("samsvar", [])
    res.log["sqlite_metric"] = _commit_counter(b.metrics())
    res.log["sqlite_rows"] = _entries_sqlite(b.fed.root / "sqlite-access-log.db")
    scenario_log_pg(b, res, budget)


def scenario_log_pg(b: Bench, res: Results, budget: Budget) -> None:
    plan = b.plan
    schema = f"bench_accesslog_{uuid.uuid4().hex[:10]}"
    dsn = b.args.dsn
    try:
        version = asyncio.run(_pg(dsn, "SHOW server_version"))
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL here: say so in the table
        res.log["postgresql_error"] = f"{type(exc).__name__}: {exc}"
        say(f"log: PostgreSQL unavailable: {exc}")
        return
    res.log["postgresql_version"] = version
    try:
        b.start_broker("pg", log="postgresql", dsn=dsn, schema=schema)
        runs = []
        for _ in range(plan.runs):
            if not budget.allows(plan.throughput_window + 5):
                break
            runs.append(b.product(5, concurrency=64, warmup=plan.warmup * 2,
                                  seconds=plan.throughput_window))
            say(f"log run postgresql N=5 x64: {runs[-1]['per_s']:.0f} answers/s")
        res.log["postgresql"] = runs
        res.log["postgresql_metric"] = _commit_counter(b.metrics())
        b.stop_broker()
        res.log["postgresql_rows"] = asyncio.run(
            _pg(dsn, f"SELECT count(*) FROM {schema}.access_log_entries"))
    finally:
        b.stop_broker()
        try:
            asyncio.run(_pg(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        except Exception as exc:  # noqa: BLE001 - report, never hide, a leftover schema
            say(f"could not drop schema {schema}: {exc}")


def scenario_memory(b: Bench, res: Results, budget: Budget) -> None:
    assert b.fed is not None
    b.start_broker("memory")
    settle = max(10.0, min(130.0, budget.left() - 30))
    argv = [PYTHON, "-m", "bench.loadgen", "--url", b.broker_url,
            "--key", str(b.fed.consumer_key), "--type", "care_plans", "--hold", str(HELD),
            "--deadline-ms", "170000", "--warmup", str(b.plan.warmup * 3),
            "--seconds", str(settle), "--broker-pid", str(b.broker.pid)]  # type: ignore[union-attr]
    r = b._child_json("loadgen-hold", argv, timeout=settle + 120)
    held = r["in_flight_metric"] if r["in_flight_metric"] is not None else r["established"]
    r["measured_held"] = min(HELD, int(held)) or HELD
    r["per_query_bytes"] = (r["rss_loaded"] - r["rss_idle"]) / r["measured_held"]
    res.memory = r
    say(f"memory: idle {r['rss_idle'] / 2**20:.1f} MiB, {r['measured_held']} in flight "
        f"{r['rss_loaded'] / 2**20:.1f} MiB -> {r['per_query_bytes'] / 1024:.2f} KiB/query "
        f"(broker connections {r['established']}, in-flight metric {r['in_flight_metric']})")
    b.stop_broker()


def scenario_floor(b: Bench, res: Results, budget: Budget) -> None:
    """What the job cannot do without, measured now on this machine: the signatures, and
    the HTTP server with nothing behind it (CPU per request, memory per held request)."""
    assert b.fed is not None
    fed, plan = b.fed, b.plan
    res.floor["crypto"] = b._child_json(
        "floor-crypto", [PYTHON, "-m", "bench.floor", "crypto", "--question-bytes",
                         str(fed.question_bytes), "--reply-bytes", str(fed.reply_bytes)], 120)
    say("floor: signatures " + ", ".join(f"{k.removesuffix('_us')} {v:.1f} µs"
                                         for k, v in res.floor["crypto"].items()
                                         if k.endswith("_us")))
    res.floor["algorithms"] = b._child_json(
        "floor-algorithms", [PYTHON, "-m", "bench.floor", "algorithms", "--question-bytes",
                             str(fed.question_bytes), "--reply-bytes", str(fed.reply_bytes)], 120)
    say("floor: one answer at N=5, machine-wide, by algorithm: " + ", ".join(
        f"{name} {us['job_per_answer_n5']:.0f} µs"
        for name, us in res.floor["algorithms"].items()))
    loadgen = [PYTHON, "-m", "bench.loadgen", "--key", str(fed.consumer_key),
               "--type", fanout_type(5, fed.total)]
    if budget.allows(plan.throughput_window + 20):
        with _floor_server(b, "floor-http") as (url, pid):
            r = summarise(b._child_json("loadgen-floor", [
                *loadgen, "--url", url, "--concurrency", "64", "--warmup", str(plan.warmup * 2),
                "--seconds", str(plan.throughput_window), "--broker-pid", str(pid)],
                plan.throughput_window + 90), 5)
        res.floor["http"] = r
        say(f"floor: bare aiohttp {r['cpu_us_per_answer']:.0f} µs per request "
            f"({r['per_s']:.0f}/s)")
    if budget.allows(60):
        warm = 3000
        with _floor_server(b, "floor-http-hold", answer_first=warm) as (url, pid):
            r = b._child_json("loadgen-floor-hold", [
                *loadgen, "--url", url, "--hold", str(HELD), "--warmup", "120",
                "--warmup-count", str(warm), "--warm-type", fanout_type(5, fed.total),
                "--deadline-ms", "170000", "--seconds", "60", "--broker-pid", str(pid)], 240)
        held = int(r["in_flight_metric"] or r["established"]) or HELD
        r["per_query_bytes"] = (r["rss_loaded"] - r["rss_idle"]) / held
        res.floor["http_memory"] = r
        say(f"floor: bare aiohttp holds {held} requests at "
            f"{r['per_query_bytes'] / 1024:.2f} KiB each")


@contextlib.contextmanager
def _floor_server(b: Bench, name: str,
                  answer_first: int | None = None) -> Iterator[tuple[str, int]]:
    """``bench.floor http`` on a free port: its URL and pid, stopped afterwards."""
    port = free_port()
    proc = b.procs.start(name, [PYTHON, "-m", "bench.floor", "http", "--port", str(port),
                                *([] if answer_first is None
                                  else ["--answer-first", str(answer_first)])],
                         stdout=subprocess.PIPE)
    try:
        if readline(proc, 60).strip() != "ready":
            b.procs.check_alive()
            raise RuntimeError(f"{name} did not start")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        b.procs.stop(proc)


def scenario_profile(b: Bench, res: Results, budget: Budget) -> None:
    """py-spy on the broker under the throughput load, then at full fan-out."""
    assert b.broker is not None and b.fed is not None
    try:
        spy = which("py-spy")
    except RuntimeError:
        spy = str(Path(PYTHON).parent / "py-spy")
    loads = [("N=5, 64 in flight", 5, 64), (f"N={b.fed.total}, 4 in flight", b.fed.total, 4)]
    for i, (label, n, concurrency) in enumerate(loads):
        seconds = max(3, min(10, int(budget.left() / (len(loads) - i)) - 8))
        out = b.root / f"profile-{n}.txt"
        proc = b.procs.start(f"py-spy-{n}", [
            spy, "record", "--pid", str(b.broker.pid), "--duration", str(seconds),
            "--rate", "250", "--nonblocking", "--threads", "--format", "raw",
            "--output", str(out)])
        time.sleep(1.0)
        r = b.product(n, concurrency=concurrency, warmup=0.2, seconds=seconds + 1)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        b.procs.stop(proc)
        if not out.exists():
            res.profile[label] = {"error": (b.root / f"py-spy-{n}.log").read_text(
                errors="replace")[-500:]}
            continue
        res.profile[label] = {"answers_per_s": r["per_s"], **self_time(out)}
        say(f"profile {label}: {res.profile[label]['samples']} samples")
