"""``samsvar demo`` as a newcomer and an outside tester meet it (SPEC section 8), as processes."""

from __future__ import annotations

import json
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
