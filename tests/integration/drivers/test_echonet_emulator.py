"""ECHONET Lite discovery, decoding and resilience against the loopback emulator."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from drivers.echonet.client import EchonetClient
from drivers.echonet.codec import Eoj, Esv
from drivers.echonet.device import EchonetDevice
from drivers.echonet.discovery import describe_all, find_nodes
from drivers.errors import DeviceUnreachable
from drivers.models import Quality, Reading
from drivers.sim import echonet_emulator as emu

PV = Eoj(class_code=0x0279, instance=0x1F)
BATTERY = Eoj(class_code=0x027D, instance=0x02)
METER = Eoj(class_code=0x0288, instance=0x01)


@dataclass(frozen=True)
class Net:
    """A loopback /24 and a UDP port of this test's own, so parallel runs do not meet."""

    prefix: str
    port: int

    def addr(self, host: int) -> str:
        return f"{self.prefix}.{host}"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def net() -> Net:
    return Net(prefix=f"127.{random.randint(1, 254)}.{random.randint(1, 254)}",
               port=_free_udp_port())


@pytest.fixture
async def home(net: Net) -> AsyncIterator[tuple[emu.EchonetNode, emu.EchonetNode]]:
    gateway = emu.EchonetNode(net.addr(2), [emu.pv(0x1F), emu.battery(0x02)], port=net.port)
    meter = emu.EchonetNode(net.addr(3), [emu.smart_meter(0x01, coefficient=1)], port=net.port)
    async with gateway, meter:
        yield gateway, meter


def _client(net: Net, **kwargs: float) -> EchonetClient:
    options: dict[str, float] = {"timeout": 0.5, "retries": 0, "backoff": 0.05, **kwargs}
    return EchonetClient(interface=net.addr(1), port=net.port, timeout=options["timeout"],
                         retries=int(options["retries"]), backoff=options["backoff"])


def _by_point(readings: list[Reading]) -> dict[str, Reading]:
    return {r.point: r for r in readings}


async def test_multicast_discovery_uses_real_instances_and_property_maps(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    async with _client(net) as client:
        nodes = await find_nodes(client, wait=0.3)
        assert [(n.address, n.objects) for n in nodes] == [
            (net.addr(2), (PV, BATTERY)), (net.addr(3), (METER,))]
        infos = {i.eoj: i for i in await describe_all(client, nodes)}
    assert len(infos[BATTERY].get_map) >= 16  # sent as a bitmap
    assert len(infos[PV].get_map) < 16  # sent as a list
    assert infos[PV].identity.manufacturer == "0xFFFFFE"
    assert infos[PV].identity.model == "SIM-PV-EL"
    assert infos[PV].identity.version == "Release R"
    assert infos[PV].identity.protocol == "echonet"


async def test_poll_decodes_every_class_into_canonical_points(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    async with _client(net) as client:
        pv = await EchonetDevice.open(client, name="pv", address=net.addr(2), eoj=PV)
        bat = await EchonetDevice.open(client, name="bat", address=net.addr(2), eoj=BATTERY)
        meter = await EchonetDevice.open(client, name="meter", address=net.addr(3), eoj=METER)
        got = {d.name: _by_point(await d.poll(0.0)) for d in (pv, bat, meter)}
        assert await pv.poll(1.0) == []  # nothing due yet
        assert pv.next_due() == 10.0
    assert {p: r.value for p, r in got["pv"].items()} == {
        "pv.power": 3120.0, "pv.energy": 8765432.0, "pv.energy_sold": 4321000.0}
    assert got["bat"]["battery.power"].value == 800.0  # discharging is positive
    assert got["bat"]["battery.state"].value == "discharging"
    assert got["bat"]["battery.mode"].value == "automatic"
    assert got["bat"]["battery.soc"].value == 64.0
    assert got["meter"]["grid.power"].value == 632.0
    assert got["meter"]["grid.energy_import"].value == 6513900.0  # 65139 x 0.1 kWh
    assert got["meter"]["grid.energy_export"].unit == "Wh"


async def test_get_sna_is_missing_never_the_previous_value(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    gateway, _ = home
    async with _client(net) as client:
        pv = await EchonetDevice.open(client, name="pv", address=net.addr(2), eoj=PV)
        assert _by_point(await pv.poll(0.0))["pv.power"].value == 3120.0
        gateway.refuse = {0xE0}
        again = _by_point(await pv.poll(100.0))
    assert again["pv.power"].quality is Quality.MISSING and again["pv.power"].value is None
    assert again["pv.energy"].quality is Quality.GOOD


async def test_only_epcs_in_the_get_map_are_asked_for(net: Net) -> None:
    meter_object = emu.smart_meter(0x1F)  # no 0xD3: coefficient defaults to 1
    del meter_object.values[0xE3]
    async with emu.EchonetNode(net.addr(4), [meter_object], port=net.port), \
            _client(net) as client:
        meter = await EchonetDevice.open(client, name="m", address=net.addr(4),
                                         eoj=Eoj(class_code=0x0288, instance=0x1F))
        points = _by_point(await meter.poll(0.0))
    assert "grid.energy_export" not in points
    assert points["grid.energy_import"].value == 6513900.0


async def test_no_data_and_out_of_range_values_are_never_numbers(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    gateway, meter_node = home
    meter_node.object(METER).values[0xE7] = bytes.fromhex("7FFFFFFE")
    meter_node.object(METER).values[0xE0] = bytes.fromhex("FFFFFFFE")
    gateway.object(BATTERY).values[0xE4] = bytes([101])
    async with _client(net) as client:
        meter = await EchonetDevice.open(client, name="m", address=net.addr(3), eoj=METER)
        bat = await EchonetDevice.open(client, name="b", address=net.addr(2), eoj=BATTERY)
        m, b = _by_point(await meter.poll(0.0)), _by_point(await bat.poll(0.0))
    assert (m["grid.power"].quality, m["grid.power"].value) == (Quality.MISSING, None)
    assert m["grid.energy_import"].quality is Quality.MISSING
    assert (b["battery.soc"].quality, b["battery.soc"].value) == (Quality.ERROR, None)
    assert bat.stats.point_errors == 1


async def test_meter_counts_have_no_overflow_code_and_a_zero_coefficient_means_one(
        net: Net) -> None:
    # MRA 0x0288: cumulative counts have no overflow code (0xFFFFFFFF is garbage: ERROR);
    # 0xD3 ranges 0-999999, and 0 is read as the initial value 1.
    meter_object = emu.smart_meter(0x01, coefficient=0, unit=0x02)
    meter_object.values[0xE3] = bytes.fromhex("FFFFFFFF")
    async with emu.EchonetNode(net.addr(5), [meter_object], port=net.port), \
            _client(net) as client:
        meter = await EchonetDevice.open(client, name="m", address=net.addr(5), eoj=METER)
        points = _by_point(await meter.poll(0.0))
    assert meter.meter is not None and meter.meter.coefficient == 1
    assert points["grid.energy_import"].value == pytest.approx(651_390.0)  # 65139 x 0.01 kWh
    assert (points["grid.energy_export"].quality, points["grid.energy_export"].value) == \
        (Quality.ERROR, None)


async def test_a_slow_node_does_not_hold_up_the_others(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    _, meter_node = home
    async with _client(net, timeout=5.0) as client:
        pv = await EchonetDevice.open(client, name="pv", address=net.addr(2), eoj=PV)
        meter = await EchonetDevice.open(client, name="m", address=net.addr(3), eoj=METER)
        meter_node.delay = 1.0
        slow = asyncio.create_task(meter.poll(0.0))
        fast = await pv.poll(0.0)
        assert not slow.done()  # the fast poll finished while the slow one still waits
        assert all(r.quality is Quality.GOOD for r in fast)
        assert _by_point(await slow)["grid.power"].value == 632.0


async def test_short_deadline_makes_a_slow_node_unreachable_and_points_stay_due(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    _, meter_node = home
    async with _client(net, timeout=0.2) as client:
        meter = await EchonetDevice.open(client, name="m", address=net.addr(3), eoj=METER)
        meter_node.delay = 0.6
        with pytest.raises(DeviceUnreachable, match="no reply"):
            await meter.poll(0.0)
        assert meter.next_due() == float("-inf")
        assert meter.stats.unreachable == 1


async def test_a_lost_datagram_is_sent_again_and_garbage_is_dropped(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    gateway, _ = home
    async with _client(net, timeout=0.2, retries=2) as client:
        pv = await EchonetDevice.open(client, name="pv", address=net.addr(2), eoj=PV)
        before = gateway.requests
        gateway.drop, gateway.garble = 1, 1
        readings = await pv.poll(0.0)
        assert all(r.quality is Quality.GOOD for r in readings)
        assert gateway.requests - before == 3  # lost, garbled, answered
        assert (client.stats.resends, client.stats.garbled) == (2, 1)


async def test_infc_is_acknowledged_and_pushed_values_come_with_the_meter_time(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    _, meter_node = home
    async with _client(net) as client:
        meter = await EchonetDevice.open(client, name="m", address=net.addr(3), eoj=METER)
        await meter.poll(0.0)
        tid = meter_node.notify(METER, [0xEA, 0xE7], to=net.addr(1))
        await _until(lambda: bool(meter_node.acks))
        pushed = await meter.poll(1.0)  # nothing due: only what was pushed
    ack = meter_node.acks[0]
    assert (ack.tid, ack.esv, ack.seoj, [p.epc for p in ack.properties]) == (
        tid, Esv.INFC_RES, Eoj(class_code=0x05FF, instance=1), [0xEA, 0xE7])
    by_point = _by_point(pushed)
    assert by_point["grid.energy_import"].ts.isoformat() == "2026-05-20T05:00:00+00:00"
    assert by_point["grid.energy_import"].value == 6513900.0
    assert by_point["grid.power"].value == 632.0


async def test_an_announcement_is_enough_to_find_a_node(net: Net) -> None:
    async with emu.EchonetNode(net.addr(5), [emu.pv(0x1F)], port=net.port) as quiet, \
            _client(net) as client:
        quiet.drop = -1  # answers nothing, but announces itself
        search = asyncio.create_task(find_nodes(client, wait=0.5))
        await asyncio.sleep(0.05)
        quiet.announce()
        nodes = await search
    assert [(n.address, n.objects) for n in nodes] == [(net.addr(5), (PV,))]


async def test_unicast_discovery_on_the_echonet_port(net: Net) -> None:
    addresses = [net.addr(6), net.addr(7)]
    async with emu.EchonetNode(addresses[0], [emu.battery(0x1F)], group=None), \
            EchonetClient(interface=net.addr(1), group=None, timeout=0.3, retries=0) as client:
        nodes = await find_nodes(client, wait=0.3, addresses=addresses)
    assert client.port == 3610
    assert [(n.address, n.objects) for n in nodes] == [
        (addresses[0], (Eoj(class_code=0x027D, instance=0x1F),))]


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition not met within 5 s")


async def test_scan_lists_nodes_objects_and_decoded_values(
        net: Net, home: tuple[emu.EchonetNode, emu.EchonetNode]) -> None:
    from agent.installer.scan.echonet import scan_echonet

    result = await scan_echonet(net.addr(1), 0.3, port=net.port)
    objects = {o["eoj"]: o for n in result["nodes"] for o in n["objects"]}
    assert set(objects) == {"0x02791F", "0x027D02", "0x028801"}
    readings = {r["point"]: r["value"] for r in objects["0x027D02"]["readings"]}
    assert readings["battery.power"] == 800.0
    assert objects["0x02791F"]["class"] == "Household solar power generation"
