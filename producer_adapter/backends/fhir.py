"""A record backend over a FHIR R4 REST server: search by the person's identifier, map back.

::

    [backend]
    kind = "fhir"
    base_url = "https://fhir.region.example/r4"
    organisation = { id = "SE2321000016-0001", name = "Region Exempel" }
    system = "Journalsystemet"              # source.system (optional)
    token_file = "secrets/fhir-token"       # optional bearer token (or token_env = "FHIR_TOKEN")
    ca = "certs/fhir-ca.pem"                # optional: the server's CA ...
    cert = "certs/adapter.pem"              # ... and a client certificate with its key
    key = "certs/adapter.key"
    identifier_system = "http://electronichealth.se/identifier/personnummer"       # default
    coordination_identifier_system = "http://electronichealth.se/identifier/samordningsnummer"
    unit_identifier_system = "urn:oid:1.2.752.29.4.19"   # HSA-id, the default
    unit = { id = "SE2321000016-0002", name = "…" }       # optional: when a resource names none
    timeout_s = 5
    max_records_per_type = 500
    page_size = 100
    types = ["medication", "diagnoses"]     # optional: the types this server holds (default all)
    timezone = "Europe/Stockholm"           # for dates and times without an offset (default)

    [backend.scope]                         # the marking (uppmärkning) of each record
    default = "hsl"
    types = { social_care_interventions = "sol_elderly" }
    security = { "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY" = "hsl" }
    extension = "https://example.se/fhir/StructureDefinition/scope"

One question is a ``Patient?identifier=<system>|<12 digits>`` search (the coordination
system for a samordningsnummer), then one search per information type with
``patient=Patient/<id>``, ``_count``, ``_sort`` and the period as ``ge``/``le`` of the
type's date parameter; ``next`` links are followed (on the same server only) until the
type has more than ``max_records_per_type`` matches (then the answer says truncated).

Type → resource, its date search parameter, and the element that gives the record's time:

* ``medication`` → MedicationRequest, ``authoredon``, authoredOn
* ``diagnoses`` → Condition, ``recorded-date``, recordedDate (else onset)
* ``alerts`` → AllergyIntolerance, ``date``, recordedDate (else onset)
* ``lab_results`` → Observation of category ``laboratory``, ``date``, effective[x] (else issued)
* ``functional_status`` → Observation of category ``survey`` or ``functional-status``, likewise
* ``care_contacts`` → Encounter, ``date``, period.start
* ``care_plans`` → CarePlan, ``date``, created (else period.start)
* ``care_documentation`` → DocumentReference, ``date``, date (else context.period.start)
* ``social_care_interventions`` → ServiceRequest, ``authored``, authoredOn (else
  occurrencePeriod.start)

**Scope.** The first that applies: the resource's (or its ``meta``'s) extension
``[backend.scope] extension`` whose ``valueCode`` is a scope (any other value leaves the
resource out); the first of its ``meta.security`` labels listed in ``security``
(``"system|code"``, or a bare ``"code"`` for any system); the type's default in ``types``;
``default``.

**Unit.** Blocks and excluded units are HSA-ids, so a unit is only ever taken from an
identifier in ``unit_identifier_system``: on an Organization reference (``identifier``), a
contained Organization or one read from the server (``Organization/<id>``), found in the
resource's own organisation elements (``serviceProvider``, ``custodian``, ``performer``,
``requester``, ``author``, …), else in the serviceProvider of its encounter, else
``[backend] unit``. A resource with none is left out.

A resource that cannot be mapped (no time, no unit, entered-in-error, refuted, a bad
scope, another patient's) is left out and counted in the adapter's log by resource type
and reason, never with its content. An HTTP error (with or without an OperationOutcome),
a timeout or a broken connection is a :class:`BackendError` whose reason carries only the
HTTP status and the OperationOutcome's issue codes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import os
import re
import ssl
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp
import msgspec
import structlog
from yarl import URL

from schemas.messages import Period
from schemas.records import DISCLOSABLE_SCOPES, INFORMATION_TYPES, OrgRef, Record, UnitRef

from ..errors import AdapterConfigError, BackendError
from ._common import RECORD_CLASSES, check_keys, named_ref, positive, zone
from .base import BackendResult, RecordBackend, in_period

__all__ = [
    "DEFAULT_COORDINATION_SYSTEM",
    "DEFAULT_IDENTIFIER_SYSTEM",
    "HSA_SYSTEM",
    "FhirBackend",
    "FhirConfig",
    "map_resource",
]

DEFAULT_IDENTIFIER_SYSTEM: Final = "http://electronichealth.se/identifier/personnummer"
DEFAULT_COORDINATION_SYSTEM: Final = "http://electronichealth.se/identifier/samordningsnummer"
HSA_SYSTEM: Final = "urn:oid:1.2.752.29.4.19"
_SCOPES: Final = frozenset({*DISCLOSABLE_SCOPES, "sol_other"})
_KEYS: Final = frozenset({
    "kind", "base_url", "organisation", "system", "token_file", "token_env", "ca", "cert",
    "key", "identifier_system", "coordination_identifier_system", "unit_identifier_system",
    "unit", "unit_extension", "timeout_s", "max_records_per_type", "page_size", "types",
    "sort", "scope", "observation_categories", "service_request_category",
    "legal_basis_extension", "timezone",
})
_SCOPE_KEYS: Final = frozenset({"default", "types", "extension", "security"})


@dataclass(frozen=True, kw_only=True)
class _Search:
    resource: str
    date: str
    subject: str
    """The element naming the patient."""


_SEARCHES: Final[Mapping[str, _Search]] = {
    "medication": _Search(resource="MedicationRequest", date="authoredon", subject="subject"),
    "diagnoses": _Search(resource="Condition", date="recorded-date", subject="subject"),
    "alerts": _Search(resource="AllergyIntolerance", date="date", subject="patient"),
    "lab_results": _Search(resource="Observation", date="date", subject="subject"),
    "functional_status": _Search(resource="Observation", date="date", subject="subject"),
    "care_contacts": _Search(resource="Encounter", date="date", subject="subject"),
    "care_plans": _Search(resource="CarePlan", date="date", subject="subject"),
    "care_documentation": _Search(resource="DocumentReference", date="date",
                                  subject="subject"),
    "social_care_interventions": _Search(resource="ServiceRequest", date="authored",
                                         subject="subject"),
}
_DEFAULT_OBSERVATION_CATEGORIES: Final[Mapping[str, str]] = {
    "laboratory": "lab_results", "survey": "functional_status",
    "functional-status": "functional_status",
}


# -- configuration -----------------------------------------------------------------------

def _str(table: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise AdapterConfigError(f"[backend] {key} must be a non-empty string")
    return value


def _scope_value(value: Any, where: str) -> str:
    if value not in _SCOPES:
        raise AdapterConfigError(f"{where} must be one of {', '.join(sorted(_SCOPES))}, "
                                 f"not {value!r}")
    return str(value)


@dataclass(frozen=True, kw_only=True)
class ScopeRules:
    """How a resource's marking is found: extension, security label, type, default."""

    default: str
    types: Mapping[str, str] = field(default_factory=dict)
    extension: str | None = None
    security: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: Any) -> ScopeRules:
        if not isinstance(table, Mapping):
            raise AdapterConfigError(
                "[backend.scope] is required: default = \"hsl\" (or another scope), and "
                "optionally types, security and extension")
        check_keys(table, _SCOPE_KEYS, "[backend.scope]")
        default = _scope_value(table.get("default"), "[backend.scope] default")
        types = table.get("types", {})
        if not isinstance(types, Mapping):
            raise AdapterConfigError("[backend.scope] types must be a table: type = scope")
        for t, s in types.items():
            if t not in INFORMATION_TYPES:
                raise AdapterConfigError(f"[backend.scope] types: {t!r} is no information type")
            _scope_value(s, f"[backend.scope] types.{t}")
        security = table.get("security", {})
        if not isinstance(security, Mapping):
            raise AdapterConfigError(
                "[backend.scope] security must be a table: \"system|code\" = scope")
        for label, s in security.items():
            _scope_value(s, f"[backend.scope] security.{label!r}")
        extension = table.get("extension")
        if extension is not None and (not isinstance(extension, str) or not extension):
            raise AdapterConfigError("[backend.scope] extension must be a URL")
        return cls(default=default, types=dict(types), extension=extension,
                   security=dict(security))


@dataclass(frozen=True, kw_only=True)
class FhirConfig:
    """The ``[backend]`` table of ``kind = "fhir"``, checked (files not yet read)."""

    base_url: str
    organisation: OrgRef
    scope: ScopeRules
    system: str = ""
    token_file: str | None = None
    token_env: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM
    coordination_identifier_system: str = DEFAULT_COORDINATION_SYSTEM
    unit_identifier_system: str = HSA_SYSTEM
    unit: UnitRef | None = None
    unit_extension: str | None = None
    timeout_s: float = 5.0
    max_records_per_type: int = 500
    page_size: int = 100
    types: frozenset[str] = frozenset(INFORMATION_TYPES)
    sort: bool = True
    observation_categories: Mapping[str, str] = field(
        default_factory=lambda: dict(_DEFAULT_OBSERVATION_CATEGORIES))
    service_request_category: str | None = None
    legal_basis_extension: str | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Stockholm"))

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> FhirConfig:
        """Check a ``[backend]`` table; :class:`AdapterConfigError` names the key."""
        check_keys(table, _KEYS)
        base_url = _str(table, "base_url")
        if base_url is None or not base_url.startswith(("https://", "http://")):
            raise AdapterConfigError("[backend] base_url must be the FHIR server's http(s) URL")
        organisation = named_ref(table.get("organisation"), "organisation", OrgRef)
        if organisation is None:
            raise AdapterConfigError(
                "[backend] organisation = { id = \"…\", name = \"…\" } is required: the care "
                "giver whose records the server holds")
        if table.get("token_file") is not None and table.get("token_env") is not None:
            raise AdapterConfigError("[backend] give token_file or token_env, not both")
        if (table.get("cert") is None) != (table.get("key") is None):
            raise AdapterConfigError("[backend] a client certificate needs both cert and key")
        types = table.get("types", list(INFORMATION_TYPES))
        if not isinstance(types, list) or not types or any(
                t not in INFORMATION_TYPES for t in types):
            raise AdapterConfigError(
                f"[backend] types must be a list of information types "
                f"({', '.join(INFORMATION_TYPES)})")
        categories = table.get("observation_categories", _DEFAULT_OBSERVATION_CATEGORIES)
        if not isinstance(categories, Mapping) or any(
                t not in ("lab_results", "functional_status") for t in categories.values()):
            raise AdapterConfigError(
                "[backend] observation_categories must map Observation.category codes to "
                "\"lab_results\" or \"functional_status\"")
        sort = table.get("sort", True)
        if not isinstance(sort, bool):
            raise AdapterConfigError("[backend] sort must be true or false")
        system = table.get("system", "")
        if not isinstance(system, str):
            raise AdapterConfigError("[backend] system must be a string")
        return cls(
            base_url=base_url.rstrip("/"), organisation=organisation,
            scope=ScopeRules.from_table(table.get("scope")), system=system,
            token_file=_str(table, "token_file"), token_env=_str(table, "token_env"),
            ca=_str(table, "ca"), cert=_str(table, "cert"), key=_str(table, "key"),
            identifier_system=_str(table, "identifier_system", DEFAULT_IDENTIFIER_SYSTEM)
            or DEFAULT_IDENTIFIER_SYSTEM,
            coordination_identifier_system=_str(
                table, "coordination_identifier_system", DEFAULT_COORDINATION_SYSTEM)
            or DEFAULT_COORDINATION_SYSTEM,
            unit_identifier_system=_str(table, "unit_identifier_system", HSA_SYSTEM)
            or HSA_SYSTEM,
            unit=named_ref(table.get("unit"), "unit", UnitRef),
            unit_extension=_str(table, "unit_extension"),
            timeout_s=float(positive(table, "timeout_s", 5.0, integer=False)),
            max_records_per_type=positive(table, "max_records_per_type", 500, integer=True),
            page_size=positive(table, "page_size", 100, integer=True),
            types=frozenset(types), sort=sort, observation_categories=dict(categories),
            service_request_category=_str(table, "service_request_category"),
            legal_basis_extension=_str(table, "legal_basis_extension"),
            timezone=zone(table.get("timezone", "Europe/Stockholm")),
        )


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


# -- the backend -------------------------------------------------------------------------

_PATIENT_REF: Final = re.compile(r"(?:^|/)Patient/([^/]+)(?:/_history/[^/]+)?$")
_ORG_REF: Final = re.compile(r"(?:^|/)(Organization|Encounter)/([^/]+?)(?:/_history/[^/]+)?$")


def _identifier_value(ids: Any, system: str) -> str | None:
    for ident in map(_dict, _list(ids)):
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


@dataclass
class _Fetch:
    """The state of one question: resources read by reference, and what was left out."""

    cache: dict[tuple[str, str], Json | None] = field(default_factory=dict)
    left_out: Counter[str] = field(default_factory=Counter)


class FhirBackend:
    """Reads one person's records from a FHIR R4 server; see the module docstring."""

    def __init__(self, config: FhirConfig, producer_id: str, *,
                 session: aiohttp.ClientSession, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self.config = config
        self.producer_id = producer_id
        self._session = session
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._origin = URL(config.base_url).origin()
        self._log = structlog.get_logger("samsvar.adapter.backend").bind(
            backend="fhir", producer=producer_id)

    # -- the factory -----------------------------------------------------------------

    @classmethod
    def check_config(cls, table: Mapping[str, Any]) -> None:
        """Check the table (no files read, no server asked)."""
        FhirConfig.from_table(table)

    @classmethod
    async def open(cls, table: Mapping[str, Any], *, base: Path,
                   producer_id: str) -> RecordBackend:
        """Read the token and certificates and make the HTTP session (no request yet)."""
        config = FhirConfig.from_table(table)
        headers = {"Accept": "application/fhir+json", "User-Agent": "samsvar-adapter"}
        token = cls._token(config, base)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        context = cls._ssl_context(config, base)
        session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            raise_for_status=False)
        return cls(config, producer_id, session=session, ssl_context=context)

    @staticmethod
    def _token(config: FhirConfig, base: Path) -> str | None:
        if config.token_env is not None:
            token = os.environ.get(config.token_env, "").strip()
            if not token:
                raise AdapterConfigError(
                    f"[backend] token_env: the environment variable {config.token_env} "
                    "is not set")
            return token
        if config.token_file is not None:
            path = base / config.token_file
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AdapterConfigError(
                    f"[backend] token_file: cannot read {path}: {exc.strerror}") from exc
            if not token:
                raise AdapterConfigError(f"[backend] token_file: {path} is empty")
            return token
        return None

    @staticmethod
    def _ssl_context(config: FhirConfig, base: Path) -> ssl.SSLContext | None:
        if config.ca is None and config.cert is None:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(base / config.ca) if config.ca else None)
            if config.cert is not None and config.key is not None:
                context.load_cert_chain(base / config.cert, base / config.key)
        except (OSError, ssl.SSLError) as exc:
            raise AdapterConfigError(f"[backend] ca/cert/key: {exc}") from exc
        return context

    # -- the port ----------------------------------------------------------------------

    async def fetch(
        self, subject: str, types: frozenset[str], period: Period | None
    ) -> BackendResult:
        wanted = [t for t in INFORMATION_TYPES if t in types and t in self.config.types]
        if not wanted:
            return BackendResult()
        state = _Fetch()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                patients = await self._patients(subject)
                if not patients:
                    return BackendResult()
                records: list[Record] = []
                truncated = False
                for info_type in wanted:
                    found, cut = await self._search(info_type, patients, period, state)
                    truncated |= cut
                    for resource in found:
                        record = await self._record(resource, info_type, patients, state)
                        if record is not None and in_period(record, period):
                            records.append(record)
        except TimeoutError:
            self._log.error("FHIR server timeout", timeout_s=self.config.timeout_s)
            raise BackendError("FHIR server timeout") from None
        finally:
            if state.left_out:
                self._log.warning("FHIR resources not mapped: left out",
                                  left_out=dict(sorted(state.left_out.items())))
        return BackendResult(records=records, truncated=truncated)

    async def aclose(self) -> None:
        await self._session.close()

    # -- searching ---------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.config.base_url}/{path}"

    async def _get(self, url: str | URL, params: list[tuple[str, str]] | None = None, *,
                   what: str, missing_ok: bool = False) -> Json | None:
        try:
            async with self._session.get(url, params=params, ssl=self._ssl,
                                         allow_redirects=False) as resp:
                body = await resp.read()
                status = resp.status
        except aiohttp.ClientError as exc:
            self._log.error("FHIR server unreachable", resource=what, error=type(exc).__name__)
            raise BackendError("FHIR server unreachable") from exc
        if missing_ok and status in (404, 410):
            return None
        try:
            doc = msgspec.json.decode(body) if body else None
        except msgspec.DecodeError:
            doc = None
        if status >= 300:
            codes = sorted({str(_dict(i).get("code")) for i in _list(_dict(doc).get("issue"))
                            if _dict(i).get("code")}) if _dict(doc).get(
                "resourceType") == "OperationOutcome" else []
            self._log.error("FHIR server refused", resource=what, status=status, issues=codes)
            detail = f" ({', '.join(codes)})" if codes else ""
            raise BackendError(f"FHIR server: HTTP {status}{detail}")
        if not isinstance(doc, dict) or "resourceType" not in doc:
            self._log.error("FHIR server sent no FHIR resource", resource=what, status=status)
            raise BackendError("FHIR server sent no FHIR resource")
        return doc

    async def _bundle_pages(self, resource: str, params: list[tuple[str, str]],
                            state: _Fetch) -> AsyncGenerator[list[Json], None]:
        """Each page's matches (an async generator), following ``next`` links."""
        url: str | URL = self._url(resource)
        query: list[tuple[str, str]] | None = params
        while True:
            doc = await self._get(url, query, what=resource)
            assert doc is not None
            if doc.get("resourceType") != "Bundle":
                self._log.error("FHIR server sent no Bundle", resource=resource)
                raise BackendError("FHIR server sent no Bundle")
            matches = []
            for entry in map(_dict, _list(doc.get("entry"))):
                found = _dict(entry.get("resource"))
                mode = _dict(entry.get("search")).get("mode", "match")
                if mode == "include" and found.get("id"):
                    state.cache[(str(found.get("resourceType")), str(found["id"]))] = found
                elif mode == "match" and found.get("resourceType") == resource:
                    matches.append(found)
            yield matches
            link = next((str(x["url"]) for x in map(_dict, _list(doc.get("link")))
                         if x.get("relation") == "next" and x.get("url")), None)
            if link is None:
                return
            following = URL(self.config.base_url + "/").join(URL(link))
            if following.origin() != self._origin:
                self._log.error("FHIR next link leaves the server: not followed",
                                resource=resource)
                raise BackendError("FHIR server: next link to another server")
            url, query = following, None

    async def _patients(self, subject: str) -> set[str]:
        day = int(subject[6:8])
        system = (self.config.coordination_identifier_system if day > 60
                  else self.config.identifier_system)
        params = [("identifier", f"{system}|{subject}")]
        ids: set[str] = set()
        async for page in self._bundle_pages("Patient", params, _Fetch()):
            for patient in page:
                if _identifier_value(patient.get("identifier"), system) == subject:
                    ids.add(str(patient.get("id")))
        return ids

    def _search_params(self, info_type: str, patient: str,
                       period: Period | None) -> list[tuple[str, str]]:
        search = _SEARCHES[info_type]
        params = [("patient", f"Patient/{patient}"), ("_count", str(self.config.page_size))]
        if search.resource == "Observation":
            codes = [c for c, t in self.config.observation_categories.items() if t == info_type]
            if codes:
                params.append(("category", ",".join(codes)))
        if info_type == "social_care_interventions" and self.config.service_request_category:
            params.append(("category", self.config.service_request_category))
        if period is not None and period.from_ is not None:
            params.append((search.date, f"ge{period.from_.isoformat()}"))
        if period is not None and period.to is not None:
            params.append((search.date, f"le{period.to.isoformat()}"))
        if self.config.sort:
            params.append(("_sort", f"-{search.date}"))
        return params

    def _is_type(self, resource: Json, info_type: str) -> bool:
        if _SEARCHES[info_type].resource != "Observation":
            return True
        categories = {code.split("|")[-1] for c in _list(resource.get("category"))
                      for code in _coded(c)}
        return any(self.config.observation_categories.get(c) == info_type for c in categories)

    async def _search(self, info_type: str, patients: set[str], period: Period | None,
                      state: _Fetch) -> tuple[list[Json], bool]:
        limit = self.config.max_records_per_type
        found: list[Json] = []
        for patient in sorted(patients):
            params = self._search_params(info_type, patient, period)
            pages = self._bundle_pages(_SEARCHES[info_type].resource, params, state)
            async for page in pages:
                found.extend(r for r in page if self._is_type(r, info_type))
                if len(found) > limit:
                    await pages.aclose()
                    return found[:limit], True
        return found, False

    # -- mapping -----------------------------------------------------------------------

    async def _record(self, resource: Json, info_type: str, patients: set[str],
                      state: _Fetch) -> Record | None:
        kind = str(resource.get("resourceType"))
        subject = str(_dict(resource.get(_SEARCHES[info_type].subject)).get("reference", ""))
        match = _PATIENT_REF.search(subject)
        if match is None or match.group(1) not in patients:
            state.left_out[f"{kind}:other-patient"] += 1
            return None
        unit = await self._unit(resource, state)
        if unit is None:
            state.left_out[f"{kind}:no-unit"] += 1
            return None
        try:
            return map_resource(resource, info_type, config=self.config,
                                producer_id=self.producer_id, unit=unit)
        except ValueError as exc:
            state.left_out[f"{kind}:{exc}"] += 1
            return None

    async def _read(self, kind: str, rid: str, state: _Fetch) -> Json | None:
        key = (kind, rid)
        if key not in state.cache:
            state.cache[key] = await self._get(self._url(f"{kind}/{rid}"), what=kind,
                                               missing_ok=True)
        return state.cache[key]

    def _unit_of_org(self, org: Json | None, display: str = "") -> UnitRef | None:
        if org is None or org.get("resourceType") != "Organization":
            return None
        hsa = _identifier_value(org.get("identifier"), self.config.unit_identifier_system)
        if hsa is None:
            return None
        return UnitRef(id=hsa, name=str(org.get("name") or display or hsa))

    async def _follow(self, resource: Json, ref: Any, state: _Fetch, *,
                      kinds: Collection[str]) -> Json | None:
        """The resource ``ref`` points to (contained, or on this server), if of ``kinds``."""
        contained = _contained(resource, ref)
        if contained is not None:
            return contained if contained.get("resourceType") in kinds else None
        reference = str(_dict(ref).get("reference", ""))
        match = _ORG_REF.search(reference)
        if match is None or match.group(1) not in kinds:
            return None
        if "://" in reference:
            target = URL(reference)
            if target.origin() != self._origin:
                return None  # another server: the token is not sent there
        return await self._read(match.group(1), match.group(2), state)

    async def _unit_of_ref(self, resource: Json, ref: Any, state: _Fetch) -> UnitRef | None:
        ref = _dict(ref)
        hsa = _identifier_value(ref.get("identifier"), self.config.unit_identifier_system)
        if hsa is not None:
            return UnitRef(id=hsa, name=_display(ref) or hsa)
        found = await self._follow(resource, ref, state, kinds=("Organization",))
        return self._unit_of_org(found, _display(ref))

    async def _unit(self, resource: Json, state: _Fetch) -> UnitRef | None:
        ext = _extension(resource, self.config.unit_extension)
        if ext is not None:
            if ext.get("valueIdentifier"):
                ident = _dict(ext["valueIdentifier"])
                if ident.get("system") == self.config.unit_identifier_system and ident.get(
                        "value"):
                    return UnitRef(id=str(ident["value"]), name=str(ident["value"]))
            unit = await self._unit_of_ref(resource, ext.get("valueReference"), state)
            if unit is not None:
                return unit
        kind = str(resource.get("resourceType"))
        for element in _UNIT_ELEMENTS.get(kind, ()):
            for ref in _list(resource.get(element)):
                unit = await self._unit_of_ref(resource, ref, state)
                if unit is not None:
                    return unit
        encounters = _list(resource.get("encounter")) or _list(
            _dict(resource.get("context")).get("encounter"))
        for ref in encounters:
            encounter = await self._follow(resource, ref, state, kinds=("Encounter",))
            if encounter is not None:
                unit = await self._unit_of_ref(encounter, encounter.get("serviceProvider"),
                                               state)
                if unit is not None:
                    return unit
        return self.config.unit
