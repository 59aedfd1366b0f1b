"""The household's commissioning sheet in a real headless Chromium: it prints on one A4 page,
in Japanese, nothing cut off at the sides. A screenshot is written to
``artifacts/screenshots/household-sheet.png`` (docs/images/household-sheet.png is one)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from agent.demo.echonet import EchonetSite
from tests.conftest import require_binary
from tests.e2e.test_page_household import CHROMIUM_ARGS
from tests.integration.test_provision_helpers import Gateway, recipient_file
from tests.support.fake_sk_module import FakeSkModule
from tests.support.installer import (
    cli,
    provisioned,
)
from tests.support.installer import gw as gw
from tests.support.installer import home as home
from tests.support.installer import module as module

pytestmark = pytest.mark.chromium
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
A4_WIDTH_PX = 794  # 210 mm at 96 px per inch


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = require_binary("chromium", "chromium")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


def pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-z])", pdf))


async def test_the_sheet_prints_on_one_a4_page(gw: Gateway, home: EchonetSite,
                                               module: FakeSkModule, browser: Browser,
                                               tmp_path: Path) -> None:
    installer, _ = recipient_file(tmp_path, "installer")
    # The household signed the paper form for the installer's after-sales watch.
    await provisioned(gw, home, module, "--recipient", f"installer={installer}",
                      "--recipient-name", "installer=株式会社サンプル施工",
                      "--consent", "maintenance_watch:installer=30min",
                      "--consent-ref", "FORM-2026-0042")
    sheet = tmp_path / "household.html"
    code, _, err = await cli("report", "--config", str(gw.config), "--household",
                             "--output", str(sheet))
    assert code == 0, err
    page = await browser.new_page(viewport={"width": A4_WIDTH_PX, "height": 1123})
    try:
        await page.goto(sheet.as_uri())
        assert await page.evaluate("document.documentElement.lang") == "ja"
        heading = page.get_by_role("heading", level=1)
        assert await heading.inner_text() == "エネルギー管理ゲートウェイ 設置のお知らせ"
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "household-sheet.png"), full_page=True)
        await page.emulate_media(media="print")
        # Nothing wider than the paper: no sideways scrolling, nothing cut off when printed.
        assert await page.evaluate("document.documentElement.scrollWidth") <= A4_WIDTH_PX
        pdf = await page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
    finally:
        await page.close()
    assert pdf.startswith(b"%PDF") and pdf_pages(pdf) == 1
