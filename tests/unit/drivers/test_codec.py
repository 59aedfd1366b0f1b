"""Register value decoding and encoding: pure, no I/O."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import codec

ORDERS = st.sampled_from(["big", "little"])

RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@pytest.mark.parametrize(
    ("regs", "dtype", "word", "byte", "expected"),
    [
        ([0xFFFF], "int16", "big", "big", -1),
        ([0xFFFF], "uint16", "big", "big", 65535),
        ([0x0102], "uint16", "big", "little", 0x0201),
        ([0x0001, 0x0000], "uint32", "big", "big", 65536),
        ([0x0000, 0x0001], "uint32", "little", "big", 65536),
        ([0xFFFF, 0xFFFE], "int32", "big", "big", -2),
        ([0x3F80, 0x0000], "float32", "big", "big", 1.0),
        ([0x0000, 0x3F80], "float32", "little", "big", 1.0),
        ([0x803F, 0x0000], "float32", "big", "little", 1.0),
        ([0, 0, 0, 1], "uint64", "big", "big", 1),
        ([0x5348, 0x2D35, 0x2E30, 0x524C, 0x0000], "string", "big", "big", "SH-5.0RL"),
        ([0x4853, 0x352D], "string", "big", "little", "SH-5"),
    ],
)
def test_decode_known_values(regs: list[int], dtype: str, word: str, byte: str,
                             expected: object) -> None:
    assert codec.decode(regs, dtype, word_order=word, byte_order=byte) == expected


@given(st.sampled_from(sorted(RANGES)), st.data(), ORDERS, ORDERS)
def test_integer_round_trip(dtype: str, data: st.DataObject, word: str, byte: str) -> None:
    low, high = RANGES[dtype]
    value = data.draw(st.integers(low, high))
    regs = codec.encode(value, dtype, word_order=word, byte_order=byte)
    assert len(regs) == codec.register_count(dtype)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert codec.decode(regs, dtype, word_order=word, byte_order=byte) == value


@given(st.floats(width=32, allow_nan=False), ORDERS, ORDERS)
def test_float32_round_trip(value: float, word: str, byte: str) -> None:
    regs = codec.encode(value, "float32", word_order=word, byte_order=byte)
    assert codec.decode(regs, "float32", word_order=word, byte_order=byte) == value


@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=16), ORDERS)
def test_string_round_trip(value: str, byte: str) -> None:
    regs = codec.encode(value, "string", byte_order=byte, length=8)
    assert len(regs) == 8
    assert codec.decode(regs, "string", byte_order=byte) == value


def test_float32_nan_decodes_as_nan() -> None:
    assert math.isnan(float(codec.decode([0x7FC0, 0x0000], "float32")))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: codec.decode([1], "int32"), "int32 needs 2 registers"),
        (lambda: codec.decode([1], "int24"), "unknown register type 'int24'"),
        (lambda: codec.decode([0x10000], "uint16"), "not a 16-bit value"),
        (lambda: codec.decode([-1], "uint16"), "not a 16-bit value"),
        (lambda: codec.decode([1], "uint16", word_order="middle"), "word_order"),
        (lambda: codec.decode([1], "uint16", byte_order="mixed"), "byte_order"),
        (lambda: codec.decode([], "string"), "at least 1 register"),
        (lambda: codec.decode([0xFFFE], "string"), "utf-8"),
        (lambda: codec.encode(70000, "uint16"), "does not fit uint16"),
        (lambda: codec.encode(-1, "uint32"), "does not fit uint32"),
        (lambda: codec.encode(1.5, "int16"), "int16 needs an int"),
        (lambda: codec.encode("abc", "uint16"), "uint16 needs an int"),
        (lambda: codec.encode("abcde", "string", length=2), "more than 2 registers"),
        (lambda: codec.encode(5, "string", length=2), "must be str"),
        (lambda: codec.register_count("uint32", 3), "occupies 2 registers"),
        (lambda: codec.scale(1, exponent=11), "out of range"),
        (lambda: codec.scale(float("nan")), "not finite"),
    ],
)
def test_bad_input_is_named(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("raw", "multiplier", "exponent", "expected"),
    [(123, 1.0, -1, 12.3), (5, 1.0, 2, 500.0), (1234, 0.1, 0, 123.4), (7, 10.0, -3, 0.07)],
)
def test_scale(raw: int, multiplier: float, exponent: int, expected: float) -> None:
    assert codec.scale(raw, multiplier=multiplier, exponent=exponent) == pytest.approx(expected)


def test_scale_by_power_of_ten_is_exact_for_decimals() -> None:
    assert codec.scale(123, exponent=-1) == 12.3
    assert codec.scale(2301, exponent=-2) == 23.01
