"""``python -m bench`` without the ``bench`` extra: one line saying what to install."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

__all__ = ["require_bench_extra"]

INSTALL = "pip install -e '.[bench]'"


def missing() -> list[str]:
    """What of the bench extra this interpreter lacks: psutil (imported), py-spy (a binary,
    on PATH or beside the interpreter)."""
    lacking = []
    try:
        importlib.import_module("psutil")
    except ImportError:
        lacking.append("psutil")
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        lacking.append("py-spy")
    return lacking


def require_bench_extra() -> None:
    """Exit with one line (status 2) unless the bench extra is installed."""
    lacking = missing()
    if lacking:
        print(f"python -m bench needs the bench extra ({' and '.join(lacking)} not found): "
              f"run {INSTALL} in the project's folder", file=sys.stderr)
        sys.exit(2)
