"""What left the home and what stayed, per day and per use, in a real headless Chromium: two
bar charts drawn on the server (SVG with a <title> and <desc>), the same numbers in a table,
type of 16 px or more and no sideways scrolling at 390 px, in Japanese and English.
Fixtures come from test_page_household: three daily releases of 4 items for 改善 (24, 25 and
26 November, Japan time) and one of 3 items for 保守見守り (26 November)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from drivers.models import PointKind, Reading
from tests.e2e.test_page_household import SHOTS, Site, _log_in
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site
from tests.integration.web.test_web_security import START

pytestmark = pytest.mark.chromium
IMPROVE = "サービスの品質改善・新サービスの企画開発・設備の管理改善"  # the improvement use


def _take_readings(site: Site) -> None:
    """15 readings on 26 November and 4 on 25 November (Japan time), as the daemon's poll
    hands them to the page's counter."""
    for when, n in ((START, 15), (START - timedelta(days=1), 4)):
        site.rig.service.readings.feed([
            Reading(device="inv", point="pv.power", kind=PointKind.POWER, value=1000.0,
                    unit="W", ts=when + timedelta(seconds=i)) for i in range(n)])


def _height(rect: str | None) -> float:
    assert rect is not None
    return float(rect)


async def test_the_chart_shows_what_left_and_what_stayed_per_day(site: Site) -> None:
    _take_readings(site)
    page = await _log_in(site)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(site.url + "/released")
    left = page.locator("#chart-left")
    assert await left.get_attribute("role") == "img"
    title = await left.locator("title").first.text_content()
    assert title == "家から出た項目数(使い道ごと、1日ごと)"
    assert "合わせて15件" in (await left.locator("desc").text_content() or "")
    bars = left.locator("rect.bar")
    titles = [await b.locator("title").text_content() for b in await bars.all()]
    assert sorted(titles) == sorted([  # type: ignore[type-var]
        f"24: {IMPROVE} 4", f"25: {IMPROVE} 4",
        f"26: {IMPROVE} 4", "26: 販売会社による保守見守り 3"])
    day_25 = await bars.nth(titles.index(f"25: {IMPROVE} 4")).get_attribute("height")
    day_26 = [await bars.nth(i).get_attribute("height") for i, t in enumerate(titles)
              if t and t.startswith("26:")]
    assert sum(_height(h) for h in day_26) == pytest.approx(_height(day_25) * 7 / 4, abs=0.2)
    stayed = page.locator("#chart-stayed rect.bar title")
    assert await stayed.all_text_contents() == ["25: 家の中で読み取った測定数 4",
                                               "26: 家の中で読み取った測定数 15"]
    await page.locator("#flow details summary").click()
    row = page.locator("#flow-days tbody tr").last
    cells = await row.locator("td").all_inner_texts()
    assert cells[0].endswith("11月26日") and cells[-2:] == ["7", "15"]
    scale = await page.evaluate(
        "document.querySelector('#chart-left').getBoundingClientRect().width / 360")
    assert 18 * scale >= 16, f"axis labels are drawn at {18 * scale:.1f} px"
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"/released is {width} px wide at 390 px"
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.locator("#flow").screenshot(path=str(SHOTS / "released-flow-ja-phone.png"))


async def test_the_chart_speaks_english(site: Site) -> None:
    page = await _log_in(site)
    await page.goto(site.url + "/released?lang=en")
    left = page.locator("#chart-left")
    assert await left.locator("title").first.text_content() == (
        "Items that left the home (per use, per day)")
    assert "15 items left the home from 20 Nov to 26 Nov" in (
        await left.locator("desc").text_content() or "")
    await page.locator("#flow details summary").click()
    header = await page.locator("#flow-days thead th").all_inner_texts()
    assert header[0] == "Day" and header[-1] == "Readings taken inside the home"
