"""A crash at any point of a ledger write leaves either the old or the new ledger, never a
broken one: faults injected at every step of the atomic write, and real SIGKILLs mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import policy.storage as storage
from policy.catalogue import load_catalogue
from policy.ledger import Ledger

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SUBJECT = "site-crash"


class Crash(Exception):
    """Stands in for the power going off."""


def _fail_on(name: str, real: Callable[..., Any], after: int) -> Callable[..., Any]:
    calls = {"n": 0}

    def wrapper(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            if name == "write":  # a torn write: half of the bytes, then the lights go out
                fd, data = args
                real(fd, bytes(data[: len(data) // 2]))
            raise Crash(name)
        return real(*args)

    return wrapper


@pytest.mark.parametrize("after", [0, 1, 2])
@pytest.mark.parametrize("step", ["open", "write", "fsync", "replace"])
def test_fault_at_each_step_leaves_old_or_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              step: str, after: int) -> None:
    path = tmp_path / "ledger.json"
    catalogue = load_catalogue()
    ledger = Ledger.open(path, catalogue, SUBJECT, T0)
    old_head = ledger.head()
    monkeypatch.setattr(storage.os, step, _fail_on(step, getattr(os, step), after))
    new_head = None
    try:
        change = ledger.set_grant("proposals", "company", "1d", source="household_page", now=T0)
        new_head = (change.record.seq + 1, change.record.hash)
    except Crash:
        pass
    monkeypatch.undo()
    reopened = Ledger.open(path, catalogue, SUBJECT, T0)
    reopened.verify()
    if new_head is not None:  # the fault never fired: the write completed
        assert reopened.head() == new_head
    else:  # old ledger, or (a fault after the rename) the complete new one
        assert reopened.head() == old_head or reopened.head()[0] == old_head[0] + 1
    assert not path.with_name(path.name + storage.TMP_SUFFIX).exists()


def test_fault_after_rename_keeps_the_new_ledger(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.json"
    ledger = Ledger.open(path, load_catalogue(), SUBJECT, T0)
    old_head = ledger.head()
    monkeypatch.setattr(storage, "fsync_dir", _fail_on("fsync_dir", storage.fsync_dir, 0))
    with pytest.raises(Crash):
        ledger.set_grant("proposals", "company", "1d", source="household_page", now=T0)
    monkeypatch.undo()
    assert ledger.head() == old_head  # memory never runs ahead of what is known durable
    reopened = Ledger.open(path, load_catalogue(), SUBJECT, T0)
    assert reopened.head()[0] == old_head[0] + 1


_WRITER = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime, timedelta
    from policy.catalogue import load_catalogue
    from policy.ledger import Ledger
    t = datetime(2026, 3, 1, tzinfo=UTC)
    ledger = Ledger.open(sys.argv[1], load_catalogue(), "site-crash", t)
    tiers = ["1d", None, "1mo"]
    for i in range(100000):
        t += timedelta(seconds=1)
        ledger.set_grant("proposals", "company", tiers[i % 3], source="household_page", now=t)
        print(ledger.head()[0], flush=True)
""")


@pytest.mark.parametrize("lines_before_kill", [1, 3, 7, 12, 20, 33])
def test_sigkill_mid_write_never_breaks_the_ledger(tmp_path: Path, lines_before_kill: int) -> None:
    path = tmp_path / "ledger.json"
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                          text=True, cwd=Path(__file__).resolve().parents[3]) as proc:
        assert proc.stdout is not None
        committed = 0
        for _ in range(lines_before_kill):
            committed = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)  # lands wherever the writer is: often inside a write
        proc.wait()
        # The writer runs ahead of this reader through the pipe: every line it printed before it
        # died names a write that completed, so the last one is the floor.
        for line in proc.stdout:
            committed = int(line)
    ledger = Ledger.open(path, load_catalogue(), SUBJECT, T0 + timedelta(days=1))
    ledger.verify()
    count = ledger.head()[0]
    # At most one write completed after the last line it printed (killed before its print).
    assert committed <= count <= committed + 1 + len(ledger.startup_changes)
