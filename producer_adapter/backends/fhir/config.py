"""The ``[backend]`` table of ``kind = "fhir"``: checked into a frozen :class:`FhirConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

from schemas.records import DISCLOSABLE_SCOPES, INFORMATION_TYPES, OrgRef, UnitRef

from ...errors import AdapterConfigError
from .._common import check_keys, named_ref, positive, zone

__all__ = [
    "CONFIDENTIALITY",
    "DEFAULT_COORDINATION_SYSTEM",
    "DEFAULT_IDENTIFIER_SYSTEM",
    "HSA_SYSTEM",
    "LABEL_ACTIONS",
    "FhirConfig",
    "ScopeRules",
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
    "legal_basis_extension", "timezone", "security_labels",
})
_SCOPE_KEYS: Final = frozenset({"default", "types", "extension", "security"})


@dataclass(frozen=True, kw_only=True)
class _Search:
    resource: str
    date: str
    """The date search parameter: the sort key, and the period's filter when ``on_server``."""
    subject: str
    """The element naming the patient."""
    on_server: bool = False
    """True only where ``date`` searches exactly the element the record's time is taken
    from (or a superset of it); otherwise the period is checked here, on the record's time,
    so that a period never drops what the same search without one returns."""


_SEARCHES: Final[Mapping[str, tuple[_Search, ...]]] = {
    "medication": (
        _Search(resource="MedicationRequest", date="authoredon", subject="subject",
                on_server=True),
        _Search(resource="MedicationStatement", date="effective", subject="subject"),
    ),
    "diagnoses": (_Search(resource="Condition", date="recorded-date", subject="subject"),),
    "alerts": (
        _Search(resource="AllergyIntolerance", date="date", subject="patient"),
        # Flag's date is its period; the record's time is period.start: a superset
        _Search(resource="Flag", date="date", subject="subject", on_server=True),
    ),
    "lab_results": (_Search(resource="Observation", date="date", subject="subject"),),
    "functional_status": (_Search(resource="Observation", date="date", subject="subject"),),
    # Encounter's date is its period; the record's time is period.start: a superset
    "care_contacts": (_Search(resource="Encounter", date="date", subject="subject",
                              on_server=True),),
    "care_plans": (_Search(resource="CarePlan", date="date", subject="subject"),),
    "care_documentation": (_Search(resource="DocumentReference", date="date",
                                   subject="subject"),),
    "social_care_interventions": (_Search(resource="ServiceRequest", date="authored",
                                          subject="subject"),),
    # the person is one of an Appointment's participants (checked in the client)
    "bookings": (_Search(resource="Appointment", date="date", subject="participant"),),
    "fixed_contacts": (_Search(resource="CareTeam", date="date", subject="subject"),),
    "self_care": (_Search(resource="CarePlan", date="date", subject="subject"),),
}
SELF_CARE_CODES: Final = frozenset({"self-care", "self_care", "egenvard", "egenvård"})
"""CarePlan category codes that make a plan a self-care agreement (egenvård): such a plan
is a ``self_care`` record, never also a ``care_plans`` one."""
LABEL_ACTIONS: Final = ("withhold", "pass")
CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_PLAIN_CONFIDENTIALITY: Final = frozenset({"U", "L", "M", "N"})
"""Confidentiality codes that restrict nothing beyond normal care: passed without a rule."""
_DEFAULT_OBSERVATION_CATEGORIES: Final[Mapping[str, str]] = {
    "laboratory": "lab_results", "survey": "functional_status",
    "functional-status": "functional_status", "vital-signs": "functional_status",
    "social-history": "functional_status",
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
    security_labels: Mapping[str, str] = field(default_factory=dict)
    """``"system|code"`` (or a bare ``"code"``) → ``withhold`` or ``pass``: what to do with a
    resource carrying that ``meta.security`` label. A label named nowhere (here or in
    ``[backend.scope] security``), other than confidentiality U/L/M/N, is withheld."""
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
        labels = table.get("security_labels", {})
        if not isinstance(labels, Mapping) or any(
                not isinstance(k, str) or not k or v not in LABEL_ACTIONS
                for k, v in labels.items()):
            raise AdapterConfigError(
                "[backend.security_labels] must map \"system|code\" (or \"code\") to "
                "\"withhold\" or \"pass\"")
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
            security_labels=dict(labels),
            timezone=zone(table.get("timezone", "Europe/Stockholm")),
        )
