"""Shared helpers for the deployment files' tests: where they are, and the validators.

The validators come from the ``test`` extra (``docker-compose``, ``hadolint`` and
``kubernetes-validate`` from PyPI) or from the machine (``systemd-analyze``, and
``haproxy``, which ``.ci/run`` installs). A missing one skips its test on a laptop and
fails it under ``CI=true``, where it is always installed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str, *, why: str) -> str:
    """The path of a command-line validator: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed ({why})"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true forbids skipping it")
    pytest.skip(message)
