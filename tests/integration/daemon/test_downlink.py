"""Each command type end to end: operator → real mosquitto → gateway → signed result.

The gateway is the daemon's own state with ``run_downlink``; results come back through the
outbox and the uplink and are opened by the reference receiver with the company's key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config.model import load_config
from agent.daemon.state import open_state
from agent.host.metrics import Metrics
from agent.paths import PENDING_REQUESTS_FILE
from agent.store.catalogue import CATALOGUE_FILE
from agent.wire.keys import device_key_id
from policy.catalogue import load_catalogue
from tests.integration.downlink_helpers import Gateway, gateway, wait_for
from tests.integration.web.test_web_security import ORIGIN, csrf_of, http_client, log_in

pytestmark = pytest.mark.mosquitto


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path) as running:
        yield running


def latest(gw: Gateway, purpose: str, recipient: str) -> Any:
    return gw.state.ledger.state()[(purpose, recipient)]


async def test_diagnostics_report_health_without_personal_data(gw: Gateway) -> None:
    result = await gw.send("diagnostics")
    assert result["status"] == "done"
    report = result["result"]
    assert report["health"]["catalogue"] == load_catalogue().version
    assert report["health"]["ledger"]["chain"] == "intact"
    assert {c["name"] for c in report["doctor"]} == {"clock", "watchdog"}
    pinned = report["commands"]["operator_keys"]
    assert pinned["ops-a"] == device_key_id(gw.key("ops-a").public_key())
    assert sorted(pinned) == ["ops-a", "ops-b"]
    text = json.dumps(report)
    assert gw.state.config.site_id not in text  # the pseudonym stays in the header only


async def test_suspend_a_purpose_is_recorded_as_a_support_request(gw: Gateway) -> None:
    assert latest(gw, "improvement", "company").tier is not None
    result = await gw.send("suspend", {"purpose": "improvement", "reference": "SR-1001"})
    assert result["status"] == "done"
    assert result["result"]["off"] == [["improvement", "company"]]
    record = latest(gw, "improvement", "company")
    assert record.tier is None
    assert record.data["collection_method"] == "support_request"
    assert record.data["reference"] == "SR-1001"
    await wait_for(lambda: any(e["header"]["kind"] == "consent"
                               and e["body"].get("reference") == "SR-1001"
                               for e in gw.envelopes()), "the consent change upstream")


async def test_suspending_a_contract_purpose_is_refused_and_changes_nothing(
        gw: Gateway) -> None:
    before = gw.state.ledger.head()
    result = await gw.send("suspend", {"purpose": "service", "reference": "SR-1002"})
    assert result["status"] == "refused" and "required by the contract" in result["reason"]
    assert gw.state.ledger.head() == before


async def test_stop_third_party(gw: Gateway) -> None:
    gw.household.set_grant("maintenance_watch", "installer", "1d")
    result = await gw.send("stop_third_party", {"reference": "SR-1003"})
    assert result["result"]["off"] == [["maintenance_watch", "installer"]]
    record = latest(gw, "maintenance_watch", "installer")
    assert record.tier is None and record.data["reference"] == "SR-1003"


async def test_export_is_sealed_to_the_company(gw: Gateway) -> None:
    result = await gw.send("export", {"reference": "SR-1004"})
    export = result["result"]["export"]
    assert export["format"] == "hems-export/1"
    assert export["consent"]["head"]["count"] == gw.state.ledger.head()[0]
    envelope = next(e for e in gw.envelopes() if e["body"].get("command_id")
                    == result["command_id"])
    company = gw.files.recipient_keys["company"].key_id
    assert envelope["header"]["recipient_key"] == company
    assert (envelope["header"]["purpose"], envelope["header"]["kind"]) == ("service", "event")


async def test_delete_is_performed_and_confirmed(gw: Gateway) -> None:
    result = await gw.send("delete", {"reference": "SR-1005"})
    assert result["status"] == "done" and result["result"]["deleted"] is True
    assert latest(gw, "improvement", "company").tier is None
    assert latest(gw, "service", "company").tier is not None  # the contract still runs
    await wait_for(lambda: any(e["header"]["kind"] == "deletion" for e in gw.envelopes()),
                   "the deletion request upstream")
    deletion = next(e for e in gw.envelopes() if e["header"]["kind"] == "deletion")
    assert deletion["body"]["reference"] == "SR-1005"
    assert deletion["body"]["source"] == "support_request"


async def test_a_grant_request_waits_for_the_household_on_the_page(gw: Gateway) -> None:
    args = {"purpose": "support", "recipient": "support_centre", "tier": "raw", "hours": 24,
            "reference": "SR-1006"}
    result = await gw.send("grant_request", args)
    assert result["status"] == "pending"
    assert ("support", "support_centre") not in gw.state.ledger.grants(gw.household.now())
    [pending] = gw.household.pending_requests()
    assert pending.request_id == result["result"]["request_id"]
    assert pending.expires - pending.received == timedelta(seconds=600)  # the command's ttl
    stored = (gw.state.config.state_dir / PENDING_REQUESTS_FILE).read_text(encoding="ascii")
    assert pending.request_id in stored
    async with http_client(gw.page()) as page:
        token = await log_in(page)
        html = (await page.get("/")).text
        assert pending.request_id in html
        reply = await page.post("/request", data={"csrf": csrf_of(html), "action": "accept",
                                                  "request_id": pending.request_id},
                                headers={"origin": ORIGIN})
        assert reply.status_code == 303, token
    grant = gw.state.ledger.grants(gw.household.now())[("support", "support_centre")]
    record = latest(gw, "support", "support_centre")
    assert grant.tier == "raw" and grant.expires is not None
    assert record.data["collection_method"] == "household_page"
    assert record.data["reference"] == "SR-1006"


async def test_a_grant_request_for_an_impossible_tier_is_refused(gw: Gateway) -> None:
    result = await gw.send("grant_request", {"purpose": "improvement", "recipient": "company",
                                             "tier": "raw", "hours": 24, "reference": "SR-7"})
    assert result["status"] == "refused" and "not available" in result["reason"]
    assert gw.household.pending_requests() == []


def catalogue_with(version: str, **improvement: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    spec["version"] = version
    for purpose in spec["purposes"]:
        if purpose["id"] == "improvement":
            purpose.update(improvement)
    return spec


async def test_catalogue_update_pauses_a_widened_purpose_until_agreed_again(
        gw: Gateway, tmp_path: Path) -> None:
    gw.household.set_grant("improvement", "company", "30min")
    finer = catalogue_with("2026.3", finest_tier="1min")
    result = await gw.send("catalogue_update", {"catalogue": finer})
    assert result["status"] == "done" and result["result"]["needs_agreement"] == ["improvement"]
    record = latest(gw, "improvement", "company")
    assert record.tier is None and record.needs_agreement  # paused, never reset to a default
    assert record.previous_tier == "30min"
    assert gw.state.minimiser is not None and gw.state.catalogue.version == "2026.3"
    async with http_client(gw.page()) as page:
        await log_in(page)
        html = (await page.get("/")).text
    assert 'id="catalogue-notice"' in html and "2026.3" in html
    assert 'id="agree-improvement-company"' in html
    stored = gw.state.config.state_dir / CATALOGUE_FILE
    assert json.loads(stored.read_text(encoding="utf-8"))["version"] == "2026.3"

    same = await gw.send("catalogue_update", {"catalogue": finer})
    older = await gw.send("catalogue_update", {"catalogue": catalogue_with("2026.2")})
    broken = catalogue_with("2026.4", default_tier="raw")  # finer than its finest: invalid
    refused = await gw.send("catalogue_update", {"catalogue": broken})
    assert [same["status"], older["status"], refused["status"]] == [
        "ignored", "ignored", "refused"]
    assert "broken catalogue" in refused["reason"]
    assert gw.state.ledger.catalogue.version == "2026.3"


async def test_the_stored_catalogue_is_loaded_at_start_up(gw: Gateway) -> None:
    result = await gw.send("catalogue_update",
                           {"catalogue": catalogue_with("2026.3", finest_tier="1min")})
    assert result["status"] == "done"
    head = gw.state.ledger.head()
    await gw.stop_downlink()
    uplink = gw.tasks.pop("uplink")
    uplink.cancel()
    await asyncio.gather(uplink, return_exceptions=True)
    gw.state.close()
    gw.state = open_state(load_config(gw.files.config), Metrics(), now=gw.household.now())
    assert gw.state.catalogue.version == "2026.3"
    assert gw.state.ledger.head() == head  # nothing re-applied: the ledger already had it
