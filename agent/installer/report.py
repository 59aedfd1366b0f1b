"""The commissioning report: what was set up, and proof that it works, for the installer's records.

Contents: the site, each device with its identity and first readings, the uplink test (a signed
envelope sent and acknowledged, another site's topic refused), the key fingerprints (device and
recipients, with any rotated key still accepted), the catalogue version and the consent state,
and the household page's address. Rendered as text for the screen, JSON for tooling and a
printable HTML page (one self-contained file: inline CSS, no script, every value escaped).

``hems-agent provision`` writes all three to ``<state_dir>/commissioning/``, with the
household's Japanese sheet (:mod:`agent.installer.report_household`) as ``household.html``;
``hems-agent report`` renders one on demand (``--household`` for the sheet). The ledger is
read, never opened for writing, so a report never applies a catalogue update the daemon should
deliver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config.model import DEFAULT_PATH
from policy import strict_json

Doc = dict[str, Any]
_READINGS = ("pv.power", "pv.energy", "battery.soc", "battery.power", "grid.power",
             "grid.energy_import", "inverter.state")


def gather(path: Path, *, test_uplink: bool = True, deadline: float = 3.0) -> Doc:
    """Collect the report (devices are read and the uplink tested now)."""
    from agent.config.model import load_config
    from agent.installer.doctor.echonet import probe_all
    from agent.installer.doctor.uplink import uplink_test

    config = load_config(path)

    async def live() -> tuple[Any, Any]:
        uplink = uplink_test(config, deadline=deadline) if test_uplink else _none()
        return await asyncio.gather(probe_all(config), uplink)

    probes, uplink = asyncio.run(live())
    web = config.web
    scheme = "https" if web.tls_cert is not None else "http"
    return {
        "site": config.site_id,
        "generated": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "config": str(path),
        "page": f"{scheme}://{web.listen}/",
        "devices": [_device(p) for p in probes],
        "uplink": None if uplink is None else {
            "ok": uplink.ok, "steps": [{"name": c.name, "status": str(c.status),
                                        "detail": c.detail, "fix": c.fix}
                                       for c in uplink.checks]},
        "keys": _keys(config),
        **_consent(config),
    }


async def _none() -> None:
    return None


PROTOCOLS = {"modbus": "Modbus", "echonet": "ECHONET Lite", "broute": "B-route"}


def _device(probe: Any) -> Doc:
    from agent.installer.doctor.devices import protocol_of

    entry = probe.entry or {}
    readings = entry.get("readings", {})
    return {"name": probe.name, "where": probe.where, "protocol": protocol_of(probe),
            "class_code": entry.get("class_code"), "ok": probe.error is None
            and not probe.problems, "error": probe.error, "problems": list(probe.problems),
            "identity": entry.get("identity"), "link": entry.get("link"),
            "readings": {k: readings[k] for k in _READINGS if k in readings}}


def device_state(d: Doc) -> str:
    """What became of a device, in plain words: ``OK``, or why it failed and what to check."""
    from agent.installer.doctor.devices import _FIX_UNREACHABLE

    if d["ok"]:
        return "OK"
    if d["error"] is not None:
        return (f"FAILED: it did not answer ({d['error']}). "
                f"Check: {_FIX_UNREACHABLE.get(d.get('protocol', 'modbus'), '')}")
    return ("FAILED: it answered, but with values no working device reports: "
            + "; ".join(d["problems"]) + ". Check the device's own display.")


def _identity_text(d: Doc) -> str:
    """Maker, model and serial as far as the device told them; empty when it said nothing."""
    ident = d["identity"] or {}
    parts = [str(ident[k]) for k in ("manufacturer", "model") if ident.get(k)]
    if ident.get("serial"):
        parts.append(f"serial {ident['serial']}")
    return " ".join(parts)


def _keys(config: Any) -> Doc:
    from agent.installer.provision.secrets import rotation_history
    from agent.wire import keys

    device = keys.load_device_key(config.device_key_file).public_key()
    rotated = rotation_history(config.state_dir)
    return {
        "device": {"key_id": keys.device_key_id(device),
                   "public_key": keys.device_public_pem(device).decode()},
        "rotated": [{"key_id": k["key_id"], "valid_until": k["valid_until"]}
                    for k in rotated["keys"]],
        "recipients": [{"id": r.id, "kem": r.kem,
                        "key_id": keys.load_recipient_public(r.key_file).key_id}
                       for r in config.recipients],
    }


def _consent(config: Any) -> Doc:
    """Catalogue version and the latest record per purpose × recipient, read-only."""
    from agent.paths import LEDGER_FILE
    from policy.catalogue import load_catalogue

    catalogue = load_catalogue(config.catalogue)
    path = config.state_dir / LEDGER_FILE
    latest: dict[tuple[str, str], Doc] = {}
    if path.exists():
        records = strict_json.loads(path.read_bytes()).get("records", {})
        for _, rec in sorted(records.items(), key=lambda item: int(item[0])):
            latest[(rec["purpose"], rec["recipient"]["id"])] = rec
    return {
        "catalogue": {"version": catalogue.version, "hash": catalogue.content_hash},
        "consent": [{"purpose": p, "recipient": r, "tier": rec["tier"] or "off",
                     "source": rec["collection_method"], "reference": rec.get("reference"),
                     "valid_until": rec["valid_until"]}
                    for (p, r), rec in latest.items()],
    }


def ok(doc: Doc) -> bool:
    """Every device answered sanely and the uplink test (if run) passed."""
    uplink = doc["uplink"]
    return all(d["ok"] for d in doc["devices"]) and (uplink is None or uplink["ok"])


def _fp(key_id: str) -> str:
    from agent.installer.provision.checks import fingerprint

    return fingerprint(key_id)


def _reading(reading: Doc) -> str:
    value = "-" if reading.get("value") is None else reading["value"]
    return f"{value} {reading.get('unit', '')}".strip()


def _jst(stamp: str) -> str:
    """An ISO time as ``2026-12-06 15:40 JST (06:40 UTC)``."""
    from zoneinfo import ZoneInfo

    moment = datetime.fromisoformat(stamp)
    local = moment.astimezone(ZoneInfo("Asia/Tokyo"))
    return f"{local:%Y-%m-%d %H:%M} JST ({moment.astimezone(UTC):%H:%M} UTC)"


def render_text(doc: Doc) -> str:
    lines = [f"Commissioning report — site {doc['site']} — {_jst(doc['generated'])}",
             f"household page: {doc['page']}", "", "devices:"]
    for d in doc["devices"]:
        ident = _identity_text(d)
        protocol = PROTOCOLS.get(d.get("protocol", "modbus"), "Modbus")
        where = d["where"] if d["where"].startswith(("ECHONET", "B-route")) else (
            f"{protocol} {d['where']}")
        lines.append(f"  {d['name']} ({where}): " + (f"{ident} — " if ident else "")
                     + device_state(d))
        if d.get("link"):
            from agent.installer.doctor.echonet import link_text

            lines.append(f"    B-route session: {link_text(d)}")
        lines += [f"    {k} = {_reading(v)}" for k, v in d["readings"].items()]
    uplink = doc["uplink"]
    lines += ["", "uplink test: " + ("not run" if uplink is None
                                     else "OK" if uplink["ok"] else "FAILED")]
    for step in uplink["steps"] if uplink else []:
        lines.append(f"  {step['status'].upper():<4} {step['name']}: {step['detail']}")
        if step["fix"]:
            lines.append(f"       fix: {step['fix']}")
    k = doc["keys"]
    lines += ["", f"device key id {k['device']['key_id']} ({_fp(k['device']['key_id'])})"]
    lines += [f"  previous key {r['key_id']} valid until {r['valid_until']}" for r in k["rotated"]]
    lines += [f"recipient {r['id']} ({r['kem']}): {_fp(r['key_id'])}" for r in k["recipients"]]
    lines += ["", f"catalogue {doc['catalogue']['version']} ({doc['catalogue']['hash'][:12]})",
              "consent:"]
    for c in doc["consent"]:
        ref = f", form {c['reference']}" if c["reference"] else ""
        lines.append(f"  {c['purpose']:<18} → {c['recipient']:<15} {c['tier']:<7} "
                     f"({c['source']}{ref})")
    return "\n".join(lines) + "\n"


TEMPLATE = "commissioning_report.html"


def render_html(doc: Doc) -> str:
    """A printable, self-contained page: inline CSS only, no script, every value escaped (the
    household page's autoescaping Jinja2 renders ``TEMPLATE``)."""
    import jinja2

    from agent.web.context import HERE

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template(TEMPLATE).render(**_html_view(doc))


def _html_view(doc: Doc) -> Doc:
    """What the page shows, as plain text for the template to escape."""
    k = doc["keys"]
    keys = [{"label": "device", "fingerprint": _fp(k["device"]["key_id"])}]
    keys += [{"label": f"previous device key (until {r['valid_until']})",
              "fingerprint": _fp(r["key_id"])} for r in k["rotated"]]
    keys += [{"label": f"{r['id']} ({r['kem']})", "fingerprint": _fp(r["key_id"])}
             for r in k["recipients"]]
    return {"site": doc["site"], "generated": _jst(doc["generated"]), "page": doc["page"],
            "devices": [_device_view(d) for d in doc["devices"]], "uplink": doc["uplink"],
            "keys": keys, "public_key": k["device"]["public_key"],
            "catalogue_version": doc["catalogue"]["version"], "consent": doc["consent"]}


def _device_view(d: Doc) -> Doc:
    link = ""
    if d.get("link"):
        from agent.installer.doctor.echonet import link_text

        link = link_text(d)
    return {"name": d["name"], "protocol": PROTOCOLS.get(d.get("protocol", "modbus"), "Modbus"),
            "where": d["where"], "identity": _identity_text(d) or "not reported",
            "readings": [f"{k} = {_reading(v)}" for k, v in d["readings"].items()],
            "link": link, "ok": d["ok"], "state": device_state(d)}


def write_all(doc: Doc, directory: Path) -> None:
    """report.txt, report.json and report.html in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.txt").write_text(render_text(doc), encoding="utf-8")
    (directory / "report.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
    (directory / "report.html").write_text(render_html(doc), encoding="utf-8")


def after_provision(path: Path, *, test_uplink: bool) -> int:
    """Provision's last step: print the report, keep all three forms; 0 if all is well."""
    from agent.config.model import load_config
    from agent.installer.report_household import write as write_sheet

    doc = gather(path, test_uplink=test_uplink)
    config = load_config(path)
    directory = config.state_dir / "commissioning"
    write_all(doc, directory)
    write_sheet(config, directory / "household.html")
    print()
    print(render_text(doc), end="")
    print(f"report saved: {directory}/report.txt, report.json, report.html (printable)")
    print(f"household sheet (Japanese, A4, a blank line for the pairing code): "
          f"{directory}/household.html")
    return 0 if ok(doc) else 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")
    parser.add_argument("--format", choices=("text", "json", "html"), default="text")
    parser.add_argument("--output", type=Path, help="write to FILE instead of the screen")
    parser.add_argument("--skip-uplink-test", action="store_true",
                        help="do not connect to the broker")
    parser.add_argument("--household", action="store_true",
                        help="the household's one-page Japanese sheet (HTML, A4) instead")
    parser.add_argument("--pdf", type=Path, metavar="FILE",
                        help="with --household: also print the sheet to an A4 PDF (needs "
                             "Debian's chromium)")
    parser.add_argument("--pairing-code",
                        help="with --household: print this pairing code on the sheet (checked "
                             "against this gateway's); without it the sheet has a blank line")


def household(args: argparse.Namespace) -> int:
    """``report --household``: the sheet for the household, read from the files only."""
    from agent.config.model import load_config
    from agent.errors import AgentError
    from agent.installer.report_household import SheetError, gather, print_pdf
    from agent.installer.report_household import render as render_sheet

    try:
        text = render_sheet(gather(load_config(args.config), pairing_code=args.pairing_code))
        if args.pdf is not None:
            print_pdf(text, args.pdf, mode=0o600 if args.pairing_code else 0o644)
    except (AgentError, SheetError, OSError) as exc:
        print(f"hems-agent report: {exc}", file=sys.stderr)
        return 2
    if args.pdf is not None:
        print(f"household sheet printed: {args.pdf} (A4)")
        if args.output is None:
            return 0
    if args.output is not None:
        from agent.wire.keys import write_file_atomic

        write_file_atomic(args.output, text.encode("utf-8"),
                          mode=0o600 if args.pairing_code else 0o644)
        print(f"household sheet written: {args.output} (print it on A4)")
    else:
        print(text, end="")
    return 0


def main(args: argparse.Namespace) -> int:
    from agent.errors import AgentError

    for flag, given in (("--pairing-code", args.pairing_code), ("--pdf", args.pdf)):
        if given is not None and not args.household:
            print(f"hems-agent report: {flag} goes with --household", file=sys.stderr)
            return 2
    if args.household:
        return household(args)
    try:
        doc = gather(args.config, test_uplink=not args.skip_uplink_test)
    except (AgentError, OSError, ValueError) as exc:
        print(f"hems-agent report: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    else:
        text = render_html(doc) if args.format == "html" else render_text(doc)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0 if ok(doc) else 1
