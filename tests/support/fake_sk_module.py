"""A fake SK-command Wi-SUN module on a pty, with a smart meter behind it.

``dialect`` picks what it speaks (drivers/broute/dialects.py, docs/echonet.md): ``bp35a1``
(no side: SKSCAN with three arguments, SKSENDTO with five, ERXUDP with nine fields) or
``bp35c2`` (a side everywhere: four SKSCAN arguments, six SKSENDTO fields, ERXUDP with side and,
after ``SKSREG SA2 1``, RSSI; EVENT with side, EPANDESC with ``Side``). A command in the other
dialect's form gets ``FAIL ER06``, as a module answers a wrong argument count. Like both real
modules it takes commands ended by CR, LF or CRLF and answers ROPT/WOPT with CR alone;
``line_end`` sets how every other line ends (CRLF by default). SKVER, SKINFO (whose last field
tells the dialects apart) and SKRESET are answered too.

The driver opens ``fake.path`` (the pty's slave) like a USB serial device. The fake answers
the SK commands the B-route driver uses (echo until ``SKSREG SFE 0``), scans (EVENT 20,
EPANDESC, EVENT 22), joins (EVENT 25, or 24 with wrong credentials), turns ``SKSENDTO``
ECHONET Lite Gets into ERXUDP replies from an emulated 0x0288 object, pushes INF, and expires
the session on request (EVENT 29; the meter then ignores requests until the next join).

``forgeries`` go out before every genuine reply: ERXUDP lines with the request's TID from
another node, over the unsecured link, or with a wrong ESV or SEOJ, carrying other values.
"""

from __future__ import annotations

import asyncio
import os
import tty
from dataclasses import dataclass, field

from drivers.echonet.codec import Eoj, Esv, Frame, Property, decode, encode
from drivers.sim.echonet_emulator import EmulatedObject, smart_meter

METER_MAC = "001C640003A1B2C3"
METER_IP = "FE80:0000:0000:0000:021C:6400:03A1:B2C3"
OUR_IP = "FE80:0000:0000:0000:021D:1290:0003:0001"
OTHER_MAC = "001C6400DEADBEEF"
OTHER_IP = "FE80:0000:0000:0000:021C:6400:DEAD:BEEF"
OUR_MAC = "001D129000030001"
VERSIONS = {"bp35a1": "1.2.10", "bp35c2": "1.5.2"}  # what SKVER says (illustrative)
_SCAN_ARGS = {"bp35a1": 3, "bp35c2": 4}
_SENDTO_FIELDS = {"bp35a1": 6, "bp35c2": 7}  # SKSENDTO and its fields before the data
CHANNEL, PAN_ID = 0x21, 0x8888


@dataclass(frozen=True, slots=True, kw_only=True)
class Forgery:
    """A reply sent before the meter's, with the request's TID and these differences."""

    sender: str = METER_IP
    mac: str = METER_MAC
    secured: bool = True
    esv: Esv | None = None  # None: the genuine reply's
    seoj: Eoj | None = None
    values: dict[int, bytes] = field(default_factory=dict)  # EPC -> EDT instead of the meter's


class FakeSkModule:
    """``async with FakeSkModule(route_b_id, password) as fake:`` then open ``fake.path``."""

    def __init__(self, route_b_id: str, password: str, *, meter: EmulatedObject | None = None,
                 beacon: bool = True, dialect: str = "bp35a1", line_end: str = "\r\n",
                 skinfo: bool = True) -> None:
        if dialect not in _SCAN_ARGS:
            raise ValueError(f"no fake for dialect {dialect!r}")
        self.route_b_id, self.password = route_b_id, password
        self.dialect, self.line_end, self.skinfo = dialect, line_end, skinfo
        self.lines: list[str] = []  # every command line as received (SKSENDTO: its head)
        self.resets = 0
        self.failed: list[str] = []  # commands answered with FAIL (unknown, or bad form)
        self.registers: dict[str, str] = {}
        self.meter = meter or smart_meter(0x01, coefficient=1)
        self.beacon = beacon
        self.echo = True
        self.joined = False
        self.joins = 0
        self.commands: list[str] = []
        self.silent = False  # the meter answers nothing (lost radio frames)
        self.forgeries: list[Forgery] = []
        self._given: dict[str, str] = {}
        self._buffer = bytearray()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeSkModule:
        os.set_blocking(self._master, False)
        asyncio.get_running_loop().add_reader(self._master, self._readable)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        asyncio.get_running_loop().remove_reader(self._master)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        os.close(self._master)
        os.close(self._slave)

    @property
    def _side(self) -> str:
        return " 0" if self.dialect == "bp35c2" else ""

    def _out(self, *lines: str, end: str | None = None) -> None:
        end = self.line_end if end is None else end
        os.write(self._master, "".join(f"{line}{end}" for line in lines).encode("ascii"))

    def _later(self, delay: float, *lines: str) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            self._out(*lines)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _readable(self) -> None:
        try:
            self._buffer += os.read(self._master, 4096)
        except BlockingIOError:
            return
        while True:
            if self._buffer.startswith(b"SKSENDTO"):
                if not self._sendto():
                    return
                continue
            ends = [i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0]
            if not ends:
                return
            line = self._buffer[:min(ends)].decode("ascii")
            del self._buffer[:min(ends) + 1]
            self._command(line)

    def _sendto(self) -> bool:
        fields = _SENDTO_FIELDS[self.dialect]
        head = bytes(self._buffer).split(b" ", fields)
        if len(head) <= fields:
            return False
        length_field = head[fields - 1].decode("ascii", "replace")
        side_ok = self.dialect != "bp35c2" or head[5] in (b"0", b"1")
        if len(length_field) != 4 or not side_ok:  # the other dialect's form
            self.lines.append(b" ".join(head[:fields]).decode("ascii", "replace"))
            self._buffer.clear()
            self._fail("SKSENDTO", "ER06")
            return True
        length = int(length_field, 16)
        offset = sum(len(p) + 1 for p in head[:fields])
        if len(self._buffer) < offset + length:
            return False
        payload = bytes(self._buffer[offset:offset + length])
        del self._buffer[:offset + length]
        self.commands.append("SKSENDTO")
        self.lines.append(b" ".join(head[:fields]).decode("ascii"))
        self._out(f"EVENT 21 {METER_IP}{self._side} 00", "OK")
        if self.joined and not self.silent:
            self._reply(decode(payload))
        return True

    def _reply(self, request: Frame) -> None:
        props = [Property(epc=p.epc, edt=self.meter.read(p.epc) or b"")
                 for p in request.properties]
        esv = Esv.GET_SNA if any(not p.edt for p in props) else Esv.GET_RES
        genuine = Frame(tid=request.tid, seoj=self.meter.eoj, deoj=request.seoj, esv=esv,
                        properties=tuple(props))
        for forgery in self.forgeries:
            self.erxudp(Frame(
                tid=request.tid, seoj=forgery.seoj or genuine.seoj, deoj=request.seoj,
                esv=forgery.esv or esv, properties=tuple(
                    Property(epc=p.epc, edt=forgery.values.get(p.epc, p.edt)) for p in props)),
                sender=forgery.sender, mac=forgery.mac, secured=forgery.secured)
        self.erxudp(genuine)

    def erxudp(self, frame: Frame, *, sender: str = METER_IP, mac: str = METER_MAC,
               secured: bool = True) -> None:
        """Deliver an ECHONET Lite frame (ASCII-hex ERXUDP, BP35A1 layout), by default from
        the meter over the secured link."""
        data = encode(frame)
        flags = f"{int(secured)}"
        if self.dialect == "bp35c2":  # the side; RSSI first when SA2 is 1
            flags = f"{'E1 ' if self.registers.get('SA2') == '1' else ''}{flags} 0"
        self._out(f"ERXUDP {sender} {OUR_IP} 0E1A 0E1A {mac} {flags} {len(data):04X} "
                  f"{data.hex().upper()}")

    def line(self, text: str) -> None:
        """Send any line, as if the module had printed it."""
        self._out(text)

    def push(self, epcs: list[int], *, values: dict[int, bytes] | None = None,
             sender: str = METER_IP, mac: str = METER_MAC, secured: bool = True) -> None:
        """The meter sends an INF of ``epcs`` (e.g. 0xEA every 30 minutes); ``values``,
        ``sender``, ``mac`` and ``secured`` forge one from elsewhere."""
        edt = {**self.meter.values, **(values or {})}
        self.erxudp(Frame(tid=0x4242, seoj=self.meter.eoj,
                          deoj=Eoj(class_code=0x05FF, instance=1), esv=Esv.INF,
                          properties=tuple(Property(epc=e, edt=edt[e]) for e in epcs)),
                    sender=sender, mac=mac, secured=secured)

    def expire(self) -> None:
        """The PANA session's lifetime ends (EVENT 29)."""
        self.joined = False
        self._out(f"EVENT 29 {METER_IP}{self._side}")

    def _command(self, line: str) -> None:
        if not line:
            return
        self.commands.append(line.split()[0])
        self.lines.append(line)
        if self.echo:
            self._out(line)
        words = line.split()
        handler = getattr(self, "_do_" + words[0].lower(), None)
        if handler is None:
            self._fail(words[0], "ER04")
        else:
            handler(words[1:])

    def _fail(self, command: str, code: str) -> None:
        self.failed.append(command)
        self._out(f"FAIL {code}")

    def _do_sksreg(self, args: list[str]) -> None:
        if args[0] == "SFE":
            self.echo = args[1] != "0"
        self.registers[args[0]] = args[1]
        self._out("OK")

    def _do_ropt(self, args: list[str]) -> None:
        self._out("OK 01", end="\r")  # CR alone, as BP35A1 and BP35C0 answer it

    def _do_wopt(self, args: list[str]) -> None:
        self._out("OK", end="\r")

    def _do_skver(self, args: list[str]) -> None:
        self._out(f"EVER {VERSIONS[self.dialect]}", "OK")

    def _do_skinfo(self, args: list[str]) -> None:
        if not self.skinfo:
            self._fail("SKINFO", "ER04")
            return
        last = "0" if self.dialect == "bp35c2" else "FFFE"  # side, or the short address
        self._out(f"EINFO {OUR_IP} {OUR_MAC} {self.registers.get('S2', '21')} "
                  f"{self.registers.get('S3', 'FFFF')} {last}", "OK")

    def _do_skreset(self, args: list[str]) -> None:
        self.resets += 1
        self.echo, self.joined = True, False
        self._given.clear()
        self.registers.clear()
        self._out("OK")

    def _do_sksetpwd(self, args: list[str]) -> None:
        self._given["password"] = args[1]
        self._out("OK")

    def _do_sksetrbid(self, args: list[str]) -> None:
        self._given["id"] = args[0]
        self._out("OK")

    def _do_skscan(self, args: list[str]) -> None:
        if len(args) != _SCAN_ARGS[self.dialect]:
            self._fail("SKSCAN", "ER06")
            return
        self._out("OK")
        side = ["  Side:0"] if self.dialect == "bp35c2" else []
        lines = [f"EVENT 20 {METER_IP}{self._side}", "EPANDESC", f"  Channel:{CHANNEL:02X}",
                 "  Channel Page:09", f"  Pan ID:{PAN_ID:04X}", f"  Addr:{METER_MAC}",
                 "  LQI:E1", *side, "  PairID:00A1B2C3"] if self.beacon else []
        self._later(0.05, *lines, f"EVENT 22 {OUR_IP}{self._side}")

    def _do_skll64(self, args: list[str]) -> None:
        self._out(METER_IP if args[0] == METER_MAC else "FE80:0000:0000:0000:0000:0000:0000:0000")

    def _do_skjoin(self, args: list[str]) -> None:
        self._out("OK")
        good = (self._given.get("id") == self.route_b_id
                and self._given.get("password") == self.password and args[0] == METER_IP)
        self.joined = good
        self.joins += good
        self._later(0.05, f"EVENT 21 {METER_IP}{self._side} 02",
                    f"EVENT {'25' if good else '24'} {METER_IP}{self._side}")

    def _do_skterm(self, args: list[str]) -> None:
        self._out("OK")
        event = "27" if self.joined else "28"  # session closed, or there was none
        self.joined = False
        self._later(0.01, f"EVENT {event} {METER_IP}{self._side}")
