"""ModbusDevice against a real pymodbus server serving a Sungrow-SH-shaped register image."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers import codec
from drivers.device import ModbusDevice, probe
from drivers.errors import DeviceUnreachable
from drivers.models import DeviceIdentity, PointKind, Quality
from drivers.planner import CostModel, plan
from drivers.profiles import PROFILE_DIR, Profile, builtin, load
from drivers.registers import RegisterPoint
from drivers.transport import Bus
from tests.integration.drivers.test_transport import serve, silent_server

IDENTITY = DeviceIdentity(manufacturer="Sungrow", model="SH10RT", serial=None)


def sungrow() -> Profile:
    return builtin()["sungrow_sh"]


def raw_image() -> dict[int, int]:
    """Wire registers as a Sungrow SH10RT would serve them (32-bit values low word first)."""
    image = dict.fromkeys(range(4989, 5041), 0) | dict.fromkeys(range(12999, 13051), 0)
    image |= {a: r for a, r in zip(range(4989, 4999),
                                   codec.encode("A2350415770", "string", length=10),
                                   strict=True)}
    image |= {
        4999: 0x0E03,  # SH10RT
        5000: 100,  # nominal power 10.0 kW
        5007: 0xFF9C,  # -10.0 degC
        5010: 5406, 5011: 7,  # MPPT 1: 540.6 V, 0.7 A
        5016: 0x86A0, 5017: 0x0001,  # total DC power 100000 W, low word first
        5018: 2321,  # 232.1 V
        5035: 500,  # 50.0 Hz
        12999: 0x0040,  # running
        13001: 57, 13002: 1219, 13003: 0,  # today 5.7 kWh; total 121.9 kWh (wire 13002)
        13007: 0xFE70, 13008: 0xFFFF,  # load power -400 W (int32, low word first)
        13009: 2500, 13010: 0,  # exporting 2500 W
        13022: 873,  # SOC 87.3 %
    }
    return image


def server_device(unit: int = 1, image: dict[int, int] | None = None,
                  action: object = None) -> SimDevice:
    image = image or raw_image()
    blocks = []
    for start in (4989, 12999):
        values = [image[a] for a in range(start, start + 52)]
        blocks.append(SimData(start, values=values, datatype=DataType.REGISTERS))
    return SimDevice(id=unit, simdata=blocks, action=action)  # type: ignore[arg-type]


async def test_poll_reads_decodes_and_counts_requests() -> None:
    profile = sungrow()
    async with serve(server_device()) as port, Bus.tcp("127.0.0.1", port) as bus:
        dev = ModbusDevice.from_profile(profile, name="hybrid", reader=bus, unit=1,
                                        identity=IDENTITY, cost=bus.cost_model)
        readings = await dev.poll(now=0.0)
    values = {r.point: r.value for r in readings}
    assert len(readings) == len(profile.registers)
    assert all(r.quality is Quality.GOOD and r.device == "hybrid" for r in readings)
    assert all(r.ts.tzinfo is UTC for r in readings)
    assert values["pv.dc_power"] == 100_000.0
    assert values["grid.power"] == -2500.0
    assert values["load.power"] == -400.0
    assert values["pv.energy"] == pytest.approx(121_900.0)
    assert values["inverter.temperature"] == pytest.approx(-10.0)
    assert values["inverter.rated_power"] == pytest.approx(10_000.0)
    assert values["pv.mppt.1.voltage"] == pytest.approx(540.6)
    assert values["battery.soc"] == pytest.approx(87.3)
    assert values["inverter.state"] == 64.0
    expected = plan([s for p in profile.points() for s in p.spans()], CostModel.tcp())
    assert bus.requests == dev.stats.requests == len(expected.requests) == 2
    assert dev.stats.minimum == 2 and dev.stats.naive == len(profile.registers)


async def test_a_stamp_gives_every_reading_its_time_after_the_reads() -> None:
    issued: list[datetime] = []

    def stamp() -> datetime:
        issued.append(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
        return issued[-1]

    async with serve(server_device()) as port, Bus.tcp("127.0.0.1", port) as bus:
        dev = ModbusDevice.from_profile(sungrow(), name="hybrid", reader=bus, unit=1,
                                        identity=IDENTITY)
        readings = await dev.poll(now=0.0, stamp=stamp)
        assert len(issued) == 1 and bus.requests == 2
    assert readings and all(r.ts is issued[0] for r in readings)


async def test_only_due_points_are_read_and_next_due_says_when() -> None:
    async with serve(server_device()) as port, Bus.tcp("127.0.0.1", port) as bus:
        dev = ModbusDevice.from_profile(sungrow(), name="hybrid", reader=bus, unit=1,
                                        identity=IDENTITY)
        await dev.poll(now=100.0)
        assert dev.next_due() == 105.0
        assert await dev.poll(now=101.0) == [] and bus.requests == 2
        fast = await dev.poll(now=105.0)
        assert {r.point for r in fast} == {"pv.dc_power", "load.power", "grid.power"}
        assert bus.requests == 4  # 5016+2 and 13007+4: one read per register range
        ten = {r.point for r in await dev.poll(now=110.0)}
        assert "battery.soc" in ten and "pv.energy" not in ten
        assert dev.stats.polls == 3


async def test_rtu_framing_and_rtu_cost_model_split_reads() -> None:
    rtu = CostModel.rtu(9600, turnaround=0.0)  # a fast device: bridging 16 registers loses
    async with serve(server_device(), rtu=True) as port, \
            Bus.tcp("127.0.0.1", port, rtu_framing=True) as bus:
        dev = ModbusDevice.from_profile(sungrow(), name="hybrid", reader=bus, unit=1,
                                        identity=IDENTITY, cost=rtu)
        readings = await dev.poll(now=0.0)
    assert all(r.quality is Quality.GOOD for r in readings)
    expected = plan([s for p in sungrow().points() for s in p.spans()], rtu)
    assert bus.requests == dev.stats.requests == len(expected.requests) > dev.stats.minimum


async def test_exception_code_spoils_only_its_read() -> None:
    async def refuse_battery_block(_fc: int, _start: int, address: int, _count: int,
                                   _regs: list[int], _values: object) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_ADDRESS if address >= 12999 else None

    async with serve(server_device(action=refuse_battery_block)) as port, \
            Bus.tcp("127.0.0.1", port) as bus:
        dev = ModbusDevice.from_profile(sungrow(), name="hybrid", reader=bus, unit=1,
                                        identity=IDENTITY)
        readings = await dev.poll(now=0.0)
    quality = {r.point: r.quality for r in readings}
    assert quality["pv.dc_power"] is Quality.GOOD
    assert quality["battery.soc"] is Quality.ERROR and quality["grid.power"] is Quality.ERROR
    assert all(r.value is None for r in readings if r.quality is Quality.ERROR)
    assert dev.stats.failed_requests == 1 and dev.stats.requests == 2
    assert dev.stats.point_errors == sum(q is Quality.ERROR for q in quality.values())


async def test_sentinel_is_missing_and_garbage_is_error(tmp_path: Path) -> None:
    data = json.loads((PROFILE_DIR / "sungrow_sh.json").read_text())
    for reg in data["registers"]:
        if reg["point"] == "battery.soh":
            reg["sentinels"] = [65535]
    path = tmp_path / "sungrow.json"
    path.write_text(json.dumps(data))
    profile = load(path)

    def garbage(_image: object) -> float:
        raise ValueError("scale factor out of range")

    broken = RegisterPoint(point="battery.soc", kind=PointKind.LEVEL, unit="%", address=13022,
                           count=1, interval=5, decode=garbage, function="input")
    image = raw_image() | {13023: 0xFFFF}
    async with serve(server_device(image=image)) as port, Bus.tcp("127.0.0.1", port) as bus:
        points = (*(p for p in profile.points() if p.point != "battery.soc"), broken)
        dev = ModbusDevice(name="hybrid", reader=bus, unit=1, points=points, identity=IDENTITY)
        readings = {r.point: r for r in await dev.poll(now=0.0)}
    assert readings["battery.soh"].quality is Quality.MISSING
    assert readings["battery.soc"].quality is Quality.ERROR
    assert readings["pv.dc_power"].quality is Quality.GOOD
    assert dev.stats.point_missing == 1 and dev.stats.point_errors == 1


async def test_unreachable_device_raises_and_keeps_points_due() -> None:
    async with silent_server() as port, Bus.tcp("127.0.0.1", port, timeout=0.2) as bus:
        dev = ModbusDevice.from_profile(sungrow(), name="hybrid", reader=bus, unit=1,
                                        identity=IDENTITY)
        with pytest.raises(DeviceUnreachable):
            await dev.poll(now=0.0)
        assert bus.requests == 1  # the cycle stopped at the first silent request
        assert dev.next_due() < 0.0 and len(dev.due(1.0)) == len(dev.points)
        assert dev.stats.unreachable == 1
        assert dev.stats.requests == dev.stats.failed_requests == dev.stats.polls == 1


async def test_a_device_that_stops_answering_mid_cycle_spoils_only_the_rest() -> None:
    async def stall_at_the_frequency(_fc: int, _start: int, address: int, _count: int,
                                     _regs: list[int], _values: object) -> ExcCodes | None:
        if address == 5035:
            await asyncio.sleep(1.0)
        return None

    rtu = CostModel.rtu(9600, turnaround=0.0)  # three reads: 5000+19, 5035+1, 12999+48
    async with serve(server_device(action=stall_at_the_frequency)) as port, \
            Bus.tcp("127.0.0.1", port, timeout=0.3) as bus:
        dev = ModbusDevice.from_profile(sungrow(), name="hybrid", reader=bus, unit=1,
                                        identity=IDENTITY, cost=rtu)
        readings = await dev.poll(now=0.0)
        assert bus.requests == 2  # the third read was not sent
    quality = {r.point: r.quality for r in readings}
    assert quality["pv.dc_power"] is Quality.GOOD and quality["battery.soc"] is Quality.ERROR
    assert dev.stats.requests == 2 and dev.stats.failed_requests == 1
    assert dev.stats.unreachable == 0 and dev.stats.polls == 1
    assert dev.stats.point_errors == sum(q is Quality.ERROR for q in quality.values())


async def test_probe_identifies_the_family() -> None:
    other = raw_image() | {4999: 0x1234}
    async with serve([server_device(unit=1), server_device(unit=2, image=other),
                      SimDevice(id=3, simdata=[SimData(0, values=[0] * 10,
                                                       datatype=DataType.REGISTERS)])]) \
            as port, Bus.tcp("127.0.0.1", port) as bus:
        identity = await probe(sungrow(), bus, unit=1)
        assert identity is not None
        assert (identity.model, identity.serial) == ("SH10RT", "A2350415770")
        assert await probe(sungrow(), bus, unit=2) is None  # another family's type code
        assert await probe(sungrow(), bus, unit=3) is None  # no such registers at all


def test_device_needs_readable_points() -> None:
    with pytest.raises(ValueError, match="no points"):
        ModbusDevice(name="x", reader=Bus.tcp("127.0.0.1", 1), unit=1, points=(),
                     identity=IDENTITY)
    too_long = RegisterPoint(point="device.model", kind=PointKind.INFO, unit="", address=0,
                             count=126, interval=60, decode=lambda _image: None)
    with pytest.raises(ValueError, match="exceed 125"):
        ModbusDevice(name="x", reader=Bus.tcp("127.0.0.1", 1), unit=1, points=(too_long,),
                     identity=IDENTITY)
