"""The household page's release history and provision records show a release that was
published and then removed before the broker acknowledged it as "may have been sent", among
what left the home, never among what was withdrawn unsent. Real service, release log, outbox
and app over ASGI."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from agent.web.app import create_app
from tests.integration.web.test_web_security import (
    START,
    Client,
    Rig,
    build,
    http_client,
    log_in,
    release,
)

WINDOW = START - timedelta(hours=1)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    built = build(tmp_path)
    log = built.release_log
    for seq, (purpose, recipient) in enumerate((("maintenance_watch", "installer"),
                                                ("maintenance_watch", "installer"),
                                                ("improvement", "company")), start=1):
        start = WINDOW + timedelta(minutes=30 * seq)
        log.append(release(purpose, recipient, "30min", start, start + timedelta(minutes=30)),
                   size=400, now=start + timedelta(minutes=30), seq=seq)
    log.mark_sent([1], now=START)
    log.mark_possibly_sent([2], reason="consent_change", now=START)  # published, unacked
    log.mark_withdrawn([3], reason="consent_change", now=START)
    yield built
    built.outbox.close()
    built.ledger.close()


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:
    async with http_client(create_app(rig.service, rig.settings)) as c:
        await log_in(c)
        yield c


def _rows(html: str) -> tuple[list[str], list[str]]:
    """Body rows of the release tables, and of the withdrawn table apart."""
    withdrawn = re.search(r'<table class="rel" id="withdrawn">.*?</table>', html, re.S)
    apart = withdrawn.group(0) if withdrawn else ""

    def body_rows(part: str) -> list[str]:  # of release tables only (not the chart's table)
        return [row for table in re.findall(r'<table class="rel"[^>]*>(.*?)</table>', part, re.S)
                for body in re.findall(r"<tbody>(.*?)</tbody>", table, re.S)
                for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]

    return body_rows(html.replace(apart, "") if apart else html), body_rows(apart)


@pytest.mark.parametrize(("lang", "mark"), [("ja", "送信済みの可能性あり"),
                                            ("en", "may have been sent")])
async def test_the_release_history_marks_what_may_have_been_sent(
        client: Client, lang: str, mark: str) -> None:
    html = (await client.get(f"/released?lang={lang}")).text
    released, withdrawn = _rows(html)
    assert len(released) == 2  # the sent one and the possibly sent one, for the installer
    assert [mark in row for row in released] == [True, False]  # newest first
    assert len(withdrawn) == 1 and mark not in withdrawn[0]
    cards = (await client.get(f"/?lang={lang}")).text  # the consent card's recent releases
    assert cards.count(mark) == 1


async def test_provision_records_list_what_may_have_been_provided(client: Client) -> None:
    data = (await client.get("/provision-records.json")).json()
    assert [(r["seq"], r["status"]) for r in data["records"]] == [(1, "sent"),
                                                                  (2, "possibly_sent")]
    assert data["records"][1]["possibly_sent_reason"] == "consent_change"
    assert data["withdrawn_never_sent"] == []  # seq 3 went to the company: no provision
    export = (await client.get("/export.json")).json()
    assert [r["seq"] for r in export["provision_records"]] == [1, 2]
    assert [r["seq"] for r in export["withdrawn_never_sent"]] == [3]
