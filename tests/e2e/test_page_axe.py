"""axe-core (vendored for the tests, tests/support/vendor/README.md) over every page of the
household page in Japanese and English, at phone (390 px) and desktop (1280 px) widths, with
every <details> opened and a confirmation showing: no serious or critical violation.
Fixtures come from test_page_household."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.e2e.test_page_energy import _feed
from tests.e2e.test_page_household import CODE, Site, _log_in
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site
from tests.e2e.test_page_released_values import _hold

pytestmark = pytest.mark.chromium
AXE = Path(__file__).resolve().parents[1] / "support" / "vendor" / "axe.min.js"
PAGES = ("/", "/released", "/history", "/rights", "/energy")
WIDTHS = (390, 1280)
SEVERE = ("serious", "critical")


async def _axe(page: Page, source: str) -> list[dict[str, Any]]:
    """Run axe on the page as it is (all <details> opened first); its violations."""
    await page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(source)  # by the driver: the page's own CSP allows no inline script
    result: dict[str, Any] = await page.evaluate(
        "axe.run(document, {resultTypes: ['violations']})")
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def _severe(where: str, violations: list[dict[str, Any]]) -> list[str]:
    return [f"{where}: {v['id']} ({v['impact']}): "
            + json.dumps([n["target"] for n in v["nodes"]][:3], ensure_ascii=False)
            for v in violations if v["impact"] in SEVERE]


async def test_no_serious_violation_on_any_page(site: Site) -> None:
    source = await asyncio.to_thread(AXE.read_text, encoding="utf-8")
    _feed(site)  # the energy page with its charts
    _hold(site)  # releases on 家から出たデータ that open to their values
    site.rig.service.set_grant("maintenance_watch", "installer", "30min")
    site.rig.clock.advance(timedelta(minutes=1))
    page = await _log_in(site)
    await page.locator("#sw-proposals-company").click()  # a confirmation in a card
    await page.locator("#flash").wait_for()
    found: list[str] = []
    checked = 0
    for lang in ("ja", "en"):
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 900})
            for path in PAGES:
                await page.goto(f"{site.url}{path}?lang={lang}")
                found += _severe(f"{path} {lang} {width}px", await _axe(page, source))
                checked += 1
    assert checked == len(PAGES) * 4
    assert found == [], "\n".join(found)
    # The harness does see a violation: a button with no name is a critical one.
    await page.evaluate("document.querySelector('main').append(document.createElement('button'))")
    assert any("button-name" in line for line in _severe("probe", await _axe(page, source)))


async def test_no_serious_violation_on_the_login_page(site: Site, browser: Browser) -> None:
    source = await asyncio.to_thread(AXE.read_text, encoding="utf-8")
    found: list[str] = []
    for lang in ("ja", "en"):
        for width in WIDTHS:
            context = await browser.new_context(viewport={"width": width, "height": 900})
            page = await context.new_page()
            await page.goto(f"{site.url}/login?lang={lang}")
            await page.locator("#code").fill(CODE[:-1] + "0")  # a wrong code: the error shows
            await page.locator("form button[type=submit]").click()
            await page.locator("#login-error").wait_for()
            found += _severe(f"/login {lang} {width}px", await _axe(page, source))
            await context.close()
    assert found == [], "\n".join(found)
