"""``hems-agent scan --echonet`` through its real argument parser against loopback emulators:
discovery as the specification asks, makers by name, serials shown, exit codes as the Modbus
scan's, and ``--save`` writing what ``--select`` picked."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.config.echonet import EchonetDeviceConfig
from agent.installer.scan import cli as scan_cli
from drivers.echonet.client import EchonetClient
from drivers.echonet.codec import Eoj
from drivers.echonet.discovery import find_nodes
from drivers.echonet.tables import load_makers, maker_name
from drivers.sim import echonet_emulator as emu

PANASONIC = bytes.fromhex("00000B")


class OnlyGeneralNodeProfile(emu.EchonetNode):
    """A node that answers its node profile only at instance 0x01, never at 0x00 (seen in
    the field; the specification lets 0x00 mean every instance)."""

    def _targets(self, deoj: Eoj) -> list[emu.EmulatedObject]:
        return [o for o in [self.profile, *self.objects] if o.eoj == deoj]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def prefix() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}"


@pytest.fixture
def port() -> int:
    return _free_udp_port()


@pytest.fixture
async def strict_node(prefix: str, port: int) -> AsyncIterator[emu.EchonetNode]:
    pv, meter = emu.pv(0x1F), emu.smart_meter(0x01, coefficient=1)
    pv.values[0x8A] = PANASONIC
    async with OnlyGeneralNodeProfile(f"{prefix}.2", [pv, meter], port=port) as node:
        yield node


def _args(prefix: str, port: int, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    scan_cli.add_arguments(parser)
    return parser.parse_args(["--echonet", "--interface", f"{prefix}.1", "--echonet-port",
                              str(port), "--echonet-timeout", "0.3", *extra])


async def test_a_node_answering_only_instance_01_is_found(
        prefix: str, port: int, strict_node: emu.EchonetNode) -> None:
    async with EchonetClient(interface=f"{prefix}.1", port=port, timeout=0.5,
                             retries=0) as client:
        nodes = await find_nodes(client, wait=0.3)
    assert [n.address for n in nodes] == [strict_node.address]
    assert nodes[0].objects == (Eoj(class_code=0x0279, instance=0x1F),
                                Eoj(class_code=0x0288, instance=0x01))


async def test_the_scan_names_makers_and_shows_serials(
        prefix: str, port: int, strict_node: emu.EchonetNode,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(scan_cli.main, _args(prefix, port))
    out = capsys.readouterr().out
    assert code == 0
    assert "1. 0x02791F  Household solar power generation  maker Panasonic (0x00000B)" in out
    assert "model SIM-PV-EL  serial PVEL0001" in out  # to the installer, never to a log
    assert "2. 0x028801" in out and "maker undefined code (0xFFFFFE)" in out


async def test_nothing_answering_exits_1_in_text_and_json(
        prefix: str, port: int, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ((), ("--json",)):
        code = await asyncio.to_thread(scan_cli.main, _args(prefix, port, *extra))
        captured = capsys.readouterr()
        assert code == scan_cli.EXIT_NOT_FOUND == 1
        assert "no ECHONET Lite node answered within 0.3 s" in captured.err
        assert captured.out == ""


async def test_save_writes_the_selected_objects(
        prefix: str, port: int, strict_node: emu.EchonetNode, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "echonet.json"
    args = _args(prefix, port, "--json", "--select", "all", "--save", str(saved))
    assert await asyncio.to_thread(scan_cli.main, args) == 0
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document == {"echonet_devices": [
        {"name": "pv", "eoj": "02791F", "address": strict_node.address},
        {"name": "smart_meter", "eoj": "028801", "address": strict_node.address}]}
    for table in document["echonet_devices"]:
        EchonetDeviceConfig.model_validate(table)  # what [[echonet_devices]] accepts
    scanned = json.loads(capsys.readouterr().out)["echonet"]["nodes"][0]["objects"]
    assert (scanned[0]["maker"], scanned[0]["serial"]) == ("Panasonic", "PVEL0001")

    only = tmp_path / "one.json"
    args = _args(prefix, port, "--select", "2", "--save", str(only))
    assert await asyncio.to_thread(scan_cli.main, args) == 0
    assert [d["name"] for d in json.loads(only.read_text())["echonet_devices"]] == [
        "smart_meter"]
    args = _args(prefix, port, "--select", "3", "--save", str(tmp_path / "no.json"))
    assert await asyncio.to_thread(scan_cli.main, args) == 2
    assert "'3' is not one of the listed numbers 1..2" in capsys.readouterr().err
    assert not (tmp_path / "no.json").exists()


def test_the_maker_list_names_its_source_and_known_makers() -> None:
    makers = load_makers()
    assert makers.source.publisher == "ECHONET Consortium" and len(makers.makers) > 200
    assert maker_name("0x00000B") == "Panasonic" and maker_name("000006") is not None
    assert maker_name("0x123456") is None and maker_name(None) is None
