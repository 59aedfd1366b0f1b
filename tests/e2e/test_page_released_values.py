"""The values of releases the device still holds open on 家から出たデータ, in a real headless
Chromium: one about to leave (queued in the outbox) and one sent, each behind its own
<details> (no script), with the point in words, the value, its unit and the level of detail;
a release whose values are gone says so; nothing scrolls sideways at 390 px.
Fixtures come from test_page_household."""

from __future__ import annotations

from datetime import timedelta

import pytest

from policy.release import Record, Release
from policy.tiers import Tier
from tests.e2e.test_page_household import SHOTS, Site, _log_in
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site
from tests.integration.web.test_web_security import START

pytestmark = pytest.mark.chromium


def _watch(start_minutes: int) -> Release:
    start = START + timedelta(minutes=start_minutes)
    records = (
        Record(device="inverter-1", point="pv.power", kind="power", unit="W",
               values={"mean": 2412.5, "max": 3050.0}, coverage=1.0, good=30, bad=0),
        Record(device="battery-1", point="battery.soc", kind="level", unit="%",
               values={"last": 82.0}, coverage=1.0, good=30, bad=0),
        Record(device="inverter-1", point="inverter.events", kind="event", unit="",
               values={"union": ["E101"]}, coverage=1.0, good=30, bad=0))
    return Release(purpose="maintenance_watch", recipient="installer", tier=Tier("30min"),
                   start=start, end=start + timedelta(minutes=30), records=records, missing=(),
                   consent_record_id="r", consent_record_hash="h", catalogue_version="2026.1")


def _hold(site: Site) -> None:
    """One release queued (seq 501) and one sent (seq 502), both still held in memory, as the
    pipeline's ``on_release`` hook leaves them."""
    rig = site.rig
    for seq, minutes in ((501, 30), (502, 0)):
        rel = _watch(minutes)
        rig.outbox.enqueue(b"sealed", topic="hems/v1/site-test/maintenance_watch/data",
                           purpose="maintenance_watch", recipient="installer", tier="30min",
                           kind="data", seq=seq)
        rig.outbox.flush()
        rig.release_log.append(rel, size=700, now=rel.end, seq=seq)
        rig.service.held.keep(seq, rel)
    rig.release_log.mark_sent([502], now=START + timedelta(minutes=31))


async def test_a_held_release_opens_to_its_values(site: Site) -> None:
    _hold(site)
    page = await _log_in(site)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(site.url + "/released")
    queued = page.locator(".queued-group", has_text="販売会社による保守見守り")
    details = queued.locator("details.values")
    assert await details.count() == 1
    table = details.locator("table")
    assert not await table.is_visible()  # closed until the household opens it
    await details.locator("summary").click()
    assert await table.is_visible()
    rows = [await r.locator("td").all_inner_texts()
            for r in await table.locator("tbody tr").all()]
    assert ["太陽光の発電量", "平均 2,412.5", "W", "30分ごと"] in rows
    assert ["太陽光の発電量", "最大 3,050", "W", "30分ごと"] in rows
    assert ["蓄電池の残量", "最後の値 82", "%", "30分ごと"] in rows
    assert any(r[1] == "起きたこと E101" for r in rows)
    assert "送信待ちにした時刻" in await queued.inner_text()  # not yet sent
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.locator("#queue-title").locator("xpath=..").screenshot(
        path=str(SHOTS / "released-values-ja-phone.png"))
    # The sent one opens too, in its purpose's section; an old release without values says so.
    sent = page.get_by_role("region", name="販売会社による保守見守り – 施工店: 山田電設株式会社")
    await sent.locator("details.values summary").first.click()
    assert "平均 2,412.5" in await sent.inner_text()
    assert await page.locator("p.not-held").count() >= 1
    assert "最近200件" in await page.locator("#values-note").inner_text()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"/released is {width} px wide at 390 px with values open"


async def test_values_are_said_in_english_too(site: Site) -> None:
    _hold(site)
    page = await _log_in(site)
    await page.goto(site.url + "/released?lang=en")
    details = page.locator(".queued-group details.values")
    await details.locator("summary").click()
    assert "Show the values (Every 30 minutes)" in await details.locator("summary").inner_text()
    text = await details.inner_text()
    assert "mean 2,412.5" in text and "last 82" in text
