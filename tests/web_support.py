"""Debian's Chromium driven by Playwright against a running gateway's page (tests/test_web*.py).

The browser is the distribution's (``/usr/bin/chromium``, which .ci/run installs); Playwright
never downloads one. Tests skip, saying why, only where that binary is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "build" / "screenshots"
#: A tablet in landscape, the size the page is designed for.
VIEWPORT = {"width": 1280, "height": 800}

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; "
    ".ci/run does)",
)


@contextlib.asynccontextmanager
async def browser_page(url: str, errors: list[str] | None = None) -> AsyncIterator[Page]:
    """A fresh Chromium page at ``url``; JavaScript errors are appended to ``errors``."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            page.set_default_timeout(10_000)  # every wait on the page is bounded
            if errors is not None:
                page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)
            yield page
        finally:
            await browser.close()


async def screenshot(
    page: Page, name: str, selector: str | None = None, full_page: bool = True
) -> Path:
    """Saved under build/screenshots/ (a test artefact, not committed; docs/img/operator-page.png
    is ``alarm-view.png``, reduced to 64 colours)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if selector is None:
        await page.screenshot(path=str(path), full_page=full_page)
    else:
        await page.locator(selector).screenshot(path=str(path))
    return path


#: Runs in the page: every visible text node's contrast against the background behind it
#: (WCAG 2 relative luminance), the failures as "text: ratio".
CONTRAST_JS = """() => {
  const lum = (c) => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const opaque = (c) => { const m = c.match(/[\\d.]+/g); return m && (m.length < 4 || Number(m[3]) > 0.5); };
  const bg = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
      if (opaque(c)) return c; } return 'rgb(255, 255, 255)'; };
  const bad = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const e = n.parentElement, text = n.textContent.trim();
    if (!text || !e.getClientRects().length) continue;
    const s = getComputedStyle(e);
    if (s.visibility === 'hidden' || e.closest('[hidden], dialog:not([open])')) continue;
    const a = lum(s.color), b = lum(bg(e)), ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && Number(s.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${text.slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return bad;
}"""

#: Form controls without a label and buttons without a name (what a screen reader would say).
UNLABELLED_JS = """() => [...document.querySelectorAll('input, select, button')].filter((e) =>
    !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
  .map((e) => e.outerHTML.slice(0, 80))"""
