"""Fixtures for the wire-contract tests: the shared reference data next to the repository."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import IN_CI, reference_dir


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
