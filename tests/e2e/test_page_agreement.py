"""The re-agreement card in a real headless Chromium: a catalogue update widened a use the
household had on; the page says what changed, nothing is sent until the household agrees, and
agreeing restores the tier it had. Fixtures come from test_page_household."""

from __future__ import annotations

import json
from typing import Any

import pytest

from policy.catalogue import load_catalogue, parse_catalogue
from tests.e2e.test_page_household import SHOTS, Site, _log_in
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site

pytestmark = pytest.mark.chromium


def _grant(site: Site, purpose: str, recipient: str) -> str:
    grant = site.rig.ledger.grants(site.rig.clock()).get((purpose, recipient))
    return "off" if grant is None else grant.tier.value


async def test_a_widened_use_waits_for_agreement_and_agreeing_restores_it(site: Site) -> None:
    site.rig.service.set_grant("improvement", "company", "30min")
    raw: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    raw["version"] = "2027.1"
    improvement = next(p for p in raw["purposes"] if p["id"] == "improvement")
    improvement["power_stats"] = ["mean", "max"]
    site.rig.ledger.apply_catalogue(parse_catalogue(json.dumps(raw)), site.rig.clock())
    assert _grant(site, "improvement", "company") == "off"

    page = await _log_in(site)
    card = page.locator("#agree-improvement-company")
    await card.wait_for()
    text = await card.inner_text()
    assert "「最大値」が加わります" in text and "今は何も送っていません" in text
    assert "最初の設定" not in await page.locator("main").inner_text()
    assert await page.locator("#current-improvement-company").get_attribute(
        "data-tier") == "off"
    await page.set_viewport_size({"width": 390, "height": 844})
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "agreement-ja-phone.png"), full_page=True)

    await card.get_by_role("button", name="同意して「30分ごと」で送る").click()
    await page.wait_for_selector("#flash")
    assert _grant(site, "improvement", "company") == "30min"
    assert await page.locator("#agree").count() == 0
    assert await page.locator("#current-improvement-company").get_attribute(
        "data-tier") == "30min"


async def test_declining_keeps_the_use_off(site: Site) -> None:
    raw: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    raw["version"] = "2027.1"
    improvement = next(p for p in raw["purposes"] if p["id"] == "improvement")
    improvement["categories"] = [*improvement["categories"], "gas"]
    site.rig.ledger.apply_catalogue(parse_catalogue(json.dumps(raw)), site.rig.clock())
    page = await _log_in(site)
    card = page.locator("#agree-improvement-company")
    assert "「ガスの情報」が加わります" in await card.inner_text()
    await card.get_by_role("button", name="同意しない(送らないまま)").click()
    await page.wait_for_selector("#flash")
    assert _grant(site, "improvement", "company") == "off"
    assert await page.locator("#agree").count() == 0
