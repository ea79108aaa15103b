"""FHIR R4 resources → samsvar records: pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from schemas.records import Record, UnitRef

from .._common import RECORD_CLASSES
from .config import _SCOPES, FhirConfig, ScopeRules

__all__ = ["map_resource"]

# -- FHIR data types ---------------------------------------------------------------------

class _Unmappable(Exception):
    """A resource left out; ``reason`` is a short stable word, never content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_PARTIAL: Final = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
Json = dict[str, Any]


def _datetime(value: Any, tz: ZoneInfo) -> dt.datetime | None:
    """A FHIR ``dateTime``/``instant``/``date``; a partial one is its first moment in ``tz``."""
    if not isinstance(value, str) or not value:
        return None
    m = _PARTIAL.match(value)
    try:
        if m:
            return dt.datetime(int(m[1]), int(m[2] or 1), int(m[3] or 1), tzinfo=tz)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed


def _date(value: Any, tz: ZoneInfo) -> dt.date | None:
    moment = _datetime(value, tz)
    if moment is None:
        return None
    return moment.astimezone(tz).date() if len(str(value)) > 10 else moment.date()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _text(concept: Any) -> str:
    """A CodeableConcept's text, else its first coding's display, else its code."""
    concept = _dict(concept)
    if concept.get("text"):
        return str(concept["text"])
    for coding in _list(concept.get("coding")):
        if _dict(coding).get("display"):
            return str(coding["display"])
    for coding in _list(concept.get("coding")):
        if _dict(coding).get("code"):
            return str(coding["code"])
    return ""


def _codes(concept: Any) -> list[dict[str, str]]:
    return [
        {"system": str(c.get("system", "")), "code": str(c["code"]),
         "display": str(c.get("display", ""))}
        for c in map(_dict, _list(_dict(concept).get("coding"))) if c.get("code")
    ]


def _coded(concept: Any) -> set[str]:
    """``code`` and ``system|code`` of every coding."""
    out: set[str] = set()
    for c in map(_dict, _list(_dict(concept).get("coding"))):
        if c.get("code"):
            out.update({str(c["code"]), f"{c.get('system', '')}|{c['code']}"})
    return out


def _status(concept: Any) -> str:
    for c in map(_dict, _list(_dict(concept).get("coding"))):
        if c.get("code"):
            return str(c["code"])
    return ""


def _quantity(q: Any) -> str:
    q = _dict(q)
    if "value" not in q:
        return ""
    unit = q.get("unit") or q.get("code") or ""
    return f"{_number(q['value'])} {unit}".strip()


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _display(ref: Any) -> str:
    return str(_dict(ref).get("display", ""))


def _author(*refs: Any) -> Json | None:
    for ref in refs:
        for r in _list(ref):
            if _display(r):
                return {"name": _display(r), "role": ""}
    return None


def _note(resource: Json) -> str:
    return "\n".join(str(n["text"]) for n in map(_dict, _list(resource.get("note")))
                     if n.get("text"))


def _timing(timing: Any) -> str:
    timing = _dict(timing)
    if _text(timing.get("code")):
        return _text(timing.get("code"))
    repeat = _dict(timing.get("repeat"))
    if "frequency" in repeat and "period" in repeat:
        return (f"{_number(repeat['frequency'])} per {_number(repeat['period'])} "
                f"{repeat.get('periodUnit', '')}".strip())
    return ""


def _period_text(period: Any) -> str:
    period = _dict(period)
    start, end = period.get("start", ""), period.get("end", "")
    return f"{start}–{end}" if start or end else ""


# -- resource → record fields, one function per resource type ---------------------------

@dataclass(frozen=True, kw_only=True)
class _Context:
    config: FhirConfig

    @property
    def tz(self) -> ZoneInfo:
        return self.config.timezone


def _skip_status(resource: Json, *bad: str) -> None:
    status = resource.get("status")
    if status in bad:
        raise _Unmappable(f"status-{status}")


def _skip_verification(resource: Json) -> None:
    status = _status(resource.get("verificationStatus"))
    if status in ("entered-in-error", "refuted"):
        raise _Unmappable(f"verification-{status}")


def _contained(resource: Json, ref: Any) -> Json | None:
    reference = str(_dict(ref).get("reference", ""))
    if not reference.startswith("#"):
        return None
    for c in map(_dict, _list(resource.get("contained"))):
        if c.get("id") == reference[1:]:
            return c
    return None


def _medication(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "draft")
    concept = r.get("medicationCodeableConcept")
    if concept is None:
        contained = _contained(r, r.get("medicationReference"))
        concept = contained.get("code") if contained else None
    drug = _text(concept) or _display(r.get("medicationReference"))
    if not drug:
        raise _Unmappable("no-drug")
    dosage = _dict((_list(r.get("dosageInstruction")) or [{}])[0])
    rate = _dict((_list(dosage.get("doseAndRate")) or [{}])[0])
    dose = _quantity(rate.get("doseQuantity"))
    if not dose and rate.get("doseRange"):
        low, high = _dict(rate["doseRange"]).get("low"), _dict(rate["doseRange"]).get("high")
        dose = "–".join(x for x in (_quantity(low), _quantity(high)) if x)
    bounds = _dict(_dict(_dict(dosage.get("timing")).get("repeat")).get("boundsPeriod"))
    validity = _dict(_dict(r.get("dispenseRequest")).get("validityPeriod"))
    status = {"active": "active", "on-hold": "paused", "completed": "stopped",
              "stopped": "stopped", "cancelled": "stopped"}.get(str(r.get("status")), "active")
    reasons = [_text(c) for c in _list(r.get("reasonCode"))] + [
        _display(x) for x in _list(r.get("reasonReference"))]
    return {
        "time": r.get("authoredOn"), "drug": drug, "codes": _codes(concept), "dose": dose,
        "route": _text(dosage.get("route")),
        "schedule": str(dosage.get("text") or _timing(dosage.get("timing"))),
        "purpose": next((x for x in reasons if x), ""),
        "start": _date(bounds.get("start") or validity.get("start"), ctx.tz),
        "stop": _date(bounds.get("end") or validity.get("end"), ctx.tz),
        "status": status, "author": _author(r.get("requester"), r.get("recorder")),
    }


def _diagnosis(r: Json, ctx: _Context) -> Json:
    _skip_verification(r)
    display = _text(r.get("code"))
    if not display:
        raise _Unmappable("no-code")
    clinical = _status(r.get("clinicalStatus"))
    resolved = clinical in ("inactive", "remission", "resolved")
    onset = r.get("onsetDateTime") or _dict(r.get("onsetPeriod")).get("start")
    return {
        "time": r.get("recordedDate") or onset, "display": display,
        "codes": _codes(r.get("code")), "status": "resolved" if resolved else "active",
        "onset": _date(onset, ctx.tz), "author": _author(r.get("asserter"), r.get("recorder")),
    }


_SEVERITY: Final = {"mild": "low", "moderate": "moderate", "severe": "high"}
_RANK: Final = {"low": 0, "moderate": 1, "high": 2}


def _alert(r: Json, ctx: _Context) -> Json:
    _skip_verification(r)
    description = _text(r.get("code"))
    if not description:
        raise _Unmappable("no-code")
    reactions = [_dict(x) for x in _list(r.get("reaction"))]
    severity = {"high": "high", "low": "low"}.get(str(r.get("criticality")))
    if severity is None:
        found = [_SEVERITY[x["severity"]] for x in reactions if x.get("severity") in _SEVERITY]
        severity = max(found, key=_RANK.__getitem__) if found else None
    manifestations = [_text(m) for x in reactions for m in _list(x.get("manifestation"))]
    if manifestations:
        description = f"{description}: {', '.join(dict.fromkeys(m for m in manifestations if m))}"
    substance = next((_text(x.get("substance")) for x in reactions if x.get("substance")), "")
    return {
        "time": r.get("recordedDate") or r.get("onsetDateTime"), "category": "allergy",
        "description": description, "severity": severity,
        "substance": substance or _text(r.get("code")), "codes": _codes(r.get("code")),
        "author": _author(r.get("recorder"), r.get("asserter")),
    }


_ABNORMAL: Final = frozenset({"A", "AA", "H", "HH", "HU", "L", "LL", "LU"})


def _observation_time(r: Json) -> Any:
    return (r.get("effectiveDateTime") or r.get("effectiveInstant")
            or _dict(r.get("effectivePeriod")).get("start") or r.get("issued"))


def _observation_value(r: Json) -> tuple[str, str]:
    if "valueQuantity" in r:
        q = _dict(r["valueQuantity"])
        return _number(q.get("value", "")), str(q.get("unit") or q.get("code") or "")
    for key in ("valueString", "valueInteger", "valueBoolean", "valueDateTime", "valueTime"):
        if key in r:
            value = r[key]
            return ("true" if value else "false") if isinstance(value, bool) else str(value), ""
    if "valueCodeableConcept" in r:
        return _text(r["valueCodeableConcept"]), ""
    return "", ""


def _lab_result(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "cancelled")
    analysis = _text(r.get("code"))
    value, unit = _observation_value(r)
    if not analysis:
        raise _Unmappable("no-code")
    if not value:
        value = _text(r.get("dataAbsentReason"))
        if not value:
            raise _Unmappable("no-value")
    ranges = [_dict(x) for x in _list(r.get("referenceRange"))]
    reference = ""
    if ranges:
        first = ranges[0]
        reference = str(first.get("text") or "–".join(
            _number(_dict(first.get(k)).get("value", "")) for k in ("low", "high")
            if first.get(k)))
    interpretation = set().union(*(_coded(c) for c in _list(r.get("interpretation"))))
    return {
        "time": _observation_time(r), "analysis": analysis, "value": value, "unit": unit,
        "reference_range": reference, "abnormal": bool(interpretation & _ABNORMAL),
        "codes": _codes(r.get("code")), "author": _author(r.get("performer")),
    }


def _functional_status(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "cancelled")
    domain = _text(r.get("code"))
    value, unit = _observation_value(r)
    if not domain:
        raise _Unmappable("no-code")
    if not value:
        raise _Unmappable("no-value")
    return {
        "time": _observation_time(r), "domain": domain,
        "assessment": f"{value} {unit}".strip(), "description": _note(r),
        "codes": _codes(r.get("code")), "author": _author(r.get("performer")),
    }


def _care_contact(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "cancelled", "planned")
    types = _list(r.get("type"))
    klass = _dict(r.get("class"))
    contact_type = (_text(types[0]) if types else "") or str(
        klass.get("display") or klass.get("code") or "")
    if not contact_type:
        raise _Unmappable("no-type")
    period = _dict(r.get("period"))
    reasons = [_text(c) for c in _list(r.get("reasonCode"))] + [
        _display(x) for x in _list(r.get("reasonReference"))]
    participants = [_dict(p).get("individual") for p in _list(r.get("participant"))]
    return {
        "time": period.get("start"), "contact_type": contact_type,
        "reason": next((x for x in reasons if x), ""),
        "start": _datetime(period.get("start"), ctx.tz),
        "end": _datetime(period.get("end"), ctx.tz),
        "codes": [c for t in types for c in _codes(t)], "author": _author(participants),
    }


def _care_plan(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "draft")
    categories = _list(r.get("category"))
    plan_type = _text(categories[0]) if categories else ""
    title = str(r.get("title") or r.get("description") or plan_type)
    if not title:
        raise _Unmappable("no-title")
    goals = []
    for ref in _list(r.get("goal")):
        contained = _contained(r, ref)
        goals.append(_text(contained.get("description")) if contained else _display(ref))
    activities = []
    for activity in map(_dict, _list(r.get("activity"))):
        detail = _dict(activity.get("detail"))
        description = (_text(detail.get("code")) or str(detail.get("description") or "")
                       or _display(activity.get("reference")))
        if not description:
            continue
        when = str(detail.get("scheduledString") or _period_text(detail.get("scheduledPeriod"))
                   or _timing(detail.get("scheduledTiming")))
        performers = [_display(p) for p in _list(detail.get("performer"))]
        activities.append({"description": description,
                           "responsible": next((p for p in performers if p), ""),
                           "when": when})
    period = _dict(r.get("period"))
    participants = [_display(x) for x in (r.get("author"), *_list(r.get("contributor")))]
    return {
        "time": r.get("created") or period.get("start"), "title": title,
        "plan_type": plan_type, "goals": [g for g in goals if g], "activities": activities,
        "follow_up": _date(period.get("end"), ctx.tz),
        "participants": list(dict.fromkeys(p for p in participants if p)),
        "author": _author(r.get("author")),
    }


def _attachment_text(attachment: Json) -> str:
    if not str(attachment.get("contentType", "")).startswith("text/plain"):
        return ""
    try:
        return base64.b64decode(str(attachment.get("data", "")), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _care_documentation(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error")
    attachments = [_dict(_dict(c).get("attachment")) for c in _list(r.get("content"))]
    title = str(r.get("description") or _text(r.get("type"))
                or next((a["title"] for a in attachments if a.get("title")), ""))
    if not title:
        raise _Unmappable("no-title")
    context = _dict(r.get("context"))
    created = next((a["creation"] for a in attachments if a.get("creation")), None)
    return {
        "time": r.get("date") or _dict(context.get("period")).get("start") or created,
        "title": title, "note_type": _text(r.get("type")),
        "text": "\n\n".join(t for t in map(_attachment_text, attachments) if t),
        "codes": _codes(r.get("type")), "author": _author(r.get("author"), r.get("authenticator")),
    }


def _extension(resource: Json, url: str | None) -> Json | None:
    if url is None:
        return None
    for ext in (*_list(resource.get("extension")),
                *_list(_dict(resource.get("meta")).get("extension"))):
        if _dict(ext).get("url") == url:
            return _dict(ext)
    return None


def _extension_text(ext: Json | None) -> str:
    if ext is None:
        return ""
    for key in ("valueString", "valueCode"):
        if ext.get(key):
            return str(ext[key])
    if ext.get("valueCoding"):
        coding = _dict(ext["valueCoding"])
        return str(coding.get("display") or coding.get("code") or "")
    return _text(ext.get("valueCodeableConcept"))


def _intervention(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "revoked")
    wanted = ctx.config.service_request_category
    if wanted is not None and not any(wanted in _coded(c) for c in _list(r.get("category"))):
        raise _Unmappable("other-category")
    intervention = _text(r.get("code"))
    if not intervention:
        raise _Unmappable("no-code")
    legal_basis = _extension_text(_extension(r, ctx.config.legal_basis_extension)) or next(
        (t for t in map(_text, _list(r.get("reasonCode"))) if t), "")
    if not legal_basis:
        raise _Unmappable("no-legal-basis")
    occurrence = _dict(r.get("occurrencePeriod"))
    start = _date(occurrence.get("start"), ctx.tz)
    if r.get("status") == "draft" or r.get("intent") in ("proposal", "plan"):
        phase = "handlaggning"
    elif r.get("status") == "completed" or (start is not None
                                            and start <= dt.datetime.now(ctx.tz).date()):
        phase = "verkstallighet"
    else:
        phase = "beslut"
    extent = _quantity(r.get("quantityQuantity")) or _timing(r.get("occurrenceTiming"))
    return {
        "time": r.get("authoredOn") or occurrence.get("start"), "intervention": intervention,
        "legal_basis": legal_basis, "phase": phase,
        "decision_date": None if phase == "handlaggning" else _date(r.get("authoredOn"), ctx.tz),
        "start": start, "end": _date(occurrence.get("end"), ctx.tz), "extent": extent,
        "description": _note(r) or str(r.get("patientInstruction") or ""),
        "codes": _codes(r.get("code")), "author": _author(r.get("requester")),
    }


_MAPPERS: Final[Mapping[str, Callable[[Json, _Context], Json]]] = {
    "medication": _medication,
    "diagnoses": _diagnosis,
    "alerts": _alert,
    "lab_results": _lab_result,
    "functional_status": _functional_status,
    "care_contacts": _care_contact,
    "care_plans": _care_plan,
    "care_documentation": _care_documentation,
    "social_care_interventions": _intervention,
}

_UNIT_ELEMENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "MedicationRequest": ("requester", "performer", "recorder"),
    "Condition": ("asserter", "recorder"),
    "AllergyIntolerance": ("asserter", "recorder"),
    "Observation": ("performer",),
    "Encounter": ("serviceProvider",),
    "CarePlan": ("author", "contributor"),
    "DocumentReference": ("custodian", "author"),
    "ServiceRequest": ("performer", "requester"),
}


def _scope(resource: Json, info_type: str, rules: ScopeRules) -> str:
    ext = _extension(resource, rules.extension)
    if ext is not None:
        value = ext.get("valueCode") or ext.get("valueString") or _dict(
            ext.get("valueCoding")).get("code")
        if value not in _SCOPES:
            raise _Unmappable("bad-scope")
        return str(value)
    for label in map(_dict, _list(_dict(resource.get("meta")).get("security"))):
        code = label.get("code")
        for key in (f"{label.get('system', '')}|{code}", str(code)):
            if key in rules.security:
                return rules.security[key]
    return rules.types.get(info_type, rules.default)


def map_resource(
    resource: Json, info_type: str, *, config: FhirConfig, producer_id: str, unit: UnitRef
) -> Record:
    """One FHIR resource as a record of ``info_type``; raises ``ValueError`` with a short
    reason (never content) when it cannot be mapped."""
    try:
        fields = _MAPPERS[info_type](resource, _Context(config=config))
        scope = _scope(resource, info_type, config.scope)
    except _Unmappable as exc:
        raise ValueError(exc.reason) from None
    moment = _datetime(fields.pop("time", None), config.timezone)
    if moment is None:
        raise ValueError("no-time")
    values = {k: v for k, v in fields.items() if v not in (None, "", [])}
    values.update(  # the time in the producer's zone: the period is in local dates
        id=f"{resource.get('resourceType')}/{resource.get('id')}",
        time=moment.astimezone(config.timezone), scope=scope,
        source={"producer": producer_id, "organisation": config.organisation, "unit": unit,
                "system": config.system},
    )
    try:
        return msgspec.convert(values, RECORD_CLASSES[info_type],  # type: ignore[no-any-return]
                               from_attributes=True)
    except msgspec.ValidationError:
        raise ValueError("invalid") from None  # the message may quote a value


def _identifier_value(ids: Any, system: str) -> str | None:
    for ident in map(_dict, _list(ids)):
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None
