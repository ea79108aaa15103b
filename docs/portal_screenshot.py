"""Retake the screenshots of "Min översikt", the demo citizen portal, in docs/.

    python docs/portal_screenshot.py [--port 8765] [--workdir /tmp/portal-demo]

Runs ``samsvar demo --serve`` in the background (the portal on port + 1), signs in on the
demo sign-in page as the test person with a SIP, and screenshots the overview in Debian's
headless Chromium (``apt-get install chromium``; Playwright only drives it) on a phone
(390x844, the top of the page and the SIP) and a desktop (1280x900, the whole page); then
signs in as a guardian and screenshots their child's overview on a phone. Writes
docs/portal-sign-in.png, docs/portal-desktop.png, docs/portal-phone.png,
docs/portal-phone-sip.png and docs/portal-phone-guardian.png, then stops the demo.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).parent


def wait_ready(url: str, demo: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if demo.poll() is not None:
            sys.exit(f"the demo exited with {demo.returncode}: {log.read_text('utf-8')}")
        try:
            with urllib.request.urlopen(f"{url}/v1/producers", timeout=2) as resp:
                if all(p["online"] for p in json.load(resp)["producers"]):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"the demo at {url} did not get ready within {timeout} s")


def sign_in(page: Page, portal: str, person: dict[str, Any]) -> None:
    page.goto(f"{portal}/")
    pid = person["id"]
    page.get_by_label(f"{person['name']}, {pid[:8]}-{pid[8:]}").check()
    page.get_by_role("button", name="Logga in som vald testperson").click()
    page.wait_for_selector("text=Inloggad:")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workdir", default="/tmp/portal-demo")
    args = parser.parse_args()
    url, portal = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.port + 1}"
    log = Path(args.workdir).with_suffix(".log")
    with log.open("wb") as sink:
        demo = subprocess.Popen([sys.executable, "-m", "samsvar", "demo", "--serve", "--port",
                                 str(args.port), "--workdir", args.workdir],
                                stdout=sink, stderr=sink)
    try:
        wait_ready(url, demo, log)
        persons = json.loads((Path(args.workdir) / "demo.json").read_text("utf-8"))["persons"]
        sip = next(p for p in persons if "sip" in p["tags"])
        child = next(p for p in persons if "child_under_13" in p["tags"])
        guardian = next((p for p in persons if p["id"] == child["guardians"][0]),
                        {"id": child["guardians"][0],
                         "name": f"Vårdnadshavare till {child['name']}"})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{portal}/")
            page.screenshot(path=DOCS / "portal-sign-in.png", full_page=True)
            sign_in(page, portal, sip)
            page.screenshot(path=DOCS / "portal-desktop.png", full_page=True)
            page.close()
            page = browser.new_page(viewport={"width": 390, "height": 844})
            sign_in(page, portal, sip)
            page.screenshot(path=DOCS / "portal-phone.png")
            page.locator("#planer").scroll_into_view_if_needed()
            page.screenshot(path=DOCS / "portal-phone-sip.png")
            page.close()
            page = browser.new_page(viewport={"width": 390, "height": 844})
            sign_in(page, portal, guardian)
            page.get_by_role("button", name=f"{child['name']} (barn").click()
            page.wait_for_selector(f"h1:has-text('{child['name']}s översikt')")
            page.screenshot(path=DOCS / "portal-phone-guardian.png")
            browser.close()
        print("wrote docs/portal-sign-in.png, portal-desktop.png, portal-phone.png, "
              "portal-phone-sip.png, portal-phone-guardian.png")
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(20)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


if __name__ == "__main__":
    main()
