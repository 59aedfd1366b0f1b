"""Every release that can leave the home is in the release log, even after a power cut between
the outbox commit and the log's write: the real pipeline, outbox (sqlite) and release log.

The log entry's note is committed with the envelope; connecting the pipeline to the outbox
appends the entries the log lacks, once, and the later `sent` lines apply to them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.host.metrics import Metrics
from agent.pipeline import Pipeline
from agent.store.outbox import Outbox
from agent.wire.keys import ensure_device_key, generate_recipient_key
from drivers.models import PointKind, Reading
from policy.catalogue import load_catalogue
from policy.ledger import Ledger
from policy.minimise import Minimiser
from policy.rights import ReleaseLog

SITE = "s-0001"
T0 = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # a window boundary
RECIPIENTS = ("company", "installer")


@dataclass
class Site:
    path: Path
    ledger: Ledger
    outbox: Outbox
    release_log: ReleaseLog
    pipeline: Pipeline


@contextlib.contextmanager
def _site(path: Path) -> Iterator[Site]:
    """The daemon's state on ``path``, opened as at start-up (ledger, outbox, log, pipeline)."""
    catalogue = load_catalogue()
    ledger = Ledger.open(path / "ledger.json", catalogue, SITE, T0 - timedelta(hours=1))
    outbox = Outbox(path / "outbox.sqlite")
    release_log = ReleaseLog(path / "release-log.jsonl", catalogue, SITE)
    keys = {r: generate_recipient_key().public for r in RECIPIENTS}
    pipeline = Pipeline(site_id=SITE, ledger=ledger, minimiser=Minimiser(catalogue),
                        outbox=outbox, device_key=ensure_device_key(path / "device.key"),
                        recipients=keys, metrics=Metrics(), release_log=release_log)
    try:
        yield Site(path, ledger, outbox, release_log, pipeline)
    finally:
        with contextlib.suppress(sqlite3.Error):
            outbox._conn.close()  # no flush: whatever is not committed is lost, as in a cut
        ledger.close()


def _grant_and_release(site: Site) -> None:
    """Maintenance watch granted to the installer (a provision record), then half an hour of
    readings released: a service and a maintenance watch envelope."""
    site.pipeline.apply_changes([site.ledger.set_grant(
        "maintenance_watch", "installer", "30min", source="household_page",
        now=T0 - timedelta(minutes=30))])
    site.pipeline.submit([
        Reading(device="meter", point="grid.energy_import", kind=PointKind.ENERGY,
                value=1e6 + minute, unit="Wh", ts=T0 + timedelta(minutes=minute, seconds=5))
        for minute in range(30)])
    site.pipeline.tick(T0 + timedelta(minutes=30, seconds=10))


def _lines(site: Site) -> list[dict[str, object]]:
    log = site.path / "release-log.jsonl"
    return [json.loads(line) for line in log.read_bytes().splitlines()] if log.exists() else []


def _power_cut_before_the_log(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox commits the envelopes; the power goes before the release log is written."""
    def cut(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "power cut")

    with monkeypatch.context() as patch:
        patch.setattr(ReleaseLog, "append_noted", cut)
        with pytest.raises(OutboxError, match="power cut"):
            _grant_and_release(site)


def test_releases_committed_before_a_power_cut_are_listed_once_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _site(tmp_path) as site:
        _power_cut_before_the_log(site, monkeypatch)
        committed = site.outbox.noted()
        assert len(committed) == 2 and list(site.release_log.entries()) == []

    with _site(tmp_path) as site:  # the next start: connecting the pipeline recovers them
        entries = {e.purpose: e for e in site.release_log.entries()}
        assert sorted(e.seq for e in entries.values()) == [seq for seq, _, _ in committed]
        assert {e.status for e in entries.values()} == {"queued"}
        watch = entries["maintenance_watch"]
        assert watch.provision_record and watch.recipient_name == {
            "ja": "施工店", "en": "Installer"}
        assert watch.to_json()["logged_at"] == "2026-11-26T00:30:10+00:00"  # committed then
        assert (watch.start.isoformat(), watch.end.isoformat()) == (
            "2026-11-26T00:00:00+00:00", "2026-11-26T00:30:00+00:00")
        assert watch.size == dict((s, n) for s, n, _ in committed)[watch.seq]
        assert site.pipeline.recover_release_log() == 0  # idempotent

        # The publisher sends them; the broker acknowledges: the sent line applies to them.
        site.outbox.ack([item.id for item in site.outbox.next_batch()])
        site.outbox.flush()
        assert {e.status for e in site.release_log.entries()} == {"sent"}
        assert [e.purpose for e in site.release_log.provision_records()] == [
            "maintenance_watch"]

    with _site(tmp_path) as site:  # and again: nothing stored, nothing added, none twice
        assert site.pipeline.recover_release_log() == 0
        releases = [line for line in _lines(site) if "event" not in line]
        assert len(releases) == 2 and len({line["seq"] for line in releases}) == 2


def test_a_start_after_the_log_was_written_adds_nothing(tmp_path: Path) -> None:
    with _site(tmp_path) as site:
        _grant_and_release(site)  # committed and logged; the power goes now
        before = (tmp_path / "release-log.jsonl").read_bytes()
    with _site(tmp_path) as site:
        assert (tmp_path / "release-log.jsonl").read_bytes() == before
        assert [e.status for e in site.release_log.entries()] == ["queued", "queued"]


def test_a_torn_entry_is_written_again_at_the_next_start(tmp_path: Path) -> None:
    with _site(tmp_path) as site:
        _grant_and_release(site)
        log = tmp_path / "release-log.jsonl"
        data = log.read_bytes()
        whole = [json.loads(line) for line in data.splitlines()]
        log.write_bytes(data[:-40])  # the last entry's write was cut short by the power
    with _site(tmp_path) as site:
        assert _lines(site) == whole  # the torn line dropped, the entry written again


def test_a_failed_log_write_is_repeated_before_any_row_is_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card fills while the entries are written (one whole line and part of the next):
    the outbox keeps the rows, and the next report writes the entries, none twice and no line
    glued to the torn one, before the acknowledged rows go."""
    real_write = os.write

    def short_write(fd: int, data: bytes | memoryview) -> int:
        if b'"consent_record_hash"' not in bytes(data):  # not release entries: the ledger's
            return real_write(fd, data)
        first = bytes(data).index(b"\n") + 1
        real_write(fd, bytes(data)[:first + 20])
        raise OSError(errno.ENOSPC, "No space left on device")

    with _site(tmp_path) as site:
        with monkeypatch.context() as patch:
            patch.setattr("policy.rights.os.write", short_write)
            with pytest.raises(OutboxError, match="No space left"):
                _grant_and_release(site)
        assert len(_lines_tolerant(tmp_path)) == 1
        site.outbox.ack([item.id for item in site.outbox.next_batch()])
        site.outbox.flush()  # the entries first, then "sent" synced, then the delete
        releases = [line for line in _lines(site) if "event" not in line]
        assert sorted(line["purpose"] for line in releases) == ["maintenance_watch", "service"]
        assert {e.status for e in site.release_log.entries()} == {"sent"}
        assert site.outbox.noted() == []


def _lines_tolerant(path: Path) -> list[bytes]:
    """Whole lines of the log (a torn last one left out)."""
    return (path / "release-log.jsonl").read_bytes().split(b"\n")[:-1]


def test_an_outbox_from_before_log_notes_gets_the_column_in_place(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("""
            CREATE TABLE envelopes (
                id INTEGER PRIMARY KEY, seq INTEGER, topic TEXT NOT NULL, purpose TEXT NOT NULL,
                recipient TEXT NOT NULL, tier TEXT NOT NULL, kind TEXT NOT NULL,
                priority INTEGER NOT NULL, created REAL NOT NULL, size INTEGER NOT NULL,
                payload BLOB NOT NULL);
            INSERT INTO envelopes VALUES (3, 17, 't', 'service', 'company', '30min', 'data', 0,
                                          1000000.0, 3, x'616263');""")
    box = Outbox(path)
    assert box.stats().depth == 1 and box.queued_data() == {("service", "company", "30min")}
    assert box.noted() == []  # an envelope from before notes: its entry was written then
    box.enqueue(b"xy", topic="t", purpose="service", recipient="company", tier="30min",
                kind="data", seq=18, log_entry='{"n":1}')
    assert box.noted() == [(18, 2, '{"n":1}')]
    box.close()


def test_an_envelope_in_flight_at_a_power_cut_and_purged_at_the_next_start_is_possibly_sent(
        tmp_path: Path) -> None:
    """The publisher marked the batch in flight and handed it to the MQTT client; the
    household switched the installer off, and the power went before the purge: the start-up
    check purges it, and the log says it may have left."""
    with _site(tmp_path) as site:
        _grant_and_release(site)
        batch = site.outbox.next_batch()
        site.outbox.publishing([item for item in batch if item.purpose == "maintenance_watch"])
        site.ledger.set_grant("maintenance_watch", "installer", None, source="household_page",
                              now=T0 + timedelta(minutes=31))
    with _site(tmp_path) as site:
        assert site.pipeline.reconcile_outbox(T0 + timedelta(minutes=32)) == 1
        [record] = site.release_log.provision_records()
        assert (record.status, record.possibly_sent_reason) == (
            "possibly_sent", "consent_change")
        assert {e.purpose: e.status for e in site.release_log.entries()} == {
            "service": "queued", "maintenance_watch": "possibly_sent"}
