"""``samsvar demo`` as a newcomer and an outside tester meet it (SPEC section 8), as processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.jose import load_private_key
from tests.conftest import MqttServer, free_port

SAMSVAR = [sys.executable, "-m", "samsvar"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SAMSVAR, *args], capture_output=True, text=True, timeout=timeout)


def test_demo_prints_a_readable_answer() -> None:
    done = run("demo")
    assert done.returncode == 0, done.stderr
    assert "3 of 3 sources answered" in done.stdout
    assert "Region Exempel" in done.stdout and "Exempel kommun" in done.stdout
    assert "Furosemid" in done.stdout


def test_demo_json_is_the_api_answer() -> None:
    done = run("demo", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) >= {"query_id", "subject", "complete", "blocked_information_exists",
                           "sources", "records"}
    assert answer["complete"] is True
    assert {s["status"] for s in answer["sources"]} <= {"ok", "no_data"}
    assert all("type" in r and "source" in r for r in answer["records"])


def test_demo_with_external_mosquitto(mosquitto: MqttServer) -> None:
    done = run("demo", "--json", "--mqtt", f"mqtt://127.0.0.1:{mosquitto.port}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["complete"] is True


def test_demo_bad_mqtt_url_is_one_line() -> None:
    done = run("demo", "--mqtt", "http://nope")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "mqtt://" in done.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    workdir = tmp_path / "work"
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([*SAMSVAR, "demo", "--serve", "--port", str(port), "--workdir",
                                 str(workdir)], stdout=sink, stderr=sink)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/producers") as resp:
                producers = json.load(resp)["producers"]
                if all(p["online"] for p in producers):
                    break
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    yield workdir, port
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0


def test_serve_writes_the_contracted_files(served: tuple[Path, int]) -> None:
    workdir, port = served
    demo = json.loads((workdir / "demo.json").read_text(encoding="utf-8"))
    assert set(demo) == {"aud", "broker_url", "participants", "producers", "persons"}
    assert demo["broker_url"] == f"http://127.0.0.1:{port}"
    kinds = {p["kind"] for p in demo["participants"] if "consumer" in p["roles"]}
    assert {"vårdgivare", "omsorgsgivare"} <= kinds
    assert any("log-extract" in p["roles"] for p in demo["participants"])
    for p in demo["participants"]:
        assert set(p) == {"id", "name", "kind", "roles", "kid", "key_file"}
        assert load_private_key(workdir / p["key_file"]).kid == p["kid"]
        assert p["key_file"] == f"keys/{p['id']}.jwk"
    for p in demo["producers"]:
        assert set(p) == {"id", "organisation", "types"}
    tags = {t for person in demo["persons"] for t in person["tags"]}
    assert {"child", "over_85", "blocked", "several_producers", "social_care",
            "sol_other"} <= tags
    readme = (workdir / "README.txt").read_text(encoding="utf-8")
    assert demo["aud"] in readme and all(p["id"] in readme for p in demo["persons"])
    assert (workdir / "registry.toml").exists()
    assert run("registry", "check", str(workdir / "registry.toml")).returncode == 0


def test_the_demo_persons_are_skatteverket_test_persons(served: tuple[Path, int],
                                                        reference: Path) -> None:
    workdir, _ = served
    demo = json.loads((workdir / "demo.json").read_text(encoding="utf-8"))
    listed = set((reference / "testpersonnummer" / "skatteverket-testpersonnummer-api-2024-07.txt")
                 .read_text(encoding="ascii").split())
    assert demo["persons"] and all(person["id"] in listed for person in demo["persons"])


def test_serve_answers_samsvar_query(served: tuple[Path, int]) -> None:
    workdir, _ = served
    done = run("query", "--workdir", str(workdir), "--as", "SE2120009999-EK01", "--subject",
               "196403013417", "--types", "social_care_interventions,care_documentation",
               "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    scopes = {r["scope"] for r in answer["records"]}
    assert answer["records"] and "sol_other" not in scopes


def test_query_refusal_is_one_line_and_non_zero(served: tuple[Path, int]) -> None:
    workdir, _ = served
    done = run("query", "--workdir", str(workdir), "--as", "SE2120009999-EK01", "--subject",
               "196403013417", "--types", "medication", "--basis", "emergency")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "emergency-care-giver-only" in done.stderr


def test_serve_needs_a_workdir() -> None:
    done = run("demo", "--serve")
    assert done.returncode != 0 and "--workdir" in done.stderr


def _serve_once(workdir: Path, *asks: str) -> None:
    """Run ``demo --serve`` on ``workdir``, ask about each person, interrupt it (SIGINT)."""
    port = free_port()
    log = workdir.parent / "demo.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen([*SAMSVAR, "demo", "--serve", "--port", str(port), "--workdir",
                                 str(workdir)], stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/producers") as resp:
                    if all(p["online"] for p in json.load(resp)["producers"]):
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for subject in asks:
            done = run("query", "--workdir", str(workdir), "--as", "SE2321000999-RE01",
                       "--subject", subject, "--types", "medication", "--json")
            assert done.returncode == 0, done.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()


def _witnessed_sizes(workdir: Path) -> dict[str, int]:
    demo = json.loads((workdir / "demo.json").read_text(encoding="utf-8"))
    sizes = {}
    for p in demo["producers"]:
        doc = json.loads((workdir / "producers" / p["id"] / "witness.json").read_text())
        sizes[p["id"]] = max(c["seq"] for c in doc["checkpoints"].values())
    return sizes


def test_log_verify_workdir_catches_a_rolled_back_demo_log(tmp_path: Path) -> None:
    """SPEC 8: serve, ask, interrupt; the checkpoint signed at the interrupt is witnessed
    by every demo producer before the demo exits; run again on the same folder (it keeps
    the log and the witnessed checkpoints); put back the older log: verify names what is
    missing."""
    workdir = tmp_path / "work"
    _serve_once(workdir, "193803039142")
    older = tmp_path / "access-log-older.db"
    shutil.copyfile(workdir / "access-log.db", older)
    kept = _entries(older)
    assert kept >= 1
    assert set(_witnessed_sizes(workdir).values()) == {kept}  # witnessed before it exited
    _serve_once(workdir, "193803039142", "196403013417")
    now = _entries(workdir / "access-log.db")
    assert now > kept  # the log continued
    assert set(_witnessed_sizes(workdir).values()) == {now}
    for witness in (workdir / "producers").glob("*/witness.json"):  # every step proven
        assert "evidence" not in json.loads(witness.read_text())
    done = run("log", "verify", "--workdir", str(workdir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"intact: {now} entries")
    assert f"from 3 of 3 witnesses, up to entry {now}" in done.stdout

    for suffix in ("-wal", "-shm"):
        (workdir / f"access-log.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(older, workdir / "access-log.db")
    done = run("log", "verify", "--workdir", str(workdir))
    assert done.returncode == 1
    assert done.stdout.startswith(f"BROKEN at entry {kept + 1}: entries {kept + 1}..{now} were "
                                  "removed from the end or rolled back"), done.stdout
    assert "producer SE2" in done.stdout


def _entries(db: Path) -> int:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM access_log_entries").fetchone()[0])
