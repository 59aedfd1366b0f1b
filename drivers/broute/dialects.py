"""The SK command dialects of Wi-SUN B-route modules, as data.

Two dialects are in use. ``bp35a1`` (ROHM BP35A1, and the Tessera RL7023 Stick-D/IPS built on
it) has no "side" (which of two radio interfaces): ``SKSCAN`` takes three arguments,
``SKSENDTO`` five before the data, and ERXUDP carries nine fields. ``bp35c2`` (ROHM BP35C0 and
the BP35C2 dongle built on it, and the RL7023 Stick-D/DSS) adds the side: a fourth ``SKSCAN``
argument, a SIDE field in ``SKSENDTO`` before the length, and a side in ERXUDP after SECURED
(ten fields; eleven when register SA2 is 1, which puts the frame's RSSI before SECURED).
Both end ``ROPT``/``WOPT`` with CR alone and answer them with ``OK 01`` and CR alone (they
accept CRLF too). docs/echonet.md lists each difference with its public source.

The module is told apart by ``SKINFO``: its last EINFO field is the 16-bit short address on
a BP35A1 (``FFFE``: none) and the side (0 or 1) on a BP35C0/C2.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.errors import DeviceProtocolError


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What differs between SK dialects; the command fields are ``str.format`` templates."""

    name: str
    modules: str
    scan: str  # {duration}: the SKSCAN duration exponent
    sendto: str  # {address}, {port} (4 hex digits), {length} (int)
    erxudp: tuple[tuple[int, int], ...]  # (fields in an ERXUDP line, index of SECURED)
    einfo_last: frozenset[str]  # what SKINFO's last field reads on this dialect
    option_end: bytes = b"\r"  # ROPT and WOPT end with CR alone

    def secured_at(self, fields: int) -> int | None:
        """Where SECURED is in an ERXUDP line of ``fields`` fields (``None``: not this
        dialect's)."""
        return dict(self.erxudp).get(fields)

    def scan_command(self, duration: int) -> str:
        """The active-scan command of every channel for ``duration``."""
        return self.scan.format(duration=duration)

    def sendto_command(self, address: str, port: str, length: int) -> str:
        """The ``SKSENDTO`` line before the payload (secured: SEC 1)."""
        return self.sendto.format(address=address, port=port, length=length)


BP35A1 = Dialect(
    name="bp35a1", modules="ROHM BP35A1, Tessera RL7023 Stick-D/IPS",
    scan="SKSCAN 2 FFFFFFFF {duration}",
    sendto="SKSENDTO 1 {address} {port} 1 {length:04X}",
    erxudp=((9, 6),), einfo_last=frozenset({"FFFE"}))

BP35C2 = Dialect(
    name="bp35c2", modules="ROHM BP35C0, BP35C2, Tessera RL7023 Stick-D/DSS",
    scan="SKSCAN 2 FFFFFFFF {duration} 0",
    sendto="SKSENDTO 1 {address} {port} 1 0 {length:04X}",
    erxudp=((10, 6), (11, 7)), einfo_last=frozenset({"0", "1", "00", "01"}))

DIALECTS: dict[str, Dialect] = {d.name: d for d in (BP35A1, BP35C2)}
"""Every dialect by the name ``[broute] module`` takes."""


def dialect_from_einfo(line: str) -> Dialect:
    """The dialect whose SKINFO answer ``line`` (``EINFO ...``) is; the fields are addresses,
    so errors never quote them."""
    parts = line.split()
    if len(parts) != 6 or parts[0] != "EINFO":
        raise DeviceProtocolError(f"cannot tell the module's dialect: its EINFO line has "
                                  f"{len(parts)} fields, not 6; set [broute] module to one "
                                  f"of {', '.join(DIALECTS)}")
    for dialect in DIALECTS.values():
        if parts[5].upper() in dialect.einfo_last:
            return dialect
    raise DeviceProtocolError("cannot tell the module's dialect from the last EINFO field; "
                              f"set [broute] module to one of {', '.join(DIALECTS)}")
