"""What stands between a device's bytes and pymodbus's decoder, and between pymodbus and the log.

:class:`StrictSocketFramer` takes a Modbus TCP reply only if it answers the pending request:
protocol id 0, a length of 2..254, the request's transaction id (pymodbus takes 0 as "any") and
unit id, nothing after it, and for a register read a byte count equal to the bytes that follow.
:class:`ContainedRtuFramer` keeps pymodbus's RTU framing (it hunts for a frame with a valid CRC
through line noise) but contains what it raises. Either way a refused frame is reported through
the ``refuse`` callback with a reason naming header fields and sizes, never register contents,
and is dropped undecoded; an exception never escapes into asyncio's ``data_received``.

pymodbus logs a frame it skips, in hex, at ERROR, with the last twenty frames appended; those
frames hold serial numbers and live values. :func:`contain_library_logs` cuts its logger off and
reduces asyncio's report of an exception raised inside pymodbus to the exception's type.
Used only by :mod:`drivers.transport`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from types import TracebackType

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU

Refuse = Callable[[str], None]
"""Called with the reason when a received frame is refused."""

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
_READS = (0x03, 0x04)


class StrictSocketFramer(FramerSocket):
    """Modbus TCP framing that accepts only the answer to the pending request."""

    def __init__(self, decoder: DecodePDU, refuse: Refuse) -> None:
        super().__init__(decoder)
        self._refuse = refuse

    def handleFrame(self, data: bytes, exp_devid: int,
                    exp_tid: int) -> tuple[int, ModbusPDU | None]:
        """Take one reply from the start of ``data``: (bytes used, PDU or ``None``)."""
        try:
            return self._take(data, exp_devid, exp_tid)
        except Exception as exc:  # contained: a device's bytes must not raise into asyncio
            self._refuse(f"undecodable reply of {len(data)} bytes ({type(exc).__name__})")
            return len(data), None

    def _take(self, data: bytes, unit: int, tid: int) -> tuple[int, ModbusPDU | None]:
        if len(data) < _MBAP.size:
            return 0, None  # wait for the header
        got_tid, protocol, length, got_unit = _MBAP.unpack_from(data)
        if protocol != 0 or not 2 <= length <= 254:
            self._refuse("not a Modbus TCP reply (protocol id not 0 or length out of 2..254)")
            return len(data), None
        size = 6 + length
        if len(data) < size:
            return 0, None  # wait for the rest
        reason = (_header_problem(got_tid, got_unit, tid, unit)
                  or _pdu_problem(data[_MBAP.size:size]))
        if reason is None and len(data) > size:
            reason = f"{len(data) - size} byte(s) after the reply"
        pdu = self.decoder.decode(data[_MBAP.size:size]) if reason is None else None
        if pdu is None:
            self._refuse(reason or f"undecodable reply of {size} bytes")
            return len(data), None
        pdu.dev_id, pdu.transaction_id = got_unit, got_tid
        return size, pdu


class ContainedRtuFramer(FramerRTU):
    """pymodbus's RTU framing, with what its decoding raises turned into a refusal."""

    def __init__(self, decoder: DecodePDU, refuse: Refuse) -> None:
        super().__init__(decoder)
        self._refuse = refuse

    def handleFrame(self, data: bytes, exp_devid: int,
                    exp_tid: int) -> tuple[int, ModbusPDU | None]:
        """pymodbus's RTU framing; what it raises becomes a refusal of the buffered bytes."""
        try:
            return super().handleFrame(data, exp_devid, exp_tid)
        except Exception as exc:  # contained: a device's bytes must not raise into asyncio
            self._refuse(f"undecodable reply of {len(data)} bytes ({type(exc).__name__})")
            return len(data), None


def _header_problem(got_tid: int, got_unit: int, tid: int, unit: int) -> str | None:
    if got_tid != tid:
        return f"reply with transaction id {got_tid}, the request's was {tid}"
    if got_unit != unit:
        return f"reply from unit {got_unit}, the request was for unit {unit}"
    return None


def _pdu_problem(pdu: bytes) -> str | None:
    """Why a read's reply PDU cannot be right (``None``: let the decoder judge it)."""
    function = pdu[0]
    if function & 0x80:
        return None if len(pdu) == 2 else f"exception reply of {len(pdu)} bytes, not 2"
    if function not in _READS:
        return None
    count = pdu[1] if len(pdu) > 1 else 0
    if count != len(pdu) - 2 or count % 2:
        return f"reply with byte count {count} for {len(pdu) - 2} bytes of registers"
    return None


class _LibraryTracebackFilter(logging.Filter):
    """Reduces a record whose exception was raised inside pymodbus to the exception's type.

    asyncio logs an exception that escapes a protocol callback with its traceback; raised while
    pymodbus decoded a device's frame, its message may quote the frame.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _raised_in_pymodbus(exc.__traceback__):
            return True
        record.msg = "%s raised inside pymodbus on a device's bytes (details withheld)"
        record.args = (type(exc).__name__,)
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def _raised_in_pymodbus(tb: TracebackType | None) -> bool:
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("pymodbus"):
            return True
        tb = tb.tb_next
    return False


def contain_library_logs() -> None:
    """Keep pymodbus's frame dumps and tracebacks out of every log (idempotent)."""
    for name in ("pymodbus", "pymodbus.logging"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _LibraryTracebackFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(_LibraryTracebackFilter())
