"""This tree against an earlier commit, both running at the same time on the same machine.

    python -m bench.compare REV [--rounds 3] [--seconds 6]

The bench machine's speed drifts by up to a third within an hour (bench/RESULTS.md), more
than most single changes move a figure, so two versions measured one after the other
cannot be told apart. Here both run at once: two federations of 311 adapters, two
Mosquittos, two brokers and two load generators share the two cores, so whatever the
machine does, it does to both. Each round measures, for each side, fan-out 5 with 64
queries in flight and fan-out 311 one query at a time (:mod:`bench._side`); the report is
each figure's ratio this tree / REV, round by round and its median. Both sides run at
about half their speed alone; only the ratios mean something.

REV is checked out into a temporary git worktree (removed afterwards) and must have the
benchmark's ``Bench`` class (from the project's second session on).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
SIDE = Path(__file__).resolve().parent / "_side.py"

FIGURES = (
    ("n5", "per_s", "answers/s at N=5, 64 in flight", "higher is better"),
    ("n5", "cpu_us_per_answer", "broker CPU per answer at N=5", "lower is better"),
    ("n5", "machine_us:all", "whole machine's CPU per answer at N=5", "lower is better"),
    ("n5", "machine_us:adapters", "adapters' CPU per answer at N=5", "lower is better"),
    ("n311", "p50", "answer p50 at N=311, one at a time", "lower is better"),
    ("n311", "cpu_us_per_reply", "broker CPU per reply at N=311", "lower is better"),
    ("n311", "machine_us:all", "whole machine's CPU per answer at N=311", "lower is better"),
)


def _round(trees: dict[str, Path], seconds: float) -> dict[str, dict[str, Any]]:
    """Both sides at once; each side's JSON."""
    procs = {name: subprocess.Popen([sys.executable, str(SIDE), str(tree), str(seconds)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, tree in trees.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"the {name} side failed:\n{err.decode(errors='replace')[-2000:]}")
        results[name] = json.loads(out)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev", help="the commit to compare this tree with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0, help="measured window per figure")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="samsvar-bench-compare-") as tmp:
        old = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old),
                        args.rev], check=True, capture_output=True)
        try:
            rounds = []
            for n in range(args.rounds):
                rounds.append(_round({"this tree": ROOT, args.rev: old}, args.seconds))
                print(f"round {n + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           check=False, capture_output=True)
    print(f"this tree / {args.rev}, both running at once ({args.rounds} rounds of "
          f"{args.seconds:g} s per figure):")
    for scenario, key, label, better in FIGURES:
        pairs = [(r["this tree"][scenario][key], r[args.rev][scenario][key]) for r in rounds]
        ratios = [new / old for new, old in pairs if new and old]
        if not ratios:
            continue
        each = ", ".join(f"{new:.1f}/{old:.1f}" for new, old in pairs)
        print(f"  {label}: {statistics.median(ratios):.3f} ({better}; rounds: {each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
