"""The law for the person's own access, at the broker (SPEC section 9).

Pure functions over the schemas: no I/O, no clock (``now`` is passed in). A citizen portal
has signed the person in with an e-identification and asks on their behalf; these rules
differ from the staff rules of :mod:`broker.policy`. Each has a stable name, which is the
refusal's problem ``type`` (``urn:samsvar:problem:<rule>``) and what the access log records.

| rule                     | outcome                                                      |
|--------------------------|--------------------------------------------------------------|
| ``assurance-too-low``    | ``actor.loa`` below loa3, or ``auth_time`` older than 1 hour |
| ``type-not-for-person``  | ``care_documentation``, ``alerts``, ``functional_status``    |
| ``ombud-not-permitted``  | ``acting_as`` ``ombud``: off unless the broker names the types|
| ``actor-not-subject``    | ``self`` and ``actor.id`` is not ``sub``                     |
| ``self-under-age``       | ``self`` under 13; 13–15 only ``bookings``, ``fixed_contacts``|
| ``mandate-missing``      | ``guardian`` without a ``folkbokforing`` mandate             |
| ``guardian-child-too-old``| ``guardian`` and the child is 13 or older                   |
| ``protected-identity``   | not ``self`` and ``protected_identity``                      |

The legal sources and the defaults chosen where the law leaves room are in
``docs/own-view.md``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from schemas.identity import age_on
from schemas.messages import LOA3, LOA4, OwnQueryClaims
from schemas.records import NOT_FOR_PERSON_TYPES

__all__ = [
    "ACCEPTED_LOA",
    "MAX_SIGN_IN_AGE_S",
    "OWN_VIEW_RULES",
    "RULE_ACTOR_NOT_SUBJECT",
    "RULE_ASSURANCE_TOO_LOW",
    "RULE_GUARDIAN_CHILD_TOO_OLD",
    "RULE_MANDATE_MISSING",
    "RULE_OMBUD_NOT_PERMITTED",
    "RULE_PROTECTED_IDENTITY",
    "RULE_SELF_UNDER_AGE",
    "RULE_TYPE_NOT_FOR_PERSON",
    "TEEN_TYPES",
    "OwnDecision",
    "decide_own",
]

RULE_ASSURANCE_TOO_LOW: Final = "assurance-too-low"
RULE_TYPE_NOT_FOR_PERSON: Final = "type-not-for-person"
RULE_OMBUD_NOT_PERMITTED: Final = "ombud-not-permitted"
RULE_ACTOR_NOT_SUBJECT: Final = "actor-not-subject"
RULE_SELF_UNDER_AGE: Final = "self-under-age"
RULE_MANDATE_MISSING: Final = "mandate-missing"
RULE_GUARDIAN_CHILD_TOO_OLD: Final = "guardian-child-too-old"
RULE_PROTECTED_IDENTITY: Final = "protected-identity"

OWN_VIEW_RULES: Final[dict[str, str]] = {
    RULE_ASSURANCE_TOO_LOW: "the sign-in is below assurance level 3, or older than one hour",
    RULE_TYPE_NOT_FOR_PERSON: "an information type that is not shown in the own view",
    RULE_OMBUD_NOT_PERMITTED: "acting as an ombud is not permitted",
    RULE_ACTOR_NOT_SUBJECT: "acting as self, the signed-in person must be the subject",
    RULE_SELF_UNDER_AGE: "under 13 no own access; 13-15 only bookings and fixed contacts",
    RULE_MANDATE_MISSING: "a guardian needs a population-register mandate, an ombud one in "
                          "force",
    RULE_GUARDIAN_CHILD_TOO_OLD: "a guardian reads only for a child under 13",
    RULE_PROTECTED_IDENTITY: "with protected personal data only the person reads",
}
"""Every own-view rule and what it means (the OpenAPI document lists them)."""

ACCEPTED_LOA: Final[frozenset[str]] = frozenset({LOA3, LOA4})
MAX_SIGN_IN_AGE_S: Final = 3600
SELF_AGE: Final = 13
"""From 13 a person reads some of their own information themself."""
FULL_SELF_AGE: Final = 16
"""From 16 every own-view type."""
GUARDIAN_CHILD_AGE: Final = 13
"""A guardian reads for a child under 13 only (the safe default: docs/own-view.md)."""
TEEN_TYPES: Final[frozenset[str]] = frozenset({"bookings", "fixed_contacts"})
_CLOCK_SKEW_S: Final = 60


@dataclass(frozen=True, kw_only=True, slots=True)
class OwnDecision:
    allowed: bool
    rule: str | None = None
    reason: str = ""


def _refuse(rule: str, reason: str) -> OwnDecision:
    return OwnDecision(allowed=False, rule=rule, reason=reason)


def _iso_date(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value).date()
    except ValueError:
        return None


def decide_own(claims: OwnQueryClaims, *, actor: str, subject: str, now: float,
               today: dt.date, ombud_types: frozenset[str] = frozenset()) -> OwnDecision:
    """Whether the signed-in ``actor`` (12 digits) may read ``subject``'s own view now;
    ``ombud_types`` are the types this deployment lets an ombud read (none: off)."""
    if claims.actor.loa not in ACCEPTED_LOA:
        return _refuse(RULE_ASSURANCE_TOO_LOW,
                       "the person must sign in with an e-identification of assurance level "
                       "3 or 4 (loa3, loa4)")
    if claims.actor.auth_time < now - MAX_SIGN_IN_AGE_S:
        return _refuse(RULE_ASSURANCE_TOO_LOW,
                       "the sign-in is older than one hour: sign the person in again")
    if claims.actor.auth_time > now + _CLOCK_SKEW_S:
        return _refuse(RULE_ASSURANCE_TOO_LOW,
                       "auth_time lies in the future: send when the person signed in")
    barred = sorted(set(claims.types) & NOT_FOR_PERSON_TYPES)
    if barred:
        return _refuse(RULE_TYPE_NOT_FOR_PERSON,
                       f"{', '.join(barred)} is not shown in the person's own view; ask for "
                       "care_plans, bookings, fixed_contacts, self_care, medication, "
                       "lab_results, care_contacts, diagnoses or social_care_interventions")
    match claims.acting_as:
        case "ombud":
            if not ombud_types or not set(claims.types) <= ombud_types:
                allowed = ", ".join(sorted(ombud_types))
                return _refuse(RULE_OMBUD_NOT_PERMITTED,
                               "acting as an ombud is not permitted by this broker; the person "
                               "signs in themself" if not allowed else
                               f"an ombud may read only {allowed} here")
            mandate = claims.mandate
            valid_to = _iso_date(mandate.valid_to) if mandate is not None else None
            if (mandate is None or not mandate.source or not mandate.id or valid_to is None
                    or valid_to < today):
                return _refuse(RULE_MANDATE_MISSING,
                               "an ombud needs a mandate {source, id, valid_to} in force today")
            if actor == subject:
                return _refuse(RULE_ACTOR_NOT_SUBJECT,
                               "an ombud reads for another person, not for themself: use self")
        case "self":
            if actor != subject:
                return _refuse(RULE_ACTOR_NOT_SUBJECT,
                               "acting as self, actor.id must be the subject (sub)")
            age = age_on(subject, today)
            if age < SELF_AGE:
                return _refuse(RULE_SELF_UNDER_AGE,
                               "a person under 13 has no own access; a guardian may read")
            if age < FULL_SELF_AGE and not set(claims.types) <= TEEN_TYPES:
                return _refuse(RULE_SELF_UNDER_AGE,
                               "from 13 to 15 a person reads only bookings and fixed_contacts "
                               "themself; ask for those types")
        case "guardian":
            mandate = claims.mandate
            if (mandate is None or mandate.source != "folkbokforing"
                    or _iso_date(mandate.checked_at) is None):
                return _refuse(RULE_MANDATE_MISSING,
                               "a guardian needs mandate {source: \"folkbokforing\", "
                               "checked_at: <ISO date>} from the population register")
            if age_on(subject, today) >= GUARDIAN_CHILD_AGE:
                return _refuse(RULE_GUARDIAN_CHILD_TOO_OLD,
                               "a guardian reads the own view only for a child under 13")
            if actor == subject:
                return _refuse(RULE_ACTOR_NOT_SUBJECT,
                               "a guardian reads for a child, not for themself: use self")
    if claims.acting_as != "self" and claims.protected_identity:
        return _refuse(RULE_PROTECTED_IDENTITY,
                       "the person or the actor has protected personal data: only the person "
                       "may read their own view")
    return OwnDecision(allowed=True)
