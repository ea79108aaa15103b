"""The nine information types of SPEC section 5, as one tagged union.

Every record shares the fields of :class:`_RecordBase`; the ``type`` tag picks the
concrete struct. Fields follow the national RIV-TA contracts where one exists
(GetCareDocumentation, GetMedicationHistory, GetAlertInformation, ...) so a producer
can map its system without losing what the national services carry.

Adding a field: give it a default, never rename or remove one (msgspec ignores
unknown fields, so old brokers keep reading new producers' replies).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal, Union, get_args

import msgspec

__all__ = [
    "DISCLOSABLE_SCOPES",
    "INFORMATION_TYPES",
    "SBAR",
    "Activity",
    "Alert",
    "Author",
    "CareContact",
    "CareDocumentation",
    "CarePlan",
    "Code",
    "Diagnosis",
    "FunctionalStatus",
    "InfoType",
    "LabResult",
    "Medication",
    "OrgRef",
    "Record",
    "RecordSource",
    "Scope",
    "SocialCareIntervention",
    "UnitRef",
    "Verification",
    "record_type",
]

InfoType = Literal[
    "care_documentation",
    "diagnoses",
    "medication",
    "alerts",
    "lab_results",
    "care_contacts",
    "care_plans",
    "social_care_interventions",
    "functional_status",
]
INFORMATION_TYPES: Final[tuple[str, ...]] = get_args(InfoType)

Scope = Literal["hsl", "sol_elderly", "sol_disability", "lss", "sol_other"]
"""The marking (uppmärkning) of a record: the law the documentation was made under."""

DISCLOSABLE_SCOPES: Final[frozenset[str]] = frozenset({"hsl", "sol_elderly", "sol_disability", "lss"})

Verification = Literal["confirmed", "unconfirmed", "provisional", "differential", "refuted"]
"""How certain a finding is (FHIR's ``verificationStatus``): ``refuted`` is a negation."""


class _Frozen(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Untracked by the garbage collector, as :class:`schemas.messages._Msg` says why."""


class OrgRef(_Frozen, frozen=True, kw_only=True):
    id: str
    name: str


class UnitRef(_Frozen, frozen=True, kw_only=True):
    id: str
    name: str


class RecordSource(_Frozen, frozen=True, kw_only=True):
    """Where a record comes from. The broker overwrites ``producer`` with the verified sender."""

    producer: str
    organisation: OrgRef
    unit: UnitRef
    system: str = ""


class Author(_Frozen, frozen=True, kw_only=True):
    name: str
    role: str


class Code(_Frozen, frozen=True, kw_only=True):
    system: str
    code: str
    display: str = ""


class _RecordBase(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", gc=False
):
    id: str
    source: RecordSource
    time: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    author: Author | None = None
    scope: Scope
    codes: list[Code] = []
    care_process: str | None = None
    """Care process (vårdprocess) id, the third level at which a person can block."""
    blocked: bool = False
    """True only on records released by an unblock ``read`` step."""
    security: list[Code] = []
    """The source's security labels (e.g. confidentiality ``R``), kept on a record the
    producer's configuration lets pass with its labels."""


class SBAR(_Frozen, frozen=True, kw_only=True):
    situation: str
    background: str
    assessment: str
    recommendation: str


class CareDocumentation(_RecordBase, frozen=True, kw_only=True, tag="care_documentation"):
    """Vårddokumentation: a note, optionally structured as SBAR."""

    title: str
    note_type: str = ""
    text: str = ""
    sbar: SBAR | None = None


class Diagnosis(_RecordBase, frozen=True, kw_only=True, tag="diagnoses"):
    """A diagnosis, coded in ICD-10-SE (in ``codes``)."""

    display: str
    primary: bool = False
    status: Literal["active", "resolved"] = "active"
    onset: dt.date | None = None
    clinical_status: Literal[
        "active", "recurrence", "relapse", "inactive", "remission", "resolved"] | None = None
    """The source's exact clinical status, where it says more than ``status``."""
    verification: Verification | None = None
    """None: the source does not say (read as confirmed by older clients)."""


class Medication(_RecordBase, frozen=True, kw_only=True, tag="medication"):
    """Läkemedel och ordination: ATC in ``codes``."""

    drug: str
    dose: str = ""
    route: str = ""
    schedule: str = ""
    purpose: str = ""
    start: dt.date | None = None
    stop: dt.date | None = None
    status: Literal["active", "paused", "stopped"] = "active"
    administered_by: str = ""
    """Who gives the drug, e.g. municipal home health care (hemsjukvård)."""


class Alert(_RecordBase, frozen=True, kw_only=True, tag="alerts"):
    """Uppmärksamhetsinformation: allergies, risks, treatment limits."""

    category: Literal["allergy", "risk", "treatment_limit", "infection", "other"]
    description: str
    severity: Literal["low", "moderate", "high", "life_threatening"] | None = None
    substance: str = ""
    valid_until: dt.date | None = None
    clinical_status: Literal["active", "inactive", "resolved"] | None = None
    """None: the source does not say; ``inactive``/``resolved``: no longer a current alert."""
    verification: Verification | None = None
    """None: the source does not say."""


class LabResult(_RecordBase, frozen=True, kw_only=True, tag="lab_results"):
    """Laboratoriesvar: NPU code in ``codes``."""

    analysis: str
    value: str
    unit: str = ""
    reference_range: str = ""
    abnormal: bool = False


class CareContact(_RecordBase, frozen=True, kw_only=True, tag="care_contacts"):
    """Vårdkontakt."""

    contact_type: str
    reason: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None


class Activity(_Frozen, frozen=True, kw_only=True):
    description: str
    responsible: str
    when: str = ""


class CarePlan(_RecordBase, frozen=True, kw_only=True, tag="care_plans"):
    """SIP (samordnad individuell plan) and other plans."""

    title: str
    plan_type: str = ""
    goals: list[str] = []
    activities: list[Activity] = []
    follow_up: dt.date | None = None
    participants: list[str] = []


class SocialCareIntervention(
    _RecordBase, frozen=True, kw_only=True, tag="social_care_interventions"
):
    """Insats: handläggning, beslut, verkställighet."""

    intervention: str
    legal_basis: str
    phase: Literal["handlaggning", "beslut", "verkstallighet"]
    decision_date: dt.date | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    extent: str = ""
    description: str = ""


class FunctionalStatus(_RecordBase, frozen=True, kw_only=True, tag="functional_status"):
    """Funktionstillstånd / ADL."""

    domain: str
    assessment: str
    description: str = ""


Record = Union[
    CareDocumentation,
    Diagnosis,
    Medication,
    Alert,
    LabResult,
    CareContact,
    CarePlan,
    SocialCareIntervention,
    FunctionalStatus,
]


def record_type(record: Record) -> str:
    """The information type of a record: its tag."""
    return str(record.__struct_config__.tag)
