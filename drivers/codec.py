"""Decode and encode Modbus register values: pure functions over lists of 16-bit integers.

Types: ``int16``, ``uint16``, ``int32``, ``uint32``, ``int64``, ``uint64``, ``float32``,
``float64`` and ``string``. Multi-register numbers follow ``word_order`` (``"big"``: the most
significant register first, as the Modbus and SunSpec specifications say; ``"little"``: least
significant first, common in meters). ``byte_order`` is the order of the two bytes inside each
register (``"big"``: high byte first, the Modbus standard; ``"little"``: swapped). Strings are a
byte sequence laid out register after register, so ``word_order`` does not apply to them; they
are decoded as UTF-8 with trailing NULs and spaces removed.

Every function raises :class:`ValueError` naming what is wrong; callers turn that into
``Quality.ERROR`` for the point concerned.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final, Literal

DTYPES: Final[dict[str, tuple[int, str]]] = {
    # dtype: (registers, struct format of the big-endian byte string)
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "int64": (4, ">q"),
    "uint64": (4, ">Q"),
    "float32": (2, ">f"),
    "float64": (4, ">d"),
}
"""Numeric types, with their width in registers."""

STRING: Final = "string"
ORDERS: Final = ("big", "little")


def register_count(dtype: str, length: int | None = None) -> int:
    """Registers a value of ``dtype`` occupies; ``length`` (in registers) is needed for strings."""
    if dtype == STRING:
        if length is None or length < 1:
            raise ValueError(f"a string needs a length of at least 1 register, got {length!r}")
        return length
    try:
        width = DTYPES[dtype][0]
    except KeyError:
        raise ValueError(f"unknown register type {dtype!r}; known: {_known()}") from None
    if length is not None and length != width:
        raise ValueError(f"{dtype} occupies {width} registers, not {length}")
    return width


def decode(
    registers: Sequence[int], dtype: str, *, word_order: str = "big", byte_order: str = "big"
) -> int | float | str:
    """Decode ``registers`` as one value of ``dtype``.

    The number of registers must match the type (any positive number for strings).
    """
    _check_orders(word_order, byte_order)
    regs = list(registers)
    register_count(dtype, len(regs) if dtype == STRING else None)
    for i, reg in enumerate(regs):
        if not 0 <= reg <= 0xFFFF:
            raise ValueError(f"register {i} holds {reg!r}, not a 16-bit value")
    if dtype == STRING:
        raw = _to_bytes(regs, byte_order)
        return raw.rstrip(b"\x00 ").decode("utf-8")  # UnicodeDecodeError is a ValueError
    width, fmt = DTYPES[dtype]
    if len(regs) != width:
        raise ValueError(f"{dtype} needs {width} registers, got {len(regs)}")
    if word_order == "little":
        regs.reverse()
    value: int | float = struct.unpack(fmt, _to_bytes(regs, byte_order))[0]
    return value


def encode(
    value: float | str,
    dtype: str,
    *,
    word_order: str = "big",
    byte_order: str = "big",
    length: int | None = None,
) -> list[int]:
    """Encode ``value`` as registers of ``dtype`` (the inverse of :func:`decode`).

    Strings are UTF-8, padded with NULs to ``length`` registers and refused if longer.
    Integers must be in range for the type; floats are not rounded into integer types.
    """
    _check_orders(word_order, byte_order)
    count = register_count(dtype, length)
    if dtype == STRING:
        if not isinstance(value, str):
            raise ValueError(f"a string register value must be str, got {type(value).__name__}")
        raw = value.encode("utf-8")
        if len(raw) > 2 * count:
            raise ValueError(f"{value!r} needs {len(raw)} bytes, more than {count} registers")
        return _from_bytes(raw.ljust(2 * count, b"\x00"), byte_order)
    fmt = DTYPES[dtype][1]
    if isinstance(value, str) or (isinstance(value, float) and not dtype.startswith("float")):
        raise ValueError(f"{dtype} needs an int, got {type(value).__name__} {value!r}")
    try:
        raw = struct.pack(fmt, value)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit {dtype}: {exc}") from exc
    regs = _from_bytes(raw, byte_order)
    if word_order == "little":
        regs.reverse()
    return regs


def scale(raw: float, *, multiplier: float = 1.0, exponent: int = 0) -> float:
    """Apply a linear scale: ``raw * multiplier * 10**exponent``.

    ``exponent`` is a power-of-ten scale factor (SunSpec ``*_SF`` registers, range -10..10).
    """
    if not -10 <= exponent <= 10:
        raise ValueError(f"scale exponent {exponent} out of range -10..10")
    result = float(raw) * multiplier
    # Multiply or divide by an exact power of ten: 123 * 10**-1 gives 12.3, not 12.300000000000001.
    result = result * 10.0**exponent if exponent >= 0 else result / 10.0 ** (-exponent)
    if not math.isfinite(result):
        raise ValueError(f"scaled value of {raw!r} is not finite")
    return result


def _to_bytes(regs: Sequence[int], byte_order: str) -> bytes:
    order: Literal["big", "little"] = "big" if byte_order == "big" else "little"
    return b"".join(reg.to_bytes(2, order) for reg in regs)


def _from_bytes(raw: bytes, byte_order: str) -> list[int]:
    order: Literal["big", "little"] = "big" if byte_order == "big" else "little"
    return [int.from_bytes(raw[i : i + 2], order) for i in range(0, len(raw), 2)]


def _check_orders(word_order: str, byte_order: str) -> None:
    if word_order not in ORDERS:
        raise ValueError(f"word_order must be 'big' or 'little', got {word_order!r}")
    if byte_order not in ORDERS:
        raise ValueError(f"byte_order must be 'big' or 'little', got {byte_order!r}")


def _known() -> str:
    return ", ".join([*DTYPES, STRING])
