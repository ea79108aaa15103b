"""``python -m bench`` without the bench extra says in one line what to install (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# ``python -m bench`` in an interpreter where psutil cannot be imported, whether or not the
# bench extra is installed here: a None in sys.modules makes ``import psutil`` fail.
WITHOUT_PSUTIL = ("import runpy, sys; sys.modules['psutil'] = None; "
                  "runpy.run_module('bench', run_name='__main__', alter_sys=True)")


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_PSUTIL, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_without_psutil_one_line_names_the_extra_and_fails() -> None:
    done = run_bench("--scenario", "latency", "--quick")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "psutil" in lines[0]
    assert "pip install -e '.[bench]'" in lines[0]
    assert done.stdout == ""

