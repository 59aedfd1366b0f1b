"""The release log tells what left: the real pipeline, outbox, publisher and mosquitto.

Releases committed to the outbox and then purged by a consent change or an expiry are marked
withdrawn and never appear as released in the export; what the broker acknowledged is marked
sent, and is exactly what a subscriber on the broker saw. What was published to a stalled
broker (SIGSTOP) and purged before its PUBACK is marked possibly sent and stays among the
provision records: the broker delivers it once it runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import UplinkError
from agent.host.metrics import Metrics
from agent.pipeline import Pipeline
from agent.store.outbox import Outbox
from agent.uplink.publisher import Publisher
from agent.uplink.session import connect, tls_context
from agent.wire.keys import ensure_device_key, generate_recipient_key
from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.rights import ReleaseLog, export_all
from tests.integration.uplink_helpers import PASSWORDS, broker_config, wait_until
from tests.support.mosquitto import RECEIVER_USER, Mosquitto

SITE = "s-0001"
T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # a window boundary
RECIPIENTS = ("company", "installer", "support_centre")


@dataclass
class Site:
    pipeline: Pipeline
    ledger: Ledger
    outbox: Outbox
    release_log: ReleaseLog


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    catalogue = load_catalogue()
    opened = T0 - timedelta(hours=1)
    ledger = Ledger.open(tmp_path / "ledger.json", catalogue, SITE, opened)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    release_log = ReleaseLog(tmp_path / "release-log.jsonl", catalogue, SITE)
    pipeline = Pipeline(site_id=SITE, ledger=ledger, minimiser=Minimiser(catalogue),
                        outbox=outbox, device_key=ensure_device_key(tmp_path / "device.key"),
                        recipients={r: generate_recipient_key().public for r in RECIPIENTS},
                        metrics=Metrics(), release_log=release_log)
    yield Site(pipeline=pipeline, ledger=ledger, outbox=outbox, release_log=release_log)
    outbox.close()
    ledger.close()


def _half_hour(site: Site, start: datetime) -> int:
    """Feed a half hour of readings from ``start`` and release it; how many were queued."""
    site.pipeline.submit([
        Reading(device="meter", point=point, kind=kind, value=value + minute, unit=unit,
                ts=start + timedelta(minutes=minute, seconds=5))
        for minute in range(30)
        for point, kind, value, unit in (("grid.power", PointKind.POWER, 500.0, "W"),
                                         ("grid.energy_import", PointKind.ENERGY, 1e6, "Wh"))])
    return site.pipeline.tick(start + timedelta(minutes=30, seconds=10))


def _by_purpose(entries: list[dict[str, object]]) -> list[str]:
    return sorted(str(e["purpose"]) for e in entries)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", PASSWORDS) as mosquitto:
        yield mosquitto


@contextlib.asynccontextmanager
async def _seen_on_broker(broker: Mosquitto) -> AsyncIterator[list[str]]:
    """Topics of every message the broker delivers, as a subscriber on it sees them."""
    config = broker_config(broker, RECEIVER_USER, "watcher")
    topics: list[str] = []
    async with connect(config, tls_context(config)) as client:
        await client.subscribe("hems/v1/#", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                topics.append(str(message.topic))

        task = asyncio.create_task(collect())
        try:
            yield topics
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, UplinkError):
                await task


@pytest.mark.mosquitto
async def test_a_consent_change_withdraws_queued_releases_and_only_sent_ones_are_released(
        site: Site, broker: Mosquitto) -> None:
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", "30min", source="household_page",
        now=T0 - timedelta(minutes=30))])
    queued = _half_hour(site, T0)
    statuses = {e.purpose: e.status for e in site.release_log.entries()}
    assert statuses == {"service": "queued", "maintenance_watch": "queued"} and queued == 2
    # The household switches the third party off before the broker was ever reached.
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", None, source="household_page",
        now=T0 + timedelta(minutes=31))])

    publisher = Publisher(broker_config(broker, SITE), site.outbox, batch=10, idle_wait=0.05)
    site.outbox.on_commit = publisher.notify
    async with _seen_on_broker(broker) as topics:
        task = asyncio.create_task(publisher.run())
        try:
            await wait_until(lambda: site.outbox.unacknowledged() == 0, "the outbox drained")
            site.outbox.flush()
            await wait_until(lambda: len(topics) == 3, "every message seen on the broker")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # What the broker saw: the service data and both consent changes, no maintenance watch data.
    assert sorted(topics) == [f"hems/v1/{SITE}/maintenance_watch/consent"] * 2 + [
        f"hems/v1/{SITE}/service/data"]

    exported = export_all(ledger=site.ledger, now=T0 + timedelta(hours=1),
                          release_log=site.release_log)
    assert _by_purpose(exported["release_log"]) == ["service"]
    assert exported["provision_records"] == [] and exported["queued_not_yet_sent"] == []
    [withdrawn] = exported["withdrawn_never_sent"]
    assert withdrawn["purpose"] == "maintenance_watch" and withdrawn["provision_record"]
    assert withdrawn["withdrawn_reason"] == "consent_change"
    assert site.release_log.provision_records() == []


async def test_an_expiry_withdraws_what_its_grant_had_queued(site: Site) -> None:
    site.pipeline.apply_changes([site.ledger.set_grant(
        "support", "support_centre", "30min", source="household_page",
        expires=T0 + timedelta(minutes=40), now=T0 - timedelta(minutes=30))])
    assert _half_hour(site, T0) == 2
    site.pipeline.tick(T0 + timedelta(minutes=41))  # the grant expires; nothing was sent
    entries = {e.purpose: e for e in site.release_log.entries()}
    assert entries["support"].status == "withdrawn"
    assert entries["support"].withdrawn_reason == "expiry"
    assert entries["service"].status == "queued"
    exported = export_all(ledger=site.ledger, now=T0 + timedelta(hours=1),
                          release_log=site.release_log)
    assert exported["release_log"] == []
    assert _by_purpose(exported["withdrawn_never_sent"]) == ["support"]


def test_start_up_withdraws_what_a_change_committed_before_a_power_cut_no_longer_allows(
        site: Site) -> None:
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", "30min", source="household_page",
        now=T0 - timedelta(minutes=30))])
    assert _half_hour(site, T0) == 2
    # A purpose the ledger no longer knows (a catalogue revision removed it) is off too.
    site.outbox.enqueue(b"x" * 64, topic=f"hems/v1/{SITE}/retired/data", purpose="retired",
                        recipient="company", tier="1d", kind="data")
    site.outbox.flush()
    # The change reaches the ledger; the power goes off before its purge reaches the outbox.
    site.ledger.set_grant("maintenance_watch", "installer", None, source="household_page",
                          now=T0 + timedelta(minutes=31))
    assert ("maintenance_watch", "installer", "30min") in site.outbox.queued_data()

    assert site.pipeline.reconcile_outbox(T0 + timedelta(minutes=32)) == 2  # next start-up
    assert site.outbox.queued_data() == {("service", "company", "30min")}
    entries = {e.purpose: e for e in site.release_log.entries()}
    assert entries["maintenance_watch"].status == "withdrawn"
    assert entries["maintenance_watch"].withdrawn_reason == "consent_change"
    assert entries["service"].status == "queued"
    assert site.pipeline.reconcile_outbox(T0 + timedelta(minutes=33)) == 0  # it agrees now


def test_a_window_released_before_a_restart_is_not_released_again(
        site: Site, tmp_path: Path) -> None:
    assert _half_hour(site, T0) == 1  # service, to the company
    metrics = Metrics()

    def restart() -> None:  # a fresh minimiser: its last snapshot predates the release
        site.pipeline = Pipeline(
            site_id=SITE, ledger=site.ledger, minimiser=Minimiser(load_catalogue()),
            outbox=site.outbox, device_key=ensure_device_key(tmp_path / "device.key"),
            recipients={r: generate_recipient_key().public for r in RECIPIENTS},
            metrics=metrics, release_log=site.release_log)

    restart()  # after a power cut: the same half hour comes round again
    assert _half_hour(site, T0) == 0
    restart()  # with a clock behind: the half hour before it
    assert _half_hour(site, T0 - timedelta(minutes=30)) == 0
    repeated = "hems_releases_repeated_total"
    assert metrics.get(repeated, purpose="service", reason="already_released") == 1
    assert metrics.get(repeated, purpose="service", reason="clock_behind") == 1
    assert [e.start for e in site.release_log.entries()] == [T0]


def test_start_up_withdraws_what_a_grant_that_expired_while_off_had_queued(site: Site) -> None:
    site.pipeline.apply_changes([site.ledger.set_grant(
        "support", "support_centre", "30min", source="household_page",
        expires=T0 + timedelta(minutes=40), now=T0 - timedelta(minutes=30))])
    assert _half_hour(site, T0) == 2
    # The agent is off when the grant expires; it starts again before its first tick.
    assert site.pipeline.reconcile_outbox(T0 + timedelta(minutes=39)) == 0  # still granted
    assert site.pipeline.reconcile_outbox(T0 + timedelta(minutes=45)) == 1
    assert site.outbox.queued_data() == {("service", "company", "30min")}
    entries = {e.purpose: e for e in site.release_log.entries()}
    assert entries["support"].status == "withdrawn"
    assert entries["support"].withdrawn_reason == "expiry"


def _in_flight(outbox: Outbox) -> int:
    return int(outbox._conn.execute("SELECT COUNT(*) FROM in_flight").fetchone()[0])


def _bytes_waiting_at(port: int) -> int:
    """Bytes received and not yet read by whoever listens on ``port`` (all its connections):
    what clients wrote to a paused broker."""
    total = 0
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            total += int(fields[4].split(":")[1], 16)
    return total


async def _published_to_a_paused_broker(site: Site, broker: Mosquitto) -> int:
    """Pause the broker, release a half hour (service and maintenance watch data) and wait
    until both PUBLISHes wait in the broker's socket; the bytes of the two envelopes."""
    broker.pause()
    assert _half_hour(site, T0) == 2
    size = sum(n for _, n, _ in site.outbox.noted())
    await wait_until(lambda: _in_flight(site.outbox) == 2, "both marked in flight")
    await wait_until(lambda: _bytes_waiting_at(broker.port) >= size,
                     "both PUBLISHes written to the paused broker's socket")
    return size


def _switch_the_installer_off(site: Site) -> None:
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", None, source="household_page",
        now=T0 + timedelta(minutes=31))])


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.mosquitto
async def test_an_envelope_published_to_a_stalled_broker_and_then_purged_is_possibly_sent(
        site: Site, broker: Mosquitto) -> None:
    """The broker stalls after the PUBLISH reached its socket; the household switches the
    installer off; the purge cannot take back what is on the wire, and the broker delivers it
    when it runs again: the release log says possibly sent, the export lists it among the
    provision records."""
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", "30min", source="household_page",
        now=T0 - timedelta(minutes=30))])
    config = dataclasses.replace(broker_config(broker, SITE), timeout=1.0)
    publisher = Publisher(config, site.outbox, batch=10, idle_wait=0.05)
    site.outbox.on_commit = publisher.notify
    watch = f"hems/v1/{SITE}/maintenance_watch/data"
    async with _seen_on_broker(broker) as topics:
        task = asyncio.create_task(publisher.run())
        try:
            await wait_until(lambda: site.outbox.unacknowledged() == 0, "the grant's notice sent")
            try:
                await _published_to_a_paused_broker(site, broker)
                _switch_the_installer_off(site)
                # The PUBACK never comes: the publisher gives that connection up.
                await wait_until(lambda: publisher.reconnects >= 1, "the publish timed out")
            finally:
                broker.resume()
            entries = {e.purpose: e for e in site.release_log.entries()}
            assert entries["maintenance_watch"].status == "possibly_sent"
            assert entries["maintenance_watch"].possibly_sent_reason == "consent_change"
            await wait_until(lambda: watch in topics, "the broker delivered it after all")
            await wait_until(lambda: site.outbox.unacknowledged() == 0, "the outbox drained")
            site.outbox.flush()
        finally:
            await _stop(task)
    assert topics.count(watch) == 1

    exported = export_all(ledger=site.ledger, now=T0 + timedelta(hours=1),
                          release_log=site.release_log)
    [record] = exported["provision_records"]
    assert (record["purpose"], record["status"]) == ("maintenance_watch", "possibly_sent")
    assert exported["withdrawn_never_sent"] == [] and exported["queued_not_yet_sent"] == []
    assert {e["purpose"]: e["status"] for e in exported["release_log"]} == {
        "service": "sent", "maintenance_watch": "possibly_sent"}


@pytest.mark.mosquitto
async def test_a_possibly_sent_envelope_whose_puback_comes_after_the_purge_is_sent(
        site: Site, broker: Mosquitto) -> None:
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", "30min", source="household_page",
        now=T0 - timedelta(minutes=30))])
    # A PUBACK wait far longer than the pause: the broker answers on the same connection.
    config = dataclasses.replace(broker_config(broker, SITE), timeout=30.0)
    publisher = Publisher(config, site.outbox, batch=10, idle_wait=0.05)
    site.outbox.on_commit = publisher.notify
    task = asyncio.create_task(publisher.run())
    try:
        await wait_until(lambda: site.outbox.unacknowledged() == 0, "the grant's notice sent")
        try:
            await _published_to_a_paused_broker(site, broker)
            _switch_the_installer_off(site)
            statuses = {e.purpose: e.status for e in site.release_log.entries()}
            assert statuses == {"service": "queued", "maintenance_watch": "possibly_sent"}
        finally:
            broker.resume()
        await wait_until(lambda: site.outbox.unacknowledged() == 0, "the outbox drained")
        site.outbox.flush()
    finally:
        await _stop(task)
    assert publisher.reconnects == 0  # the same connection: its PUBACKs came
    assert [(e.purpose, e.status) for e in site.release_log.provision_records()] == [
        ("maintenance_watch", "sent")]
