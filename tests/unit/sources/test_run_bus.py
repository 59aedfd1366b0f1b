"""A bus poller waiting for its next device: ``stop`` ends the wait at once, and whether it
ends by ``stop`` or by cancellation (the daemon's shutdown) it leaves no task behind."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agent.config.model import TcpDevice
from agent.host.clock import TrustedClock
from agent.host.metrics import Metrics
from agent.sources.modbus import BusPlan, Slot, Stamper, run_bus
from drivers.transport import Bus


@pytest.mark.parametrize("end", ["stop", "cancel"])
async def test_a_long_wait_for_the_next_device_ends_at_once_and_leaves_no_task(
        end: str) -> None:
    clock = TrustedClock(lambda: True)
    config = TcpDevice(name="inverter", host="127.0.0.1", port=9)
    slot = Slot(config=config, retry_at=clock.monotonic() + 3600.0)  # next attempt in an hour
    plan = BusPlan(name="inverter", slots=[slot],
                   make_bus=lambda: Bus.tcp("127.0.0.1", 9, name="inverter"))
    stop, started = asyncio.Event(), asyncio.Event()
    before = asyncio.all_tasks()
    poller = asyncio.create_task(run_bus(plan, Stamper(clock, lambda _r: None), clock=clock,
                                         metrics=Metrics(), stop=stop, started=started))
    await started.wait()
    await asyncio.sleep(0.05)
    assert not poller.done()  # waiting for the device's hour
    if end == "stop":
        stop.set()
    else:
        poller.cancel()
    async with asyncio.timeout(30):  # a guard against a hang, not a timing check
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    await asyncio.sleep(0)  # a cancelled wait on ``stop`` runs its cancellation
    assert asyncio.all_tasks() == before
    assert slot.device is None  # never polled: nothing was due
