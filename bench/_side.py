"""One side of ``python -m bench.compare``: the whole job at N=5 and at N=311, from one tree.

    python bench/_side.py TREE SECONDS

Run as a file, not as a module, so that ``bench`` (and everything the roles import) comes
from TREE: TREE goes first on ``sys.path`` here and, through :func:`bench._procs.child_env`,
in every process started. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


def main() -> int:
    tree, seconds = sys.argv[1], float(sys.argv[2])
    sys.path.insert(0, tree)
    from bench.__main__ import FULL, Bench  # from TREE
    from bench._procs import Processes

    # mqtt_client: read by trees from before the aiomqtt link was removed
    args = argparse.Namespace(mqtt_client=None, metrics=False, dsn=None)
    root = Path(tempfile.mkdtemp(prefix="samsvar-bench-side-"))
    try:
        with Processes(root) as procs:
            b = Bench(procs, root, args, FULL)
            fed = b.start_federation(311)
            b.start_broker("sqlite")
            n5 = b.product(5, concurrency=64, warmup=2, seconds=seconds)
            n311 = b.product(fed.total, concurrency=1, warmup=1, seconds=seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    keep = ("per_s", "p50", "cpu_us_per_answer", "cpu_us_per_reply", "machine_us:all",
            "machine_us:adapters", "machine_us:Mosquitto")
    print(json.dumps({"n5": {k: n5.get(k) for k in keep},
                      "n311": {k: n311.get(k) for k in keep}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
