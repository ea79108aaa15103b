"""FHIR R4 resources → samsvar records: pure functions, no I/O.

:func:`map_resource` turns one resource into a record, or raises one of three
``ValueError`` subclasses whose message is a short stable reason, never content:

* :class:`LeftOut` — no record to show and nothing to count (entered in error, a draft, a
  "no known allergy" statement, another category, a marking that is never disclosed);
* :class:`Withheld` — a security label the configuration withholds: counted like a block;
* :class:`UnreadableResource` — a record the source holds but that cannot be read (no time,
  no code, …): counted in the reply's ``unreadable``.

The client reads what a resource references (the authors' Practitioner/PractitionerRole,
a MedicationRequest's Medication) beforehand: :func:`references_of` names them, and
``referenced`` hands them in.
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

import msgspec

from schemas.records import DISCLOSABLE_SCOPES, Record, UnitRef

from .._common import RECORD_CLASSES
from .config import _PLAIN_CONFIDENTIALITY, _SCOPES, CONFIDENTIALITY, FhirConfig, ScopeRules

__all__ = [
    "NO_KNOWN_CODES",
    "LeftOut",
    "UnreadableResource",
    "Withheld",
    "map_resource",
    "record_time",
    "reference_key",
    "references_of",
]


class LeftOut(ValueError):
    """No record and nothing to count; ``str()`` is a short reason."""


class Withheld(LeftOut):
    """Held back by a security label the configuration withholds (counted like a block)."""


class UnreadableResource(ValueError):
    """A record the source holds that cannot be read; counted as unreadable."""


# -- FHIR data types ---------------------------------------------------------------------

class _Unmappable(Exception):
    """A resource that cannot be read; ``reason`` is a short stable word, never content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NotARecord(_Unmappable):
    """A resource that is no record (entered in error, a negation statement, …)."""


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


_REF: Final = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def reference_key(ref: Any) -> str | None:
    """``Type/id`` of a literal reference (relative or absolute), else None."""
    match = _REF.search(str(_dict(ref).get("reference", "")))
    return f"{match.group(1)}/{match.group(2)}" if match else None


def _contained(resource: Json, ref: Any) -> Json | None:
    reference = str(_dict(ref).get("reference", ""))
    if not reference.startswith("#"):
        return None
    for c in map(_dict, _list(resource.get("contained"))):
        if c.get("id") == reference[1:]:
            return c
    return None


def _human_name(names: Any) -> str:
    ordered = sorted(map(_dict, _list(names)),
                     key=lambda n: {"official": 0, "usual": 1}.get(str(n.get("use")), 2))
    for name in ordered:
        if name.get("text"):
            return str(name["text"])
        parts = [*map(str, _list(name.get("given"))), str(name.get("family") or "")]
        if any(parts):
            return " ".join(p for p in parts if p)
    return ""


# -- resource → record fields, one function per resource type ---------------------------

@dataclass(frozen=True, kw_only=True)
class _Context:
    config: FhirConfig
    referenced: Mapping[str, Json] = field(default_factory=dict)
    """``Type/id`` → the resource the client read (or found ``_include``-d)."""

    @property
    def tz(self) -> ZoneInfo:
        return self.config.timezone

    def resolve(self, resource: Json, ref: Any) -> Json | None:
        """The resource ``ref`` points to: contained, or read by the client."""
        contained = _contained(resource, ref)
        if contained is not None:
            return contained
        key = reference_key(ref)
        return self.referenced.get(key) if key else None


def _person(ctx: _Context, holder: Json, ref: Any) -> Json | None:
    """``{name, role}`` of a Practitioner or PractitionerRole reference, else its display."""
    target = ctx.resolve(holder, ref)
    kind = _dict(target).get("resourceType")
    name = role = ""
    if target is not None and kind == "Practitioner":
        name = _human_name(target.get("name"))
        role = next((t for q in map(_dict, _list(target.get("qualification")))
                     if (t := _text(q.get("code")))), "")
    elif target is not None and kind == "PractitionerRole":
        practitioner = ctx.resolve(target, target.get("practitioner"))
        name = (_human_name(_dict(practitioner).get("name"))
                or _display(target.get("practitioner")))
        role = next((t for c in (*_list(target.get("code")), *_list(target.get("specialty")))
                     if (t := _text(c))), "")
    name = name or _display(ref)
    return {"name": name, "role": role} if name else None


def _author(ctx: _Context, holder: Json, *refs: Any) -> Json | None:
    for ref in refs:
        for r in _list(ref):
            author = _person(ctx, holder, r)
            if author is not None:
                return author
    return None


def _skip_status(resource: Json, *bad: str) -> None:
    status = resource.get("status")
    if status in bad:
        raise _NotARecord(f"status-{status}")


_VERIFICATION: Final = frozenset({"confirmed", "unconfirmed", "provisional", "differential",
                                  "refuted"})
_ABSENT_UNKNOWN: Final = "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips"
NO_KNOWN_CODES: Final = frozenset({
    # SNOMED CT situations: "no known …" (a negation, not a finding)
    "http://snomed.info/sct|716186003",   # no known allergy
    "http://snomed.info/sct|409137002",   # no known drug allergy
    "http://snomed.info/sct|429625007",   # no known food allergy
    "http://snomed.info/sct|428607008",   # no known environmental allergy
    "http://snomed.info/sct|428197003",   # no known insect allergy
    "http://snomed.info/sct|1003774007",  # no known Hevea brasiliensis latex allergy
    "http://snomed.info/sct|716184000",   # no known latex allergy
    "http://snomed.info/sct|160245001",   # no current problems or disability
    # the IPS absent/unknown codes
    *(f"{_ABSENT_UNKNOWN}|{c}" for c in (
        "no-allergy-info", "no-known-allergies", "no-known-medication-allergies",
        "no-known-environmental-allergies", "no-known-food-allergies", "no-problem-info",
        "no-known-problems", "no-medication-info", "no-known-medications",
        "no-procedure-info", "no-known-procedures")),
})


def _skip_negation(concept: Any) -> None:
    if _coded(concept) & NO_KNOWN_CODES:
        raise _NotARecord("no-known")


def _verification(resource: Json) -> str | None:
    status = _status(resource.get("verificationStatus"))
    if status == "entered-in-error":
        raise _NotARecord("verification-entered-in-error")
    return status if status in _VERIFICATION else None


def _drug(r: Json, ctx: _Context) -> tuple[str, Any]:
    """The drug's name and CodeableConcept, from the code or the (resolved) Medication."""
    concept = r.get("medicationCodeableConcept")
    if concept is None:
        medication = ctx.resolve(r, r.get("medicationReference"))
        if medication is not None and medication.get("resourceType") == "Medication":
            concept = medication.get("code")
    _skip_negation(concept)
    return _text(concept) or _display(r.get("medicationReference")), concept


def _dosage(dosage: Json) -> tuple[str, dict[str, Any]]:
    rate = _dict((_list(dosage.get("doseAndRate")) or [{}])[0])
    dose = _quantity(rate.get("doseQuantity"))
    if not dose and rate.get("doseRange"):
        low, high = _dict(rate["doseRange"]).get("low"), _dict(rate["doseRange"]).get("high")
        dose = "–".join(x for x in (_quantity(low), _quantity(high)) if x)
    bounds = _dict(_dict(_dict(dosage.get("timing")).get("repeat")).get("boundsPeriod"))
    return dose, bounds


def _reasons(r: Json) -> str:
    reasons = [_text(c) for c in _list(r.get("reasonCode"))] + [
        _display(x) for x in _list(r.get("reasonReference"))]
    return next((x for x in reasons if x), "")


def _medication(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "draft")
    drug, concept = _drug(r, ctx)
    if not drug:
        raise _Unmappable("no-drug")
    dosage = _dict((_list(r.get("dosageInstruction")) or [{}])[0])
    dose, bounds = _dosage(dosage)
    validity = _dict(_dict(r.get("dispenseRequest")).get("validityPeriod"))
    status = {"active": "active", "on-hold": "paused", "completed": "stopped",
              "stopped": "stopped", "cancelled": "stopped"}.get(str(r.get("status")), "active")
    return {
        "drug": drug, "codes": _codes(concept), "dose": dose,
        "route": _text(dosage.get("route")),
        "schedule": str(dosage.get("text") or _timing(dosage.get("timing"))),
        "purpose": _reasons(r),
        "start": _date(bounds.get("start") or validity.get("start"), ctx.tz),
        "stop": _date(bounds.get("end") or validity.get("end"), ctx.tz),
        "status": status, "author": _author(ctx, r, r.get("requester"), r.get("recorder")),
    }


def _medication_statement(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "not-taken")
    drug, concept = _drug(r, ctx)
    if not drug:
        raise _Unmappable("no-drug")
    dosage = _dict((_list(r.get("dosage")) or [{}])[0])
    dose, bounds = _dosage(dosage)
    effective = _dict(r.get("effectivePeriod"))
    status = {"active": "active", "intended": "active", "on-hold": "paused",
              "completed": "stopped", "stopped": "stopped"}.get(str(r.get("status")), "active")
    return {
        "drug": drug, "codes": _codes(concept), "dose": dose,
        "route": _text(dosage.get("route")),
        "schedule": str(dosage.get("text") or _timing(dosage.get("timing"))),
        "purpose": _reasons(r),
        "start": _date(bounds.get("start") or effective.get("start")
                       or r.get("effectiveDateTime"), ctx.tz),
        "stop": _date(bounds.get("end") or effective.get("end"), ctx.tz),
        "status": status, "author": _author(ctx, r, r.get("informationSource")),
    }


_CONDITION_CLINICAL: Final = frozenset({"active", "recurrence", "relapse", "inactive",
                                        "remission", "resolved"})


def _diagnosis(r: Json, ctx: _Context) -> Json:
    verification = _verification(r)
    _skip_negation(r.get("code"))
    display = _text(r.get("code"))
    if not display:
        raise _Unmappable("no-code")
    clinical = _status(r.get("clinicalStatus"))
    resolved = clinical in ("inactive", "remission", "resolved")
    onset = r.get("onsetDateTime") or _dict(r.get("onsetPeriod")).get("start")
    return {
        "display": display, "codes": _codes(r.get("code")),
        "status": "resolved" if resolved else "active",
        "clinical_status": clinical if clinical in _CONDITION_CLINICAL else None,
        "verification": verification, "onset": _date(onset, ctx.tz),
        "author": _author(ctx, r, r.get("asserter"), r.get("recorder")),
    }


_SEVERITY: Final = {"mild": "low", "moderate": "moderate", "severe": "high"}
_RANK: Final = {"low": 0, "moderate": 1, "high": 2}


def _alert(r: Json, ctx: _Context) -> Json:
    verification = _verification(r)
    _skip_negation(r.get("code"))
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
    clinical = _status(r.get("clinicalStatus"))
    return {
        "category": "allergy", "description": description, "severity": severity,
        "substance": substance or _text(r.get("code")), "codes": _codes(r.get("code")),
        "clinical_status": clinical if clinical in ("active", "inactive", "resolved") else None,
        "verification": verification,
        "author": _author(ctx, r, r.get("recorder"), r.get("asserter")),
    }


_FLAG_CATEGORY: Final = {"safety": "risk", "advance-directive": "treatment_limit",
                         "infection": "infection", "clinical": "other"}


def _flag(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error")
    _skip_negation(r.get("code"))
    description = _text(r.get("code"))
    if not description:
        raise _Unmappable("no-code")
    categories = {c.split("|")[-1] for x in _list(r.get("category")) for c in _coded(x)}
    category = next((v for k, v in _FLAG_CATEGORY.items() if k in categories), "other")
    return {
        "category": category, "description": description,
        "valid_until": _date(_dict(r.get("period")).get("end"), ctx.tz),
        "clinical_status": "inactive" if r.get("status") == "inactive" else "active",
        "codes": _codes(r.get("code")), "author": _author(ctx, r, r.get("author")),
    }


_ABNORMAL: Final = frozenset({"A", "AA", "H", "HH", "HU", "L", "LL", "LU"})


def _value(r: Json) -> tuple[str, str]:
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


def _observation_value(r: Json) -> tuple[str, str]:
    """The value, or (e.g. a blood pressure) its components' as one text."""
    value, unit = _value(r)
    if value:
        return value, unit
    parts = []
    for component in map(_dict, _list(r.get("component"))):
        v, u = _value(component)
        v = v or _text(component.get("dataAbsentReason"))
        if v:
            parts.append(f"{_text(component.get('code'))}: {v} {u}".strip())
    return "; ".join(parts), ""


def _skip_panel(r: Json, value: str) -> None:
    """A panel with no value of its own: its members are the records."""
    if not value and r.get("hasMember") and not r.get("dataAbsentReason"):
        raise _NotARecord("panel")


def _lab_result(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "cancelled")
    analysis = _text(r.get("code"))
    value, unit = _observation_value(r)
    _skip_panel(r, value)
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
        "analysis": analysis, "value": value, "unit": unit,
        "reference_range": reference, "abnormal": bool(interpretation & _ABNORMAL),
        "codes": _codes(r.get("code")), "author": _author(ctx, r, r.get("performer")),
    }


def _functional_status(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "cancelled")
    domain = _text(r.get("code"))
    value, unit = _observation_value(r)
    _skip_panel(r, value)
    if not domain:
        raise _Unmappable("no-code")
    if not value:
        value = _text(r.get("dataAbsentReason"))
        if not value:
            raise _Unmappable("no-value")
    return {
        "domain": domain, "assessment": f"{value} {unit}".strip(), "description": _note(r),
        "codes": _codes(r.get("code")), "author": _author(ctx, r, r.get("performer")),
    }


ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _care_contact(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "cancelled", "planned")
    types = _list(r.get("type"))
    klass = _dict(r.get("class"))
    contact_type = (_text(types[0]) if types else "") or str(
        klass.get("display") or klass.get("code") or "")
    if not contact_type:
        raise _Unmappable("no-type")
    period = _dict(r.get("period"))
    participants = [_dict(p).get("individual") for p in _list(r.get("participant"))]
    codes = [c for t in types for c in _codes(t)]
    if klass.get("code"):  # the class is kept as a code (the FHIR answer's Encounter.class)
        codes.append({"system": str(klass.get("system") or ACT_CODE), "code": str(klass["code"]),
                      "display": str(klass.get("display", ""))})
    return {
        "contact_type": contact_type, "reason": _reasons(r),
        "start": _datetime(period.get("start"), ctx.tz),
        "end": _datetime(period.get("end"), ctx.tz),
        "codes": codes, "author": _author(ctx, r, participants),
    }


CARE_PLAN_TYPE_SYSTEM: Final = "urn:samsvar:fhir:care-plan-type"
"""``CarePlan.category`` codes: GetCarePlans' TypeOfCarePlan (``SIP``, ``SPLPTLRV``, …)."""
CARE_PLAN_ROLE_SYSTEM: Final = "urn:samsvar:fhir:care-plan-role"
"""A plan participant's role: ``coordinator`` (SIP: samordnare)."""
CARE_PLAN_ACTIVITY_SYSTEM: Final = "urn:samsvar:fhir:care-plan-activity"
"""An activity's ``detail.code``: ``follow-up`` is the plan's follow-up (uppföljning)."""
_EXT_NEED: Final = "urn:samsvar:fhir:need"
_EXT_FOLLOW_UP: Final = "urn:samsvar:fhir:follow-up"
_EXT_OVERALL_RESPONSIBLE: Final = "urn:samsvar:fhir:overall-responsible-org"
_PLAN_TYPES: Final = frozenset({"SIP", "SPLPTLRV", "SPU", "VP", "HP", "RP", "GP", "SVP"})
_PLAN_TYPE_WORDS: Final = {"samordnad individuell plan": "SIP"}
_HSA: Final = "urn:oid:1.2.752.29.4.19"
_PLAN_STATUS: Final = {"active": "active", "on-hold": "active", "completed": "completed",
                       "revoked": "cancelled"}
_ACTIVITY_STATUS: Final = {"not-started": "planned", "scheduled": "planned",
                           "in-progress": "in_progress", "on-hold": "in_progress",
                           "completed": "done", "cancelled": "cancelled",
                           "stopped": "cancelled"}
_COORDINATOR_WORDS: Final = frozenset({"coordinator", "samordnare", "samordningsansvarig"})
_COORDINATOR_PREFIX: Final = "Samordnare:"


def _plan_type(categories: list[Any]) -> str:
    """A TypeOfCarePlan code from ``category``: a coding in :data:`CARE_PLAN_TYPE_SYSTEM`,
    else a category whose code or text is one of the codes (``SIP``, any case) or says
    "samordnad individuell plan"; else the first category's words."""
    for c in map(_dict, categories):
        for coding in map(_dict, _list(c.get("coding"))):
            if coding.get("system") == CARE_PLAN_TYPE_SYSTEM and coding.get("code"):
                return str(coding["code"])
    for c in map(_dict, categories):
        words = [str(c.get("text") or ""), *(str(_dict(x).get(k) or "")
                 for x in _list(c.get("coding")) for k in ("code", "display"))]
        for word in words:
            if word.strip().upper() in _PLAN_TYPES:
                return word.strip().upper()
            if word.strip().lower() in _PLAN_TYPE_WORDS:
                return _PLAN_TYPE_WORDS[word.strip().lower()]
    return _text(categories[0]) if categories else ""


def _ref_kind(ctx: _Context, holder: Json, ref: Any) -> str:
    """What a reference points to: the resolved resource's type, else its literal or
    ``type``."""
    target = ctx.resolve(holder, ref)
    if target is not None:
        return str(target.get("resourceType", ""))
    key = reference_key(ref)
    return key.split("/")[0] if key else str(_dict(ref).get("type", ""))


def _org_ref(ctx: _Context, holder: Json, ref: Any) -> Json | None:
    """``{id, name}`` of an Organization reference (HSA-id from the reference's or the read
    Organization's identifier, else its id), or of a PractitionerRole's organisation."""
    target = ctx.resolve(holder, ref)
    kind = _ref_kind(ctx, holder, ref)
    if kind == "PractitionerRole" and target is not None:
        return _org_ref(ctx, target, target.get("organization"))
    if kind != "Organization":
        return None
    target = target or {}
    oid = (_identifier_value(_list(_dict(ref).get("identifier")), _HSA)
           or _identifier_value(target.get("identifier"), _HSA)
           or str(_dict(_dict(ref).get("identifier")).get("value") or "")
           or (reference_key(ref) or "").partition("/")[2] or str(target.get("id") or ""))
    name = str(target.get("name") or _display(ref) or oid)
    return {"id": oid, "name": name} if oid else None


def _is_coordinator(ctx: _Context, holder: Json, ref: Any, roles: Any = None) -> bool:
    concepts = [*_list(roles)]
    for ext in map(_dict, _list(_dict(ref).get("extension"))):
        if ext.get("url") == CARE_PLAN_ROLE_SYSTEM:
            concepts.append({"coding": [{"code": ext.get("valueCode")}]})
    target = ctx.resolve(holder, ref)
    if _dict(target).get("resourceType") == "PractitionerRole":
        concepts.extend(_list(_dict(target).get("code")))
    words = {w.split("|")[-1].lower() for c in concepts for w in _coded(c)}
    words |= {_text(c).lower() for c in concepts}
    return bool(words & _COORDINATOR_WORDS) or _display(ref).startswith(_COORDINATOR_PREFIX)


def _plan_person(ctx: _Context, holder: Json, ref: Any) -> Json | None:
    """A plan participant as a PersonRef: name, HSA-id, role and organisation."""
    target = ctx.resolve(holder, ref)
    person = _person(ctx, holder, ref) or {}
    name = str(person.get("name") or "").removeprefix(_COORDINATOR_PREFIX).strip()
    if not name:
        return None
    out: Json = {"name": name}
    if _dict(target).get("resourceType") == "PractitionerRole":
        practitioner = _dict(target).get("practitioner")
        hsa = _identifier_value(_list(_dict(practitioner).get("identifier")), _HSA)
        roles = [t for c in _list(_dict(target).get("code"))
                 if not ({w.split("|")[-1].lower() for w in _coded(c)} & _COORDINATOR_WORDS)
                 and (t := _text(c))]
        out.update(hsa_id=hsa or "", role=next(iter(roles), ""),
                   organisation=_org_ref(ctx, _dict(target), _dict(target).get("organization")))
    else:
        out["hsa_id"] = _identifier_value(_list(_dict(ref).get("identifier")), _HSA) or ""
        out["role"] = str(person.get("role") or "")
    return {k: v for k, v in out.items() if v}


def _care_team_members(ctx: _Context, r: Json) -> list[tuple[Json, Any, Any]]:
    """(holder, member reference, roles) of the plan's care teams' participants."""
    out: list[tuple[Json, Any, Any]] = []
    for ref in _list(r.get("careTeam")):
        team = ctx.resolve(r, ref)
        for p in map(_dict, _list(_dict(team).get("participant"))):
            out.append((_dict(team) if _contained(r, ref) is None else r,
                        _dict(p.get("member")), p.get("role")))
    return out


def _activity_when(detail: Json) -> str:
    period = _dict(detail.get("scheduledPeriod"))
    if period.get("start") and not period.get("end"):
        return str(period["start"])  # the day it is planned for
    return str(detail.get("scheduledString") or _period_text(period)
               or _timing(detail.get("scheduledTiming")))


def _is_follow_up(detail: Json) -> bool:
    return f"{CARE_PLAN_ACTIVITY_SYSTEM}|follow-up" in _coded(detail.get("code"))


def _care_plan(r: Json, ctx: _Context) -> Json:
    """A CarePlan as a plan, a SIP's structure when it is one (docs/fhir.md)."""
    _skip_status(r, "entered-in-error", "draft")
    categories = _list(r.get("category"))
    plan_type = _plan_type(categories)
    needs = [str(e["valueString"]) for e in map(_dict, _list(r.get("extension")))
             if e.get("url") == _EXT_NEED and e.get("valueString")]
    for ref in _list(r.get("addresses")):
        condition = ctx.resolve(r, ref)
        needs.append(_text(_dict(condition).get("code")) or _display(ref))
    needs = list(dict.fromkeys(n for n in needs if n))
    title = str(r.get("title") or r.get("description") or plan_type or next(iter(needs), ""))
    if not title:
        raise _Unmappable("no-title")
    goals = []
    for ref in _list(r.get("goal")):
        goal = ctx.resolve(r, ref)
        goals.append(_text(_dict(goal).get("description")) or _display(ref))
    activities, follow_ups = [], []
    for activity in map(_dict, _list(r.get("activity"))):
        detail = _dict(activity.get("detail"))
        when = _activity_when(detail)
        if _is_follow_up(detail):
            period = _dict(detail.get("scheduledPeriod"))
            follow_ups.append(_date(period.get("start") or detail.get("scheduledString"),
                                    ctx.tz))
            continue
        what = (_text(detail.get("code")) or str(detail.get("description") or "")
                or _display(activity.get("reference")))
        if not what:
            continue
        orgs, people = [], []
        for p in _list(detail.get("performer")):
            org = _org_ref(ctx, r, p)
            if org is not None and _ref_kind(ctx, r, p) == "Organization":
                orgs.append(org)
            else:
                people.append(_display(p) or _dict(_person(ctx, r, p)).get("name", ""))
                if org is not None:
                    orgs.append(org)
        activities.append({
            "what": what, "responsible_org": next(iter(orgs), None),
            "responsible": next((p for p in people if p), ""), "when": when,
            "status": _ACTIVITY_STATUS.get(str(detail.get("status")), "planned")})
    # who: the author (an organisation: the overall responsibility), contributors, care team
    author = r.get("author")
    overall = _org_ref(ctx, r, author) if _ref_kind(ctx, r, author) == "Organization" else None
    ext = _extension(r, _EXT_OVERALL_RESPONSIBLE)
    if overall is None and ext is not None:
        overall = _org_ref(ctx, r, ext.get("valueReference"))
    coordinator, participants = None, []
    members: list[tuple[Json, Any, Any]] = [
        (r, ref, None) for ref in (author, *_list(r.get("contributor")))
        if _ref_kind(ctx, r, ref) != "Organization" or ref is not author]
    for holder, ref, roles in [*members, *_care_team_members(ctx, r)]:
        if ref is None:
            continue
        if coordinator is None and _is_coordinator(ctx, holder, ref, roles):
            coordinator = _plan_person(ctx, holder, ref)
            continue
        if ref is author:
            continue  # the author is who wrote it, not a participant
        person = _plan_person(ctx, holder, ref)
        participants.append(person["name"] if person else _display(ref))
    ext_follow_up = _extension(r, _EXT_FOLLOW_UP)
    follow_up = (_date(_dict(ext_follow_up).get("valueDate")
                       or _dict(ext_follow_up).get("valueDateTime"), ctx.tz)
                 or next((d for d in follow_ups if d), None)
                 or _date(_dict(r.get("period")).get("end"), ctx.tz))
    return {
        "title": title, "plan_type": plan_type,
        "status": _PLAN_STATUS.get(str(r.get("status")), "active"),
        "needs": needs, "goals": [g for g in goals if g], "activities": activities,
        "overall_responsible_org": overall, "coordinator": coordinator,
        "participants": list(dict.fromkeys(p for p in participants if p)),
        "follow_up_date": follow_up,
        "author": _author(ctx, r, author),
    }


def _attachment_text(attachment: Json) -> str:
    if not str(attachment.get("contentType", "")).startswith("text/plain"):
        return ""
    try:
        return base64.b64decode(str(attachment.get("data", "")), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _attachments(r: Json) -> list[Json]:
    return [_dict(_dict(c).get("attachment")) for c in _list(r.get("content"))]


def _care_documentation(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error")
    attachments = _attachments(r)
    title = str(r.get("description") or _text(r.get("type"))
                or next((a["title"] for a in attachments if a.get("title")), ""))
    if not title:
        raise _Unmappable("no-title")
    return {
        "title": title, "note_type": _text(r.get("type")),
        "text": "\n\n".join(t for t in map(_attachment_text, attachments) if t),
        "codes": _codes(r.get("type")),
        "author": _author(ctx, r, r.get("author"), r.get("authenticator")),
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
        raise _NotARecord("other-category")
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
        "intervention": intervention, "legal_basis": legal_basis, "phase": phase,
        "decision_date": None if phase == "handlaggning" else _date(r.get("authoredOn"), ctx.tz),
        "start": start, "end": _date(occurrence.get("end"), ctx.tz), "extent": extent,
        "description": _note(r) or str(r.get("patientInstruction") or ""),
        "codes": _codes(r.get("code")), "author": _author(ctx, r, r.get("requester")),
    }


_APPOINTMENT_STATUS: Final = {"booked": "booked", "pending": "booked", "proposed": "booked",
                              "arrived": "fulfilled", "checked-in": "fulfilled",
                              "fulfilled": "fulfilled", "cancelled": "cancelled",
                              "noshow": "noshow", "waitlist": "booked"}
_FIXED_ROLES: Final = frozenset({"fast_vardkontakt", "fast_omsorgskontakt",
                                 "fast_lakarkontakt", "kontaktsjukskoterska"})


def _booking(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error")
    start = _datetime(r.get("start"), ctx.tz)
    if start is None:
        raise _Unmappable("no-start")
    actors = [_dict(_dict(p).get("actor")) for p in _list(r.get("participant"))]
    performer = next((a for a in actors if str(a.get("reference", "")).startswith(
        ("Practitioner", "PractitionerRole")) or a.get("type") in (
        "Practitioner", "PractitionerRole")), None)
    services = [_text(c) for c in _list(r.get("serviceType"))]
    return {
        "start": start, "end": _datetime(r.get("end"), ctx.tz),
        "status": _APPOINTMENT_STATUS.get(str(r.get("status")), "booked"),
        "purpose": str(r.get("description") or ""),
        "reason": next((t for t in map(_text, _list(r.get("reasonCode"))) if t), ""),
        "performer": {"name": _display(performer)} if performer and _display(performer)
        else None,
        "time_type": _text(r.get("appointmentType")),
        "care_type": next((t for t in services if t), ""),
        "address": str(r.get("comment") or ""),
    }


def _telecoms(values: Any) -> list[Json]:
    out = []
    for t in map(_dict, _list(values)):
        system = {"phone": "phone", "email": "email"}.get(str(t.get("system")), "other")
        if t.get("value"):
            out.append({"system": system, "value": str(t["value"])})
    return out


def _fixed_contact(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "proposed")
    participants = list(map(_dict, _list(r.get("participant"))))
    if not participants:
        raise _Unmappable("no-participant")
    first = participants[0]
    member = _dict(first.get("member"))
    role_resource = _contained(r, member) or {}
    roles = _list(first.get("role")) or _list(role_resource.get("code"))
    codes = {code.split("|")[-1] for c in roles for code in _coded(c)}
    role = next((c for c in codes if c in _FIXED_ROLES), "other")
    name = _display(role_resource.get("practitioner")) or _display(member)
    if not name:
        raise _Unmappable("no-person")
    period = _dict(first.get("period")) or _dict(r.get("period"))
    return {
        "role": role, "role_display": next((_text(c) for c in roles if _text(c)), ""),
        "person": {"name": name}, "care_team": str(r.get("name") or ""),
        "start": _date(period.get("start"), ctx.tz), "end": _date(period.get("end"), ctx.tz),
        "contact": _telecoms(role_resource.get("telecom")) or _telecoms(r.get("telecom")),
        "note": _note(r),
    }


def _self_care(r: Json, ctx: _Context) -> Json:
    _skip_status(r, "entered-in-error", "draft")
    detail = next((_dict(_dict(a).get("detail")) for a in _list(r.get("activity"))), {})
    activity = str(r.get("title") or _text(detail.get("code"))
                   or detail.get("description") or "")
    if not activity:
        raise _Unmappable("no-title")
    period = _dict(r.get("period"))
    return {
        "activity": activity, "instructions": str(r.get("description") or ""),
        "performed_by": next((d for d in map(_display, _list(detail.get("performer"))) if d),
                             ""),
        "assessed_by": {"name": _display(r.get("author"))} if _display(r.get("author"))
        else None,
        "start": _date(period.get("start"), ctx.tz), "end": _date(period.get("end"), ctx.tz),
        "status": "ended" if r.get("status") in ("completed", "revoked") else "active",
    }


_MAPPERS: Final[Mapping[tuple[str, str], Callable[[Json, _Context], Json]]] = {
    ("medication", "MedicationRequest"): _medication,
    ("medication", "MedicationStatement"): _medication_statement,
    ("diagnoses", "Condition"): _diagnosis,
    ("alerts", "AllergyIntolerance"): _alert,
    ("alerts", "Flag"): _flag,
    ("lab_results", "Observation"): _lab_result,
    ("functional_status", "Observation"): _functional_status,
    ("care_contacts", "Encounter"): _care_contact,
    ("care_plans", "CarePlan"): _care_plan,
    ("care_documentation", "DocumentReference"): _care_documentation,
    ("social_care_interventions", "ServiceRequest"): _intervention,
    ("bookings", "Appointment"): _booking,
    ("fixed_contacts", "CareTeam"): _fixed_contact,
    ("self_care", "CarePlan"): _self_care,
}

_TIME_ELEMENTS: Final[Mapping[str, tuple[str, ...]]] = {
    # the record's time: the first of these a resource has (``a.b``: b of element a)
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
    "Condition": ("recordedDate", "onsetDateTime", "onsetPeriod.start"),
    "AllergyIntolerance": ("recordedDate", "onsetDateTime", "onsetPeriod.start"),
    "Flag": ("period.start",),
    "Observation": ("effectiveDateTime", "effectiveInstant", "effectivePeriod.start", "issued"),
    "Encounter": ("period.start",),
    "CarePlan": ("created", "period.start"),
    "DocumentReference": ("date", "context.period.start"),
    "ServiceRequest": ("authoredOn", "occurrencePeriod.start"),
    "Appointment": ("created", "start"),
    "CareTeam": ("period.start",),
}


def _path(resource: Json, path: str) -> Any:
    value: Any = resource
    for part in path.split("."):
        value = _dict(value).get(part)
    return value


def record_time(resource: Json, tz: ZoneInfo) -> dt.datetime | None:
    """The record's time: the first usable element of :data:`_TIME_ELEMENTS`, in ``tz``."""
    values = [_path(resource, p) for p in _TIME_ELEMENTS.get(str(resource.get("resourceType")), ())]
    if resource.get("resourceType") == "DocumentReference":
        values += [a.get("creation") for a in _attachments(resource)]
    for value in values:
        moment = _datetime(value, tz)
        if moment is not None:
            return moment.astimezone(tz)
    return None


_AUTHOR_ELEMENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "MedicationRequest": ("requester", "recorder"),
    "MedicationStatement": ("informationSource",),
    "Condition": ("asserter", "recorder"),
    "AllergyIntolerance": ("recorder", "asserter"),
    "Flag": ("author",),
    "Observation": ("performer",),
    "Encounter": ("participant.individual",),
    "CarePlan": ("author",),
    "DocumentReference": ("author", "authenticator"),
    "ServiceRequest": ("requester",),
}
_READ_KINDS: Final = frozenset({"Practitioner", "PractitionerRole", "Medication"})
_PLAN_READ_KINDS: Final = frozenset({"Condition", "Goal", "Organization", "CareTeam"})


def references_of(resource: Json, base_url: str) -> Iterator[str]:
    """``Type/id`` of what mapping ``resource`` reads: its authors' Practitioner or
    PractitionerRole and its Medication (a PractitionerRole's practitioner: ask again).
    An absolute reference to another server than ``base_url`` is not followed."""
    kind = str(resource.get("resourceType"))
    refs: list[Any] = [resource.get("medicationReference"), resource.get("practitioner")]
    for element in _AUTHOR_ELEMENTS.get(kind, ()):
        head, _, tail = element.partition(".")
        for value in _list(resource.get(head)):
            refs.extend(_list(_dict(value).get(tail)) if tail else [value])
    kinds = _READ_KINDS
    if kind == "CarePlan":  # a plan's needs, goals, organisations and care team
        kinds = _READ_KINDS | _PLAN_READ_KINDS
        refs += [*_list(resource.get("addresses")), *_list(resource.get("goal")),
                 *_list(resource.get("careTeam")), *_list(resource.get("contributor")),
                 *(p for a in _list(resource.get("activity"))
                   for p in _list(_dict(_dict(a).get("detail")).get("performer")))]
    elif kind == "CareTeam":
        refs += [_dict(p).get("member") for p in _list(resource.get("participant"))]
    for ref in refs:
        key = reference_key(ref)
        literal = str(_dict(ref).get("reference", ""))
        if key is None or key.split("/")[0] not in kinds or (
                "://" in literal and not literal.startswith(base_url.rstrip("/") + "/")):
            continue
        yield key


_UNIT_ELEMENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "MedicationRequest": ("requester", "performer", "recorder"),
    "MedicationStatement": ("informationSource",),
    "Condition": ("asserter", "recorder"),
    "AllergyIntolerance": ("asserter", "recorder"),
    "Flag": ("author",),
    "Observation": ("performer",),
    "Encounter": ("serviceProvider",),
    "CarePlan": ("author", "contributor"),
    "DocumentReference": ("custodian", "author"),
    "ServiceRequest": ("performer", "requester"),
    "CareTeam": ("managingOrganization",),
}


def _scope(resource: Json, info_type: str, rules: ScopeRules) -> str:
    ext = _extension(resource, rules.extension)
    if ext is not None:
        value = ext.get("valueCode") or ext.get("valueString") or _dict(
            ext.get("valueCoding")).get("code")
        if value not in _SCOPES:
            raise _NotARecord("bad-scope")
        return str(value)
    for label in _labels(resource):
        code = label.get("code")
        for key in (f"{label.get('system', '')}|{code}", str(code)):
            if key in rules.security:
                return rules.security[key]
    return rules.types.get(info_type, rules.default)


def _labels(resource: Json) -> list[Json]:
    return [x for x in map(_dict, _list(_dict(resource.get("meta")).get("security")))
            if x.get("code")]


def _security(resource: Json, config: FhirConfig) -> list[dict[str, str]]:
    """The labels to keep on the record; raises :class:`Withheld` for one to withhold.

    A label that marks the scope (``[backend.scope] security``) is the scope's; plain
    confidentiality (U, L, M, N) passes; any other label (R, V, TBOO, PSY, …) needs a rule
    in ``security_labels``, and without one is withheld.
    """
    kept = []
    for label in _labels(resource):
        system, code = str(label.get("system", "")), str(label["code"])
        keys = (f"{system}|{code}", code)
        action = next((config.security_labels[k] for k in keys
                       if k in config.security_labels), None)
        if action is None and any(k in config.scope.security for k in keys):
            continue
        if action is None and system == CONFIDENTIALITY and code in _PLAIN_CONFIDENTIALITY:
            action = "pass"
        if action != "pass":
            raise Withheld("security-label")
        kept.append({"system": system, "code": code, "display": str(label.get("display", ""))})
    return kept


def map_resource(
    resource: Json, info_type: str, *, config: FhirConfig, producer_id: str, unit: UnitRef,
    referenced: Mapping[str, Json] | None = None,
) -> Record:
    """One FHIR resource as a record of ``info_type``.

    Raises :class:`LeftOut` (or :class:`Withheld`) or :class:`UnreadableResource`, each with
    a short reason (never content). A resource of a marking that is never disclosed is
    :class:`LeftOut`, never unreadable: the count must not reveal it.
    """
    kind = str(resource.get("resourceType"))
    mapper = _MAPPERS.get((info_type, kind))
    if mapper is None:
        raise LeftOut("other-resource-type")
    try:
        scope = _scope(resource, info_type, config.scope)
    except _Unmappable as exc:
        raise LeftOut(exc.reason) from None
    # a marking never disclosed is dropped by the adapter's rules: no label can reveal it
    security = _security(resource, config) if scope in DISCLOSABLE_SCOPES else []
    ctx = _Context(config=config, referenced=referenced or {})
    unreadable = UnreadableResource if scope in DISCLOSABLE_SCOPES else LeftOut
    try:
        fields = mapper(resource, ctx)
    except _NotARecord as exc:
        raise LeftOut(exc.reason) from None
    except _Unmappable as exc:
        raise unreadable(exc.reason) from None
    moment = record_time(resource, config.timezone)
    if moment is None:
        raise unreadable("no-time")
    values = {k: v for k, v in fields.items() if v not in (None, "", [])}
    if info_type == "bookings":
        values.setdefault("unit", unit)  # where the person is expected: the resource's unit
    values.update(  # the time in the producer's zone: the period is in local dates
        id=f"{kind}/{resource.get('id')}", time=moment, scope=scope,
        source={"producer": producer_id, "organisation": config.organisation, "unit": unit,
                "system": config.system},
    )
    if security:
        values["security"] = security
    try:
        return msgspec.convert(values, RECORD_CLASSES[info_type],  # type: ignore[no-any-return]
                               from_attributes=True)
    except msgspec.ValidationError:
        raise unreadable("invalid") from None  # the message may quote a value


def _identifier_value(ids: Any, system: str) -> str | None:
    for ident in map(_dict, _list(ids)):
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None
