"""The ``rivta`` backend against a RIV-TA producer stub speaking SOAP over mutual TLS.

The stub validates every request against the contract's XSD and answers schema-valid
responses; these tests check what the backend makes of them: every contract version mapped,
the platform's headers, ``resultCode`` ERROR, SOAP faults, a producer that never answers and
3.x paging.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import ssl
import threading
import tomllib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from producer_adapter.backends import check_backend_table, open_backend
from producer_adapter.backends._rivta_xml import CONTRACTS, Fault, load_schema, read_envelope
from producer_adapter.errors import AdapterConfigError, BackendError
from schemas.messages import Period
from schemas.records import record_type
from tests.producer_adapter.rivta_support import (
    CARE_GIVER,
    CARE_PROCESS,
    CONSUMER,
    NEWEST,
    OLDER,
    SUBJECT,
    UNIT_MED,
    UNIT_VC,
    person_records,
    running_stub,
    table,
)

SOURCE = "SE2321000016-SRC1"
STOCKHOLM = ZoneInfo("Europe/Stockholm")
ALL_TYPES = frozenset(CONTRACTS[k].info_type for k in NEWEST)


async def _fetch(tmp: Path, keys: list[str], *, behaviour: str = "answer",
                 types: frozenset[str] = ALL_TYPES, period: Period | None = None,
                 **extra: Any) -> Any:
    async with running_stub(tmp, sources={SOURCE: behaviour}) as (stub, tls):  # type: ignore[dict-item]
        backend = await open_backend(table(stub, tls, keys, logical_address=SOURCE, **extra),
                                     base=tmp, producer_id="P-RIVTA")
        try:
            return await backend.fetch(SUBJECT, types, period), stub
        finally:
            await backend.aclose()


def _by_id(result: Any) -> dict[str, Any]:
    return {r.id: r for r in result.records}


async def test_every_type_is_read_and_mapped_from_its_newest_contract(tmp_path: Path) -> None:
    result, stub = await _fetch(tmp_path, NEWEST)
    assert stub.rejected == []
    records = _by_id(result)
    assert {record_type(r) for r in result.records} == ALL_TYPES

    note = records["doc-1"]
    assert note.title == "Besöksanteckning" and note.text == "Kontroll av blodtryck."
    assert note.time == dt.datetime(2024, 3, 15, 10, 15, tzinfo=STOCKHOLM)
    assert note.time.utcoffset() == dt.timedelta(hours=1)  # winter time in Stockholm
    assert note.source.unit.id == UNIT_VC and note.source.unit.name == "Vårdcentralen Tolvmannen"
    assert note.source.organisation.id == CARE_GIVER
    assert note.source.organisation.name == "Region Tolvmannen"
    assert note.source.producer == "P-RIVTA" and note.source.system == "Journal (RIV-TA)"
    assert note.author is not None and note.author.name == "Lena Läkare"
    assert note.care_process == CARE_PROCESS
    assert note.approved_for_patient is True
    assert records["doc-2"].approved_for_patient is False  # approvedForPatient false
    assert records["doc-2"].source.unit.id == UNIT_MED

    diagnosis = records["doc-10"]
    assert diagnosis.display == "Hjärtsvikt, ospecificerad" and diagnosis.primary
    assert [(c.system, c.code) for c in diagnosis.codes] == [
        ("urn:oid:1.2.752.116.1.1.1.1.3", "I50.9")]  # ICD-10-SE
    assert "doc-11" not in records  # nullified: dropped

    medication = records["doc-20"]
    assert medication.drug == "Furosemid Accord 40 mg" and medication.status == "active"
    assert ("urn:oid:1.2.752.129.2.2.3.1", "C03CA01") in [
        (c.system, c.code) for c in medication.codes]  # ATC
    assert medication.dose == "1 tablett på morgonen" and medication.schedule == "1+0+0"
    assert medication.start == dt.date(2024, 1, 1)

    alert = records["doc-30"]
    assert alert.category == "allergy" and alert.substance == "Fenoximetylpenicillin"
    assert alert.severity == "high"

    labs = {r.analysis: r for r in result.records if record_type(r) == "lab_results"}
    assert labs["B-Hemoglobin"].value == "98" and labs["B-Hemoglobin"].unit == "g/L"
    assert labs["B-Hemoglobin"].abnormal and not labs["P-Natrium"].abnormal
    assert [(c.system, c.code) for c in labs["P-Natrium"].codes] == [
        ("urn:oid:1.2.752.108.1", "NPU03429")]  # NPU

    contact = records["doc-50"]
    assert contact.contact_type == "Besök" and contact.reason == "Blodtryckskontroll"
    assert contact.end == dt.datetime(2024, 3, 15, 10, 30, tzinfo=STOCKHOLM)
    assert "doc-51" not in records  # a cancelled (inställd) contact is no contact

    plan = records["doc-60"]
    assert plan.plan_type == "SIP" and plan.title == "SIP inför hemgång"
    assert plan.needs == ["Hjälp med läkemedel"] and plan.goals == ["Bo kvar hemma"]
    assert [(a.what, a.responsible, a.when) for a in plan.activities] == [
        ("Läkemedelsgenomgång", "Vårdcentralen", "vecka 12")]
    assert plan.follow_up_date == dt.date(2024, 6, 1)

    status = records["doc-70"]
    assert status.domain == "PADL" and status.assessment == "Tvätta sig: Behöver viss hjälp"

    booking = records["doc-80"]
    assert booking.start == dt.datetime(2027, 1, 10, 9, 30, tzinfo=STOCKHOLM)
    assert booking.unit.id == UNIT_VC and booking.purpose == "Återbesök"
    assert booking.care_type == "Sjuksköterska"

    [fixed] = [r for r in result.records if record_type(r) == "fixed_contacts"]
    assert fixed.role == "fast_vardkontakt" and fixed.person.name == "Lena Läkare"
    assert fixed.note == "Nås vardagar 8–10" and fixed.internal_note == "Intern anteckning"
    assert [(c.system, c.value) for c in fixed.contact] == [("phone", "010-123 45 67")]
    assert result.truncated is False


async def test_the_older_contract_versions_are_read_too(tmp_path: Path) -> None:
    result, stub = await _fetch(tmp_path, OLDER)
    assert stub.rejected == []
    records = _by_id(result)
    assert records["doc-1"].title == "Besöksanteckning"
    assert records["doc-1"].note_type == "Utredning"  # 2.1's ClinicalDocumentNoteCode utr
    assert records["doc-2"].approved_for_patient is False
    assert {r.analysis for r in result.records if record_type(r) == "lab_results"} == {
        "P-Natrium", "B-Hemoglobin"}
    assert records["doc-50"].contact_type == "Besök" and "doc-51" not in records


async def test_headers_of_the_platform_and_one_correlation_id_per_question(
        tmp_path: Path) -> None:
    async with running_stub(tmp_path, sources={SOURCE: "answer"}) as (stub, tls):
        backend = await open_backend(table(stub, tls, NEWEST, logical_address=SOURCE),
                                     base=tmp_path, producer_id="P-RIVTA")
        try:
            await backend.fetch(SUBJECT, frozenset({"medication", "diagnoses"}), None)
            await backend.fetch(SUBJECT, frozenset({"alerts"}), None)
        finally:
            await backend.aclose()
    first, second = stub.requests[:2], stub.requests[2:]
    assert {c for c, *_ in first} == {"GetMedicationHistory-2.1", "GetDiagnosis-2.0"}
    assert all(address == SOURCE and consumer == CONSUMER
               for _, address, consumer, _ in stub.requests)
    assert len({corr for *_, corr in first}) == 1  # one question, one correlation id
    assert {corr for *_, corr in first}.isdisjoint({corr for *_, corr in second})


async def test_result_code_error_is_the_sources_error_not_records(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="resultCode ERROR"):
        await _fetch(tmp_path, NEWEST, behaviour="error")


async def test_result_code_info_keeps_the_records(tmp_path: Path) -> None:
    result, _ = await _fetch(tmp_path, NEWEST, behaviour="info",
                             types=frozenset({"diagnoses", "medication"}))
    assert sorted(r.id for r in result.records) == ["doc-10", "doc-20"]


async def test_a_soap_fault_is_the_sources_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="SOAP fault"):
        await _fetch(tmp_path, NEWEST, behaviour="fault")


async def test_vp007_when_the_platform_does_not_authorise_the_consumer(tmp_path: Path) -> None:
    async with running_stub(tmp_path, sources={SOURCE: "answer"},
                            authorized=frozenset({"SE0000000000-OTHER"})) as (stub, tls):
        backend = await open_backend(table(stub, tls, NEWEST, logical_address=SOURCE),
                                     base=tmp_path, producer_id="P-RIVTA")
        try:
            with pytest.raises(BackendError, match="VP007"):
                await backend.fetch(SUBJECT, frozenset({"medication"}), None)
        finally:
            await backend.aclose()


async def test_a_producer_that_never_answers_is_a_timeout(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="timeout"):
        await _fetch(tmp_path, NEWEST, behaviour="hang", timeout_s=0.3)


async def test_one_failing_contract_fails_the_question(tmp_path: Path) -> None:
    """No partial answer: records of the types that worked are not sent as if complete."""
    keys = ["GetDiagnosis-2.0", "GetMedicationHistory-2.1"]
    async with running_stub(tmp_path, sources={SOURCE: "answer"},
                            contracts=["GetDiagnosis-2.0"]) as (stub, tls):
        t = table(stub, tls, ["GetDiagnosis-2.0"], logical_address=SOURCE)
        t["contracts"]["medication"] = {
            "contract": "GetMedicationHistory", "version": "2.1",
            "endpoint": stub.url + "/GetMedicationHistory/2/rivtabp21"}  # not served: 404
        backend = await open_backend(t, base=tmp_path, producer_id="P-RIVTA")
        try:
            with pytest.raises(BackendError, match="HTTP 404"):
                await backend.fetch(SUBJECT, frozenset({"diagnoses", "medication"}), None)
            ok = await backend.fetch(SUBJECT, frozenset({"diagnoses"}), None)
        finally:
            await backend.aclose()
    assert [r.id for r in ok.records] == ["doc-10"]
    assert len(keys) == 2


async def test_has_more_is_paged_until_done(tmp_path: Path) -> None:
    result, stub = await _fetch(tmp_path, ["GetCareDocumentation-3.0"], behaviour="page",
                                types=frozenset({"care_documentation"}))
    assert sorted(r.id for r in result.records) == ["doc-1", "doc-2", "doc-3"]
    assert len(stub.requests) == 3 and result.truncated is False


async def test_has_more_beyond_max_pages_is_truncated(tmp_path: Path) -> None:
    result, stub = await _fetch(tmp_path, ["GetCareDocumentation-3.0"], behaviour="page",
                                types=frozenset({"care_documentation"}), max_pages=2)
    assert len(result.records) == 2 and result.truncated is True
    assert len(stub.requests) == 2


@pytest.mark.parametrize(("period", "ids"), [
    (Period(from_=dt.date(2024, 3, 1), to=dt.date(2024, 3, 31)), ["doc-1"]),
    (Period(from_=dt.date(2024, 1, 1)), ["doc-1", "doc-2"]),  # open-ended: still valid XML
    (Period(to=dt.date(2023, 12, 31)), ["doc-3"]),
])
async def test_period_is_sent_and_applied(tmp_path: Path, period: Period,
                                          ids: list[str]) -> None:
    result, stub = await _fetch(tmp_path, NEWEST, period=period,
                                types=frozenset({"care_documentation", "lab_results",
                                                 "care_contacts"}))
    assert stub.rejected == []
    assert sorted(r.id for r in result.records if record_type(r) == "care_documentation") == ids


async def test_no_client_certificate_no_answer(tmp_path: Path) -> None:
    async with running_stub(tmp_path, sources={SOURCE: "answer"}) as (stub, tls):
        t = table(stub, tls, NEWEST, logical_address=SOURCE)
        del t["cert"], t["key"]
        backend = await open_backend(t, base=tmp_path, producer_id="P-RIVTA")
        try:
            with pytest.raises(BackendError, match="unreachable"):
                await backend.fetch(SUBJECT, frozenset({"medication"}), None)
        finally:
            await backend.aclose()
    assert stub.requests == []


@pytest.mark.parametrize(("change", "message"), [
    ({"consumer_hsa_id": ""}, "consumer_hsa_id"),
    ({"contracts": {"diagnoses": {"contract": "GetCareDocumentation", "version": "3.0",
                                  "endpoint": "https://x"}}}, "not a contract for diagnoses"),
    ({"contracts": {"medication": {"contract": "GetMedicationHistory", "version": "9.9",
                                   "endpoint": "https://x"}}}, "GetMedicationHistory 2.1"),
    ({"cert": None}, "cert and key go together"),
    ({"scope": "x"}, "scope"),
    ({"surprise": 1}, "unknown keys: surprise"),
    ({"contracts": {"medication": {"contract": "GetMedicationHistory", "version": "2.1",
                                   "endpoint": "http://rtp.example/x"}}}, "https://"),
])
def test_config_errors_name_the_key(change: dict[str, Any], message: str) -> None:
    t: dict[str, Any] = {
        "kind": "rivta", "logical_address": "SE1", "consumer_hsa_id": CONSUMER,
        "organisation": {"id": CARE_GIVER, "name": "Region"}, "cert": "c.pem", "key": "k.pem",
        "contracts": {"medication": {"contract": "GetMedicationHistory", "version": "2.1",
                                     "endpoint": "https://rtp.example/x"}}}
    t.update(change)
    t = {k: v for k, v in t.items() if v is not None}
    with pytest.raises(AdapterConfigError, match=message):
        check_backend_table(t)


# -- the stub rejects what the national schemas reject -----------------------------------

def _example_requests(reference: Path) -> list[tuple[str, Path]]:
    found = []
    for key, contract in CONTRACTS.items():
        for path in sorted((reference / "rivta" / key / "examples").glob("*.xml")):
            text = path.read_text(encoding="utf-8", errors="replace")
            if f"{contract.namespace}" in text and ":" + contract.name + ">" in text:
                found.append((key, path))
    return found


async def test_the_stub_rejects_exactly_the_national_examples_that_do_not_validate(
        tmp_path: Path, reference: Path) -> None:
    examples = _example_requests(reference)
    assert len(examples) >= 60
    expected: dict[Path, bool] = {}
    for key, path in examples:
        schema = load_schema(CONTRACTS[key])
        try:
            address, element = read_envelope(path.read_bytes())
        except ValueError:
            expected[path] = False
            continue
        # The platform also refuses an empty LogicalAddress (VP003), as TC4 of
        # GetAlertInformation has it.
        expected[path] = bool(address) and schema.is_valid(element)  # type: ignore[arg-type]
    assert 0 < sum(not ok for ok in expected.values()) < len(expected)
    async with running_stub(tmp_path, sources={}) as (stub, tls):
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.load_cert_chain(tls.client_cert, tls.client_key)
        verdicts: dict[Path, bool] = {}
        async with aiohttp.ClientSession() as http:
            for key, path in examples:
                contract = CONTRACTS[key]
                before = len(stub.rejected)
                async with http.post(
                        stub.endpoint(key), data=path.read_bytes(), ssl=context,
                        headers={"SOAPAction": f'"{contract.soap_action}"',
                                 "Content-Type": "text/xml; charset=utf-8",
                                 "x-rivta-original-serviceconsumer-hsaid": CONSUMER}) as resp:
                    await resp.read()
                verdicts[path] = len(stub.rejected) == before
    wrong = {p.name: (verdicts[p], expected[p]) for p in expected if verdicts[p] != expected[p]}
    assert wrong == {}
    summary = json.loads((reference / "rivta" / "soapui-testcase-summary.json").read_text())
    assert "GetCareDocumentation-3.0" in summary


async def test_the_stub_refuses_a_request_without_a_person(tmp_path: Path) -> None:
    key = "GetDiagnosis-2.0"
    contract = CONTRACTS[key]
    body = (f'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
            f'<soap:Header><la:LogicalAddress xmlns:la="urn:riv:itintegration:registry:1">'
            f'{SOURCE}</la:LogicalAddress></soap:Header><soap:Body>'
            f'<r:GetDiagnosis xmlns:r="{contract.namespace}"/></soap:Body></soap:Envelope>')
    async with running_stub(tmp_path, sources={SOURCE: "answer"}) as (stub, tls):
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.load_cert_chain(tls.client_cert, tls.client_key)
        async with aiohttp.ClientSession() as http, http.post(
                stub.endpoint(key), data=body.encode(), ssl=context,
                headers={"SOAPAction": contract.soap_action,
                         "x-rivta-original-serviceconsumer-hsaid": CONSUMER}) as resp:
            text = await resp.text()
            status = resp.status
    assert status == 500 and "Invalid request" in text
    assert len(stub.rejected) == 1 and stub.requests == []


def test_person_records_cover_every_type() -> None:
    assert {t for t, _ in person_records()} == ALL_TYPES


def test_the_documented_configuration_is_complete_and_valid() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "producers.md"
    section = docs.read_text(encoding="utf-8").split("## The RIV-TA backend", 1)[1]
    example = re.findall(r"```toml\n(.+?)\n```", section, flags=re.DOTALL)[0]
    backend = tomllib.loads(example)["backend"]
    check_backend_table(backend)
    assert set(backend["contracts"]) == {c.info_type for c in CONTRACTS.values()}
    assert {"ca", "cert", "key", "consumer_hsa_id", "logical_address"} <= set(backend)


async def test_responses_are_parsed_and_mapped_off_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1,000-record response takes a quarter of a second to parse: never on the loop."""
    from producer_adapter.backends import rivta

    threads: list[bool] = []
    parse, map_all = rivta.parse_response, rivta.RivtaBackend._map_all

    def parse_spy(*args: Any) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return parse(*args)

    def map_spy(self: Any, *args: Any) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return map_all(self, *args)

    monkeypatch.setattr(rivta, "parse_response", parse_spy)
    monkeypatch.setattr(rivta.RivtaBackend, "_map_all", map_spy)
    result, _ = await _fetch(tmp_path, NEWEST)
    assert result.records and len(threads) == 2 * len(NEWEST)
    assert not any(threads)  # True would be the event loop's thread


def test_mapping_reads_xs_boolean_in_both_spellings_and_summer_time() -> None:
    """Real producers may write ``1``/``0`` for xs:boolean; times carry no offset."""
    from producer_adapter.backends import _rivta_map as rmap

    header = {"documentId": "d1", "documentTime": "20240715083000",
              "approvedForPatient": "0",
              "accountableHealthcareProfessional": {
                  "healthcareProfessionalCareUnitHSAId": UNIT_VC,
                  "healthcareProfessionalName": "Lena Läkare"}}
    body = {"clinicalDocumentNote": {"clinicalDocumentNoteCode": "bes",
                                     "clinicalDocumentNoteTitle": "Besök"}}
    [m] = rmap.care_documentation_21(
        {"careDocumentationHeader": header, "careDocumentationBody": body}, STOCKHOLM)
    assert m.approved_for_patient is False
    assert m.time.utcoffset() == dt.timedelta(hours=2)  # summer time
    assert m.fields["note_type"] == "Besöksanteckning"
    with pytest.raises(rmap.Skip, match="nullified"):
        list(rmap.care_documentation_21({"careDocumentationHeader": {**header, "nullified": "1"},
                                         "careDocumentationBody": body}, STOCKHOLM))


def test_a_samordningsnummer_is_sent_with_its_own_root() -> None:
    from producer_adapter.backends.rivta import request_body

    contract = CONTRACTS["GetDiagnosis-2.0"]
    assert request_body(contract, "195201761857", None)["patientId"] == {
        "id": "195201761857", "type": "1.2.752.129.2.1.3.3"}
    assert request_body(CONTRACTS["GetCareManagers-1.0"], SUBJECT, None)["patientId"] == {
        "root": "1.2.752.129.2.1.3.1", "extension": SUBJECT}


def test_validate_responses_refuses_what_the_schema_refuses() -> None:
    from producer_adapter.backends._rivta_xml import envelope
    from producer_adapter.backends.rivta import parse_response

    contract = CONTRACTS["GetDiagnosis-2.0"]
    schema = load_schema(contract)
    ns = contract.namespace
    bad = ET.Element(f"{{{ns}}}GetDiagnosisResponse")  # no result, a diagnosis with no header
    ET.SubElement(bad, f"{{{ns}}}diagnosis")
    data = envelope(bad, logical_address=None)
    page = parse_response(contract, data, SOURCE)  # lenient by default
    assert not isinstance(page, Fault) and page.records == [""]
    with pytest.raises(ValueError, match="does not validate"):
        parse_response(contract, data, SOURCE, schema)


async def test_valid_responses_pass_validation(tmp_path: Path) -> None:
    result, _ = await _fetch(tmp_path, NEWEST, validate_responses=True)
    assert {record_type(r) for r in result.records} == ALL_TYPES


async def test_readiness_names_a_producer_whose_tls_fails(tmp_path: Path) -> None:
    async with running_stub(tmp_path, sources={SOURCE: "answer"}) as (stub, tls):
        good = await open_backend(table(stub, tls, NEWEST, logical_address=SOURCE),
                                  base=tmp_path, producer_id="P-RIVTA")
        t = table(stub, tls, NEWEST, logical_address=SOURCE)
        del t["cert"], t["key"]  # no client certificate: the stub refuses the handshake
        bad = await open_backend(t, base=tmp_path, producer_id="P-RIVTA")
        try:
            assert await good.readiness([]) == []  # type: ignore[attr-defined]
            [reason] = await bad.readiness([])  # type: ignore[attr-defined]
        finally:
            await good.aclose()
            await bad.aclose()
    assert stub.url in reason and ("TLS refused" in reason or "client certificate" in reason)


def test_every_contract_is_shipped_and_its_soap_action_is_the_wsdl_s() -> None:
    from importlib import resources

    root = Path(str(resources.files("producer_adapter.backends") / "rivta_contracts"))
    for key, contract in CONTRACTS.items():
        [wsdl] = list((root / key).rglob("*.wsdl"))
        actions = re.findall(r"soapAction=['\"]([^'\"]+)", wsdl.read_text(encoding="utf-8"))
        assert actions == [contract.soap_action], key
        schema = load_schema(contract)
        assert schema.elements[contract.name].name == contract.request_tag
        assert schema.elements[f"{contract.name}Response"].name == contract.response_tag
