"""A consent change from the household page goes through the pipeline's one consent path: the
queued envelopes it no longer allows are purged once, the release log marks each withdrawn
once, and the page shows the count that purge returned. Real pipeline, outbox, ledger and
release log; the app is called in this event loop through httpx's ASGI transport."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from agent.web.app import create_app
from agent.web.household import HouseholdService
from agent.web.security import PairingHash
from agent.web.settings import WebSettings
from policy.rights import STATUS_WITHDRAWN
from tests.integration.pipeline.test_release_withdrawal import T0, Site, _half_hour
from tests.integration.pipeline.test_release_withdrawal import site as site
from tests.integration.web.test_web_security import (
    _PAIRING,
    HOST,
    ORIGIN,
    PORT,
    http_client,
    log_in,
)


async def test_a_change_from_the_page_purges_once_and_shows_that_count(
        site: Site) -> None:
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", "30min", source="household_page",
        now=T0 - timedelta(minutes=30))])
    queued = _half_hour(site, T0) + _half_hour(site, T0 + timedelta(minutes=30))
    assert queued == 4  # service and maintenance_watch, two half hours each
    purges: list[tuple[Any, ...]] = []
    real_purge = site.outbox.purge

    def counted(*args: Any, **kwargs: Any) -> int:
        purges.append(args)
        return real_purge(*args, **kwargs)

    site.outbox.purge = counted  # type: ignore[method-assign]
    now = T0 + timedelta(minutes=61)

    def clock() -> datetime:
        return now

    service = HouseholdService(ledger=site.ledger, release_log=site.release_log,
                               outbox=site.outbox, apply_consent=site.pipeline.apply_changes,
                               on_deletion=lambda item: None, clock=clock)
    settings = WebSettings(pairing=PairingHash.parse(_PAIRING), allowed_hosts=frozenset({HOST}),
                           port=PORT)
    async with http_client(create_app(service, settings)) as client:
        token = await log_in(client)
        reply = await client.post("/grant", data={"csrf": token, "purpose": "maintenance_watch",
                                                  "recipient": "installer", "tier": "off"},
                                  headers={"origin": ORIGIN})
        assert reply.status_code == 303
        page = (await client.get("/")).text

    assert [args[:2] for args in purges] == [("maintenance_watch", "installer")]
    withdrawn = [e for e in site.release_log.entries() if e.status == STATUS_WITHDRAWN]
    assert sorted((e.purpose, e.withdrawn_reason) for e in withdrawn) == [
        ("maintenance_watch", "consent_change")] * 2
    assert len({e.seq for e in withdrawn}) == 2
    assert "まだ送っていなかったデータ2件を削除しました。" in page
    assert site.outbox.stats().depth == 2 + 2  # the service data and both consent notices


async def test_a_change_that_purges_nothing_shows_no_count(site: Site) -> None:
    service = HouseholdService(ledger=site.ledger, release_log=site.release_log,
                               outbox=site.outbox, apply_consent=site.pipeline.apply_changes,
                               on_deletion=lambda item: None, clock=lambda: T0)
    outcome = service.set_grant("improvement", "company", None)
    assert outcome.purged == 0
    assert [c.record.purpose for c in outcome.changes] == ["improvement"]
    assert site.outbox.stats().depth == 1  # the consent notice, queued by the pipeline
