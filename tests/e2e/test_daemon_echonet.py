"""The whole daemon with ECHONET Lite and B-route sources beside a Modbus inverter.

The ECHONET Lite emulator (PV + battery on a "gateway" node, a smart meter on another) runs on
a loopback /24 of its own in the test's loop; ``hems-agent run`` reads it through one client,
with simulated time, next to a Modbus simulator; a real mosquitto and an in-process receiver
see what is released. The B-route test runs the daemon in process against the fake SK module
on a pty.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.config.model import load_config
from agent.daemon.daemon import Daemon, DaemonOptions
from agent.demo.echonet import start_echonet_site
from agent.wire.keys import write_private_file
from drivers.sim.server import run_site
from tests.e2e.test_daemon import SITE, SPEED, START, Cloud, broker, cloud, start_daemon, wait_for
from tests.support.fake_sk_module import FakeSkModule
from tests.support.mosquitto import Mosquitto
from tests.support.site import make_site

__all__ = ["broker"]  # the fixture, shared with test_daemon

GRANTED = {("service", "30min"), ("improvement", "1d")}  # factory defaults
NAMES = ("pv", "battery", "smart_meter")
RBID = "0123456789ABCDEF0123456789ABCDEF"
PASSWORD = "SECRETPASS12"


def _records(c: Cloud, purpose: str = "service") -> Iterator[tuple[int, dict[str, Any]]]:
    """(envelope index, record) of every released record of ``purpose``."""
    for n, envelope in enumerate(c.data()):
        if envelope["header"]["purpose"] == purpose:  # type: ignore[index]
            for record in envelope["body"]["records"]:  # type: ignore[index]
                yield n, record


def _good(c: Cloud, device: str, point: str, after: int = -1) -> bool:
    return any(r["device"] == device and r["point"] == point and r["good"] > 0
               for n, r in _records(c) if n > after)


def _refused(c: Cloud, after: int) -> list[dict[str, Any]]:
    """battery.soc records of windows with no good reading, released after envelope ``after``."""
    return [r for n, r in _records(c) if n > after and r["device"] == "battery"
            and r["point"] == "battery.soc" and r["good"] == 0 and r["bad"] > 0]


async def test_echonet_and_modbus_sources_feed_one_release(tmp_path: Path,
                                                           broker: Mosquitto) -> None:
    async with run_site(speed=SPEED, start=START) as modbus:
        echonet, _ = await start_echonet_site(home=modbus.home, update_every=0.2)
        try:
            inverter = {"name": "inverter", "host": "127.0.0.1", "port": modbus.inverter.port,
                        "poll_interval": 0.5, "timeout": 1.0}
            files = make_site(tmp_path / "gw", broker, site_id=SITE, devices=[inverter],
                              extra=echonet.toml(names=NAMES, poll_interval=0.5,
                                                 slow_interval=0.5))
            async with cloud(files, broker, tmp_path / "seen.db") as c:
                daemon = await start_daemon(files)
                try:
                    await wait_for(lambda: all(_good(c, d, p) for d, p in (
                        ("battery", "battery.soc"), ("smart_meter", "grid.power"),
                        ("pv", "pv.power"), ("inverter", "pv.power"))),
                        "service records from ECHONET Lite and Modbus devices")
                    echonet.gateway.refuse = {0xE4}  # the battery now answers SoC with Get_SNA
                    fault_at = len(c.data())
                    await wait_for(lambda: _refused(c, fault_at), "a window of refused SoC")
                    refused_at = len(c.data())
                    await wait_for(lambda: _good(c, "battery", "battery.power", refused_at),
                                   "the battery's other points, still read")
                finally:
                    daemon.send_signal(signal.SIGTERM)
                    output, _ = await asyncio.wait_for(daemon.communicate(), 30)
                assert daemon.returncode == 0, output.decode()
        finally:
            await echonet.aclose()
    assert {(e["header"]["purpose"], e["header"]["tier"]) for e in c.data()} <= GRANTED
    assert c.receiver.rejected == {}
    for record in _refused(c, fault_at):
        assert record["values"] == {}  # missing: the last SoC is not repeated
    devices = {r["device"] for _, r in _records(c)} | {r["device"] for _, r in
                                                        _records(c, "improvement")}
    assert devices <= {"inverter", *NAMES}  # configured names, never a serial number


async def test_broute_meter_feeds_the_daemon_and_rejoins(tmp_path: Path,
                                                         broker: Mosquitto) -> None:
    async with FakeSkModule(RBID, PASSWORD) as fake:
        directory = tmp_path / "gw"
        directory.mkdir()
        write_private_file(directory / "broute.id", RBID.encode())
        write_private_file(directory / "broute.pass", PASSWORD.encode())
        extra = "\n".join([
            "[broute]", 'name = "smart_meter"', f'device = "{fake.path}"',
            'id_file = "broute.id"', 'password_file = "broute.pass"', "scan_attempts = 2",
            "scan_timeout = 2.0", "join_timeout = 2.0", "request_timeout = 0.5",
            "power_interval = 0.3", "energy_interval = 0.3", ""])
        files = make_site(directory, broker, site_id=SITE, devices=[], extra=extra)
        daemon = Daemon(load_config(files.config),
                        DaemonOptions(speed=SPEED, start=START, tick_interval=0.2))
        async with cloud(files, broker, tmp_path / "seen.db") as c:
            run = asyncio.create_task(daemon.run())
            try:
                await wait_for(lambda: _good(c, "smart_meter", "grid.power"),
                               "grid.power from the B-route meter")
                fake.expire()  # EVENT 29: the session lifetime ends
                await wait_for(lambda: fake.joins >= 2, "a second join")
                rejoined = len(c.data())
                await wait_for(lambda: _good(c, "smart_meter", "grid.energy_import", rejoined),
                               "readings after the re-join")
            finally:
                daemon.stop.set()
                status = await asyncio.wait_for(run, 30)
    assert status == 0
    assert fake.commands.count("SKSCAN") == 1  # the re-join reused the session's PAN
    assert {(e["header"]["purpose"], e["header"]["tier"]) for e in c.data()} <= GRANTED
