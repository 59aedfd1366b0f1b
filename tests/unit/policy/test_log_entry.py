"""Release log entries as typed records: lines written before the type still read, and read
back key for key; a damaged line is refused with where and what."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from policy.catalogue import load_catalogue
from policy.errors import LedgerIntegrityError
from policy.rights import LogEntry, ReleaseLog, export_all
from tests.unit.policy.test_policy_rights import T0, _release

# Written by ReleaseLog.append_many before entries were LogEntry (a release with its seq, one
# without: older than that tracking, and a possibly-sent event), byte for byte.
_OLD_FILE = (
    '{"bytes": 190, "catalogue_version": "2026.1", "categories": ["consumption"], '
    '"consent_record_hash": "0000000000000000000000000000000000000000000000000000000000000000", '
    '"consent_record_id": "r1", "end": "2026-05-31T15:30:00+00:00", "legal_basis": '
    '["APPI Art. 27(1)", "APPI Art. 29", "APPI Art. 33(5)"], "logged_at": '
    '"2026-05-31T15:00:00+00:00", "points": ["grid.energy_import"], "provision_record": true, '
    '"purpose": "maintenance_watch", "recipient": "installer", "recipient_kind": "third_party", '
    '"recipient_name": {"en": "Installer", "ja": "施工店"}, "records": 1, "seq": 2, "start": '
    '"2026-05-31T15:00:00+00:00", "subject": "site-1", "tier": "30min"}\n'
    '{"bytes": 210, "catalogue_version": "2026.1", "categories": ["consumption"], '
    '"consent_record_hash": "0000000000000000000000000000000000000000000000000000000000000000", '
    '"consent_record_id": "r1", "end": "2026-05-31T15:30:00+00:00", "legal_basis": '
    '["APPI Art. 17(1)", "APPI Art. 27(5)(i)", "APPI Art. 27(5)(iii)"], "logged_at": '
    '"2026-05-31T15:00:00.250000+00:00", "points": ["grid.energy_import"], '
    '"provision_record": false, "purpose": "service", "recipient": "company", '
    '"recipient_kind": "company", "recipient_name": {"en": "Smart Power System Co., Ltd.", '
    '"ja": "株式会社スマートパワーシステム"}, "records": 1, "start": '
    '"2026-05-31T15:00:00+00:00", "subject": "site-1", "tier": "30min"}\n'
    '{"event": "possibly_sent", "logged_at": "2026-05-31T15:01:00+00:00", "reason": '
    '"outbox_full", "seqs": [2], "subject": "site-1"}\n')


def _old_log(tmp_path: Path) -> tuple[ReleaseLog, Path]:
    path = tmp_path / "releases.jsonl"
    path.write_text(_OLD_FILE, encoding="utf-8")
    return ReleaseLog(path, load_catalogue(), "site-1"), path


def test_a_file_written_before_the_type_reads_with_its_status(tmp_path: Path) -> None:
    log, _ = _old_log(tmp_path)
    maybe, untracked = log.entries()
    assert (maybe.seq, maybe.status, maybe.provision_record, maybe.size) == (
        2, "possibly_sent", True, 190)
    assert (maybe.possibly_sent_at, maybe.possibly_sent_reason) == (
        T0 + timedelta(minutes=1), "outbox_full")
    assert (maybe.start, maybe.end, maybe.points) == (
        T0, T0 + timedelta(minutes=30), ("grid.energy_import",))
    assert (untracked.seq, untracked.status, untracked.sent_at) == (None, "sent", None)
    assert untracked.logged_at == T0 + timedelta(milliseconds=250)


def test_each_old_line_reads_back_key_for_key(tmp_path: Path) -> None:
    for line in _OLD_FILE.splitlines()[:2]:
        raw = json.loads(line)
        assert json.dumps(LogEntry.from_json(raw).to_json(), ensure_ascii=False,
                          sort_keys=True) == line


def test_new_lines_are_written_as_before(tmp_path: Path) -> None:
    path = tmp_path / "releases.jsonl"
    log = ReleaseLog(path, load_catalogue(), "site-1")
    log.append_many([(_release("maintenance_watch", "installer"), 190, 2)], now=T0)
    log.append(_release("service", "company"), size=210, now=T0 + timedelta(milliseconds=250))
    log.mark_possibly_sent([2], reason="outbox_full", now=T0 + timedelta(minutes=1))
    assert path.read_text(encoding="utf-8") == _OLD_FILE


def test_the_export_lists_entries_with_their_status_as_before(tmp_path: Path) -> None:
    from policy.ledger import Ledger

    log, _ = _old_log(tmp_path)
    ledger = Ledger.open(tmp_path / "l.json", load_catalogue(), "site-1", T0)
    exported = export_all(ledger=ledger, release_log=log, now=T0)
    first, second = (json.loads(line) for line in _OLD_FILE.splitlines()[:2])
    assert exported["release_log"] == [
        first | {"status": "possibly_sent", "possibly_sent_at": "2026-05-31T15:01:00+00:00",
                 "possibly_sent_reason": "outbox_full"},
        second | {"status": "sent"}]
    assert list(exported["release_log"][0])[-3:] == [
        "status", "possibly_sent_at", "possibly_sent_reason"]  # same order as before


def test_retention_rewrites_kept_lines_unchanged(tmp_path: Path) -> None:
    log, path = _old_log(tmp_path)
    assert log.prune(T0 + timedelta(days=366)) == 1  # the service entry, a year old
    assert path.read_text(encoding="utf-8").splitlines() == [
        _OLD_FILE.splitlines()[0], _OLD_FILE.splitlines()[2]]


@pytest.mark.parametrize(("change", "problem"), [
    ({"bytes": "190"}, "key 'bytes' has the wrong type"),
    ({"records": True}, "key 'records' is not a whole number"),
    ({"start": "yesterday"}, "key 'start' is not an ISO 8601 time"),
    ({"end": "2026-05-31T15:30:00"}, "key 'end' has no time zone"),
    ({"points": ["grid.power", 3]}, "key 'points' is not a list of strings"),
    ({"colour": "red"}, "has an unknown key 'colour'"),
])
def test_a_damaged_release_line_is_refused_naming_its_line_and_key(
        tmp_path: Path, change: dict[str, object], problem: str) -> None:
    first, *rest = _OLD_FILE.splitlines(keepends=True)
    damaged = json.dumps(json.loads(first) | change, ensure_ascii=False, sort_keys=True)
    path = tmp_path / "releases.jsonl"
    path.write_text("".join([rest[0], damaged + "\n"]), encoding="utf-8")
    with pytest.raises(LedgerIntegrityError, match=f"record line 2: release entry {problem}"):
        list(ReleaseLog(path, load_catalogue(), "site-1").entries())


def test_a_missing_key_is_named() -> None:
    raw = json.loads(_OLD_FILE.splitlines()[0])
    del raw["tier"]
    with pytest.raises(ValueError, match="release entry lacks key 'tier'"):
        LogEntry.from_json(raw)

