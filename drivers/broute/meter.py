"""The smart meter over the B-route: join its PAN, read it with ECHONET Lite, keep the session.

Start-up: echo off (``SKSREG SFE 0``), ASCII ERXUDP (``WOPT 01`` only if ``ROPT`` says it is
off: it writes flash), ``SKSETPWD`` / ``SKSETRBID`` with the utility-issued secrets, an active
``SKSCAN`` (about two minutes on a real module) for the meter's beacon, ``SKLL64`` for its
address, ``SKSREG S2``/``S3`` (channel, PAN) and ``SKJOIN`` (EVENT 25 success, 24 failure).
Requests go out with ``SKSENDTO`` to UDP 3610 and come back as ERXUDP. EVENT 29 (session
lifetime expired) or 24/26/28 mark the session down and the next request joins again.

:class:`BrouteMeter` polls like :class:`drivers.echonet.device.EchonetDevice`: 0xE7 and the
cumulative 0xE0/0xE3 on intervals, pushed 0xEA/0xEB with the meter's own timestamps.
"""

from __future__ import annotations

import logging
import math
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from drivers.broute.sk import SkModule, parse_erxudp
from drivers.echonet import meter as meter_values
from drivers.echonet.client import get_result
from drivers.echonet.codec import CONTROLLER, Eoj, Esv, Frame, Property, decode, encode
from drivers.echonet.tables import MeterContext, decode_value, load_tables, raw_number, unit_kwh
from drivers.errors import DeviceProtocolError, DeviceUnreachable, DriverError
from drivers.models import DeviceIdentity, Quality, Reading

log = logging.getLogger(__name__)

METER = Eoj(class_code=0x0288, instance=0x01)
ECHONET_PORT = "0E1A"  # 3610
_SESSION_DOWN = ("EVENT 24", "EVENT 26", "EVENT 28", "EVENT 29")


def read_secret(path: Path, what: str) -> str:
    """Read a secret from a file that only its owner may read (mode 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DriverError(f"cannot read the {what} file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DriverError(f"the {what} file {path} is readable by others (mode "
                          f"{stat.S_IMODE(mode):04o}): chmod 600 it")
    if not text or any(c.isspace() for c in text):
        raise DriverError(f"the {what} file {path} is empty or contains spaces")
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class BrouteSettings:
    """How to reach the meter; the defaults suit real modules (scan and join take minutes)."""

    device: str
    route_b_id: str
    password: str
    scan_duration: int = 6  # SKSCAN duration exponent (6 ~ 0.6 s per channel)
    scan_attempts: int = 3  # scans with growing duration before giving up
    scan_timeout: float = 180.0
    join_timeout: float = 180.0
    request_timeout: float = 20.0  # one ECHONET Lite Get over Wi-SUN
    retries: int = 1
    power_interval: float = 10.0
    energy_interval: float = 60.0

    def __repr__(self) -> str:  # keep the secrets out of tracebacks and logs
        return f"BrouteSettings(device={self.device!r}, route_b_id=***, password=***)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pan:
    """A meter's PAN found by active scan."""

    channel: int
    pan_id: int
    mac: str
    lqi: int = 0


class BrouteMeter:
    """The smart meter on the B-route. ``async with BrouteMeter(settings, name="meter"):``."""

    def __init__(self, settings: BrouteSettings, *, name: str, module: SkModule | None = None,
                 pan: Pan | None = None) -> None:
        self.settings, self.name = settings, name
        self.module = module or SkModule(settings.device)
        self.module.on_line = self._unsolicited
        self.pan = pan
        self.address = ""  # the meter's link-local IPv6 address, from SKLL64
        self.identity = DeviceIdentity(manufacturer=None, model=None, serial=None,
                                       protocol="echonet-broute")
        self.context = MeterContext()
        self.joins = 0
        self._joined = False
        self._tid = 0
        self._replies: dict[int, Frame] = {}
        self._pushed: list[Reading] = []
        table = load_tables()[METER.class_code].by_epc()
        self._table = table
        self._polled = [table[0xE7], table[0xE0], table[0xE3]]
        self._next = [-math.inf] * len(self._polled)

    async def __aenter__(self) -> Self:
        await self.module.__aenter__()
        try:
            await self.connect()
        except BaseException:
            await self.module.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.module.__aexit__(None, None, None)

    async def connect(self) -> None:
        """Configure the module, scan (unless the PAN is known) and join; read D3/E1."""
        module = self.module
        async with module.lock:
            await module.command("SKSREG SFE 0")
            if (await module.command("ROPT")).split()[-1] != "01":
                await module.command("WOPT 01")
            await module.command(f"SKSETPWD {len(self.settings.password):X} "
                                 f"{self.settings.password}")
            await module.command(f"SKSETRBID {self.settings.route_b_id}")
            if self.pan is None:
                self.pan = await self._scan()
            self.address = await self._link_local(self.pan.mac)
            await module.command(f"SKSREG S2 {self.pan.channel:02X}")
            await module.command(f"SKSREG S3 {self.pan.pan_id:04X}")
            await self._join()
        await self._read_context()

    async def _scan(self) -> Pan:
        for attempt in range(self.settings.scan_attempts):
            found: dict[str, str] = {}

            def collect(line: str, found: dict[str, str] = found) -> bool:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("Channel", "Channel Page", "Pan ID", "Addr", "LQI"):
                    found[key.strip()] = value.strip()
                return line.startswith("EVENT 22")

            duration = self.settings.scan_duration + attempt
            await self.module.command(f"SKSCAN 2 FFFFFFFF {duration} 0")
            await self.module.expect(collect, deadline=self.settings.scan_timeout,
                                     what="end of scan (EVENT 22)")
            if {"Channel", "Pan ID", "Addr"} <= found.keys():
                return Pan(channel=int(found["Channel"], 16), pan_id=int(found["Pan ID"], 16),
                           mac=found["Addr"], lqi=int(found.get("LQI", "0"), 16))
        raise DeviceUnreachable(f"no smart meter beacon after {self.settings.scan_attempts} "
                                "scans: check the module's placement and the B-route ID")

    async def _link_local(self, mac: str) -> str:
        self.module.write(f"SKLL64 {mac}\r\n".encode("ascii"))
        return await self.module.expect(lambda s: s.count(":") == 7, deadline=5.0,
                                        what="IPv6 address from SKLL64")

    async def _join(self) -> None:
        await self.module.command(f"SKJOIN {self.address}")
        event = await self.module.expect(lambda s: s.startswith(("EVENT 24", "EVENT 25")),
                                         deadline=self.settings.join_timeout,
                                         what="PANA result (EVENT 24/25)")
        if event.startswith("EVENT 24"):
            raise DeviceUnreachable("B-route join refused (EVENT 24): check the ID and password")
        self._joined = True
        self.joins += 1
        log.info("B-route session up (join %d)", self.joins)

    def _unsolicited(self, line: str) -> None:
        if line.startswith(_SESSION_DOWN):
            if self._joined:
                log.info("B-route session down (%s)", line.split()[:2][-1])
            self._joined = False
        elif line.startswith("ERXUDP"):
            self._datagram(line)

    def _datagram(self, line: str) -> None:
        try:
            rx = parse_erxudp(line)
            frame = decode(rx.data)
        except DeviceProtocolError as exc:
            log.debug("B-route: dropped a datagram: %s", exc)
            return
        if rx.lport != 3610:
            return  # PANA and other traffic
        if frame.esv in (Esv.INF, Esv.INFC):
            self._push(frame)
        else:
            self._replies[frame.tid] = frame

    async def get(self, epcs: list[int]) -> dict[int, bytes | None]:
        """Get properties of the meter object; refused EPCs map to ``None``."""
        for attempt in range(self.settings.retries + 1):
            async with self.module.lock:
                if not self._joined:
                    await self._join()
                frame = await self._request(epcs)
            if frame is not None:
                return get_result(frame, METER, epcs)
            log.info("B-route: no reply (attempt %d)", attempt + 1)
        raise DeviceUnreachable(f"smart meter: no reply in {self.settings.retries + 1} "
                                f"attempt(s) of {self.settings.request_timeout} s")

    async def _request(self, epcs: list[int]) -> Frame | None:
        self._tid = self._tid % 0xFFFF + 1
        tid = self._tid
        self._replies.clear()  # late replies to earlier attempts
        payload = encode(Frame(tid=tid, seoj=CONTROLLER, deoj=METER, esv=Esv.GET,
                               properties=tuple(Property(epc=e) for e in epcs)))
        await self.module.command(f"SKSENDTO 1 {self.address} {ECHONET_PORT} 1 "
                                  f"{len(payload):04X}", payload=payload)
        try:
            await self.module.expect(lambda line: self._reply_or_down(line, tid),
                                     deadline=self.settings.request_timeout,
                                     what="reply from the meter", forward=False)
        except DeviceUnreachable:
            return None
        return self._replies.pop(tid, None)

    def _reply_or_down(self, line: str, tid: int) -> bool:
        self._unsolicited(line)
        return tid in self._replies or not self._joined

    async def _read_context(self) -> None:
        values = await self.get([0xD3, 0xE1, 0x8A, 0x8D])
        try:
            coefficient = raw_number(self._table[0xD3], values[0xD3]) if values[0xD3] else 1
            unit = unit_kwh(self._table[0xE1], values[0xE1]) if values[0xE1] else None
        except ValueError as exc:
            raise DeviceProtocolError(f"smart meter: bad coefficient or unit: {exc}") from exc
        self.context = MeterContext(coefficient=coefficient or 1, unit_kwh=unit)
        maker, serial = values[0x8A], values[0x8D]
        self.identity = DeviceIdentity(
            manufacturer=f"0x{maker.hex().upper()}" if maker else None, model=None,
            serial=serial.replace(b"\0", b"").decode("ascii", "replace").strip() if serial
            else None, protocol="echonet-broute")

    def _push(self, frame: Frame) -> None:
        for prop in frame.properties:
            entry = self._table.get(prop.epc)
            if entry is None or entry.decoder != "fixed_time":
                continue
            try:
                item = meter_values.decode_fixed_time(entry, prop.edt, self.context)
            except ValueError as exc:
                log.warning("%s: pushed %s", self.name, exc)
                continue
            self._pushed.append(meter_values.timed_reading(self.name, entry, item))

    def next_due(self) -> float:
        """Monotonic time at which :meth:`poll` next has work."""
        return min(self._next)

    async def poll(self, now: float) -> list[Reading]:
        """Read what is due at monotonic ``now`` (plus values pushed since the last poll)."""
        pushed, self._pushed = self._pushed, []
        due = [i for i, t in enumerate(self._next) if t <= now]
        if not due:
            return pushed
        values = await self.get([self._polled[i].code for i in due])
        ts = datetime.now(UTC)
        readings = []
        for i in due:
            entry = self._polled[i]
            interval = (self.settings.power_interval if entry.code == 0xE7
                        else self.settings.energy_interval)
            self._next[i] = now + interval
            readings.append(self._reading(entry.code, values[entry.code], ts))
        return pushed + readings

    def _reading(self, epc: int, edt: bytes | None, ts: datetime) -> Reading:
        entry = self._table[epc]
        assert entry.point is not None
        value: float | str | None = None
        quality = Quality.MISSING
        if edt is not None:
            try:
                value = decode_value(entry, edt, self.context)
                quality = Quality.GOOD if value is not None else Quality.MISSING
            except ValueError as exc:
                quality = Quality.ERROR
                log.warning("%s: %s", self.name, exc)
        return Reading(device=self.name, point=entry.point, kind=entry.kind, value=value,
                       unit=entry.unit, ts=ts, quality=quality)

    async def read_history(self, *, reverse: bool = False) -> list[Reading]:
        """0xE2 (or 0xE4): the 48 half-hour cumulative values of the day set in 0xE5."""
        entry = self._table[0xE4 if reverse else 0xE2]
        edt = (await self.get([entry.code]))[entry.code]
        if edt is None:
            return []
        today = datetime.now(meter_values.JST).date()
        try:
            items = meter_values.decode_history(entry, edt, self.context, today)
        except ValueError as exc:
            raise DeviceProtocolError(f"smart meter: {exc}") from exc
        return [meter_values.timed_reading(self.name, entry, item) for item in items]
