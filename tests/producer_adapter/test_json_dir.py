"""The JSON directory backend: checked at start-up, filtered on fetch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from producer_adapter.backends import JsonDirBackend, open_backend
from producer_adapter.errors import AdapterConfigError
from schemas.messages import Period

ALL = frozenset({"medication", "alerts", "care_documentation", "social_care_interventions"})


async def test_good_dir_loads_and_fetches(data_dir: Path, kit: Any) -> None:
    backend = JsonDirBackend.load(data_dir, kit.PRODUCER)
    assert backend.subjects == {kit.PERSON, kit.PERSON_2}
    result = await backend.fetch(kit.PERSON, ALL, None)
    assert [r.id for r in result.records] == ["m1", "a1", "n-sol-other", "n-excluded", "s1"]
    assert result.truncated is False
    await backend.aclose()


async def test_unknown_person_is_empty(data_dir: Path, kit: Any) -> None:
    backend = JsonDirBackend.load(data_dir, kit.PRODUCER)
    assert (await backend.fetch(kit.CHILD, ALL, None)).records == []


async def test_filters_by_type(data_dir: Path, kit: Any) -> None:
    backend = JsonDirBackend.load(data_dir, kit.PRODUCER)
    result = await backend.fetch(kit.PERSON, frozenset({"medication", "alerts"}), None)
    assert [r.id for r in result.records] == ["m1", "a1"]


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (None, None, ["m1", "a1", "n-sol-other", "n-excluded", "s1"]),
        ("2024-01-01", None, ["m1", "n-sol-other", "n-excluded", "s1"]),
        (None, "2023-12-31", ["a1"]),
        ("2024-03-01", "2024-03-01", ["m1"]),  # both ends inclusive, by the record's own date
        ("2024-03-02", "2024-12-31", []),
        ("2024-01-15", "2024-02-01", ["n-sol-other", "n-excluded", "s1"]),
    ],
)
async def test_filters_by_period(data_dir: Path, kit: Any, start: str | None, end: str | None,
                                 expected: list[str]) -> None:
    backend = JsonDirBackend.load(data_dir, kit.PRODUCER)
    period = Period(from_=dt.date.fromisoformat(start) if start else None,
                    to=dt.date.fromisoformat(end) if end else None)
    assert [r.id for r in (await backend.fetch(kit.PERSON, ALL, period)).records] == expected


def test_bad_file_is_named_with_the_reason(data_dir: Path, kit: Any) -> None:
    bad = data_dir / f"{kit.CHILD}.json"
    bad.write_text('[{"type": "medication", "id": 7}]')
    with pytest.raises(AdapterConfigError) as err:
        JsonDirBackend.load(data_dir, kit.PRODUCER)
    assert str(bad) in str(err.value)
    assert "$[0].id" in str(err.value)


def test_truncated_json_is_named(data_dir: Path, kit: Any) -> None:
    bad = data_dir / f"{kit.CHILD}.json"
    bad.write_text('[{"type": ')
    with pytest.raises(AdapterConfigError, match=str(bad)):
        JsonDirBackend.load(data_dir, kit.PRODUCER)


def test_unknown_scope_is_refused(data_dir: Path, kit: Any) -> None:
    file = kit.write_person(data_dir, kit.CHILD, [kit.medication()])
    file.write_text(file.read_text().replace('"hsl"', '"secret"'))
    with pytest.raises(AdapterConfigError, match=r"scope"):
        JsonDirBackend.load(data_dir, kit.PRODUCER)


@pytest.mark.parametrize("name", ["195001182047", "19500118-2046", "1950011820", "nobody"])
def test_file_name_must_be_a_valid_identity_number(data_dir: Path, kit: Any, name: str) -> None:
    (data_dir / f"{name}.json").write_text("[]")
    with pytest.raises(AdapterConfigError, match="not a valid identity number") as err:
        JsonDirBackend.load(data_dir, kit.PRODUCER)
    assert name in str(err.value)


def test_record_of_another_producer_is_refused(data_dir: Path, kit: Any) -> None:
    kit.write_person(data_dir, kit.CHILD, [kit.medication(producer=kit.OTHER_PRODUCER)])
    with pytest.raises(AdapterConfigError) as err:
        JsonDirBackend.load(data_dir, kit.PRODUCER)
    assert f"{kit.CHILD}.json" in str(err.value)
    assert kit.OTHER_PRODUCER in str(err.value)


def test_duplicate_record_id_is_refused(data_dir: Path, kit: Any) -> None:
    kit.write_person(data_dir, kit.CHILD, [kit.medication("x"), kit.alert("x")])
    with pytest.raises(AdapterConfigError, match="duplicate id 'x'"):
        JsonDirBackend.load(data_dir, kit.PRODUCER)


def test_missing_dir_is_refused(tmp_path: Path, kit: Any) -> None:
    with pytest.raises(AdapterConfigError, match="not a directory"):
        JsonDirBackend.load(tmp_path / "nope", kit.PRODUCER)


def test_other_files_are_ignored(data_dir: Path, kit: Any) -> None:
    (data_dir / "README.txt").write_text("not records")
    (data_dir / "sub.json").mkdir()
    assert JsonDirBackend.load(data_dir, kit.PRODUCER).subjects == {kit.PERSON, kit.PERSON_2}


async def test_open_backend_by_kind(data_dir: Path, kit: Any) -> None:
    table = {"kind": "json_dir", "path": data_dir.name}
    backend = await open_backend(table, base=data_dir.parent, producer_id=kit.PRODUCER)
    assert isinstance(backend, JsonDirBackend)


@pytest.mark.parametrize(
    "table, message",
    [
        ({"kind": "nosuch"}, "kind 'nosuch' is neither built in"),
        ({}, "kind must be one of"),
        ({"kind": "json_dir"}, "path must be a non-empty string"),
        ({"kind": "json_dir", "path": "x", "dsn": "y"}, "unknown keys: dsn"),
    ],
)
async def test_open_backend_refuses_bad_tables(tmp_path: Path, kit: Any, table: dict[str, str],
                                               message: str) -> None:
    with pytest.raises(AdapterConfigError, match=message):
        await open_backend(table, base=tmp_path, producer_id=kit.PRODUCER, where="a.toml")
