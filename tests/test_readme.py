"""The README's quick start is the truth: CI runs its test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quick_start_has_two_commands() -> None:
    demo, tests = quick_start_commands()
    assert "samsvar demo" in demo
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = quick_start_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci


def test_ci_runs_the_readme_lint_command() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^Lint and types: `(.+?)`", text, flags=re.MULTILINE)
    assert found is not None, "the README says how to lint and type-check"
    lint = found.group(1)
    assert "ruff check ." in lint and "mypy" in lint
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert lint in ci
