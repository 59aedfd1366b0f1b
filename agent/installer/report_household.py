"""The household's commissioning sheet: one printable A4 page, in Japanese, left with the home.

It says what was installed (太陽光発電, 蓄電池, スマートメーター ... and how each is connected),
what the gateway sends from the start and for which purpose (the consent ledger's state, read
only, against the catalogue in force), what stays off until the household switches it on, how
to reach the household page and where to write the pairing code (a blank line: the code itself
only when the installer passes it, checked against the stored hash), and the support contact
from the catalogue (the operator's privacy policy). Times are Japan time.

It holds no key material, no serial number and no device address. It is rendered by the
household page's autoescaping Jinja2 environment from ``agent/web/templates/
household_sheet.html``; ``hems-agent report --household`` writes it, and ``provision`` keeps a
copy (without the code) in ``<state_dir>/commissioning/household.html``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from agent.config.model import AgentConfig
    from policy.catalogue import Catalogue, Purpose

JST = ZoneInfo("Asia/Tokyo")
TEMPLATE = "household_sheet.html"

_KIND_BY_CLASS = {"0279": "pv", "027D": "battery", "0288": "meter"}
KIND_JA = {"pv": "太陽光発電", "battery": "蓄電池", "meter": "電力量計",
           "smart_meter": "スマートメーター(電力会社のメーター)", "device": "計測機器"}
CONNECTION_JA = {"echonet": "宅内のネットワーク(ECHONET Lite)",
                 "broute": "電力会社のスマートメーターと無線(Bルート)",
                 "modbus_tcp": "宅内のネットワーク(Modbus)",
                 "modbus_rtu": "通信ケーブル(RS-485)"}
_ORDER = ("pv", "battery", "smart_meter", "meter", "device")


@dataclass(frozen=True, slots=True, kw_only=True)
class InstalledRow:
    what: str
    connection: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SentRow:
    """A purpose the gateway sends data for from the start."""

    title: str
    description: str
    recipients: str
    detail: str  # how fine, e.g. 30分ごと
    contents: str  # what, e.g. 太陽光発電の情報・蓄電池の情報
    required: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class OffRow:
    title: str
    note: str


class SheetError(ValueError):
    """The sheet cannot be made as asked (e.g. a pairing code that is not this gateway's)."""


def _modbus_kind(name: str) -> str:
    for kind, words in (("pv", ("inverter", "pv", "solar", "pcs")), ("battery", ("battery",)),
                        ("meter", ("meter",))):
        if any(w in name for w in words):
            return kind
    return "device"


def installed(config: AgentConfig) -> list[InstalledRow]:
    """What was installed, in plain Japanese, PV first; no address, no serial."""
    rows = [InstalledRow(what=KIND_JA[k := _modbus_kind(d.name)], kind=k,
                         connection=CONNECTION_JA[f"modbus_{d.transport}"])
            for d in config.devices]
    rows += [InstalledRow(what=KIND_JA[k := _KIND_BY_CLASS.get(d.eoj[:4], "device")], kind=k,
                          connection=CONNECTION_JA["echonet"]) for d in config.echonet_devices]
    if config.broute is not None:
        rows.append(InstalledRow(what=KIND_JA["smart_meter"], kind="smart_meter",
                                 connection=CONNECTION_JA["broute"]))
    return sorted(rows, key=lambda r: _ORDER.index(r.kind))


def ledger_tiers(state_dir: Path) -> dict[tuple[str, str], str]:
    """The latest tier per (purpose, recipient) in the consent ledger, read only."""
    from agent.paths import LEDGER_FILE

    path = state_dir / LEDGER_FILE
    latest: dict[tuple[str, str], str] = {}
    if path.exists():
        records = json.loads(path.read_text(encoding="utf-8")).get("records", {})
        for _, rec in sorted(records.items(), key=lambda item: int(item[0])):
            latest[(rec["purpose"], rec["recipient"]["id"])] = rec["tier"] or "off"
    return latest


def _recipient_name(config: AgentConfig, recipient: Any) -> str:
    shown = next((r.display_name for r in config.recipients
                  if r.id == recipient.id and r.display_name), None)
    name = str(recipient.name.ja)
    return f"{name}({shown})" if shown and shown != name else name


def purposes(config: AgentConfig, catalogue: Catalogue,
             tiers: dict[tuple[str, str], str]) -> tuple[list[SentRow], list[OffRow]]:
    """Purposes data goes out for now, and those off until the household turns them on."""
    from agent.web.i18n import translator

    t = translator("ja")
    sent, off = [], []
    for p in sorted(catalogue.spec.purposes, key=lambda p: -p.priority):
        on = [(r, tiers.get((p.id, r.id), p.default_tier)) for r in p.recipients]
        on = [(r, tier) for r, tier in on if tier != "off"]
        if on:
            details = sorted({t(f"tier.{tier}") for _, tier in on})
            sent.append(SentRow(title=p.title.ja, description=p.description.ja,
                                recipients="、".join(_recipient_name(config, r) for r, _ in on),
                                detail="・".join(details), contents=_contents(catalogue, p),
                                required=p.required))
        elif p.finest_tier != "off":  # a purpose that could use the gateway's data
            off.append(OffRow(title=p.title.ja, note=p.legal_basis.note.ja))
    return sent, off


def _contents(catalogue: Catalogue, purpose: Purpose) -> str:
    return "・".join(catalogue.categories[c].title.ja for c in purpose.categories
                    if catalogue.categories[c].collected_by_gateway)


def checked_code(config: AgentConfig, code: str | None) -> str | None:
    """The pairing code to print, if given and it is this gateway's; SheetError if not."""
    if code is None:
        return None
    from agent.web.errors import WebError
    from agent.web.security import load_pairing_hash

    code = code.strip()
    if config.web.pairing_hash_file is None:
        raise SheetError("this gateway has no pairing code (web.pairing_hash_file is not set)")
    try:
        stored = load_pairing_hash(config.web.pairing_hash_file)
    except WebError as exc:
        raise SheetError(f"cannot check the pairing code: {exc}") from exc
    if not stored.verify(code):
        raise SheetError("--pairing-code: that is not this gateway's pairing code (a typo?); "
                         "leave it out to print a blank line for it instead")
    return code


def gather(config: AgentConfig, *, pairing_code: str | None = None,
           now: datetime | None = None) -> dict[str, Any]:
    """Everything the sheet shows (nothing is read from the network)."""
    from agent.store.catalogue import newest_catalogue
    from policy.catalogue import load_catalogue

    catalogue = newest_catalogue(load_catalogue(config.catalogue), config.state_dir)
    sent, off = purposes(config, catalogue, ledger_tiers(config.state_dir))
    web = config.web
    scheme = "https" if web.tls_cert is not None else "http"
    moment = (now or datetime.now(UTC)).astimezone(JST)
    return {
        "site": config.site_id,
        "date": f"{moment.year}年{moment.month}月{moment.day}日 {moment:%H:%M}",
        "installed": installed(config),
        "sent": sent,
        "off": off,
        "page": f"{scheme}://{web.listen}/",
        "tls": web.tls_cert is not None,
        "pairing_code": checked_code(config, pairing_code),
        "controller": catalogue.spec.controller.ja,
        "contact": catalogue.spec.contact.ja,
        "catalogue_version": catalogue.version,
    }


def render(sheet: dict[str, Any]) -> str:
    """The sheet as one self-contained HTML page (inline print CSS, no script)."""
    import jinja2

    from agent.web.context import HERE

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE).render(**sheet)


def write(config: AgentConfig, target: Path, *, pairing_code: str | None = None) -> Path:
    """Render the sheet to ``target`` (0644: it holds nothing secret unless a code is given,
    then 0600)."""
    from agent.wire.keys import write_file_atomic

    text = render(gather(config, pairing_code=pairing_code))
    write_file_atomic(target, text.encode("utf-8"), mode=0o600 if pairing_code else 0o644)
    return target


PDF_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PDF_TIMEOUT = 60.0  # seconds: a cold start on a Raspberry Pi takes a few


def print_pdf(html: str, target: Path, *, mode: int = 0o644) -> Path:
    """Print the sheet to an A4 PDF at ``target`` with a headless Chromium, if one is installed
    (Debian's ``chromium``); :class:`SheetError` names what is missing or what went wrong."""
    browser = next((found for name in PDF_BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        raise SheetError("no PDF renderer: install Debian's chromium, or print the HTML sheet "
                         "from a browser")
    with tempfile.TemporaryDirectory(prefix="hems-sheet-") as tmp:
        page = Path(tmp) / "household.html"
        page.write_text(html, encoding="utf-8")
        out = Path(tmp) / "household.pdf"
        args = [browser, "--headless", "--disable-gpu", "--disable-background-networking",
                "--no-first-run", f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer",
                f"--print-to-pdf={out}", page.as_uri()]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
        try:
            done = subprocess.run(args, capture_output=True, timeout=PDF_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise SheetError(f"{browser} did not print the sheet within {PDF_TIMEOUT:.0f} s") \
                from exc
        if done.returncode != 0 or not out.exists():
            raise SheetError(f"{browser} could not print the sheet (exit {done.returncode})")
        from agent.wire.keys import write_file_atomic

        write_file_atomic(target, out.read_bytes(), mode=mode)
    return target
