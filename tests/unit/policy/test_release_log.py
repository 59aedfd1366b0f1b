"""The release log: queued, sent and withdrawn releases; append-only; torn lines; retention."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from policy.catalogue import Catalogue, load_catalogue
from policy.ledger import Ledger
from policy.rights import ReleaseLog, export_all
from tests.unit.policy.test_policy_rights import T0, _release


def _log(tmp_path: Path) -> ReleaseLog:
    return ReleaseLog(tmp_path / "releases.jsonl", load_catalogue(), "site-1")


def _three(log: ReleaseLog) -> None:
    log.append_many([(_release("service", "company"), 210, 1),
                     (_release("maintenance_watch", "installer"), 190, 2),
                     (_release("maintenance_watch", "installer"), 190, 3)], now=T0)


def _status(log: ReleaseLog) -> dict[int, str]:
    return {e.seq: e.status for e in log.entries() if e.seq is not None}


def test_a_release_is_queued_until_sent_or_withdrawn(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    assert _status(log) == {1: "queued", 2: "queued", 3: "queued"}
    log.mark_sent([1], now=T0 + timedelta(minutes=1))
    log.mark_withdrawn([2], reason="consent_change", now=T0 + timedelta(minutes=2))
    assert _status(log) == {1: "sent", 2: "withdrawn", 3: "queued"}
    sent, withdrawn, _ = log.entries()
    assert sent.sent_at == T0 + timedelta(minutes=1)
    assert (withdrawn.withdrawn_reason, withdrawn.withdrawn_at) == (
        "consent_change", T0 + timedelta(minutes=2))
    assert [e.seq for e in log.released()] == [1]
    assert log.provision_records() == []  # nothing left for the installer


def test_sent_wins_over_withdrawn(tmp_path: Path) -> None:
    """An envelope already on the wire when it was purged, then acknowledged, did leave."""
    log = _log(tmp_path)
    _three(log)
    log.mark_withdrawn([2, 3], reason="expiry", now=T0)
    log.mark_sent([2], now=T0)
    assert _status(log) == {1: "queued", 2: "sent", 3: "withdrawn"}
    assert [e.seq for e in log.provision_records()] == [2]


def test_the_file_is_only_ever_appended_to(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    before = (tmp_path / "releases.jsonl").read_bytes()
    log.mark_sent([1], now=T0)
    log.mark_withdrawn([2], reason="erasure", now=T0)
    after = (tmp_path / "releases.jsonl").read_bytes()
    assert after.startswith(before)
    events = [json.loads(line) for line in after[len(before):].splitlines()]
    assert [(e["event"], e["seqs"]) for e in events] == [("sent", [1]), ("withdrawn", [2])]


def test_a_torn_sent_line_leaves_the_release_queued(tmp_path: Path) -> None:
    """A power cut while "sent" was written: the outbox had not deleted the envelope yet
    (it syncs the log first), so it is sent again and marked then."""
    log = _log(tmp_path)
    _three(log)
    with (tmp_path / "releases.jsonl").open("ab") as fh:
        fh.write(b'{"event": "sent", "logged_at": "2026-05-31T15:00:00+00:00", "seqs": [1')
    assert _status(_log(tmp_path)) == {1: "queued", 2: "queued", 3: "queued"}


def test_unsynced_sent_lines_are_read_at_once_and_synced_later(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    log.mark_sent([3], now=T0, sync=False)
    assert _status(log)[3] == "sent"
    log.sync()
    log.sync()  # nothing left to sync: a no-op
    assert _status(_log(tmp_path))[3] == "sent"


def test_an_unknown_withdrawal_reason_is_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    size = (tmp_path / "releases.jsonl").stat().st_size
    with pytest.raises(ValueError, match="unknown withdrawal reason 'because'"):
        log.mark_withdrawn([1], reason="because", now=T0)
    assert (tmp_path / "releases.jsonl").stat().st_size == size


def test_entries_logged_before_sequence_numbers_count_as_sent(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.append(_release("maintenance_watch", "installer"), size=1, now=T0)
    assert [e.status for e in log.entries()] == ["sent"]
    assert len(log.provision_records()) == 1


def test_erasure_keeps_provision_records_with_their_fate(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    log.mark_sent([1, 2], now=T0)
    log.mark_withdrawn([3], reason="consent_change", now=T0)
    assert log.forget_household() == 1  # the service entry
    assert _status(log) == {2: "sent", 3: "withdrawn"}
    lines = [json.loads(x) for x in (tmp_path / "releases.jsonl").read_bytes().splitlines()]
    assert [e["seqs"] for e in lines if "event" in e] == [[2], [3]]  # seq 1 is gone


def test_retention_drops_events_with_their_releases(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    log.mark_sent([1, 2, 3], now=T0)
    assert log.prune(T0 + timedelta(days=366)) == 1
    assert _status(log) == {2: "sent", 3: "sent"}
    assert log.prune(T0 + timedelta(days=3 * 365 + 2)) == 2
    assert (tmp_path / "releases.jsonl").read_bytes() == b""


def test_export_lists_only_what_left_and_the_rest_apart(tmp_path: Path) -> None:
    cat = load_catalogue()
    ledger = Ledger.open(tmp_path / "l.json", cat, "site-1", T0)
    log = _log(tmp_path)
    _three(log)
    log.mark_sent([1], now=T0)
    log.mark_withdrawn([2], reason="outbox_full", now=T0)
    exported = export_all(ledger=ledger, release_log=log, now=T0)
    json.dumps(exported)
    assert [e["seq"] for e in exported["release_log"]] == [1]
    assert exported["provision_records"] == []
    assert [e["seq"] for e in exported["queued_not_yet_sent"]] == [3]
    assert [(e["seq"], e["withdrawn_reason"]) for e in exported["withdrawn_never_sent"]] == [
        (2, "outbox_full")]


def test_a_line_after_a_failed_write_does_not_join_its_remains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path)
    _three(log)
    real_write = os.write

    def short_write(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("policy.rights.os.write", short_write)
        with pytest.raises(OSError):
            log.mark_sent([1], now=T0)
    log.mark_withdrawn([2], reason="outbox_full", now=T0)
    assert _status(log) == {1: "queued", 2: "withdrawn", 3: "queued"}  # every line parses


def test_an_entry_rebuilt_from_its_note_is_the_entry(tmp_path: Path) -> None:
    """The note the outbox commits with the envelope gives back exactly the entry, times to
    the microsecond; the recipient's kind (a provision record or not) is kept in the note."""
    log = _log(tmp_path)
    now = T0 + timedelta(seconds=10, microseconds=123457)
    release = _release("maintenance_watch", "installer")
    note = log.note(release, now=now)
    assert len(note.encode()) < 260
    [direct] = log.append_many([(release, 190, 7)], now=now)
    [noted] = log.append_noted([(8, 190, note)])
    assert noted == dataclasses.replace(direct, seq=8)
    assert noted.to_json()["logged_at"] == "2026-05-31T15:00:10.123457+00:00"
    assert log.append_noted([(8, 190, note), (9, 190, note)], only_missing=True) == [
        dataclasses.replace(noted, seq=9)]
    # A catalogue without the purpose any more still lists it, a provision record still.
    gone = ReleaseLog(tmp_path / "other.jsonl", load_catalogue(), "site-1")
    gone._catalogue = _without(load_catalogue(), "maintenance_watch")
    [entry] = gone.append_noted([(8, 190, note)])
    assert entry.provision_record and entry.legal_basis == ()


def _without(catalogue: Catalogue, purpose: str) -> Catalogue:
    purposes = {k: v for k, v in catalogue.purposes.items() if k != purpose}
    return dataclasses.replace(catalogue, purposes=purposes)


# -- possibly sent: published, removed before the broker acknowledged it -----------------------

def test_a_release_removed_after_its_publish_is_possibly_sent_and_listed_as_released(
        tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    log.mark_possibly_sent([2], reason="consent_change", now=T0 + timedelta(minutes=3))
    log.mark_withdrawn([3], reason="consent_change", now=T0 + timedelta(minutes=3))
    assert _status(log) == {1: "queued", 2: "possibly_sent", 3: "withdrawn"}
    maybe = next(e for e in log.entries() if e.seq == 2)
    assert (maybe.possibly_sent_at, maybe.possibly_sent_reason) == (
        T0 + timedelta(minutes=3), "consent_change")
    assert maybe.withdrawn_at is None and maybe.sent_at is None
    # A record of provision must not leave out what may have been provided.
    assert [e.seq for e in log.released()] == [2]
    assert [(e.seq, e.status) for e in log.provision_records()] == [(2, "possibly_sent")]


def test_sent_wins_over_possibly_sent_and_possibly_sent_over_withdrawn(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    log.mark_possibly_sent([1, 2], reason="erasure", now=T0)
    log.mark_withdrawn([2, 3], reason="erasure", now=T0)  # a later start-up check, say
    log.mark_sent([1], now=T0)  # its PUBACK came after the purge
    assert _status(log) == {1: "sent", 2: "possibly_sent", 3: "withdrawn"}


def test_an_unknown_reason_for_possibly_sent_is_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    size = (tmp_path / "releases.jsonl").stat().st_size
    with pytest.raises(ValueError, match="unknown withdrawal reason 'because'"):
        log.mark_possibly_sent([1], reason="because", now=T0)
    assert (tmp_path / "releases.jsonl").stat().st_size == size


def test_the_export_lists_possibly_sent_among_the_provision_records(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "l.json", load_catalogue(), "site-1", T0)
    log = _log(tmp_path)
    _three(log)
    log.mark_sent([1], now=T0)
    log.mark_possibly_sent([2], reason="consent_change", now=T0)
    log.mark_withdrawn([3], reason="consent_change", now=T0)
    exported = export_all(ledger=ledger, release_log=log, now=T0)
    json.dumps(exported)
    assert [(e["seq"], e["status"]) for e in exported["release_log"]] == [
        (1, "sent"), (2, "possibly_sent")]
    assert [e["seq"] for e in exported["provision_records"]] == [2]
    assert [e["seq"] for e in exported["withdrawn_never_sent"]] == [3]
    assert exported["queued_not_yet_sent"] == []


def test_erasure_and_retention_keep_possibly_sent_provision_records(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _three(log)
    log.mark_possibly_sent([1, 2], reason="erasure", now=T0)
    log.mark_withdrawn([3], reason="erasure", now=T0)
    assert log.forget_household() == 1  # the service entry, possibly sent or not
    assert log.prune(T0 + timedelta(days=366)) == 0  # provision records: 3 years
    assert _status(log) == {2: "possibly_sent", 3: "withdrawn"}
    assert log.prune(T0 + timedelta(days=3 * 365 + 2)) == 2
