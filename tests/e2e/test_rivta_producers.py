"""End to end: producer adapters whose records come from RIV-TA producers (the ``rivta``
backend) over mutual TLS, a real MQTT server, the broker and a signed question.

Five source systems behind one RIV-TA stub play the national aggregating services' test
cases: one answers (TC1), one has nothing (TC2), one never answers (TC3/TC4), one throws a
fault (TC5), one pages with ``hasMore`` (TC6). The person's block on a unit is applied by
the adapter to what the RIV-TA producer returned: RIV-TA producers do not withhold blocked
records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import structlog

from producer_adapter import Adapter
from producer_adapter.blocks import InMemoryBlockSource
from producer_adapter.policy import Block
from samsvar.rivta_stub import Behaviour
from tests.e2e.conftest import PERSON, Federation, ProducerSpec
from tests.producer_adapter.rivta_support import (
    NEWEST,
    UNIT_MED,
    person_records,
    running_stub,
    table,
)

TYPES = ["care_documentation", "medication", "diagnoses", "alerts"]
SOURCES: dict[str, Behaviour] = {
    "P-RIVTA-ANSWER": "answer", "P-RIVTA-EMPTY": "empty", "P-RIVTA-HANG": "hang",
    "P-RIVTA-FAULT": "fault", "P-RIVTA-PAGE": "page"}


async def test_rivta_producers_answer_a_question_end_to_end(
        federation_factory: Any, tmp_path: Path) -> None:
    addresses = {pid: f"SE2321000016-{n}SRC" for n, pid in enumerate(SOURCES)}
    fed: Federation = await federation_factory(
        [ProducerSpec(pid, types=TYPES) for pid in SOURCES])
    async with running_stub(tmp_path, records=person_records(PERSON),
                            sources={addresses[p]: b for p, b in SOURCES.items()}) as (stub, tls):
        await fed.start_broker()
        for pid in SOURCES:
            keys = ["GetCareDocumentation-3.0"] if pid == "P-RIVTA-PAGE" else NEWEST
            config = dataclasses.replace(
                fed.adapter_config(pid),
                backend=table(stub, tls, keys, logical_address=addresses[pid], timeout_s=60))
            blocks = ([Block(subject=PERSON, level="unit", target=UNIT_MED,
                             registered_by=PERSON)] if pid == "P-RIVTA-ANSWER" else [])
            adapter = Adapter(config, fed.registry, blocks=InMemoryBlockSource(blocks))
            stop = asyncio.Event()
            task = asyncio.create_task(adapter.run(shutdown=stop))
            fed.adapters.setdefault(pid, []).append((adapter, stop, task))
            await asyncio.wait_for(adapter.ready.wait(), 20)
            await fed.wait_presence(pid)

        with structlog.testing.capture_logs() as logs:
            answer = await fed.ask(types=TYPES, deadline_ms=3000)

        status = {s["producer"]: s["status"] for s in answer["sources"]}
        assert status == {"P-RIVTA-ANSWER": "ok", "P-RIVTA-EMPTY": "no_data",
                          "P-RIVTA-HANG": "timeout", "P-RIVTA-FAULT": "error",
                          "P-RIVTA-PAGE": "ok"}
        assert answer["complete"] is False
        got = {(r["source"]["producer"], r["id"]) for r in answer["records"]}
        # The answering source: everything but the blocked unit's note and diagnosis, and
        # the nullified diagnosis.
        assert {i for p, i in got if p == "P-RIVTA-ANSWER"} == {"doc-1", "doc-3", "doc-20",
                                                               "doc-30"}
        assert answer["blocked_information_exists"] is True
        # The paging source: all three notes, one page each.
        assert {i for p, i in got if p == "P-RIVTA-PAGE"} == {"doc-1", "doc-2", "doc-3"}
        by_id = {(r["source"]["producer"], r["id"]): r for r in answer["records"]}
        note = by_id[("P-RIVTA-ANSWER", "doc-1")]
        assert note["time"] == "2024-03-15T10:15:00+01:00"
        assert note["source"]["unit"]["id"] != UNIT_MED
        assert by_id[("P-RIVTA-PAGE", "doc-2")]["approved_for_patient"] is False
        assert "Inskrivningsanteckning" not in json.dumps(
            [r for r in answer["records"] if r["source"]["producer"] == "P-RIVTA-ANSWER"],
            ensure_ascii=False)
        assert stub.rejected == []
        # What the adapters logged: counts and codes, never content.
        events = {e["event"] for e in logs}
        assert {"RIV-TA SOAP fault", "RIV-TA records not mapped: left out"} <= events
        logged = json.dumps(logs, ensure_ascii=False, default=str)
        for text in ("Kontroll av blodtryck", "Hjärtsvikt", "Furosemid", "Astma",
                     "Fenoximetylpenicillin", PERSON):
            assert text not in logged
