"""systemd's notify protocol in a few lines of stdlib: READY, WATCHDOG, STATUS, STOPPING.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon runs the same way
from a terminal, a test or a unit file.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket)."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
        self._status: str | None = None  # the last STATUS systemd received

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines; whether they were sent. Errors and a full queue are
        ignored (systemd may be restarting or busy; the next tick sends again)."""
        if self._address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never block the event loop: when the manager's queue is full (10 datagrams by
            # default) a blocking send waits until it reads, freezing the whole daemon.
            sock.setblocking(False)
            try:
                sock.connect(self._address)
                sock.sendall("\n".join(fields).encode())
            except OSError:
                return False
        return True

    def ready(self, status: str) -> None:
        if self.send("READY=1", f"STATUS={status}"):
            self._status = status

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, status: str) -> None:
        """Send ``STATUS`` when it differs from the last one systemd received (the daemon
        calls this every tick; an unchanged line costs a socket and a wake-up of systemd)."""
        if status != self._status and self.send(f"STATUS={status}"):
            self._status = status

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")


def watchdog_interval() -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds when systemd expects pings from this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
