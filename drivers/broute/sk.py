"""The SK command line protocol of Wi-SUN B-route modules (ROHM BP35A1/BP35C2, Tessera RL7023
Stick-D class) over a serial line, asyncio-native.

The line is a file descriptor watched with ``loop.add_reader`` (pyserial only opens and
configures it), so every wait has an asyncio deadline and nothing runs in a thread. Lines go
into one queue; :meth:`SkModule.expect` takes lines until one matches and hands the others to
``on_line`` (ERXUDP notifications, EVENT 29 session expiry, ...). One command at a time.
Secrets (B-route ID and password) are never logged: commands carrying them are logged redacted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from drivers.errors import DeviceProtocolError, DeviceUnreachable

log = logging.getLogger(__name__)

_SECRET_COMMANDS = ("SKSETPWD", "SKSETRBID")
MAX_LINE = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class RxUdp:
    """One ERXUDP line: a UDP datagram the module received."""

    sender: str
    dest: str
    rport: int
    lport: int
    mac: str
    data: bytes


def parse_erxudp(line: str) -> RxUdp:
    """Parse ``ERXUDP <sender> <dest> <rport> <lport> <mac> <secured> [<side>] <len> <hex>``
    (BP35C2 adds the side field); the data must be in ASCII hex (WOPT 01)."""
    parts = line.split()
    if len(parts) not in (9, 10) or parts[0] != "ERXUDP":
        raise DeviceProtocolError(f"malformed ERXUDP line ({len(parts)} fields)")
    try:
        length = int(parts[-2], 16)
        data = bytes.fromhex(parts[-1])
        rport, lport = int(parts[3], 16), int(parts[4], 16)
    except ValueError as exc:
        raise DeviceProtocolError(f"malformed ERXUDP line: {exc}") from None
    if len(data) != length:
        raise DeviceProtocolError(f"ERXUDP says {length} bytes but carries {len(data)} "
                                  "(is the module in ASCII mode, WOPT 01?)")
    return RxUdp(sender=parts[1], dest=parts[2], rport=rport, lport=lport, mac=parts[5],
                 data=data)


def redact(line: str) -> str:
    """A command as it may be logged."""
    return line.split()[0] + " ***" if line.startswith(_SECRET_COMMANDS) else line


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
        while (end := self._buffer.find(b"\r\n")) >= 0:
            line = self._buffer[:end].decode("ascii", errors="replace").strip()
            del self._buffer[:end + 2]
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

    async def command(self, line: str, *, deadline: float = 5.0,
                      payload: bytes = b"") -> str:
        """Send ``line`` (plus binary ``payload``, for SKSENDTO) and wait for ``OK``."""
        log.debug("B-route > %s", redact(line))
        if payload:
            self.write(line.encode("ascii") + b" " + payload)
        else:
            self.write(line.encode("ascii") + b"\r\n")
        return await self.expect(lambda s: s == "OK" or s.startswith("OK "), deadline=deadline,
                                 what=f"OK to {line.split()[0]}")
