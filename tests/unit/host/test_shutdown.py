"""Stopping tasks is bounded, reported when the bound passes, and never swallows the caller's
own cancellation (``agent.host.supervisor.cancel_and_wait``)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.host.supervisor import cancel_and_wait


async def _stubborn(cancelled: asyncio.Event, release: asyncio.Event) -> None:
    """Ignores its first cancellation until ``release`` is set (a cleanup that hangs)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.set()
        await release.wait()


async def _obedient() -> None:
    await asyncio.Event().wait()


async def test_tasks_that_stop_are_waited_for_and_none_is_late() -> None:
    tasks = [asyncio.create_task(_obedient(), name=f"poller-{i}") for i in range(3)]
    await asyncio.sleep(0)
    late = await cancel_and_wait(tasks, grace=5.0)
    assert late == []
    assert all(task.cancelled() for task in tasks)


async def test_the_deadline_fires_and_the_late_task_is_named(
        caplog: pytest.LogCaptureFixture) -> None:
    cancelled, release = asyncio.Event(), asyncio.Event()
    stubborn = asyncio.create_task(_stubborn(cancelled, release), name="outbox-flusher")
    obedient = asyncio.create_task(_obedient(), name="pipeline")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="agent.host.supervisor"):
        late = await cancel_and_wait([stubborn, obedient], grace=0.05)
    assert late == [stubborn]
    assert cancelled.is_set() and not stubborn.done()
    assert obedient.cancelled()
    assert [r.getMessage() for r in caplog.records] == ["did not stop in time: outbox-flusher"]
    release.set()
    await stubborn


async def test_the_callers_cancellation_propagates() -> None:
    cancelled, release = asyncio.Event(), asyncio.Event()
    stubborn = asyncio.create_task(_stubborn(cancelled, release), name="uplink")
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait([stubborn], grace=None))
    await cancelled.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    release.set()
    await stubborn


async def test_the_callers_own_deadline_is_not_swallowed() -> None:
    cancelled, release = asyncio.Event(), asyncio.Event()
    stubborn = asyncio.create_task(_stubborn(cancelled, release), name="page")
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cancel_and_wait([stubborn], grace=None)
    release.set()
    await stubborn


async def test_a_task_that_failed_while_stopping_raises_its_error() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise OSError("disk full while committing") from None

    task = asyncio.create_task(fails_on_cancel())
    other = asyncio.create_task(_obedient())
    await asyncio.sleep(0)
    with pytest.raises(OSError, match="disk full"):
        await cancel_and_wait([task, other], grace=5.0)
    assert other.cancelled()

