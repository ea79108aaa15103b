"""Fixtures for the wire-contract tests: the shared reference data next to the repository."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO_ROOT = Path(__file__).resolve().parents[2]


def reference_dir() -> Path | None:
    """``../shared/reference`` beside the repository (the repo is ``.../main``), if present."""
    candidate = REPO_ROOT.parent / "shared" / "reference"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def reference() -> Path:
    """The shared reference data; a missing folder fails under CI=true, else skips."""
    found = reference_dir()
    if found is None:
        message = f"shared reference data not found at {REPO_ROOT.parent / 'shared/reference'}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _vectors() -> list[dict[str, object]]:
    found = reference_dir()
    if found is None:
        return []
    path = found / "testpersonnummer" / "personnummer-meta" / "list.json"
    vectors: list[dict[str, object]] = json.loads(path.read_text(encoding="utf-8"))
    return vectors


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``valid_vector`` / ``invalid_vector``: each entry of personnummer-meta's list.json."""
    for name, valid in (("valid_vector", True), ("invalid_vector", False)):
        if name in metafunc.fixturenames:
            vectors = [v for v in _vectors() if v["valid"] is valid]
            if not vectors and IN_CI:
                raise pytest.UsageError("CI=true but the personnummer vectors are missing")
            params = [pytest.param(v, id=f"{v['type']}-{v['separated_long']}") for v in vectors]
            metafunc.parametrize(name, params)


@pytest.fixture(scope="session")
def skatteverket_sample(reference: Path) -> list[str]:
    """1000 numbers (seeded sample) from Skatteverket's list of test personnummer."""
    path = reference / "testpersonnummer" / "skatteverket-testpersonnummer-api-2024-07.txt"
    lines = [ln.strip() for ln in path.read_text(encoding="ascii").splitlines() if ln.strip()]
    return random.Random(20240701).sample(lines, 1000)
