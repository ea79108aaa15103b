"""RIV-TA records (decoded to dicts, local names as keys) → the fields of samsvar records.

One function per contract family. Each yields, per samsvar record, a :class:`Mapped`: the
type-specific fields and the parts every record shares (id, time, author, unit, care
giver, codes, care process, ``approvedForPatient``). A nullified record yields nothing
(:class:`Skip` with ``nullified``); one that cannot be mapped raises :class:`Skip` with
a short reason. Reasons are counted in the adapter's log, never the content.

Times: RIV-TA ``TimeStampType`` is ``YYYYMMDDhhmmss`` local time without an offset, read in
the configured zone (Europe/Stockholm); ``DateType`` is ``YYYYMMDD``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

__all__ = ["MAPPERS", "Mapped", "Skip", "code_of", "timestamp"]

Json = dict[str, Any]


class Skip(ValueError):
    """This RIV-TA record gives no samsvar record; the message is the counted reason."""


@dataclass(kw_only=True)
class Mapped:
    """One samsvar record's fields before the backend adds source and scope."""

    id: str
    time: dt.datetime
    unit_id: str
    unit_name: str = ""
    care_giver: str = ""
    author: Json | None = None
    codes: list[Json] = field(default_factory=list)
    care_process: str | None = None
    approved_for_patient: bool | None = None
    fields: Json = field(default_factory=dict)


def _d(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _s(value: Any) -> str:
    return "" if value is None or isinstance(value, dict | list) else str(value).strip()


def _flag(value: Any) -> bool | None:
    """An ``xs:boolean`` (``true``/``false``/``1``/``0``), or None when absent or not one."""
    if isinstance(value, bool):
        return value
    return {"true": True, "1": True, "false": False, "0": False}.get(_s(value).lower())


def _g(d: Any, *path: str) -> Any:
    for key in path:
        d = _d(d).get(key)
    return d


_TS: Final = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?$")


def timestamp(value: Any, tz: ZoneInfo) -> dt.datetime | None:
    """``YYYYMMDD[hhmm[ss]]`` (or ISO 8601) as an aware datetime; naive ones in ``tz``."""
    text = _s(value)
    if not text:
        return None
    m = _TS.match(text)
    try:
        if m:
            y, mo, d, h, mi, s = (int(x) if x else 0 for x in m.groups())
            return dt.datetime(y, mo, d, h, mi, s, tzinfo=tz)
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _date(value: Any, tz: ZoneInfo) -> dt.date | None:
    ts = timestamp(value, tz)
    return ts.date() if ts else None


_OID: Final = re.compile(r"^[0-2](\.\d+)+$")


def code_of(cv: Any) -> Json | None:
    """A CVType (code, codeSystem, displayName) as a samsvar Code; OIDs as ``urn:oid:``."""
    cv = _d(cv)
    code = _s(cv.get("code"))
    if not code:
        return None
    system = _s(cv.get("codeSystem"))
    if _OID.match(system):
        system = f"urn:oid:{system}"
    return {"system": system, "code": code, "display": _s(cv.get("displayName"))}


def _text_of(cv: Any) -> str:
    cv = _d(cv)
    return _s(cv.get("displayName")) or _s(cv.get("originalText")) or _s(cv.get("code"))


def _ii(value: Any) -> str:
    """An IIType's extension (else its root); a plain string as it is."""
    if isinstance(value, dict):
        return _s(value.get("extension")) or _s(value.get("root"))
    return _s(value)


def _plain_text(media: Any) -> str:
    media = _d(media)
    if not _s(media.get("mediaType")).startswith("text/plain"):
        return ""
    value = media.get("value")
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = base64.b64decode(_s(value), validate=True)
        except (binascii.Error, ValueError):
            return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""


# -- the record's common parts -----------------------------------------------------------

def _hp_author(hp: Json) -> Json | None:
    name = _s(hp.get("healthcareProfessionalName"))
    if not name:
        return None
    return {"name": name, "role": _text_of(hp.get("healthcareProfessionalRoleCode"))}


def _header_2x(header: Json, tz: ZoneInfo, *, required_hp: bool = True) -> Mapped:
    """The PatientSummaryHeader of the 2.x contracts."""
    if _flag(header.get("nullified")) is True:
        raise Skip("nullified")
    hp = _d(header.get("accountableHealthcareProfessional"))
    org = _d(hp.get("healthcareProfessionalOrgUnit"))
    unit_id = _s(hp.get("healthcareProfessionalCareUnitHSAId")) or _s(org.get("orgUnitHSAId"))
    unit_name = _s(org.get("orgUnitName")) if _s(org.get("orgUnitHSAId")) in ("", unit_id) else ""
    time = timestamp(header.get("documentTime"), tz) or timestamp(hp.get("authorTime"), tz)
    doc_id = _s(header.get("documentId"))
    if not doc_id:
        raise Skip("no-id")
    return Mapped(
        id=doc_id, time=time or dt.datetime.min.replace(tzinfo=tz), unit_id=unit_id,
        unit_name=unit_name, care_giver=_s(hp.get("healthcareProfessionalCareGiverHSAId")),
        author=_hp_author(hp), approved_for_patient=_flag(header.get("approvedForPatient")),
        fields={"_time_known": time is not None})


def _header_3x(header: Json, tz: ZoneInfo) -> Mapped:
    """The header of the 3.x contracts (GetCareDocumentation 3, GetLaboratoryOrderOutcome 4)."""
    acl = _d(header.get("accessControlHeader"))
    record = _d(header.get("record"))
    author = _d(header.get("author"))
    org = _d(author.get("orgUnit"))
    unit_id = _ii(acl.get("accountableCareUnit")) or _s(org.get("orgUnitHSAId"))
    unit_name = _s(org.get("orgUnitName")) if _s(org.get("orgUnitHSAId")) in ("", unit_id) else ""
    doc_id = _ii(record.get("id"))
    if not doc_id:
        raise Skip("no-id")
    time = timestamp(record.get("timestamp"), tz) or timestamp(author.get("timestamp"), tz)
    name = _s(author.get("name"))
    return Mapped(
        id=doc_id, time=time or dt.datetime.min.replace(tzinfo=tz), unit_id=unit_id,
        unit_name=unit_name,
        care_giver=_ii(acl.get("accountableHealthcareProvider") or acl.get(
            "accountableCareGiver")),
        author={"name": name, "role": _text_of(author.get("byRole"))} if name else None,
        care_process=_ii(acl.get("careProcessId")) or None,
        approved_for_patient=_flag(acl.get("approvedForPatient")),
        fields={"_time_known": time is not None})


def _done(m: Mapped, fields: Json, *, time: dt.datetime | None = None) -> Mapped:
    known = m.fields.pop("_time_known", True)
    if time is not None:
        m.time = time
    elif not known:
        raise Skip("no-time")
    m.fields.update(fields)
    return m


# -- one function per contract family ----------------------------------------------------

_NOTE_CODES: Final = {  # GetCareDocumentation 2.1 ClinicalDocumentNoteCodeEnum
    "utr": "Utredning", "atb": "Åtgärd/behandling", "sam": "Sammanfattning",
    "sao": "Samordning", "ins": "Inskrivning", "slu": "Slutanteckning",
    "auf": "Anteckning utan fysiskt möte", "sva": "Sammanfattning vårdtillfälle",
    "bes": "Besöksanteckning",
}


def care_documentation_21(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    m = _header_2x(_d(rec.get("careDocumentationHeader")), tz)
    note = _d(_g(rec, "careDocumentationBody", "clinicalDocumentNote"))
    code = _s(note.get("clinicalDocumentNoteCode"))
    note_type = _NOTE_CODES.get(code, code)
    title = (_s(note.get("clinicalDocumentNoteTitle"))
             or _s(_g(rec, "careDocumentationHeader", "documentTitle")) or note_type)
    if not title:
        raise Skip("no-title")
    text = _s(note.get("clinicalDocumentNoteText")) or _plain_text(note.get("multimediaEntry"))
    m.codes = [{"system": "urn:riv:clinicalprocess:healthcond:description:"
                          "ClinicalDocumentNoteCodeEnum", "code": code,
                "display": note_type}] if code else []
    yield _done(m, {"title": title, "note_type": note_type, "text": text})


def care_documentation_30(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    m = _header_3x(_d(rec.get("header")), tz)
    body = _d(rec.get("body"))
    note_type = _text_of(body.get("clinicalDocumentNoteCode"))
    title = _s(body.get("clinicalDocumentNoteTitle")) or note_type
    if not title:
        raise Skip("no-title")
    text = _s(body.get("clinicalDocumentNoteText")) or _plain_text(body.get("multimediaEntry"))
    code = code_of(body.get("clinicalDocumentNoteCode"))
    m.codes = [code] if code else []
    yield _done(m, {"title": title, "note_type": note_type, "text": text})


def diagnosis_20(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    m = _header_2x(_d(rec.get("diagnosisHeader")), tz)
    body = _d(rec.get("diagnosisBody"))
    display = _text_of(body.get("diagnosisCode"))
    if not display:
        raise Skip("no-code")
    code = code_of(body.get("diagnosisCode"))
    m.codes = [code] if code else []
    diagnosed = timestamp(body.get("diagnosisTime"), tz)
    yield _done(m, {"display": display, "primary": body.get("typeOfDiagnosis") == "Huvuddiagnos",
                    "onset": diagnosed.date() if diagnosed else None},
                time=diagnosed if diagnosed else None)


def _drug(choice: Json) -> tuple[str, list[Json], str]:
    """Name, codes (ATC first) and route of a DrugChoiceType."""
    drug = _d(choice.get("drug"))
    codes = [c for c in (code_of(drug.get("atcCode")), code_of(drug.get("nplId"))) if c]
    name = (_text_of(drug.get("nplId")) if _s(_d(drug.get("nplId")).get("displayName")) else ""
            ) or _s(_g(choice, "unstructuredDrugInformation", "unstructuredInformation")) or _s(
        _g(choice, "generics", "substance")) or _text_of(_g(choice, "drugArticle", "nplPackId")
    ) or _text_of(_g(choice, "merchandise", "articleNumber")) or _text_of(drug.get("atcCode"))
    strength = _s(drug.get("strength"))
    if name and strength and strength not in name:
        name = f"{name} {strength.removesuffix('.0')} {_s(drug.get('strengthUnit'))}".strip()
    return name, codes, _text_of(drug.get("routeOfAdministration"))


def medication_21(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    m = _header_2x(_d(rec.get("medicationMedicalRecordHeader")), tz)
    p = _d(_g(rec, "medicationMedicalRecordBody", "medicationPrescription"))
    choice = _d(p.get("drug"))
    name, codes, route = _drug(choice)
    if not name:
        raise Skip("no-drug")
    dosage = _d((_l(choice.get("dosage")) or [{}])[0])
    prescriber = _d(p.get("prescriber"))
    if m.author is None:
        m.author = _hp_author(prescriber)
    reasons = [_text_of(r.get("reason")) or _s(r.get("otherReason"))
               for r in map(_d, _l(p.get("principalPrescriptionReason")))]
    m.codes = codes
    yield _done(m, {
        "drug": name, "dose": _s(dosage.get("dosageInstruction")),
        "route": route, "schedule": _s(dosage.get("shortNotation")),
        "purpose": _s(p.get("treatmentPurpose")) or next((r for r in reasons if r), ""),
        "start": _date(p.get("startOfTreatment") or p.get("startOfFirstTreatment"), tz),
        "stop": _date(p.get("endOfTreatment"), tz),
        "status": "active" if p.get("prescriptionStatus") == "Active" else "stopped",
    }, time=timestamp(prescriber.get("authorTime"), tz) if not m.fields.get(
        "_time_known") else None)


def alert_20(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    m = _header_2x(_d(rec.get("alertInformationHeader")), tz)
    body = _d(rec.get("alertInformationBody"))
    heading = _text_of(body.get("typeOfAlertInformation"))
    hyper = _d(body.get("hypersensitivity"))
    codes: list[Json | None] = [code_of(body.get("typeOfAlertInformation"))]
    substance, severity, details = "", None, ""
    if hyper:
        category = "allergy"
        pharma = _d(hyper.get("pharmaceuticalHypersensitivity"))
        other = _d(hyper.get("otherHypersensitivity"))
        substance = (_text_of(pharma.get("atcSubstance")) or _s(pharma.get("nonATCSubstance"))
                     or _s(other.get("hypersensitivityAgent"))
                     or _text_of(other.get("hypersensitivityAgentCode")))
        codes += [code_of(pharma.get("atcSubstance")), code_of(other.get(
            "hypersensitivityAgentCode"))]
        degree = _text_of(hyper.get("degreeOfSeverity")).lower()
        severity = ("life_threatening" if "livshot" in degree else "high" if "allvar" in degree
                    or "svår" in degree else "moderate" if "måttl" in degree
                    else "low" if "lind" in degree or "lätt" in degree else None)
        details = _text_of(hyper.get("typeOfHypersensitivity"))
    elif body.get("communicableDisease"):
        category = "infection"
        details = _text_of(_g(body, "communicableDisease", "communicableDiseaseCode"))
        codes.append(code_of(_g(body, "communicableDisease", "communicableDiseaseCode")))
    elif body.get("restrictionOfCare"):
        category = "treatment_limit"
        details = _s(_g(body, "restrictionOfCare", "restrictionOfCareComment"))
    elif body.get("treatment"):
        category = "risk"
        details = _s(_g(body, "treatment", "treatmentDescription"))
        codes.append(code_of(_g(body, "treatment", "treatmentCode")))
    elif body.get("seriousDisease"):
        category = "risk"
        details = _text_of(_g(body, "seriousDisease", "disease"))
        codes.append(code_of(_g(body, "seriousDisease", "disease")))
    else:
        category = "other"
        details = _s(_g(body, "unstructuredAlertInformation",
                        "unstructuredAlertInformationContent"))
    description = ": ".join(x for x in (heading, substance or details) if x)
    comment = _s(body.get("alertInformationComment"))
    if comment:
        description = f"{description}. {comment}" if description else comment
    if not description:
        raise Skip("no-description")
    if body.get("obsoleteTime"):
        raise Skip("obsolete")
    m.codes = [c for c in codes if c]
    valid = _d(body.get("validityTimePeriod"))
    yield _done(m, {"category": category, "description": description, "severity": severity,
                    "substance": substance,
                    "valid_until": _date(valid.get("end"), tz)},
                time=None if m.fields.get("_time_known") else timestamp(
                    valid.get("start") or body.get("ascertainedDate"), tz))


def lab_31(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    base = _header_2x(_d(rec.get("laboratoryOrderOutcomeHeader")), tz)
    body = _d(rec.get("laboratoryOrderOutcomeBody"))
    registered = timestamp(body.get("registrationTime"), tz)
    analyses = [_d(a) for a in _l(body.get("analysis"))]
    if not analyses:
        report = _s(body.get("resultReport"))
        if not report:
            raise Skip("no-analysis")
        yield _done(base, {"analysis": _s(body.get("discipline")) or "Laboratoriesvar",
                           "value": report}, time=registered)
        return
    for i, a in enumerate(analyses):
        outcome = _d(a.get("analysisOutcome"))
        value = _s(outcome.get("outcomeValue")) or _s(outcome.get("outcomeDescription"))
        name = _s(a.get("analysisText")) or _text_of(a.get("analysisCode"))
        if not value or not name:
            continue
        code = code_of(a.get("analysisCode"))
        when = (timestamp(outcome.get("observationTime"), tz)
                or timestamp(_g(a, "analysisTime", "start"), tz) or registered)
        m = Mapped(**{**base.__dict__, "fields": dict(base.fields)})
        m.id = f"{base.id}/{_ii(a.get('analysisId')) or i}"
        m.codes = [code] if code else []
        yield _done(m, {"analysis": name, "value": value, "unit": _s(outcome.get("outcomeUnit")),
                        "reference_range": _s(outcome.get("referenceInterval")),
                        "abnormal": _flag(outcome.get("pathologicalFlag")) is True}, time=when)


def _pq(pq: Any) -> tuple[str, str]:
    pq = _d(pq)
    value = _s(pq.get("value"))
    return value.removesuffix(".0"), _s(pq.get("unit"))


def lab_40(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    base = _header_3x(_d(rec.get("header")), tz)
    body = _d(rec.get("body"))
    recipient = _d(body.get("recipientUnit"))
    if not base.unit_name and _ii(recipient.get("id")) == base.unit_id:
        base.unit_name = _s(recipient.get("name"))
    i = 0
    for group in map(_d, _l(body.get("groupOfAnalyses"))):
        for a in map(_d, _l(group.get("analysis"))):
            name = _text_of(a.get("code"))
            code = code_of(a.get("code"))
            for result in map(_d, _l(a.get("result"))):
                i += 1
                value = _d(result.get("value"))
                number, unit = _pq(value.get("pq"))
                text = number or _s(value.get("st")) or _text_of(value.get("cv"))
                if not text or not name:
                    continue
                ref = _d(result.get("reference"))
                interval = _d(ref.get("interval"))
                reference = _s(ref.get("description")) or "–".join(
                    x for x in (_s(interval.get("low")).removesuffix(".0"),
                                _s(interval.get("high")).removesuffix(".0")) if x)
                flags = {_s(_d(c).get("code")) for c in _l(result.get("interpretation"))}
                m = Mapped(**{**base.__dict__, "fields": dict(base.fields)})
                m.id = f"{base.id}/{_ii(a.get('identifier')) or i}"
                m.codes = [code] if code else []
                yield _done(m, {"analysis": name, "value": text, "unit": unit,
                                "reference_range": reference,
                                "abnormal": bool(flags & {"A", "AA", "H", "HH", "L", "LL",
                                                          "POS", "avvikande"})},
                            time=timestamp(a.get("timestamp"), tz))


_CONTACT_CODES: Final = {1: "Besök", 2: "Telefon", 3: "Vårdtillfälle", 4: "Dagsjukvård",
                         5: "Annan"}
_CONTACT_DROPPED: Final = {"1": "planned", "4": "cancelled"}  # Planerad, Inställd


def care_contact(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    m = _header_2x(_d(rec.get("careContactHeader")), tz)
    body = _d(rec.get("careContactBody"))
    status = body.get("careContactStatus")
    status_code = _s(_d(status).get("code")) if isinstance(status, dict) else _s(status)
    if status_code in _CONTACT_DROPPED:
        raise Skip(f"status-{_CONTACT_DROPPED[status_code]}")
    raw = body.get("careContactCode") or None
    if isinstance(raw, dict):
        contact_type = _text_of(raw)
        code = code_of(raw)
    else:
        contact_type = (_CONTACT_CODES.get(int(_s(raw)), "") if _s(raw).isdigit()
                        else _s(raw))
        code = None
    org = _d(body.get("careContactOrgUnit"))
    if _s(org.get("orgUnitHSAId")):
        m.unit_id, m.unit_name = _s(org["orgUnitHSAId"]), _s(org.get("orgUnitName"))
    period = _d(body.get("careContactTimePeriod"))
    start, end = timestamp(period.get("start"), tz), timestamp(period.get("end"), tz)
    m.codes = [code] if code else []
    yield _done(m, {"contact_type": contact_type or "Vårdkontakt",
                    "reason": _s(body.get("careContactReason")), "start": start, "end": end},
                time=start)


_PLAN_TYPES: Final = {
    "SIP": "Samordnad individuell plan", "SPLPTLRV": "Samordnad plan enligt LPT/LRV",
    "SPU": "Samordnad plan vid utskrivning", "VP": "Vårdplan", "HP": "Habiliteringsplan",
    "RP": "Rehabiliteringsplan", "GP": "Genomförandeplan", "SVP": "Standardiserad vårdplan",
}


_PLAN_LINE: Final = re.compile(
    r"^\s*(behov|mål|aktivitet|insats|uppföljning)\s*:\s*(.+?)\s*$", re.IGNORECASE)


def _plan_text(text: str, tz: ZoneInfo) -> Json:
    """SIP structure from a text/plain plan: lines ``Behov:``, ``Mål:``, ``Aktivitet:`` (or
    ``Insats:``, with ``… ; ansvarig ; när``) and ``Uppföljning: YYYY-MM-DD``; any other
    text is kept as one goal so nothing the plan says is lost."""
    needs: list[str] = []
    goals: list[str] = []
    activities: list[Json] = []
    follow_up = None
    rest: list[str] = []
    for line in text.splitlines():
        m = _PLAN_LINE.match(line)
        if m is None:
            if line.strip():
                rest.append(line.strip())
            continue
        kind, value = m.group(1).lower(), m.group(2)
        if kind == "behov":
            needs.append(value)
        elif kind == "mål":
            goals.append(value)
        elif kind == "uppföljning":
            follow_up = _date(value.replace("-", ""), tz)
        else:
            parts = [p.strip() for p in value.split(";")]
            activities.append({"what": parts[0], "responsible": parts[1] if len(parts) > 1
                               else "", "when": parts[2] if len(parts) > 2 else ""})
    if rest:
        goals.append(" ".join(rest))
    return {"needs": needs, "goals": goals, "activities": activities,
            "follow_up_date": follow_up}


def care_plan_20(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    header = _d(rec.get("carePlanHeader"))
    m = _header_2x(header, tz)
    body = _d(rec.get("carePlanBody"))
    plan_type = _s(body.get("typeOfCarePlanEnum"))
    title = _s(header.get("documentTitle")) or _PLAN_TYPES.get(plan_type, plan_type)
    if not title:
        raise Skip("no-title")
    text = "\n".join(t for t in map(_plain_text, _l(body.get("content"))) if t)
    participants = [_ii(u) for u in _l(body.get("participatingCareUnitHSAId"))]
    yield _done(m, {"title": title, "plan_type": plan_type, **_plan_text(text, tz),
                    "_participant_units": [p for p in participants if p]})


_ASSESSMENT: Final = {"pad-pad": "PADL", "fun-fun": "Funktionstillstånd"}


def functional_status_20(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    m = _header_2x(_d(rec.get("functionalStatusAssessmentHeader")), tz)
    body = _d(rec.get("functionalStatusAssessmentBody"))
    category = _s(body.get("assessmentCategory"))
    padl = [_d(p) for p in _l(body.get("padl"))]
    parts = [f"{_text_of(p.get('typeOfAssessment'))}: {_s(p.get('assessment'))}".strip(": ")
             for p in padl]
    disability = _d(body.get("disability"))
    codes = [code_of(p.get("typeOfAssessment")) for p in padl]
    if disability:
        parts.append(_text_of(disability.get("disabilityAssessment")))
        codes.append(code_of(disability.get("disabilityAssessment")))
    assessment = "; ".join(p for p in parts if p)
    if not assessment:
        raise Skip("no-assessment")
    m.codes = [c for c in codes if c]
    description = "\n".join(x for x in (_s(body.get("comment")),
                                        _s(disability.get("comment"))) if x)
    yield _done(m, {"domain": _ASSESSMENT.get(category, category), "assessment": assessment,
                    "description": description})


def booking_11(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    """GetSubjectOfCareSchedule's timeslot: no header; the facility is the unit."""
    unit = _s(rec.get("healthcare_facility"))
    start = timestamp(rec.get("startTimeInclusive"), tz)
    if start is None:
        raise Skip("no-time")
    booking = _s(rec.get("bookingId"))
    if not booking:
        raise Skip("no-id")
    unit_name = _s(rec.get("healthcare_facility_name"))
    performer = ({"name": _s(rec.get("performerName")), "hsa_id": _s(rec.get("performer"))}
                 if rec.get("performerName") or rec.get("performer") else None)
    yield Mapped(id=booking, time=start, unit_id=unit, unit_name=unit_name, fields={
        "start": start, "end": timestamp(rec.get("endTimeExclusive"), tz),
        "unit": {"id": unit, "name": unit_name or unit}, "performer": performer,
        "purpose": _s(rec.get("purpose")), "reason": _s(rec.get("reason")),
        "invitation": _flag(rec.get("isInvitation")) is True,
        "time_type": _s(rec.get("timeTypeName")), "care_type": _s(rec.get("careTypeName"))})


_ROLES: Final = (("kontaktsjuksköterska", "kontaktsjukskoterska"),
                 ("läkar", "fast_lakarkontakt"), ("omsorg", "fast_omsorgskontakt"),
                 ("vårdkontakt", "fast_vardkontakt"))


def _contact_points(contacts: Any) -> list[Json]:
    points = []
    for contact in map(_d, _l(contacts)):
        for tel in map(_d, _l(contact.get("telecom"))):
            kind = _text_of(tel.get("system")).lower()
            system = ("email" if "mail" in kind else "1177" if "1177" in kind
                      else "phone" if "tel" in kind or "phone" in kind else "other")
            if _s(tel.get("value")):
                points.append({"system": system, "value": _s(tel["value"])})
        address = _d(contact.get("address"))
        lines = [*map(_s, _l(address.get("line"))), " ".join(
            x for x in (_s(address.get("postalCode")), _s(address.get("city"))) if x)]
        if any(lines):
            points.append({"system": "address", "value": ", ".join(x for x in lines if x)})
    return points


def care_manager_10(rec: Json, tz: ZoneInfo) -> Iterator[Mapped]:
    """GetCareManagers' PractitionerRole: a fixed care or social-care contact."""
    header = _d(rec.get("careManagerHeader"))
    acl = _d(header.get("accessControlHeader"))
    practitioner = _d(rec.get("practitioner"))
    name = _s(practitioner.get("name"))
    hsa = _ii(practitioner.get("hsaId"))
    if not name and not hsa:
        raise Skip("no-person")
    period = _d(rec.get("period"))
    start = _date(period.get("start"), tz)
    time = timestamp(acl.get("blockComparisonTime"), tz) or (
        dt.datetime.combine(start, dt.time(), tz) if start else None)
    if time is None:
        raise Skip("no-time")
    managing = _d(rec.get("managingCareUnit")) or _d(rec.get("careProvidingCareUnit"))
    unit_id = _ii(acl.get("accountableCareUnitId")) or _ii(managing.get("hsaId"))
    unit_name = _s(managing.get("name")) if _ii(managing.get("hsaId")) == unit_id else ""
    display = _text_of(rec.get("code"))
    role = next((r for key, r in _ROLES if key in display.lower()), "other")
    code = code_of(rec.get("code"))
    giver = _d(rec.get("managingCareGiver"))
    yield Mapped(
        id=f"{_ii(header.get('sourceSystemId'))}/{hsa or name}/{_s(period.get('start'))}",
        time=time, unit_id=unit_id, unit_name=unit_name,
        care_giver=_ii(acl.get("accountableHealthcareProviderId")) or _ii(giver.get("hsaId")),
        codes=[code] if code else [], care_process=_ii(acl.get("careProcessId")) or None,
        fields={"role": role, "role_display": display,
                "person": {"name": name, "hsa_id": hsa,
                           "role": _text_of(practitioner.get("qualification"))},
                "care_team": _s(_g(rec, "careTeam", "name")),
                "unit": {"id": unit_id, "name": unit_name or unit_id} if unit_id else None,
                "start": start, "end": _date(period.get("end"), tz),
                "contact": _contact_points(rec.get("contact")) + _contact_points(
                    _g(rec, "careTeam", "contact")),
                "note": _s(rec.get("externalNotes")),
                "internal_note": _s(rec.get("internalNotes"))})


Mapper = Callable[[Json, ZoneInfo], Iterator[Mapped]]

MAPPERS: Final[Mapping[str, Mapper]] = {
    "GetCareDocumentation-2.1": care_documentation_21,
    "GetCareDocumentation-3.0": care_documentation_30,
    "GetDiagnosis-2.0": diagnosis_20,
    "GetMedicationHistory-2.1": medication_21,
    "GetAlertInformation-2.0": alert_20,
    "GetLaboratoryOrderOutcome-3.1": lab_31,
    "GetLaboratoryOrderOutcome-4.0": lab_40,
    "GetCareContacts-2.0": care_contact,
    "GetCareContacts-3.0": care_contact,
    "GetCarePlans-2.0": care_plan_20,
    "GetFunctionalStatus-2.0": functional_status_20,
    "GetSubjectOfCareSchedule-1.1": booking_11,
    "GetCareManagers-1.0": care_manager_10,
}
"""The mapper of each contract version."""
