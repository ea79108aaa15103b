"""The FHIR backend against a small FHIR R4 server serving HL7's example resources.

The server (an aiohttp app on port 0) answers ``Patient?identifier=`` (and
``identifier=<system>|``: any value in that system), type searches by ``patient`` (with
``category``, the date parameters' ``ge``/``le`` as R4 defines them, ``_count`` and
``next`` links) and reads by id; it wants a bearer token, and can be told to fail a
resource type with an OperationOutcome.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from producer_adapter import Adapter, AdapterConfig, InMemoryBlockSource
from producer_adapter.backends import FhirBackend, check_backend_table, open_backend
from producer_adapter.backends.fhir import FhirConfig, map_resource
from producer_adapter.backends.fhir.mapping import LeftOut, Withheld
from producer_adapter.errors import AdapterConfigError, BackendError
from schemas.messages import Period
from schemas.records import (
    Alert,
    CareContact,
    CareDocumentation,
    CarePlan,
    Diagnosis,
    FunctionalStatus,
    Medication,
    SocialCareIntervention,
    UnitRef,
)
from schemas.registry import Registry
from tests.producer_adapter.test_adapter_daemon import (
    broker,
    collect_replies,
    publish_question,
    running,
)
from transport.settings import MqttSettings

EXAMPLES = Path(__file__).parent / "fhir_examples"
PERSON = "195001182046"   # the example Patient's personnummer (Skatteverket's test list)
PRODUCER = "SE2321000999-P001"
ORG = {"id": "SE2321000999-RE01", "name": "Region Exempel"}
TOKEN = "test-token-7f3a"
SECURITY_IFO = "https://example.se/fhir/CodeSystem/verksamhet|IFO"
LEGAL_BASIS = "https://example.se/fhir/StructureDefinition/legal-basis"
HOME_CARE = "https://example.se/fhir/CodeSystem/insatskategori|aldreomsorg"
ALL = frozenset({"medication", "diagnoses", "alerts", "lab_results", "functional_status",
                 "care_contacts", "care_plans", "care_documentation",
                 "social_care_interventions"})


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def examples() -> list[dict[str, Any]]:
    return [json.loads(f.read_text(encoding="utf-8")) for f in sorted(EXAMPLES.glob("*.json"))
            if not f.name.startswith("operationoutcome")]


def _subject(resource: dict[str, Any]) -> str:
    ref = resource.get("subject") or resource.get("patient") or {}
    return str(ref.get("reference", ""))


def _category_codes(resource: dict[str, Any]) -> set[str]:
    return {part for c in resource.get("category", []) if isinstance(c, dict)
            for coding in c.get("coding", [])
            for part in (coding.get("code"), f"{coding.get('system')}|{coding.get('code')}")}


_DATE_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {
    # R4's date search parameters and the elements they search (a resource without the
    # element never matches a date search, as on a real server)
    ("Condition", "recorded-date"): ("recordedDate",),
    ("AllergyIntolerance", "date"): ("recordedDate",),
    ("Observation", "date"): ("effectiveDateTime", "effectivePeriod", "effectiveInstant",
                              "effectiveTiming"),
    ("CarePlan", "date"): ("period",),
    ("Encounter", "date"): ("period",),
    ("Flag", "date"): ("period",),
    ("MedicationRequest", "authoredon"): ("authoredOn",),
    ("MedicationStatement", "effective"): ("effectiveDateTime", "effectivePeriod"),
    ("DocumentReference", "date"): ("date",),
    ("ServiceRequest", "authored"): ("authoredOn",),
}


def _date_range(resource: dict[str, Any], elements: tuple[str, ...]) -> tuple[str, str] | None:
    """The element's span as (first day, last day), open ends as extremes."""
    for element in elements:
        value = resource.get(element)
        if isinstance(value, str):
            return value[:10], value[:10]
        if isinstance(value, dict) and (value.get("start") or value.get("end")):
            return (str(value.get("start") or "0000")[:10], str(value.get("end") or "9999")[:10])
    return None


def _matches_dates(resource: dict[str, Any], rtype: str, query: Any) -> bool:
    for (kind, name), elements in _DATE_PARAMETERS.items():
        if kind != rtype:
            continue
        for value in query.getall(name, []):
            span = _date_range(resource, elements)
            if span is None:
                return False
            prefix, day = value[:2], value[2:]
            if (prefix == "ge" and span[1] < day) or (prefix == "le" and span[0] > day):
                return False
    return True


class FhirServer:
    """A FHIR R4 server small enough to read: search, read, paging, errors."""

    def __init__(self, resources: list[dict[str, Any]], *, token: str = TOKEN) -> None:
        self.resources = resources
        self.token = token
        self.failing: dict[str, tuple[int, dict[str, Any] | None]] = {}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.ignore_patient = False
        self.foreign_next = False
        self.delay = 0.0
        self.base_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fhir/{type}", self.search)
        app.router.add_get("/fhir/{type}/{id}", self.read)
        return app

    def _refuse(self, request: web.Request, rtype: str) -> web.Response | None:
        query: dict[str, list[str]] = {}
        for k, v in request.query.items():
            query.setdefault(k, []).append(v)
        self.requests.append((request.path, query))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._outcome(401, "login", "Bearer token missing or wrong")
        if rtype in self.failing:
            status, body = self.failing[rtype]
            if body is None:
                return web.Response(status=status, text="Internal error")
            return web.json_response(body, status=status, content_type="application/fhir+json")
        return None

    @staticmethod
    def _outcome(status: int, code: str, text: str) -> web.Response:
        body = {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
        return web.json_response(body, status=status, content_type="application/fhir+json")

    async def search(self, request: web.Request) -> web.Response:
        rtype = request.match_info["type"]
        refused = self._refuse(request, rtype)
        if refused is not None:
            return refused
        await asyncio.sleep(self.delay)
        q = request.query
        found = [r for r in self.resources if r["resourceType"] == rtype]
        if "identifier" in q:
            system, _, value = q.get("identifier", "").partition("|")
            found = [r for r in found if any(
                i.get("system") == system and (i.get("value") == value or not value)
                for i in r.get("identifier", []))]
        elif rtype != "Organization":
            patient = q.get("patient", "").removeprefix("Patient/")
            if not self.ignore_patient:
                found = [r for r in found if _subject(r) == f"Patient/{patient}"]
            if "category" in q:
                wanted = set(q["category"].split(","))
                found = [r for r in found if _category_codes(r) & wanted]
            found = [r for r in found if _matches_dates(r, rtype, q)]
        offset, count = int(q.get("_offset", 0)), int(q.get("_count", 100))
        page = found[offset:offset + count]
        links = [{"relation": "self", "url": str(request.url)}]
        if offset + count < len(found):
            following = request.url.update_query(_offset=str(offset + count))
            if self.foreign_next:
                following = following.with_host("fhir.elsewhere.example")
            links.append({"relation": "next", "url": str(following)})
        bundle = {
            "resourceType": "Bundle", "type": "searchset", "total": len(found), "link": links,
            "entry": [{"fullUrl": f"{self.base_url}/{rtype}/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in page],
        }
        return web.json_response(bundle, content_type="application/fhir+json")

    async def read(self, request: web.Request) -> web.Response:
        rtype, rid = request.match_info["type"], request.match_info["id"]
        refused = self._refuse(request, rtype)
        if refused is not None:
            return refused
        for r in self.resources:
            if r["resourceType"] == rtype and r["id"] == rid:
                return web.json_response(r, content_type="application/fhir+json")
        return self._outcome(404, "not-found", f"{rtype}/{rid} is not known")

    def searched(self, rtype: str) -> list[dict[str, list[str]]]:
        return [q for path, q in self.requests if path == f"/fhir/{rtype}"]


@pytest.fixture
async def fhir() -> AsyncIterator[FhirServer]:
    server = FhirServer(examples())
    async with TestServer(server.app(), host="127.0.0.1") as ts:
        server.base_url = str(ts.make_url("/fhir"))
        yield server


def fhir_table(server: FhirServer, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "kind": "fhir", "base_url": server.base_url, "organisation": ORG,
        "system": "Journalsystemet", "token_file": "fhir-token", "page_size": 2,
        "scope": {"default": "hsl", "types": {"social_care_interventions": "sol_elderly"},
                  "security": {SECURITY_IFO: "sol_other"}},
        "service_request_category": HOME_CARE, "legal_basis_extension": LEGAL_BASIS,
    }
    table.update(overrides)
    return table


async def open_fhir(server: FhirServer, tmp_path: Path, **overrides: Any) -> FhirBackend:
    (tmp_path / "fhir-token").write_text(TOKEN + "\n", encoding="utf-8")
    backend = await open_backend(fhir_table(server, **overrides), base=tmp_path,
                                 producer_id=PRODUCER)
    assert isinstance(backend, FhirBackend)
    return backend


async def fetch(server: FhirServer, tmp_path: Path, types: frozenset[str] = ALL,
                period: Period | None = None, **overrides: Any) -> Any:
    backend = await open_fhir(server, tmp_path, **overrides)
    try:
        return await backend.fetch(PERSON, types, period)
    finally:
        await backend.aclose()


# -- mapping -------------------------------------------------------------------------------

async def test_maps_each_resource_type_to_its_record(fhir: FhirServer, tmp_path: Path) -> None:
    with capture_logs() as logs:
        result = await fetch(fhir, tmp_path)
    by_id = {r.id: r for r in result.records}
    assert set(by_id) == {
        "MedicationRequest/medrx0310", "MedicationRequest/medrx0312",
        "MedicationRequest/medrx0313", "Condition/f201", "AllergyIntolerance/example",
        "Observation/adl-forflyttning", "Encounter/home", "CarePlan/example",
        "DocumentReference/example", "DocumentReference/ifo-utredning",
        "ServiceRequest/hemtjanst",
    }
    assert result.truncated is False
    u100 = UnitRef(id="SE2321000999-U100", name="Vårdcentralen Exempel")
    stockholm = ZoneInfo("Europe/Stockholm")

    tylenol = by_id["MedicationRequest/medrx0310"]
    assert isinstance(tylenol, Medication)
    assert tylenol.drug == "Tylenol PM" and tylenol.dose == "1 TAB–2 TAB"
    assert tylenol.route == "Oral Route" and tylenol.status == "active"
    assert tylenol.schedule.startswith("Take 1-2 tablets")
    assert tylenol.time == dt.datetime(2015, 1, 15, tzinfo=stockholm)
    assert tylenol.source.unit == u100  # from its encounter's serviceProvider
    assert tylenol.source.organisation.id == ORG["id"] and tylenol.source.system == \
        "Journalsystemet"
    assert tylenol.author is not None and tylenol.author.name == "Patrick Pump"
    assert [c.code for c in tylenol.codes] == ["50580-506-02"]
    phenytoin = by_id["MedicationRequest/medrx0312"]
    assert isinstance(phenytoin, Medication)
    assert [(c.system, c.code) for c in phenytoin.codes][1] == ("http://www.whocc.no/atc",
                                                                "N03AB02")
    assert phenytoin.dose == "100 mg" and phenytoin.purpose == "Status epilepticus (disorder)"
    assert phenytoin.start == dt.date(2015, 3, 2) and phenytoin.source.unit == u100
    azithromycin = by_id["MedicationRequest/medrx0313"]
    assert isinstance(azithromycin, Medication)
    assert azithromycin.status == "stopped"
    assert (azithromycin.start, azithromycin.stop) == (dt.date(2015, 6, 20),
                                                       dt.date(2015, 6, 25))

    fever = by_id["Condition/f201"]
    assert isinstance(fever, Diagnosis)
    assert fever.display == "Feber, ospecificerad" and fever.status == "resolved"
    assert fever.codes[0].system == "urn:oid:1.2.752.116.1.1.1.1.3"
    assert fever.onset == dt.date(2013, 4, 2)
    assert fever.source.unit.id == "SE2321000999-U200"  # encounter f201 → Organization/f201

    cashew = by_id["AllergyIntolerance/example"]
    assert isinstance(cashew, Alert)
    assert cashew.category == "allergy" and cashew.severity == "high"
    assert cashew.description == "Cashew nuts: Anaphylactic reaction, Urticaria"
    assert cashew.substance == "cashew nut allergenic extract Injectable Product"
    assert cashew.time == dt.datetime.fromisoformat("2014-10-09T14:58:00+11:00")

    adl = by_id["Observation/adl-forflyttning"]
    assert isinstance(adl, FunctionalStatus)
    assert (adl.domain, adl.assessment) == ("Förflyttning (ADL)", "Behöver hjälp av en person")
    assert adl.description == "Använder rollator inomhus."
    assert adl.source.unit == u100  # a logical reference with an HSA-id

    home = by_id["Encounter/home"]
    assert isinstance(home, CareContact)
    assert home.contact_type == "home health"
    assert home.start == dt.datetime.fromisoformat("2015-01-17T16:00:00+10:00")
    assert home.author is not None and home.author.name == "Dr Adam Careful"

    plan = by_id["CarePlan/example"]
    assert isinstance(plan, CarePlan)
    assert plan.title == "Manage obesity and weight loss"
    assert plan.plan_type == "Weight management plan"
    assert plan.goals == ["Target weight is 160 to 180 lbs."]
    assert [(a.what, a.responsible, a.when) for a in plan.activities] == [
        ("Weight Measured", "Tolvan Tolvansson", "1 per 1 d")]
    assert plan.follow_up_date == dt.date(2017, 6, 1)

    note = by_id["DocumentReference/example"]
    assert isinstance(note, CareDocumentation)
    assert (note.title, note.note_type) == ("Physical", "Outpatient Note")
    assert note.text.startswith("Besök på vårdcentralen.")
    assert note.source.unit == u100 and note.scope == "hsl"
    assert by_id["DocumentReference/ifo-utredning"].scope == "sol_other"  # meta.security

    home_care = by_id["ServiceRequest/hemtjanst"]
    assert isinstance(home_care, SocialCareIntervention)
    assert home_care.scope == "sol_elderly"  # the type's default
    assert home_care.intervention == "Hemtjänst" and home_care.legal_basis == "SoL 4 kap. 1 §"
    assert home_care.phase == "verkstallighet" and home_care.extent == "28 tim/mån"
    assert home_care.decision_date == dt.date(2024, 1, 15)
    assert home_care.source.unit.id == "SE2321000999-U400"

    # what cannot be read is listed for the reply's count, never silently left out
    assert sorted((u.type, u.resource, u.reason, u.unit) for u in result.unreadable) == [
        ("care_contacts", "Encounter", "no-time", "SE2321000999-U200"),
        ("lab_results", "Observation", "no-unit", None)]
    assert not [e for e in logs if e["event"] == "FHIR resources not mapped: left out"]
    text = repr(logs)
    for content in ("Cashew", "Glucose", "fever", PERSON, "Tolvan"):
        assert content not in text


async def test_a_default_unit_takes_resources_that_name_none(fhir: FhirServer,
                                                             tmp_path: Path) -> None:
    unit = {"id": "SE2321000999-U500", "name": "Laboratoriet"}
    result = await fetch(fhir, tmp_path, frozenset({"lab_results"}), unit=unit)
    [glucose] = result.records
    assert glucose.id == "Observation/f001" and glucose.source.unit.id == unit["id"]
    assert (glucose.value, glucose.unit, glucose.abnormal) == ("6.3", "mmol/l", True)
    assert glucose.reference_range == "3.1–6.2"
    assert fhir.searched("Observation")[0]["category"] == ["laboratory"]


async def test_the_person_is_found_by_personnummer(fhir: FhirServer, tmp_path: Path) -> None:
    await fetch(fhir, tmp_path, frozenset({"diagnoses"}))
    [patient] = fhir.searched("Patient")
    assert patient["identifier"] == [f"http://electronichealth.se/identifier/personnummer|{PERSON}"]
    [search] = fhir.searched("Condition")
    assert search["patient"] == ["Patient/example"] and search["_sort"] == ["-recorded-date"]


async def test_an_unknown_person_has_nothing(fhir: FhirServer, tmp_path: Path) -> None:
    backend = await open_fhir(fhir, tmp_path)
    try:
        result = await backend.fetch("195001182061", ALL, None)
    finally:
        await backend.aclose()
    assert result.records == [] and [p for p, _ in fhir.requests] == ["/fhir/Patient"]


# -- paging, limits, period ----------------------------------------------------------------

async def test_next_links_are_followed(fhir: FhirServer, tmp_path: Path) -> None:
    result = await fetch(fhir, tmp_path, frozenset({"medication"}), page_size=2)
    assert len(result.records) == 3 and result.truncated is False
    pages = fhir.searched("MedicationRequest")
    assert len(pages) == 2 and pages[1]["_offset"] == ["2"]  # the token went with the link


async def test_more_than_the_limit_is_cut_and_says_truncated(fhir: FhirServer,
                                                             tmp_path: Path) -> None:
    result = await fetch(fhir, tmp_path, frozenset({"medication", "alerts"}), page_size=1,
                         max_records_per_type=2)
    assert result.truncated is True
    assert [r.id for r in result.records] == [
        "MedicationRequest/medrx0310", "MedicationRequest/medrx0312",
        "AllergyIntolerance/example"]
    assert len(fhir.searched("MedicationRequest")) == 3  # stops once the third is seen


async def test_the_period_goes_to_the_server_and_is_checked_again(fhir: FhirServer,
                                                                  tmp_path: Path) -> None:
    period = Period(from_=dt.date(2015, 2, 1), to=dt.date(2015, 12, 31))
    result = await fetch(fhir, tmp_path, frozenset({"medication", "care_plans"}), period)
    # the server keeps the period where its parameter is the record's time; the backend
    # checks every record again
    assert [r.id for r in result.records] == ["MedicationRequest/medrx0312",
                                              "MedicationRequest/medrx0313"]
    [search] = fhir.searched("MedicationRequest")[:1]
    assert search["authoredon"] == ["ge2015-02-01", "le2015-12-31"]
    # CarePlan's date is the plan's period, not its created: the period is checked here
    assert "date" not in fhir.searched("CarePlan")[0]


# -- safety and failures -------------------------------------------------------------------

async def test_an_operation_outcome_is_a_short_error(fhir: FhirServer, tmp_path: Path) -> None:
    fhir.failing["Observation"] = (500, example("operationoutcome-exception"))
    with capture_logs() as logs, pytest.raises(BackendError) as err:
        await fetch(fhir, tmp_path, frozenset({"medication", "lab_results"}))
    assert str(err.value) == "FHIR server: HTTP 500 (exception)"
    [event] = [e for e in logs if e["event"] == "FHIR server refused"]
    assert (event["status"], event["issues"], event["resource"]) == (500, ["exception"],
                                                                     "Observation")
    assert "SQL Link" not in repr(logs)


@pytest.mark.parametrize(
    "status, body, reason",
    [
        (404, {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "not-supported"}]},
         "FHIR server: HTTP 404 (not-supported)"),
        (503, None, "FHIR server: HTTP 503"),
    ],
)
async def test_other_http_errors(fhir: FhirServer, tmp_path: Path, status: int,
                                 body: dict[str, Any] | None, reason: str) -> None:
    fhir.failing["CarePlan"] = (status, body)
    with pytest.raises(BackendError, match=f"^{re.escape(reason)}$"):
        await fetch(fhir, tmp_path, frozenset({"care_plans"}))


async def test_a_wrong_token_is_an_error(fhir: FhirServer, tmp_path: Path) -> None:
    fhir.token = "another"
    with pytest.raises(BackendError, match=r"^FHIR server: HTTP 401 \(login\)$"):
        await fetch(fhir, tmp_path, frozenset({"medication"}))


async def test_a_slow_server_is_a_timeout(fhir: FhirServer, tmp_path: Path) -> None:
    fhir.delay = 3
    with pytest.raises(BackendError, match=r"^FHIR server timeout$"):
        await fetch(fhir, tmp_path, frozenset({"medication"}), timeout_s=0.3)


async def test_an_unreachable_server_is_an_error(tmp_path: Path) -> None:
    server = FhirServer([])
    server.base_url = "http://127.0.0.1:1/fhir"
    with pytest.raises(BackendError, match=r"^FHIR server unreachable$"):
        await fetch(server, tmp_path, frozenset({"medication"}))


async def test_another_patients_resources_are_left_out(fhir: FhirServer,
                                                       tmp_path: Path) -> None:
    other = copy.deepcopy(example("medicationrequest-medrx0312"))
    other["id"], other["subject"] = "medrx-other", {"reference": "Patient/pat2"}
    fhir.resources.append(other)
    fhir.ignore_patient = True  # a server that forgets the patient parameter
    with capture_logs() as logs:
        result = await fetch(fhir, tmp_path, frozenset({"medication"}))
    assert "MedicationRequest/medrx-other" not in {r.id for r in result.records}
    [event] = [e for e in logs if e["event"] == "FHIR resources not mapped: left out"]
    assert event["left_out"] == {"MedicationRequest:other-patient": 1}


async def test_a_next_link_to_another_server_is_not_followed(fhir: FhirServer,
                                                             tmp_path: Path) -> None:
    fhir.foreign_next = True
    with pytest.raises(BackendError, match="next link to another server"):
        await fetch(fhir, tmp_path, frozenset({"medication"}), page_size=2)


# -- scope rules -----------------------------------------------------------------------------

def _config(**scope: Any) -> FhirConfig:
    return FhirConfig.from_table({"kind": "fhir", "base_url": "https://fhir.example/r4",
                                  "organisation": ORG, "scope": {"default": "hsl", **scope},
                                  "legal_basis_extension": LEGAL_BASIS})


UNIT = UnitRef(id="SE2321000999-U400", name="Hemtjänstgrupp Norr")
SCOPE_EXT = "https://example.se/fhir/StructureDefinition/scope"


@pytest.mark.parametrize(
    "scope, meta, extension, expected",
    [
        ({}, {}, None, "hsl"),
        ({"types": {"social_care_interventions": "lss"}}, {}, None, "lss"),
        ({"security": {"IFO": "sol_other"}},
         {"security": [{"system": "urn:x", "code": "IFO"}]}, None, "sol_other"),
        ({"security": {"urn:y|IFO": "sol_other"}},  # a label no rule names: withheld
         {"security": [{"system": "urn:x", "code": "IFO"}]}, None, "withheld"),
        ({"extension": SCOPE_EXT, "security": {"IFO": "sol_other"}},
         {"security": [{"code": "IFO"}]}, "sol_disability", "sol_disability"),
        ({"extension": SCOPE_EXT}, {}, "something-else", None),
    ],
)
def test_scope_extension_then_security_then_type_then_default(
    scope: dict[str, Any], meta: dict[str, Any], extension: str | None, expected: str | None
) -> None:
    resource = copy.deepcopy(example("servicerequest-hemtjanst"))
    resource["meta"] = meta
    if extension is not None:
        resource["extension"].append({"url": SCOPE_EXT, "valueCode": extension})
    config = _config(**scope)
    if expected == "withheld":
        with pytest.raises(Withheld, match=r"^security-label$"):
            map_resource(resource, "social_care_interventions", config=config,
                         producer_id=PRODUCER, unit=UNIT)
        return
    if expected is None:
        with pytest.raises(ValueError, match=r"^bad-scope$"):
            map_resource(resource, "social_care_interventions", config=config,
                         producer_id=PRODUCER, unit=UNIT)
        return
    record = map_resource(resource, "social_care_interventions", config=config,
                          producer_id=PRODUCER, unit=UNIT)
    assert record.scope == expected


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"status": "entered-in-error"}, "status-entered-in-error"),
        ({"code": {}}, "no-code"),
        ({"extension": [], "reasonCode": []}, "no-legal-basis"),
        ({"authoredOn": None, "occurrencePeriod": None}, "no-time"),
    ],
)
def test_unmappable_resources_name_a_reason(change: dict[str, Any], reason: str) -> None:
    resource = {**example("servicerequest-hemtjanst"), **change}
    with pytest.raises(ValueError, match=f"^{reason}$"):
        map_resource(resource, "social_care_interventions", config=_config(),
                     producer_id=PRODUCER, unit=UNIT)


def test_a_refuted_condition_keeps_its_negation() -> None:
    resource = example("condition-f201")
    resource["verificationStatus"]["coding"][0]["code"] = "refuted"
    record = map_resource(resource, "diagnoses", config=_config(), producer_id=PRODUCER,
                          unit=UNIT)
    assert isinstance(record, Diagnosis)
    assert (record.verification, record.clinical_status) == ("refuted", "resolved")
    resource["verificationStatus"]["coding"][0]["code"] = "entered-in-error"
    with pytest.raises(LeftOut, match=r"^verification-entered-in-error$"):
        map_resource(resource, "diagnoses", config=_config(), producer_id=PRODUCER, unit=UNIT)


# -- configuration ---------------------------------------------------------------------------

BASE = {"kind": "fhir", "base_url": "https://fhir.example/r4", "organisation": ORG,
        "scope": {"default": "hsl"}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scope": None}, r"\[backend.scope\] is required"),
        ({"scope": {"default": "sol"}}, r"\[backend.scope\] default must be one of"),
        ({"scope": {"default": "hsl", "types": {"medicine": "hsl"}}}, r"no information type"),
        ({"scope": {"default": "hsl", "security": {"a|b": "x"}}}, r"security.'a\|b' must be"),
        ({"organisation": None}, r"organisation = .* is required"),
        ({"base_url": "fhir.example"}, r"base_url must be"),
        ({"cert": "c.pem"}, r"needs both cert and key"),
        ({"token_file": "t", "token_env": "T"}, r"token_file or token_env, not both"),
        ({"types": ["medication", "x"]}, r"types must be a list of information types"),
        ({"page_size": 0}, r"page_size must be a positive integer"),
        ({"timezone": "Mars/Olympus"}, r"timezone 'Mars/Olympus' is not a known zone"),
        ({"password": "x"}, r"unknown keys: password"),
        ({"observation_categories": {"vital-signs": "vitals"}}, r"observation_categories"),
    ],
)
def test_config_errors_are_named(change: dict[str, Any], message: str) -> None:
    table = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(AdapterConfigError, match=message):
        check_backend_table(table, where="adapter.toml")


async def test_a_missing_token_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(AdapterConfigError, match=r"a.toml: \[backend\] token_file: cannot read"):
        await open_backend({**BASE, "token_file": "nope"}, base=tmp_path, producer_id=PRODUCER,
                           where="a.toml")
    with pytest.raises(AdapterConfigError, match=r"token_env: .*SAMSVAR_TEST_NO_SUCH_VAR"):
        await open_backend({**BASE, "token_env": "SAMSVAR_TEST_NO_SUCH_VAR"}, base=tmp_path,
                           producer_id=PRODUCER)


# -- through the adapter daemon ---------------------------------------------------------------

@pytest.fixture
def settings(mqtt_server: Any, unique_prefix: str) -> MqttSettings:
    return mqtt_server.settings(unique_prefix)  # type: ignore[no-any-return]


async def test_the_adapter_answers_from_the_fhir_server(
    fhir: FhirServer, tmp_path: Path, settings: MqttSettings, keys: Any, kit: Any,
    registry: Registry,
) -> None:
    backend = await open_fhir(fhir, tmp_path)
    config = AdapterConfig(**kit.adapter_config_kwargs(keys, settings))
    adapter = Adapter(config, registry, backend=backend, blocks=InMemoryBlockSource())
    ok = kit.make_question(prefix=settings.prefix, subject=PERSON)
    failing = kit.make_question(prefix=settings.prefix, subject=PERSON)
    try:
        async with running(adapter), broker(settings) as b:
            await publish_question(b, settings, kit, kit.sign_question(ok, keys.broker))
            [answer] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
            fhir.failing["MedicationRequest"] = (500, example("operationoutcome-exception"))
            await publish_question(b, settings, kit, kit.sign_question(failing, keys.broker))
            [error] = await collect_replies(b, registry, kit, count=1, prefix=settings.prefix)
    finally:
        await backend.aclose()
    assert answer.status == "ok"
    # the producer serves medication, alerts, documentation and interventions; the IFO
    # document (sol_other) never leaves
    assert {r.id for r in answer.records} == {
        "MedicationRequest/medrx0310", "MedicationRequest/medrx0312",
        "MedicationRequest/medrx0313", "AllergyIntolerance/example",
        "DocumentReference/example", "ServiceRequest/hemtjanst"}
    assert (error.status, error.reason, error.records) == ("error", "record system error", [])
