"""``samsvar log verify | extract | prune`` on a SQLite log beside a broker config."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.accesslog import AccessLogConfig, open_access_log
from samsvar.cli import main
from schemas.jose import PrivateKey, generate_key

from .conftest import OTHER, PERSON, T0, make_entry

DAY = dt.timedelta(days=1)


def inline(jwk: dict[str, str]) -> str:
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in jwk.items()) + " }"


def run(argv: Sequence[str]) -> int:
    """``samsvar log ...``, through the real entry point (argparse exits 2 on bad usage)."""
    try:
        return main(["log", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)


@dataclass
class Broker:
    dir: Path
    key: PrivateKey

    @property
    def config(self) -> str:
        return str(self.dir / "broker.toml")

    @property
    def db(self) -> Path:
        return self.dir / "access-log.db"


def make_broker(tmp_path: Path, *, access_log: str = "") -> Broker:
    key = generate_key()
    (tmp_path / "broker.jwk").write_text(json.dumps(key.to_jwk()))
    (tmp_path / "registry.toml").write_text(
        f'[broker]\nid = "SE0000000000-TEST"\nkeys = [{inline(key.public.to_jwk())}]\n')
    (tmp_path / "broker.toml").write_text(
        '[broker]\nregistry = "registry.toml"\nkey = "broker.jwk"\ninstance = "broker-1"\n'
        + access_log)
    return Broker(tmp_path, key)


def fill(broker: Broker, count: int, *, db: Path | None = None) -> None:
    async def go() -> None:
        log = open_access_log(AccessLogConfig(path=db or broker.db), key=broker.key,
                              instance="broker-1")
        await log.open()
        for n in range(1, count + 1):
            entry = make_entry(n, subject=PERSON if n % 2 else OTHER, time=T0 + n * DAY,
                               outcome="answered" if n != 3 else "refused")
            await log.append(entry)
        await log.close()

    asyncio.run(go())


@pytest.fixture
def broker(tmp_path: Path) -> Broker:
    broker = make_broker(tmp_path)
    fill(broker, 6)
    return broker


def test_verify_an_intact_log(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", "--config", broker.config]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "intact: 6 entries, 1 checkpoints (0 after the last checkpoint, not yet signed)",
        ("  no witness given: a log cut short or an older copy put back cannot be told from "
         "the database alone (use --witness FILE, or --workdir DIR for the demo)"),
        f"  key {broker.key.kid}: checkpoints up to entry 6"]


def test_verify_names_the_first_broken_entry(broker: Broker,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with closing(sqlite3.connect(broker.db)) as conn, conn:
        conn.execute("UPDATE access_log_entries SET body = replace(body, 'Anna', 'Anne') "
                     "WHERE seq = 4")
    assert run(["verify", "--config", broker.config]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("BROKEN at entry 4: entry 4 was changed")


def test_extract_as_a_table(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["extract", "--config", broker.config, "--subject", PERSON]) == 0
    out = capsys.readouterr().out
    for text in ("Region Exempel", "Akutmottagningen", "Anna Lind", "Läkare", "consent",
                 "medication", "1 alerts", "refused", "answered", "Accesses to"):
        assert text in out, text
    assert OTHER not in out


def test_extract_as_json_with_a_period(broker: Broker,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    first, last = (T0 + 3 * DAY).date(), (T0 + 5 * DAY).date()
    assert run(["extract", "--config", broker.config, "--subject", PERSON, "--json",
                "--from", first.isoformat(), "--to", last.isoformat()]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["subject"] == PERSON
    assert doc["period"] == {"from": first.isoformat(), "to": last.isoformat()}
    assert [a["query_id"] for a in doc["accesses"]] == ["q-0003", "q-0005"]
    assert doc["accesses"][0]["outcome"] == "refused"


def test_extract_accepts_a_dashed_number(broker: Broker,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    dashed = f"{PERSON[:8]}-{PERSON[8:]}"
    assert run(["extract", "--config", broker.config, "--subject", dashed, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["accesses"]) == 3


def test_prune_then_verify(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    before = (T0 + 3 * DAY).date().isoformat()  # entries 1 and 2 are older
    assert run(["prune", "--config", broker.config, "--before", before]) == 0
    assert capsys.readouterr().out.startswith("pruned 2 entries before")
    assert run(["verify", "--config", broker.config]) == 0
    assert capsys.readouterr().out.startswith("intact: 4 entries")
    assert run(["prune", "--config", broker.config, "--older-than-days", "0"]) == 0
    assert capsys.readouterr().out.startswith("pruned 4 entries")
    assert run(["verify", "--config", broker.config]) == 0
    assert capsys.readouterr().out.startswith("intact: 0 entries")


def test_prune_refuses_a_broken_log(broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    with closing(sqlite3.connect(broker.db)) as conn, conn:
        conn.execute("DELETE FROM access_log_entries WHERE seq = 2")
    assert run(["prune", "--config", broker.config, "--older-than-days", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to prune a broken log" in err
    with closing(sqlite3.connect(broker.db)) as conn:
        assert conn.execute("SELECT count(*) FROM access_log_entries").fetchone() == (5,)


def test_the_access_log_table_of_the_config_is_used(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    broker = make_broker(tmp_path, access_log='\n[access_log]\npath = "logs/audit.db"\n')
    (tmp_path / "logs").mkdir()
    fill(broker, 2, db=tmp_path / "logs/audit.db")
    capsys.readouterr()
    assert run(["verify", "--config", broker.config]) == 0
    assert capsys.readouterr().out.startswith("intact: 2 entries")


@pytest.mark.parametrize(("argv", "message"), [
    (["verify", "--config", "{dir}/nope.toml"], "cannot read"),
    (["verify", "--config", "{dir}/broker.toml"], "no access log"),
    (["extract", "--config", "{dir}/broker.toml", "--subject", "12345"], "--subject"),
    (["extract", "--config", "{dir}/broker.toml", "--subject", PERSON,
      "--from", "2025-03-05", "--to", "2025-03-01"], "--from is after --to"),
])
def test_errors_are_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        argv: list[str], message: str) -> None:
    make_broker(tmp_path)  # no log written
    assert run([a.format(dir=tmp_path) for a in argv]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert captured.err.startswith("samsvar: ")


def test_bad_usage_exits_2(broker: Broker) -> None:
    assert run(["prune", "--config", broker.config]) == 2  # needs --before or --older-than-days
    assert run(["extract", "--config", broker.config, "--subject", PERSON,
                "--from", "yesterday"]) == 2


def test_a_rotated_broker_key_keeps_its_checkpoints_verifiable_when_retired(
        broker: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    """The story of docs/operations.md: the broker switches from key A to key B. With A
    only removed, its checkpoints no longer verify; with A in ``retired_keys`` up to the
    last entry it signed, they do, and a checkpoint A signs beyond that (a leaked key)
    breaks the log."""
    old = broker.key
    new = Broker(broker.dir, generate_key())
    (broker.dir / "broker.jwk").write_text(json.dumps(new.key.to_jwk()))
    registry = broker.dir / "registry.toml"

    def register(retired: str = "") -> None:
        registry.write_text(f'[broker]\nid = "SE0000000000-TEST"\n'
                            f"keys = [{inline(new.key.public.to_jwk())}]\n{retired}")

    register()
    fill(new, 2)  # entries 7 and 8, and a checkpoint signed with B at 8
    capsys.readouterr()
    assert run(["verify", "--config", broker.config]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN at entry 6: the checkpoint at entry 6 is not signed by the "
                          "broker") and old.kid in out

    register(f"retired_keys = [{{ key = {inline(old.public.to_jwk())}, last_seq = 6 }}]\n")
    assert run(["verify", "--config", broker.config]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "intact: 8 entries, 2 checkpoints (0 after the last checkpoint, not yet signed)",
        ("  no witness given: a log cut short or an older copy put back cannot be told from "
         "the database alone (use --witness FILE, or --workdir DIR for the demo)"),
        f"  key {old.kid} (retired): checkpoints up to entry 6",
        f"  key {new.key.kid}: checkpoints up to entry 8",
    ]

    fill(broker, 1)  # the old key signs again: entry 9 and a checkpoint at 9
    capsys.readouterr()
    assert run(["verify", "--config", broker.config]) == 1
    assert capsys.readouterr().out.strip() == (
        f"BROKEN at entry 9: the checkpoint at entry 9 is signed with the retired key "
        f"{old.kid!r}, which vouches only up to entry 6")
