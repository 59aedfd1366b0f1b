"""SunSpec decoding over hand-built register blocks (no I/O)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import DeviceProtocolError, DiscoveryError
from drivers.models import DeviceIdentity
from drivers.sunspec.decode import apply_scale, decode_model, layout, raw_at, raw_value
from drivers.sunspec.discovery import discover, read_model
from drivers.sunspec.models import (
    GroupDef,
    ModelDef,
    PointDef,
    available_models,
    load_model,
)


def model(model_id: int) -> ModelDef:
    found = load_model(model_id)
    assert found is not None
    return found


def text_regs(text: str, size: int) -> list[int]:
    raw = text.encode().ljust(2 * size, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, 2 * size, 2)]


def block(model_id: int, length: int, values: dict[str, list[int]]) -> list[int]:
    """A model block with every register 0 except ID, L and the named top-level points."""
    lay = layout(model(model_id), length)
    regs = [0] * (length + 2)
    regs[0], regs[1] = model_id, length
    for name, words in values.items():
        placed = lay.find((name,))
        assert placed is not None, name
        regs[placed.offset : placed.offset + len(words)] = words
    return regs


@pytest.mark.parametrize(("ptype", "size", "regs"), [
    ("int16", 1, [0x8000]), ("sunssf", 1, [0x8000]), ("uint16", 1, [0xFFFF]),
    ("enum16", 1, [0xFFFF]), ("bitfield16", 1, [0xFFFF]), ("count", 1, [0xFFFF]),
    ("acc16", 1, [0]), ("int32", 2, [0x8000, 0]), ("uint32", 2, [0xFFFF, 0xFFFF]),
    ("acc32", 2, [0, 0]), ("enum32", 2, [0xFFFF, 0xFFFF]), ("bitfield32", 2, [0xFFFF] * 2),
    ("ipaddr", 2, [0, 0]), ("int64", 4, [0x8000, 0, 0, 0]), ("uint64", 4, [0xFFFF] * 4),
    ("acc64", 4, [0] * 4), ("float32", 2, [0x7FC0, 0]), ("float64", 4, [0x7FF8, 0, 0, 0]),
    ("string", 4, [0] * 4), ("string", 2, [0x0041, 0x4200]), ("eui48", 4, [0] * 4),
    ("eui48", 4, [0, 0xFFFF, 0xFFFF, 0xFFFF]), ("ipv6addr", 8, [0] * 8),
])
def test_not_implemented_sentinels_are_none(ptype: str, size: int, regs: list[int]) -> None:
    assert raw_value(PointDef(name="x", type=ptype, size=size), regs) is None


@pytest.mark.parametrize(("ptype", "size", "regs", "expected"), [
    ("int16", 1, [0xFFFE], -2), ("uint16", 1, [0xFFFE], 65534), ("acc16", 1, [7], 7),
    ("int32", 2, [0xFFFF, 0xFFFE], -2), ("uint32", 2, [1, 2], 65538),
    ("acc32", 2, [0, 1], 1), ("int64", 4, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
    ("uint64", 4, [0, 0, 1, 0], 65536), ("acc64", 4, [0, 0, 0, 5], 5),
    ("sunssf", 1, [0xFFFE], -2), ("enum16", 1, [4], 4),
    ("string", 4, text_regs("Fronius", 4), "Fronius"),
    ("eui48", 4, [0, 0x0011, 0x2233, 0x4455], "00:11:22:33:44:55"),
])
def test_raw_values(ptype: str, size: int, regs: list[int], expected: object) -> None:
    assert raw_value(PointDef(name="x", type=ptype, size=size), regs) == expected


def test_float32_decodes_and_wrong_size_is_refused() -> None:
    words = struct.unpack(">HH", struct.pack(">f", 230.5))
    assert raw_value(PointDef(name="V", type="float32", size=2), list(words)) == 230.5
    with pytest.raises(ValueError, match="needs 2 registers"):
        raw_value(PointDef(name="V", type="float32", size=2), [1])


def test_apply_scale() -> None:
    assert apply_scale(2345, -2) == 23.45
    assert apply_scale(12, 3) == 12000.0
    assert apply_scale(7, 0) == 7
    assert apply_scale(7, None) is None
    assert apply_scale(None, 2) is None
    with pytest.raises(ValueError, match="out of range"):
        apply_scale(1, 11)


def test_inverter_model_scales_with_model_level_factors() -> None:
    regs = block(103, 50, {
        "W": [4520], "W_SF": [0xFFFF],  # -1
        "WH": [0, 12345], "WH_SF": [1],
        "PhVphA": [2301], "V_SF": [0xFFFF],
        "Hz": [5000], "Hz_SF": [0xFFFE],
        "St": [4], "A": [0xFFFF], "A_SF": [0xFFFE],
        "DCW": [100], "DCW_SF": [0x8000],  # scale factor not implemented
    })
    values = decode_model(model(103), regs)
    assert values["W"] == 452.0
    assert values["WH"] == 123450.0
    assert values["PhVphA"] == 230.1
    assert values["Hz"] == 50.0
    assert values["St"] == 4
    assert values["A"] is None  # uint16 0xFFFF: not implemented
    assert values["DCW"] is None  # value present, scale unknown: not a reading
    assert values["DCW_SF"] is None
    assert "L" in values and values["ID"] == 103


def test_mppt_modules_repeat_as_many_as_the_length_holds() -> None:
    definition = model(160)
    fixed = definition.group.points_size - 2
    module_size = definition.group.groups[0].points_size
    regs = block(160, fixed + 2 * module_size, {"DCW_SF": [1], "N": [2]})
    lay = layout(definition, fixed + 2 * module_size, regs)
    dcw = [lay.find(("module", i, "DCW")) for i in range(2)]
    assert all(p is not None for p in dcw)
    regs[dcw[0].offset] = 123  # type: ignore[union-attr]
    regs[dcw[1].offset] = 45  # type: ignore[union-attr]
    values = decode_model(definition, regs)
    assert [m["DCW"] for m in values["module"]] == [1230.0, 450.0]
    assert lay.count(("module",)) == 2 and lay.count(("other",)) == 0
    assert list(values)[:3] == ["ID", "L", "DCA_SF"]  # register order, lists after


def test_repeat_count_from_a_count_point_and_group_local_scale() -> None:
    inner = GroupDef(name="Pt", count="NPt", points=(
        PointDef(name="V", type="uint16", size=1, sf="V_SF"),
    ))
    outer = GroupDef(name="Crv", count="NCrv", groups=(inner,), points=(
        PointDef(name="V_SF", type="sunssf", size=1),  # group-local, shadows nothing
    ))
    top = GroupDef(name="m", groups=(outer,), points=(
        PointDef(name="ID", type="uint16", size=1), PointDef(name="L", type="uint16", size=1),
        PointDef(name="NCrv", type="uint16", size=1), PointDef(name="NPt", type="uint16", size=1),
    ))
    definition = ModelDef(id=64999, label=None, group=top)
    # ID L NCrv NPt | Crv0: SF V V | Crv1: SF V V
    regs = [64999, 8, 2, 2, 0xFFFF, 11, 12, 2, 21, 0xFFFF]
    values = decode_model(definition, regs)
    assert values["Crv"] == [
        {"V_SF": -1, "Pt": [{"V": 1.1}, {"V": 1.2}]},
        {"V_SF": 2, "Pt": [{"V": 2100.0}, {"V": None}]},
    ]


def test_unimplemented_count_means_no_repetitions() -> None:
    definition = model(714)
    fixed = definition.group.points_size - 2
    regs = block(714, fixed, {"NPrt": [0xFFFF]})
    assert decode_model(definition, regs)["Prt"] == []


def test_short_legacy_common_model_leaves_out_missing_points() -> None:
    regs = block(1, 65, {"Mn": text_regs("ACME", 16), "SN": text_regs("X1", 16)})
    values = decode_model(model(1), regs)
    assert values["Mn"] == "ACME" and values["SN"] == "X1"
    assert values["Opt"] is None and "Pad" not in values


def test_scale_factor_out_of_range_gives_none() -> None:
    regs = block(103, 50, {"W": [10], "W_SF": [20]})
    assert decode_model(model(103), regs)["W"] is None


def test_every_shipped_definition_loads_and_lays_out() -> None:
    ids = available_models()
    assert {1, 103, 160, 203, 701, 713, 714, 802} <= set(ids)
    for model_id in ids:
        definition = model(model_id)
        lay = layout(definition, 200)
        offsets = [p.offset for p in lay.points]
        assert offsets == sorted(offsets), model_id
        assert all(p.sf_offset is not None or p.sf_const is not None
                   for p in lay.points if p.point.sf is not None), model_id
    assert load_model(9) is not None and load_model(65000) is None


# -- discovery, over a register image behind a fake reader (the transport boundary) ----------

class ImageReader:
    """Answers reads from a sparse register image; unmapped registers: an exception reply."""

    def __init__(self, image: dict[int, int]) -> None:
        self.image = image
        self.reads: list[tuple[int, int]] = []

    async def read_holding(self, address: int, count: int, *, unit: int) -> list[int]:
        self.reads.append((address, count))
        try:
            return [self.image[a] for a in range(address, address + count)]
        except KeyError:
            raise DeviceProtocolError("illegal data address", exception_code=2) from None


def chain(base: int, models: list[tuple[int, list[int]]], end: bool = True) -> dict[int, int]:
    regs = [0x5375, 0x6E53]
    for model_id, body in models:
        regs += [model_id, len(body), *body]
    if end:
        regs += [0xFFFF, 0]
    return {base + i: r for i, r in enumerate(regs)}


def common_body() -> list[int]:
    body = [0] * 66
    body[0:16] = text_regs("ACME", 16)
    body[16:32] = text_regs("PV-1", 16)
    body[40:48] = text_regs("1.2", 8)
    body[48:64] = text_regs("S-1", 16)
    return body


@pytest.mark.parametrize("base", [40000, 0, 50000])
async def test_discover_finds_the_marker_and_walks_the_chain(base: int) -> None:
    reader = ImageReader(chain(base, [(1, common_body()), (103, [0] * 50)]))
    device = await discover(reader, unit=3)
    assert (device.unit, device.base) == (3, base)
    assert [(m.id, m.start, m.length) for m in device.models] == [
        (1, base + 2, 66), (103, base + 70, 50)]
    assert device.identity == DeviceIdentity(
        manufacturer="ACME", model="PV-1", serial="S-1", version="1.2", protocol="sunspec")


async def test_no_marker_is_a_discovery_error_naming_the_bases() -> None:
    reader = ImageReader({40000: 1, 40001: 2})
    with pytest.raises(DiscoveryError, match="no SunSpec marker 'SunS' at 40000, 0, 50000"):
        await discover(reader, unit=1)


async def test_broken_chain_is_a_discovery_error_naming_the_address() -> None:
    reader = ImageReader(chain(40000, [(1, common_body())], end=False))
    with pytest.raises(DiscoveryError, match="chain broken at address 40070"):
        await discover(reader, unit=1)


async def test_overlong_chain_is_refused() -> None:
    reader = ImageReader(chain(40000, [(1, common_body()), *[(64999, [])] * 70]))
    with pytest.raises(DiscoveryError, match="longer than 64 models"):
        await discover(reader, unit=1)
    assert len(reader.reads) < 70


async def test_chain_past_the_address_space_is_refused() -> None:
    image = chain(50000, [(1, common_body())], end=False)
    image.update({50070: 103, 50071: 15465})  # this model would end beyond 65535
    with pytest.raises(DiscoveryError, match="past the end of the address space"):
        await discover(ImageReader(image), unit=1)


async def test_first_model_must_be_the_common_model() -> None:
    reader = ImageReader(chain(40000, [(103, [0] * 50)]))
    with pytest.raises(DiscoveryError, match="not the common model 1"):
        await discover(reader, unit=1)


async def test_read_model_splits_long_models_into_reads_of_125() -> None:
    reader = ImageReader(chain(40000, [(1, common_body()), (64999, list(range(300)))]))
    device = await discover(reader, unit=1)
    reader.reads.clear()
    regs = await read_model(reader, device.models[1], unit=1)
    assert regs == [64999, 300, *range(300)]
    assert [count for _, count in reader.reads] == [125, 125, 52]


_SIZES = {"int16": 1, "sunssf": 1, "uint16": 1, "count": 1, "enum16": 1, "bitfield16": 1,
          "acc16": 1, "pad": 1, "int32": 2, "uint32": 2, "enum32": 2, "bitfield32": 2,
          "acc32": 2, "ipaddr": 2, "float32": 2, "int64": 4, "uint64": 4, "acc64": 4,
          "float64": 4, "string": 3, "eui48": 4, "ipv6addr": 8}
_EDGES = [0, 1, 0x7FC0, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]


@given(ptype=st.sampled_from(sorted(_SIZES)), address=st.integers(0, 0xFFF0),
       words=st.lists(st.sampled_from(_EDGES) | st.integers(0, 0xFFFF), min_size=8,
                      max_size=8))
def test_decoding_from_the_image_gives_what_raw_value_gives(
        ptype: str, address: int, words: list[int]) -> None:
    point = PointDef(name="x", type=ptype, size=_SIZES[ptype])
    image = {address + i: w for i, w in enumerate(words)}
    expected = raw_value(point, words[:point.size])
    got = raw_at(point, image, address)
    assert got == expected or (got != got and expected != expected)
    assert type(got) is type(expected)


@pytest.mark.parametrize("ptype", ["int16", "uint16", "uint32", "float32", "int64", "string"])
def test_decoding_from_the_image_refuses_missing_and_oversized_registers(ptype: str) -> None:
    point = PointDef(name="x", type=ptype, size=_SIZES[ptype])
    with pytest.raises(ValueError, match="register 10 was not read"):
        raw_at(point, {a: 0 for a in range(10 + point.size) if a != 10}, 10)
    big = {a: 0 for a in range(10, 10 + point.size)} | {10 + point.size - 1: 0x10000}
    with pytest.raises((ValueError, ArithmeticError)) as slow:  # what the poller catches
        raw_value(point, [big[a] for a in range(10, 10 + point.size)])
    with pytest.raises((ValueError, ArithmeticError)) as fast:
        raw_at(point, big, 10)
    assert fast.type is slow.type
