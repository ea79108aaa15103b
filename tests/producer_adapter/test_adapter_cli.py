"""``samsvar adapter block …`` and ``samsvar adapter log``: exit codes and messages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from producer_adapter import (
    Adapter,
    AdapterConfig,
    InMemoryBlockSource,
    JsonDirBackend,
    SqliteBlockRegister,
    SqliteDisclosureLog,
)
from samsvar import cli
from schemas.messages import Unblock
from schemas.registry import Registry
from transport.settings import MqttSettings


@pytest.fixture
def config(tmp_path: Path, keys: Any, kit: Any, data_dir: Path) -> Path:
    return kit.write_adapter_dir(tmp_path, keys)  # type: ignore[no-any-return]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["adapter", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def block(capsys: pytest.CaptureFixture[str], config: Path, action: str,
          *argv: str) -> tuple[int, str, str]:
    return run(capsys, "block", action, "--config", str(config), *argv)


def add(capsys: pytest.CaptureFixture[str], config: Path, subject: str, level: str,
        target: str, *argv: str) -> tuple[int, str, str]:
    return block(capsys, config, "add", "--subject", subject, "--level", level,
                 "--target", target, *(argv or ("--registered-by", "person")))


def test_add_list_remove(capsys: pytest.CaptureFixture[str], config: Path, kit: Any) -> None:
    code, out, err = add(capsys, config, "19500118-2046", "unit", kit.UNIT_2,
                         "--registered-by", "person", "--note", "per brev",
                         "--operator", "handläggare 1")
    assert (code, err) == (0, "")
    assert out == (f"block #1 added: {kit.PERSON} unit {kit.UNIT_2} (registered by the "
                   "person; entered by handläggare 1)\n")
    assert add(capsys, config, kit.PERSON, "organisation", kit.ORG)[0] == 0
    assert add(capsys, config, kit.PERSON_2, "care_process", "VP-9")[0] == 0

    code, out, _ = block(capsys, config, "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(b["id"], b["subject"], b["level"], b["target"]) for b in listed] == [
        (1, kit.PERSON, "unit", kit.UNIT_2), (2, kit.PERSON, "organisation", kit.ORG),
        (3, kit.PERSON_2, "care_process", "VP-9")]
    assert listed[0]["registered_by"] == "person" and listed[0]["note"] == "per brev"
    assert listed[0]["operator"] == "handläggare 1" and listed[1]["operator"]  # the OS user

    code, out, _ = block(capsys, config, "list", "--subject", kit.PERSON_2)
    assert code == 0 and "VP-9" in out and kit.UNIT_2 not in out

    code, out, err = block(capsys, config, "remove", "--subject", kit.PERSON, "--level", "unit",
                           "--target", kit.UNIT_2, "--operator", "handläggare 2",
                           "--note", "personen häver spärren")
    assert (code, err) == (0, "")
    assert out.startswith(f"block #1 removed: {kit.PERSON} unit {kit.UNIT_2}")
    assert block(capsys, config, "remove", "--id", "3")[0] == 0

    code, out, _ = block(capsys, config, "list", "--json")
    assert [b["id"] for b in json.loads(out)] == [2]
    code, out, _ = block(capsys, config, "list", "--history", "--json",
                         "--subject", kit.PERSON)
    history = json.loads(out)
    assert [(e["action"], e["block_id"]) for e in history] == [
        ("added", 1), ("added", 2), ("removed", 1)]
    assert history[2]["operator"] == "handläggare 2"
    assert history[2]["note"] == "personen häver spärren"
    code, out, _ = block(capsys, config, "list", "--history")
    assert code == 0 and "removed" in out


@pytest.mark.parametrize("argv, message", [
    (("CHILD", "unit", "UNIT", "--registered-by", "guardian"),
     "samsvar: a guardian (vårdnadshavare) cannot block a child's information (Lag 2022:913)\n"),
    (("PERSON", "unit", "SE2321000999-U777"),
     ("samsvar: unit 'SE2321000999-U777' is not a unit of producer SE2321000999-P001 in the "
      "registry (its units: SE2321000999-U100, SE2321000999-U200); add the unit to the "
      "registry first\n")),
    (("PERSON", "organisation", "SE2120009999-EK01"),
     ("samsvar: organisation 'SE2120009999-EK01' is not the organisation of producer "
      "SE2321000999-P001 (SE2321000999-RE01): a producer registers blocks on its own "
      "organisation only\n")),
    (("195001182047", "unit", "UNIT"),
     "samsvar: subject: identity number fails its check digit\n"),
])
def test_refusals_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], config: Path,
                                          kit: Any, argv: tuple[str, ...],
                                          message: str) -> None:
    subject, level, target, *rest = argv
    subject = getattr(kit, subject, subject)
    target = getattr(kit, target, target)
    code, out, err = add(capsys, config, subject, level, target, *rest)
    assert (code, out, err) == (1, "", message)
    register = SqliteBlockRegister(config.parent / "blocks.db")
    assert not register.path.exists() or register.blocks() == []


def test_more_refusals(capsys: pytest.CaptureFixture[str], config: Path, kit: Any) -> None:
    assert add(capsys, config, kit.PERSON, "unit", kit.UNIT)[0] == 0
    code, _, err = add(capsys, config, kit.PERSON, "unit", kit.UNIT)
    assert code == 1 and err == (f"samsvar: {kit.PERSON} already has a unit block on "
                                 f"{kit.UNIT} (block #1)\n")
    code, _, err = block(capsys, config, "remove", "--id", "7")
    assert (code, err) == (1, "samsvar: no block #7 in the register\n")
    code, _, err = block(capsys, config, "remove", "--subject", kit.PERSON)
    assert code == 1 and "give --id, or all of --subject, --level and --target" in err
    code, _, err = block(capsys, config, "remove", "--id", "1", "--subject", kit.PERSON)
    assert code == 1 and "not both" in err
    assert block(capsys, config, "list", "--json")[1].count('"id"') == 1


def test_unreadable_register(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, _, err = block(capsys, config, "list")
    assert code == 1
    assert err.startswith("samsvar: ") and "the block register does not exist" in err
    assert err.count("\n") == 1
    code, out, _ = block(capsys, config, "init")
    assert code == 0 and "block register ready (0 blocks in force)" in out
    assert block(capsys, config, "list", "--json")[:2] == (0, "[]\n")
    (config.parent / "blocks.db").write_bytes(b"garbage" * 1000)
    code, _, err = block(capsys, config, "list")
    assert code == 1 and "block register unusable: file is not a database" in err


def test_config_without_an_sqlite_register(capsys: pytest.CaptureFixture[str],
                                           config: Path) -> None:
    text = config.read_text()
    config.write_text(text.replace('kind = "sqlite"\npath = "blocks.db"\nlock_timeout = 0.2',
                                   'kind = "json_file"\npath = "blocks.json"'))
    code, _, err = block(capsys, config, "list")
    assert code == 1 and "read-only seed format" in err
    config.write_text(text[: text.index("[blocks]")])
    code, _, err = block(capsys, config, "list")
    assert code == 1 and "no [blocks] table" in err
    code, _, err = block(capsys, config.parent / "nope.toml", "list")
    assert code == 1 and "cannot read config" in err


def test_commands_never_read_the_key(capsys: pytest.CaptureFixture[str], config: Path,
                                     kit: Any) -> None:
    (config.parent / "keys" / f"{kit.PRODUCER}.jwk").unlink()
    assert add(capsys, config, kit.PERSON, "unit", kit.UNIT)[0] == 0
    assert block(capsys, config, "list")[0] == 0


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], config: Path, kit: Any) -> None:
    for argv in (["adapter"],
                 ["adapter", "block"],
                 ["adapter", "block", "add", "--config", str(config)],
                 ["adapter", "block", "add", "--config", str(config), "--subject", kit.PERSON,
                  "--level", "unit", "--target", kit.UNIT, "--registered-by", "neighbour"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_bare_adapter_still_runs_the_daemon(monkeypatch: pytest.MonkeyPatch,
                                            config: Path) -> None:
    seen: list[argparse.Namespace] = []

    def daemon(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(cli, "cmd_adapter", daemon)
    assert cli.main(["adapter", "--config", str(config), "--log-format", "console"]) == 0
    [args] = seen
    assert args.config == str(config) and args.log_format == "console"


async def test_log_shows_what_was_given_to_whom(
    capsys: pytest.CaptureFixture[str], config: Path, keys: Any, kit: Any,
    registry: Registry, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    code, _, err = run(capsys, "log", "--config", str(config))
    assert code == 1 and "there is no disclosure log" in err
    cfg = AdapterConfig(**kit.adapter_config_kwargs(keys, MqttSettings()),
                        disclosure_log=Path("disclosures.db"), base=config.parent)
    adapter = Adapter(cfg, registry, backend=JsonDirBackend.load(data_dir, kit.PRODUCER),
                      blocks=InMemoryBlockSource())
    questions = [kit.make_question(), kit.make_question(subject=kit.PERSON_2),
                 kit.make_question(unblock=Unblock(step="locate"), basis="emergency")]
    for q in questions:
        await adapter.answer(kit.sign_question(q, keys.broker))
    capsys.readouterr()  # the adapter's own log lines

    code, out, err = run(capsys, "log", "--config", str(config), "--json")
    assert (code, err) == (0, "")
    entries = json.loads(out)
    assert [e["query_id"] for e in entries] == [q.query_id for q in questions]
    assert entries[0]["disclosed"] == {"alerts": 1, "medication": 1,
                                       "social_care_interventions": 1}
    assert entries[0]["consumer"] == {"id": kit.ORG, "name": "Region Exempel"}
    assert entries[0]["user"]["role"] == "läkare" and entries[0]["status"] == "ok"
    assert entries[2]["basis"] == "emergency" and entries[2]["unblock"] == "locate"

    code, out, _ = run(capsys, "log", "--config", str(config), "--json", "--subject",
                       "19500118-2061")
    assert [e["query_id"] for e in json.loads(out)] == [questions[1].query_id]
    code, out, _ = run(capsys, "log", "--config", str(config), "--json", "--limit", "1")
    assert [e["query_id"] for e in json.loads(out)] == [questions[2].query_id]

    code, out, _ = run(capsys, "log", "--config", str(config))
    assert code == 0
    for text in ("Disclosure log", "Doktor Test, läkare", "unblock locate", "medication 1",
                 questions[0].query_id[:19]):
        assert text in out
    assert len(SqliteDisclosureLog(config.parent / "disclosures.db").entries()) == 3
    code, _, err = run(capsys, "log", "--config", str(config), "--limit", "0")
    assert code == 1 and "--limit must be at least 1" in err
