"""deploy/Dockerfile: lint-clean, non-root, and it copies exactly what `pip install .` needs.

There is no Docker engine here, so the image is not built; instead the wheel is built from
the very files the Dockerfile copies, and the HEALTHCHECK command is run against a broker
in ``test_compose.py``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.conftest import DEPLOY, ROOT, tool

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's exec-form command."""
    (args,) = [a for i, a in instructions() if i == "HEALTHCHECK"]
    return list(json.loads(args[args.index("CMD") + 3:].strip()))


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", why="pip install -e '.[test]'")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_user_and_healthcheck() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [a for i, a in steps if i == "USER"]
    assert users == ["10001:10001"], "the image runs as the unprivileged samsvar uid"
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and "urllib.request" in command[2]
    assert "/healthz" in command[2]
    assert ("RUN", "pip install . && rm -rf /opt/samsvar-src") in steps


def _packages() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"]}


def _copied() -> set[str]:
    """The files and folders the Dockerfile copies into the build."""
    return {p.rstrip("/") for i, a in instructions() if i == "COPY" for p in a.split()[:-1]}


def test_copies_every_package_and_the_ignore_file_lets_them_through() -> None:
    copied = _copied()
    assert copied == _packages() | {"pyproject.toml", "README.md"}
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == copied
    assert "*" in ignore  # everything else (tests, .venv, .git, keys in demo dirs) stays out


def test_the_copied_files_build_a_complete_wheel(tmp_path: Path) -> None:
    """What ``pip install .`` sees in the image: only the copied files."""
    src = tmp_path / "src"
    src.mkdir()
    for name in sorted(_copied()):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "out"),
         str(src)], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "out").glob("samsvar-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in _packages():
        assert f"{package}/__init__.py" in names, package
    assert fnmatch.filter(names, "samsvar/demo_data/*/*.json"), "the demo data is packaged"
    assert len(fnmatch.filter(names, "producer_adapter/backends/rivta_contracts/*.xsd")) >= 60, \
        "the RIV-TA contract schemas are packaged"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert re.search(r"samsvar\s*=\s*samsvar\.cli:main",
                     zipfile.ZipFile(wheel).read(entry_points).decode())
