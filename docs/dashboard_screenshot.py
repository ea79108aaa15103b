"""Retake docs/dashboard.png: the operator dashboard during the demo.

    python docs/dashboard_screenshot.py [--port 8765] [--workdir /tmp/dash] \
        [--out docs/dashboard.png]

Runs ``samsvar demo --serve`` in the background, sends a few queries with ``samsvar query``
(two of them refused), screenshots ``GET /`` at 1280x800 in Debian's headless Chromium
(``apt-get install chromium``; Playwright only drives it), then stops the demo.
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

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REGION, MUNICIPALITY = "SE2321000999-RE01", "SE2120009999-EK01"
QUERIES = [
    [REGION, "193803039142", "medication,alerts,care_plans"],
    [REGION, "201503012385", "medication,alerts", "--basis", "child"],
    [MUNICIPALITY, "196403013417", "care_documentation,social_care_interventions"],
    [REGION, "199103012382", "medication,care_documentation"],
    [REGION, "193803039142", "medication", "--no-relation"],  # refused: relation-required
    [REGION, "193803039142", "medication", "--basis", "child"],  # refused: child-under-18
    [MUNICIPALITY, "193803039142", "medication,care_plans"],
]


def wait_ready(url: str, demo: subprocess.Popen[bytes], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if demo.poll() is not None:
            sys.exit(f"the demo exited with {demo.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v1/producers", timeout=2) as resp:
                if all(p["online"] for p in json.load(resp)["producers"]):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"the demo at {url} did not get ready within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workdir", default="/tmp/dash")
    parser.add_argument("--out", default=str(Path(__file__).with_name("dashboard.png")))
    args = parser.parse_args()
    samsvar = [sys.executable, "-m", "samsvar"]
    url = f"http://127.0.0.1:{args.port}"
    demo = subprocess.Popen([*samsvar, "demo", "--serve", "--port", str(args.port),
                             "--workdir", args.workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, demo)
        for issuer, subject, types, *extra in QUERIES:
            subprocess.run([*samsvar, "query", "--workdir", args.workdir, "--as", issuer,
                            "--subject", subject, "--types", types, *extra],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/")
            page.wait_for_timeout(2000)  # let it poll once, as an operator would see it
            page.screenshot(path=args.out)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(20)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


if __name__ == "__main__":
    main()
