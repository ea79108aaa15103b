"""Debian's headless Chromium, driven by Playwright, for the tests of web pages.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (``apt-get install
chromium``). Where it or the playwright package is missing the test is skipped, and under
``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import pytest

from tests.conftest import IN_CI

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync"]
PHONE: Final = {"width": 390, "height": 844}
DESKTOP: Final = {"width": 1280, "height": 900}


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched browser; skips (fails under CI=true) when Chromium or Playwright is absent."""
    reason = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason}, and CI=true forbids skipping the browser test")
        pytest.skip(reason)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


CONTRAST_JS: Final = """() => {
  // WCAG 2 contrast of every element's own text against its effective background.
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const worst = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const st = getComputedStyle(el);
    if (!own || st.visibility === "hidden" || st.display === "none") continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || r.right < 0) continue;  // off-screen (skip link)
    const fg = lum(rgb(st.color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    worst.push([Math.round(ratio * 100) / 100, el.tagName, el.textContent.trim().slice(0, 40)]);
  }
  return worst.sort((a, b) => a[0] - b[0]).slice(0, 5);
}"""
"""Evaluate in a page: the five lowest contrast ratios, as ``[ratio, tag, text]``."""
