"""The producer's own-view rules (SPEC section 9): what the person may see of what stage 1
made available, the register of units' blocks of a guardian, its CLI and its config."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from producer_adapter import AdapterConfigError, load_stores_config
from producer_adapter.errors import BlockNotFound, BlockRefused, BlockSourceError
from producer_adapter.guardian_blocks import GuardianBlockRegister
from producer_adapter.policy import (
    RULE_NOT_FOR_PATIENT,
    RULE_RELEASE_DELAY,
    for_the_person,
)
from samsvar import cli
from schemas.records import (
    Booking,
    FixedContact,
    LabResult,
    OrgRef,
    PersonRef,
    RecordSource,
    UnitRef,
)

NOW = dt.datetime(2026, 12, 8, 12, tzinfo=dt.UTC)
SOURCE = RecordSource(producer="P", organisation=OrgRef(id="O", name="O"),
                      unit=UnitRef(id="U", name="U"))
CHILD = "201503012385"
GUARDIAN = "198504012389"


def lab(rid: str, days_ago: float, **kw: Any) -> LabResult:
    return LabResult(id=rid, source=SOURCE, time=NOW - dt.timedelta(days=days_ago),
                     scope="hsl", analysis="P-Krea", value="90", **kw)


def test_release_delay_holds_a_record_until_due_per_type() -> None:
    booked = Booking(id="b", source=SOURCE, time=NOW - dt.timedelta(days=1), scope="hsl",
                     start=NOW + dt.timedelta(days=3), unit=SOURCE.unit)
    shown, held = for_the_person(
        [lab("due", 14), lab("not-yet", 13.9), booked], now=NOW,
        release_delay_days={"lab_results": 14})
    assert [r.id for r in shown] == ["due", "b"]
    assert held == {RULE_RELEASE_DELAY: 1}


def test_not_approved_for_the_patient_is_never_shown_however_old() -> None:
    shown, held = for_the_person([lab("x", 4000, approved_for_patient=False), lab("y", 1)],
                                 now=NOW, release_delay_days={})
    assert [r.id for r in shown] == ["y"] and held == {RULE_NOT_FOR_PATIENT: 1}


def test_a_fixed_contact_leaves_without_its_internal_note() -> None:
    contact = FixedContact(id="f", source=SOURCE, time=NOW, scope="hsl",
                           role="fast_omsorgskontakt", person=PersonRef(name="Maja"),
                           note="Ring mig", internal_note="Nyckelkod 1234")
    [shown], held = for_the_person([contact], now=NOW, release_delay_days={})
    assert isinstance(shown, FixedContact)
    assert shown.internal_note == "" and shown.note == "Ring mig" and held == {}
    assert "internal_note" not in json.dumps(__import__("msgspec").to_builtins(shown))


def test_the_guardian_register_blocks_one_guardian_of_one_child(tmp_path: Path) -> None:
    register = GuardianBlockRegister(tmp_path / "g.db")
    assert register.is_blocked(child=CHILD, guardian=GUARDIAN) is False  # no file: nobody
    units = frozenset({"U1"})
    block = register.add(child="20150301-2385", guardian=GUARDIAN, unit="U1", operator="op",
                         units=units, note="beslut 2026-12")
    assert (block.child, block.guardian) == (CHILD, GUARDIAN)
    assert register.is_blocked(child=CHILD, guardian=GUARDIAN)
    assert not register.is_blocked(child=CHILD, guardian="198504012397")
    with pytest.raises(BlockRefused, match="already"):
        register.add(child=CHILD, guardian=GUARDIAN, unit="U1", operator="op", units=units)
    with pytest.raises(BlockRefused, match="not a unit"):
        register.add(child=CHILD, guardian=GUARDIAN, unit="U9", operator="op", units=units)
    register.remove(child=CHILD, guardian=GUARDIAN, unit="U1", operator="op")
    assert not register.is_blocked(child=CHILD, guardian=GUARDIAN)
    with pytest.raises(BlockNotFound):
        register.remove(child=CHILD, guardian=GUARDIAN, unit="U1", operator="op")


def test_an_unreadable_guardian_register_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    path.write_bytes(b"not a database at all, but a file that exists" * 100)
    with pytest.raises(BlockSourceError):
        GuardianBlockRegister(path).is_blocked(child=CHILD, guardian=GUARDIAN)


@pytest.fixture
def config(tmp_path: Path, keys: Any, kit: Any, data_dir: Path) -> Path:
    path: Path = kit.write_adapter_dir(tmp_path, keys)
    with path.open("a", encoding="utf-8") as f:
        f.write('\n[own_view]\nguardian_blocks = "guardian.db"\n'
                "release_delay_days = { lab_results = 14 }\n")
    return path


def test_the_own_view_table_is_read(config: Path) -> None:
    stores = load_stores_config(config)
    assert stores.release_delay_days == {"lab_results": 14}
    assert stores.guardian_register().path == config.parent / "guardian.db"


@pytest.mark.parametrize(("table", "message"), [
    ("release_delay_days = { alerts = 14 }", "release_delay_days"),
    ("release_delay_days = { lab_results = -1 }", "release_delay_days"),
    ("guardian_blocks = 3", "guardian_blocks"),
    ("shown_to = \"all\"", "unknown keys"),
])
def test_a_bad_own_view_table_names_itself(tmp_path: Path, keys: Any, kit: Any,
                                           table: str, message: str) -> None:
    path: Path = kit.write_adapter_dir(tmp_path, keys)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"\n[own_view]\n{table}\n")
    with pytest.raises(AdapterConfigError, match=message):
        load_stores_config(path)


def test_the_guardian_block_cli(capsys: pytest.CaptureFixture[str], config: Path,
                                kit: Any) -> None:
    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["adapter", "guardian-block", *argv, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("add", "--child", CHILD, "--guardian", GUARDIAN, "--unit", kit.UNIT,
                         "--operator", "enhetschef")
    assert (code, err) == (0, "") and "no_data" in out
    code, out, _ = run("list", "--json")
    assert [(b["child"], b["guardian"], b["unit"]) for b in json.loads(out)] == [
        (CHILD, GUARDIAN, kit.UNIT)]
    code, _, err = run("add", "--child", CHILD, "--guardian", GUARDIAN, "--unit",
                       "SE2321000999-U777", "--operator", "x")
    assert code == 1 and err.strip().count("\n") == 0 and "not a unit" in err
    code, _, err = run("add", "--child", "12345", "--guardian", GUARDIAN, "--unit", kit.UNIT,
                       "--operator", "x")
    assert code == 1 and err.strip().count("\n") == 0
    assert run("remove", "--child", CHILD, "--guardian", GUARDIAN, "--unit", kit.UNIT,
               "--operator", "x")[0] == 0
    code, out, _ = run("list", "--json")
    assert json.loads(out) == []
