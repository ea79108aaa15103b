"""Swedish person identity numbers: personnummer and samordningsnummer.

Accepted input forms (SPEC section 2): ``YYYYMMDDNNNC``, ``YYYYMMDD-NNNC`` and
``YYMMDD-NNNC`` (``YYMMDD+NNNC`` for a person aged 100 or more, as Skatteverket
writes it). The result is always 12 digits. A samordningsnummer has 60 added to the day.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from .errors import InvalidPersonId

__all__ = [
    "PersonId",
    "age_on",
    "birth_date",
    "hsa_organisation",
    "is_coordination_number",
    "luhn_ok",
    "normalise",
]

_LONG: Final = re.compile(r"^([0-9]{8})-?([0-9]{4})$")
_SHORT: Final = re.compile(r"^([0-9]{6})([-+])([0-9]{4})$")

PersonId = str
"""A normalised, checked identity number: 12 digits."""


def luhn_ok(digits: str) -> bool:
    """The Luhn check over the 10-digit form ``YYMMDDNNNC``."""
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _date_of(yyyymmdd: str) -> dt.date | None:
    year, month, day = int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8])
    if day > 60:
        day -= 60
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def normalise(raw: str, *, today: dt.date | None = None) -> PersonId:
    """Parse ``raw`` into a 12-digit identity number, or raise :class:`InvalidPersonId`."""
    if not isinstance(raw, str):
        raise InvalidPersonId("identity number must be a string")
    text = raw.strip()
    if m := _LONG.match(text):
        full = m.group(1) + m.group(2)
    elif m := _SHORT.match(text):
        today = today or dt.date.today()
        yy = int(m.group(1)[:2])
        century = today.year // 100 * 100
        year = century + yy
        if year > today.year:
            year -= 100
        if m.group(2) == "+":
            year -= 100
        full = f"{year:04d}{m.group(1)[2:]}{m.group(3)}"
    else:
        raise InvalidPersonId(
            "identity number must be YYYYMMDDNNNC, YYYYMMDD-NNNC or YYMMDD-NNNC"
        )
    born = _date_of(full[:8])
    if born is None:
        raise InvalidPersonId("identity number holds no valid date of birth")
    if born > (today or dt.date.today()):
        raise InvalidPersonId("identity number has a date of birth in the future")
    if full[8:11] == "000":
        raise InvalidPersonId("identity number has birth number 000, which is never issued")
    if not luhn_ok(full[2:]):
        raise InvalidPersonId("identity number fails its check digit")
    return full


def is_coordination_number(pid: PersonId) -> bool:
    """True for a samordningsnummer (day of birth plus 60)."""
    return int(pid[6:8]) > 60


def birth_date(pid: PersonId) -> dt.date:
    """The date of birth a normalised identity number states."""
    born = _date_of(pid[:8])
    if born is None:  # pragma: no cover - normalise() already refused it
        raise InvalidPersonId("identity number holds no valid date of birth")
    return born


def age_on(pid: PersonId, day: dt.date) -> int:
    """Whole years of age on ``day``, by the identity number."""
    born = birth_date(pid)
    years = day.year - born.year
    if (day.month, day.day) < (born.month, born.day):
        years -= 1
    return years


def hsa_organisation(hsa_id: str) -> str:
    """The organisation part of an HSA-id: everything before its first ``-``
    (``SE2321000016-1ABC`` → ``SE2321000016``); an id without ``-`` is all organisation."""
    return hsa_id.partition("-")[0]
