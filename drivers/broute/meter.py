"""The smart meter over the B-route: join its PAN, read it with ECHONET Lite, keep the session.

Start-up: echo off (``SKSREG SFE 0``), the module's dialect (``SKVER`` for the log, ``SKINFO``
to tell a BP35A1 from a BP35C0/C2, unless ``module`` names it; see
:mod:`drivers.broute.dialects`), ASCII ERXUDP (``WOPT 01`` only if ``ROPT`` says it is
off: it writes flash), ``SKSETPWD`` / ``SKSETRBID`` with the utility-issued secrets, an active
``SKSCAN`` (about two minutes on a real module) for the meter's beacon, ``SKLL64`` for its
address, ``SKSREG S2``/``S3`` (channel, PAN) and ``SKJOIN`` (EVENT 25 success, 24 failure).
Requests go out with ``SKSENDTO`` to UDP 3610 and come back as ERXUDP. EVENT 29 (session
lifetime expired) or 24/26/28 mark the session down and the next request joins again.

Only the joined meter is heard: an ERXUDP to UDP 3610 is used only if it comes from the
meter's link-local address and MAC (learned by scan and ``SKLL64``) over the secured link
(SEC=1); a reply only if it also has the request's TID, Get_Res/Get_SNA and SEOJ 0x028801.
Anything else is dropped and counted in :class:`BrouteStats`; it never becomes a reading.

:class:`BrouteMeter` polls like :class:`drivers.echonet.device.EchonetDevice`: 0xE7 and the
cumulative 0xE0/0xE3 on intervals, pushed 0xEA/0xEB with the meter's own timestamps.
"""

from __future__ import annotations

import logging
import math
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from drivers.broute.dialects import BP35A1, DIALECTS, Dialect, dialect_from_einfo
from drivers.broute.sk import (
    Pan,
    RxUdp,
    SkModule,
    ipv6,
    is_ipv6_line,
    parse_epandesc,
    parse_erxudp,
    parse_event,
)
from drivers.echonet import meter as meter_values
from drivers.echonet.client import answers, get_result, same_object
from drivers.echonet.codec import (
    CONTROLLER,
    NOTIFICATIONS,
    Eoj,
    Esv,
    Frame,
    Property,
    decode,
    encode,
)
from drivers.echonet.tables import MeterContext, decode_value, load_tables, raw_number, unit_kwh
from drivers.errors import DeviceProtocolError, DeviceUnreachable, DriverError
from drivers.models import DeviceIdentity, Quality, Reading

log = logging.getLogger(__name__)

METER = Eoj(class_code=0x0288, instance=0x01)
ECHONET_PORT = "0E1A"  # 3610
_SESSION_DOWN = frozenset({0x24, 0x26, 0x28, 0x29})

__all__ = ["BrouteMeter", "BrouteSettings", "BrouteStats", "Pan", "read_secret"]


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
    module: str = "auto"  # a name in drivers.broute.dialects.DIALECTS, or auto: ask SKINFO
    scan_duration: int = 6  # SKSCAN duration exponent (6 ~ 0.6 s per channel)
    scan_attempts: int = 3  # scans with growing duration before giving up
    scan_timeout: float = 180.0
    join_timeout: float = 180.0
    request_timeout: float = 20.0  # one ECHONET Lite Get over Wi-SUN
    retries: int = 1
    power_interval: float = 10.0
    energy_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.module != "auto" and self.module not in DIALECTS:
            raise ValueError(f"B-route module {self.module!r} is not auto or one of "
                             f"{', '.join(DIALECTS)}")

    def __repr__(self) -> str:  # keep the secrets out of tracebacks and logs
        return f"BrouteSettings(device={self.device!r}, route_b_id=***, password=***)"


@dataclass(slots=True)
class BrouteStats:
    """Counters since the meter object was made: what was dropped, never read."""

    refused: int = 0  # ECHONET Lite datagrams not from the joined meter or not secured
    mismatched: int = 0  # from the meter, but answering no outstanding request
    garbled: int = 0  # lines or frames that did not parse
    warned: bool = field(default=False, repr=False)


class BrouteMeter:
    """The smart meter on the B-route. ``async with BrouteMeter(settings, name="meter"):``."""

    def __init__(self, settings: BrouteSettings, *, name: str, module: SkModule | None = None,
                 pan: Pan | None = None) -> None:
        self.settings, self.name = settings, name
        self.module = module or SkModule(settings.device)
        self.module.on_line = self._unsolicited
        self.pan = pan
        self.address = ""  # the meter's link-local IPv6 address, from SKLL64
        self.dialect: Dialect = BP35A1  # until connect() has asked the module
        self.identity = DeviceIdentity(manufacturer=None, model=None, serial=None,
                                       protocol="echonet-broute")
        self.context = MeterContext()
        self.joins = 0
        self._joined = False
        self.stats = BrouteStats()
        self._tid = 0
        self._asked: Frame | None = None  # the request in flight
        self._reply: Frame | None = None
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
            self.dialect = await self._dialect()
            end = self.dialect.option_end
            if (await module.command("ROPT", end=end)).split()[-1] != "01":
                await module.command("WOPT 01", end=end)
            await module.command(f"SKSETPWD {len(self.settings.password):X} "
                                 f"{self.settings.password}")
            await module.command(f"SKSETRBID {self.settings.route_b_id}")
            if self.pan is None:
                self.pan = await self._scan()
            self.address = ""  # hear nobody until SKLL64 has named the meter
            self.address = await self._link_local(self.pan.mac)
            await module.command(f"SKSREG S2 {self.pan.channel:02X}")
            await module.command(f"SKSREG S3 {self.pan.pan_id:04X}")
            await self._join()
        await self._read_context()

    async def _dialect(self) -> Dialect:
        if self.settings.module != "auto":
            return DIALECTS[self.settings.module]
        version = (await self.module.query("SKVER", "EVER")).split()[-1]
        try:
            einfo = await self.module.query("SKINFO", "EINFO")
        except DeviceProtocolError as exc:  # e.g. FAIL ER04: no SKINFO on this module
            raise DeviceProtocolError(f"{exc}: cannot tell the module's dialect; set [broute] "
                                      f"module to one of {', '.join(DIALECTS)}") from exc
        dialect = dialect_from_einfo(einfo)
        log.info("B-route module: SK stack %s, %s dialect (%s)", version, dialect.name,
                 dialect.modules)
        return dialect

    async def _scan(self) -> Pan:
        for attempt in range(self.settings.scan_attempts):
            found: dict[str, str] = {}

            def collect(line: str, found: dict[str, str] = found) -> bool:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("Channel", "Channel Page", "Pan ID", "Addr", "LQI"):
                    found[key.strip()] = value.strip()
                return line.startswith("EVENT 22")

            duration = self.settings.scan_duration + attempt
            await self.module.command(self.dialect.scan_command(duration))
            await self.module.expect(collect, deadline=self.settings.scan_timeout,
                                     what="end of scan (EVENT 22)")
            if {"Channel", "Pan ID", "Addr"} <= found.keys():
                return parse_epandesc(found)
        raise DeviceUnreachable(f"no smart meter beacon after {self.settings.scan_attempts} "
                                "scans: check the module's placement and the B-route ID")

    async def _link_local(self, mac: str) -> str:
        self.module.write(f"SKLL64 {mac}\r\n".encode("ascii"))
        line = await self.module.expect(is_ipv6_line, deadline=5.0,
                                        what="IPv6 address from SKLL64")
        return ipv6(line, "SKLL64 answer")

    def _join_result(self, line: str) -> bool:
        if not line.startswith("EVENT"):
            return False
        try:
            event = parse_event(line)
        except DeviceProtocolError:
            return False
        return event.code in (0x24, 0x25) and event.sender == self.address

    async def _join(self) -> None:
        await self.module.command(f"SKJOIN {self.address}")
        event = await self.module.expect(self._join_result, deadline=self.settings.join_timeout,
                                         what="PANA result (EVENT 24/25) from the meter")
        if event.split()[1] == "24":
            raise DeviceUnreachable("B-route join refused (EVENT 24): check the ID and password")
        self._joined = True
        self.joins += 1
        log.info("B-route session up (join %d)", self.joins)

    def _unsolicited(self, line: str) -> None:
        """Handle a line nobody waits for; never raises (a bad line is counted and dropped)."""
        try:
            if line.startswith("EVENT"):
                event = parse_event(line)
                if event.code in _SESSION_DOWN:
                    if self._joined:
                        log.info("B-route session down (EVENT %02X)", event.code)
                    self._joined = False
            elif line.startswith("ERXUDP"):
                self._datagram(parse_erxudp(line, self.dialect))
        except DeviceProtocolError as exc:
            self.stats.garbled += 1
            log.debug("B-route: dropped a line: %s", exc)

    def _from_meter(self, rx: RxUdp) -> bool:
        return (bool(self.address) and rx.sender == self.address and rx.secured
                and self.pan is not None and rx.mac == self.pan.mac.upper())

    def _datagram(self, rx: RxUdp) -> None:
        if rx.lport != 3610:
            return  # PANA and other traffic
        if not self._from_meter(rx):
            self.stats.refused += 1
            if not self.stats.warned:  # once: it may be a neighbour's meter, or an attack
                self.stats.warned = True
                log.warning("%s: dropped an ECHONET Lite datagram that was not from the joined "
                            "meter or not secured (further ones are only counted)", self.name)
            return
        frame = decode(rx.data)
        if frame.esv in NOTIFICATIONS:
            if same_object(METER, frame.seoj):
                self._push(frame)
        elif self._asked is not None and answers(self._asked, frame):
            self._reply = frame
        else:
            self.stats.mismatched += 1
            log.debug("B-route: dropped ESV 0x%02X from 0x%04X%02X: answers no request",
                      frame.esv, frame.seoj.class_code, frame.seoj.instance)

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
        request = Frame(tid=self._tid, seoj=CONTROLLER, deoj=METER, esv=Esv.GET,
                        properties=tuple(Property(epc=e) for e in epcs))
        payload = encode(request)
        self._asked, self._reply = request, None  # a late reply to an earlier TID is refused
        try:
            await self.module.command(
                self.dialect.sendto_command(self.address, ECHONET_PORT, len(payload)),
                payload=payload)
            if self._reply is None:  # it may have come before the OK
                await self.module.expect(self._reply_or_down,
                                         deadline=self.settings.request_timeout,
                                         what="reply from the meter", forward=False)
        except DeviceUnreachable:
            return None
        finally:
            self._asked = None
        return self._reply

    def _reply_or_down(self, line: str) -> bool:
        self._unsolicited(line)
        return self._reply is not None or not self._joined

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
