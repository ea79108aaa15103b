"""The whole job against the raw transport (issue 7) and the HTTP fan-out (issue 21):
``python -m bench``.

    python -m bench --scenario latency|throughput|cpu|memory|log|profile|floor|all [--quick]
                    [--producers 311] [--runs 3] [--out bench/RESULTS.md] [--dsn URL]

On this machine only. Starts its own Mosquitto (``set_tcp_nodelay true``, free port, no
persistence), writes a federation of N producers into a temporary folder, starts the
producer adapters (grouped: at most 8 processes, each hosting N/8 real
``producer_adapter.Adapter`` instances, one MQTT connection each) and the broker as a process
(``python -m samsvar broker``), and drives it from a load-generator process that signs
real query JWTs. Beside it, over the same Mosquitto, the raw baseline: one question to N
topics, N replies of the same size back, with a minimal client per MQTT library and nothing
else. And the incumbent design as a peer (issue 21, :mod:`bench.httpfanout`): the same
broker core and the same adapters, the questions sent as one HTTP call per producer. Every
scenario has a hard time budget; everything started is stopped at the end, on Ctrl-C and
on errors too. Without the ``bench`` extra (psutil, py-spy) it says so in one line.

The Targets table holds issue 21's targets, each a ratio measured in the run: samsvar
ahead of the HTTP fan-out at N=311 (answer p50) and at N=5 (answers/s); the broker's CPU
per answer at N=5 and per reply at N=311, and the N=311 answer p50, at most 1.3x their
floors; memory per query in flight at most bare aiohttp's plus 2 KiB.

Scenarios (each figure is the median of several runs, with min–max):

* latency: one query at a time at fan-out 1, 10, 100 and N: answer p50/p99, ratio to raw;
* throughput: fan-out 5, 64 queries in flight: answers/s, p50/p99, ratio to raw;
* cpu: the broker process's CPU time per answer (fan-out 5) and per reply (fan-out N);
* memory: broker RSS per in-flight query, 10,000 in flight against producers that never
  answer;
* log: access-log commits (or entries) per second under the throughput load, SQLite and
  PostgreSQL;
* profile: py-spy on the broker under the throughput load: where the time goes;
* floor: what the job cannot do without, measured in the same run (:mod:`bench.floor`): the
  signatures, and the HTTP server with nothing behind it (CPU per request, memory per held
  request); the report sets them beside each target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import select
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ._extra import require_bench_extra

if __name__ == "__main__":  # before anything imports psutil: one line, not a traceback
    require_bench_extra()

from . import httpfanout  # noqa: E402
from ._procs import PYTHON, Processes, free_port, start_mosquitto, which  # noqa: E402
from .federation import Federation, build, fanout_type  # noqa: E402
from .report import Spread, Table, Target, fmt_ms, percentile, ratio, spread  # noqa: E402

SCENARIOS = ("latency", "throughput", "cpu", "memory", "log", "profile", "floor")
RAW_CLIENTS: tuple[tuple[str, str, bool], ...] = (
    # label, library, TCP_NODELAY on the client socket
    ("aiomqtt", "aiomqtt", False),
    ("aiomqtt+nodelay", "aiomqtt", True),
    ("gmqtt", "gmqtt", False),
    ("paho+nodelay", "paho", True),
)
MAX_GROUPS = 8
PEER = httpfanout.LABEL
HELD = 10_000
DEFAULT_DSN = os.environ.get("SAMSVAR_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Plan:
    """How long and how often: the full run, or ``--quick``."""

    runs: int
    warmup: float
    latency_window: dict[int, float]
    latency_count: int
    raw_factor: float
    """Raw windows are this fraction of the product's (the raw path is much faster)."""
    throughput_window: float
    cpu_window: float
    budgets: dict[str, float]


FULL = Plan(runs=3, warmup=1.0, latency_window={1: 3, 10: 3, 100: 5, 311: 10},
            latency_count=400, raw_factor=0.5, throughput_window=8, cpu_window=8,
            budgets={"setup": 150, "latency": 450, "throughput": 240, "cpu": 240, "log": 75,
                     "memory": 170, "profile": 60, "floor": 150})
QUICK = Plan(runs=1, warmup=0.5, latency_window={1: 1.5, 10: 1.5, 100: 2, 311: 4},
             latency_count=200, raw_factor=0.5, throughput_window=3, cpu_window=3,
             budgets={"setup": 120, "latency": 100, "throughput": 45, "cpu": 45, "log": 30,
                      "memory": 60, "profile": 25, "floor": 100})


class Budget:
    """A scenario's hard time budget: measurements are skipped once it is spent."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds, self.started = name, seconds, time.monotonic()
        self.skipped = 0

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def allows(self, needed: float) -> bool:
        if self.left() >= needed:
            return True
        self.skipped += 1
        return False


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# -- the running parts ---------------------------------------------------------------------

class Bench:
    def __init__(self, procs: Processes, root: Path, args: argparse.Namespace, plan: Plan) -> None:
        self.procs, self.root, self.args, self.plan = procs, root, args, plan
        self.fed: Federation | None = None
        self.broker: subprocess.Popen[bytes] | None = None
        self.others: dict[str, list[int]] = {}
        """Processes whose CPU the load generator also reads: Mosquitto, the adapters."""
        self.broker_url = ""
        self.raw_prefix: dict[str, str] = {}
        self.raw_pid: dict[str, int] = {}
        """Each raw client's responder process, whose CPU its requester also reads."""
        self.notes: list[str] = []
        self.peer: httpfanout.Peer | None = None
        """The incumbent design beside samsvar (:mod:`bench.httpfanout`), once started."""

    # mosquitto, producers, raw responders -------------------------------------------

    def start_mosquitto(self) -> int:
        port, pid = start_mosquitto(self.procs, self.root)
        self.others["Mosquitto"] = [pid]
        return port

    def start_federation(self, total: int) -> Federation:
        port = self.start_mosquitto()
        prefix = f"bench/{uuid.uuid4().hex[:8]}/samsvar/v1"
        self.fed = build(self.root, total=total, mqtt_port=port, prefix=prefix)
        groups = min(MAX_GROUPS, total)
        for g in range(groups):
            spec = self.fed.group_spec(g, groups)
            proc = self.procs.start(f"producers-{g}", [PYTHON, "-m", "bench.producers",
                                                        str(spec)])
            self.others.setdefault("adapters", []).append(proc.pid)
        say(f"federation: {total} producers in {groups} processes; signed reply "
            f"{self.fed.reply_bytes} B, signed question {self.fed.question_bytes} B")
        return self.fed

    def start_raw_responders(self) -> None:
        assert self.fed is not None
        waiting = []
        for label, lib, nodelay in RAW_CLIENTS:
            prefix = f"bench/raw/{uuid.uuid4().hex[:6]}"
            self.raw_prefix[label] = prefix
            argv = [PYTHON, "-m", "bench.raw", "respond", "--lib", lib,
                    "--port", str(self.fed.mqtt_port), "--prefix", prefix,
                    "--n", str(self.fed.total), "--reply-bytes", str(self.fed.reply_bytes),
                    *(["--nodelay"] if nodelay else [])]
            proc = self.procs.start(f"raw-{label}", argv, stdout=subprocess.PIPE)
            self.raw_pid[label] = proc.pid
            waiting.append((label, proc))
        for label, proc in waiting:
            line = _readline(proc, 120)
            if line.strip() != "ready":
                self.procs.check_alive()
                raise RuntimeError(f"raw responders {label} not ready: {line!r}")
        say(f"raw responders ready: {', '.join(self.raw_prefix)} "
            f"({self.fed.total} connections each, one process per client)")

    # the broker ---------------------------------------------------------------------

    def start_broker(self, name: str, **log: Any) -> None:
        assert self.fed is not None
        self.stop_broker()
        for attempt in range(3):
            # A free port can be taken by another connection's ephemeral port before the
            # broker binds it: try another one.
            port = free_port()
            config = self.fed.broker_config(name, port=port, **log)
            self.broker = self.procs.start(
                f"broker-{name}",
                [PYTHON, "-m", "samsvar", "broker", "--config", str(config),
                 "--log-level", "warning"],
                grace=8)
            self.broker_url = f"http://127.0.0.1:{port}"
            try:
                self.wait_online(120)
                return
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                self.procs.stop(self.broker)
                self.broker = None

    def stop_broker(self) -> None:
        if self.broker is not None:
            self.procs.stop(self.broker)
            self.broker = None

    def wait_online(self, timeout: float, url: str | None = None) -> None:
        """Until the broker (or the one at ``url``) answers and every producer is online
        (GET /v1/producers)."""
        end = time.monotonic() + timeout
        online = 0
        while time.monotonic() < end:
            self.procs.check_alive()
            try:
                with urllib.request.urlopen(f"{url or self.broker_url}/v1/producers",
                                            timeout=5) as r:
                    listing = json.load(r)["producers"]
                online = sum(p["online"] for p in listing)
                if online == len(listing):
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"only {online} producers online after {timeout:g} s")

    def metrics(self) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.broker_url}/metrics", timeout=5) as r:
                return r.read().decode() if r.status == 200 else None
        except OSError:
            return None

    # measuring ----------------------------------------------------------------------

    def _child_json(self, name: str, argv: list[str], timeout: float) -> dict[str, Any]:
        proc = self.procs.start(name, argv, stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            raise RuntimeError(f"{name} took longer than {timeout:.0f} s") from None
        self.procs.stop(proc)
        if proc.returncode != 0:
            log = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{log}")
        result: dict[str, Any] = json.loads(out)
        return result

    def product(self, n: int, *, concurrency: int, warmup: float, seconds: float,
                count: int = 10**9, type_: str | None = None,
                peer: bool = False) -> dict[str, Any]:
        """The whole job at fan-out ``n``: samsvar's broker, or (``peer``) the HTTP fan-out."""
        assert self.fed is not None and self.broker is not None
        if peer:
            assert self.peer is not None
            url, pid = self.peer.url, self.peer.pid
            others = {"adapters": self.peer.producer_pids}
        else:
            url, pid, others = self.broker_url, self.broker.pid, self.others
        argv = [PYTHON, "-m", "bench.loadgen", "--url", url,
                "--key", str(self.fed.consumer_key), "--type",
                type_ or fanout_type(n, self.fed.total), "--concurrency", str(concurrency),
                "--warmup", str(warmup), "--seconds", str(seconds), "--count", str(count),
                "--broker-pid", str(pid),
                *(arg for name, pids in others.items()
                  for arg in ("--process", f"{name}={','.join(map(str, pids))}"))]
        if self.args.metrics and not peer:
            argv.append("--metrics")
        result = self._child_json("loadgen", argv, timeout=warmup + seconds + 90)
        return _summarise(result, n)

    def start_peer(self) -> None:
        assert self.fed is not None
        self.peer = httpfanout.start(self, min(MAX_GROUPS, self.fed.total))
        say(f"{PEER}: peer broker up, {self.fed.total} producers behind HTTP endpoints")

    def raw(self, label: str, n: int, *, concurrency: int, warmup: float, seconds: float,
            count: int = 10**9) -> dict[str, Any]:
        assert self.fed is not None
        lib, nodelay = next((lib, nd) for lb, lib, nd in RAW_CLIENTS if lb == label)
        argv = [PYTHON, "-m", "bench.raw", "request", "--lib", lib,
                "--port", str(self.fed.mqtt_port), "--prefix", self.raw_prefix[label],
                "--n", str(n), "--question-bytes", str(self.fed.question_bytes),
                "--reply-bytes", str(self.fed.reply_bytes), "--concurrency", str(concurrency),
                "--warmup", str(warmup), "--seconds", str(seconds), "--count", str(count),
                "--process", f"responders={self.raw_pid[label]}",
                "--process", f"Mosquitto={self.others['Mosquitto'][0]}",
                *(["--nodelay"] if nodelay else [])]
        return _summarise(self._child_json(f"raw-request-{label}", argv,
                                           timeout=warmup + seconds + 90), n)


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode(errors="replace") if ready else ""


def _summarise(result: dict[str, Any], n: int) -> dict[str, Any]:
    lat = result.pop("latencies_ms")
    answers = len(lat)
    result.update(n=n, answers=answers, p50=percentile(lat, 0.5), p99=percentile(lat, 0.99),
                  per_s=answers / result["elapsed_s"] if result["elapsed_s"] else float("nan"))
    cpu = result.get("broker_cpu_s", result.get("cpu_s"))  # the broker / the raw requester
    if cpu is not None and answers:
        result["cpu_us_per_answer"] = cpu / answers * 1e6
        result["cpu_us_per_reply"] = cpu / (answers * n) * 1e6
    loop = result.get("broker_loop_cpu_s")
    if loop is not None and answers:
        result["loop_cpu_us_per_answer"] = loop / answers * 1e6
    if "processes_cpu_s" in result and answers:
        # The whole machine per answer: every process the bench started that does the job
        # (the raw exchange: its requester, its responders and Mosquitto).
        machine = ({"broker": result["broker_cpu_s"], **result["processes_cpu_s"],
                    "load generator": result.get("loadgen_cpu_s", float("nan"))}
                   if "broker_cpu_s" in result else
                   {"requester": result["cpu_s"], **result["processes_cpu_s"]})
        for name, seconds in machine.items():
            result[f"machine_us:{name}"] = seconds / answers * 1e6
        result["machine_us:all"] = sum(machine.values()) / answers * 1e6
    return result


# -- scenarios ------------------------------------------------------------------------------

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
            r = _summarise(b._child_json("loadgen-floor", [
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
        if _readline(proc, 60).strip() != "ready":
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
        res.profile[label] = {"answers_per_s": r["per_s"], **_self_time(out)}
        say(f"profile {label}: {res.profile[label]['samples']} samples")


def _self_time(path: Path) -> dict[str, Any]:
    """Samples per thread; self and total samples per function of the event-loop thread."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    by_area: dict[str, int] = {}
    threads: dict[str, int] = {}
    samples = main = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        head, _, rest = stack.partition(": ")
        name, _, frames_text = rest.partition(";") if head.startswith("thread (") else \
            ("?", "", stack)
        thread = re.sub(r"_\d+$", "", name)  # ThreadPoolExecutor-0_0 -> ThreadPoolExecutor-0
        threads[thread] = threads.get(thread, 0) + count
        if name != "MainThread":
            continue
        main += count
        frames = [f for f in frames_text.split(";") if f]
        if not frames:
            continue
        leaf = _frame(frames[-1])
        own[leaf] = own.get(leaf, 0) + count
        for f in set(map(_frame, frames)):
            total[f] = total.get(f, 0) + count
        area = _area(frames[-1])
        by_area[area] = by_area.get(area, 0) + count
    return {"samples": samples, "main": main,
            "threads": sorted(threads.items(), key=lambda kv: -kv[1]),
            "self": sorted(own.items(), key=lambda kv: -kv[1])[:25],
            "total": sorted(((k, v) for k, v in total.items() if _ours(k)),
                            key=lambda kv: -kv[1])[:25],
            "areas": sorted(by_area.items(), key=lambda kv: -kv[1])[:15]}


def _frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (file.py)``, shortening site-packages paths."""
    m = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    path = re.sub(r"^.*/site-packages/", "", path)
    path = re.sub(r"^.*/lib/python3\.\d+/", "stdlib/", path)
    path = re.sub(r"^.*/work/main/", "", path)
    return f"{func} ({path})"


def _area(frame: str) -> str:
    m = re.match(r"^.*? \((.*?)(?::\d+)?\)$", frame)
    path = m.group(1) if m else frame
    if "/site-packages/" in path:
        return path.split("/site-packages/")[1].split("/")[0]
    if re.search(r"/lib/python3\.\d+/", path):
        return "stdlib:" + re.split(r"/lib/python3\.\d+/", path)[1].split("/")[0]
    path = re.sub(r"^.*/work/main/", "", path)
    return path


def _ours(frame: str) -> bool:
    return any(f"({p}/" in frame for p in ("broker", "schemas", "producer_adapter"))


# -- the report -----------------------------------------------------------------------------

def _versions(dsn_version: str | None) -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    try:
        mosq = subprocess.run([which("mosquitto"), "-h"], capture_output=True, text=True,
                              timeout=10, check=False).stdout.splitlines()[0]
    except (RuntimeError, OSError, IndexError, subprocess.TimeoutExpired):
        mosq = "unknown"
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        crypto_ssl = backend.openssl_version_text()
    except Exception:  # noqa: BLE001 - informational only
        crypto_ssl = "unknown"
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": f"{os.cpu_count()} cores, {model}, "
                   f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
                   f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiomqtt": dist("aiomqtt"), "paho-mqtt": dist("paho-mqtt"), "gmqtt": dist("gmqtt"),
        "aiohttp": dist("aiohttp"), "msgspec": dist("msgspec"),
        "cryptography": f"{dist('cryptography')} ({crypto_ssl})",
        "mosquitto": mosq, "openssl (ssl module)": ssl.OPENSSL_VERSION,
        "postgresql": dsn_version or "not measured",
    }


LIMIT: Final = 1.3
"""Each CPU and latency target: at most this many times its floor, measured in the run."""
MEMORY_ALLOWANCE: Final = 2 * 1024
"""Memory per query in flight: at most bare aiohttp's per held request plus this."""


@dataclass(frozen=True)
class Floor:
    """What one figure cannot go below on this design, from parts measured in the run."""

    value: float
    parts: str
    """What it is made of, as the report says it."""


def _floors(res: Results, total: int, raw_labels: list[str]) -> dict[str, Floor]:
    """The floor under each figure with a target, from what this run measured (the
    signatures, bare aiohttp, the raw MQTT exchange); a figure's floor is missing when a
    part of it was not measured."""
    floors: dict[str, Floor] = {}
    c = res.floor.get("crypto")
    if not c:
        return floors
    jwt, qsign, qverify = c["verify_query_jwt_us"], c["sign_question_us"], c["verify_question_us"]
    rsign, rverify = c["sign_reply_us"], c["verify_reply_us"]

    def leanest(slot: dict[str, list[dict[str, Any]]], key: str) -> tuple[str, float]:
        label = _best_raw(slot, raw_labels, key)
        if label is None:
            return "not measured", float("nan")
        return label, _spread(slot[label], key).median

    http = res.floor.get("http")
    h = http["cpu_us_per_answer"] if http else float("nan")
    raw5_label, raw5 = leanest(res.throughput, "cpu_us_per_answer")
    floors["cpu5"] = Floor(h + jwt + qsign + 5 * rverify + raw5, (
        f"bare aiohttp {h:.0f} + query JWT verified {jwt:.0f} + question signed {qsign:.0f} + "
        f"5 replies verified {5 * rverify:.0f} + the raw exchange ({raw5_label}) {raw5:.0f} µs"))
    raw311_label, raw311 = leanest(res.cpu311, "cpu_us_per_reply")
    floors["cpu311"] = Floor(rverify + raw311, (
        f"reply verified {rverify:.1f} + the raw exchange ({raw311_label}) {raw311:.1f} µs"))
    slot = res.latency.get(total, {})
    fastest = _best_raw(slot, raw_labels, "p50")
    if fastest is not None:
        base = _spread(slot[fastest], "p50").median
        signing_ms = total * (qverify + rsign + rverify) / 1000
        floors["p50"] = Floor(base + signing_ms / 2, (
            f"the raw exchange ({fastest}) {base:.1f} ms + {total} × (question verified "
            f"{qverify:.0f} + reply signed {rsign:.0f} + reply verified {rverify:.0f} µs) = "
            f"{signing_ms:.1f} ms of CPU on 2 cores"))
    per_answer = jwt + qsign + qsign + 5 * (qverify + rsign + rverify)
    parts = (f"the signatures of one answer, machine-wide: query JWT signed ~{qsign:.0f} "
             f"and verified {jwt:.0f}, question signed {qsign:.0f}, 5 × (question "
             f"verified, reply signed, reply verified) = {per_answer:.0f} µs")
    exchange = _best_raw(res.throughput, raw_labels, "per_s", max)
    exchange_us = (_spread(res.throughput[exchange], "machine_us:all").median
                   if exchange is not None else float("nan"))
    if not math.isnan(exchange_us):
        parts += (f" + the raw exchange ({exchange}) machine-wide {exchange_us:.0f} µs "
                  "(its requester, responders and Mosquitto) = "
                  f"{per_answer + exchange_us:.0f} µs")
        per_answer += exchange_us
    floors["per_s"] = Floor(2e6 / per_answer, f"{parts}; 2 cores / that")
    held = res.floor.get("http_memory")
    if held:
        floors["memory"] = Floor(held["per_query_bytes"],
                                 "bare aiohttp holding one request (connection, request, "
                                 "handler task)")
    return floors


def _targets(res: Results, total: int, floors: dict[str, Floor]) -> list[Target]:
    """Issue 21's targets, each a ratio measured in this run: against the HTTP fan-out peer,
    and against the floor."""
    targets: list[Target] = []
    nan = float("nan")

    def median(runs: list[dict[str, Any]] | None, key: str) -> float:
        return _spread(runs or [], key).median

    def known(*values: float) -> bool:
        return not any(math.isnan(v) for v in values)

    slot = res.latency.get(total, {})
    ours, theirs = median(slot.get("samsvar"), "p50"), median(slot.get(PEER), "p50")
    targets.append(Target(
        f"samsvar ahead of {PEER} on N={total} answer p50", f"< 1.00× {PEER}",
        f"{ours:.1f} / {theirs:.1f} ms = {ours / theirs:.2f}×" if known(ours, theirs)
        else "not measured", ours < theirs if known(ours, theirs) else None))
    ours, theirs = median(res.throughput.get("samsvar"), "per_s"), median(
        res.throughput.get(PEER), "per_s")
    targets.append(Target(
        f"samsvar ahead of {PEER} on N=5 answers/s", f"> 1.00× {PEER}",
        f"{ours:.0f} / {theirs:.0f} = {ours / theirs:.2f}×" if known(ours, theirs)
        else "not measured", ours > theirs if known(ours, theirs) else None))
    for key, name, runs, figure, fmt in (
            ("cpu5", "broker CPU per answer at N=5", res.throughput.get("samsvar"),
             "cpu_us_per_answer", "{:.0f} µs"),
            ("cpu311", f"broker CPU per reply at N={total}", res.cpu311.get("samsvar"),
             "cpu_us_per_reply", "{:.1f} µs"),
            ("p50", f"N={total} answer p50", slot.get("samsvar"), "p50", "{:.1f} ms")):
        value = median(runs, figure)
        floor = floors[key].value if key in floors else nan
        ok = known(value, floor)
        targets.append(Target(
            f"{name} ≤ {LIMIT:.1f}× its floor", f"≤ {LIMIT:.2f}×",
            (f"{fmt.format(value)} / floor {fmt.format(floor)} = {value / floor:.2f}×" if ok
             else "not measured"), value <= LIMIT * floor if ok else None))
    value = res.memory["per_query_bytes"] if res.memory else nan
    floor = floors["memory"].value if "memory" in floors else nan
    ok = known(value, floor)
    targets.append(Target(
        f"memory per query in flight ≤ bare aiohttp + {MEMORY_ALLOWANCE // 1024} KiB",
        f"≤ +{MEMORY_ALLOWANCE / 1024:.2f} KiB",
        (f"{value / 1024:.2f} KiB = bare aiohttp {floor / 1024:.2f} "
         f"+ {(value - floor) / 1024:.2f} KiB" if ok else "not measured"),
        value <= floor + MEMORY_ALLOWANCE if ok else None))
    return targets


def _floor_table(res: Results, total: int, floors: dict[str, Floor]) -> Table:
    """Each target beside its floor: what the whole job cannot do without, measured in this
    run (signatures, bare HTTP, the raw MQTT exchange); everything else comes on top."""
    t = Table("The floor under each target (measured in this run)",
              ["figure", "what the whole job cannot do without", "floor", "target",
               "measured", "ratio to the floor"])
    rows = (("cpu5", "broker CPU per answer, N=5", res.throughput.get("samsvar", []),
             "cpu_us_per_answer", "{:.0f} µs", f"≤ {LIMIT:.1f}× floor"),
            ("cpu311", f"broker CPU per reply, N={total}", res.cpu311.get("samsvar", []),
             "cpu_us_per_reply", "{:.1f} µs", f"≤ {LIMIT:.1f}× floor"),
            ("p50", f"answer p50, N={total}", res.latency.get(total, {}).get("samsvar", []),
             "p50", "{:.1f} ms", f"≤ {LIMIT:.1f}× floor"),
            ("per_s", "answers/s, N=5", res.throughput.get("samsvar", []), "per_s",
             "{:,.0f}/s", f"(none; ahead of {PEER})"))
    for key, name, runs, figure, fmt, target in rows:
        if key not in floors:
            continue
        f, value = floors[key], _spread(runs, figure).median
        bound = ("≤ " if key == "per_s" else "") + fmt.format(f.value)
        t.rows.append([name, f.parts, bound, target, fmt.format(value),
                       ratio(value, f.value)])
    if "memory" in floors:
        f = floors["memory"]
        ours = res.memory["per_query_bytes"] if res.memory else float("nan")
        t.rows.append(["broker memory per in-flight query", f.parts,
                       f"{f.value / 1024:.2f} KiB",
                       f"≤ floor + {MEMORY_ALLOWANCE / 1024:.2f} KiB", f"{ours / 1024:.2f} KiB",
                       f"+{(ours - f.value) / 1024:.2f} KiB"])
    t.notes += [
        ("Floor: only what the whole job must do, measured minutes apart on this machine. "
        "Signatures: `python -m bench.floor crypto`, the broker's own code (schemas.jose, "
        "the default algorithm: Ed25519 by libsodium) on payloads of the real sizes: CPU time "
        "(not wall time, which on a shared machine counts other processes' turns), medians "
        "of 7 rounds in one otherwise idle process. Bare aiohttp: `python -m bench.floor "
        "http`, the HTTP server the broker is built on with nothing behind it, driven by the "
        "same load generator (CPU per request at 64 in flight; RSS per request held, 10,000 "
        "held)."),
        ("Everything else comes on top of a floor: reading and checking JSON, the law, merging, "
        "the access log, the broker's and the adapters' own Python. A target below its floor "
        "cannot be reached by this design on this machine; a target just above it leaves "
        "that much for everything else."),
        ("Answer p50 at N: a lower bound when the raw exchange already keeps both cores busy "
        "(its requester, responders and Mosquitto together; see the CPU table): the "
        "signature work then adds at least half its CPU time to the wall time."),
    ]
    return t


def _algorithms_table(found: dict[str, dict[str, float]]) -> Table:
    """The signature algorithms the registry allows, on the real sizes (issue 21)."""
    t = Table("Signature algorithms on the real payload sizes (µs per operation)",
              ["algorithm (library)", "query JWT sign / verify", "question sign / verify",
               "reply sign / verify", "broker, per answer at N=5",
               "the whole job, per answer at N=5"])
    least = min(found, key=lambda name: found[name]["job_per_answer_n5"])
    for name, us in found.items():
        t.rows.append([name + (" (least)" if name == least else ""),
                       f"{us['sign_query']:.0f} / {us['verify_query']:.0f}",
                       f"{us['sign_question']:.0f} / {us['verify_question']:.0f}",
                       f"{us['sign_reply']:.0f} / {us['verify_reply']:.0f}",
                       f"{us['broker_per_answer_n5']:.0f}", f"{us['job_per_answer_n5']:.0f}"])
    t.notes.append("`python -m bench.floor algorithms`: signing inputs of the real sizes (a "
                   "query JWT ~700 B, the signed question and reply of this run), 16 keys in "
                   "turn, CPU time, the median of 15 rounds of 200 calls, all taking turns. The broker's part of one answer "
                   "at N=5: the query verified, the question signed, 5 replies verified; the "
                   "whole job's: the query signed too, and 5 × (question verified, reply "
                   "signed). New keys (`samsvar keys generate`, the demo, this bench) use "
                   "schemas.jose.DEFAULT_ALG, Ed25519 through libsodium; ES256 stays "
                   "supported.")
    return t


_RAW_TWIN: dict[str, str] = {"broker": "requester", "adapters": "responders",
                             "Mosquitto": "Mosquitto", "all": "all"}
"""Which process of the raw exchange does the part of each of the whole job's."""


def _best_raw(slot: dict[str, list[dict[str, Any]]], raw_labels: list[str], key: str,
              pick: Callable[..., str] = min) -> str | None:
    """The raw client whose runs in ``slot`` have the lowest median ``key`` (``pick=max``:
    the highest), or None if no raw client was measured there."""
    found = {lb: _spread(slot[lb], key).median for lb in raw_labels if slot.get(lb)}
    return pick(found, key=found.__getitem__) if found else None


def _spread(runs: list[dict[str, Any]], key: str) -> Spread:
    return spread([r[key] for r in runs if key in r])


def build_report(res: Results, b: Bench, command: str, started: float) -> tuple[str, str]:
    assert b.fed is not None
    fed = b.fed
    tables: list[Table] = []
    raw_labels = [lb for lb, _, _ in RAW_CLIENTS]

    if res.latency:
        t = Table("Latency: one query at a time (ms)",
                  ["N", "samsvar p50", "samsvar p99", f"{PEER} p50", f"{PEER} p99",
                   f"samsvar / {PEER} p50", *[f"{lb} p50" for lb in raw_labels],
                   "fastest raw p50 / p99", "ratio p50", "ratio p99", "incomplete"])
        for n, slot in sorted(res.latency.items()):
            ours = slot.get("samsvar", [])
            p50, p99 = _spread(ours, "p50"), _spread(ours, "p99")
            raws = {lb: (_spread(slot.get(lb, []), "p50"), _spread(slot.get(lb, []), "p99"))
                    for lb in raw_labels}
            fastest = _best_raw(slot, raw_labels, "p50")
            f50, f99 = raws[fastest] if fastest else (spread([]), spread([]))
            t.rows.append([str(n), fmt_ms(p50), fmt_ms(p99), *[fmt_ms(raws[lb][0]) for lb in
                                                              raw_labels],
                           f"{f50.median:.2f} / {f99.median:.2f} ({fastest})",
                           ratio(p50.median, f50.median), ratio(p99.median, f99.median),
                           str(sum(r["incomplete"] for r in ours))])
            peer = slot.get(PEER, [])
            q50, q99 = _spread(peer, "p50"), _spread(peer, "p99")
            t.rows[-1][3:3] = [fmt_ms(q50), fmt_ms(q99), ratio(p50.median, q50.median)]
        t.notes.append("samsvar: HTTP POST of a signed JWT → broker → N adapters → answer, "
                       "measured by the load generator; raw: one question to N topics and N "
                       "replies back, measured by the requester. Cells: median of the runs "
                       "(min–max).")
        t.notes.append(f"{PEER}: the incumbent design (bench/httpfanout.py): the same broker "
                       "core, the same adapters and the same load generator, the questions "
                       "POSTed to each producer's own HTTP endpoint over keep-alive "
                       "connections and the signed replies read from the responses.")
        tables.append(t)

    if res.throughput:
        ours = res.throughput.get("samsvar", [])
        t = Table("Throughput: fan-out 5, 64 queries (raw: 64 scatter-gathers) in flight",
                  ["client", "answers/s", "p50 ms", "p99 ms", "ratio answers/s to fastest raw",
                   "incomplete"])
        fastest = _best_raw(res.throughput, raw_labels, "per_s", max)
        best = _spread(res.throughput[fastest], "per_s").median if fastest else float("nan")
        for label in ["samsvar", PEER, *raw_labels]:
            runs = res.throughput.get(label, [])
            if not runs:
                continue
            s = _spread(runs, "per_s")
            t.rows.append([label + (" (fastest raw)" if label == fastest else ""),
                           s.text("{:.0f}"), fmt_ms(_spread(runs, "p50")),
                           fmt_ms(_spread(runs, "p99")), ratio(s.median, best),
                           str(sum(r.get("incomplete", 0) for r in runs))])
        tables.append(t)

    if res.throughput.get("samsvar") or res.cpu311.get("samsvar"):
        t = Table("CPU: the broker process (psutil user+system, all threads) beside the raw "
                  "requester process (its own CPU time)",
                  ["load", "client", "µs per answer", "µs per reply",
                   "of it the event-loop thread, µs per answer", "answers/s in window",
                   "ratio µs/answer to leanest raw"])
        for load, slot in (("N=5, 64 in flight", res.throughput),
                           (f"N={fed.total}, 4 in flight", res.cpu311)):
            leanest = _best_raw(slot, raw_labels, "cpu_us_per_answer")
            low = _spread(slot[leanest], "cpu_us_per_answer").median if leanest else float("nan")
            for label in ["samsvar", PEER, *raw_labels]:
                runs = slot.get(label, [])
                if not runs:
                    continue
                per_answer = _spread(runs, "cpu_us_per_answer")
                t.rows.append([load, {"samsvar": "samsvar broker",
                                      PEER: f"{PEER} peer broker"}.get(label, label)
                               + (" (leanest raw)" if label == leanest else ""),
                               per_answer.text("{:.0f}"),
                               _spread(runs, "cpu_us_per_reply").text("{:.1f}"),
                               _spread(runs, "loop_cpu_us_per_answer").text("{:.0f}")
                               if label in ("samsvar", PEER) else "–",
                               _spread(runs, "per_s").text("{:.1f}"), ratio(per_answer.median, low)])
        t.notes.append("The broker's figure is its whole process (HTTP, JWT, law, fan-out, "
                       "reply verification, merge, access log thread); the raw requester does "
                       "only the MQTT scatter-gather. Producers run on the same 2 cores in both.")
        t.notes.append("The event-loop thread: the broker's main thread alone (psutil's "
                       "per-thread times); the rest is the access log's SQLite thread and "
                       "the runtime's own threads.")
        tables.append(t)

    ours = res.throughput.get("samsvar", [])
    if any("machine_us:all" in r for r in ours):
        raw_label = _best_raw(res.throughput, raw_labels, "per_s", max)
        raw = res.throughput[raw_label] if raw_label else []
        peer = res.throughput.get(PEER, [])
        t = Table("The whole machine's CPU per answer at N=5, 64 in flight",
                  ["process", "µs per answer", "share of the 2 cores",
                   f"{PEER}: µs per answer", "share of the 2 cores",
                   f"the raw exchange ({raw_label or 'not measured'}): process", "µs per answer",
                   "share of the 2 cores"])

        def cells(runs: list[dict[str, Any]], name: str) -> list[str]:
            if not any(f"machine_us:{name}" in r for r in runs):
                return ["–", "–"]
            busy = spread([r[f"machine_us:{name}"] * r["per_s"] / 1e6 / 2 for r in runs
                           if f"machine_us:{name}" in r])
            return [_spread(runs, f"machine_us:{name}").text("{:.0f}"), busy.text("{:.0%}")]

        names = [k.split(":", 1)[1] for k in ours[0] if k.startswith("machine_us:")]
        for name in names:
            twin = _RAW_TWIN.get(name)
            t.rows.append([{"all": "all of them"}.get(name, name), *cells(ours, name),
                           *cells(peer, name),
                           {"all": "all of them"}.get(twin or "", twin or "–"),
                           *(cells(raw, twin) if twin else ["–", "–"])])
        t.notes.append("psutil user+system time of each process over the load generator's "
                       "measured window, divided by the answers in it: the broker, the adapter "
                       "processes (all groups; at N=5 five adapters answer), Mosquitto and the "
                       "load generator itself. What one answer costs the machine, and so how "
                       "many answers two cores can give at most (1 s × 2 / the total).")
        t.notes.append(f"{PEER}: the same processes of the peer, read the same way: its "
                       "broker, the processes hosting its producers' HTTP endpoints, and the "
                       "load generator (no MQTT server).")
        t.notes.append("The raw exchange beside it, read the same way over its requester's "
                       "window: the requester, the process hosting its responders, and "
                       "Mosquitto; the fastest raw client of the throughput table.")
        tables.append(t)

    if res.log.get("sqlite") or res.log.get("postgresql") or res.log.get("postgresql_error"):
        t = Table("Access log under the throughput load (N=5, 64 in flight)",
                  ["store", "entries/s (= answers/s)", "commits/s", "rows written (check)"])
        for store in ("sqlite", "postgresql"):
            runs = res.log.get(store) or []
            metric = res.log.get(f"{store}_metric")
            commits = "not observable yet"
            if metric and runs and all("commits_per_s" in r for r in runs):
                commits = _spread(runs, "commits_per_s").text("{:.0f}")
            if runs:
                t.rows.append([store, _spread(runs, "per_s").text("{:.0f}"), commits,
                               str(res.log.get(f"{store}_rows", "?"))])
            elif store == "postgresql" and res.log.get("postgresql_error"):
                t.rows.append([store, "not measured: " + res.log["postgresql_error"][:80], "",
                               ""])
        if not (res.log.get("sqlite_metric") or res.log.get("postgresql_metric")):
            t.notes.append("The broker's /metrics exposes no access-log commit counter "
                           "(samsvar_access_log_commit_seconds counts entries, not commits), "
                           "so commits per second and entries per commit cannot be read from "
                           "outside; every 200 answer is one durable entry, so entries/s = "
                           "answers/s. `python -m bench.accesslog_bench` measures commits of "
                           "the log alone.")
        tables.append(t)

    if res.memory:
        m = res.memory
        per = m["per_query_bytes"]
        t = Table(f"Broker memory with {HELD:,} queries in flight (fan-out 5, producers never "
                  "answer)", ["RSS idle", "RSS loaded", "per in-flight query",
                              "broker HTTP connections", "in-flight metric"])
        t.rows.append([f"{m['rss_idle'] / 2**20:.1f} MiB", f"{m['rss_loaded'] / 2**20:.1f} MiB",
                       f"{per / 1024:.2f} KiB", str(m["established"]),
                       str(m["in_flight_metric"] if m["in_flight_metric"] is not None
                           else "not exposed")])
        t.notes.append("Single run (the broker is restarted for it): RSS_idle after a warm-up "
                       "of answered queries; RSS_loaded once the broker's CPU has gone quiet "
                       f"with {m['measured_held']:,} held (its in-flight gauge; "
                       f"{m['settle_s']:.0f} s after the first was sent); per query = "
                       "(RSS_loaded - RSS_idle) / held. Includes each query's HTTP connection, "
                       "request, handler task and pending fan-out state.")
        tables.append(t)

    floors = _floors(res, fed.total, raw_labels)
    if floors:
        tables.append(_floor_table(res, fed.total, floors))
    if res.floor.get("algorithms"):
        tables.append(_algorithms_table(res.floor["algorithms"]))
    targets = _targets(res, fed.total, floors)

    versions = _versions(res.log.get("postgresql_version"))
    groups = min(MAX_GROUPS, fed.total)
    setup = [
        (f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; whole run "
         f"{(time.monotonic() - started) / 60:.1f} min"),
        *[f"- {k}: {v}" for k, v in versions.items()],
        f"- command: `{command}`",
        ("- load on the machine besides this benchmark: load average (1/5/15 min) "
         f"{'/'.join(f'{x:.2f}' for x in b.args.loadavg_start)} at the start, "
         f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} at the end (2 cores; the machine "
         "is shared with other sessions' test runs, so some runs lose CPU to them)"),
        (f"- federation: {fed.total} producers, run as {groups} processes of "
         f"~{fed.total // groups} `producer_adapter.Adapter`s each (asyncio tasks, one MQTT "
         "connection each, gmqtt, uvloop; in-memory records, no block register, no disclosure "
         "log, max_concurrent 64); broker as `python -m samsvar broker --log-level warning` "
         "(gmqtt, uvloop) with a SQLite access log (PostgreSQL for the log row); load generator "
         "in its own process (one keep-alive HTTP/1.1 connection per query in flight, "
         "bench/loadgen.py), signing a fresh EdDSA query JWT per request with "
         "consumer_client.sign_query"),
        (f"- messages: signed question {fed.question_bytes} B, signed reply {fed.reply_bytes} B "
         "(2 records); the raw baseline sends payloads of exactly these sizes; QoS 1, MQTT 5 "
         "both ways"),
        ("- raw baseline: one responder process per client hosting N connections, one "
         "requester process; `aiomqtt` = aiomqtt 2.x with its defaults (paho leaves Nagle "
         "on), `+nodelay` = with TCP_NODELAY on the client socket as the broker and adapters "
         "set it (transport.settings.NODELAY), `gmqtt` (asyncio "
         "transports set TCP_NODELAY), `paho+nodelay` = paho-mqtt driven by hand from one "
         "selectors loop"),
        ("- Mosquitto: own config, `set_tcp_nodelay true`, `persistence false`, "
         "`max_queued_messages 1000000`, `max_inflight_messages 1000` (so a client may "
         "publish 1,000 unacknowledged: the Receive Maximum; the default 20 makes a fan-out "
         "to 311 wait 15 PUBACK round trips, raw and samsvar alike), as deploy/mosquitto.conf; "
         "everything else default"),
        (f"- runs per figure: {b.plan.runs}; raw and samsvar runs interleaved, minutes apart "
         "at most"),
    ]
    if any(res.skipped.values()):
        setup.append("- skipped for the time budget: " + ", ".join(
            f"{k} {v}" for k, v in res.skipped.items() if v))
    target_table = Table("Targets (PASS/MISS)", ["target", "limit", "measured", "verdict"],
                         [[t.name, t.limit, t.measured, t.verdict] for t in targets])

    md = ["# Benchmark results: the whole job against the raw transport and against the "
          "incumbent design, an HTTP call per producer (issues 7 and 21)", "",
          "Produced by `python -m bench` (see bench/__main__.py). Measurement only.", "",
          "## Set-up", "", *setup, "", target_table.markdown(),
          "## Figures", "", *[t.markdown() for t in tables]]
    for label, prof in res.profile.items():
        md += [f"## Where the time goes (py-spy, broker, {label})", "", *_profile_md(prof)]
    plain = "\n".join(t.plain() for t in [target_table, *tables])
    return "\n".join(md) + "\n", plain


def _profile_md(p: dict[str, Any]) -> list[str]:
    if "error" in p:
        return [f"py-spy could not profile the broker: `{p['error']}`", ""]
    n = p["samples"] or 1
    m = p["main"] or 1
    out = [(f"py-spy `record --nonblocking --threads --rate 250` on the broker process while "
            f"it served {p['answers_per_s']:.1f} answers/s (fewer than unprofiled: py-spy itself "
            f"takes CPU on this 2-core machine). {p['samples']} non-idle samples; by thread "
            "(a sample inside a C call counts as busy, waiting included: the access log's "
            "thread mostly waits on SQLite and the disk, and its CPU time is the CPU table's "
            "whole process less its event-loop thread):"), "",
           "| % of samples | thread |", "|---:|---|"]
    out += [f"| {100 * c / n:.1f} | {t} |" for t, c in p["threads"]]
    out += ["", ("The event-loop thread (MainThread), which bounds throughput — top functions "
                 "by self time:"), "", "| % of main-thread samples | function |", "|---:|---|"]
    out += [f"| {100 * c / m:.1f} | `{f}` |" for f, c in p["self"][:20]]
    out += ["", "Main-thread self time by package / module:", "", "| % | where |", "|---:|---|"]
    out += [f"| {100 * c / m:.1f} | `{f}` |" for f, c in p["areas"]]
    out += ["", "Main-thread inclusive time of the project's own functions:", "",
            "| % total | function |", "|---:|---|"]
    out += [f"| {100 * c / m:.1f} | `{f}` |" for f, c in p["total"][:15]]
    return out + [""]


# -- main ---------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else FULL
    if args.runs:
        # More runs get proportionally more time where each run repeats the measurements.
        scale = max(1.0, args.runs / plan.runs)
        budgets = {k: v * scale if k in ("latency", "throughput", "cpu", "log") else v
                   for k, v in plan.budgets.items()}
        plan = Plan(**{**plan.__dict__, "runs": args.runs, "budgets": budgets})
    wanted = set(SCENARIOS) if args.scenario == "all" else {args.scenario}
    started = time.monotonic()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = Results({}, {}, {}, {}, None, {}, {}, {})
    args.loadavg_start = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="samsvar-bench-")
    try:
        with Processes(Path(tmp)) as procs:
            _run(args, plan, wanted, started, command, res, procs, Path(tmp))
    finally:
        if args.keep:
            say(f"kept the work folder {tmp} (logs, configs, profile)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _run(args: argparse.Namespace, plan: Plan, wanted: set[str], started: float, command: str,
         res: Results, procs: Processes, root: Path) -> None:
    b = Bench(procs, root, args, plan)
    say(f"work folder {root}; scenarios: {', '.join(sorted(wanted))}")
    setup = Budget("setup", plan.budgets["setup"])
    b.start_federation(args.producers)
    if wanted & {"latency", "throughput", "cpu"}:  # cpu: the raw requesters' CPU beside
        b.start_raw_responders()
    if wanted & {"latency", "throughput", "cpu"}:
        b.start_peer()
    b.start_broker("sqlite")
    say(f"broker up, all {args.producers} producers online "
        f"({setup.seconds - setup.left():.0f} s)")

    steps: list[tuple[str, Callable[[Budget], None]]] = []
    if "latency" in wanted:
        steps.append(("latency", lambda bu: scenario_latency(b, res, bu)))
    if wanted & {"throughput", "cpu", "log"}:
        steps.append(("throughput", lambda bu: scenario_throughput(
            b, res, bu, with_raw="throughput" in wanted)))
    if "profile" in wanted:
        steps.append(("profile", lambda bu: scenario_profile(b, res, bu)))
    if "cpu" in wanted:
        steps.append(("cpu", lambda bu: scenario_cpu311(b, res, bu)))
    if "log" in wanted:
        def log_step(bu: Budget) -> None:
            assert b.fed is not None
            res.log["sqlite"] = res.throughput.get("samsvar", [])
            res.log["sqlite_metric"] = _commit_counter(b.metrics())
            res.log["sqlite_rows"] = _entries_sqlite(b.fed.root / "sqlite-access-log.db")
            scenario_log_pg(b, res, bu)
        steps.append(("log", log_step))
    if "memory" in wanted:
        steps.append(("memory", lambda bu: scenario_memory(b, res, bu)))
    if "floor" in wanted:
        steps.append(("floor", lambda bu: scenario_floor(b, res, bu)))
    for name, step in steps:
        budget = Budget(name, plan.budgets[name])
        say(f"-- {name} (budget {budget.seconds:.0f} s)")
        try:
            step(budget)
        except RuntimeError as exc:
            say(f"{name} failed: {exc}")
            b.notes.append(f"{name} failed: {str(exc).splitlines()[0]}")
        res.skipped[name] = budget.skipped
        if b.broker is None and name != steps[-1][0]:
            b.start_broker("sqlite2")

    markdown, plain = build_report(res, b, command, started)
    if b.notes:
        markdown += "\n## Problems in this run\n\n" + "\n".join(f"- {n}" for n in b.notes) + "\n"
    print(plain)
    out = Path(args.out) if args.out else (
        root.parent / "samsvar-bench-RESULTS.md" if args.quick else
        Path(__file__).resolve().parent / "RESULTS.md")
    out.write_text(markdown, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(res.__dict__, default=str, indent=1))
    say(f"wrote {out}; whole run {(time.monotonic() - started) / 60:.1f} min")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    p.add_argument("--quick", action="store_true", help="one short run per figure (~3 min)")
    p.add_argument("--producers", type=int, default=311)
    p.add_argument("--runs", type=int, help="runs per figure (default 3; --quick: 1)")
    p.add_argument("--out", help="the results file (default bench/RESULTS.md; --quick: /tmp)")
    p.add_argument("--json", help="also write the raw results as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, profile)")
    p.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL for the log scenario")
    p.add_argument("--metrics", action="store_true", default=True, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return run(args)
    except KeyboardInterrupt:
        say("interrupted: everything started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
