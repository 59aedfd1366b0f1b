"""The SunSpec simulators, read by a real pymodbus client over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from drivers.device import ModbusDevice
from drivers.errors import DeviceUnreachable
from drivers.models import Quality
from drivers.sim.curves import JST, HomeConfig
from drivers.sim.devices import DeviceKind
from drivers.sim.server import (
    Fault,
    FaultKind,
    Framing,
    SimHome,
    SimulatedDevice,
    SimulatorServer,
    Site,
    run_site,
)
from drivers.sim.sunspec_image import SunSpecImage
from drivers.sunspec.discovery import discover, read_model
from drivers.sunspec.mapping import map_points
from drivers.transport import Bus

NOON = datetime(2026, 6, 1, 11, 30, tzinfo=JST)
CHAINS = {"inverter": [1, 103, 120, 160], "battery": [1, 802], "meter": [1, 203]}


class Wall:
    """A wall clock the test moves by hand, so simulated time stands still between reads."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture
async def site(wall: Wall) -> AsyncIterator[Site]:
    home = SimHome(HomeConfig(seed=5), start=NOON, speed=60, wall=wall)
    async with run_site(home=home) as running:
        yield running


async def _client(port: int, *, framer: FramerType = FramerType.SOCKET,
                  reply_timeout: float = 1.0) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=framer, timeout=reply_timeout,
                                  retries=0)
    assert await client.connect()
    return client


async def _read(client: AsyncModbusTcpClient, address: int, count: int, unit: int = 1
                ) -> list[int]:
    response = await client.read_holding_registers(address, count=count, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


async def _chain(client: AsyncModbusTcpClient, unit: int = 1) -> list[int]:
    assert await _read(client, 40000, 2, unit) == [0x5375, 0x6E53]  # "SunS"
    ids, address = [], 40002
    while True:
        model_id, length = await _read(client, address, 2, unit)
        if model_id == 0xFFFF:
            return ids
        ids.append(model_id)
        address += 2 + length


def _signed(value: int) -> int:
    return value - 0x10000 if value >= 0x8000 else value


async def _scaled(client: AsyncModbusTcpClient, image: SunSpecImage, model: int, name: str,
                  index: int | None = None) -> float:
    loc = image.locate(model, name, index=index)
    raw = await _read(client, loc.address, loc.size)
    value = (raw[0] << 16) | raw[1] if loc.size == 2 else raw[0]
    if loc.type.startswith("int"):
        value = _signed(value)
    sf = _signed((await _read(client, image.locate(model, str(loc.sf)).address, 1))[0])
    return float(value * 10.0**sf)


@pytest.mark.parametrize("kind", sorted(CHAINS))
async def test_marker_and_model_chain(site: Site, kind: str) -> None:
    server = getattr(site, kind)
    client = await _client(server.port)
    try:
        assert await _chain(client) == CHAINS[kind]
        serial = await _read(client, server.device.image.locate(1, "SN").address, 16)
        text = b"".join(r.to_bytes(2, "big") for r in serial).rstrip(b"\0").decode()
        assert text == server.device.identity.serial
    finally:
        client.close()


async def test_values_follow_the_home(site: Site) -> None:
    snap = site.home.snapshot()
    inverter, battery, meter = [await _client(s.port) for s in site.servers]
    try:
        image = site.inverter.device.image
        assert await _scaled(inverter, image, 103, "W") == pytest.approx(snap.pv_w, abs=1)
        assert snap.pv_w > 500  # a June noon
        mppt = [await _scaled(inverter, image, 160, "DCW", n) for n in (1, 2)]
        assert sum(mppt) == pytest.approx(snap.pv_dc_w, abs=2)
        soc = await _scaled(battery, site.battery.device.image, 802, "SoC")
        assert soc == pytest.approx(snap.soc_pct, abs=0.1)
        grid = await _scaled(meter, site.meter.device.image, 203, "W")
        assert grid == pytest.approx(snap.grid_w, abs=1)
    finally:
        for client in (inverter, battery, meter):
            client.close()


async def test_counters_increase_as_simulated_time_passes(site: Site, wall: Wall) -> None:
    client = await _client(site.inverter.port)
    image = site.inverter.device.image
    try:
        before = await _scaled(client, image, 103, "WH")
        wall.now += 60  # an hour at speed 60
        after = await _scaled(client, image, 103, "WH")
        assert after - before == pytest.approx(site.home.snapshot().pv_wh - before, abs=1)
        assert after - before > 100
        site.home.set_speed(3600)
        wall.now += 1
        assert (site.home.snapshot().ts - NOON).total_seconds() == pytest.approx(7200, abs=5)
    finally:
        client.close()


async def test_exception_fault_hits_its_span_only_and_expires(site: Site) -> None:
    server = site.meter
    w = server.device.image.locate(203, "W").address
    server.set_fault(Fault(kind=FaultKind.EXCEPTION, exception_code=2, span=(w, 1), requests=2))
    client = await _client(server.port)
    try:
        assert await _read(client, 40000, 2) == [0x5375, 0x6E53]  # outside the span
        for _ in range(2):
            response = await client.read_holding_registers(w - 3, count=10, device_id=1)
            assert response.isError() and response.exception_code == 2
        assert server.fault is None
        assert len(await _read(client, w - 3, 10)) == 10
    finally:
        client.close()


async def test_timeout_fault_sends_nothing_then_recovers(site: Site) -> None:
    server = site.battery
    server.set_fault(Fault(kind=FaultKind.TIMEOUT, requests=1))
    client = await _client(server.port, reply_timeout=0.3)
    try:
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(40000, count=2, device_id=1)
        assert await _read(client, 40000, 2) == [0x5375, 0x6E53]
    finally:
        client.close()


async def test_drop_fault_closes_the_connection(site: Site) -> None:
    server = site.inverter
    server.set_fault(Fault(kind=FaultKind.DROP))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # MBAP: transaction 1, protocol 0, length 6, unit 1; read 2 holding registers at 40000
        writer.write(bytes([0, 1, 0, 0, 0, 6, 1, 3, 0x9C, 0x40, 0, 2]))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(64), 5) == b""  # EOF, no reply
    finally:
        writer.close()
    server.clear_fault()
    client = await _client(server.port)
    try:
        assert await _read(client, 40000, 2) == [0x5375, 0x6E53]
    finally:
        client.close()


async def test_garbage_fault_scrambles_values_and_scale_factors(site: Site) -> None:
    server = site.inverter
    image = server.device.image
    start = image.model_addresses[103]
    client = await _client(server.port)
    try:
        good = await _read(client, start, 52)
        server.set_fault(Fault(kind=FaultKind.GARBAGE, requests=1))
        bad = await _read(client, start, 52)
        assert bad != good
        for loc in image.points():
            if loc.model_id == 103 and loc.type == "sunssf":
                sf = _signed(bad[loc.address - start])
                assert not -10 <= sf <= 10 and sf != -0x8000, loc.name
        assert await _read(client, start, 52) != bad  # one request only
    finally:
        client.close()


async def test_device_vanishes_and_returns_with_a_new_serial(site: Site) -> None:
    server = site.meter
    old = server.device.identity.serial
    gone = asyncio.create_task(server.vanish(0.5))
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()
    await gone
    client = await _client(server.port)
    try:
        regs = await _read(client, server.device.image.locate(1, "SN").address, 16)
        serial = b"".join(r.to_bytes(2, "big") for r in regs).rstrip(b"\0").decode()
        assert serial == server.device.identity.serial != old
    finally:
        client.close()


async def test_rtu_framing_serves_several_units_on_one_line(wall: Wall) -> None:
    home = SimHome(start=NOON, wall=wall)
    devices = [SimulatedDevice(DeviceKind.INVERTER, home, unit=1),
               SimulatedDevice(DeviceKind.METER, home, unit=3)]
    async with SimulatorServer(devices, framing=Framing.RTU) as server:
        client = await _client(server.port, framer=FramerType.RTU, reply_timeout=0.3)
        try:
            assert await _chain(client, unit=1) == CHAINS["inverter"]
            assert await _chain(client, unit=3) == CHAINS["meter"]
            with pytest.raises(ModbusIOException):  # nobody on unit 2: silence, as on RS-485
                await client.read_holding_registers(40000, count=2, device_id=2)
        finally:
            client.close()


async def test_unknown_unit_over_tcp_gets_gateway_exception(site: Site) -> None:
    client = await _client(site.meter.port)
    try:
        response = await client.read_holding_registers(40000, count=2, device_id=9)
        assert response.isError() and response.exception_code == 0x0B
    finally:
        client.close()


def test_fault_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="exception_code"):
        Fault(kind=FaultKind.EXCEPTION, exception_code=0)
    with pytest.raises(ValueError, match="requests"):
        Fault(kind=FaultKind.TIMEOUT, requests=0)


async def _poller(server: SimulatorServer, bus: Bus) -> ModbusDevice:
    found = await discover(bus, unit=1)
    blocks = {m.start: await read_model(bus, m, unit=1) for m in found.models}
    return ModbusDevice(name=server.device.kind.value, reader=bus, unit=1,
                        points=map_points(found, blocks), identity=found.identity)


async def test_canonical_readings_through_the_driver_stack_match_the_home(site: Site) -> None:
    snap = site.home.snapshot()
    expected = {"pv.power": snap.pv_w, "pv.mppt.2.power": snap.mppt_w[1],
                "pv.energy": float(int(snap.pv_wh)), "battery.soc": snap.soc_pct,
                "battery.power": snap.battery_w, "grid.power": snap.grid_w,
                "grid.energy_export": float(int(snap.grid_export_wh))}
    got: dict[str, float | str | None] = {}
    for server in site.servers:
        async with Bus.tcp("127.0.0.1", server.port, timeout=1.0) as bus:
            device = await _poller(server, bus)
            assert device.identity == server.device.identity
            got.update((r.point, r.value) for r in await device.poll(0.0)
                       if r.quality is Quality.GOOD)
    for point, value in expected.items():
        assert got[point] == pytest.approx(value, abs=1.0), point
    assert got["inverter.state"] == "MPPT"


async def test_faults_reach_the_poller_as_errors_not_values(site: Site) -> None:
    server = site.meter
    async with Bus.tcp("127.0.0.1", server.port, timeout=0.3) as bus:
        device = await _poller(server, bus)
        server.set_fault(Fault(kind=FaultKind.GARBAGE))
        garbled = {r.point: r for r in await device.poll(0.0)}
        assert garbled["grid.power"].quality is Quality.ERROR  # scale factor out of range
        server.set_fault(Fault(kind=FaultKind.TIMEOUT))
        with pytest.raises(DeviceUnreachable):
            await device.poll(1e9)
        server.clear_fault()
        healthy = {r.point: r for r in await device.poll(2e9)}
        assert healthy["grid.power"].quality is Quality.GOOD


def test_home_catches_up_a_long_pause_in_bounded_steps_and_lands_on_time(wall: Wall) -> None:
    home = SimHome(start=NOON, speed=86400, wall=wall)
    before = home.snapshot()
    wall.now += 10  # ten simulated days
    after = home.snapshot()
    assert (after.ts - before.ts).total_seconds() == 864000
    assert after.pv_wh > before.pv_wh + 10 * 5000  # ten days of June sun, a few kWh a day
