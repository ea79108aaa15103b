"""A RIV-TA producer stub: real SOAP 1.1 over mutual TLS, checked against the contract schemas.

It stands in for a region's RIV-TA producers (or its service platform) in tests and in the
demo. Every request is checked as the national platform would: the ``SOAPAction``, the
``LogicalAddress`` header, the ``x-rivta-original-serviceconsumer-hsaid`` header (VP007 when
that consumer is not authorised) and the body against the contract's XSD: a request that does
not validate is refused with a SOAP fault and counted in :attr:`RivtaStub.rejected`. Every
response is built from the contract's schema and validated before it is sent.

Each source system (logical address) behaves as one of the national aggregating services'
test cases (``soapui-testcase-summary.json``): ``answer`` (TC1), ``empty`` (TC2, no
engagements), ``hang`` (TC3/TC4, never answers), ``fault`` (TC5, the producer throws),
``error`` (``resultCode`` ERROR), ``info`` (the records with ``resultCode`` INFO) and ``page``
(TC6, 3.x ``hasMore``: one record per page).

Records are given in a neutral form (:class:`StubRecord`) per person and type and written
out in whichever contract version is asked.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import xmlschema
from aiohttp import web

from producer_adapter.backends._rivta_xml import (
    CONTRACTS,
    Contract,
    Fault,
    build,
    envelope,
    fault_envelope,
    load_schema,
    read_envelope,
)
from samsvar.mosquitto.pki import CertificateAuthority, cert_pem, key_pem
from samsvar.secret_files import write_secret

__all__ = ["Behaviour", "RivtaStub", "StubRecord", "StubTls", "contract_record", "write_tls"]

Behaviour = Literal["answer", "info", "empty", "hang", "fault", "error", "page"]

PERSON_ROOT: Final = "1.2.752.129.2.1.3.1"
ICD10SE: Final = "1.2.752.116.1.1.1.1.3"
ATC: Final = "1.2.752.129.2.2.3.1"
NPU: Final = "1.2.752.108.1"
KVA: Final = "1.2.752.116.1.3.2.1.4"
HSA_ROOT: Final = "1.2.752.129.2.1.4.1"


@dataclass(frozen=True, kw_only=True)
class StubRecord:
    """One record, written out in any contract version of its type.

    ``time`` is ``YYYYMMDDhhmmss`` (local Swedish time, as RIV-TA has it). ``care_process`` is
    a UUID (GetLaboratoryOrderOutcome 4 allows nothing else). ``data`` holds the type's own
    values: see :func:`contract_record`.
    """

    id: str
    time: str
    unit: str
    unit_name: str
    care_giver: str
    author: str = "Test Testsson"
    role: str = "Läkare"
    approved_for_patient: bool = True
    nullified: bool = False
    care_process: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StubTls:
    """The files of a stub's mutual TLS: one CA, the stub's server pair, one client pair."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """TLS for the stub: its certificate, and a client certificate from the CA required."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        context.load_cert_chain(self.server_cert, self.server_key)
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def write_tls(out: Path, *, client_cn: str, host: str = "127.0.0.1") -> StubTls:
    """A fresh CA with a server certificate for ``host`` and a client one (``client_cn``)."""
    out.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create("samsvar RIV-TA stub CA")
    files = StubTls(ca=out / "rivta-ca.pem", server_cert=out / "rivta-server.pem",
                    server_key=out / "rivta-server.key", client_cert=out / "rivta-client.pem",
                    client_key=out / "rivta-client.key")
    files.ca.write_bytes(cert_pem(ca.cert))
    for (cert_path, key_path), (cn, hosts) in (
            ((files.server_cert, files.server_key), ("rivta-stub", [host])),
            ((files.client_cert, files.client_key), (client_cn, []))):
        cert, key = ca.issue(cn, server_hosts=hosts)
        write_secret(key_path, key_pem(key))
        cert_path.write_bytes(cert_pem(cert))
    return files


def _cv(code: str, system: str, display: str) -> dict[str, str]:
    return {"code": code, "codeSystem": system, "displayName": display}


def _hp(r: StubRecord) -> dict[str, Any]:
    return {"authorTime": r.time, "healthcareProfessionalHSAId": f"{r.unit}-P1",
            "healthcareProfessionalName": r.author,
            "healthcareProfessionalRoleCode": _cv("LK", "1.2.752.129.2.2.1.4", r.role),
            "healthcareProfessionalOrgUnit": {"orgUnitHSAId": r.unit, "orgUnitName": r.unit_name},
            "healthcareProfessionalCareUnitHSAId": r.unit,
            "healthcareProfessionalCareGiverHSAId": r.care_giver}


def _header_2x(r: StubRecord, subject: str, source: str, *, title: str = "",
               id_key: str = "sourceSystemHSAId") -> dict[str, Any]:
    header: dict[str, Any] = {
        "documentId": r.id, id_key: source, "documentTitle": title or None,
        "documentTime": r.time, "patientId": {"id": subject, "type": PERSON_ROOT},
        "accountableHealthcareProfessional": _hp(r),
        "approvedForPatient": r.approved_for_patient}
    if r.nullified:
        header["nullified"] = True
        header["nullifiedReason"] = "Felregistrerad"
    return header


def _header_3x(r: StubRecord, subject: str, source: str, *,
               giver_key: str = "accountableHealthcareProvider") -> dict[str, Any]:
    acl: dict[str, Any] = {
        giver_key: {"root": HSA_ROOT, "extension": r.care_giver},
        "accountableCareUnit": {"root": HSA_ROOT, "extension": r.unit},
        "patientId": {"root": PERSON_ROOT, "extension": subject},
        "blockComparisonTime": r.time, "approvedForPatient": r.approved_for_patient}
    if r.care_process:
        acl["careProcessId"] = ({"root": "1.2.752.129.2.1.2.1", "extension": r.care_process}
                                if giver_key == "accountableHealthcareProvider"
                                else r.care_process)
    return {"accessControlHeader": acl, "sourceSystemId": {"root": HSA_ROOT, "extension": source},
            "record": {"id": {"root": HSA_ROOT, "extension": r.id}, "timestamp": r.time},
            "author": {"id": {"root": HSA_ROOT, "extension": f"{r.unit}-P1"}, "name": r.author,
                       "timestamp": r.time,
                       "byRole": _cv("LK", "1.2.752.129.2.2.1.4", r.role),
                       "orgUnit": {"orgUnitHSAId": r.unit, "orgUnitName": r.unit_name}}}


def _ts(value: str | None) -> str | None:
    """A date ``YYYYMMDD`` as the TimeStampType ``YYYYMMDDhhmmss`` (midnight)."""
    return value.ljust(14, "0") if value else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def contract_record(key: str, r: StubRecord, subject: str, source: str) -> dict[str, Any]:
    """``r`` as one record element of contract version ``key``.

    ``data`` keys by type: care_documentation ``title``, ``text``, ``note_code`` (2.1 enum, e.g.
    ``utr``); diagnoses ``code``, ``display``, ``primary``; medication ``atc``, ``drug``,
    ``dose``, ``short``, ``purpose``, ``start``, ``end``, ``active``; alerts ``substance``,
    ``atc``, ``severity``, ``comment``; lab_results ``analyses``: [(npu, name, value, unit,
    range, abnormal)]; care_contacts ``code`` (1-5), ``reason``, ``start``, ``end``;
    care_plans ``plan_type``, ``title``, ``text``, ``participants``; functional_status
    ``padl``: [(code, name, assessment)], ``comment``; bookings ``start``, ``end``,
    ``purpose``, ``reason``, ``time_type``, ``care_type``, ``invitation``; fixed_contacts
    ``role_display``, ``start``, ``end``, ``note``, ``internal_note``, ``phone``.
    """
    d = r.data
    match key:
        case "GetCareDocumentation-2.1":
            return {"careDocumentationHeader": _header_2x(r, subject, source,
                                                          id_key="sourceSystemHSAid"),
                    "careDocumentationBody": {"clinicalDocumentNote": {
                        "clinicalDocumentNoteCode": d.get("note_code", "utr"),
                        "clinicalDocumentNoteTitle": d["title"],
                        "clinicalDocumentNoteText": d.get("text")}}}
        case "GetCareDocumentation-3.0":
            return {"header": _header_3x(r, subject, source),
                    "body": {"clinicalDocumentNoteCode": _cv(
                        d.get("note_code", "utr"), "1.2.752.129.2.2.2.11", "Utredning"),
                        "clinicalDocumentNoteTitle": d["title"],
                        "clinicalDocumentNoteText": d.get("text")}}
        case "GetDiagnosis-2.0":
            return {"diagnosisHeader": _header_2x(r, subject, source),
                    "diagnosisBody": {
                        "typeOfDiagnosis": "Huvuddiagnos" if d.get("primary") else "Bidiagnos",
                        "chronicDiagnosis": False, "diagnosisTime": r.time,
                        "diagnosisCode": _cv(d["code"], ICD10SE, d["display"])}}
        case "GetMedicationHistory-2.1":
            prescription: dict[str, Any] = {
                "prescriptionId": {"root": HSA_ROOT, "extension": f"{r.id}-ord"},
                "typeOfPrescription": "I",
                "prescriptionStatus": "Active" if d.get("active", True) else "Inactive",
                "treatmentPurpose": d.get("purpose"), "prescriber": _hp(r),
                "startOfTreatment": _ts(d.get("start")), "endOfTreatment": _ts(d.get("end")),
                "selfMedication": False,
                "drug": {"drug": {"nplId": _cv(d.get("npl", "19990101000001"),
                                               "1.2.752.129.2.1.5.1", d["drug"]),
                                  "atcCode": _cv(d["atc"], ATC, d.get("atc_name", d["drug"]))},
                         "dosage": [{"dosageInstruction": d.get("dose"),
                                     "shortNotation": d.get("short")}]}}
            return {"medicationMedicalRecordHeader": _header_2x(r, subject, source),
                    "medicationMedicalRecordBody": {"medicationPrescription": prescription}}
        case "GetAlertInformation-2.0":
            return {"alertInformationHeader": _header_2x(r, subject, source),
                    "alertInformationBody": {
                        "typeOfAlertInformation": _cv("1", "1.2.752.129.2.2.3.18",
                                                      "Överkänslighet"),
                        "validityTimePeriod": {"start": r.time},
                        "alertInformationComment": d.get("comment"),
                        "hypersensitivity": {
                            "typeOfHypersensitivity": _cv("1", "1.2.752.129.2.2.3.19",
                                                          "Läkemedelsöverkänslighet"),
                            "degreeOfSeverity": _cv("2", "1.2.752.129.2.2.3.20",
                                                    d.get("severity", "Allvarlig")),
                            "pharmaceuticalHypersensitivity": {
                                "atcSubstance": _cv(d["atc"], ATC, d["substance"])}}}}
        case "GetLaboratoryOrderOutcome-3.1":
            analyses = [{"analysisId": {"root": HSA_ROOT, "extension": f"{r.id}-{i}"},
                         "analysisCode": _cv(npu, NPU, name), "analysisText": name,
                         "analysisOutcome": {"outcomeValue": value, "outcomeUnit": unit or None,
                                             "observationTime": r.time,
                                             "pathologicalFlag": abnormal,
                                             "referenceInterval": ref or None}}
                        for i, (npu, name, value, unit, ref, abnormal)
                        in enumerate(d["analyses"], 1)]
            return {"laboratoryOrderOutcomeHeader": _header_2x(r, subject, source),
                    "laboratoryOrderOutcomeBody": {
                        "resultType": "DEF", "registrationTime": r.time,
                        "discipline": "Klinisk kemi", "analysis": analyses,
                        "order": {"orderId": f"{r.id}-rem"}}}
        case "GetLaboratoryOrderOutcome-4.0":
            analyses = [{"identifier": {"root": HSA_ROOT, "extension": f"{r.id}-{i}"},
                         "timestamp": r.time, "code": _cv(npu, NPU, name),
                         "result": [{"value": {"pq": {"value": float(value), "unit": unit}}
                                     if unit else {"st": value},
                                     "interpretation": [_cv("H", "2.16.840.1.113883.5.83",
                                                            "Avvikande")] if abnormal else [],
                                     "reference": {"description": ref} if ref else None}]}
                        for i, (npu, name, value, unit, ref, abnormal)
                        in enumerate(d["analyses"], 1)]
            return {"header": _header_3x(r, subject, source, giver_key="accountableCareGiver"),
                    "body": {"identifier": {"root": HSA_ROOT, "extension": r.id},
                             "type": _cv("DEF", "1.2.752.129.2.2.2.1", "Definitivsvar"),
                             "referral": {"identifier": {"root": HSA_ROOT,
                                                         "extension": f"{r.id}-rem"},
                                          "timestamp": r.time,
                                          "requester": {"id": {"root": HSA_ROOT,
                                                               "extension": f"{r.unit}-P1"},
                                                        "name": r.author}},
                             "groupOfAnalyses": [{"analysis": analyses}],
                             "recipientUnit": {"id": {"root": HSA_ROOT, "extension": r.unit},
                                               "name": r.unit_name}}}
        case "GetCareContacts-2.0" | "GetCareContacts-3.0":
            code = d.get("code", 1)
            names = {1: "Besök", 2: "Telefon", 3: "Vårdtillfälle", 4: "Dagsjukvård", 5: "Annan"}
            v3 = key.endswith("3.0")
            return {"careContactHeader": _header_2x(r, subject, source),
                    "careContactBody": {
                        "careContactCode": _cv(str(code), "1.2.752.129.2.2.2.25", names[code])
                        if v3 else code,
                        "careContactReason": d.get("reason"),
                        "careContactOrgUnit": {"orgUnitHSAId": r.unit, "orgUnitName": r.unit_name},
                        "careContactTimePeriod": {"start": d.get("start", r.time),
                                                  "end": d.get("end")},
                        "careContactStatus": _cv(str(d.get("status", 3)), "1.2.752.129.2.2.2.26",
                                                 "Avslutad") if v3 else d.get("status", 3)}}
        case "GetCarePlans-2.0":
            return {"carePlanHeader": _header_2x(r, subject, source, title=d["title"]),
                    "carePlanBody": {
                        "content": [{"mediaType": "text/plain", "value": _b64(d["text"])}]
                        if d.get("text") else [],
                        "participatingCareUnitHSAId": [{"root": HSA_ROOT, "extension": u}
                                                       for u in d.get("participants", ())],
                        "typeOfCarePlanEnum": d["plan_type"]}}
        case "GetFunctionalStatus-2.0":
            return {"functionalStatusAssessmentHeader": _header_2x(r, subject, source),
                    "functionalStatusAssessmentBody": {
                        "assessmentCategory": "pad-pad", "comment": d.get("comment"),
                        "padl": [{"typeOfAssessment": _cv(c, "1.2.752.116.1.1.3", name),
                                  "assessment": a} for c, name, a in d["padl"]]}}
        case "GetSubjectOfCareSchedule-1.1":
            return {"startTimeInclusive": d.get("start", r.time), "endTimeExclusive": d.get("end"),
                    "healthcare_facility": r.unit, "performer": f"{r.unit}-P1",
                    "bookingId": r.id, "subject_of_care": subject,
                    "purpose": d.get("purpose"), "reason": d.get("reason"),
                    "healthcare_facility_name": r.unit_name, "performerName": r.author,
                    "timeTypeName": d.get("time_type", "Besök"),
                    "careTypeName": d.get("care_type", r.role),
                    "cancel_booking_allowed": True, "rebooking_allowed": True,
                    "message_allowed": False, "isInvitation": d.get("invitation", False)}
        case "GetCareManagers-1.0":
            def org(hsa: str, name: str) -> dict[str, Any]:
                return {"hsaId": {"root": HSA_ROOT, "extension": hsa}, "name": name}
            acl: dict[str, Any] = {
                "accountableHealthcareProviderId": {"root": HSA_ROOT, "extension": r.care_giver},
                "accountableCareUnitId": {"root": HSA_ROOT, "extension": r.unit},
                "patientId": {"root": PERSON_ROOT, "extension": subject},
                "blockComparisonTime": r.time}
            if r.care_process:
                acl["careProcessId"] = {"root": "1.2.752.129.2.1.2.1",
                                        "extension": r.care_process}
            return {"careManagerHeader": {"accessControlHeader": acl,
                                          "sourceSystemId": {"root": HSA_ROOT,
                                                             "extension": source}},
                    "code": _cv(d.get("code", "1"), "1.2.752.129.2.2.2.70",
                                d.get("role_display", "Fast vårdkontakt")),
                    "practitioner": {"hsaId": {"root": HSA_ROOT, "extension": f"{r.unit}-P1"},
                                     "name": r.author,
                                     "qualification": _cv("SSK", "1.2.752.129.2.2.1.4", r.role)},
                    "period": {"start": d.get("start", r.time[:8]), "end": d.get("end")},
                    "externalNotes": d.get("note"), "internalNotes": d.get("internal_note"),
                    "managingCareGiver": org(r.care_giver, d.get("care_giver_name", "")),
                    "managingCareUnit": org(r.unit, r.unit_name),
                    "contact": [{"telecom": [{"system": _cv("phone", "2.16.840.1.113883.4.642.4.72",
                                                            "Telefon"),
                                              "value": d["phone"]}]}] if d.get("phone") else []}
    raise KeyError(f"the stub has no writer for {key}")


def _result(contract: Contract, code: str, text: str = "") -> dict[str, Any]:
    if contract.key in ("GetCareDocumentation-3.0", "GetLaboratoryOrderOutcome-4.0"):
        return {"resultCode": code, "resultText": text or None}
    return {"resultCode": code, "logId": "stub-log-1", "message": text or None}


class RivtaStub:
    """An aiohttp server speaking the contracts at ``/<Contract>/<major>/rivtabp21``.

    ``records[(info_type, subject)]`` are the records of a person; ``sources`` maps each
    logical address to its behaviour; ``authorized`` the consumer HSA-ids let through
    (None: any). ``requests`` records (contract, logical address, consumer, correlation id)
    of every request that validated; ``rejected`` the reasons of every refused one.
    """

    def __init__(self, *, records: Mapping[tuple[str, str], Sequence[StubRecord]],
                 sources: Mapping[str, Behaviour], ssl_context: ssl.SSLContext | None,
                 contracts: Sequence[str] = tuple(CONTRACTS),
                 authorized: frozenset[str] | None = None) -> None:
        self.records = records
        self.sources = dict(sources)
        self.authorized = authorized
        self.requests: list[tuple[str, str, str, str]] = []
        self.rejected: list[str] = []
        self._ssl = ssl_context
        self._contracts = [CONTRACTS[k] for k in contracts]
        self._schemas: dict[str, xmlschema.XMLSchema] = {}
        self._runner: web.AppRunner | None = None
        self._never = asyncio.Event()
        self.url = ""

    @staticmethod
    def path(contract: Contract) -> str:
        return f"/{contract.name}/{contract.version.split('.')[0]}/rivtabp21"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Load the schemas (in threads), listen, and return the base URL."""
        loaded = await asyncio.gather(*(asyncio.to_thread(load_schema, c)
                                        for c in self._contracts))
        self._schemas = {c.key: s for c, s in zip(self._contracts, loaded, strict=True)}
        app = web.Application(client_max_size=4 * 1024 * 1024)
        for contract in self._contracts:
            app.router.add_post(self.path(contract), self._handler(contract))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"{'https' if self._ssl else 'http'}://{host}:{bound}"
        return self.url

    async def close(self) -> None:
        self._never.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def endpoint(self, key: str) -> str:
        return self.url + self.path(CONTRACTS[key])

    @staticmethod
    def _fault(code: str, text: str) -> web.Response:
        return web.Response(status=500, body=fault_envelope(code, text),
                            content_type="text/xml", charset="utf-8")

    def _handler(self, contract: Contract) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.headers.get("SOAPAction", "").strip('"') != contract.soap_action:
                self.rejected.append("soapaction")
                return self._fault("Client", "VP002 wrong or missing SOAPAction")
            consumer = request.headers.get("x-rivta-original-serviceconsumer-hsaid", "")
            if not consumer or (self.authorized is not None and consumer not in self.authorized):
                self.rejected.append("authorization")
                return self._fault("Server", "VP007 Authorization missing for "
                                   f"serviceConsumerId: {consumer or '(none)'}")
            body = await request.read()
            answer = await asyncio.to_thread(self._check, contract, body)
            if isinstance(answer, Fault):
                self.rejected.append(answer.text)
                return self._fault(answer.code, answer.text)
            address, subject, reference = answer
            self.requests.append((contract.key, address, consumer,
                                  request.headers.get("x-skltp-correlation-id", "")))
            behaviour = self.sources.get(address)
            if behaviour is None:
                return self._fault("Server", f"VP004 No receiver found for: {address}")
            if behaviour == "hang":
                await self._never.wait()
                return self._fault("Server", "VP009 stub closed")
            if behaviour == "fault":
                return self._fault("Server", "Producer error: the source system threw")
            data = await asyncio.to_thread(self._answer, contract, address, subject, behaviour,
                                           reference)
            return web.Response(body=data, content_type="text/xml", charset="utf-8")
        return handle

    def _check(self, contract: Contract, body: bytes) -> tuple[str, str, str | None] | Fault:
        """The request's (logical address, subject, hasMoreReference), or why it is refused."""
        try:
            address, element = read_envelope(body)
        except ValueError as exc:
            return Fault(code="Client", text=f"Invalid request: {exc}")
        if isinstance(element, Fault) or element.tag != contract.request_tag:
            return Fault(code="Client", text="Invalid request: wrong body element")
        if not address:
            return Fault(code="Client", text="VP003 No logical address found in the request")
        schema = self._schemas[contract.key]
        error = next(iter(schema.iter_errors(element)), None)
        if error is not None:
            return Fault(code="Client", text=f"Invalid request: {error.reason}")
        ns = {"r": contract.namespace}
        subject = (element.findtext("r:subject_of_care", namespaces=ns)
                   or next((e.text for e in element.iter()
                            if e.tag.endswith(("}id", "}extension")) and e.text), ""))
        reference = element.findtext("r:hasMoreReference", namespaces=ns)
        return address, (subject or "").strip(), reference

    def _answer(self, contract: Contract, address: str, subject: str, behaviour: Behaviour,
                reference: str | None) -> bytes:
        found = [] if behaviour in ("empty", "error") else list(
            self.records.get((contract.info_type, subject), ()))
        doc: dict[str, Any] = {}
        if behaviour == "page" and contract.paged:
            start = int(reference or 0)
            page = found[start:start + 1]
            if start + 1 < len(found):
                doc["hasMore"] = [{"logicalAddress": address, "reference": str(start + 1)}]
            found = page
        doc[contract.records] = [contract_record(contract.key, r, subject, address)
                                 for r in found]
        doc["result"] = (_result(contract, "ERROR", "Stub: the source system failed")
                         if behaviour == "error" else
                         _result(contract, "INFO", "Stub: some units did not answer")
                         if behaviour == "info" else _result(contract, "OK"))
        if contract.key == "GetCareDocumentation-3.0":  # hasMore comes before result
            doc = {k: doc[k] for k in (contract.records, "hasMore", "result") if k in doc}
        schema = self._schemas[contract.key]
        element = build(schema.elements[f"{contract.name}Response"], doc)
        schema.validate(element)  # a stub that answered invalid XML would prove nothing
        return envelope(element, logical_address=None)
