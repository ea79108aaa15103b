""""Min översikt", the demo citizen portal, in a real headless Chromium (SPEC sections 8, 9).

One ``samsvar demo --serve`` process (real broker, adapters, embedded MQTT server) serves
the portal; the browser signs in as its test persons the way a person would: by the labels
on the page. A source that cannot be reached is tested with the demo's own federation
started in this process over Mosquitto, one producer's adapter left out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker import BrokerServer, load_broker_config
from consumer_client.portal import running_portal
from producer_adapter import Adapter, load_adapter_config
from samsvar.demo import build_workdir, portal_config
from schemas.registry import load_registry
from tests.browser import CONTRAST_JS, DESKTOP, PHONE, chromium
from tests.conftest import MqttServer, free_port
from tests.samsvar_cli.test_demo import SAMSVAR


@dataclass(frozen=True)
class Demo:
    workdir: Path
    broker: str
    portal: str
    info: dict[str, Any]

    def person(self, tag: str) -> dict[str, Any]:
        return next(p for p in self.info["persons"] if tag in p["tags"])

    def internal_notes(self) -> list[str]:
        """Every ``internal_note`` in the demo producers' data: never on a page."""
        notes = []
        for f in self.workdir.glob("producers/*/data/*.json"):
            data = json.loads(f.read_text(encoding="utf-8"))
            records = data if isinstance(data, list) else data.get("records", [])
            notes += [r["internal_note"] for r in records
                      if isinstance(r, dict) and r.get("internal_note")]
        return notes


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    port, portal_port = free_port(), free_port()
    tmp = tmp_path_factory.mktemp("portal")
    workdir, log = tmp / "work", tmp / "demo.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([*SAMSVAR, "demo", "--serve", "--port", str(port),
                                 "--portal-port", str(portal_port), "--workdir", str(workdir)],
                                stdout=sink, stderr=sink)
    broker, portal = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{portal_port}"
    healthy_once = False
    deadline = time.monotonic() + 40
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            if _status(f"{broker}/healthz") == 200:
                if not healthy_once:  # SPEC 8: the portal is up whenever /healthz answers
                    assert _status(f"{portal}/") == 200
                    healthy_once = True
                with urllib.request.urlopen(f"{broker}/v1/producers") as resp:
                    if all(p["online"] for p in json.load(resp)["producers"]):
                        break
            time.sleep(0.1)
        else:
            pytest.fail(f"the demo did not get ready: {log.read_text()}")
        info = json.loads((workdir / "demo.json").read_text(encoding="utf-8"))
        yield Demo(workdir=workdir, broker=broker, portal=portal, info=info)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as b:
        yield b


def pnr(pid: str) -> str:
    return f"{pid[:8]}-{pid[8:]}"


async def open_signed_in(browser: Any, demo: Demo, person: dict[str, Any],
                         viewport: dict[str, int] = DESKTOP) -> Any:
    """A new page, signed in as ``person`` by choosing them on the demo sign-in page."""
    page = await browser.new_page(viewport=viewport)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.problems = problems
    await page.goto(f"{demo.portal}/")
    assert await page.title() == "Logga in – Min översikt (demo)"
    notice = page.locator("#demo-notice")
    assert await notice.is_visible()
    assert "inte BankID och ingen e-legitimation" in await notice.inner_text()
    await page.get_by_label(f"{person['name']}, {pnr(person['id'])}").check()
    await page.get_by_role("button", name="Logga in som vald testperson").click()
    await page.wait_for_selector("text=Inloggad:")
    return page


async def texts(page: Any, selector: str) -> list[str]:
    return [" ".join(t.split()) for t in await page.locator(selector).all_inner_texts()]


async def test_a_person_with_a_sip_sees_it_first_and_bookings_and_contacts_at_both(
    demo: Demo, browser: Any,
) -> None:
    page = await open_signed_in(browser, demo, demo.person("sip"))
    assert await page.locator("h1").inner_text() == "Min översikt"
    assert await page.title() == "Min översikt (demo)"
    statuses = await page.locator("#kallor li").evaluate_all(
        "els => els.map(e => e.dataset.status)")
    assert statuses and set(statuses) <= {"ok", "no_data"}
    assert await page.locator("#incomplete").count() == 0

    first_plan = page.locator("#planer article").first
    assert "Samordnad individuell plan (SIP)" in await first_plan.inner_text()
    who = await texts(first_plan, "table.activities td[data-label='Ansvarar']")
    assert any("Region Exempel" in w for w in who), who
    assert any("Exempel kommun" in w for w in who), who
    assert "Samordnare" in await first_plan.inner_text()

    bookings = await texts(page, "#besok article")
    assert len(bookings) >= 2
    assert any("Från Region Exempel" in b for b in bookings)
    assert any("Från Exempel kommun" in b for b in bookings)
    contacts = await texts(page, "#kontakter article")
    assert any(c.startswith("Fast vårdkontakt") and "Region Exempel" in c for c in contacts)
    assert any(c.startswith("Fast omsorgskontakt") and "Exempel kommun" in c
               for c in contacts)
    assert await page.locator("#egenvard article").count() >= 1
    assert await page.locator("#lakemedel article").count() >= 1

    html = await page.content()
    notes = demo.internal_notes()
    assert notes and not [n for n in notes if n in html]
    assert page.problems == []
    await page.close()


async def test_a_guardian_switches_to_their_child_and_back(demo: Demo, browser: Any) -> None:
    child = demo.person("child_under_13")
    gid = child["guardians"][0]
    guardian = next((p for p in demo.info["persons"] if p["id"] == gid),
                    {"id": gid, "name": f"Vårdnadshavare till {child['name']}"})
    page = await open_signed_in(browser, demo, guardian)
    mine = await texts(page, "#besok article")
    await page.get_by_role("button", name=f"{child['name']} (barn").click()
    await page.wait_for_selector(f"h1:has-text('{child['name']}s översikt')")
    assert await page.get_by_role("button", name=f"{child['name']} (barn").get_attribute(
        "aria-current") == "true"
    assert f"som vårdnadshavare ({pnr(child['id'])})" in await page.locator("main").inner_text()
    theirs = await texts(page, "#besok article")
    assert theirs and theirs != mine
    assert await page.locator("#blocked").count() == 0
    statuses = await page.locator("#kallor li").evaluate_all(
        "els => els.map(e => e.dataset.status)")
    assert statuses and set(statuses) <= {"ok", "no_data"}

    await page.get_by_role("button", name="Mig själv").click()
    await page.wait_for_selector("h1:text-is('Min översikt')")
    assert await texts(page, "#besok article") == mine
    await page.close()


async def test_a_13_to_15_year_old_sees_bookings_and_contacts_only(
    demo: Demo, browser: Any,
) -> None:
    page = await open_signed_in(browser, demo, demo.person("teen_13_15"))
    headings = await texts(page, "main h2")
    assert headings == ["Varifrån uppgifterna kommer", "Kommande besök", "Mina kontakter"]
    assert await page.locator("#besok article").count() >= 1
    assert await page.locator("#refusal").count() == 0
    await page.close()


async def test_a_child_under_13_signing_in_is_told_to_ask_a_guardian(
    demo: Demo, browser: Any,
) -> None:
    page = await open_signed_in(browser, demo, demo.person("child_under_13"))
    assert "under 13 år" in await page.locator("main").inner_text()
    assert await page.locator("main h2").count() == 0
    await page.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_readable_and_accessible_on_a_phone_and_a_desktop(
    demo: Demo, browser: Any, viewport: dict[str, int],
) -> None:
    page = await browser.new_page(viewport=viewport)
    await page.goto(f"{demo.portal}/")
    # the first Tab reaches a visible skip link, which leads to the main content
    await page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    assert await skip.evaluate("e => e === document.activeElement")
    box = await skip.bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0
    await page.keyboard.press("Enter")
    assert page.url.endswith("#innehall")
    for check in ("sign-in", "overview"):
        if check == "overview":
            await page.get_by_label(f"{demo.person('sip')['name']},").check()
            await page.get_by_role("button", name="Logga in som vald testperson").click()
            await page.wait_for_selector("#planer")
        # nothing wider than the screen
        assert await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth"), check
        # landmarks, one h1, no skipped heading level
        for role in ("banner", "main", "contentinfo"):
            assert await page.get_by_role(role).count() == 1, (check, role)
        levels = await page.locator("h1, h2, h3, h4").evaluate_all(
            "els => els.map(e => Number(e.tagName[1]))")
        assert levels[0] == 1 and levels.count(1) == 1, (check, levels)
        assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), levels
        # every control has an accessible name
        unnamed = await page.locator("input:not([type=hidden]), button").evaluate_all(
            """els => els.filter(e => !(e.labels && e.labels.length) && !e.textContent.trim()
                                      && !e.getAttribute('aria-label')).length""")
        assert unnamed == 0, check
        # WCAG AA contrast for all text (4.5:1)
        worst = await page.evaluate(CONTRAST_JS)
        assert worst and worst[0][0] >= 4.5, (check, worst)
    await page.close()


async def test_signing_out(demo: Demo, browser: Any) -> None:
    page = await open_signed_in(browser, demo, demo.person("sip"))
    await page.get_by_role("button", name="Logga ut").click()
    await page.wait_for_selector("h1:text-is('Logga in i Min översikt')")
    await page.goto(f"{demo.portal}/")
    assert await page.title() == "Logga in – Min översikt (demo)"
    await page.close()



@pytest.mark.mosquitto
async def test_a_source_not_reachable_is_shown_honestly(
    mosquitto: MqttServer, unique_prefix: str, tmp_path: Path, browser: Any,
) -> None:
    """The demo's federation in this process over Mosquitto, the municipality's care
    producer's adapter never started: its source must read "not reachable"."""
    down = "SE2120009999-VO01"
    port, portal_port = free_port(), free_port()
    workdir = build_workdir(tmp_path / "work", port=port,
                            mqtt=mosquitto.settings(unique_prefix),
                            rivta=False)  # no RIV-TA stub runs here: leave its producer out
    registry = load_registry(workdir.root / "registry.toml")
    broker = BrokerServer(load_broker_config(workdir.broker_config), registry=registry)
    configs = [load_adapter_config(p) for p in workdir.adapter_configs]
    adapters = [Adapter(c, registry) for c in configs if c.producer != down]
    assert len(adapters) == len(configs) - 1
    running = [c.producer for c in configs if c.producer != down]
    shutdown = asyncio.Event()
    portal = f"http://127.0.0.1:{portal_port}"
    async with running_portal(portal_config(workdir), host="127.0.0.1", port=portal_port), \
            asyncio.TaskGroup() as tg:
        tg.create_task(broker.run(shutdown=shutdown))
        for adapter in adapters:
            tg.create_task(adapter.run(shutdown=shutdown))
        try:
            async with asyncio.timeout(30):
                await broker.started.wait()
                while not all(broker.service.presence.is_online(p) for p in running):
                    await asyncio.sleep(0.05)
            demo = Demo(workdir=workdir.root, broker=f"http://127.0.0.1:{port}", portal=portal,
                        info=workdir.demo)
            page = await open_signed_in(browser, demo, demo.person("sip"))
            source = page.locator(f'#kallor li[data-producer="{down}"]')
            assert await source.get_attribute("data-status") == "unavailable"
            assert "Gick inte att nå" in await source.inner_text()
            incomplete = page.locator("#incomplete")
            assert await incomplete.is_visible()
            assert "inte komplett" in await incomplete.inner_text()
            assert "Exempel kommun vård och omsorg" in await incomplete.inner_text()
            others = await page.locator("#kallor li").evaluate_all(
                "(els, down) => els.filter(e => e.dataset.producer !== down)"
                ".map(e => e.dataset.status)", down)
            assert others and set(others) <= {"ok", "no_data"}
            # what the region holds is still there; nothing from the missing source
            bookings = await texts(page, "#besok article")
            assert any("Från Region Exempel" in b for b in bookings)
            assert not any("Hemsjukvården" in b for b in bookings)
            await page.close()
        finally:
            shutdown.set()


def _records(demo: Demo, person: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in demo.workdir.glob(f"producers/*/data/{person}.json"):
        data = json.loads(f.read_text(encoding="utf-8"))
        out += data if isinstance(data, list) else data.get("records", [])
    return out


def _headline(record: dict[str, Any]) -> str:
    """The words a card's heading shows for a record."""
    for name in ("display", "drug", "analysis", "activity", "title", "intervention"):
        if record.get(name):
            return str(record[name])
    raise AssertionError(record)


async def test_what_is_not_for_the_patient_or_not_yet_due_never_shows(
    demo: Demo, browser: Any,
) -> None:
    for tag, withheld_if in (
        ("not_for_patient", lambda r: r.get("approved_for_patient") is False),
        ("delayed", lambda r: r["type"] == "lab_results"
         and r["time"][:10] >= (dt.date.today() - dt.timedelta(days=14)).isoformat()),
    ):
        person = demo.person(tag)
        records = [r for r in _records(demo, person["id"]) if r["type"] in (
            "diagnoses", "lab_results", "medication")]
        withheld = [_headline(r) for r in records if withheld_if(r)]
        shown = [_headline(r) for r in records if not withheld_if(r)]
        assert withheld and shown, tag
        page = await open_signed_in(browser, demo, person)
        main = await page.locator("main").inner_text()
        assert all(w not in main for w in withheld), (tag, withheld)
        assert all(s in main for s in shown), (tag, shown)
        # nothing hints that something is held back
        assert "väntar" not in main and "fördröj" not in main.lower()
        await page.close()


async def test_a_person_with_protected_identity_sees_their_own(
    demo: Demo, browser: Any,
) -> None:
    page = await open_signed_in(browser, demo, demo.person("protected_identity"))
    assert await page.locator("#refusal").count() == 0
    assert await page.locator("#besok article").count() >= 1
    await page.close()


async def test_a_unit_barring_a_guardian_makes_its_source_look_like_no_data(
    demo: Demo, browser: Any,
) -> None:
    child = demo.person("child_under_13")
    barred = child["guardians"][-1]
    region = "SE2321000999-P001"
    cli = await asyncio.create_subprocess_exec(
        *SAMSVAR, "adapter", "guardian-block", "add", "--config",
        str(demo.workdir / "producers" / region / "adapter.toml"), "--child", child["id"],
        "--guardian", barred, "--unit", "SE2321000999-U400",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await cli.communicate()
    assert cli.returncode == 0, stderr.decode()
    guardian = next((p for p in demo.info["persons"] if p["id"] == barred),
                    {"id": barred, "name": f"Vårdnadshavare till {child['name']}"})
    page = await open_signed_in(browser, demo, guardian)
    await page.get_by_role("button", name=f"{child['name']} (barn").click()
    await page.wait_for_selector(f"h1:has-text('{child['name']}s översikt')")
    source = page.locator(f'#kallor li[data-producer="{region}"]')
    assert await source.get_attribute("data-status") == "no_data"
    assert "inga uppgifter att visa" in await source.inner_text()
    assert await page.locator("#incomplete").count() == 0
    assert await page.locator("#besok article").count() == 0
    await page.close()


def _free_pair() -> int:
    """A port P with P + 1 free as well (both bound once, then released)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two neighbouring free ports")


def test_the_portal_port_defaults_to_the_broker_s_port_plus_one(tmp_path: Path) -> None:
    port = _free_pair()
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([*SAMSVAR, "demo", "--serve", "--port", str(port),
                                 "--workdir", str(tmp_path / "work")], stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 40
        while _status(f"http://127.0.0.1:{port}/healthz") != 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/", timeout=5) as resp:
            page = resp.read().decode("utf-8")
        assert "<title>Logga in – Min översikt (demo)</title>" in page
        # once everything is up, the demo says where the portal is
        while f"http://127.0.0.1:{port + 1}/" not in log.read_text(encoding="utf-8"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen([*SAMSVAR, "demo", "--serve", *args], stdout=sink, stderr=sink)


def test_a_taken_default_portal_port_gives_way_to_a_free_one(tmp_path: Path) -> None:
    port = _free_pair()
    log = tmp_path / "demo.log"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port + 1))
        squatter.listen()
        proc = _start(["--port", str(port), "--workdir", str(tmp_path / "work")], log)
        try:
            deadline = time.monotonic() + 40
            while "Min översikt (the demo citizen portal): " not in log.read_text("utf-8"):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            text = log.read_text("utf-8")
            assert f"port {port + 1} (the broker's + 1) is taken" in " ".join(text.split())
            url = text.split("Min översikt (the demo citizen portal): ", 1)[1].split()[0]
            assert url != f"http://127.0.0.1:{port + 1}/"
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert "Logga in i Min översikt" in resp.read().decode("utf-8")
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0, log.read_text()


def test_a_taken_portal_port_asked_for_is_one_line_and_non_zero(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        proc = _start(["--port", str(free_port()), "--portal-port", str(taken), "--workdir",
                       str(tmp_path / "work")], log)
        assert proc.wait(40) == 1
    lines = [ln for ln in log.read_text("utf-8").splitlines() if ln.startswith("samsvar:")]
    assert len(lines) == 1 and f"127.0.0.1:{taken}" in lines[0] and "--portal-port" in lines[0]
