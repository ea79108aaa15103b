"""The broker as a separate process, for tests that kill it or read everything it writes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.e2e.conftest import Federation

SAMSVAR = [sys.executable, "-m", "samsvar"]


def write_broker_config(fed: Federation, port: int, *, directory: Path | None = None) -> Path:
    """A broker.toml for ``fed``; its access log lives in ``directory`` (default fed.tmp)."""
    directory = directory or fed.tmp
    settings = fed.server.settings(fed.prefix)
    path = directory / "broker.toml"
    path.write_text("\n".join([
        "[broker]",
        f'registry = "{os.path.relpath(fed.tmp / "registry.toml", directory)}"',
        f'key = "{os.path.relpath(fed.tmp / "broker.jwk", directory)}"',
        'instance = "proc"', f'listen = "127.0.0.1:{port}"', "",
        "[mqtt]", f'url = "{settings.url}"', f'prefix = "{settings.prefix}"',
        f'protocol = "{settings.protocol}"',
        f"shared_subscriptions = {'true' if settings.shared_subscriptions else 'false'}",
        "",
        "[access_log]", 'kind = "sqlite"', 'path = "access-log.db"', "checkpoint_interval_s = 0.5",
        "",
    ]), encoding="utf-8")
    return path


def start_broker(config: Path, log: Path, *, debug: bool = False) -> subprocess.Popen[bytes]:
    """``samsvar broker`` with its JSON log lines appended to ``log``."""
    level = ["--log-level", "debug"] if debug else []
    with log.open("ab") as sink:
        return subprocess.Popen([*SAMSVAR, "broker", "--config", str(config), *level],
                                stdout=sink, stderr=sink)


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the broker answers and every producer is online."""
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert proc.poll() is None, log.read_text()
            try:
                async with http.get(f"{url}/v1/producers") as resp:
                    body = await resp.json()
                    if resp.status == 200 and all(p["online"] for p in body["producers"]):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("broker never became ready:\n" + log.read_text())
