"""Our SunSpec discovery and decoding against pysunspec2's, over a real Modbus TCP server.

Register images are built with pysunspec2's own Python API: its shipped test devices
(``device_1547.json``, ``inverter_123.json``) and a device per chunk of *every* shipped model
definition filled with seeded random values (about one in five points unimplemented). A real
pymodbus server serves them on loopback; pysunspec2's own Modbus client scans the server for the
reference values; our discovery and decoder run over our transport. Every point must agree.

One difference is deliberate: when a point's scale factor is unimplemented, pysunspec2 returns
the unscaled raw number; we return ``None`` (a value of unknown scale is not a reading).
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import pytest
import sunspec2.device as ss_device
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sunspec2.file.client import FileClientModel
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from drivers.sunspec.decode import decode_model
from drivers.sunspec.discovery import SunSpecDevice, discover, read_model
from drivers.sunspec.models import GroupDef, available_models, load_model
from drivers.transport import Bus
from tests.conftest import free_port

SUNS = [0x5375, 0x6E53]
END = [0xFFFF, 0]
TEST_DATA = resources.files("sunspec2") / "tests" / "test_data"
UNIT_CAPACITY = 20000  # registers of models per served unit (the chain must fit below 65536)
UNIT_MODELS = 40  # models per served unit (discovery refuses chains longer than 64)


def regs_of(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def chain_image(models: Sequence[bytes]) -> list[int]:
    """Marker, the models' registers, end marker."""
    return [*SUNS, *(r for m in models for r in regs_of(m)), *END]


def file_device_models(name: str) -> list[bytes]:
    """A pysunspec2 test device file, encoded by pysunspec2 model by model."""
    # FileClientDevice.scan() would do the same but leaves its file open (a ResourceWarning).
    data = json.loads((TEST_DATA / name).read_text(encoding="utf-8"))
    models = [FileClientModel(model_id=m["ID"], model_len=m.get("L"), data=m)
              for m in data["models"] if m["ID"] != 0xFFFF]
    for model in models:
        assert not model.error_info, model.error_info
    return [bytes(m.get_mb()) for m in models]


@asynccontextmanager
async def modbus_server(units: Mapping[int, Mapping[int, list[int]]]) -> AsyncIterator[int]:
    """Serve ``{unit: {address: registers}}`` on a free loopback port; yields the port."""
    port = free_port()
    devices = [
        SimDevice(id=unit, simdata=[
            SimData(address, values=regs, datatype=DataType.REGISTERS)
            for address, regs in sorted(blocks.items())
        ])
        for unit, blocks in units.items()
    ]
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield port
    finally:
        await server.shutdown()


# -- random devices covering every shipped model ---------------------------------------------

def _random_value(rng: random.Random, ptype: str, size: int) -> Any:
    ranges = {
        "int16": (-32767, 32767), "uint16": (0, 65534), "acc16": (1, 65535),
        "enum16": (0, 65534), "bitfield16": (0, 65534), "count": (0, 65534),
        "sunssf": (-3, 3), "int32": (-(2**31) + 1, 2**31 - 1), "uint32": (0, 2**32 - 2),
        "acc32": (1, 2**32 - 1), "enum32": (0, 2**32 - 2), "bitfield32": (0, 2**32 - 2),
        "ipaddr": (1, 2**32 - 1), "int64": (-(2**40), 2**40), "uint64": (0, 2**40),
        "acc64": (1, 2**40),
    }
    if ptype in ranges:
        return rng.randint(*ranges[ptype])
    if ptype == "float32":
        return struct.unpack(">f", struct.pack(">f", rng.uniform(-1e5, 1e5)))[0]
    if ptype == "float64":
        return rng.uniform(-1e9, 1e9)
    if ptype == "string":
        return "".join(rng.choice("ABCxyz0123 -_") for _ in range(rng.randint(1, 2 * size)))
    if ptype == "eui48":
        return ":".join(f"{rng.randint(0, 254):02X}" for _ in range(6))
    if ptype == "ipv6addr":
        return ":".join(f"{rng.getrandbits(32):08X}" for _ in range(4))
    return None  # pad


def _random_group(rng: random.Random, group: GroupDef, counts: dict[str, int]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for point in group.points:
        if point.name in ("ID", "L"):
            continue
        if point.name in counts:
            data[point.name] = counts[point.name]
        elif rng.random() > 0.2:
            data[point.name] = _random_value(rng, point.type, point.size)
    for sub in group.groups:
        if sub.count is None:
            data[sub.name] = _random_group(rng, sub, counts)
        else:
            n = counts[sub.count] if isinstance(sub.count, str) else rng.randint(1, 3)
            data[sub.name] = [_random_group(rng, sub, counts) for _ in range(n)]
    return data


def _count_names(group: GroupDef) -> Iterator[str]:
    for sub in group.groups:
        if isinstance(sub.count, str):
            yield sub.count
        yield from _count_names(sub)


def random_model(rng: random.Random, model_id: int) -> bytes:
    definition = load_model(model_id)
    assert definition is not None
    counts = {name: rng.randint(1, 2) for name in _count_names(definition.group)}
    data = _random_group(rng, definition.group, counts)
    model = ss_device.Model(model_id=model_id, data=data)
    assert not model.error_info, model.error_info
    return bytes(model.get_mb())


def random_units(seed: int) -> dict[int, list[bytes]]:
    """Every shipped model in random order, chunked into units that each start with model 1."""
    rng = random.Random(seed)
    ids = [m for m in available_models() if m != 1]
    rng.shuffle(ids)
    units: dict[int, list[bytes]] = {}
    unit, current = 1, [random_model(rng, 1)]
    for model_id in ids:
        encoded = random_model(rng, model_id)
        size = sum(len(m) for m in current) // 2 + len(encoded) // 2
        if size > UNIT_CAPACITY or len(current) >= UNIT_MODELS:
            units[unit], unit, current = current, unit + 1, [random_model(rng, 1)]
        current.append(encoded)
    units[unit] = current
    return units


# -- comparison -------------------------------------------------------------------------------

class Comparison:
    """Walks pysunspec2's computed dict next to ours and records every disagreement."""

    def __init__(self) -> None:
        self.points = 0
        self.scaled_values = 0
        self.unscaled_by_them = 0
        self.mismatches: list[str] = []

    def group(self, ours: dict[str, Any], theirs: dict[str, Any], gdef: GroupDef,
              where: str, scopes: list[dict[str, Any]]) -> None:
        chain = [theirs, *scopes]
        for point in gdef.points:
            if point.type == "pad":
                assert point.name not in ours, f"{where}.{point.name}: pad decoded"
                continue
            self.point(ours.get(point.name, "<absent>"), theirs.get(point.name), point.sf,
                       f"{where}.{point.name}", chain)
        for sub in gdef.groups:
            mine, their = ours.get(sub.name), theirs.get(sub.name)
            if sub.count is None:
                self.group(mine or {}, their or {}, sub, f"{where}.{sub.name}", chain)
                continue
            their = their or []  # pysunspec2 leaves out a group that repeats 0 times
            if not isinstance(mine, list) or len(mine) != len(their):
                self.mismatches.append(f"{where}.{sub.name}: {mine!r} vs {len(their)} entries")
                continue
            for i, (m, t) in enumerate(zip(mine, their, strict=True)):
                self.group(m, t, sub, f"{where}.{sub.name}[{i}]", chain)

    def point(self, ours: Any, theirs: Any, sf: str | int | None, where: str,
              chain: list[dict[str, Any]]) -> None:
        self.points += 1
        if ours == theirs and type(ours) is not bool:
            self.scaled_values += int(sf is not None and ours is not None)
            return
        sf_value = next((scope[sf] for scope in chain if isinstance(sf, str) and sf in scope),
                        "<none>")
        if ours is None and theirs is not None and sf_value is None:
            self.unscaled_by_them += 1  # the one deliberate difference, see module docstring
            return
        self.mismatches.append(f"{where}: ours {ours!r}, pysunspec2 {theirs!r}")


async def reference(port: int, unit: int) -> list[dict[str, Any]]:
    """pysunspec2's own scan of the server, computed (scaled) values."""
    def scan() -> list[dict[str, Any]]:
        client = SunSpecModbusClientDeviceTCP(slave_id=unit, ipaddr="127.0.0.1", ipport=port,
                                              timeout=5)
        try:
            client.scan()
            for model in client.model_list:
                assert not model.error_info, model.error_info
            return [m.get_dict(computed=True) for m in client.model_list]
        finally:
            client.close()
    return await asyncio.to_thread(scan)


async def ours(port: int, unit: int) -> tuple[SunSpecDevice, list[dict[str, Any]]]:
    async with Bus.tcp("127.0.0.1", port, timeout=5) as bus:
        device = await discover(bus, unit=unit)
        decoded = []
        for info in device.models:
            definition = load_model(info.id)
            assert definition is not None, info.id
            decoded.append(decode_model(definition, await read_model(bus, info, unit=unit)))
        return device, decoded


async def compare_unit(port: int, unit: int, expected_ids: list[int]) -> Comparison:
    device, mine = await ours(port, unit)
    theirs = await reference(port, unit)
    assert [m.id for m in device.models] == expected_ids
    assert [t["ID"] for t in theirs] == expected_ids
    result = Comparison()
    for info, m, t in zip(device.models, mine, theirs, strict=True):
        definition = load_model(info.id)
        assert definition is not None
        result.group(m, t, definition.group, f"model {info.id}", [])
    return result


# -- tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["device_1547.json", "inverter_123.json"])
@pytest.mark.parametrize("base", [40000, 0, 50000])
async def test_pysunspec2_test_devices_decode_identically(name: str, base: int) -> None:
    models = file_device_models(name)
    ids = [regs_of(m)[0] for m in models]
    async with modbus_server({1: {base: chain_image(models)}}) as port:
        device, _ = await ours(port, 1)
        result = await compare_unit(port, 1, ids)
    assert device.base == base
    assert device.models[0].start == base + 2
    assert result.mismatches == []
    assert result.points > 50 and result.scaled_values > 10


async def test_pysunspec2_test_device_identity() -> None:
    async with modbus_server({1: {40000: chain_image(file_device_models("device_1547.json"))}}
                             ) as port:
        device, _ = await ours(port, 1)
    assert device.identity.manufacturer == "SunSpecTest"
    assert device.identity.model == "Test-1547-1"
    assert device.identity.serial == "sn-123456789"
    assert device.identity.version == "1.2.3"


async def test_every_shipped_model_decodes_like_pysunspec2() -> None:
    units = random_units(seed=20240611)
    ids = {u: [regs_of(m)[0] for m in models] for u, models in units.items()}
    assert sorted(i for unit_ids in ids.values() for i in unit_ids[1:]) == sorted(
        m for m in available_models() if m != 1)
    async with modbus_server({u: {40000: chain_image(ms)} for u, ms in units.items()}) as port:
        results = [await compare_unit(port, u, ids[u]) for u in units]
    assert [m for r in results for m in r.mismatches] == []
    assert sum(r.points for r in results) > 3000
    assert sum(r.scaled_values for r in results) > 500
    assert sum(r.unscaled_by_them for r in results) > 0  # the difference was exercised
