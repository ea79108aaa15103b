"""The broker never writes clinical or social-care content: not to disk, not to its logs."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.e2e.conftest import PERSON, Federation, ProducerSpec, record
from tests.e2e.processes import start_broker, wait_ready, write_broker_config

SECRETS = ["Xylofonterapi-7731", "Kvastallergi-5519", "Zebrafeber-2048"]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_distinctive_record_texts_never_reach_the_broker_s_files(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory([
        ProducerSpec("P1", records={PERSON: [
            record("P1", 1, when="2026-11-01T10:00:00+01:00", text=SECRETS[0]),
            record("P1", 2, when="2026-11-02T10:00:00+01:00", type_="care_documentation",
                   text=SECRETS[1]),
        ]}),
        ProducerSpec("P2", records={PERSON: [
            record("P2", 1, when="2026-11-03T10:00:00+01:00", type_="alerts", text=SECRETS[2]),
        ]}),
    ])
    for pid in fed.producers:
        await fed.start_adapter(pid)
    broker_dir = fed.tmp / "broker"
    broker_dir.mkdir()
    port = free_port()
    fed.url = f"http://127.0.0.1:{port}"
    config = write_broker_config(fed, port, directory=broker_dir)
    log = broker_dir / "broker.log"
    proc = start_broker(config, log, debug=True)
    try:
        await wait_ready(fed.url, proc, log)
        seen = set()
        for _ in range(5):
            answer = await fed.ask(types=["medication", "care_documentation", "alerts"])
            seen |= {r.get("drug") or r.get("text") or r.get("description")
                     for r in answer["records"]}
        assert set(SECRETS) <= seen, "the consumer must get the content"
        refused = await fed.post(fed.token(relation=False,
                                           types=["medication", "care_documentation"]))
        assert refused[0] == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    written = files_under(broker_dir)
    assert any(p.name.startswith("access-log") for p in written)
    assert log.stat().st_size > 0
    for path in written:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} found in {path.name}"
