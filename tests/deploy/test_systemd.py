"""deploy/systemd/samsvar-adapter.service: verified by systemd, hardened, and matching the
example adapter.toml (the adapter may write exactly where its config keeps its files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from producer_adapter.config import load_stores_config
from tests.deploy.conftest import DEPLOY, tool

UNIT = DEPLOY / "systemd" / "samsvar-adapter.service"
EXAMPLE_CONFIG = DEPLOY / "systemd" / "adapter.toml"


def directives() -> dict[str, list[str]]:
    """Key → every value it is given (systemd allows repeats), across sections."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def _installable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart's program swapped for one that exists here (verify checks it)."""
    d = directives()
    programs = {line.split()[0] for line in d["ExecStart"] + d.get("ExecStartPre", [])}
    here = Path(sys.executable).parent / "samsvar"
    assert here.is_file()
    text = UNIT.read_text(encoding="utf-8")
    for program in programs:
        text = text.replace(program, str(here))
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", why="Debian package systemd")
    result = subprocess.run([analyze, "verify", str(_installable_copy(tmp_path))],
                            check=False, capture_output=True, text=True, timeout=60)
    # Unknown keys and sections are only warnings to systemd: any output at all fails here.
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


def test_exposure_is_low(tmp_path: Path) -> None:
    """``systemd-analyze security``: 0 is locked down, 10 is fully exposed; we keep ≤ 2.0."""
    analyze = tool("systemd-analyze", why="Debian package systemd")
    result = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20",
                             "--no-pager", str(_installable_copy(tmp_path))],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_hardening_and_restart() -> None:
    d = directives()
    assert d["ProtectSystem"] == ["strict"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["Restart"] == ["always"]
    assert d.get("DynamicUser") == ["yes"] or d.get("User") == ["samsvar"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["StartLimitIntervalSec"] == ["0"], "never give up restarting"


def test_the_adapter_may_write_its_block_register_and_disclosure_log() -> None:
    d = directives()
    (exec_start,) = d["ExecStart"]
    assert exec_start.split()[1:] == ["adapter", "--config", "/etc/samsvar/adapter.toml"]
    (block_init,) = d["ExecStartPre"]
    assert block_init.split()[1:] == ["adapter", "block", "init", "--config",
                                      "/etc/samsvar/adapter.toml"]
    writable = [Path(p) for value in d["ReadWritePaths"] for p in value.split()]
    stores = load_stores_config(EXAMPLE_CONFIG)
    assert stores.blocks is not None and stores.blocks["kind"] == "sqlite"
    written = [stores.base / stores.blocks["path"], stores.base / stores.disclosure_log]
    for path in written:
        assert path.is_absolute(), f"{path}: relative to /etc/samsvar, which is read-only"
        assert any(path.parent == w or w in path.parents for w in writable), path
    # the rest of its files are read from the config directory
    assert stores.registry.parent == Path("/etc/samsvar")
    assert d["ReadOnlyPaths"] == ["/etc/samsvar"]
    # state directory and writable path agree
    assert [Path("/var/lib") / s for s in d["StateDirectory"]] == writable
