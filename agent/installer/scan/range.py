"""Commissioning scan: many hosts of the installer's LAN, or a unit sweep on one RS-485 line.

``hems-agent scan --cidr 192.168.1.0/24`` (or ``--hosts a,b,c``) probes every host's Modbus TCP
port with at most ``--concurrency`` hosts at a time; a host costs one connect timeout when
nothing listens. ``--units 1-247`` sweeps unit ids (on each host, or on ``--serial``). The range
is bounded (:data:`MAX_HOSTS`) so a typo such as ``/8`` cannot start a scan of millions.

Each unit is identified as ``hems-agent scan`` does for one host (SunSpec, then the register
profiles). Progress goes to stderr (when it is a terminal); the found devices to stdout, numbered.
``--select 1,3`` (or a prompt, on a terminal) picks the ones to add and ``--save FILE`` writes
them as JSON for ``hems-agent provision --devices-from FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from agent.installer.scan import probe

if TYPE_CHECKING:
    from agent.config.model import AgentConfig, RtuDevice, TcpDevice

MAX_HOSTS = 1024
MAX_CONCURRENCY = 128
DEFAULT_CONCURRENCY = 32

Entry = dict[str, Any]
T = TypeVar("T")  # what choose() picks from: found devices, or scanned ECHONET Lite objects


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """One device found: where it answers and what ``hems-agent scan`` read from it."""

    transport: str  # "tcp" or "rtu"
    host: str | None = None
    port: int | str = 502  # TCP port, or the serial device path for RTU
    unit: int
    entry: Entry = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else str(self.port)

    @property
    def kind(self) -> str:
        """inverter, battery or meter, from the readings it offers (``device`` if unclear)."""
        readings = self.entry.get("readings", {})
        for prefix, kind in (("pv.", "inverter"), ("battery.", "battery"), ("grid.", "meter")):
            if any(name.startswith(prefix) for name in readings):
                return kind
        return "device"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    found: tuple[Found, ...]
    misses: tuple[str, ...]
    hosts: int


def parse_units(text: str) -> list[int]:
    """``"1-247"``, ``"1,3,10-12"`` → sorted unit ids; each must be 1..247 (RS-485 addresses)."""
    units: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f"unit range {text!r}: expected e.g. 1-247 or 1,3,10-12")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if not 1 <= first <= last <= 247:
            raise ValueError(f"unit range {part.strip()!r}: unit ids are 1..247, low to high")
        units.update(range(first, last + 1))
    return sorted(units)


def expand_targets(hosts: Sequence[str], cidrs: Sequence[str], *,
                   limit: int = MAX_HOSTS) -> list[str]:
    """The hosts to probe, in order, without repeats; more than ``limit`` is refused."""
    out: dict[str, None] = {}
    for item in hosts:
        for host in item.split(","):
            if host.strip():
                out[host.strip()] = None
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"--cidr {cidr!r} is not a network such as 192.168.1.0/24") from exc
        if network.num_addresses > 2 * limit:
            raise ValueError(f"--cidr {cidr}: {network.num_addresses} addresses; at most "
                             f"{limit} hosts per scan (use a narrower range, e.g. a /24)")
        for address in network.hosts() if network.num_addresses > 2 else network:
            out[str(address)] = None
    if len(out) > limit:
        raise ValueError(f"{len(out)} hosts to scan; at most {limit} per scan")
    if not out:
        raise ValueError("no host to scan: give --hosts or --cidr")
    return list(out)


class Progress:
    """One self-overwriting status line on a terminal; silent when stderr is not one."""

    def __init__(self, total: int, what: str, stream: TextIO | None = None) -> None:
        self.total, self.what, self.done, self.found = total, what, 0, 0
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty()

    def step(self, found: int = 0) -> None:
        self.done += 1
        self.found += found
        if self._live:
            self._stream.write(f"\rscanning {self.what}: {self.done}/{self.total}, "
                               f"{self.found} device(s) found ")
            self._stream.flush()

    def close(self) -> None:
        if self._live:
            self._stream.write("\n")
            self._stream.flush()


async def scan_hosts(hosts: Sequence[str], *, port: int = 502, units: Sequence[int] = (1,),
                     per_request: float = 1.0, concurrency: int = DEFAULT_CONCURRENCY,
                     progress: Progress | None = None) -> ScanResult:
    """Probe every host (at most ``concurrency`` at once); one host's failure is a miss only."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    async def one(host: str) -> tuple[list[Found], list[str]]:
        async with gate:
            try:
                return await _scan_host(host, port, units, per_request)
            finally:
                if progress is not None:
                    progress.step()

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(host)) for host in hosts]
    found = [f for task in tasks for f in task.result()[0]]
    misses = [m for task in tasks for m in task.result()[1]]
    return ScanResult(found=tuple(found), misses=tuple(misses), hosts=len(hosts))


async def _scan_host(host: str, port: int, units: Sequence[int],
                     per_request: float) -> tuple[list[Found], list[str]]:
    from drivers.errors import DriverError
    from drivers.transport import Bus

    try:
        await check_tcp(host, port, per_request)
    except DriverError as exc:
        return [], [str(exc)]
    async with Bus.tcp(host, port, timeout=per_request) as bus:
        return await _sweep(bus, units, lambda unit, entry: Found(
            transport="tcp", host=host, port=port, unit=unit, entry=entry), f"{host}:{port}")


async def scan_line(serial: str, *, units: Sequence[int], baudrate: int = 9600,
                    parity: str = "N", per_request: float = 0.3,
                    progress: Progress | None = None) -> ScanResult:
    """Sweep ``units`` on one RS-485 line, one request at a time (the line carries one frame)."""
    from drivers.transport import Bus

    bus = Bus.serial(serial, baudrate=baudrate, parity=parity, timeout=per_request)
    async with bus:
        found, misses = await _sweep(bus, units, lambda unit, entry: Found(
            transport="rtu", port=serial, unit=unit, entry=entry), serial, progress)
    return ScanResult(found=tuple(found), misses=tuple(misses), hosts=1)


async def device_answers(spec: dict[str, Any], *, deadline: float = 2.0) -> str | None:
    """None if the device identifies itself (SunSpec or a profile), else why not."""
    if spec["transport"] == "tcp":
        result = await scan_hosts([spec["host"]], port=spec["port"], units=[spec["unit"]],
                                  per_request=deadline, concurrency=1)
    else:
        result = await scan_line(spec["serial"], units=[spec["unit"]], per_request=deadline)
    if result.found:
        return None
    return "; ".join(result.misses) or "no answer"


async def _sweep(bus: Any, units: Sequence[int], make: Callable[[int, Entry], Found],
                 where: str, progress: Progress | None = None) -> tuple[list[Found], list[str]]:
    from drivers.errors import DriverError

    found: list[Found] = []
    misses: list[str] = []
    for unit in units:
        try:
            entry = await probe.scan_unit(bus, unit)
        except DriverError as exc:  # this unit only: a silent unit costs one timeout
            entry = f"unit {unit}: {exc}"
        if isinstance(entry, str):
            misses.append(f"{where} {entry}")
        else:
            found.append(make(unit, entry))
        if progress is not None:
            progress.step(0 if isinstance(entry, str) else 1)
    return found, misses


async def check_tcp(host: str, port: int, per_request: float) -> None:
    """Raise :class:`drivers.errors.DeviceUnreachable` with the reason if nothing listens."""
    await probe.check_tcp(host, port, per_request)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceProbe:
    """What one configured device answered (``entry`` as ``hems-agent scan`` prints it)."""

    name: str
    where: str
    entry: dict[str, Any] | None
    error: str | None = None
    problems: tuple[str, ...] = ()


def implausible(readings: dict[str, Any]) -> list[str]:
    """Values no working device reports: negative PV power, a charge level outside 0-100 %."""
    problems = []
    for name, reading in readings.items():
        value = reading.get("value")
        if not isinstance(value, int | float):
            continue
        if name in ("pv.power", "pv.dc_power") and value < 0:
            problems.append(f"{name} is negative ({value} W)")
        if name in ("battery.soc", "battery.soh") and not 0 <= value <= 100:
            problems.append(f"{name} is {value} %, outside 0-100 %")
    return problems


async def probe_device(config: AgentConfig, device: TcpDevice | RtuDevice) -> DeviceProbe:
    """Identify ``device`` and read every point once, within its deadline per request."""
    from drivers.errors import DriverError
    from drivers.transport import Bus

    if device.transport == "tcp":
        where = f"{device.host}:{device.port} unit {device.unit}"
    else:
        line = next(b for b in config.buses if b.name == device.bus)
        where = f"{line.port} unit {device.unit}"
    try:
        async with asyncio.timeout(device.timeout * 20):
            if device.transport == "tcp":
                await check_tcp(device.host, device.port, device.timeout)
                bus = Bus.tcp(device.host, device.port, timeout=device.timeout)
            else:
                bus = Bus.serial(line.port, baudrate=line.baud, parity=line.parity,
                                 stopbits=line.stopbits, timeout=device.timeout)
            async with bus:
                entry = await probe.scan_unit(bus, device.unit)
    except (DriverError, OSError, ValueError) as exc:
        return DeviceProbe(name=device.name, where=where, entry=None, error=str(exc))
    except TimeoutError:
        return DeviceProbe(name=device.name, where=where, entry=None,
                           error=f"no complete answer within {device.timeout * 20:.0f} s")
    if isinstance(entry, str):
        return DeviceProbe(name=device.name, where=where, entry=None, error=entry)
    return DeviceProbe(name=device.name, where=where, entry=entry,
                       problems=tuple(implausible(entry["readings"])))


async def probe_devices(config: AgentConfig) -> list[DeviceProbe]:
    """All configured devices at once (each bounded by its own deadline)."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(probe_device(config, d)) for d in config.devices]
    return [t.result() for t in tasks]


def choose(found: Sequence[T], answer: str) -> list[T]:
    """``all``, ``none`` or numbers such as ``1,3`` (as listed) → the chosen devices."""
    text = answer.strip().lower()
    if text in ("all", "a", "*"):
        return list(found)
    if text in ("none", "n", ""):
        return []
    picked: list[T] = []
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        if not part.isdigit() or not 1 <= int(part) <= len(found):
            raise ValueError(f"{part!r} is not one of the listed numbers 1..{len(found)}")
        if found[int(part) - 1] not in picked:
            picked.append(found[int(part) - 1])
    return picked


def device_specs(chosen: Sequence[Found], taken: Sequence[str] = ()) -> list[Entry]:
    """Config ``[[devices]]`` tables for the chosen devices, named by kind (inverter, ...)."""
    names = set(taken)
    specs: list[Entry] = []
    for f in chosen:
        name, n = f.kind, 2
        while name in names:
            name, n = f"{f.kind}-{n}", n + 1
        names.add(name)
        profile = f.entry.get("profile") or "sunspec"
        if f.transport == "tcp":
            specs.append({"name": name, "transport": "tcp", "host": f.host, "port": f.port,
                          "unit": f.unit, "profile": profile})
        else:
            specs.append({"name": name, "transport": "rtu", "serial": f.port, "unit": f.unit,
                          "profile": profile})
    return specs


def listing(found: Sequence[Found]) -> list[str]:
    """Numbered one-line summaries (the numbers :func:`choose` takes)."""
    lines = []
    for n, f in enumerate(found, 1):
        ident = f.entry.get("identity", {})
        lines.append(f"{n:>3}. {f.kind:<8} {f.where} unit {f.unit}: "
                     f"{ident.get('manufacturer') or '?'} {ident.get('model') or '?'}")
    return lines


def add_arguments(parser: argparse.ArgumentParser, link: Any) -> None:
    """The range options of ``hems-agent scan`` (``link``: its host/serial exclusive group)."""
    link.add_argument("--hosts", help="comma-separated Modbus TCP hosts to scan")
    link.add_argument("--cidr", help=f"network to scan, e.g. 192.168.1.0/24 (≤ {MAX_HOSTS} hosts)")
    parser.add_argument("--units", metavar="RANGE", help="unit ids to sweep, e.g. 1-247")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"hosts probed at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--select", metavar="LIST", help="devices to add: all, none or 1,3")
    parser.add_argument("--save", type=Path, metavar="FILE",
                        help="write the selected devices as JSON for provision --devices-from")


def main(args: argparse.Namespace) -> int:
    """Run a range scan or a unit sweep for ``hems-agent scan``."""
    try:
        units = parse_units(args.units) if args.units else list(args.unit or [1])
        result = asyncio.run(_run(args, units))
    except (ValueError, OSError) as exc:
        print(f"hems-agent scan: {exc}", file=sys.stderr)
        return 2
    if not result.found:
        print(f"hems-agent scan: no device found on {result.hosts} host(s)", file=sys.stderr)
        return 1
    return _present(args, result)


async def _run(args: argparse.Namespace, units: list[int]) -> ScanResult:
    if args.serial is not None:
        progress = Progress(len(units), f"units on {args.serial}")
        try:
            return await scan_line(args.serial, units=units, baudrate=args.baud,
                                   parity=args.parity, per_request=args.timeout, progress=progress)
        finally:
            progress.close()
    hosts = expand_targets([args.hosts] if args.hosts else [], [args.cidr] if args.cidr else [])
    progress = Progress(len(hosts), "hosts")
    try:
        return await scan_hosts(hosts, port=args.port, units=units, per_request=args.timeout,
                                concurrency=args.concurrency, progress=progress)
    finally:
        progress.close()


def _present(args: argparse.Namespace, result: ScanResult) -> int:
    found = list(result.found)
    if args.json:
        print(json.dumps({"devices": [{"index": n, "transport": f.transport, "where": f.where,
                                       **f.entry} for n, f in enumerate(found, 1)]},
                         ensure_ascii=False, indent=2))
    else:
        print("\n".join(listing(found)))
    answer = args.select
    if answer is None and args.save is not None and sys.stdin.isatty():
        answer = input("Devices to add (all, none, or numbers such as 1,3): ")
    if args.save is None:
        return 0
    try:
        chosen = choose(found, answer or "none")
    except ValueError as exc:
        print(f"hems-agent scan: --select: {exc}", file=sys.stderr)
        return 2
    args.save.write_text(json.dumps({"devices": device_specs(chosen)}, indent=2) + "\n",
                         encoding="utf-8")
    print(f"{len(chosen)} device(s) saved to {args.save}", file=sys.stderr)
    return 0
