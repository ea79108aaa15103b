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

The parts: :mod:`bench.running` (the plan, the budgets and :class:`~bench.running.Bench`,
which starts and drives everything), :mod:`bench.scenarios` (what each scenario measures),
:mod:`bench.profiles` (reading py-spy's profiles), :mod:`bench.results_md` (RESULTS.md);
this module only reads the command line and runs the chosen scenarios.

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
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ._extra import require_bench_extra

if __name__ == "__main__":  # before anything imports psutil: one line, not a traceback
    require_bench_extra()

from ._procs import Processes
from .results_md import build_report
from .running import (
    DEFAULT_DSN,
    FULL,
    QUICK,
    SCENARIOS,
    Bench,
    Budget,
    Plan,
    say,
)
from .scenarios import (
    Results,
    scenario_cpu311,
    scenario_floor,
    scenario_latency,
    scenario_log,
    scenario_memory,
    scenario_profile,
    scenario_throughput,
)

# bench._side (python -m bench.compare) imports FULL and Bench from here, in this tree and in
# the older trees it compares against (before bench.running existed).
__all__ = ["FULL", "Bench", "main"]

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
        steps.append(("log", lambda bu: scenario_log(b, res, bu)))
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
