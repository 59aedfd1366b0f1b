"""The pairing code field on a phone: the number pad, masked digits, and a way to show them
that needs no script (the page's CSP allows none inline). Fixtures from test_page_household."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.e2e.test_page_household import CODE, Site
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site

pytestmark = pytest.mark.chromium

MASK = "getComputedStyle(document.querySelector('#code')).webkitTextSecurity"


@pytest.mark.parametrize(("lang", "show"), [("ja", "コードを表示する"), ("en", "Show the code")])
async def test_code_is_typed_on_the_number_pad_masked_and_can_be_shown(
        site: Site, browser: Browser, lang: str, show: str) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 800},
                                        java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{site.url}/login?lang={lang}")
    field = page.locator("#code")
    assert await field.get_attribute("inputmode") == "numeric"
    assert await field.get_attribute("type") == "text"  # a password field gets no number pad
    await field.fill(CODE)
    await page.locator("form button[type=submit]").click()  # logs in without any script
    await page.wait_for_url(site.url + "/")
    await context.close()
    # Reading the computed style needs the driver's script; the page itself runs none.
    context = await browser.new_context(viewport={"width": 390, "height": 800})
    page = await context.new_page()
    await page.goto(f"{site.url}/login?lang={lang}")
    await page.locator("#code").fill(CODE)
    assert await page.evaluate(MASK) == "disc"
    await page.get_by_label(show).check()
    assert await page.evaluate(MASK) == "none"
    await page.get_by_label(show).uncheck()
    assert await page.evaluate(MASK) == "disc"
    await context.close()
