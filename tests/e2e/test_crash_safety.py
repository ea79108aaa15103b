"""No answer without its log entry, even when the broker process is killed mid-load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.e2e.conftest import PERSON, Federation, ProducerSpec, record
from tests.e2e.processes import SAMSVAR, start_broker, wait_ready, write_broker_config


async def test_sigkill_mid_load_loses_no_logged_answer(federation_factory: Any) -> None:
    fed: Federation = await federation_factory([
        ProducerSpec("P1", records={PERSON: [record("P1", 1, when="2026-11-01T10:00:00+01:00")]}),
        ProducerSpec("P2", records={PERSON: [record("P2", 1, when="2026-11-02T10:00:00+01:00")]}),
    ])
    for pid in fed.producers:
        await fed.start_adapter(pid)
    port = free_port()
    fed.url = f"http://127.0.0.1:{port}"
    config = write_broker_config(fed, port)
    log = fed.tmp / "broker.log"
    proc = start_broker(config, log)
    answered: list[str] = []
    try:
        await wait_ready(fed.url, proc, log)

        async def worker() -> None:
            while True:
                try:
                    status, _, body = await fed.post(fed.token())
                except (aiohttp.ClientError, ConnectionError):
                    return
                if status == 200:
                    answered.append(body["query_id"])

        workers = [asyncio.create_task(worker()) for _ in range(8)]
        while len(answered) < 60:
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    restarted = start_broker(config, log)
    try:
        await wait_ready(fed.url, restarted, log)
        await fed.post(fed.token())  # the restarted broker answers and logs too
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(20) == 0, log.read_text()

    env = dict(os.environ)
    verify = subprocess.run([*SAMSVAR, "log", "verify", "--config", str(config)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout
    extract = subprocess.run([*SAMSVAR, "log", "extract", "--config", str(config), "--subject",
                              PERSON, "--json"], capture_output=True, text=True, timeout=60)
    assert extract.returncode == 0, extract.stderr
    logged = {a["query_id"] for a in json.loads(extract.stdout)["accesses"]}
    missing = [q for q in answered if q not in logged]
    assert not missing, f"{len(missing)} answers a client received have no log entry"
    assert len(answered) >= 60
