"""The household page in a real headless Chromium, served by the embedded uvicorn.

Debian's ``chromium`` is driven by Playwright; the page runs in this test's event loop through
:func:`agent.web.server.serve`, exactly as the daemon runs it. Screenshots of the Japanese page
at phone and desktop widths are written to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Download, Page, async_playwright

from agent.pipeline import ReleaseLogEvents
from agent.web.app import create_app
from agent.web.household import HouseholdService
from agent.web.server import serve
from policy.release import Record, Release
from tests.conftest import free_port, require_binary
from tests.integration.web.test_web_security import CODE, START, Rig, build, release

pytestmark = pytest.mark.chromium
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Recipients a key is configured for: the service's contractors and joint users have none.
RECEIVERS = frozenset({"company", "installer", "support_centre"})
DAILY_POINTS = ("pv.energy", "battery.soc", "load.energy", "grid.energy_import")
WATCH_POINTS = ("pv.power", "pv.mppt.2.power", "inverter.events")


def with_points(rel: Release, points: Sequence[str]) -> Release:
    """``rel`` holding one record of each canonical point (values do not matter here)."""
    records = tuple(Record(device="inverter-1", point=p, kind="power", unit="W",
                           values={"mean": 1.0}, coverage=1.0, good=1, bad=0) for p in points)
    return dataclasses.replace(rel, records=records)


def _releases() -> list[tuple[Release, int, datetime]]:
    day = timedelta(days=1)
    daily = [(with_points(release("improvement", "company", "1d", START - (i + 1) * day,
                                  START - i * day), DAILY_POINTS),
              1840, START - i * day + timedelta(minutes=5))
             for i in range(3)]
    watch = with_points(release("maintenance_watch", "installer", "30min",
                                START - timedelta(minutes=30), START), WATCH_POINTS)
    return [*daily, (watch, 960, START)]


@dataclass
class Site:
    rig: Rig
    url: str
    page: Page


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = require_binary("chromium", "chromium")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def site(tmp_path: Path, browser: Browser) -> AsyncIterator[Site]:
    port = free_port()
    rig = build(tmp_path, hosts=frozenset({"127.0.0.1"}), port=port, releases=_releases())
    rig.service = HouseholdService(
        ledger=rig.ledger, release_log=rig.release_log, outbox=rig.outbox,
        apply_consent=rig.apply_consent, on_deletion=rig.deletions.append,
        recipient_names=rig.service.recipient_names, clock=rig.clock, receivers=RECEIVERS)
    # One queued daily upload for `improvement`, so the purge on withdrawal is visible; the
    # outbox tells the release log what became of it, as the pipeline connects them.
    rig.outbox.events = ReleaseLogEvents(rig.release_log, rig.clock)
    rig.outbox.enqueue(b"sealed", topic="hems/v1/site-test/improvement/data",
                       purpose="improvement", recipient="company", tier="1d", kind="data",
                       seq=500)
    rig.outbox.flush()
    rig.release_log.append(release("improvement", "company", "1d", START, START + timedelta(
        days=1), points=12), size=6, now=START, seq=500)
    started, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(create_app(rig.service, rig.settings), "127.0.0.1", port,
                                     started=started, stop=stop))
    await asyncio.wait_for(started.wait(), 10)
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    yield Site(rig=rig, url=f"http://127.0.0.1:{port}", page=page)
    await context.close()
    stop.set()
    await asyncio.wait_for(task, 10)
    rig.outbox.close()
    rig.ledger.close()


async def _log_in(site: Site) -> Page:
    page = site.page
    await page.goto(site.url + "/")
    assert page.url.endswith("/login")
    await page.get_by_label("ペアリングコード").fill(CODE)
    await page.get_by_role("button", name="ログイン").click()
    await page.wait_for_url(site.url + "/")
    return page


async def _switch(page: Page, purpose: str, recipient: str) -> None:
    """Flip the on/off switch of one recipient and wait for the page it leads to."""
    await page.locator(f"#sw-{purpose}-{recipient}").click()
    await page.wait_for_selector(f"#r-{purpose}-{recipient} #flash")


async def _set(page: Page, purpose: str, recipient: str, tier: str,
               hours: str | None = None) -> None:
    if tier == "off":
        await _switch(page, purpose, recipient)
        return
    form = page.locator(f"#grant-{purpose}-{recipient}")
    await page.locator(f"#r-{purpose}-{recipient} details.level summary").click()
    await form.locator(f"input[name=tier][value='{tier}']").check()
    if hours is not None:
        await form.locator("select[name=hours]").select_option(hours)
    await form.get_by_role("button").click()
    await page.wait_for_selector("#flash")


async def _download_json(download: Download) -> Any:
    path = await download.path()
    return json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))


async def _pass(site: Site, *, minutes: int) -> None:
    """Let time pass, reloading at least every 20 minutes (the session's idle limit is 30)."""
    while minutes > 0:
        step = min(minutes, 20)
        site.rig.clock.advance(timedelta(minutes=step))
        await site.page.reload()
        minutes -= step


async def test_turning_improvement_off_takes_effect_and_is_recorded(site: Site) -> None:
    page = await _log_in(site)
    current = page.locator("#current-improvement-company")
    assert await current.get_attribute("data-tier") == "1d"
    assert site.rig.outbox.stats().depth == 1
    await page.goto(site.url + "/released")
    released_rows = page.locator("section[aria-label] table.rel tbody tr")
    assert await released_rows.count() == 4  # the queued upload has not left
    assert await page.locator(".queued-group tbody tr").count() == 1  # it waits to leave
    assert await page.locator("#no-withdrawn").count() == 1
    await page.goto(site.url + "/")
    await _set(page, "improvement", "company", "off")
    assert "1件を削除しました" in await page.locator("#flash").inner_text()
    assert await current.get_attribute("data-tier") == "off"
    assert site.rig.outbox.stats().depth == 0  # the queued daily upload was purged
    assert site.rig.changes[-1].record.purpose == "improvement"
    await page.get_by_role("link", name="同意の記録").click()
    row = page.locator("#history tbody tr").first
    assert await row.get_attribute("data-purpose") == "improvement"
    assert await row.get_attribute("data-source") == "household_page"
    assert await row.get_attribute("data-tier") == "off"
    assert "このページ" in await row.inner_text()
    await page.get_by_role("link", name="家から出たデータ").click()
    withdrawn = await page.locator("#withdrawn tbody tr").all_inner_texts()
    assert len(withdrawn) == 1 and "同意の変更" in withdrawn[0]  # listed apart, never as sent
    assert await released_rows.count() == 4
    assert await page.locator(".queued-group").count() == 0  # nothing waits any more


async def test_support_grant_for_one_hour_expires(site: Site) -> None:
    page = await _log_in(site)
    await _set(page, "support", "support_centre", "raw", hours="1")
    current = page.locator("#current-support-support_centre")
    assert await current.get_attribute("data-tier") == "raw"
    expiry = await page.locator("#expires-support-support_centre").inner_text()
    assert "11:00まで" in expiry  # 01:00 UTC + 1 h, shown in Japan time
    await _pass(site, minutes=59)
    assert await current.get_attribute("data-tier") == "raw"
    await _pass(site, minutes=1)
    assert await current.get_attribute("data-tier") == "off"
    assert await page.locator("#expires-support-support_centre").count() == 0
    await page.goto(site.url + "/history")
    row = page.locator("#history tbody tr").first
    assert "期限切れで停止" in await row.inner_text()


async def test_language_switch_sticks(site: Site) -> None:
    page = await _log_in(site)
    assert await page.locator("html").get_attribute("lang") == "ja"
    await page.locator("#lang-switch").click()
    assert await page.locator("html").get_attribute("lang") == "en"
    assert await page.locator("h1").inner_text() == "How your data is used, and your consent"
    await page.get_by_role("link", name="What left my home").click()
    assert await page.locator("h1").inner_text() == "What left my home"
    await page.locator("#lang-switch").click()
    assert await page.locator("h1").inner_text() == "家から出たデータ"


async def test_export_everything_and_provision_records(site: Site) -> None:
    page = await _log_in(site)
    await page.get_by_role("link", name="ダウンロード・削除").click()
    async with page.expect_download() as info:
        await page.locator("#export").click()
    data = await _download_json(await info.value)
    assert data["subject"] == "site-test"
    assert {r["purpose"] for r in data["consent"]["history"]} >= {"service", "improvement"}
    assert len(data["release_log"]) == 4 and data["outbox"]["depth"] == 1
    assert [e["seq"] for e in data["queued_not_yet_sent"]] == [500]
    await page.get_by_role("link", name="家から出たデータ").click()
    first = await page.locator("section[aria-label] table.rel tbody tr").first.inner_text()
    assert "2026-11-26 10:05" in first and "1840バイト" in first  # newest first, Japan time
    async with page.expect_download() as info:
        await page.locator("#provision-download").click()
    records = await _download_json(await info.value)
    assert [r["recipient"] for r in records["records"]] == ["installer"]


async def test_delete_needs_confirmation_then_deletes(site: Site) -> None:
    page = await _log_in(site)
    await page.goto(site.url + "/rights")
    await page.locator("#delete").click()  # the required box is not ticked: nothing is sent
    assert site.rig.deletions == []
    assert site.rig.outbox.stats().depth == 1
    await page.locator("#delete-confirm").check()
    await page.locator("#delete").click()
    await page.wait_for_selector("#flash")
    assert "削除の依頼を送りました" in await page.locator("#flash").inner_text()
    assert [d["type"] for d in site.rig.deletions] == ["deletion_request"]
    assert site.rig.outbox.stats().depth == 0
    assert site.rig.ledger.history()[-1].source.value == "household_page"
    assert [e.purpose for e in site.rig.release_log.entries()] == ["maintenance_watch"]


async def test_stop_third_party_in_one_action(site: Site) -> None:
    page = await _log_in(site)
    await _set(page, "maintenance_watch", "installer", "30min")
    await page.goto(site.url + "/rights")
    await page.locator("#stop-third-party").click()
    await page.wait_for_selector("#flash")
    grants = site.rig.ledger.grants(site.rig.clock())
    assert ("maintenance_watch", "installer") not in grants


async def test_log_out_everywhere_also_logs_out_the_other_phone(site: Site,
                                                               browser: Browser) -> None:
    mine = await _log_in(site)
    other = await browser.new_context()
    theirs = await other.new_page()
    await _log_in(Site(rig=site.rig, url=site.url, page=theirs))
    await mine.goto(site.url + "/rights")
    await mine.get_by_role("button", name="すべての端末からログアウトする").click()
    await mine.wait_for_url(site.url + "/login")
    await theirs.goto(site.url + "/history")
    assert theirs.url == site.url + "/login"
    await other.close()


async def test_keyboard_reaches_the_controls(site: Site) -> None:
    page = await _log_in(site)
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.textContent")
    assert focused == "本文へ移動"  # the skip link comes first


@pytest.mark.parametrize(("name", "width", "height"), [("phone", 390, 844),
                                                       ("desktop", 1280, 900)])
async def test_screenshots_of_the_japanese_page(site: Site, name: str, width: int,
                                                height: int) -> None:
    page = await _log_in(site)
    await page.set_viewport_size({"width": width, "height": height})
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / f"purposes-ja-{name}.png")
    await page.locator("#r-improvement-company details.level summary").click()
    await page.screenshot(path=SHOTS / f"purposes-ja-{name}-choice.png")
    await page.goto(site.url + "/released")
    await page.screenshot(path=SHOTS / f"released-ja-{name}.png", full_page=True)
    width_used = await page.evaluate("document.documentElement.scrollWidth")
    assert width_used <= width  # no sideways scrolling on the page itself
