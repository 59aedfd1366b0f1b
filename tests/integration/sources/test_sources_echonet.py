"""The ECHONET Lite pollers against the loopback emulator: pushes, a silent node, discovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from agent.config.echonet import EchonetDeviceConfig, EchonetSettings
from agent.demo.echonet import METER, EchonetSite, start_echonet_site
from agent.host.clock import TrustedClock
from agent.host.metrics import Metrics
from agent.sources.echonet import run_echonet
from drivers.models import Quality, Reading
from drivers.sim import echonet_emulator as emu
from tests.e2e.test_daemon import wait_for


class Seen:
    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def __call__(self, taken: float, readings: Sequence[Reading]) -> None:
        self.readings += readings

    def count(self, device: str, point: str) -> int:
        return sum(r.device == device and r.point == point and r.quality is Quality.GOOD
                   for r in self.readings)


def _devices(site: EchonetSite, interval: float) -> list[EchonetDeviceConfig]:
    return [EchonetDeviceConfig(name="pv", eoj="0279", poll_interval=interval,
                                slow_interval=interval),
            EchonetDeviceConfig(name="battery", eoj="027D02", address=site.gateway.address,
                                poll_interval=interval, slow_interval=interval),
            EchonetDeviceConfig(name="meter", eoj="0288", address=site.meter.address,
                                poll_interval=interval, slow_interval=interval)]


@contextlib.asynccontextmanager
async def polling(site: EchonetSite, devices: list[EchonetDeviceConfig],
                  seen: Seen, metrics: Metrics) -> AsyncIterator[None]:
    settings = EchonetSettings(interface=site.interface, port=site.port, discovery_wait=0.3,
                               timeout=0.3, retries=0)
    stop = asyncio.Event()
    task = asyncio.create_task(run_echonet(settings, devices, seen,
                                           clock=TrustedClock(lambda: True),
                                           metrics=metrics, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def emulated() -> AsyncIterator[EchonetSite]:
    site, _ = await start_echonet_site()
    try:
        yield site
    finally:
        await site.aclose()


async def test_a_push_is_delivered_without_waiting_for_the_schedule() -> None:
    seen, metrics = Seen(), Metrics()
    async with emulated() as site, polling(site, _devices(site, 3600.0), seen, metrics):
        await wait_for(lambda: seen.count("meter", "grid.power") == 1, "the first poll")
        site.meter.object(METER).values[0xE7] = (1234).to_bytes(4, "big", signed=True)
        site.meter.notify(METER, [0xE7], to=site.interface)  # INFC, an hour before it is due
        await wait_for(lambda: seen.count("meter", "grid.power") == 2, "the pushed value")
        await wait_for(lambda: site.meter.acks, "INFC_Res")
    assert [r.value for r in seen.readings if r.point == "grid.power"] == [632.0, 1234.0]
    assert {r.device for r in seen.readings} == {"pv", "battery", "meter"}


async def test_a_silent_node_backs_off_alone_and_is_read_when_back() -> None:
    seen, metrics = Seen(), Metrics()
    async with emulated() as site:
        site.meter.drop = -1  # the meter's node answers nothing
        async with polling(site, _devices(site, 0.2), seen, metrics):
            await wait_for(lambda: seen.count("battery", "battery.power") >= 10
                           and metrics.get("hems_polls_total", device="meter",
                                           outcome="error") >= 1,
                           "battery polled on schedule while the meter is silent")
            assert seen.count("meter", "grid.power") == 0
            site.meter.drop = 0
            await wait_for(lambda: seen.count("meter", "grid.power") >= 1,
                           "the meter, read again after its backoff")
    assert seen.count("pv", "pv.power") >= 10


async def test_an_ambiguous_class_is_an_error_for_that_device_only() -> None:
    seen, metrics = Seen(), Metrics()
    async with emulated() as site:
        second = emu.EchonetNode(f"{site.interface[:-2]}.4", [emu.battery(0x01)],
                                 port=site.port, interface=site.interface)
        devices = [*_devices(site, 0.2), EchonetDeviceConfig(name="any_battery", eoj="027D")]
        async with second, polling(site, devices, seen, metrics):
            await wait_for(lambda: metrics.get("hems_polls_total", device="any_battery",
                                               outcome="error") >= 1
                           and seen.count("battery", "battery.soc") >= 3, "both outcomes")
    assert not any(r.device == "any_battery" for r in seen.readings)
