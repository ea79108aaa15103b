"""The witnessed access log end to end over a real MQTT server (Mosquitto): the broker
publishes each signed checkpoint retained on ``{prefix}/checkpoint/{instance}``, every
producer adapter verifies and keeps it, and ``verify_log`` with those witnesses catches a
rollback of the broker's database. The person's extract is proven entry by entry, and
``consumer_client`` refuses it when the log under it was tampered with."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from contextlib import closing
from typing import Any

import pytest

from broker.accesslog import AccessLogConfig, Witnessed, verify_log
from consumer_client import Client, ExtractNotProven
from producer_adapter.witness import read_witnessed
from tests.e2e.conftest import (
    BROKER_ID,
    CITIZEN_PORTAL,
    PERSON,
    USER,
    Federation,
    ProducerSpec,
    record,
    until,
)


@pytest.fixture
async def fed(federation_factory: Any) -> Federation:
    fed: Federation = await federation_factory([
        ProducerSpec("P1", records={PERSON: [record("P1", 1, when="2026-11-01T10:00:00+01:00")]}),
        ProducerSpec("P2", records={}),
    ])
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)
    return fed


async def witnessed_by_all(fed: Federation, size: int, timeout: float = 10) -> None:
    """Until every adapter holds a checkpoint of at least ``size`` entries."""
    assert fed.broker is not None
    instance = fed.broker.config.instance
    async with asyncio.timeout(timeout):
        while True:
            held = [a.witness.latest.get(instance) for pid in fed.adapters
                    for a, _, _ in fed.adapters[pid] if a.witness is not None]
            if len(held) == len(fed.producers) and all(c is not None and c.seq >= size
                                                         for c in held):
                return
            await asyncio.sleep(0.05)


def witnesses(fed: Federation) -> list[Witnessed]:
    out = []
    for pid in fed.producers:
        path = fed.tmp / "producers" / pid / "witness.json"
        for token in read_witnessed(path):
            out.append(Witnessed(witness=f"producer {pid}", token=token))
    return out


async def stop_broker(fed: Federation) -> None:
    fed.shutdown.set()
    for task in fed.tasks:
        await asyncio.wait_for(task, 10)
    fed.tasks.clear()


async def test_checkpoints_are_published_witnessed_and_catch_a_rollback(
        fed: Federation) -> None:
    assert fed.broker is not None
    config: AccessLogConfig = fed.broker.config.access_log
    keys = fed.registry.broker.keys
    for _ in range(2):
        await fed.ask()
    await witnessed_by_all(fed, 2)  # within the 1 s interval, over MQTT
    older = fed.tmp / "older-copy.db"
    assert config.path is not None
    with closing(sqlite3.connect(config.path)) as src, closing(sqlite3.connect(older)) as dst:
        src.backup(dst)  # what an intruder keeps to put back later
    for _ in range(3):
        await fed.ask()
    await stop_broker(fed)  # the shutdown checkpoint goes out before the broker leaves MQTT
    await witnessed_by_all(fed, 5)
    # Each checkpoint came with a consistency proof from the one before: every step linked.
    assert all(a.witness is not None and a.witness.evidence == []
               for pid in fed.adapters for a, _, _ in fed.adapters[pid])
    files = witnesses(fed)
    assert len(files) == 2
    intact = await verify_log(config, broker_keys=keys, witnessed=files)
    assert intact.intact, intact.problem
    assert (intact.entries, intact.witnesses, intact.witnessed_to) == (5, 2, 5)

    for suffix in ("-wal", "-shm"):
        (fed.tmp / f"access-log.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(older, config.path)
    alone = await verify_log(config, broker_keys=keys)
    assert alone.intact  # the database alone cannot tell
    report = await verify_log(config, broker_keys=keys, witnessed=files)
    assert not report.intact
    assert report.bad_seq == 3
    assert report.problem is not None and "entries 3..5 were removed" in report.problem


async def test_a_witness_refuses_a_smaller_checkpoint_from_a_rolled_back_broker(
        fed: Federation, capfd: pytest.CaptureFixture[str]) -> None:
    assert fed.broker is not None
    config = fed.broker.config.access_log
    assert config.path is not None
    await fed.ask()
    await witnessed_by_all(fed, 1)
    await stop_broker(fed)
    older = fed.tmp / "older-copy.db"
    shutil.copyfile(config.path, older)
    fed.shutdown = asyncio.Event()
    instance = fed.broker.config.instance
    await fed.start_broker(instance=instance)
    for _ in range(2):
        await fed.ask()
    await witnessed_by_all(fed, 3)
    await stop_broker(fed)
    await witnessed_by_all(fed, 3)
    for suffix in ("-wal", "-shm"):
        (fed.tmp / f"access-log.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(older, config.path)  # back to 1 entry
    fed.shutdown = asyncio.Event()
    await fed.start_broker(instance=instance)  # publishes its head (1 entry) at start
    await until(lambda: all(fed.adapters[pid][0][0].witness.refused >= 1  # type: ignore[union-attr]
                            for pid in fed.producers),
                "every witness refused the rolled-back checkpoint")
    for pid in fed.producers:
        adapter = fed.adapters[pid][0][0]
        assert adapter.witness is not None
        assert adapter.witness.latest[instance].seq == 3  # kept, not replaced
        assert adapter.witness.refused >= 1
    assert "checkpoint_rollback" in capfd.readouterr().out
    # The rolled-back broker runs on and its log grows past the witnessed size: its larger
    # checkpoints are taken again, but the evidence of the rollback stays with the witness.
    for _ in range(3):
        await fed.ask()
    await witnessed_by_all(fed, 4)
    report = await verify_log(config, broker_keys=fed.registry.broker.keys,
                              witnessed=witnesses(fed), instance=instance)
    assert not report.intact
    assert report.problem is not None and "does not extend the checkpoint of 3" in report.problem


async def test_the_extract_is_proven_and_checked_by_the_consumer_client(
        fed: Federation) -> None:
    assert fed.broker is not None
    for _ in range(3):
        await fed.ask()
    client = Client(broker_url=fed.url, issuer=CITIZEN_PORTAL, key=fed.keys[CITIZEN_PORTAL],
                    audience=BROKER_ID, user=USER)
    keys = fed.registry.broker.keys
    async with client:
        extract = await client.extract(subject=PERSON, broker_keys=keys)
        assert len(extract.accesses) >= 3
        assert len(extract.proofs) >= 3
        # Someone rewrites a stored leaf: the broker's proofs no longer lead to its root.
        config = fed.broker.config.access_log
        assert config.path is not None
        with closing(sqlite3.connect(config.path)) as conn:
            conn.execute("UPDATE access_log_leaves SET leaf = ? WHERE seq = 1", ("00" * 32,))
            conn.commit()
        await fed.ask()  # the log grows: the next extract needs a new signed head
        with pytest.raises(ExtractNotProven, match="not proven"):
            await client.extract(subject=PERSON, broker_keys=keys)
        # A head signed by anyone but the broker is refused as well.
        with pytest.raises(ExtractNotProven, match="not signed by the broker"):
            await client.extract(subject=PERSON, broker_keys={})
