"""A cut list travels all the way: SQL backend → adapter's reply → the broker's answer.

A real broker, a real MQTT server and two adapters: one reads an SQLite care database with
``max_records_per_type = 2`` (it holds three orders), the other a JSON directory. The
answer's source for the first says ``truncated: true``, the other ``false``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from producer_adapter.backends import open_backend
from tests.conftest import MqttServer
from tests.e2e.conftest import PERSON, Federation, ProducerSpec, build_federation, record

SQL_PRODUCER = "P-SQL"
JSON_PRODUCER = "P-JSON"


@pytest.fixture
async def federation(tmp_path: Path, mqtt_server: MqttServer,
                     unique_prefix: str) -> AsyncIterator[Federation]:
    fed = build_federation(tmp_path, mqtt_server, unique_prefix, [
        ProducerSpec(SQL_PRODUCER, types=["medication"]),
        ProducerSpec(JSON_PRODUCER, types=["medication"], records={PERSON: [
            record(JSON_PRODUCER, 1, when="2024-05-01T10:00:00+02:00")]}),
    ])
    fed.http = aiohttp.ClientSession()
    try:
        yield fed
    finally:
        for pid in list(fed.adapters):
            await fed.stop_adapters(pid)
        fed.shutdown.set()
        for task in fed.tasks:
            await asyncio.wait_for(task, 10)
        await fed.http.close()


def care_db(path: Path) -> None:
    with closing(sqlite3.connect(path)) as con, con:
        con.execute("CREATE TABLE ordinationer (id text, personnummer text, ordinerad text, "
                    "preparat text, enhet text)")
        con.executemany("INSERT INTO ordinationer VALUES (?, ?, ?, ?, 'U1')", [
            ("o1", PERSON, "2024-01-10T09:00:00+01:00", "Alvedon 500 mg"),
            ("o2", PERSON, "2024-02-15T09:00:00+01:00", "Furix 40 mg"),
            ("o3", PERSON, "2024-03-01T09:00:00+01:00", "Kåvepenin 1 g"),
        ])


SQL_TABLE: dict[str, Any] = {
    "kind": "sql", "path": "care.db", "max_records_per_type": 2,
    "organisation": {"id": "PRODORG", "name": "Producentorganisation"},
    "types": {"medication": {
        "query": "SELECT id, ordinerad, preparat, 'hsl' AS scope, enhet, 'Enhet U1' AS namn "
                 "FROM ordinationer WHERE personnummer = :person "
                 "AND (:from IS NULL OR substr(ordinerad, 1, 10) >= :from) "
                 "AND (:to IS NULL OR substr(ordinerad, 1, 10) <= :to) "
                 "ORDER BY ordinerad DESC LIMIT :limit",
        "columns": {"id": "id", "time": "ordinerad", "drug": "preparat", "scope": "scope",
                    "unit_id": "enhet", "unit_name": "namn"},
    }},
}


async def test_the_answer_says_which_source_was_cut(federation: Federation,
                                                    tmp_path: Path) -> None:
    care_db(tmp_path / "care.db")
    backend = await open_backend(SQL_TABLE, base=tmp_path, producer_id=SQL_PRODUCER)
    await federation.start_broker()
    await federation.start_adapter(SQL_PRODUCER, backend=backend)
    await federation.start_adapter(JSON_PRODUCER)
    for pid in (SQL_PRODUCER, JSON_PRODUCER):
        await federation.wait_presence(pid)
    try:
        answer = await federation.ask(types=["medication"])
    finally:
        await backend.aclose()
    assert answer["complete"] is True
    sources = {s["producer"]: s for s in answer["sources"]}
    assert sources[SQL_PRODUCER]["status"] == "ok"
    assert sources[SQL_PRODUCER]["records"] == 2
    assert sources[SQL_PRODUCER]["truncated"] is True
    assert sources[JSON_PRODUCER]["truncated"] is False
    ids = [r["id"] for r in answer["records"] if r["source"]["producer"] == SQL_PRODUCER]
    assert ids == ["o3", "o2"]  # the newest two
