"""わが家のエネルギー in a real headless Chromium at phone width: the household's own solar,
battery and use, now and today, as SVG drawn on the server (no script), labelled as staying
in the home, beside what leaves; viewing it queues and logs nothing. Fixtures come from
test_page_household."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from drivers.models import PointKind, Reading
from tests.e2e.test_page_household import SHOTS, Site, _log_in
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site
from tests.integration.web.test_web_security import START

pytestmark = pytest.mark.chromium
MIDNIGHT = START - timedelta(hours=10)  # START is 10:00 Japan time


def _pv(minutes: int) -> float:
    hours = minutes / 60
    return max(0.0, 3000.0 * math.sin(math.pi * (hours - 6) / 12)) if 6 < hours < 18 else 0.0


def _feed(site: Site) -> float:
    """Feed today's readings so far, one every 5 minutes; today's solar kWh."""
    readings = []
    for m in range(0, 10 * 60, 5):
        at = MIDNIGHT + timedelta(minutes=m, seconds=30)
        for point, value in (("pv.power", _pv(m)), ("load.power", 600.0),
                             ("battery.power", -300.0 if _pv(m) > 900 else 0.0),
                             ("battery.soc", 40.0 + m / 30), ("grid.power", 100.0)):
            readings.append(Reading(device="inv", point=point, kind=PointKind.POWER,
                                    value=value, unit="W", ts=at))
    site.rig.service.energy.feed(readings)
    return sum(_pv(m) for m in range(0, 600, 5)) * 5 / 60 / 1000


async def test_our_energy_stays_home_and_is_drawn_on_the_server(site: Site) -> None:
    kwh = _feed(site)
    depth, logged = site.rig.outbox.stats().depth, len(list(site.rig.release_log.entries()))
    page = await _log_in(site)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("link", name="わが家のエネルギー").click()
    assert "家の外には送りません" in await page.locator("#stays").inner_text()
    today = await page.locator("#energy-today").inner_text()
    assert f"今日の発電量\n{kwh:.1f} kWh" in today
    assert "今日使った電力量\n6.0 kWh" in today  # 0.6 kW for 10 hours
    now = await page.locator("#energy-now").inner_text()
    assert "蓄電池の残量\n60%" in now and "充電中 0.3 kW" in now
    chart = page.locator("svg#chart-power")
    assert await chart.get_attribute("role") == "img"
    desc = await chart.locator("desc").text_content() or ""
    assert desc.startswith(f"今日は{kwh:.1f}kWh発電し、6.0kWh使いました。")  # said in words
    assert len(await chart.locator("path.pv").get_attribute("d") or "") > 100
    assert await page.locator("svg#chart-soc path.soc").count() == 1
    assert await page.locator("script").count() == 0  # drawn on the server, no script
    sending = await page.locator("#sending").all_inner_texts()
    assert "サービスの提供 → 株式会社スマートパワーシステム（30分ごと）" in sending[0]
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "energy-ja-phone.png"), full_page=True)
    # Looking at it sent nothing and logged nothing.
    assert site.rig.outbox.stats().depth == depth
    assert len(list(site.rig.release_log.entries())) == logged


async def test_without_readings_the_page_says_so(site: Site) -> None:
    page = await _log_in(site)
    await page.goto(site.url + "/energy?lang=en")
    assert await page.locator("#no-energy").inner_text() == (
        "No data for today yet. The charts appear once the device is measuring.")
    assert await page.locator("svg").count() == 0
