"""The consent cards in a real headless Chromium at phone width: one on/off switch per
recipient that works without JavaScript, its state in words, the confirmation beside it (in
the viewport, announced as a status) saying only what happened, plain wording first and the
policy's text and legal basis behind 「詳しく」, recipients listed only if they receive.
Fixtures come from test_page_household."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Locator, Page

from tests.e2e.test_page_household import SHOTS, Site, _log_in
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site

pytestmark = pytest.mark.chromium
PHONE = {"width": 390, "height": 844}


def _tier(site: Site, purpose: str, recipient: str) -> str:
    grant = site.rig.ledger.grants(site.rig.clock()).get((purpose, recipient))
    return "off" if grant is None else grant.tier.value


async def _in_viewport(page: Page, element: Locator) -> bool:
    box = await element.bounding_box()
    assert box is not None
    return box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"]


async def test_switching_on_says_so_beside_the_switch_and_deletes_nothing(site: Site) -> None:
    page = await _log_in(site)
    await page.set_viewport_size(PHONE)
    switch = page.locator("#sw-proposals-company")
    assert await switch.get_attribute("role") == "switch"
    assert await switch.get_attribute("aria-checked") == "false"
    assert await page.locator("#state-proposals-company strong").inner_text() == "送っていません"
    await switch.click()
    flash = page.locator("#r-proposals-company #flash")
    await flash.wait_for()
    assert page.url.endswith("/#r-proposals-company")
    said = await flash.inner_text()
    assert said == "株式会社スマートパワーシステムへ「1か月ごと」で送り始めました。"
    assert "削除" not in said
    assert await flash.get_attribute("role") == "status"
    assert await flash.get_attribute("aria-live") == "polite"
    assert await _in_viewport(page, flash)
    assert await page.locator("main > #flash").count() == 0  # not at the top as well
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "consent-confirmation-ja-phone.png"))
    assert _tier(site, "proposals", "company") == "1mo"
    assert await switch.get_attribute("aria-checked") == "true"
    state = await page.locator("#state-proposals-company strong").inner_text()
    assert state == "送っています（1か月ごと）"


async def test_switching_off_mentions_the_deleted_queue_beside_the_switch(site: Site) -> None:
    page = await _log_in(site)
    await page.set_viewport_size(PHONE)
    assert site.rig.outbox.stats().depth == 1
    await page.locator("#sw-improvement-company").click()
    flash = page.locator("#r-improvement-company #flash")
    await flash.wait_for()
    assert await flash.inner_text() == ("株式会社スマートパワーシステムへ送るのを止めました。"
                                        "まだ送っていなかったデータ1件を削除しました。")
    assert await _in_viewport(page, flash)
    assert _tier(site, "improvement", "company") == "off"
    assert site.rig.outbox.stats().depth == 0


async def test_the_level_is_a_second_step(site: Site) -> None:
    page = await _log_in(site)
    level = page.locator("#r-improvement-company details.level")
    assert await level.get_attribute("open") is None  # closed: the switch comes first
    await level.locator("summary").click()
    await level.locator("input[value='30min']").check()
    await level.get_by_role("button").click()
    flash = page.locator("#r-improvement-company #flash")
    await flash.wait_for()
    assert "「30分ごと」にしました" in await flash.inner_text()
    assert "削除" not in await flash.inner_text()
    assert _tier(site, "improvement", "company") == "30min"


async def test_the_switch_works_without_javascript_and_from_the_keyboard(
        site: Site, browser: Browser) -> None:
    context = await browser.new_context(java_script_enabled=False)
    page = await _log_in(Site(rig=site.rig, url=site.url, page=await context.new_page()))
    await page.locator("#sw-proposals-company").focus()
    await page.keyboard.press("Enter")
    await page.locator("#r-proposals-company #flash").wait_for()
    assert _tier(site, "proposals", "company") == "1mo"
    await page.locator("#sw-proposals-company").focus()
    await page.keyboard.press("Space")
    await page.locator("#r-proposals-company #flash").wait_for()
    assert _tier(site, "proposals", "company") == "off"
    await context.close()


async def test_cards_are_plain_first_with_the_legal_text_behind_details(site: Site) -> None:
    page = await _log_in(site)
    summary = await page.locator("#summary-improvement").inner_text()
    assert summary == "サービスをよくするために使います。いつでも止められます。"
    main = page.locator("main")
    text = await main.text_content() or ""
    assert "APPI" not in text  # the legal basis is in Japanese on the Japanese page
    legal = page.locator("#p-service details.more").get_by_text("個人情報保護法第17条第1項")
    assert not await legal.is_visible()
    await page.locator("#p-service details.more summary").click()
    assert await legal.is_visible()
    assert "個人情報保護法第27条第5項第1号" in await page.locator(
        "#p-service details.more").inner_text()
    # Only the recipients a key is configured for; the others are named apart, once.
    assert await page.locator("#p-service .recipient").count() == 1
    assert await page.locator("#r-service-contractors").count() == 0
    apart = await page.locator("#not-receiving-service").inner_text()
    assert apart == "業務委託先、共同利用者へは、この機器から直接は送っていません。"
    assert "業務委託先 (業務委託先)" not in text
    company = await page.locator("#who-service-company").inner_text()
    assert company == "株式会社スマートパワーシステム"  # 「会社」 is not repeated after it
    assert await page.locator("#who-maintenance_watch-installer").inner_text() == (
        "施工店: 山田電設株式会社 (第三者)")
    # The contract-required use has no switch, only its state.
    assert await page.locator("#sw-service-company").count() == 0
    assert await page.locator("#state-service-company").inner_text() == "送っています（30分ごと）"
    await page.goto(site.url + "/?lang=en")
    assert "APPI Art. 17(1)" in (await page.locator("main").text_content() or "")
