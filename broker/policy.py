"""Stage 2 of the law at the broker: who may ask, on what basis (Lag 2022:913, SPEC section 6).

Pure functions over the schemas: no I/O, no clock (the day of the query is passed in).
Each rule has a stable name; a refusal's problem ``type`` is ``urn:samsvar:problem:<rule>``
and the access log records the same name.

| rule                                   | outcome                                             |
|----------------------------------------|-----------------------------------------------------|
| ``relation-required``                  | ``relation`` must be true (a current care relation) |
| ``emergency-care-giver-only``          | nödsituation: only a vårdgivare                     |
| ``child-under-18``                     | basis ``child`` only if the person is under 18      |
| ``unblock-basis``                      | lifting a block needs consent, or an emergency      |
| ``unblock-emergency-care-giver-only``  | an omsorgsgivare never lifts a block in emergency   |
| ``unblock-read-names-producers``       | step ``read`` must name the producers to read       |

``lacks_capacity`` is allowed and flagged so the log shows it. The participant kind comes
from the registry, never from the token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from schemas.identity import age_on
from schemas.messages import ParticipantKind, QueryClaims

__all__ = [
    "ALLOWED",
    "RULE_CHILD_UNDER_18",
    "RULE_EMERGENCY_CARE_GIVER_ONLY",
    "RULE_RELATION_REQUIRED",
    "RULE_UNBLOCK_BASIS",
    "RULE_UNBLOCK_EMERGENCY_CARE_GIVER_ONLY",
    "RULE_UNBLOCK_READ_NAMES_PRODUCERS",
    "Decision",
    "decide",
]

RULE_RELATION_REQUIRED: Final = "relation-required"
RULE_EMERGENCY_CARE_GIVER_ONLY: Final = "emergency-care-giver-only"
RULE_CHILD_UNDER_18: Final = "child-under-18"
RULE_UNBLOCK_BASIS: Final = "unblock-basis"
RULE_UNBLOCK_EMERGENCY_CARE_GIVER_ONLY: Final = "unblock-emergency-care-giver-only"
RULE_UNBLOCK_READ_NAMES_PRODUCERS: Final = "unblock-read-names-producers"

ADULT_AGE: Final = 18

_NO_FLAGS: Final[frozenset[str]] = frozenset()
_LACKS_CAPACITY: Final = frozenset({"lacks_capacity"})
"""A decision's flags, shared by every query (one is held per query in flight)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The outcome of stage 2: allowed, or refused by the named rule."""

    allowed: bool
    rule: str | None = None
    reason: str = ""
    flags: frozenset[str] = frozenset()


ALLOWED: Final = Decision(allowed=True, flags=_NO_FLAGS)
_ALLOWED_LACKS_CAPACITY: Final = Decision(allowed=True, flags=_LACKS_CAPACITY)
"""The two decisions that allow, shared by every query like their flags."""


def _refuse(rule: str, reason: str) -> Decision:
    return Decision(allowed=False, rule=rule, reason=reason)


def decide(claims: QueryClaims, *, kind: ParticipantKind, subject: str, today: dt.date) -> Decision:
    """Whether a consumer of ``kind`` may ask this question about ``subject`` on ``today``."""
    if claims.relation is not True:
        return _refuse(RULE_RELATION_REQUIRED,
                       "the asker must assert a current care or social-care relation")
    if claims.unblock is not None:
        if claims.basis == "emergency" and kind != "vårdgivare":
            return _refuse(RULE_UNBLOCK_EMERGENCY_CARE_GIVER_ONLY,
                           "a social care giver can never lift a block in an emergency")
        if claims.basis not in ("consent", "emergency"):
            return _refuse(RULE_UNBLOCK_BASIS,
                           "a block can be lifted only with the person's consent or in an "
                           "emergency")
        if claims.unblock.step == "read" and not claims.unblock.producers:
            return _refuse(RULE_UNBLOCK_READ_NAMES_PRODUCERS,
                           "unblock step 'read' must name the producers to read from")
    if claims.basis == "emergency" and kind != "vårdgivare":
        return _refuse(RULE_EMERGENCY_CARE_GIVER_ONLY,
                       "only a care giver (vårdgivare) may access in an emergency")
    if claims.basis == "child" and age_on(subject, today) >= ADULT_AGE:
        return _refuse(RULE_CHILD_UNDER_18,
                       "basis 'child' applies only to a person under 18 by the identity number")
    return _ALLOWED_LACKS_CAPACITY if claims.basis == "lacks_capacity" else ALLOWED
