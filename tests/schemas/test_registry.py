"""The federation registry: a good file parses; a bad one is refused naming its line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from schemas import RegistryError, UnknownKey
from schemas.jose import Header, PrivateKey, generate_key
from schemas.records import UnitRef
from schemas.registry import Registry, load_registry, parse_registry

MARK = "# <-- the error is on the next line"


def inline(jwk: dict[str, str]) -> str:
    """A JWK as a TOML inline table."""
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in jwk.items()) + " }"


class Keys:
    def __init__(self) -> None:
        self.broker = generate_key("EdDSA")
        self.region = generate_key("ES256")
        self.kommun = generate_key("EdDSA")
        self.portal = generate_key("EdDSA")
        self.kommun_system = generate_key("EdDSA")


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def good_text(k: Keys) -> str:
    return f"""\
# samsvar federation registry (test)
[broker]
id = "SE0000000000-BRK1"
name = "samsvar test broker"
keys = [{inline(k.broker.public.to_jwk())}]

[[participants]]
id = "SE2321000016-0001"
name = "Region Exempel"
kind = "vårdgivare"
roles = ["consumer", "producer"]
keys = [{inline(k.region.public.to_jwk())}]

[[participants]]
id = "SE2120000000-0002"
name = "Exempels kommun"
kind = "omsorgsgivare"
roles = ["consumer", "producer"]
keys = [{inline(k.kommun.public.to_jwk())}]

[[participants]]
id = "SE5560000000-0003"
name = "Medborgarportalen"
kind = "annan"
roles = ["log-extract"]
keys = [{inline(k.portal.public.to_jwk())}]

[[producers]]
id = "SE2321000016-P001"
name = "Region Exempel, journal"
organisation = "SE2321000016-0001"
types = ["medication", "diagnoses", "care_documentation"]
units = [{{ id = "SE2321000016-U100", name = "Akutmottagningen" }},
         {{ id = "SE2321000016-U200", name = "BUP" }}]
keys = [{{ kid = "{k.region.kid}" }}]

[[producers]]
id = "SE2120000000-P002"
name = "Exempels kommun, verksamhetssystem"
organisation = "SE2120000000-0002"
types = ["social_care_interventions", "care_plans", "medication"]
keys = [{inline(k.kommun_system.public.to_jwk())}]
"""


def expect_error(text: str, message: str) -> RegistryError:
    """Parse ``text``; the error must match ``message`` and name the line after MARK."""
    lines = text.splitlines()
    expected = lines.index(MARK) + 2  # 1-based number of the line after the mark
    with pytest.raises(RegistryError, match=message) as info:
        parse_registry(text, path="registry.toml")
    err = info.value
    assert err.line == expected, (err.line, expected, str(err))
    assert str(err).startswith(f"registry.toml:{expected}: ")
    return err


def mark_before(text: str, line: str, occurrence: int = 0) -> str:
    """Put MARK before the ``occurrence``-th line equal to ``line``."""
    lines = text.splitlines()
    hits = [i for i, ln in enumerate(lines) if ln == line]
    lines.insert(hits[occurrence], MARK)
    return "\n".join(lines) + "\n"


def replace_marked(text: str, old: str, new: str) -> str:
    """Replace the first line starting with ``old`` by ``new``, with MARK before it."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(old))
    lines[i:i + 1] = [MARK, new]
    return "\n".join(lines) + "\n"


# -- a good registry ----------------------------------------------------------------------


def test_good_registry(keys: Keys) -> None:
    reg = parse_registry(good_text(keys), path="registry.toml")
    assert isinstance(reg, Registry)
    assert reg.path == "registry.toml"
    assert reg.broker.id == "SE0000000000-BRK1"
    assert list(reg.broker.keys) == [keys.broker.kid]
    assert list(reg.participants) == ["SE2321000016-0001", "SE2120000000-0002",
                                      "SE5560000000-0003"]
    region = reg.participants["SE2321000016-0001"]
    assert region.kind == "vårdgivare" and region.roles == {"consumer", "producer"}
    assert region.ref.id == region.id and region.ref.name == "Region Exempel"
    assert region.keys[keys.region.kid].alg == "ES256"
    assert reg.participants["SE2120000000-0002"].kind == "omsorgsgivare"
    assert reg.participants["SE5560000000-0003"].roles == {"log-extract"}

    journal = reg.producers["SE2321000016-P001"]
    assert journal.organisation is region
    assert journal.types == {"medication", "diagnoses", "care_documentation"}
    assert journal.units == (UnitRef(id="SE2321000016-U100", name="Akutmottagningen"),
                             UnitRef(id="SE2321000016-U200", name="BUP"))
    assert journal.keys[keys.region.kid] is region.keys[keys.region.kid]  # inherited
    system = reg.producers["SE2120000000-P002"]
    assert list(system.keys) == [keys.kommun_system.kid]
    assert system.units == ()


def test_load_registry_from_file(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(good_text(keys), encoding="utf-8")
    reg = load_registry(path)
    assert reg.path == str(path) and len(reg.producers) == 2


def test_load_registry_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read registry"):
        load_registry(tmp_path / "nope.toml")


def test_errors_from_a_file_name_the_file(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(good_text(keys).replace('kind = "annan"', 'kind = "apotek"'))
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert str(info.value).startswith(f"{path}:{info.value.line}: ")


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["medication"], ["SE2321000016-P001", "SE2120000000-P002"]),
        (["care_plans"], ["SE2120000000-P002"]),
        (["diagnoses", "care_plans"], ["SE2321000016-P001", "SE2120000000-P002"]),
        (["alerts"], []),
        ([], []),
    ],
)
def test_producers_for(keys: Keys, types: list[str], expected: list[str]) -> None:
    reg = parse_registry(good_text(keys))
    assert [p.id for p in reg.producers_for(types)] == expected
    assert [p.id for p in reg.producers_for(iter(types))] == expected
    assert isinstance(reg.producers_for(types), tuple)  # shared, so no caller can spoil it
    assert [p.id for p in reg.producers_for(reversed(types))] == expected


def header(key: PrivateKey) -> Header:
    return Header(alg=key.alg, kid=key.kid)


def test_key_lookups(keys: Keys) -> None:
    reg = parse_registry(good_text(keys))
    assert reg.participant_key("SE2321000016-0001", header(keys.region)).kid == keys.region.kid
    assert reg.producer_key("SE2321000016-P001", header(keys.region)).kid == keys.region.kid
    assert reg.broker_key(header(keys.broker)).kid == keys.broker.kid
    with pytest.raises(UnknownKey):
        reg.participant_key("SE2321000016-0001", header(keys.kommun))
    with pytest.raises(UnknownKey):
        reg.participant_key("SE9999999999-0009", header(keys.region))
    with pytest.raises(UnknownKey):
        reg.producer_key("SE2120000000-P002", header(keys.kommun))  # the org's, not listed
    with pytest.raises(UnknownKey):
        reg.broker_key(header(keys.region))


def with_retired(text: str, *entries: str) -> str:
    """``text`` with ``retired_keys`` after the broker's keys, one entry a line."""
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("keys = ")) + 1
    lines[at:at] = ["retired_keys = [", *(f"  {e}," for e in entries), "]"]
    return "\n".join(lines) + "\n"


def test_a_retired_broker_key_verifies_no_question(keys: Keys) -> None:
    """A retired key is kept for the access log's old checkpoints; a question signed with
    it is refused like one signed with any unknown key."""
    old = generate_key("EdDSA")
    reg = parse_registry(with_retired(
        good_text(keys), f"{{ key = {inline(old.public.to_jwk())}, last_seq = 48210 }}"))
    retired = reg.broker.retired_keys[old.kid]
    assert (retired.key.kid, retired.last_seq) == (old.kid, 48210)
    assert list(reg.broker.keys) == [keys.broker.kid]
    with pytest.raises(UnknownKey):
        reg.broker_key(header(old))
    assert parse_registry(good_text(keys)).broker.retired_keys == {}


@pytest.mark.parametrize(("entry", "message"), [
    ("{{ key = {old} }}", r"\{ key = \{\.\.\.\}, last_seq = N \}"),
    ("{{ key = {old}, last_seq = -1 }}", "last_seq must be an entry number"),
    ("{{ key = {old}, last_seq = \"9\" }}", "last_seq must be an entry number"),
    ("{{ key = {current}, last_seq = 9 }}", "is also in \\[broker\\] keys"),
    ("{{ key = {private}, last_seq = 9 }}", "private key"),
    ("{{ key = {{ kid = \"x\" }}, last_seq = 9 }}", "unknown kid"),
])
def test_retired_keys_are_checked(keys: Keys, entry: str, message: str) -> None:
    old = generate_key("EdDSA")
    text = with_retired(good_text(keys), entry.format(
        old=inline(old.public.to_jwk()), current=inline(keys.broker.public.to_jwk()),
        private=inline(old.to_jwk())))
    with pytest.raises(RegistryError, match=message) as info:
        parse_registry(text)
    assert info.value.line is not None and info.value.line >= 6  # at retired_keys or after


def test_a_key_retired_twice_is_refused(keys: Keys) -> None:
    old = inline(generate_key("EdDSA").public.to_jwk())
    with pytest.raises(RegistryError, match="retired above"):
        parse_registry(with_retired(good_text(keys), f"{{ key = {old}, last_seq = 1 }}",
                                    f"{{ key = {old}, last_seq = 2 }}"))


# -- errors name their line ---------------------------------------------------------------------

Mutation = Callable[[str, Keys], str]


def duplicate_participant(text: str, k: Keys) -> str:
    text = text.replace('id = "SE5560000000-0003"', 'id = "SE2321000016-0001"')
    return mark_before(text, "[[participants]]", occurrence=2)


def duplicate_producer(text: str, k: Keys) -> str:
    text = text.replace('id = "SE2120000000-P002"', 'id = "SE2321000016-P001"')
    return mark_before(text, "[[producers]]", occurrence=1)


def type_not_in_spec(text: str, k: Keys) -> str:
    return replace_marked(text, 'types = ["social_care',
                          'types = ["social_care_interventions", "x_ray_images"]')


def unknown_kid(text: str, k: Keys) -> str:
    # The municipality's own key, named only by kid under the region's producer.
    return replace_marked(text, f'keys = [{{ kid = "{k.region.kid}" }}]',
                          f'keys = [{{ kid = "{k.kommun.kid}" }}]')


def invalid_kind(text: str, k: Keys) -> str:
    return replace_marked(text, 'kind = "omsorgsgivare"', 'kind = "apotek"')


def missing_kind(text: str, k: Keys) -> str:
    text = text.replace('kind = "annan"\n', "")
    return mark_before(text, 'roles = ["log-extract"]')


def org_without_producer_role(text: str, k: Keys) -> str:
    text = text.replace('roles = ["consumer", "producer"]\nkeys = [' +
                        inline(k.kommun.public.to_jwk()),
                        'roles = ["consumer"]\nkeys = [' + inline(k.kommun.public.to_jwk()))
    return replace_marked(text, 'organisation = "SE2120000000-0002"',
                          'organisation = "SE2120000000-0002"')


def org_not_a_participant(text: str, k: Keys) -> str:
    return replace_marked(text, 'organisation = "SE2120000000-0002"',
                          'organisation = "SE2120000000-9999"')


def private_key(text: str, k: Keys) -> str:
    return replace_marked(text, f"keys = [{inline(k.kommun.public.to_jwk())}]",
                          f"keys = [{inline(k.kommun.to_jwk())}]")


def private_producer_key(text: str, k: Keys) -> str:
    return replace_marked(text, f"keys = [{inline(k.kommun_system.public.to_jwk())}]",
                          f"keys = [{inline(k.kommun_system.to_jwk())}]")


def consumer_role_for_annan(text: str, k: Keys) -> str:
    return replace_marked(text, 'roles = ["log-extract"]', 'roles = ["log-extract", "consumer"]')


def unknown_role(text: str, k: Keys) -> str:
    return replace_marked(text, 'roles = ["log-extract"]', 'roles = ["log-extract", "admin"]')


def duplicate_unit(text: str, k: Keys) -> str:
    text = text.replace('         { id = "SE2321000016-U200", name = "BUP" }]\n', "")
    return replace_marked(text, "units = [", 'units = [{ id = "SE2321000016-U100", name = "A" }, '
                          '{ id = "SE2321000016-U100", name = "B" }]')


def bad_public_key(text: str, k: Keys) -> str:
    jwk = {**k.kommun.public.to_jwk(), "x": "AAAA"}
    return replace_marked(text, f"keys = [{inline(k.kommun.public.to_jwk())}]",
                          f"keys = [{inline(jwk)}]")


def duplicate_kid(text: str, k: Keys) -> str:
    jwk = inline(k.kommun.public.to_jwk())
    return replace_marked(text, f"keys = [{jwk}]", f"keys = [{jwk},\n        {jwk}]")


def bad_toml(text: str, k: Keys) -> str:
    return replace_marked(text, 'name = "Medborgarportalen"', 'name = "Medborgarportalen')


ERRORS: list[tuple[Mutation, str]] = [
    (duplicate_participant, "duplicate participant id 'SE2321000016-0001'"),
    (duplicate_producer, "duplicate producer id 'SE2321000016-P001'"),
    (type_not_in_spec, "'x_ray_images' is not an information type"),
    (unknown_kid, r"unknown kid .* \(not a key of its organisation\)"),
    (invalid_kind, "kind must be one of .* not 'apotek'"),
    (org_without_producer_role, "lacks the producer role"),
    (org_not_a_participant, "'SE2120000000-9999' is not a participant"),
    (private_key, "private key"),
    (private_producer_key, "private key"),
    (consumer_role_for_annan, "only a vårdgivare or omsorgsgivare"),
    (unknown_role, "roles must be"),
    (duplicate_unit, "duplicate unit id 'SE2321000016-U100'"),
    (bad_public_key, "32 bytes"),
    (bad_toml, "not valid TOML"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [pytest.param(m, msg, id=m.__name__) for m, msg in ERRORS]
)
def test_error_names_the_line(keys: Keys, mutate: Mutation, message: str) -> None:
    expect_error(mutate(good_text(keys), keys), message)


def test_duplicate_kid(keys: Keys) -> None:
    text = duplicate_kid(good_text(keys), keys)
    with pytest.raises(RegistryError, match="duplicate kid") as info:
        parse_registry(text)
    assert info.value.line is not None and info.value.line > 0


def test_missing_kind_is_refused(keys: Keys) -> None:
    with pytest.raises(RegistryError, match="kind must be one of"):
        parse_registry(missing_kind(good_text(keys), keys))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('id = "SE0000000000-BRK1"', 'name_only = "x"', "non-empty string 'id'"),
        ('id = "SE2321000016-P001"', 'id = "SE2321000016 P001"', "id may hold only"),
        ('id = "SE5560000000-0003"', 'id = "../etc"', "id may hold only"),
        ('roles = ["log-extract"]', "roles = []", "roles must be"),
        ('types = ["social_care', "types = []", "non-empty list 'types'"),
    ],
)
def test_other_refusals(keys: Keys, old: str, new: str, message: str) -> None:
    lines = good_text(keys).splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(old))
    lines[i] = new
    with pytest.raises(RegistryError, match=message):
        parse_registry("\n".join(lines))


def test_missing_broker_table(keys: Keys) -> None:
    text = good_text(keys).replace("[broker]", "[brokers]")
    with pytest.raises(RegistryError, match=r"missing \[broker\]"):
        parse_registry(text)


def test_keys_are_required(keys: Keys) -> None:
    text = good_text(keys).replace(f"keys = [{inline(keys.portal.public.to_jwk())}]",
                                   "keys = []")
    with pytest.raises(RegistryError, match="at least one key"):
        parse_registry(text)


def test_line_is_found_beside_a_comment(keys: Keys) -> None:
    text = duplicate_producer(good_text(keys), keys)
    text = text.replace(f"{MARK}\n[[producers]]", f"{MARK}\n[[producers]]  # the second")
    expect_error(text, "duplicate producer id")


def test_wrong_shapes_are_registry_errors(keys: Keys) -> None:
    text = good_text(keys).replace("[[participants]]", "[[participant_list]]")
    text = 'participants = ["SE2321000016-0001"]\n' + text
    with pytest.raises(RegistryError):
        parse_registry(text)


# -- the own view (SPEC section 9) ------------------------------------------------------


def with_own_view(text: str, line: str) -> str:
    """Give the municipality's producer the ``own_view_types`` line ``line``."""
    return text.replace('types = ["social_care_interventions", "care_plans", "medication"]\n',
                        'types = ["social_care_interventions", "care_plans", "medication"]\n'
                        + line + "\n")


def test_own_view_types_choose_the_producers_asked(keys: Keys) -> None:
    text = with_own_view(good_text(keys), 'own_view_types = ["care_plans"]').replace(
        'roles = ["log-extract"]', 'roles = ["log-extract", "citizen-portal"]')
    reg = parse_registry(text)
    assert reg.producers["SE2120000000-P002"].own_view_types == {"care_plans"}
    assert reg.producers["SE2321000016-P001"].own_view_types == frozenset()
    assert [p.id for p in reg.producers_for_own_view(["care_plans", "medication"])] == [
        "SE2120000000-P002"]
    assert reg.producers_for_own_view(["medication"]) == ()
    assert "citizen-portal" in reg.participants["SE5560000000-0003"].roles


@pytest.mark.parametrize(("line", "message"), [
    ('own_view_types = ["alerts"]', "not a type of the own view"),
    ('own_view_types = ["bookings"]', "not one of the producer's types"),
    ('own_view_types = "care_plans"', "must be a list"),
    ('ombud_types = ["medication"]', "ombud_types must be a list of the producer's"),
])
def test_own_view_types_are_checked(keys: Keys, line: str, message: str) -> None:
    text = with_own_view(good_text(keys), line)
    text = text.replace(line, f"{MARK}\n{line}")
    expect_error(text, message)
