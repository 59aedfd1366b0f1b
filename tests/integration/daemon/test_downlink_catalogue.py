"""Signed catalogue updates end to end (operator → real mosquitto → gateway): an update can
never switch consent on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.store.catalogue import CATALOGUE_FILE
from drivers.models import PointKind, Quality, Reading
from policy.catalogue import load_catalogue
from policy.minimise import Minimiser
from tests.integration.downlink_helpers import Gateway, gateway

pytestmark = pytest.mark.mosquitto


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path) as running:
        yield running


def _spec(version: str, pid: str, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    spec["version"] = version
    next(p for p in spec["purposes"] if p["id"] == pid).update(fields)
    return spec


async def test_an_update_defaulting_proposals_on_is_refused_and_nothing_leaves(
        gw: Gateway) -> None:
    factory = gw.state.ledger.catalogue
    result = await gw.send("catalogue_update",
                           {"catalogue": _spec("2026.9", "proposals", default_tier="1d")})
    assert result["status"] == "refused"
    reason = result["reason"]
    assert "'proposals'" in reason and "'company'" in reason and "default_tier" in reason
    assert gw.state.ledger.catalogue.content_hash == factory.content_hash
    assert not (gw.state.config.state_dir / CATALOGUE_FILE).exists()
    now = gw.household.now()
    later = now + timedelta(days=2)
    assert ("proposals", "company") not in gw.state.ledger.grants(later)
    assert not [r for r in gw.state.ledger.history() if r.purpose == "proposals"
                and r.tier is not None]
    # what the gateway's grants let through over two days: nothing for proposals
    minimiser = Minimiser(gw.state.catalogue)
    minimiser.feed(Reading(device="inv", point="pv.power", kind=PointKind.POWER, value=400.0,
                           unit="W", ts=now + timedelta(minutes=m), quality=Quality.GOOD)
                   for m in range(0, 2 * 24 * 60, 10))
    released = {r.purpose for r in minimiser.flush(later, gw.state.ledger.grants(later))}
    assert "service" in released and "proposals" not in released


async def test_an_update_with_a_third_party_defaulting_on_is_refused(gw: Gateway) -> None:
    result = await gw.send("catalogue_update", {"catalogue": _spec(
        "2026.9", "maintenance_watch", default_tier="30min")})
    assert result["status"] == "refused"
    assert "'maintenance_watch'" in result["reason"] and "'sales_company'" in result["reason"]
    assert not {k for k in gw.state.ledger.grants(gw.household.now())
                if k[0] == "maintenance_watch"}


async def test_a_proposals_grant_is_paused_not_widened_by_a_signed_update(gw: Gateway) -> None:
    gw.household.set_grant("proposals", "company", "1d")
    wider = _spec("2026.9", "proposals", finest_tier="30min", rounding={
        "1mo": {"energy": 1000, "power": 100}, "1d": {"energy": 100, "power": 100},
        "30min": {"energy": 100, "power": 100}})
    result = await gw.send("catalogue_update", {"catalogue": wider})
    assert result["status"] == "done" and result["result"]["needs_agreement"] == ["proposals"]
    assert ("proposals", "company") not in gw.state.ledger.grants(gw.household.now())
    [agreement] = gw.household.agreements()
    assert (agreement.purpose, agreement.offered, agreement.current) == ("proposals", "1d",
                                                                        None)
