"""The SK command line protocol of Wi-SUN B-route modules (ROHM BP35A1/BP35C2, Tessera RL7023
Stick-D class) over a serial line, asyncio-native.

The line is a file descriptor watched with ``loop.add_reader`` (pyserial only opens and
configures it), so every wait has an asyncio deadline and nothing runs in a thread. Lines
(ended by CR, LF or CRLF: see :mod:`drivers.broute.dialects`) go into one queue;
:meth:`SkModule.expect` takes lines until one matches and hands the others to ``on_line``
(ERXUDP notifications, EVENT 29 session expiry, ...). One command at a time.
Secrets (B-route ID and password) and addresses are never logged: commands are logged redacted.

The line parsers (:func:`parse_erxudp` in the module's dialect, :func:`parse_event`,
:func:`parse_epandesc`, :func:`ipv6`) check every field and raise only
:class:`DeviceProtocolError`, whatever the line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from drivers.broute.dialects import BP35A1, Dialect
from drivers.errors import DeviceProtocolError, DeviceUnreachable

log = logging.getLogger(__name__)

_SECRET_COMMANDS = ("SKSETPWD", "SKSETRBID")
MAX_LINE = 4096


_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_MAC = re.compile(r"[0-9A-Fa-f]{16}")
_IPV6 = re.compile(r"[0-9A-Fa-f]{1,4}(:[0-9A-Fa-f]{1,4}){7}")
_HEX_FIELD = re.compile(r"[0-9A-Fa-f]{1,4}")
_EVENT_CODE = re.compile(r"[0-9A-Fa-f]{2}")
_LINE_END = re.compile(rb"[\r\n]")


@dataclass(frozen=True, slots=True, kw_only=True)
class RxUdp:
    """One ERXUDP line: a UDP datagram the module received.

    ``sender`` is the IPv6 address in the module's own form (eight groups of four upper-case
    hex digits), ``mac`` the sender's 64-bit MAC in upper-case hex; ``secured`` is true when
    the datagram came over the PANA-secured link (SEC=1).
    """

    sender: str
    dest: str
    rport: int
    lport: int
    mac: str
    secured: bool
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SkEvent:
    """One ``EVENT <code> <sender> [<side>] [<param>]`` line; ``sender`` as in :class:`RxUdp`."""

    code: int
    sender: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pan:
    """A meter's PAN found by active scan (the EPANDESC fields)."""

    channel: int
    pan_id: int
    mac: str
    lqi: int = 0


def ipv6(text: str, what: str) -> str:
    """``text`` as an IPv6 address in the module's form, or :class:`DeviceProtocolError` naming
    ``what`` (never the text: addresses are personal data)."""
    if _IPV6.fullmatch(text) is None:
        raise DeviceProtocolError(f"{what} is not an IPv6 address of eight hex groups")
    try:
        return ipaddress.IPv6Address(text).exploded.upper()
    except ValueError:
        raise DeviceProtocolError(f"{what} is not an IPv6 address") from None


def _hex(text: str, pattern: re.Pattern[str], what: str) -> int:
    if pattern.fullmatch(text) is None:
        raise DeviceProtocolError(f"malformed {what}")
    return int(text, 16)


def parse_erxudp(line: str, dialect: Dialect = BP35A1) -> RxUdp:
    """Parse an ERXUDP line of ``dialect``; the data must be in ASCII hex (WOPT 01).

    BP35A1: ``ERXUDP <sender> <dest> <rport> <lport> <mac> <secured> <len> <hex>``;
    BP35C0/C2: ``... <mac> [<rssi>] <secured> <side> <len> <hex>`` (RSSI when SA2 is 1).
    Every field is checked (ports and length: 4 hex digits, MAC: 16, secured: 0 or 1, RSSI and
    side: hex); any failure is a :class:`DeviceProtocolError` naming the field.
    """
    parts = line.split()
    at = dialect.secured_at(len(parts))
    if at is None or parts[0] != "ERXUDP":
        need = " or ".join(str(n) for n, _ in dialect.erxudp)
        raise DeviceProtocolError(f"malformed ERXUDP line ({len(parts)} fields, need {need} "
                                  f"for {dialect.name})")
    sender = ipv6(parts[1], "ERXUDP sender")
    dest = ipv6(parts[2], "ERXUDP destination")
    rport = _hex(parts[3], _HEX4, "ERXUDP remote port")
    lport = _hex(parts[4], _HEX4, "ERXUDP local port")
    if _MAC.fullmatch(parts[5]) is None:
        raise DeviceProtocolError("malformed ERXUDP sender MAC (need 16 hex digits)")
    secured = parts[at]
    if secured not in ("0", "1"):
        raise DeviceProtocolError("malformed ERXUDP secured flag (need 0 or 1)")
    extra = [p for i, p in enumerate(parts[6:-2], 6) if i != at]
    if any(_HEX_FIELD.fullmatch(p) is None for p in extra):
        raise DeviceProtocolError("malformed ERXUDP RSSI or side field")
    length = _hex(parts[-2], _HEX4, "ERXUDP data length (need 4 hex digits)")
    if len(parts[-1]) != 2 * length:
        raise DeviceProtocolError(f"ERXUDP says {length} bytes but carries {len(parts[-1])} "
                                  "hex digits (is the module in ASCII mode, WOPT 01?)")
    try:
        data = bytes.fromhex(parts[-1])
    except ValueError:
        raise DeviceProtocolError("ERXUDP data is not hex (is the module in ASCII mode, "
                                  "WOPT 01?)") from None
    return RxUdp(sender=sender, dest=dest, rport=rport, lport=lport, mac=parts[5].upper(),
                 secured=secured == "1", data=data)


def parse_event(line: str) -> SkEvent:
    """Parse ``EVENT <code> <sender> [<side>] [<param>]`` (BP35A1: no side; BP35C2: side)."""
    parts = line.split()
    if not 3 <= len(parts) <= 5 or parts[0] != "EVENT":
        raise DeviceProtocolError(f"malformed EVENT line ({len(parts)} fields, need 3 to 5)")
    code = _hex(parts[1], _EVENT_CODE, "EVENT code (need 2 hex digits)")
    sender = ipv6(parts[2], "EVENT sender")
    if any(_HEX_FIELD.fullmatch(p) is None for p in parts[3:]):
        raise DeviceProtocolError("malformed EVENT side or parameter")
    return SkEvent(code=code, sender=sender)


def parse_epandesc(fields: Mapping[str, str]) -> Pan:
    """A :class:`Pan` from the ``key:value`` lines of one EPANDESC block."""
    missing = [k for k in ("Channel", "Pan ID", "Addr") if k not in fields]
    if missing:
        raise DeviceProtocolError(f"EPANDESC without {', '.join(missing)}")
    channel = _hex(fields["Channel"], _EVENT_CODE, "EPANDESC Channel (need 2 hex digits)")
    pan_id = _hex(fields["Pan ID"], _HEX4, "EPANDESC Pan ID (need 4 hex digits)")
    if _MAC.fullmatch(fields["Addr"]) is None:
        raise DeviceProtocolError("malformed EPANDESC Addr (need 16 hex digits)")
    lqi = _hex(fields.get("LQI", "00"), _EVENT_CODE, "EPANDESC LQI (need 2 hex digits)")
    return Pan(channel=channel, pan_id=pan_id, mac=fields["Addr"].upper(), lqi=lqi)


def is_ipv6_line(line: str) -> bool:
    """True for a line that is only an IPv6 address (the answer to ``SKLL64``)."""
    return _IPV6.fullmatch(line) is not None


def redact(line: str) -> str:
    """A command as it may be logged: no secrets, and no addresses (the meter's MAC and the
    IPv6 address made from it identify the household's meter)."""
    if line.startswith(_SECRET_COMMANDS):
        return line.split()[0] + " ***"
    return " ".join("<addr>" if _IPV6.fullmatch(word) or _MAC.fullmatch(word) else word
                    for word in line.split(" "))


Opener = Callable[[str, int], Any]
"""Opens the serial device: (path, baudrate) -> object with ``fileno()`` and ``close()``."""


def _open_serial(path: str, baudrate: int) -> Any:
    import serial  # pyserial; imported here so the LAN driver does not load it

    try:
        return serial.Serial(path, baudrate, timeout=0, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        raise DeviceUnreachable(f"cannot open B-route module {path}: {exc}") from exc


class SkModule:
    """A serial line to an SK-command module. ``async with SkModule(path) as module:``."""

    def __init__(self, path: str, *, baudrate: int = 115200, opener: Opener = _open_serial,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.path, self.baudrate = path, baudrate
        self.on_line = on_line
        self._opener = opener
        self._port: Any = None
        self._fd = -1
        self._buffer = bytearray()
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._closed = False
        self.lock = asyncio.Lock()  # one command (and its awaited events) at a time

    async def __aenter__(self) -> Self:
        self._port = self._opener(self.path, self.baudrate)
        self._fd = self._port.fileno()
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
        if self._port is not None:
            self._port.close()
        self._fd, self._port = -1, None

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            chunk = b""
            log.warning("B-route module %s: read failed: %s", self.path, exc)
        if not chunk:  # unplugged: wake every waiter
            asyncio.get_running_loop().remove_reader(self._fd)
            self._closed = True
            self._lines.put_nowait("")
            return
        self._buffer += chunk
        # A line ends at CR, LF or CRLF: a BP35A1 answers ROPT and WOPT with "OK 01" and CR
        # alone, every other line with CRLF (the LF of a CRLF then ends an empty line).
        while (match := _LINE_END.search(self._buffer)) is not None:
            line = self._buffer[:match.start()].decode("ascii", errors="replace").strip()
            del self._buffer[:match.end()]
            if line:
                self._lines.put_nowait(line)
        if len(self._buffer) > MAX_LINE:
            self._buffer.clear()

    def write(self, data: bytes) -> None:
        """Write raw bytes to the module."""
        if self._fd < 0 or self._closed:
            raise DeviceUnreachable(f"B-route module {self.path} is not open")
        try:
            os.write(self._fd, data)
        except OSError as exc:
            raise DeviceUnreachable(f"B-route module {self.path}: write failed: {exc}") from exc

    async def expect(self, match: Callable[[str], bool], *, deadline: float,
                     what: str, forward: bool = True) -> str:
        """The next line for which ``match`` is true; other lines go to ``on_line`` (unless
        ``forward`` is false: then ``match`` has dealt with them)."""
        try:
            async with asyncio.timeout(deadline):
                while True:
                    line = await self._lines.get()
                    if self._closed and line == "":
                        raise DeviceUnreachable(f"B-route module {self.path} went away")
                    if match(line):
                        return line
                    if line.startswith("FAIL"):
                        raise DeviceProtocolError(f"B-route module: {line} while waiting for "
                                                  f"{what}")
                    if forward and self.on_line is not None and not line.startswith("SK"):
                        self.on_line(line)  # SK...: the module echoing a command
        except TimeoutError:
            raise DeviceUnreachable(f"B-route module {self.path}: no {what} within "
                                    f"{deadline} s") from None

    async def query(self, line: str, answer: str, *, deadline: float = 5.0) -> str:
        """Send ``line`` and return the line that starts with ``answer`` (``EINFO`` to
        ``SKINFO``, ``EVER`` to ``SKVER``) once the ``OK`` after it has come."""
        log.debug("B-route > %s", redact(line))
        self.write(line.encode("ascii") + b"\r\n")
        found = await self.expect(lambda s: s.split(" ")[0] == answer, deadline=deadline,
                                  what=f"{answer} to {line}")
        await self.expect(lambda s: s == "OK" or s.startswith("OK "), deadline=deadline,
                          what=f"OK to {line}")
        return found

    async def command(self, line: str, *, deadline: float = 5.0, payload: bytes = b"",
                      end: bytes = b"\r\n") -> str:
        """Send ``line`` ended by ``end`` (or followed by binary ``payload``, for SKSENDTO) and
        wait for ``OK``."""
        log.debug("B-route > %s", redact(line))
        if payload:
            self.write(line.encode("ascii") + b" " + payload)
        else:
            self.write(line.encode("ascii") + end)
        return await self.expect(lambda s: s == "OK" or s.startswith("OK "), deadline=deadline,
                                 what=f"OK to {line.split()[0]}")
