"""The running parts of ``python -m bench``: the plan, the time budgets, and :class:`Bench`,
which starts the federation, the raw baseline, the HTTP fan-out peer and the broker, and
measures them from child processes."""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import httpfanout
from ._procs import PYTHON, Processes, free_port, start_mosquitto
from .federation import Federation, build, fanout_type
from .report import percentile

SCENARIOS = ("latency", "throughput", "cpu", "memory", "log", "profile", "floor")
RAW_CLIENTS: tuple[tuple[str, str, bool], ...] = (
    # label, library, TCP_NODELAY on the client socket
    ("aiomqtt", "aiomqtt", False),
    ("aiomqtt+nodelay", "aiomqtt", True),
    ("gmqtt", "gmqtt", False),
    ("paho+nodelay", "paho", True),
)

__all__ = [
    "DEFAULT_DSN",
    "FULL",
    "HELD",
    "MAX_GROUPS",
    "PEER",
    "QUICK",
    "RAW_CLIENTS",
    "SCENARIOS",
    "Bench",
    "Budget",
    "Plan",
    "readline",
    "say",
    "summarise",
]
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
            line = readline(proc, 120)
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
        return summarise(result, n)

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
        return summarise(self._child_json(f"raw-request-{label}", argv,
                                           timeout=warmup + seconds + 90), n)


def readline(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode(errors="replace") if ready else ""


def summarise(result: dict[str, Any], n: int) -> dict[str, Any]:
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
