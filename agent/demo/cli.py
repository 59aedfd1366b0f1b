"""``hems-agent demo``: the whole product on one machine, or just the simulated devices' readings.

By default (see :mod:`agent.demo.full`) it runs simulated devices, an MQTT broker, the agent with
generated keys, its household page and the reference receiver, and shows what the cloud
receives per purpose. ``--readings-only`` is the first form: it finds each simulated device
with SunSpec discovery, maps it to canonical points, polls it with the same
:class:`drivers.device.ModbusDevice` the daemon uses and prints the live readings.
``--speed`` accelerates simulated time; ``--duration`` stops by itself; Ctrl-C (or SIGTERM)
stops everything cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the simulators pull in pymodbus.server: imported inside main() only
    import asyncio
    from contextlib import AsyncExitStack

    from drivers.device import ModbusDevice
    from drivers.models import Reading
    from drivers.sim.server import Site

DEMO_UNIT = 1
REDRAW = "\x1b[H\x1b[2J"  # cursor home, clear screen


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a canonical point, and which device it comes from."""

    point: str
    device: str


ROWS: tuple[Row, ...] = (
    Row("pv.power", "inverter"), Row("pv.mppt.1.power", "inverter"),
    Row("pv.mppt.2.power", "inverter"), Row("load.power", "derived"),
    Row("grid.power", "meter"), Row("battery.power", "battery"), Row("battery.soc", "battery"),
    Row("pv.energy", "inverter"), Row("grid.energy_import", "meter"),
    Row("grid.energy_export", "meter"), Row("inverter.state", "inverter"),
    Row("battery.state", "battery"),
)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _start_time(text: str) -> datetime:
    from drivers.sim.curves import JST

    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO date-time (e.g. 2026-06-01T06:00): {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=JST)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port (1-65535): {text!r}")
    return int(text)


def _login(text: str) -> object:
    from agent.demo.full import parse_login

    return parse_login(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", type=_positive, default=None,
                        help="simulated seconds per real second (default 1440: a day a minute; "
                        "60 with --readings-only)")
    parser.add_argument("--duration", type=_positive, default=None, metavar="SECONDS",
                        help="stop after this many real seconds (default: run until Ctrl-C)")
    parser.add_argument("--refresh", type=_positive, default=2.0, metavar="SECONDS",
                        help="seconds between screen refreshes (default 2)")
    parser.add_argument("--start", type=_start_time, default=None, metavar="ISO-TIME",
                        help="simulated start time, JST unless a zone is given (default: 23:50 "
                        "JST tonight; today 08:00 with --readings-only)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated home")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="keep the generated keys, configuration and state in DIR (default: "
                        "a temporary directory, deleted at exit)")
    parser.add_argument("--echonet", action="store_true",
                        help="also emulate an ECHONET Lite PV, battery and smart meter on "
                             "loopback and read them beside the Modbus devices")
    parser.add_argument("--page-port", type=_port, default=None, metavar="PORT",
                        help="port of the household page on 127.0.0.1 (default: a free one)")
    broker = parser.add_argument_group("a real broker instead of the embedded one")
    broker.add_argument("--broker", default=None, metavar="URL",
                        help="mqtts://HOST:PORT of an MQTT broker with TLS")
    broker.add_argument("--broker-ca", type=Path, default=None, metavar="FILE",
                        help="the CA certificate the broker's certificate is checked against")
    broker.add_argument("--broker-login", type=_login, default=None, metavar="NAME:FILE",
                        help="the agent's user name (= site id demo-home under the usual ACL) "
                        "and password file")
    broker.add_argument("--receiver-login", type=_login, default=None, metavar="NAME:FILE",
                        help="the receiver's user name and password file")
    broker.add_argument("--broker-protocol", choices=["5", "3.1.1"], default="5",
                        help="MQTT version to speak to --broker (default 5)")
    first = parser.add_argument_group("the simulated devices alone")
    first.add_argument("--readings-only", action="store_true",
                       help="only poll the simulated devices and print their live readings")
    first.add_argument("--rtu", action="store_true",
                       help="with --readings-only: speak RTU framing over the loopback sockets")


def main(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # fault noise; drivers report it
    if args.rtu and not args.readings_only:
        print("hems-agent demo: --rtu goes with --readings-only", file=sys.stderr)
        return 2
    if args.speed is None:
        args.speed = 60.0 if args.readings_only else 1440.0
    try:
        if args.readings_only:
            return asyncio.run(_run(args, sys.stdout))
        from agent.demo import full as demo_full

        return asyncio.run(demo_full.run(args, sys.stdout))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 0


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio
    import contextlib
    import signal

    from drivers.errors import DriverError
    from drivers.sim.curves import JST, HomeConfig
    from drivers.sim.server import Framing, run_site

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    today = datetime.now(JST).replace(hour=8, minute=0, second=0, microsecond=0)
    framing = Framing.RTU if args.rtu else Framing.TCP
    async with run_site(config=HomeConfig(seed=args.seed), start=args.start or today,
                        speed=args.speed, framing=framing) as site, \
            contextlib.AsyncExitStack() as stack:
        try:
            devices = await _attach(site, stack, rtu=args.rtu, refresh=args.refresh)
        except DriverError as exc:
            print(f"hems-agent demo: a simulated device could not be read: {exc}", file=sys.stderr)
            return 1
        deadline = loop.time() + args.duration if args.duration else math.inf
        await _show(site, devices, out, stop=stop, refresh=args.refresh, deadline=deadline)
    print("demo stopped", file=out, flush=True)
    return 0


async def _attach(site: Site, stack: AsyncExitStack, *, rtu: bool, refresh: float
                  ) -> list[ModbusDevice]:
    """Discover each simulator over its own link and build the poller the daemon would."""
    import dataclasses

    from drivers.device import ModbusDevice
    from drivers.models import PointKind
    from drivers.sunspec.discovery import discover, read_model
    from drivers.sunspec.mapping import map_points
    from drivers.transport import Bus

    devices = []
    for name, server in (("inverter", site.inverter), ("battery", site.battery),
                         ("meter", site.meter)):
        bus = await stack.enter_async_context(
            Bus.tcp("127.0.0.1", server.port, rtu_framing=rtu, timeout=1.0, name=name))
        found = await discover(bus, unit=DEMO_UNIT)
        blocks = {m.start: await read_model(bus, m, unit=DEMO_UNIT) for m in found.models}
        # the demo refreshes faster than the daemon's defaults, identity stays once a day
        points = [p if p.kind is PointKind.INFO else dataclasses.replace(
            p, interval=min(p.interval, refresh)) for p in map_points(found, blocks)]
        devices.append(ModbusDevice(name=name, reader=bus, unit=DEMO_UNIT, points=points,
                                    identity=found.identity, cost=bus.cost_model))
    return devices


async def _show(site: Site, devices: list[ModbusDevice], out: TextIO, *,
                stop: asyncio.Event, refresh: float, deadline: float) -> None:
    """Poll, print, wait; until ``stop`` is set or the deadline passes."""
    import asyncio
    import contextlib

    from drivers.errors import DriverError

    loop = asyncio.get_running_loop()
    latest: dict[tuple[str, str], Reading] = {}
    down: set[str] = set()
    while not stop.is_set() and loop.time() < deadline:
        for device in devices:
            try:
                readings = await device.poll(loop.time())
            except DriverError:
                down.add(device.name)
                continue
            down.discard(device.name)
            latest.update(((r.device, r.point), r) for r in readings)
        sim_now = site.home.clock.now()
        out.write(render(latest, sim_now, site.home.clock.speed, down, redraw=out.isatty()))
        out.flush()
        wait = min(refresh, deadline - loop.time())
        if wait > 0:
            with contextlib.suppress(TimeoutError):  # the refresh interval passed
                await asyncio.wait_for(stop.wait(), wait)


def render(latest: Mapping[tuple[str, str], Reading], sim_now: datetime, speed: float,
           down: Iterable[str], *, redraw: bool = False) -> str:
    """The table for one refresh: one line per canonical point."""
    from drivers.sim.curves import JST

    stamp = sim_now.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S JST")
    lines = [f"simulated {stamp}  speed x{speed:g}"]
    lines += [f"  {name} is not answering" for name in sorted(down)]
    lines.append(f"  {'point':<20} {'value':>14}  {'unit':<4} device")
    for row in ROWS:
        value, unit = _cell(latest, row)
        lines.append(f"  {row.point:<20} {value:>14}  {unit:<4} {row.device}")
    return (REDRAW if redraw else "") + "\n".join(lines) + "\n\n"


def _cell(latest: Mapping[tuple[str, str], Reading], row: Row) -> tuple[str, str]:
    if row.device == "derived":  # load = pv + grid import + battery discharge
        parts = [latest.get(key) for key in (("inverter", "pv.power"), ("meter", "grid.power"),
                                              ("battery", "battery.power"))]
        values = [p.value for p in parts if p is not None]
        if len(values) < 3 or not all(isinstance(v, float) for v in values):
            return "-", "W"
        return _format(sum(v for v in values if isinstance(v, float))), "W"
    reading = latest.get((row.device, row.point))
    if reading is None:
        return "-", ""
    if reading.value is None:
        return reading.quality.value, reading.unit
    return _format(reading.value), reading.unit


def _format(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
