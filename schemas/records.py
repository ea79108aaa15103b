"""The twelve information types of SPEC section 5, as one tagged union.

Every record shares the fields of :class:`_RecordBase`; the ``type`` tag picks the
concrete struct. Fields follow the national RIV-TA contracts where one exists
(GetCareDocumentation, GetMedicationHistory, GetAlertInformation, ...) so a producer
can map its system without losing what the national services carry.

Adding a field: give it a default, never rename or remove one (msgspec ignores
unknown fields, so old brokers keep reading new producers' replies).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal, get_args

import msgspec

__all__ = [
    "DISCLOSABLE_SCOPES",
    "INFORMATION_TYPES",
    "NOT_FOR_PERSON_TYPES",
    "OWN_VIEW_TYPES",
    "SBAR",
    "Activity",
    "ActivityStatus",
    "Alert",
    "Author",
    "Booking",
    "CareContact",
    "CareDocumentation",
    "CarePlan",
    "Code",
    "ContactPoint",
    "Diagnosis",
    "FixedContact",
    "FixedContactRole",
    "FunctionalStatus",
    "InfoType",
    "LabResult",
    "Medication",
    "OrgRef",
    "PersonRef",
    "PlanStatus",
    "Record",
    "RecordSource",
    "Scope",
    "SelfCare",
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
    "bookings",
    "fixed_contacts",
    "self_care",
]
INFORMATION_TYPES: Final[tuple[str, ...]] = get_args(InfoType)

OWN_VIEW_TYPES: Final[frozenset[str]] = frozenset({
    "care_plans", "bookings", "fixed_contacts", "self_care", "medication", "lab_results",
    "care_contacts", "diagnoses", "social_care_interventions",
})
"""The types a person may read in their own view (SPEC section 9), from producers that
offer them there (the registry's ``own_view_types``)."""

NOT_FOR_PERSON_TYPES: Final[frozenset[str]] = frozenset(INFORMATION_TYPES) - OWN_VIEW_TYPES
"""``care_documentation``, ``alerts``, ``functional_status``: never in the own view."""

Scope = Literal["hsl", "sol_elderly", "sol_disability", "lss", "sol_other"]
"""The marking (uppmärkning) of a record: the law the documentation was made under."""

DISCLOSABLE_SCOPES: Final[frozenset[str]] = frozenset(
    {"hsl", "sol_elderly", "sol_disability", "lss"})

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
    approved_for_patient: bool = True
    """RIV-TA's ``approvedForPatient``: ``False`` keeps the record out of the person's own
    view for good (SPEC section 9); staff answers carry it as the producer has it."""


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


class PersonRef(_Frozen, frozen=True, kw_only=True):
    """A named person in a plan, booking or contact: a professional (HSA-id when known) or
    someone close to the person (``role`` e.g. "närstående")."""

    name: str = ""
    hsa_id: str = ""
    role: str = ""
    organisation: OrgRef | None = None
    unit: UnitRef | None = None


class ContactPoint(_Frozen, frozen=True, kw_only=True):
    """How to reach a contact (GetCareManagers' ContactType: telecom, address, hours)."""

    system: Literal["phone", "email", "1177", "address", "other"]
    value: str
    hours: str = ""
    """When it is answered, in words, e.g. "vardagar 8–10"."""


ActivityStatus = Literal["planned", "in_progress", "done", "cancelled"]
PlanStatus = Literal["draft", "active", "completed", "cancelled"]


class Activity(_Frozen, frozen=True, kw_only=True):
    """One activity of a plan: what is done, which organisation answers for it, when.

    ``description`` is this field's name before SPEC section 9 (read into ``what`` when
    ``what`` is empty), kept so older producers' replies still decode.
    """

    what: str = ""
    responsible_org: OrgRef | None = None
    """The organisation (region, municipality, provider) that answers for the activity."""
    responsible: str = ""
    """Who carries it out, in words: a role and unit, or a relative."""
    when: str = ""
    status: ActivityStatus = "planned"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.what and self.description:
            msgspec.structs.force_setattr(self, "what", self.description)


class CarePlan(_RecordBase, frozen=True, kw_only=True, tag="care_plans"):
    """SIP (samordnad individuell plan) and other plans, as structure: the needs, who does
    what and when, who coordinates, when it is followed up.

    ``plan_type`` takes GetCarePlans' TypeOfCarePlan codes (``SIP``, ``SPLPTLRV``, ``SPU``,
    ``VP``, ``HP``, ``RP``, ``GP``, ``SVP``). ``follow_up`` is ``follow_up_date``'s name
    before SPEC section 9, read into it when it is absent.
    """

    title: str
    plan_type: str = ""
    status: PlanStatus = "active"
    needs: list[str] = []
    goals: list[str] = []
    activities: list[Activity] = []
    overall_responsible_org: OrgRef | None = None
    """The organisation with the overall responsibility (SIP: huvudansvar)."""
    coordinator: PersonRef | None = None
    participants: list[str] = []
    """Who took part in drawing up the plan, in words (the person, relatives, units)."""
    follow_up_date: dt.date | None = None
    follow_up: dt.date | None = None

    def __post_init__(self) -> None:
        if self.follow_up_date is None and self.follow_up is not None:
            msgspec.structs.force_setattr(self, "follow_up_date", self.follow_up)


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


class Booking(_RecordBase, frozen=True, kw_only=True, tag="bookings"):
    """Bokad tid (GetSubjectOfCareSchedule's Timeslot): ``time`` is when it was booked or
    last changed, ``start`` when the person is expected."""

    start: Annotated[dt.datetime, msgspec.Meta(tz=True)]
    end: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    unit: UnitRef
    """Where (healthcare_facility and its name)."""
    performer: PersonRef | None = None
    purpose: str = ""
    reason: str = ""
    status: Literal["booked", "cancelled", "fulfilled", "noshow"] = "booked"
    invitation: bool = False
    """``isInvitation``: the unit invited the person (a kallelse), not booked by them."""
    time_type: str = ""
    """E.g. "Besök", "Telefontid", "Videobesök" (timeTypeName)."""
    care_type: str = ""
    """E.g. "Sjuksköterska", "Läkare" (careTypeName)."""
    address: str = ""


FixedContactRole = Literal[
    "fast_vardkontakt", "fast_omsorgskontakt", "fast_lakarkontakt", "kontaktsjukskoterska",
    "other",
]


class FixedContact(_RecordBase, frozen=True, kw_only=True, tag="fixed_contacts"):
    """Fast vård- eller omsorgskontakt (GetCareManagers' PractitionerRole): who, in what
    role, at which unit, for which period, and how to reach them.

    ``internal_note`` (RIV-TA ``internalNotes``) is for staff: it never leaves in the own
    view. ``note`` (``externalNotes``) is meant for the person.
    """

    role: FixedContactRole
    role_display: str = ""
    """The role in the producer's words when ``role`` is ``other`` or more precise."""
    person: PersonRef
    care_team: str = ""
    unit: UnitRef | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    contact: list[ContactPoint] = []
    note: str = ""
    internal_note: str = ""


class SelfCare(_RecordBase, frozen=True, kw_only=True, tag="self_care"):
    """Egenvård: a health care measure the person (or someone for them) performs, as
    assessed by a professional (SOSFS 2009:6 / HSLF-FS 2022:...)."""

    activity: str
    instructions: str = ""
    performed_by: str = ""
    """Who performs it, in words: the person, a relative, a personal assistant."""
    assessed_by: PersonRef | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    follow_up_date: dt.date | None = None
    status: Literal["active", "ended"] = "active"


Record = (
    CareDocumentation
    | Diagnosis
    | Medication
    | Alert
    | LabResult
    | CareContact
    | CarePlan
    | SocialCareIntervention
    | FunctionalStatus
    | Booking
    | FixedContact
    | SelfCare
)


def record_type(record: Record) -> str:
    """The information type of a record: its tag."""
    return str(record.__struct_config__.tag)
