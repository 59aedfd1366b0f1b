"""Privacy proof: what leaves the gateway carries no reading, serial, address or pairing code in
the clear, and each recipient can read only the purposes it was granted.

A demo-like run (three simulated devices, the household page, a simulated day at 1440x) with
two captures: every byte between the agent and the broker (a recording TCP proxy: TLS, so
ciphertext) and, broker side, every MQTT payload as the receiver user gets it from
``hems/v1/#`` (our envelopes: a clear header, an HPKE-encrypted body). Searched for: the
simulators' serial numbers, the pairing code, the addresses the gateway knows (its page, its
devices), and every reading value the receiver decrypted, rendered as text. The clear header
must hold exactly the documented fields. The household grants maintenance watch to the
installer on the page first; then the company's key must not open the installer's envelopes
and the installer's key must not open service or improvement envelopes, even when offered
under the right key id.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.cloud.receiver import load_device_registry
from agent.errors import EnvelopeError
from agent.wire.envelope import open_envelope
from agent.wire.keys import RecipientPrivateKey, RecipientPublicKey
from drivers.sim.server import run_site
from tests.conftest import free_port
from tests.e2e.daemon_helpers import PAIRING_CODE, DaemonProcess, Page, page_toml, sim_devices
from tests.proof.fault_rig import Proxy, quick_cloud
from tests.support.mosquitto import Mosquitto
from tests.support.site import broker_users, make_site

pytestmark = [pytest.mark.proof, pytest.mark.mosquitto]

SITE = "site-privacy-1"
SPEED = 1440.0
START = datetime.fromisoformat("2026-06-01T23:56:00+09:00")
RUN = 65.0  # seconds: a simulated day and a bit, so the daily window closes
HEADER_KEYS = {"v", "site", "purpose", "tier", "kind", "recipient_key", "device_key", "kem",
               "catalogue", "consent_id", "consent_hash", "seq", "window_start", "window_end",
               "created", "content_type", "compression"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", broker_users(SITE)) as mosquitto:
        yield mosquitto


@pytest.mark.timeout(300)
async def test_nothing_readable_leaves_and_each_key_opens_only_its_purposes(
        tmp_path: Path, broker: Mosquitto) -> None:
    web_port = free_port()
    raw: list[tuple[str, bytes]] = []
    async with run_site(speed=SPEED, start=START) as site, \
            Proxy(upstream_port=broker.port) as proxy:
        devices = sim_devices(site)
        files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=devices,
                          extra=page_toml(tmp_path / "gw", web_port))
        text = files.config.read_text(encoding="utf-8")
        files.config.write_text(text.replace(f"127.0.0.1:{broker.port}",
                                             f"127.0.0.1:{proxy.port}"), encoding="utf-8")
        async with quick_cloud(files, broker, tmp_path / "seen.db", raw=raw) as c:
            daemon = await DaemonProcess.start(files, speed=SPEED, start=START)
            try:
                await daemon.wait_line("ready:")
                async with Page(web_port) as page:
                    await page.login()
                    await page.grant("maintenance_watch", "installer", "30min")
                await asyncio.sleep(RUN)
            finally:
                code = await daemon.terminate()
            assert code == 0, daemon.output()
        await asyncio.sleep(0.5)
        serials = {s.device.identity.serial for s in site.servers}
    purposes = {e["header"]["purpose"] for e in c.data()}
    assert {"service", "improvement", "maintenance_watch"} <= purposes, purposes
    secrets = {s: "serial" for s in serials} | {PAIRING_CODE: "pairing code",
                                               PAIRING_CODE.replace("-", ""): "pairing code",
                                               f"127.0.0.1:{web_port}": "page address"}
    secrets |= {f"127.0.0.1:{d['port']}": "device address" for d in devices}
    values = _reading_texts(c.data())
    assert len(values) >= 100, "too few distinct readings to prove anything"
    tls = bytes(proxy.to_server)
    bodies = b"".join(_without_header(payload) for _, payload in raw)
    headers = [_header(payload) for _, payload in raw]
    assert all(set(h) == HEADER_KEYS for h in headers)
    for needle, what in secrets.items():
        assert needle.encode() not in tls, f"{what} in the TLS capture"
        assert needle.encode() not in bodies, f"{what} in the broker-side payloads"
        assert all(needle not in json.dumps(h) for h in headers), f"{what} in a header"
    leaked = [v for v in values if v.encode() in tls or v.encode() in bodies]
    assert not leaked, f"reading values in the clear: {leaked[:10]}"
    opened = _check_key_separation(raw, files)
    print(f"\nprivacy: TLS capture {len(tls)} B agent->broker, {len(raw)} MQTT payloads "
          f"({sum(len(p) for _, p in raw)} B) broker side; searched {len(secrets)} secrets and "
          f"{len(values)} reading renderings: 0 found; wrong-key opens refused: {opened}")


def _reading_texts(data: list[dict[str, Any]]) -> set[str]:
    """Every decrypted numeric value as text, long enough not to match by chance (≥ 5 chars)."""
    texts: set[str] = set()
    for envelope in data:
        for record in envelope["body"]["records"]:
            numbers = [v for v in record["values"].values() if isinstance(v, int | float)]
            numbers += [v for _, v in record.get("samples", []) if isinstance(v, int | float)]
            for v in numbers:
                for text in {repr(v), str(v), f"{v:.1f}", f"{v:.2f}"}:
                    if len(text.lstrip("-")) >= 5 and not text.endswith((".0", ".00")):
                        texts.add(text)
    return texts


def _header_len(payload: bytes) -> int:
    assert payload[:5] == b"HEMS\x01"
    return int(struct.unpack(">I", payload[5:9])[0])


def _header(payload: bytes) -> dict[str, Any]:
    return dict(json.loads(payload[9:9 + _header_len(payload)]))


def _without_header(payload: bytes) -> bytes:
    """The encapsulated key, ciphertext and signature (the header is checked field by field)."""
    return payload[9 + _header_len(payload):]


def _impostor(key: RecipientPrivateKey, as_key: RecipientPrivateKey) -> RecipientPrivateKey:
    """``key``'s private half presented under ``as_key``'s key id (so the lookup succeeds)."""
    public: RecipientPublicKey = as_key.public
    return replace(key, public=public)


def _check_key_separation(raw: list[tuple[str, bytes]], files: Any) -> dict[str, int]:
    keys = files.recipient_keys
    devices = load_device_registry(files.device_registry)
    tried = {"company on maintenance_watch": 0, "installer on service/improvement": 0}
    for _, payload in raw:
        header = _header(payload)
        if header["kind"] != "data":
            continue
        if header["purpose"] == "maintenance_watch":
            wrong, label = keys["company"], "company on maintenance_watch"
            owner = keys["installer"]
        elif header["purpose"] in ("service", "improvement"):
            wrong, label = keys["installer"], "installer on service/improvement"
            owner = keys["company"]
        else:
            continue
        assert header["recipient_key"] == owner.key_id
        open_envelope(payload, device_keys=devices, recipient_keys={owner.key_id: owner})
        for offered in ({wrong.key_id: wrong}, {owner.key_id: _impostor(wrong, owner)}):
            with pytest.raises(EnvelopeError):
                open_envelope(payload, device_keys=devices, recipient_keys=offered)
        tried[label] += 1
    assert all(tried.values()), tried
    return tried
