"""Process accounting from /proc: CPU seconds (user + system, threads included) and memory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its waited-for children, seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of ``pid``, to the nanosecond (/proc/<pid>/task/*/schedstat;
    /proc/<pid>/stat counts in clock ticks of 10 ms, too coarse for a light process in a short
    window)."""
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            found[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
    return found


class CpuMeter:
    """CPU of a process over a window: per-thread nanoseconds when every thread seen at the
    start is still there at the end, else (a thread ended and took its time with it) the
    process's clock ticks, which keep the time of ended threads."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = cpu_seconds(pid)
        self._threads = thread_cpu(pid)

    def read(self) -> dict[str, float | str]:
        ticks, threads = cpu_seconds(self.pid) - self._ticks, thread_cpu(self.pid)
        if self._threads and self._threads.keys() <= threads.keys():
            precise = sum(v - self._threads.get(t, 0.0) for t, v in threads.items())
            return {"cpu": precise, "cpu_ticks": ticks, "cpu_source": "schedstat"}
        return {"cpu": ticks, "cpu_ticks": ticks, "cpu_source": "stat"}


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
