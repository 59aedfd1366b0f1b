"""Process accounting from /proc: CPU seconds (user + system, threads included) and memory."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its waited-for children, seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, its peak (VmHWM) and private memory (Private_Clean + Private_Dirty of
    /proc/<pid>/smaps_rollup: what the process alone holds, shared library pages excluded),
    MiB."""
    found = {"rss_mb": float("nan"), "hwm_mb": float("nan"), "private_mb": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            found["rss_mb"] = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            found["hwm_mb"] = int(line.split()[1]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            found["private_mb"] += int(line.split()[1]) / 1024
    return found
