"""The operator dashboard: ``GET /`` (HTML) and ``GET /v1/dashboard`` (its data).

The browser test opens the page in Debian's headless Chromium (driven by Playwright, never
``playwright install``): a producer that goes offline must show as offline without a reload.
Under ``CI=true`` a missing Chromium fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.browser import chromium as launch_chromium
from tests.e2e.conftest import (
    PERSON,
    USER,
    Federation,
    ProducerSpec,
    record,
)

SECRET = "Zebrafeber-9071"


def specs() -> list[ProducerSpec]:
    return [ProducerSpec("P1", records={PERSON: [
        record("P1", 1, when="2026-11-01T10:00:00+01:00", text=SECRET)]}), ProducerSpec("P2")]


async def get(fed: Federation, path: str) -> tuple[int, dict[str, str], str]:
    assert fed.http is not None
    async with fed.http.get(f"{fed.url}{path}") as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_dashboard_data_shows_presence_latency_and_refusals(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory(specs())
    await fed.start_broker()
    await fed.start_adapter("P1")
    await fed.wait_presence("P1")
    for _ in range(3):
        await fed.ask()
    assert (await fed.post(fed.token(relation=False)))[0] == 403

    status, headers, body = await get(fed, "/v1/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "no-store"
    d = json.loads(body)
    assert d["broker"] == fed.registry.broker.id and d["mqtt_connected"] is True
    assert d["in_flight"] == 0 and d["window_s"] == 300
    q = d["queries"]
    assert (q["answered"], q["refused"], q["error"]) == (3, 1, 0)
    assert q["reasons"] == {"relation-required": 1}
    assert q["p50_ms"] is not None and q["access_log_p95_ms"] is not None
    p1, p2 = d["producers"]
    assert p1["id"] == "P1" and p1["online"] is True and p1["changed_at"] > 0
    assert p1["statuses"] == {"ok": 3} and p1["replies"] == 3 and p1["error_rate"] == 0.0
    assert 0 < p1["p50_ms"] <= p1["p95_ms"]
    assert p2["id"] == "P2" and p2["online"] is False and p2["changed_at"] is None
    assert p2["statuses"] == {"unavailable": 3} and p2["error_rate"] is None
    assert p2["p50_ms"] is None
    for secret in (SECRET, PERSON, USER.name):
        assert secret not in body


async def test_dashboard_page_is_server_rendered_and_self_contained(
    federation_factory: Any,
) -> None:
    fed: Federation = await federation_factory(specs())
    await fed.start_broker()
    await fed.start_adapter("P1")
    await fed.wait_presence("P1")
    await fed.ask()

    status, headers, page = await get(fed, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<title>samsvar — broker</title>" in page
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "connect-src 'self'" in csp
    assert re.search(r'<tr data-producer="P1" data-online="true">.*?'
                     r'<td class="status online">online</td>', page)
    assert re.search(r'<tr data-producer="P2" data-online="false">.*?'
                     r'<td class="status offline">offline</td>.*?never seen', page)
    # no external assets: nothing is loaded from anywhere but this page and its JSON
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page
    for secret in (SECRET, PERSON, USER.name):
        assert secret not in page


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Debian Chromium driven by Playwright (tests/browser.py)."""
    async with launch_chromium() as browser:
        yield browser


async def test_a_producer_going_offline_shows_without_a_reload(
    federation_factory: Any, chromium: Any,
) -> None:
    fed: Federation = await federation_factory(specs())
    await fed.start_broker()
    for pid in fed.producers:
        await fed.start_adapter(pid)
        await fed.wait_presence(pid)
    await fed.ask()

    page = await chromium.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(f"{fed.url}/")
    assert await page.title() == "samsvar — broker"
    p1 = page.locator('tr[data-producer="P1"] td.status')
    assert await p1.text_content() == "online"
    await page.evaluate("window.__loaded_once = true")  # gone if the page reloads

    await fed.stop_adapters("P1")
    await fed.wait_presence("P1", online=False)
    await page.wait_for_function(
        """() => document.querySelector('tr[data-producer="P1"] td.status')
                   .textContent === "offline" """, timeout=10_000)
    assert await p1.get_attribute("class") == "status offline"
    assert await page.locator('tr[data-producer="P2"] td.status').text_content() == "online"
    assert await page.evaluate("window.__loaded_once") is True
    assert await page.locator("#mqtt").text_content() == "connected"
    assert problems == [], problems  # e.g. a CSP refusal of the inline script
    await page.close()
