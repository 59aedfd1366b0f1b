"""The commissioning scan (``hems-agent scan --hosts/--cidr/--units``) feeding provision."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agent.installer.scan.range import Progress, choose, expand_targets, parse_units
from drivers.sim.devices import DeviceKind
from drivers.sim.server import SimHome, SimulatedDevice, SimulatorServer, run_site
from tests.conftest import free_port
from tests.integration.test_provision_helpers import cli


async def test_a_cidr_range_finds_the_device_and_skips_silent_hosts() -> None:
    async with run_site() as site:
        code, out, err = await cli("scan", "--cidr", "127.0.0.0/29", "--port",
                                   str(site.inverter.port), "--timeout", "0.5", "--json")
    assert code == 0, err
    [device] = json.loads(out)["devices"]
    assert device["where"] == f"127.0.0.1:{site.inverter.port}" and device["unit"] == 1
    assert device["identity"]["model"] == site.inverter.device.identity.model


async def test_a_unit_sweep_selects_and_saves_devices_for_provision(tmp_path: Path) -> None:
    home = SimHome()
    devices = [SimulatedDevice(DeviceKind.INVERTER, home, unit=2),
               SimulatedDevice(DeviceKind.BATTERY, home, unit=5)]
    saved = tmp_path / "devices.json"
    async with SimulatorServer(devices) as server:
        code, out, err = await cli("scan", "--hosts", "127.0.0.1", "--port", str(server.port),
                                   "--units", "1-6", "--select", "2", "--save", str(saved))
    assert code == 0, err
    assert out.splitlines()[0].startswith("  1. inverter") and " unit 2:" in out
    assert out.splitlines()[1].startswith("  2. battery") and " unit 5:" in out
    assert json.loads(saved.read_text()) == {"devices": [
        {"name": "battery", "transport": "tcp", "host": "127.0.0.1", "port": server.port,
         "unit": 5, "profile": "sunspec"}]}


@pytest.mark.parametrize(("args", "message"), [
    (["--cidr", "10.0.0.0/8"], "at most 1024 hosts"),
    (["--cidr", "10.0.0.0/33"], "is not a network"),
    (["--hosts", "127.0.0.1", "--units", "0-300"], "unit ids are 1..247"),
    (["--hosts", "127.0.0.1", "--concurrency", "0"], "concurrency must be 1..128"),
])
async def test_unbounded_or_malformed_ranges_are_refused(args: list[str], message: str) -> None:
    code, out, err = await cli("scan", *args)
    assert code == 2 and out == ""
    assert message in err


async def test_nothing_found_is_one_line_and_exit_one() -> None:
    code, out, err = await cli("scan", "--hosts", "127.0.0.1", "--port", str(free_port()),
                               "--timeout", "0.5")
    assert code == 1 and out == ""
    assert "no device found on 1 host(s)" in err


def test_targets_units_and_choices() -> None:
    assert expand_targets(["a,b", "b"], ["192.168.1.0/30"]) == [
        "a", "b", "192.168.1.1", "192.168.1.2"]
    assert parse_units("1,3,10-12") == [1, 3, 10, 11, 12]
    assert len(parse_units("1-247")) == 247
    with pytest.raises(ValueError, match=r"1\.\.2"):
        choose(["x", "y"], "3")  # type: ignore[list-item]
    assert choose(["x", "y"], "all") == ["x", "y"]  # type: ignore[list-item]
    assert choose(["x", "y"], "2,2,1") == ["y", "x"]  # type: ignore[list-item]


def test_progress_overwrites_one_line_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = Progress(2, "hosts", stream)
    progress.step()
    progress.step(found=1)
    progress.close()
    assert stream.getvalue() == ("\rscanning hosts: 1/2, 0 device(s) found "
                                 "\rscanning hosts: 2/2, 1 device(s) found \n")
    quiet = io.StringIO()
    Progress(1, "hosts", quiet).step()
    assert quiet.getvalue() == ""
