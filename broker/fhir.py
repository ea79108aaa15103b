"""An :class:`~schemas.messages.Answer` as a FHIR R4 ``Bundle`` of type ``searchset``.

Pure functions, no I/O: :func:`answer_bundle` returns the Bundle as JSON-ready dicts
(lab values are :class:`~decimal.Decimal`, so encode with ``decimal_format="number"``,
see :data:`FHIR_ENCODER`). The mapping, element by element, is in ``docs/fhir.md``:

* every record becomes one resource (SPEC section 5) with ``search.mode = "match"``,
  newest first as in the answer; its id is a UUID derived from producer, type and record
  id, and the record id itself is an ``identifier`` (system ``urn:samsvar:record:<producer>``);
* the person is referenced by identifier only (personnummer or samordningsnummer);
* where a record comes from is ``meta.source`` (the producer) and the
  :data:`EXT_RECORD_SOURCE` extension (producer, organisation and unit as HSA-ids, system);
* ``meta.tag`` holds the information type and the record's marking (scope);
* a record released by an unblock ``read`` (``blocked: true``) carries ``meta.security``
  ``R`` (restricted, HL7 v3 Confidentiality) and ``blocked`` (:data:`SECURITY_SYSTEM`);
* each source's status is an ``OperationOutcome`` with ``search.mode = "outcome"``, and so
  is the answer as a whole (complete or not, ``blocked_information_exists``,
  ``blocked_at``). A source holding only blocked information is ``no_data`` here too.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from schemas.identity import is_coordination_number
from schemas.messages import Answer, SourceResult
from schemas.records import (
    Alert,
    Author,
    Booking,
    CareContact,
    CareDocumentation,
    CarePlan,
    Code,
    ContactPoint,
    Diagnosis,
    FixedContact,
    FunctionalStatus,
    LabResult,
    Medication,
    OrgRef,
    PersonRef,
    Record,
    SelfCare,
    SocialCareIntervention,
    UnitRef,
    record_type,
)

__all__ = [
    "EXT_RECORD_SOURCE",
    "FHIR_ENCODER",
    "HSA_SYSTEM",
    "PERSONNUMMER_SYSTEM",
    "SAMORDNINGSNUMMER_SYSTEM",
    "SECURITY_SYSTEM",
    "answer_bundle",
    "patient_identifier",
    "record_resource",
    "source_outcome",
]

JSON = dict[str, Any]

PERSONNUMMER_SYSTEM: Final = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER_SYSTEM: Final = "http://electronichealth.se/identifier/samordningsnummer"
HSA_SYSTEM: Final = "urn:oid:1.2.752.29.4.19"
"""HSA-id (organisations, units, producers)."""

_BASE: Final = "urn:samsvar:fhir:"
EXT_RECORD_SOURCE: Final = _BASE + "record-source"
"""Complex extension: ``producer`` (Identifier), ``organisation`` and ``unit``
(Reference by HSA-id), ``system`` (string)."""
EXT_CARE_PROCESS: Final = _BASE + "care-process"
EXT_PRIMARY_DIAGNOSIS: Final = _BASE + "primary-diagnosis"
EXT_ALERT_SEVERITY: Final = _BASE + "alert-severity"
EXT_ALERT_SUBSTANCE: Final = _BASE + "alert-substance"
EXT_VALID_UNTIL: Final = _BASE + "valid-until"
EXT_FOLLOW_UP: Final = _BASE + "follow-up"
EXT_PHASE: Final = _BASE + "intervention-phase"
EXT_LEGAL_BASIS: Final = _BASE + "legal-basis"
EXT_DECISION_DATE: Final = _BASE + "decision-date"
EXT_SOURCE_RESULT: Final = _BASE + "source-result"
EXT_BLOCKED_AT: Final = _BASE + "blocked-at"
EXT_NEED: Final = _BASE + "need"
"""A need a plan answers (SIP: behov), one extension each."""
EXT_INVITATION: Final = _BASE + "invitation"
EXT_NOT_FOR_PATIENT: Final = _BASE + "approved-for-patient"
"""``valueBoolean`` false: the record is never shown in the person's own view."""
EXT_ACTING_AS: Final = _BASE + "acting-as"
FIXED_CONTACT_ROLE_SYSTEM: Final = _BASE + "fixed-contact-role"
CARE_PLAN_TYPE_SYSTEM: Final = _BASE + "care-plan-type"
"""A plan's type (``CarePlan.category``): GetCarePlans' TypeOfCarePlan codes."""
CARE_PLAN_TYPES: Final = frozenset({"SIP", "SPLPTLRV", "SPU", "VP", "HP", "RP", "GP", "SVP"})
CARE_PLAN_ROLE_SYSTEM: Final = _BASE + "care-plan-role"
"""A plan participant's role: ``coordinator`` (SIP: samordnare)."""

TYPE_SYSTEM: Final = _BASE + "information-type"
SCOPE_SYSTEM: Final = _BASE + "scope"
SECURITY_SYSTEM: Final = _BASE + "security"
STATUS_SYSTEM: Final = _BASE + "source-status"
ANSWER_SYSTEM: Final = _BASE + "answer"
ALERT_CATEGORY_SYSTEM: Final = _BASE + "alert-category"
CONTACT_TYPE_SYSTEM: Final = _BASE + "contact-type"
_CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_OBS_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
_INTERPRETATION: Final = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_FLAG_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/flag-category"

FHIR_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")
"""Encodes a Bundle from :func:`answer_bundle` (decimals as JSON numbers)."""

_IDS: Final = uuid.UUID("2f3c1c55-7c4e-5d0c-9a55-5a7d5a1f0b6e")
"""Namespace of the UUIDs that name resources."""
_SWEDEN: Final = ZoneInfo("Europe/Stockholm")
_NUMBER: Final = re.compile(r"^[+-]?[0-9]+([.,][0-9]+)?$")
_FHIR_ID: Final = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

_TYPE_NAMES: Final = {
    "care_documentation": "Vårddokumentation",
    "diagnoses": "Diagnoser",
    "medication": "Läkemedel och ordinationer",
    "alerts": "Uppmärksamhetsinformation",
    "lab_results": "Laboratoriesvar",
    "care_contacts": "Vårdkontakter",
    "care_plans": "Planer",
    "social_care_interventions": "Insatser",
    "functional_status": "Funktionstillstånd",
    "bookings": "Bokade tider",
    "fixed_contacts": "Fasta kontakter",
    "self_care": "Egenvård",
}
_PLAN_STATUS: Final = {"draft": "draft", "active": "active", "completed": "completed",
                       "cancelled": "revoked"}
_ACTIVITY_STATUS: Final = {"planned": "scheduled", "in_progress": "in-progress",
                           "done": "completed", "cancelled": "cancelled"}
_TELECOM: Final = {"phone": "phone", "email": "email"}
_MEDICATION_STATUS: Final = {"active": "active", "paused": "on-hold", "stopped": "stopped"}
_PHASE_STATUS: Final = {"handlaggning": ("draft", "proposal"), "beslut": ("active", "order"),
                        "verkstallighet": ("active", "order")}
_FLAG_CATEGORIES: Final = {"risk": ("safety", "Safety"),
                           "treatment_limit": ("advance-directive", "Advance Directive"),
                           "infection": ("clinical", "Clinical"),
                           "other": ("clinical", "Clinical")}
_CONTACT_CLASSES: Final = (  # first match in the contact type, lower-cased
    ("akut", "EMER", "emergency"),
    ("sluten", "IMP", "inpatient encounter"),
    ("inskriv", "IMP", "inpatient encounter"),
    ("hem", "HH", "home health"),
    ("telefon", "VR", "virtual"),
    ("video", "VR", "virtual"),
    ("distans", "VR", "virtual"),
    ("besök", "AMB", "ambulatory"),
    ("mottagning", "AMB", "ambulatory"),
    ("öppenvård", "AMB", "ambulatory"),
)
_OUTCOME_ISSUE: Final = {  # status → (severity, IssueType)
    "ok": ("information", "informational"),
    "no_data": ("information", "not-found"),
    "timeout": ("warning", "timeout"),
    "unavailable": ("warning", "transient"),
    "error": ("error", "exception"),
    "refused": ("error", "forbidden"),
}


# -- small pieces -----------------------------------------------------------------------


def _compact(value: Any) -> Any:
    """Drop ``None``, empty strings, lists and objects: FHIR allows none of them."""
    if isinstance(value, dict):
        kept = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        items = [_compact(v) for v in value]
        return [v for v in items if v not in (None, "", [], {})]
    return value


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_IDS, "|".join(parts)))


def _datetime(t: dt.datetime | None) -> str | None:
    """A FHIR ``dateTime``/``instant``; a time without offset is Swedish local time."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_SWEDEN)
    return t.isoformat()


def _date(d: dt.date | None) -> str | None:
    return d.isoformat() if d else None


def _system(system: str) -> str:
    """A code system as a URI: ``urn:oid:…`` and URLs as they are, a bare name under ours."""
    if ":" in system:
        return system
    return f"{_BASE}codesystem:{re.sub(r'[^A-Za-z0-9._-]+', '-', system) or 'unknown'}"


def _coding(code: Code) -> JSON:
    return {"system": _system(code.system), "code": code.code.strip(), "display": code.display}


def _concept(codes: list[Code], text: str, fallback: str = "") -> JSON:
    """A CodeableConcept; it always has ``text`` or a coding (an empty one is invalid)."""
    concept: JSON = {"coding": [_coding(c) for c in codes if c.code.strip()], "text": text}
    if not concept["coding"] and not text.strip():
        concept["text"] = fallback or "okänd"
    return concept


def _author(author: Author | None) -> JSON | None:
    if author is None:
        return None
    return {"display": f"{author.name} ({author.role})" if author.role else author.name}


def _org(org: OrgRef) -> JSON:
    return {"type": "Organization", "identifier": {"system": HSA_SYSTEM, "value": org.id},
            "display": org.name}


def _unit(unit: UnitRef) -> JSON:
    return {"identifier": {"system": HSA_SYSTEM, "value": unit.id}, "display": unit.name}


def _ext(url: str, kind: str, value: Any) -> JSON | None:
    if value in (None, ""):
        return None
    return {"url": url, f"value{kind}": value}


def patient_identifier(subject: str) -> JSON:
    """The person: personnummer, or samordningsnummer when the day of birth is plus 60."""
    system = (SAMORDNINGSNUMMER_SYSTEM if is_coordination_number(subject)
              else PERSONNUMMER_SYSTEM)
    return {"system": system, "value": subject}


def _patient(subject: str) -> JSON:
    return {"type": "Patient", "identifier": patient_identifier(subject)}


# -- one record -------------------------------------------------------------------------


def _common(record: Record, resource_type: str, resource_id: str) -> JSON:
    """What every resource has: id, identifier, meta, source and care-process extensions."""
    source = record.source
    security = []
    if record.blocked:
        security = [
            {"system": _CONFIDENTIALITY, "code": "R", "display": "restricted"},
            {"system": SECURITY_SYSTEM, "code": "blocked",
             "display": "Spärrad information, utlämnad efter spärröverskridande"},
        ]
    security += [c for c in map(_coding, record.security) if c not in security]
    kind = record_type(record)
    return {
        "resourceType": resource_type,
        "id": resource_id,
        "meta": {
            "source": f"urn:samsvar:producer:{source.producer}",
            "tag": [{"system": TYPE_SYSTEM, "code": kind, "display": _TYPE_NAMES[kind]},
                    {"system": SCOPE_SYSTEM, "code": record.scope}],
            "security": security,
        },
        "extension": [
            {"url": EXT_RECORD_SOURCE, "extension": [
                {"url": "producer",
                 "valueIdentifier": {"system": HSA_SYSTEM, "value": source.producer}},
                {"url": "organisation", "valueReference": _org(source.organisation)},
                {"url": "unit", "valueReference": {"type": "Organization",
                                                   **_unit(source.unit)}},
                _ext("system", "String", source.system),
            ]},
            _ext(EXT_CARE_PROCESS, "String", record.care_process),
            _ext(EXT_NOT_FOR_PATIENT, "Boolean", False if not record.approved_for_patient
                 else None),
        ],
        "identifier": [{"system": f"urn:samsvar:record:{source.producer}", "value": record.id}],
    }


def _document(r: CareDocumentation, subject: str) -> JSON:
    text = r.text
    if r.sbar is not None:
        sbar = (f"Situation: {r.sbar.situation}\nBakgrund: {r.sbar.background}\n"
                f"Aktuellt tillstånd: {r.sbar.assessment}\n"
                f"Rekommendation: {r.sbar.recommendation}")
        text = f"{text}\n\n{sbar}" if text else sbar
    attachment: JSON = {"contentType": "text/plain; charset=utf-8", "language": "sv",
                        "title": r.title}
    if text:
        attachment["data"] = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": _concept(r.codes, r.note_type) if (r.codes or r.note_type) else None,
        "subject": _patient(subject),
        "date": _datetime(r.time),
        "author": [_author(r.author)],
        "custodian": _org(r.source.organisation),
        "description": r.title,
        "content": [{"attachment": attachment}],
    }


def _condition(r: Diagnosis, subject: str) -> JSON:
    return {
        "resourceType": "Condition",
        "extension": [_ext(EXT_PRIMARY_DIAGNOSIS, "Boolean", True if r.primary else None)],
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": r.clinical_status or r.status}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": r.verification}]} if r.verification else None,
        "code": _concept(r.codes, r.display),
        "subject": _patient(subject),
        "onsetDateTime": _date(r.onset),
        "recordedDate": _datetime(r.time),
        "recorder": _author(r.author),
    }


def _medication(r: Medication, subject: str) -> JSON:
    dosage = {
        "text": ", ".join(p for p in (r.dose, r.schedule) if p),
        "timing": {"repeat": {"boundsPeriod": {"start": _date(r.start), "end": _date(r.stop)}},
                   "code": {"text": r.schedule}},
        "route": {"text": r.route},
    }
    return {
        "resourceType": "MedicationRequest",
        "status": _MEDICATION_STATUS[r.status],
        "intent": "order",
        "medicationCodeableConcept": _concept(r.codes, r.drug),
        "subject": _patient(subject),
        "authoredOn": _datetime(r.time),
        "requester": _author(r.author),
        "performer": {"display": r.administered_by},
        "reasonCode": [{"text": r.purpose}],
        "dosageInstruction": [dosage],
    }


def _allergy(r: Alert, subject: str) -> JSON:
    criticality = None
    if r.severity is not None:
        criticality = "high" if r.severity in ("high", "life_threatening") else "low"
    return {
        "resourceType": "AllergyIntolerance",
        "extension": [_ext(EXT_VALID_UNTIL, "Date", _date(r.valid_until)),
                      _ext(EXT_ALERT_SEVERITY, "Code", r.severity)],
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            "code": r.clinical_status or "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            "code": r.verification}]} if r.verification else None,
        "type": "allergy",
        "criticality": criticality,
        "code": _concept(r.codes, r.substance or r.description),
        "patient": _patient(subject),
        "recordedDate": _datetime(r.time),
        "recorder": _author(r.author),
        "note": [{"text": r.description}],
    }


def _flag(r: Alert, subject: str) -> JSON:
    code, display = _FLAG_CATEGORIES[r.category]
    return {
        "resourceType": "Flag",
        "extension": [_ext(EXT_ALERT_SEVERITY, "Code", r.severity),
                      _ext(EXT_ALERT_SUBSTANCE, "String", r.substance)],
        "status": "inactive" if r.clinical_status in ("inactive", "resolved") else "active",
        "category": [{"coding": [{"system": _FLAG_CATEGORY, "code": code, "display": display},
                                 {"system": ALERT_CATEGORY_SYSTEM, "code": r.category}],
                      "text": r.category.replace("_", " ")}],
        "code": _concept(r.codes, r.description),
        "subject": _patient(subject),
        "period": {"start": _datetime(r.time), "end": _date(r.valid_until)},
        "author": _author(r.author),
    }


def _lab(r: LabResult, subject: str) -> JSON:
    value = r.value.strip()
    if _NUMBER.match(value):
        number: JSON = {"value": Decimal(value.replace(",", ".")), "unit": r.unit}
        result: JSON = {"valueQuantity": number}
    else:
        result = {"valueString": f"{value} {r.unit}".strip()}
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": _OBS_CATEGORY, "code": "laboratory",
                                  "display": "Laboratory"}]}],
        "code": _concept(r.codes, r.analysis),
        "subject": _patient(subject),
        "effectiveDateTime": _datetime(r.time),
        "performer": [_author(r.author)],
        **result,
        "interpretation": [{"coding": [{"system": _INTERPRETATION, "code": "A",
                                        "display": "Abnormal"}]}] if r.abnormal else None,
        "referenceRange": [{"text": r.reference_range}],
    }


def _encounter_class(contact_type: str, codes: list[Code]) -> JSON:
    """The record's own v3-ActCode class if it has one, else one read from its words."""
    for c in codes:
        if c.system == _ACT_CODE:
            return _coding(c)
    lowered = contact_type.lower()
    for word, code, display in _CONTACT_CLASSES:
        if word in lowered:
            return {"system": _ACT_CODE, "code": code, "display": display}
    return {"system": CONTACT_TYPE_SYSTEM, "code": "other", "display": contact_type}


def _encounter(r: CareContact, subject: str) -> JSON:
    return {
        "resourceType": "Encounter",
        "status": "finished" if r.end is not None else "unknown",
        "class": _encounter_class(r.contact_type, r.codes),
        "type": [_concept([c for c in r.codes if c.system != _ACT_CODE], r.contact_type)],
        "subject": _patient(subject),
        "participant": [{"individual": _author(r.author)}] if r.author else None,
        "period": {"start": _datetime(r.start), "end": _datetime(r.end)},
        "reasonCode": [{"text": r.reason}],
        "location": [{"location": _unit(r.source.unit)}],
        "serviceProvider": _org(r.source.organisation),
    }


def _person(person: PersonRef | None) -> JSON | None:
    if person is None:
        return None
    words = ", ".join(p for p in (person.name, person.role) if p)
    org = person.organisation.name if person.organisation else ""
    return {"identifier": {"system": HSA_SYSTEM, "value": person.hsa_id} if person.hsa_id
            else None, "display": f"{words} ({org})" if org and words else words or org}


def _coordinator(person: PersonRef) -> JSON:
    """The SIP's coordinator as a contained PractitionerRole ``#coordinator``: the role
    ``coordinator`` in :data:`CARE_PLAN_ROLE_SYSTEM`, the person's own role as text, the
    practitioner by HSA-id and name, the organisation."""
    return {
        "resourceType": "PractitionerRole",
        "id": "coordinator",
        "practitioner": {"identifier": {"system": HSA_SYSTEM, "value": person.hsa_id}
                         if person.hsa_id else None, "display": person.name},
        "organization": _org(person.organisation) if person.organisation else None,
        "code": [{"coding": [{"system": CARE_PLAN_ROLE_SYSTEM, "code": "coordinator",
                              "display": "Samordnare"}]},
                 {"text": person.role} if person.role else None],
        "location": [{"type": "Location", **_unit(person.unit)}] if person.unit else None,
    }


def _care_plan(r: CarePlan, subject: str) -> JSON:
    coordinator = [] if r.coordinator is None else [{
        "reference": "#coordinator",
        "display": f"Samordnare: {(_person(r.coordinator) or {}).get('display', '')}"}]
    plan_type: JSON = {"text": r.plan_type}
    if r.plan_type in CARE_PLAN_TYPES:
        plan_type["coding"] = [{"system": CARE_PLAN_TYPE_SYSTEM, "code": r.plan_type}]
    return {
        "resourceType": "CarePlan",
        "contained": [_coordinator(r.coordinator)] if r.coordinator else None,
        "extension": [_ext(EXT_FOLLOW_UP, "Date", _date(r.follow_up_date)),
                      *(_ext(EXT_NEED, "String", n) for n in r.needs)],
        "status": _PLAN_STATUS[r.status],
        "intent": "plan",
        "category": [plan_type],
        "title": r.title,
        "description": "; ".join(r.needs),
        "subject": _patient(subject),
        "created": _datetime(r.time),
        "author": (_org(r.overall_responsible_org) if r.overall_responsible_org
                   else _author(r.author)),
        "contributor": [*coordinator, *({"display": p} for p in r.participants)],
        "goal": [{"display": g} for g in r.goals],
        "activity": [{"detail": {
            "status": _ACTIVITY_STATUS[a.status],
            "description": a.what,
            "scheduledString": a.when,
            "performer": [_org(a.responsible_org) if a.responsible_org else None,
                          {"display": a.responsible} if a.responsible else None],
        }} for a in r.activities],
    }


def _self_care(r: SelfCare, subject: str) -> JSON:
    return {
        "resourceType": "CarePlan",
        "extension": [_ext(EXT_FOLLOW_UP, "Date", _date(r.follow_up_date))],
        "status": "active" if r.status == "active" else "completed",
        "intent": "plan",
        "category": [{"coding": [{"system": TYPE_SYSTEM, "code": "self_care",
                                  "display": _TYPE_NAMES["self_care"]}]}],
        "title": r.activity,
        "description": r.instructions,
        "subject": _patient(subject),
        "period": {"start": _date(r.start), "end": _date(r.end)},
        "created": _datetime(r.time),
        "author": _person(r.assessed_by) or _author(r.author),
        "activity": [{"detail": {
            "status": "in-progress" if r.status == "active" else "completed",
            "description": r.activity,
            "performer": [{"display": r.performed_by}] if r.performed_by else None,
        }}],
    }


def _appointment(r: Booking, subject: str) -> JSON:
    return {
        "resourceType": "Appointment",
        "extension": [_ext(EXT_INVITATION, "Boolean", True if r.invitation else None)],
        "status": r.status,
        "serviceType": [{"text": r.care_type}] if r.care_type else None,
        "appointmentType": {"text": r.time_type} if r.time_type else None,
        "reasonCode": [{"text": r.reason}] if r.reason else None,
        "description": r.purpose,
        "start": _datetime(r.start),
        "end": _datetime(r.end),
        "created": _datetime(r.time),
        "comment": r.address,
        "participant": [
            {"actor": _patient(subject), "status": "accepted"},
            {"actor": {**(_person(r.performer) or {}), "type": "Practitioner"},
             "status": "accepted"} if r.performer else None,
            {"actor": {"type": "Location", **_unit(r.unit)}, "status": "accepted"},
        ],
    }


def _telecom(c: ContactPoint) -> JSON:
    text = f"{c.value} ({c.hours})" if c.hours else c.value
    return {"system": _TELECOM.get(c.system, "other"), "value": text}


def _care_team(r: FixedContact, subject: str) -> JSON:
    """The fixed contact as a CareTeam whose one participant is a contained
    PractitionerRole (who, in what role, at which unit, how to reach them)."""
    role = _concept([], r.role_display, r.role.replace("_", " "))
    role["coding"] = [{"system": FIXED_CONTACT_ROLE_SYSTEM, "code": r.role}]
    period = {"start": _date(r.start), "end": _date(r.end)}
    practitioner = _person(r.person)
    contained: JSON = {
        "resourceType": "PractitionerRole",
        "id": "contact",
        "active": r.end is None,
        "period": period,
        "practitioner": practitioner,
        "organization": _org(r.source.organisation),
        "code": [role],
        "location": [{"type": "Location", **_unit(r.unit or r.source.unit)}],
        "telecom": [_telecom(c) for c in r.contact if c.system != "address"],
        "availabilityExceptions": "; ".join(c.hours for c in r.contact if c.hours),
    }
    return {
        "resourceType": "CareTeam",
        "contained": [contained],
        "status": "active" if r.end is None else "inactive",
        "category": [{"coding": [{"system": TYPE_SYSTEM, "code": "fixed_contacts",
                                  "display": _TYPE_NAMES["fixed_contacts"]}]}],
        "name": r.care_team or r.role_display,
        "subject": _patient(subject),
        "period": period,
        "participant": [{"role": [role], "member": {"reference": "#contact",
                                                    "display": (practitioner or {}).get(
                                                        "display")},
                         "onBehalfOf": _org(r.source.organisation), "period": period}],
        "managingOrganization": [_org(r.source.organisation)],
        "telecom": [_telecom(c) for c in r.contact if c.system != "address"],
        "note": [{"text": r.note} if r.note else None,
                 {"text": f"Intern anteckning (personal): {r.internal_note}"}
                 if r.internal_note else None],
    }


def _service_request(r: SocialCareIntervention, subject: str) -> JSON:
    status, intent = _PHASE_STATUS[r.phase]
    return {
        "resourceType": "ServiceRequest",
        "extension": [_ext(EXT_PHASE, "Code", r.phase),
                      _ext(EXT_LEGAL_BASIS, "String", r.legal_basis),
                      _ext(EXT_DECISION_DATE, "Date", _date(r.decision_date))],
        "status": status,
        "intent": intent,
        "code": _concept(r.codes, r.intervention),
        "orderDetail": [{"text": r.extent}],
        "subject": _patient(subject),
        "occurrencePeriod": {"start": _date(r.start), "end": _date(r.end)},
        "authoredOn": _datetime(r.time),
        "requester": _author(r.author),
        "note": [{"text": r.description}],
    }


def _functional(r: FunctionalStatus, subject: str) -> JSON:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": TYPE_SYSTEM, "code": "functional_status",
                                  "display": _TYPE_NAMES["functional_status"]}]}],
        "code": _concept(r.codes, r.domain),
        "subject": _patient(subject),
        "effectiveDateTime": _datetime(r.time),
        "performer": [_author(r.author)],
        "valueString": r.assessment,
        "note": [{"text": r.description}],
    }


def _alert(r: Alert, subject: str) -> JSON:
    return _allergy(r, subject) if r.category == "allergy" else _flag(r, subject)


_MAPPERS: Final[dict[type, Callable[[Any, str], JSON]]] = {
    CareDocumentation: _document,
    Diagnosis: _condition,
    Medication: _medication,
    Alert: _alert,
    LabResult: _lab,
    CareContact: _encounter,
    CarePlan: _care_plan,
    SocialCareIntervention: _service_request,
    FunctionalStatus: _functional,
    Booking: _appointment,
    FixedContact: _care_team,
    SelfCare: _self_care,
}


def record_resource(record: Record, subject: str, *, resource_id: str | None = None) -> JSON:
    """One record as its FHIR R4 resource (SPEC section 5)."""
    specific = _MAPPERS[type(record)](record, subject)
    rid = resource_id or _uuid(record.source.producer, record_type(record), record.id)
    resource = _common(record, specific["resourceType"], rid)
    extensions = resource.pop("extension") + specific.pop("extension", [])
    resource.update(specific)
    resource["extension"] = extensions
    compacted: JSON = _compact(resource)
    return compacted


# -- outcomes and the bundle --------------------------------------------------------------


def source_outcome(source: SourceResult, query_id: str) -> JSON:
    """One source's status as an OperationOutcome (never whether it holds blocked data)."""
    severity, code = _OUTCOME_ISSUE[source.status]
    text = f"{source.organisation.name} ({source.producer}): {source.status}"
    if source.status in ("ok", "no_data"):
        text += f", {source.records} records"
    issues: list[JSON] = [{
        "severity": severity, "code": code,
        "details": {"coding": [{"system": STATUS_SYSTEM, "code": source.status}],
                    "text": text},
    }]
    if source.unreadable:
        issues.append({"severity": "warning", "code": "incomplete",
                       "details": {"coding": [{"system": STATUS_SYSTEM, "code": "unreadable"}],
                                   "text": f"{source.producer} holds {source.unreadable} "
                                           "records it could not read"}})
    if source.truncated:
        issues.append({"severity": "warning", "code": "too-costly",
                       "details": {"coding": [{"system": STATUS_SYSTEM, "code": "truncated"}],
                                   "text": f"{source.producer} sent only part of its records"}})
    result = {
        "url": EXT_SOURCE_RESULT, "extension": [
            {"url": "producer",
             "valueIdentifier": {"system": HSA_SYSTEM, "value": source.producer}},
            {"url": "organisation", "valueReference": _org(source.organisation)},
            {"url": "status", "valueCode": source.status},
            {"url": "records", "valueUnsignedInt": source.records},
            _ext("latencyMs", "UnsignedInt", source.latency_ms),
            {"url": "truncated", "valueBoolean": source.truncated},
            {"url": "unreadable", "valueUnsignedInt": source.unreadable},
        ]}
    compacted: JSON = _compact({
        "resourceType": "OperationOutcome",
        "id": _uuid(query_id, "source", source.producer),
        "extension": [result],
        "issue": issues,
    })
    return compacted


def _answer_outcome(answer: Answer) -> JSON:
    missing = [s for s in answer.sources if s.status in ("timeout", "unavailable", "error")]
    if answer.complete:
        issues: list[JSON] = [{
            "severity": "information", "code": "informational",
            "details": {"coding": [{"system": ANSWER_SYSTEM, "code": "complete"}],
                        "text": "Every source asked has answered"}}]
    else:
        issues = [{
            "severity": "warning", "code": "incomplete",
            "details": {"coding": [{"system": ANSWER_SYSTEM, "code": "incomplete"}],
                        "text": f"{len(missing)} of {len(answer.sources)} sources did not "
                                "answer"}}]
    if answer.blocked_information_exists:
        issues.append({
            "severity": "information", "code": "suppressed",
            "details": {"coding": [{"system": ANSWER_SYSTEM,
                                    "code": "blocked-information-exists"}],
                        "text": "Spärrad information finns / blocked information exists"}})
    if answer.acting_as is not None:
        issues.append({
            "extension": [{"url": EXT_ACTING_AS, "valueCode": answer.acting_as}],
            "severity": "information", "code": "informational",
            "details": {"coding": [{"system": ANSWER_SYSTEM, "code": "own-view"}],
                        "text": f"Egen vy, läst som {answer.acting_as} / own view, "
                                f"acting as {answer.acting_as}"}})
    if answer.blocked_at is not None:
        where = ", ".join(answer.blocked_at) or "none"
        issues.append({
            "extension": [{"url": EXT_BLOCKED_AT,
                           "valueIdentifier": {"system": HSA_SYSTEM, "value": pid}}
                          for pid in answer.blocked_at],
            "severity": "information", "code": "informational",
            "details": {"coding": [{"system": ANSWER_SYSTEM, "code": "blocked-at"}],
                        "text": f"Spärrad information hos / blocked information at: {where}"}})
    compacted: JSON = _compact({
        "resourceType": "OperationOutcome",
        "id": _uuid(answer.query_id, "answer"),
        "issue": issues,
    })
    return compacted


def answer_bundle(answer: Answer) -> JSON:
    """The answer as a FHIR R4 ``searchset`` Bundle: records, then the outcomes."""
    entries: list[JSON] = []
    seen: set[str] = set()
    for record in answer.records:
        rid = _uuid(record.source.producer, record_type(record), record.id)
        n = 1
        while rid in seen:  # a producer that repeats a record id still gets unique entries
            n += 1
            rid = _uuid(record.source.producer, record_type(record), record.id, str(n))
        seen.add(rid)
        entries.append({"fullUrl": f"urn:uuid:{rid}",
                        "resource": record_resource(record, answer.subject, resource_id=rid),
                        "search": {"mode": "match"}})
    for outcome in (_answer_outcome(answer),
                    *(source_outcome(s, answer.query_id) for s in answer.sources)):
        entries.append({"fullUrl": f"urn:uuid:{outcome['id']}", "resource": outcome,
                        "search": {"mode": "outcome"}})
    bundle_id = (answer.query_id if _FHIR_ID.match(answer.query_id)
                 else _uuid(answer.query_id, "bundle"))
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": "urn:samsvar:query", "value": answer.query_id},
        "type": "searchset",
        "total": len(answer.records),
        "entry": entries,
    }
