"""The household's commissioning sheet (``report --household``) for a home with PV and a battery
on ECHONET Lite and the smart meter on the B-route: Japanese, Japan time, what is installed and
sent, what is off, the page and a line for the pairing code, the support contact; no keys,
serials or addresses."""

from __future__ import annotations

import re
import stat
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config.model import load_config
from agent.demo.echonet import EchonetSite
from tests.conftest import require_binary
from tests.integration.test_provision_helpers import Gateway, pairing_code_in
from tests.support.fake_sk_module import METER_IP, METER_MAC, FakeSkModule
from tests.support.installer import (
    PASSWORD,
    RBID,
    cli,
    provisioned,
)
from tests.support.installer import gw as gw
from tests.support.installer import home as home
from tests.support.installer import module as module


class Text(HTMLParser):
    """The visible text of a page, and its root's lang."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.lang: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang")
        if tag in ("style", "title"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def visible(html: str) -> tuple[str | None, str]:
    parser = Text()
    parser.feed(html)
    return parser.lang, " ".join(parser.parts)


async def test_the_sheet_tells_the_household_what_was_installed_and_what_is_sent(
        gw: Gateway, home: EchonetSite, module: FakeSkModule) -> None:
    out = await provisioned(gw, home, module, "--recipient-name",
                            "company=<b>Sunny</b> & Co")
    code_shown = pairing_code_in(out)
    assert code_shown is not None
    before = datetime.now(UTC)
    code, html, err = await cli("report", "--config", str(gw.config), "--household")
    assert code == 0, err
    lang, text = visible(html)
    assert lang == "ja"
    # What was installed, in the household's words, and how it is connected.
    assert "太陽光発電 宅内のネットワーク(ECHONET Lite)" in text
    assert "蓄電池 宅内のネットワーク(ECHONET Lite)" in text
    assert "スマートメーター(電力会社のメーター) 電力会社のスマートメーターと無線(Bルート)" in text
    # The time is Japan time.
    jst = before.astimezone(ZoneInfo("Asia/Tokyo"))
    assert f"設置日時: {jst.year}年{jst.month}月{jst.day}日 {jst:%H}:" in text
    assert "(日本時間)" in text
    # From the catalogue in force: what goes out from the start, how finely, to whom ...
    assert re.search(r"サービスの提供 ご契約に必要 .*30分ごと", text)
    assert "サービスの品質改善・新サービスの企画開発・設備の管理改善" in text and "1日ごと" in text
    assert "太陽光発電の情報・蓄電池の情報・消費電力・電力の受給の情報" in text
    # ... and what stays off until the household turns it on.
    off = text.split("お客様が「使う」にするまで止まっているもの", 1)[1].split("家庭用ページ")[0]
    assert "サービスのご紹介・ご提案・CS向上施策" in off and "販売会社による保守見守り" in off
    assert "アンケート調査等へのご参加" not in off  # uses no gateway data
    # The page, a blank line for the code (never the code itself), the support contact.
    assert re.search(r"http://127\.0\.0\.1:\d+/", text)
    assert 'class="blank"' in html and code_shown not in html
    assert "お客様サポートセンター 042-851-3739(平日10時〜18時" in text
    # The installer's display name is escaped by the page's own autoescaping templates.
    assert "&lt;b&gt;Sunny&lt;/b&gt; &amp; Co" in html and "<b>Sunny" not in html
    # Nothing secret and nothing that identifies a device.
    config = load_config(gw.config)
    assert config.broute is not None
    for word in ("KEY", "BEGIN", "PVEL0001", "BTEL0001", home.gateway.address,
                 home.meter.address, module.path, METER_IP, METER_MAC, RBID, PASSWORD,
                 "serial", "製造番号"):
        assert word not in html, word
    # provision kept a copy, with the blank line.
    kept = gw.state / "commissioning" / "household.html"
    assert 'class="blank"' in kept.read_text() and code_shown not in kept.read_text()


async def test_the_pairing_code_is_printed_only_when_given_and_right(
        gw: Gateway, home: EchonetSite, module: FakeSkModule, tmp_path: Path) -> None:
    code_shown = pairing_code_in(await provisioned(gw, home, module))
    assert code_shown is not None
    wrong = "0" * 10 if code_shown != "0" * 10 else "1" * 10
    code, _, err = await cli("report", "--config", str(gw.config), "--household",
                             "--pairing-code", wrong)
    assert code == 2 and "not this gateway's pairing code" in err
    sheet = tmp_path / "sheet.html"
    code, _, err = await cli("report", "--config", str(gw.config), "--household",
                             "--pairing-code", code_shown, "--output", str(sheet))
    assert code == 0, err
    assert f'<span class="given">{code_shown}</span>' in sheet.read_text()
    assert stat.S_IMODE(sheet.stat().st_mode) == 0o600  # it holds the code now
    code, _, err = await cli("report", "--config", str(gw.config), "--pairing-code", code_shown)
    assert code == 2 and "--pairing-code goes with --household" in err


async def test_the_sheet_prints_to_one_a4_pdf_page_or_names_the_missing_renderer(
        gw: Gateway, home: EchonetSite, module: FakeSkModule, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    require_binary("chromium", "chromium")
    await provisioned(gw, home, module)
    pdf = tmp_path / "sheet.pdf"
    code, out, err = await cli("report", "--config", str(gw.config), "--household",
                               "--pdf", str(pdf))
    assert code == 0, err
    assert f"household sheet printed: {pdf} (A4)" in out
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page(?![a-z])", data)) == 1  # one A4 page
    [box] = set(re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data))
    assert round(float(box[0])) == 595 and round(float(box[1])) == 842  # A4 in points
    assert stat.S_IMODE(pdf.stat().st_mode) == 0o644  # no code on it
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = await cli("report", "--config", str(gw.config), "--household",
                             "--pdf", str(tmp_path / "none.pdf"))
    assert code == 2 and "no PDF renderer: install Debian's chromium" in err
    assert not (tmp_path / "none.pdf").exists()
    code, _, err = await cli("report", "--config", str(gw.config), "--pdf", str(pdf))
    assert code == 2 and "--pdf goes with --household" in err
