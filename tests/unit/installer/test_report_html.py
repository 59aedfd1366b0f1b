"""The printable commissioning report: rendered by the autoescaping template, every value
escaped, the same page as the f-string rendering it replaced."""

from __future__ import annotations

from typing import Any

from agent.installer.report import render_html


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "site": "s-0001", "generated": "2026-12-06T06:40:00+00:00", "config": "/etc/x.toml",
        "page": "https://192.168.1.20:8443/?a=1&b=2",
        "devices": [
            {"name": "inv<b>&", "where": "192.168.1.30:502 unit 1", "protocol": "modbus",
             "class_code": None, "ok": True, "error": None, "problems": [],
             "identity": {"manufacturer": "ACME & Sons", "model": "X<1>"}, "link": None,
             "readings": {"pv.power": {"value": 2400.0, "unit": "W"},
                          "inverter.state": {"value": None}}},
            {"name": "meter", "where": "B-route", "protocol": "broute", "class_code": None,
             "ok": False, "error": "timeout", "problems": [], "identity": None,
             "link": {"seconds": 12, "channel": 33}, "readings": {}},
            {"name": "bat", "where": "192.168.1.31", "protocol": "echonet", "class_code": None,
             "ok": False, "error": None, "problems": ["soc 140 % > 100"], "identity": {},
             "link": None, "readings": {"battery.soc": {"value": 140, "unit": "%"}}},
        ],
        "uplink": {"ok": False, "steps": [
            {"name": "connect", "status": "pass", "detail": "TLS 1.3", "fix": ""},
            {"name": "publish", "status": "fail", "detail": "refused & closed",
             "fix": "check ACL"}]},
        "keys": {"device": {"key_id": "abcdef0123456789", "public_key": "-----BEGIN <K>\n"},
                 "rotated": [{"key_id": "1111222233334444", "valid_until": "2027-01-01"}],
                 "recipients": [{"id": "company&co", "kem": "X25519",
                                 "key_id": "9999888877776666"}]},
        "catalogue": {"version": "2026.1", "hash": "h"},
        "consent": [{"purpose": "service", "recipient": "company", "tier": "30min",
                     "source": "paper_form", "reference": None, "valid_until": None},
                    {"purpose": "support", "recipient": "installer", "tier": "off",
                     "source": "household_page", "reference": "F-1 & 2",
                     "valid_until": None}],
    }
    return doc | changes


def test_a_device_name_with_markup_is_escaped() -> None:
    page = render_html(_doc())
    assert "<tr><td>inv&lt;b&gt;&amp;</td><td>Modbus<br>192.168.1.30:502 unit 1</td>" in page
    assert "<b>" not in page and "X<1>" not in page and "<K>" not in page
    assert "?a=1&amp;b=2" in page and "<td>company&amp;co (X25519)</td>" in page


def test_the_page_is_the_one_the_f_strings_rendered() -> None:
    """Rows as the f-string rendering wrote them (CSS inline, no script, nothing linked)."""
    page = render_html(_doc())
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                           "<title>Commissioning report s-0001</title>\n<style>body{")
    assert page.endswith("</table>\n</body></html>\n")
    assert "<script" not in page and "<link" not in page and "src=" not in page
    for row in (
        "<h1>Commissioning report — site s-0001</h1>\n<p>Generated 2026-12-06 15:40 JST "
        "(06:40 UTC). Household page: https://192.168.1.20:8443/?a=1&amp;b=2</p>",
        "<td>ACME &amp; Sons X&lt;1&gt;</td><td>pv.power = 2400.0 W<br>inverter.state = -</td>"
        "<td><span class=ok>OK</span></td></tr><tr><td>meter</td>",
        "<td>B-route<br>B-route</td><td>not reported</td><td><br>joined in 12 s, channel 33</td>"
        "<td><span class=fail>FAILED: it did not answer (timeout). Check: ",
        "<td>battery.soc = 140 %</td><td><span class=fail>FAILED: it answered, but with values "
        "no working device reports: soc 140 % &gt; 100. Check the device&#39;s own display."
        "</span></td></tr></table>",
        "<h2>Uplink test: FAILED</h2>\n<table><tr><td>connect</td><td class=ok>pass</td>"
        "<td>TLS 1.3<br></td></tr><tr><td>publish</td><td class=fail>fail</td>"
        "<td>refused &amp; closed<br>check ACL</td></tr></table>",
        "<h2>Key fingerprints</h2><table><tr><td>device</td><td><code>abcd ef01 2345 6789"
        "</code></td></tr><tr><td>previous device key (until 2027-01-01)</td><td><code>"
        "1111 2222 3333 4444</code></td></tr><tr><td>company&amp;co (X25519)</td><td><code>"
        "9999 8888 7777 6666</code></td></tr></table>\n<pre>-----BEGIN &lt;K&gt;\n</pre>",
        "<h2>Consent (catalogue 2026.1)</h2>\n<table><tr><th>purpose</th><th>recipient</th>"
        "<th>tier</th><th>source</th><th>form</th></tr>\n<tr><td>service</td><td>company</td>"
        "<td>30min</td><td>paper_form</td><td></td></tr><tr><td>support</td><td>installer</td>"
        "<td>off</td><td>household_page</td><td>F-1 &amp; 2</td></tr></table>",
    ):
        assert row in page


def test_the_uplink_heading_says_whether_it_ran_and_passed() -> None:
    assert "<h2>Uplink test: not run</h2>\n<table></table>" in render_html(_doc(uplink=None))
    assert "<h2>Uplink test: OK</h2>" in render_html(_doc(uplink={"ok": True, "steps": []}))
