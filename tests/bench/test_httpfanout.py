"""The HTTP fan-out peer of the benchmark (bench/httpfanout.py) does the whole job: a signed
query in, the real adapters asked over HTTP, their signed replies verified, merged and logged.

Its speed is measured by ``python -m bench`` only; this checks that what it measures is the
same job samsvar does, with real signatures, real HTTP and a real SQLite access log.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp

from bench.federation import BROKER_ID, CONSUMER, SUBJECT, bench_user, build, producer_id
from bench.httpfanout import make_peer, start_producers
from consumer_client import make_claims, sign_query
from schemas.jose import load_private_key


def query(fed_key: Path, type_: str) -> bytes:
    claims = make_claims(issuer=CONSUMER, audience=BROKER_ID, user=bench_user(),
                         subject=SUBJECT, types=[type_], basis="consent")
    return sign_query(claims, load_private_key(fed_key)).encode("ascii")


async def test_the_peer_answers_from_every_producer_over_http(tmp_path: Path) -> None:
    fed = build(tmp_path, total=12, mqtt_port=1, prefix="bench/test/samsvar/v1")
    runners, ports = await start_producers(fed.group_spec(0, 1))
    assert len(ports) == 12 and len(set(ports.values())) == 12  # an endpoint each
    server = make_peer(fed.broker_config("peer", port=0), ports)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(shutdown=stop))
    try:
        await asyncio.wait_for(server.started.wait(), 30)
        url = f"http://127.0.0.1:{server.port}/v1/queries"
        async with aiohttp.ClientSession() as http:
            for type_, asked in (("alerts", 10), ("care_contacts", 5)):
                async with http.post(url, data=query(fed.consumer_key, type_),
                                     headers={"Content-Type": "application/jwt"}) as resp:
                    assert resp.status == 200, await resp.text()
                    answer = await resp.json()
                assert answer["complete"] is True
                assert sorted(s["producer"] for s in answer["sources"]) == [
                    producer_id(i) for i in range(asked)]
                assert {s["status"] for s in answer["sources"]} == {"ok"}
                assert len(answer["records"]) == 2 * asked  # two records from each
            # A forged query is refused before any producer is asked.
            forged = query(fed.consumer_key, "alerts")[:-4] + b"AAAA"
            async with http.post(url, data=forged,
                                 headers={"Content-Type": "application/jwt"}) as resp:
                assert resp.status == 401
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        for runner in runners:
            await runner.cleanup()
    with sqlite3.connect(tmp_path / "peer-access-log.db") as db:
        outcomes = [row[0] for row in db.execute(
            "SELECT json_extract(body, '$.outcome') FROM access_log_entries ORDER BY seq")]
    assert outcomes == ["answered", "answered", "refused"]
