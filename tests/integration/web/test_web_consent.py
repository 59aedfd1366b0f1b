"""The household page after a catalogue update: the re-agreement card, agreeing and declining,
and retention shown only where a document states it. Real ledger, release log and outbox; the
app is called in this event loop through httpx's ASGI transport."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.web.app import create_app
from policy.catalogue import Catalogue, load_catalogue, parse_catalogue
from policy.records import Event, Source
from policy.tiers import Tier
from tests.integration.web.test_web_security import (
    ORIGIN,
    Client,
    Rig,
    grant_of,
    http_client,
    log_in,
)
from tests.integration.web.test_web_security import rig as rig


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:
    async with http_client(create_app(rig.service, rig.settings)) as c:
        yield c


def _catalogue(**changes: dict[str, Any]) -> Catalogue:
    raw: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    raw["version"] = "2027.1"
    for p in raw["purposes"]:
        p.update(changes.get(p["id"], {}))
    return parse_catalogue(json.dumps(raw))


def _card(page: str, purpose: str, recipient: str) -> str:
    found = re.search(rf'<form[^>]*id="agree-{purpose}-{recipient}".*?</form>', page, re.S)
    assert found, f"no re-agreement card for {purpose}/{recipient}"
    return found.group(0)


def _visible(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


async def test_a_widened_purpose_is_off_and_the_page_asks_to_agree_again(
        client: Client, rig: Rig) -> None:
    assert grant_of(rig, "improvement", "company") == "1d"  # the factory default
    rig.ledger.apply_catalogue(_catalogue(improvement={"power_stats": ["mean", "max"]}),
                               rig.clock())
    assert grant_of(rig, "improvement", "company") == "off"
    await log_in(client)
    page = (await client.get("/")).text
    card = _card(page, "improvement", "company")
    assert "「最大値」が加わります" in card and "今は何も送っていません" in card
    assert 'name="tier" value="1d"' in card and 'name="tier" value="off"' in card
    assert "同意して「1日ごと」で送る" in card
    assert "最初の設定に戻って" not in page
    english = (await client.get("/?lang=en")).text
    assert "It would also send: maximum values." in _card(english, "improvement", "company")


async def test_agreeing_restores_the_tier_the_household_had(client: Client, rig: Rig) -> None:
    rig.service.set_grant("improvement", "company", "30min")
    rig.ledger.apply_catalogue(_catalogue(improvement={"categories": [
        "equipment", "equipment_status", "pv", "battery", "consumption", "water"]}),
        rig.clock())
    token = await log_in(client)
    card = _card((await client.get("/")).text, "improvement", "company")
    assert "「水道の情報」が加わります" in card and 'value="30min"' in card
    reply = await client.post("/grant", data={"csrf": token, "purpose": "improvement",
                                              "recipient": "company", "tier": "30min"},
                              headers={"origin": ORIGIN})
    assert reply.status_code == 303
    assert grant_of(rig, "improvement", "company") == "30min"
    page = (await client.get("/")).text
    assert 'id="agree-improvement-company"' not in page and 'id="agree"' not in page
    last = rig.ledger.history()[-1]
    assert (last.source.value, last.needs_agreement) == ("household_page", False)


async def test_declining_keeps_it_off_and_ends_the_question(client: Client, rig: Rig) -> None:
    rig.ledger.apply_catalogue(_catalogue(improvement={"power_stats": ["mean", "max"]}),
                               rig.clock())
    token = await log_in(client)
    reply = await client.post("/grant", data={"csrf": token, "purpose": "improvement",
                                              "recipient": "company", "tier": "off"},
                              headers={"origin": ORIGIN})
    assert reply.status_code == 303
    assert grant_of(rig, "improvement", "company") == "off"
    assert rig.service.agreements() == []
    assert 'id="agree"' not in (await client.get("/")).text


async def test_a_contract_purpose_is_kept_and_only_acknowledged(client: Client,
                                                                 rig: Rig) -> None:
    rig.ledger.apply_catalogue(_catalogue(service={"power_stats": ["mean", "max"],
                                                   "categories": ["equipment",
                                                                  "equipment_status", "pv",
                                                                  "battery", "consumption",
                                                                  "gas"]}), rig.clock())
    assert grant_of(rig, "service", "company") == "30min"
    await log_in(client)
    card = _card((await client.get("/")).text, "service", "company")
    assert "042-851-3739" in card and "確認しました" in card
    assert 'value="off"' not in card


async def test_a_purpose_the_household_had_off_is_not_asked_about(client: Client,
                                                                   rig: Rig) -> None:
    rig.service.set_grant("improvement", "company", None)
    rig.ledger.apply_catalogue(_catalogue(improvement={"power_stats": ["mean", "max"]}),
                               rig.clock())
    await log_in(client)
    page = (await client.get("/")).text
    assert 'id="agree-improvement-company"' not in page
    assert grant_of(rig, "improvement", "company") == "off"


async def test_no_retention_period_is_shown_without_its_source(client: Client,
                                                                rig: Rig) -> None:
    await log_in(client)
    labels = {"ja": ("保存期間", "出典", "定めはありません"),
              "en": ("Kept for", "source", "sets no retention period")}
    for lang, (label, source, none) in labels.items():
        page = (await client.get(f"/?lang={lang}")).text
        shown = re.findall(rf"<dt>{label}</dt>\s*<dd>(.*?)</dd>", page, re.S)
        assert len(shown) == len(rig.service.catalogue.purposes), lang
        for text in shown:
            assert none in text and "042-851-3739" in text, text
            # a period is named only with its source
            contact = getattr(rig.service.catalogue.spec.contact, lang)
            if re.search(r"\d", text.replace(contact, "").replace("2(2)[1]", "")):
                assert source in text, text
    ja = (await client.get("/?lang=ja")).text
    assert "出典: プライバシーポリシー 2(2)[1]" in ja
    for unsourced in ("保存期間</dt>\n    <dd>3年", "1年", "90日"):
        assert unsourced not in ja



async def test_a_grant_an_older_update_switched_on_is_stopped_and_explained(
        client: Client, rig: Rig) -> None:
    rig.service.set_grant("proposals", "company", "1mo")
    raw: dict[str, Any] = json.loads(load_catalogue().canonical_json())
    raw["version"] = "2026.5"
    next(p for p in raw["purposes"] if p["id"] == "proposals")["default_tier"] = "1d"
    bad = parse_catalogue(json.dumps(raw), past=True)  # what the old code accepted
    p = bad.purposes["proposals"]
    rig.ledger._write([rig.ledger._draft(p, p.recipients[0], Tier.DAY, event=Event.RESET,
                                         source=Source.CATALOGUE_UPDATE, now=rig.clock(),
                                         needs_agreement=True, catalogue=bad)], bad)
    rig.ledger._catalogue = bad
    assert grant_of(rig, "proposals", "company") == "1d"  # the incident
    rig.ledger.apply_catalogue(_catalogue(), rig.clock())
    assert grant_of(rig, "proposals", "company") == "off"
    await log_in(client)
    card = _card((await client.get("/")).text, "proposals", "company")
    assert "ご同意なしに「1か月ごと」から「1日ごと」に切り替わっていた" in card
    assert 'name="tier" value="1mo"' in card


async def test_a_purpose_made_required_offers_at_least_its_required_tier(
        client: Client, rig: Rig) -> None:
    """The household had improvement at ``events``; an update widens it and makes it required
    at ``1d`` while the contract runs: the card offers ``1d`` (what agreeing can set), not the
    ``events`` it had, which the ledger would refuse."""
    rig.service.set_grant("improvement", "company", "events")
    rig.ledger.apply_catalogue(_catalogue(improvement={
        "power_stats": ["mean", "max"], "required": True, "required_tier": "1d"}), rig.clock())
    [card] = [c for c in rig.service.agreements() if c.purpose == "improvement"]
    assert card.offered == "1d" and card.required
    rig.service.set_grant("improvement", "company", card.offered)
    assert grant_of(rig, "improvement", "company") == "1d"
    assert rig.service.agreements() == []
