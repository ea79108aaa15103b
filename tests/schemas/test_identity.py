"""Personnummer and samordningsnummer (SPEC section 2), against public test vectors."""

from __future__ import annotations

import datetime as dt

import pytest

from schemas import InvalidPersonId
from schemas.identity import age_on, birth_date, is_coordination_number, luhn_ok, normalise

TODAY = dt.date(2026, 11, 27)

def check_digit(nine: str) -> str:
    """The Luhn digit completing ``YYMMDDNNN``."""
    for c in "0123456789":
        if luhn_ok(nine + c):
            return c
    raise AssertionError("unreachable")


def short_form(pid: str, today: dt.date = TODAY) -> str:
    """``YYMMDD-NNNC``, with ``+`` from the calendar year the person turns 100 (Skatteverket)."""
    sep = "+" if today.year - int(pid[:4]) >= 100 else "-"
    return f"{pid[2:8]}{sep}{pid[8:]}"


# -- personnummer/meta vectors (list.json) ------------------------------------------------


def test_valid_vector_normalises_from_every_accepted_form(valid_vector: dict[str, str]) -> None:
    expected = valid_vector["long_format"]
    assert normalise(valid_vector["long_format"], today=TODAY) == expected
    assert normalise(valid_vector["separated_format"], today=TODAY) == expected
    assert normalise(f"{expected[:8]}-{expected[8:]}", today=TODAY) == expected
    if "-" in valid_vector["separated_long"]:
        assert normalise(valid_vector["separated_long"], today=TODAY) == expected


def test_valid_vector_kind(valid_vector: dict[str, str]) -> None:
    pid = normalise(valid_vector["long_format"], today=TODAY)
    assert is_coordination_number(pid) is (valid_vector["type"] == "con")


def test_vectors_with_plus_are_100_or_older(valid_vector: dict[str, str]) -> None:
    pid = normalise(valid_vector["separated_format"], today=TODAY)
    if "+" in valid_vector["separated_format"]:
        assert TODAY.year - birth_date(pid).year >= 100
        # The same digits with '-' name someone born a century later (or not yet born).
        minus = valid_vector["separated_format"].replace("+", "-")
        try:
            assert normalise(minus, today=TODAY) != pid
        except InvalidPersonId:
            pass


def test_invalid_vector_is_refused_in_every_form(invalid_vector: dict[str, str]) -> None:
    for form in ("long_format", "short_format", "separated_format", "separated_long"):
        with pytest.raises(InvalidPersonId):
            normalise(invalid_vector[form], today=TODAY)


def test_ten_digits_without_separator_are_refused(valid_vector: dict[str, str]) -> None:
    """SPEC section 2 lists the accepted forms; ``YYMMDDNNNC`` is not one of them."""
    with pytest.raises(InvalidPersonId):
        normalise(valid_vector["short_format"], today=TODAY)


# -- Skatteverket's list of test personnummer ----------------------------------------------


def test_skatteverket_sample_is_valid_in_every_form(skatteverket_sample: list[str]) -> None:
    assert len(skatteverket_sample) == 1000
    for pid in skatteverket_sample:
        assert len(pid) == 12 and pid.isdigit()
        assert normalise(pid, today=TODAY) == pid
        assert normalise(f"{pid[:8]}-{pid[8:]}", today=TODAY) == pid
        assert normalise(short_form(pid), today=TODAY) == pid, short_form(pid)
        assert not is_coordination_number(pid)


def test_skatteverket_sample_with_a_wrong_check_digit_is_refused(
    skatteverket_sample: list[str],
) -> None:
    for pid in skatteverket_sample[:200]:
        wrong = pid[:11] + str((int(pid[11]) + 1) % 10)
        with pytest.raises(InvalidPersonId, match="check digit"):
            normalise(wrong, today=TODAY)


# -- forms and edge cases ---------------------------------------------------------------


@pytest.mark.parametrize(
    "form", ["193803039142", "19380303-9142", "380303-9142", "  19380303-9142\n"]
)
def test_accepted_forms(form: str) -> None:
    assert normalise(form, today=TODAY) == "193803039142"


@pytest.mark.parametrize(
    "form",
    [
        "", "-", "1938030391420", "19380303--9142", "19380303+9142x", "380303 9142",
        "1938-03-03-9142", "19380303_9142", "38030391", "l9380303-9142",
        "193813039142",  # month 13
        "19380230-9142",  # 30 February
    ],
)
def test_malformed_forms_are_refused(form: str) -> None:
    with pytest.raises(InvalidPersonId):
        normalise(form, today=TODAY)


@pytest.mark.parametrize("value", [193803039142, None, b"193803039142"])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidPersonId):
        normalise(value, today=TODAY)  # type: ignore[arg-type]


def test_non_ascii_digits_are_refused() -> None:
    arabic_indic = "193803039142".translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    with pytest.raises(InvalidPersonId):
        normalise(arabic_indic, today=TODAY)


def test_birth_number_000_is_refused() -> None:
    nine = "380303000"
    pid = f"19{nine}{check_digit(nine)}"
    with pytest.raises(InvalidPersonId):
        normalise(pid, today=TODAY)


def test_future_birth_date_is_refused() -> None:
    nine = "270101123"  # 2027-01-01, after TODAY
    pid = f"20{nine}{check_digit(nine)}"
    assert luhn_ok(pid[2:])
    with pytest.raises(InvalidPersonId, match="future"):
        normalise(pid, today=TODAY)
    # Written short, the same digits belong to 1927 ('+' would mean 1827).
    assert normalise(f"{pid[2:8]}-{pid[8:]}", today=TODAY) == "19" + pid[2:]
    assert normalise(f"{pid[2:8]}+{pid[8:]}", today=TODAY) == "18" + pid[2:]


def test_short_form_century_follows_today() -> None:
    assert normalise("000405-9937", today=TODAY) == "200004059937"
    assert normalise("000405+9937", today=TODAY) == "190004059937"
    assert normalise("090527+1474", today=TODAY) == "190905271474"
    # Fifty years ago the '-' form of 00... was someone born in 1900.
    assert normalise("000405-9937", today=dt.date(1950, 1, 1)) == "190004059937"


def test_samordningsnummer() -> None:
    pid = normalise("730288-9931", today=TODAY)
    assert pid == "197302889931"
    assert is_coordination_number(pid)
    assert birth_date(pid) == dt.date(1973, 2, 28)
    assert not is_coordination_number("193803039142")
    with pytest.raises(InvalidPersonId):
        normalise("19730292-9931", today=TODAY)  # day 92 - 60 = 32


# -- age ----------------------------------------------------------------------------------


def test_age_of_a_child() -> None:
    pid = normalise("201501012395", today=TODAY)
    assert birth_date(pid) == dt.date(2015, 1, 1)
    assert age_on(pid, TODAY) == 11


def test_age_around_the_18th_birthday() -> None:
    pid = normalise("200811012392", today=TODAY)
    assert age_on(pid, dt.date(2026, 10, 31)) == 17
    assert age_on(pid, dt.date(2026, 11, 1)) == 18
    assert age_on(pid, dt.date(2026, 11, 2)) == 18


def test_age_of_samordningsnummer_uses_the_real_day() -> None:
    pid = normalise("202107919967", today=TODAY)  # born 2021-07-31
    assert age_on(pid, dt.date(2039, 7, 30)) == 17
    assert age_on(pid, dt.date(2039, 7, 31)) == 18


def test_age_on_birthday_in_other_month() -> None:
    pid = "193803039142"
    assert age_on(pid, dt.date(2026, 3, 2)) == 87
    assert age_on(pid, dt.date(2026, 3, 3)) == 88
    assert age_on(pid, dt.date(2026, 2, 28)) == 87
