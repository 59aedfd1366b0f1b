"""agent.host.memory: the heap's free pages go back to the system."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys

import pytest

from agent.host import memory


def _rss_anon_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_returns_freed_heap_pages() -> None:
    memory.trim()
    # 64 KiB blocks stay under glibc's mmap threshold: they live in the heap. The last one,
    # kept, holds the top of the heap, so glibc's own trimming cannot give the rest back.
    blocks = [bytearray(64 * 1024) for _ in range(512)]  # 32 MiB, every page touched
    keep = blocks.pop()
    before = _rss_anon_kb()
    del blocks
    assert memory.trim()
    after = _rss_anon_kb()
    assert before - after > 16 * 1024, (before, after)
    assert len(keep) == 64 * 1024



_THREADED = """
import ctypes, sys, threading
from agent.host import memory
if sys.argv[1] == "single":
    assert memory.single_arena()
def work():
    blocks = [bytearray(4096) for _ in range(256)]  # malloc'd, not pymalloc's
    del blocks
thread = threading.Thread(target=work)
thread.start()
thread.join()
ctypes.CDLL(None).malloc_stats()  # "Arena N:" per arena, on stderr
"""


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _THREADED, mode], capture_output=True,
                          text=True, check=True)
    return done.stderr.count("Arena ")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_single_arena_keeps_a_worker_thread_in_the_main_heap() -> None:
    assert _arenas("default") == 2
    assert _arenas("single") == 1


async def test_a_deferred_trim_folds_the_requests_of_a_burst_into_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(memory, "trim", lambda: calls.append(loop.time()) or True)
    later = memory.DeferredTrim(0.05)
    start = loop.time()
    for _ in range(5):
        later.request()
    assert later.pending and calls == []
    await asyncio.sleep(0.2)
    assert len(calls) == 1 and calls[0] >= start + 0.05
    assert not later.pending
    later.request()  # a later burst gets a trim of its own
    await asyncio.sleep(0.2)
    assert len(calls) == 2
