"""A federation reading HL7's own examples through the FHIR backend (issue 22).

Real Mosquitto, broker and adapter; the adapter's backend is the ``fhir`` backend against
the test FHIR server of ``tests/producer_adapter/test_backend_fhir.py`` serving HL7's R4
and IPS examples (``tests/producer_adapter/fhir_examples/hl7``). What the producer holds
comes back as records with their meaning, or as the source's ``unreadable`` count, in every
form of the answer: JSON, FHIR, NDJSON, the CLI's rendering and the operator dashboard.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import structlog
from aiohttp.test_utils import TestServer
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from rich.console import Console
from structlog.testing import capture_logs

from consumer_client.render import UNREADABLE_NOTICE, render_answer
from producer_adapter import Adapter, InMemoryBlockSource
from producer_adapter.backends import open_backend
from schemas.messages import Answer
from tests.e2e.conftest import Federation, ProducerSpec
from tests.producer_adapter.test_backend_fhir import TOKEN, FhirServer
from tests.producer_adapter.test_backend_fhir_hl7 import PEOPLE, hl7_resources

ROEL = PEOPLE["f201"]    # Patient/f201 of HL7's R4 examples
PETER = PEOPLE["example"]  # Patient/example
PRODUCER = "P-FHIR"
ALL_TYPES = ["medication", "diagnoses", "alerts", "lab_results", "functional_status",
             "care_contacts", "care_plans", "care_documentation", "social_care_interventions"]


@pytest.fixture
async def hl7_server() -> AsyncIterator[FhirServer]:
    fhir = FhirServer(hl7_resources())
    async with TestServer(fhir.app(), host="127.0.0.1") as ts:
        fhir.base_url = str(ts.make_url("/fhir"))
        yield fhir


@pytest.fixture
async def federation(federation_factory: Any) -> AsyncIterator[Federation]:
    """One producer serving every type from the FHIR server; its backend closed at the end."""
    fed: Federation = await federation_factory([ProducerSpec(PRODUCER, types=ALL_TYPES)])
    (fed.tmp / "fhir-token").write_text(TOKEN, encoding="utf-8")
    try:
        yield fed
    finally:
        backends = [a._backend for a, _, _ in fed.adapters.get(PRODUCER, [])]
        await fed.stop_adapters(PRODUCER)
        for backend in backends:
            if backend is not None:
                await backend.aclose()


async def fhir_backend(fed: Federation, fhir: FhirServer, **overrides: Any) -> Any:
    table = {"kind": "fhir", "base_url": fhir.base_url, "token_file": "fhir-token",
             "organisation": {"id": "PRODORG", "name": "Producentorganisation"},
             "unit": {"id": "U1", "name": "Enhet U1"}, "scope": {"default": "hsl"},
             **overrides}
    return await open_backend({k: v for k, v in table.items() if v is not None},
                              base=fed.tmp, producer_id=PRODUCER)


async def start(fed: Federation, fhir: FhirServer) -> Adapter:
    backend = await fhir_backend(fed, fhir)
    await fed.start_broker()
    adapter = await fed.start_adapter(PRODUCER, backend=backend)
    await fed.wait_presence(PRODUCER)
    return adapter


async def test_hl7_examples_come_back_or_are_counted(federation: Federation,
                                                     hl7_server: FhirServer) -> None:
    fed = federation
    adapter = await start(fed, hl7_server)
    assert adapter.not_ready == []  # one unit, and [backend] unit gives it
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/v1/producers") as resp:
        assert (await resp.json())["producers"][0]["not_ready"] == []

    # JSON: Roel's records with their meaning, three he has unreadable, one withheld
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        answer = await fed.ask(subject=ROEL, types=ALL_TYPES)
    [source] = answer["sources"]
    assert (source["status"], source["records"], source["unreadable"]) == ("ok", 6, 3)
    assert answer["complete"] is True
    assert answer["blocked_information_exists"] is True  # Condition/f202, labelled taboo
    records = {r["id"]: r for r in answer["records"]}
    assert "Condition/f202" not in records
    assert records["Condition/f204"]["verification"] == "differential"
    assert records["Condition/f204"]["clinical_status"] == "inactive"
    assert records["Condition/f201"]["author"] == {"name": "Dokter Bronsig",
                                                   "role": "Pulmonologist"}
    # the adapter's log lines name the query, and carry reasons, never content
    [held] = [e for e in logs if e["event"].startswith("records held but unreadable")]
    assert held["query_id"] == answer["query_id"]
    assert held["unreadable"] == {"care_contacts:no-time": 2, "care_plans:no-time": 1}
    [left_out] = [e for e in logs if e["event"] == "FHIR resources not mapped: left out"]
    assert left_out["query_id"] == answer["query_id"]
    assert "Roel" not in repr(logs) and "sepsis" not in repr(logs)

    # The CLI shows the count and the uncertainty
    console = Console(record=True, width=160)
    render_answer(msgspec.convert(answer, Answer), console)
    text = console.export_text()
    assert f"{UNREADABLE_NOTICE}: {PRODUCER} 3" in text
    assert "ok, 3 unreadable" in text
    assert "DIFFERENTIALDIAGNOS / differential" in text

    # FHIR: a valid Bundle; the count as an OperationOutcome issue; codes and statuses kept
    status, _, bundle = await fed.post(fed.token(subject=ROEL, types=ALL_TYPES),
                                       accept="application/fhir+json")
    assert status == 200
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(
            entry["resource"])
    outcomes = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    [unreadable] = [i for o in outcomes for i in o["issue"]
                    if i["details"]["coding"][0]["code"] == "unreadable"]
    assert unreadable["severity"] == "warning" and "3 records" in unreadable["details"]["text"]
    matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
    [stay] = [r for r in matches if r["resourceType"] == "Encounter"]
    assert stay["class"]["code"] == "IMP"
    assert stay["type"][0]["coding"][0]["code"] == "183807002"
    renal = [r for r in matches if r["resourceType"] == "Condition"
             and r["code"].get("text") == "Acute renal insufficiency specified as due to procedure"]
    assert renal[0]["verificationStatus"]["coding"][0]["code"] == "differential"

    # NDJSON: the source line and the summary carry the count
    assert fed.http is not None
    async with fed.http.post(f"{fed.url}/v1/queries",
                             data=fed.token(subject=ROEL, types=ALL_TYPES).encode(),
                             headers={"Content-Type": "application/jwt",
                                      "Accept": "application/x-ndjson"}) as resp:
        lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    source_line, summary = lines
    assert source_line["kind"] == "source" and source_line["source"]["unreadable"] == 3
    assert summary["kind"] == "summary" and summary["sources"][0]["unreadable"] == 3

    # Peter: the "no known latex allergy" is no alert, the unconfirmed penicillin is
    answer = await fed.ask(subject=PETER, types=["alerts", "diagnoses"])
    alerts = {r["id"]: r for r in answer["records"] if r["type"] == "alerts"}
    assert "AllergyIntolerance/nkla" not in alerts
    assert alerts["AllergyIntolerance/medication"]["verification"] == "unconfirmed"
    assert answer["sources"][0]["unreadable"] == 2  # Condition/example2, Flag/example-encounter

    # The dashboard's figures for the producer
    async with fed.http.get(f"{fed.url}/v1/dashboard") as resp:
        dashboard = await resp.json()
    [row] = [p for p in dashboard["producers"] if p["id"] == PRODUCER]
    assert row["unreadable"] == 3 * 3 + 2
    async with fed.http.get(f"{fed.url}/") as resp:
        assert "<th class=\"num\">Unreadable</th>" in await resp.text()


async def test_a_source_with_only_withheld_records_looks_like_no_data(
    federation: Federation, hl7_server: FhirServer,
) -> None:
    # Roel's only record of these is the taboo-labelled malignancy: withheld like a block
    hl7_server.resources = [r for r in hl7_server.resources
                            if r["resourceType"] != "Condition" or r["id"] == "f202"]
    fed = federation
    await start(fed, hl7_server)
    answer = await fed.ask(subject=ROEL, types=["diagnoses"])
    [source] = answer["sources"]
    assert (source["status"], source["records"], source["unreadable"]) == ("no_data", 0, 0)
    assert answer["blocked_information_exists"] is True and answer["records"] == []


async def test_an_adapter_whose_server_names_no_units_says_why(
    federation: Federation, hl7_server: FhirServer,
) -> None:
    fed = federation
    backend = await fhir_backend(fed, hl7_server, unit=None)
    await fed.start_broker()
    adapter = Adapter(fed.adapter_config(PRODUCER), fed.registry, backend=backend,
                      blocks=InMemoryBlockSource())
    with capture_logs() as logs:
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(shutdown=stop))
        fed.adapters.setdefault(PRODUCER, []).append((adapter, stop, task))
        await asyncio.wait_for(adapter.ready.wait(), 10)
    [reason] = adapter.not_ready
    assert "no Organization with a unit identifier" in reason
    [warning] = [e for e in logs if e["event"].startswith("record system not ready")]
    assert warning["reason"] == reason and warning["log_level"] == "warning"
    await fed.wait_presence(PRODUCER)
    # the reason travels with its presence: the operator sees it at the broker
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}/v1/producers") as resp:
        [listed] = (await resp.json())["producers"]
    assert listed["online"] is True and listed["not_ready"] == [reason]
    async with fed.http.get(f"{fed.url}/v1/dashboard") as resp:
        [row] = (await resp.json())["producers"]
    assert row["not_ready"] == [reason]
    async with fed.http.get(f"{fed.url}/") as resp:
        assert "not ready: the FHIR server holds no Organization" in await resp.text()
    answer = await fed.ask(subject=PETER, types=["diagnoses"])
    # not "no_data" for everyone: the source is an error, the answer incomplete
    assert answer["sources"][0]["status"] == "error" and answer["complete"] is False
