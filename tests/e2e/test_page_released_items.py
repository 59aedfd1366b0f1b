"""What left the home, item by item, in a real headless Chromium at phone width: each release
lists its items in words (never values) with its level, recipient and time; the CSV download
(UTF-8 with BOM) parses with Python's csv module; no page scrolls sideways at 390 px.
Fixtures come from test_page_household."""

from __future__ import annotations

import asyncio
import csv
import io

import pytest

from tests.e2e.test_page_household import SHOTS, Site, _log_in
from tests.e2e.test_page_household import browser as browser
from tests.e2e.test_page_household import site as site

pytestmark = pytest.mark.chromium
DAILY = {"蓄電池の残量", "買った電力量の累計", "家で使った電力量の累計", "太陽光の発電量の累計"}
WATCH = {"パワーコンディショナの故障・警報", "太陽光パネル入力2の電力", "太陽光の発電量"}


async def test_each_release_lists_its_items_in_words(site: Site) -> None:
    page = await _log_in(site)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(site.url + "/released")
    sections = page.locator("section[aria-label]:has(table.rel)")  # not the queue, withdrawals
    assert await sections.count() == 2
    improvement = sections.nth(0)
    rows = improvement.locator("tbody tr")
    assert await rows.count() == 3
    first = rows.first
    assert set(await first.locator("ul.items li").all_inner_texts()) == DAILY
    assert "2026-11-26 10:05" in await first.inner_text()  # newest first, Japan time
    assert "1日ごと" in await first.inner_text()
    assert "4項目" in await first.inner_text()  # how many, then which
    watch = sections.nth(1)
    assert "受け取った人: 施工店: 山田電設株式会社" in await watch.inner_text()
    assert set(await watch.locator("ul.items li").all_inner_texts()) == WATCH
    text = "\n".join(await sections.all_inner_texts())  # the queue holds a made-up name
    assert "pv.power" not in text and "1.0" not in text  # names in words, never values
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "released-items-ja-phone.png"), full_page=True)


async def test_the_csv_download_lists_every_release(site: Site) -> None:
    page = await _log_in(site)
    await page.goto(site.url + "/released")
    async with page.expect_download() as info:
        await page.locator("#released-csv").click()
    download = await info.value
    assert download.suggested_filename == "hems-released-20261126.csv"
    raw = await asyncio.to_thread((await download.path()).read_bytes)
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM spreadsheet programs look for
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert len(rows) == 4
    assert list(rows[0]) == ["送った時刻", "使い道", "受け取った人", "細かさ", "対象の期間(開始)",
                             "対象の期間(終了)", "送った項目", "項目数", "大きさ(バイト)", "状態"]
    newest = rows[0]
    assert newest["送った時刻"] == "2026-11-26 10:05" and newest["細かさ"] == "1日ごと"
    assert set(newest["送った項目"].split("、")) == DAILY
    assert newest["項目数"] == "4" and newest["大きさ(バイト)"] == "1840"
    assert newest["状態"] == "送信済み"
    watch = next(r for r in rows if r["使い道"] == "販売会社による保守見守り")
    assert watch["受け取った人"] == "施工店: 山田電設株式会社"
    assert set(watch["送った項目"].split("、")) == WATCH
    english = await page.context.request.get(site.url + "/released.csv?lang=en")
    header = next(csv.reader(io.StringIO((await english.body()).decode("utf-8-sig"))))
    assert header[:3] == ["Sent at", "Use", "Received by"]


@pytest.mark.parametrize("path", ["/", "/released", "/history", "/rights"])
async def test_no_page_scrolls_sideways_on_a_phone(site: Site, path: str) -> None:
    page = await _log_in(site)
    site.rig.service.set_grant("maintenance_watch", "installer", "30min")  # history rows
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(site.url + path)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{path} is {width} px wide at 390 px"
    if path == "/history":
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "history-ja-phone.png"), full_page=True)
        change = page.locator("#history tbody tr").first.locator("td").nth(3)
        box = await change.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390  # 変更 is on screen
