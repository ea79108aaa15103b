"""``samsvar demo`` as a newcomer and an outside tester meet it (SPEC section 8), as processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer_client import Client
from schemas.identity import age_on
from schemas.jose import load_private_key
from schemas.messages import LOA3, Actor, Mandate, User
from schemas.records import CarePlan, UnitRef
from tests.conftest import MqttServer, free_port

SAMSVAR = [sys.executable, "-m", "samsvar"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SAMSVAR, *args], capture_output=True, text=True, timeout=timeout)


def test_demo_prints_a_readable_answer() -> None:
    done = run("demo")
    assert done.returncode == 0, done.stderr
    assert "4 of 4 sources answered" in done.stdout
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
    # the portal's port too: the default (port + 1) may be any other process's on a busy host
    with log.open("wb") as sink:
        proc = subprocess.Popen([*SAMSVAR, "demo", "--serve", "--port", str(port),
                                 "--portal-port", str(free_port()), "--workdir", str(workdir)],
                                stdout=sink, stderr=sink)
    try:
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
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, log.read_text()


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
        assert set(p) == {"id", "organisation", "types", "own_view_types", "backend"}
        assert p["own_view_types"] and set(p["own_view_types"]) <= set(p["types"])
    assert [p["backend"] for p in demo["producers"]].count("rivta") == 1
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


def test_the_rivta_person_is_answered_through_the_rivta_backend(
        served: tuple[Path, int]) -> None:
    """Issue 18: the fourth producer's records come from a RIV-TA stub over mutual TLS."""
    workdir, _ = served
    demo = json.loads((workdir / "demo.json").read_text(encoding="utf-8"))
    [rivta] = [p for p in demo["producers"] if p["backend"] == "rivta"]
    [person] = [p for p in demo["persons"] if "rivta" in p["tags"]]
    config = (workdir / "producers" / rivta["id"] / "adapter.toml").read_text(encoding="utf-8")
    assert 'kind = "rivta"' in config and "https://127.0.0.1:" in config
    done = run("query", "--workdir", str(workdir), "--as", "SE2321000999-RE01", "--subject",
               person["id"], "--types", ",".join(rivta["types"]), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    records = [r for r in answer["records"] if r["source"]["producer"] == rivta["id"]]
    assert len({r["type"] for r in records}) >= 5
    assert {"bookings", "fixed_contacts", "care_plans", "lab_results"} <= {
        r["type"] for r in records}
    assert any(r.get("approved_for_patient") is False for r in records)
    assert not any("makulerad" in json.dumps(r, ensure_ascii=False) for r in records)
    # The person's own view: the RIV-TA producer's own-view types, without the record
    # its producer did not approve for the patient (approvedForPatient false).
    done = run("own", "--workdir", str(workdir), "--subject", person["id"], "--json")
    assert done.returncode == 0, done.stderr
    own = [r for r in json.loads(done.stdout)["records"]
           if r["source"]["producer"] == rivta["id"]]
    assert {"bookings", "fixed_contacts", "care_plans"} <= {r["type"] for r in own}
    assert all(r.get("approved_for_patient", True) for r in own)
    assert all("internal_note" not in r for r in own)


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
    n = len(json.loads((workdir / "demo.json").read_text(encoding="utf-8"))["producers"])
    assert n == 4  # the RIV-TA producer witnesses too
    assert f"from {n} of {n} witnesses, up to entry {now}" in done.stdout

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


# -- the own view's demo (SPEC sections 8 and 9) ------------------------------------------

OWN_TAGS = {"sip", "bookings", "child_under_13", "teen_13_15", "protected_identity",
            "delayed", "not_for_patient"}
ADULT_TAGS = {"sip", "bookings", "delayed", "not_for_patient", "blocked", "protected_identity"}


def _portal(workdir: Path, demo: dict[str, Any]) -> Client:
    [portal] = [p for p in demo["participants"] if "citizen-portal" in p["roles"]]
    assert "log-extract" in portal["roles"]
    return Client.from_files(demo["broker_url"], workdir / portal["key_file"], portal["id"],
                             demo["aud"], User(id="-", name="-", role="-",
                                               unit=UnitRef(id="-", name="-")))


def _staff(workdir: Path, demo: dict[str, Any]) -> Client:
    asker = demo["participants"][0]
    return Client.from_files(demo["broker_url"], workdir / asker["key_file"], asker["id"],
                             demo["aud"], User(id="SE2321000999-ANLI", name="Anna Lind",
                                               role="Läkare", unit=UnitRef(
                                                   id="SE2321000999-U100", name="Akuten")))


async def test_the_own_view_demo_holds_what_spec_8_promises(
        served: tuple[Path, int]) -> None:
    workdir, _ = served
    demo = json.loads((workdir / "demo.json").read_text(encoding="utf-8"))
    today = dt.date.today()
    persons = {p["id"]: p for p in demo["persons"]}
    by_tag = {t: [p for p in demo["persons"] if t in p["tags"]] for t in OWN_TAGS}
    assert all(by_tag.values()), by_tag
    for tag in ADULT_TAGS:
        for p in (q for q in demo["persons"] if tag in q["tags"]):
            assert age_on(p["id"], today) >= 18, (tag, p)
    for child in by_tag["child_under_13"]:
        assert age_on(child["id"], today) < 13
        assert child["guardians"] and all(age_on(g, today) >= 18 for g in child["guardians"])
        assert all(g in persons for g in child["guardians"])
    assert all(13 <= age_on(p["id"], today) <= 15 for p in by_tag["teen_13_15"])
    own_types = {p["id"]: p["own_view_types"] for p in demo["producers"]}
    now = int(time.time())

    async with _portal(workdir, demo) as portal, _staff(workdir, demo) as staff:
        # the SIP: activities by the region and the municipality, own-view records at both
        [sip] = by_tag["sip"]
        me = Actor(id=sip["id"], loa=LOA3, auth_time=now)
        answer = await portal.own_query(subject=sip["id"], types=["care_plans", "bookings",
                                                                  "fixed_contacts"],
                                        actor=me, acting_as="self")
        ok = {s.producer for s in answer.sources if s.status == "ok"}
        assert {"SE2321000999-P001", "SE2120009999-VO01"} <= ok
        plans = [r for r in answer.records if isinstance(r, CarePlan) and r.plan_type == "SIP"]
        orgs = {a.responsible_org.id for p in plans for a in p.activities if a.responsible_org}
        assert {"SE2321000999-RE01", "SE2120009999-EK01"} <= orgs
        assert all(getattr(r, "internal_note", "") == "" for r in answer.records)
        # the delayed and not-for-patient records: staff see them, the person does not,
        # and every other record of theirs of a type offered in the own view is shown
        for tag in ("delayed", "not_for_patient"):
            [person] = by_tag[tag]
            types = sorted({t for ts in own_types.values() for t in ts})
            staff_answer = await staff.query(subject=person["id"], types=types,
                                             basis="consent")
            own = await portal.own_query(subject=person["id"], types=types,
                                         actor=Actor(id=person["id"], loa=LOA3, auth_time=now),
                                         acting_as="self")
            offered = {(r.source.producer, r.id) for r in staff_answer.records
                       if type(r).__struct_config__.tag in own_types[r.source.producer]}
            shown = {(r.source.producer, r.id) for r in own.records}
            hidden = offered - shown
            assert len(hidden) == 1 and shown <= offered, (tag, hidden)
            [(_, hidden_id)] = hidden
            held = next(r for r in staff_answer.records if r.id == hidden_id)
            assert type(held).__struct_config__.tag != "social_care_interventions"
            assert held.approved_for_patient is (tag != "not_for_patient")
        # a guardian reads the child; the child alone may not
        [child] = by_tag["child_under_13"]
        guardian = Actor(id=child["guardians"][0], loa=LOA3, auth_time=now)
        read = await portal.own_query(
            subject=child["id"], types=["bookings", "medication"], actor=guardian,
            acting_as="guardian",
            mandate=Mandate(source="folkbokforing", checked_at=today.isoformat()))
        assert read.acting_as == "guardian" and read.records


def test_the_readme_s_own_view_commands_work_on_the_served_demo(
        served: tuple[Path, int]) -> None:
    workdir, _ = served
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The person's own view", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.+?)\n```", section, flags=re.DOTALL)
    commands = [c for c in block.replace("\\\n", " ").splitlines()
                if c.strip() and not c.startswith("#")]
    assert len(commands) == 4
    outputs = []
    for command in commands:
        argv = shlex.split(command.replace("demo-work", str(workdir)))
        assert argv[0] == ".venv/bin/samsvar"
        done = run(*argv[1:])
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    sip, child, delayed_own, delayed_staff = outputs
    assert "SIP" in sip and "Exempel kommun" in sip and "Region Exempel" in sip
    assert "read as guardian" in child and "Astmakontroll" in child
    assert "P-PSA" not in delayed_own and "P-PSA" in delayed_staff


def test_demo_on_a_server_with_a_password_mqtt_3_and_no_shared_subscriptions(
        tmp_path: Path) -> None:
    """The flags of SPEC section 8 for clusters without MQTT 5 or $share: the credentials
    in the URL reach the server (which refuses anonymous clients) and no output shows them."""
    from tests.conftest import IN_CI, mosquitto_available, start_mosquitto

    if not mosquitto_available():
        if IN_CI:
            pytest.fail("mosquitto is not installed, and CI=true forbids skipping")
        pytest.skip("mosquitto is not installed")
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "demo", "pa:ss@w0rd"],
                   check=True, capture_output=True)
    (tmp_path / "srv").mkdir()
    # Mosquitto started as root drops to user mosquitto, who cannot read pytest's tmp dirs.
    as_root = "user root\n" if os.geteuid() == 0 else ""
    server = start_mosquitto(tmp_path / "srv", extra=f"allow_anonymous false\n"
                                                      f"password_file {passwords}\n{as_root}")
    try:
        work = tmp_path / "work"
        done = run("demo", "--json", "--workdir", str(work), "--log-level", "info",
                   "--mqtt", f"mqtt://demo:pa%3Ass%40w0rd@127.0.0.1:{server.port}",
                   "--mqtt-protocol", "3.1.1", "--no-shared-subscriptions")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["complete"] is True
        assert "w0rd" not in done.stdout + done.stderr
        broker_toml = (work / "broker.toml").read_text()
        assert 'protocol = "3.1.1"' in broker_toml and "shared_subscriptions = false" in broker_toml
        # Anonymous and wrong passwords are refused: the credentials did the work.
        bad = run("demo", "--json", "--workdir", str(tmp_path / "bad"),
                  "--mqtt", f"mqtt://demo:wrong@127.0.0.1:{server.port}", timeout=60)
        assert bad.returncode != 0 and "wrong" not in bad.stdout + bad.stderr
    finally:
        server.stop()


def test_two_demos_in_different_work_folders_share_one_server(
        tmp_path: Path, mosquitto: MqttServer) -> None:
    url = f"mqtt://127.0.0.1:{mosquitto.port}"
    procs = [subprocess.Popen([*SAMSVAR, "demo", "--json", "--workdir", str(tmp_path / name),
                               "--mqtt", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for name in ("one", "two")]
    outs = [p.communicate(timeout=90) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        answer = json.loads(out)
        assert answer["complete"] is True, answer["sources"]
        assert {s["status"] for s in answer["sources"]} <= {"ok", "no_data"}
    tomls = [(tmp_path / name / "broker.toml").read_text() for name in ("one", "two")]
    prefixes = [next(line for line in t.splitlines() if line.startswith("prefix")) for t in tomls]
    assert prefixes[0] != prefixes[1]
