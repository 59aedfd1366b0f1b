"""A failing task is restarted with growing, jittered delays and never takes the caller down."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.host.supervisor import Backoff, supervise


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 1.0


async def test_failing_task_is_restarted_until_stop() -> None:
    stop = asyncio.Event()
    runs = 0
    failures: list[str] = []

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 4:
            stop.set()
            return
        raise ConnectionError("device gone")

    await asyncio.wait_for(
        supervise("poller", flaky, stop=stop, backoff=Backoff(initial=0.01, cap=0.02),
                  on_failure=lambda name, exc: failures.append(f"{name}:{exc}")),
        timeout=5,
    )
    assert runs == 4
    assert failures == ["poller:device gone"] * 3


async def test_cancellation_passes_through() -> None:
    stop = asyncio.Event()

    async def forever() -> None:
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise("x", forever, stop=stop))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
