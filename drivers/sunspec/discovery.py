"""Find a SunSpec device on one unit and walk its model chain.

The ``SunS`` marker is looked for at 40000, then 0, then 50000. After it, each model starts with
its id and length (``L``, registers after the two header registers); ``0xFFFF`` ends the chain.
The walk is bounded: a chain longer than ``max_models`` models or running past the 16-bit
address space is refused as broken.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.errors import DeviceProtocolError, DiscoveryError
from drivers.models import DeviceIdentity
from drivers.registers import RegisterReader
from drivers.sunspec.decode import decode_model
from drivers.sunspec.models import END_MODEL_ID, load_model

logger = logging.getLogger(__name__)

BASE_ADDRESSES: tuple[int, ...] = (40000, 0, 50000)
SUNS_MARKER: tuple[int, int] = (0x5375, 0x6E53)  # "SunS"
MAX_MODELS = 64
MAX_READ = 125  # registers per Modbus read
ADDRESS_SPACE = 0x10000
COMMON_MODEL = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """One model in a device's chain: ``start`` is the address of its ``ID`` register;
    ``length`` is its ``L`` (registers after ``ID`` and ``L``)."""

    id: int
    start: int
    length: int

    @property
    def end(self) -> int:
        """The first address after the model."""
        return self.start + 2 + self.length


@dataclass(frozen=True, slots=True, kw_only=True)
class SunSpecDevice:
    """What discovery found on one unit."""

    unit: int
    base: int  # address of the "SunS" marker
    models: tuple[ModelInfo, ...]
    identity: DeviceIdentity


async def discover(
    reader: RegisterReader,
    *,
    unit: int,
    bases: Sequence[int] = BASE_ADDRESSES,
    max_models: int = MAX_MODELS,
) -> SunSpecDevice:
    """Find the marker, walk the chain, read the identity from the common model (1).

    Raises :class:`DiscoveryError` when no marker is found or the chain is broken, and lets
    :class:`drivers.errors.DeviceUnreachable` through (the device did not answer at all).
    """
    base = await find_base(reader, unit=unit, bases=bases)
    models = await walk_chain(reader, unit=unit, base=base, max_models=max_models)
    if not models or models[0].id != COMMON_MODEL:
        first = models[0].id if models else "none"
        raise DiscoveryError(
            f"unit {unit}: the first SunSpec model at {base + 2} is {first}, not the common "
            "model 1"
        )
    common = await read_model(reader, models[0], unit=unit)
    return SunSpecDevice(unit=unit, base=base, models=models, identity=identity_from(common))


async def find_base(
    reader: RegisterReader, *, unit: int, bases: Sequence[int] = BASE_ADDRESSES
) -> int:
    """The first of ``bases`` holding the ``SunS`` marker."""
    for base in bases:
        try:
            regs = await reader.read_holding(base, 2, unit=unit)
        except DeviceProtocolError:  # an exception reply: no registers there
            continue
        if tuple(regs) == SUNS_MARKER:
            return base
    tried = ", ".join(str(b) for b in bases)
    raise DiscoveryError(f"unit {unit}: no SunSpec marker 'SunS' at {tried}")


async def walk_chain(
    reader: RegisterReader, *, unit: int, base: int, max_models: int = MAX_MODELS
) -> tuple[ModelInfo, ...]:
    """Walk the model headers after the marker at ``base`` up to the end marker."""
    models: list[ModelInfo] = []
    address = base + 2
    while True:
        if address + 2 > ADDRESS_SPACE:
            raise DiscoveryError(
                f"unit {unit}: SunSpec chain runs past the end of the address space "
                f"without an end marker (after {len(models)} models)"
            )
        try:
            model_id, length = await reader.read_holding(address, 2, unit=unit)
        except DeviceProtocolError as exc:
            raise DiscoveryError(
                f"unit {unit}: SunSpec chain broken at address {address} "
                f"(after {len(models)} models): {exc}"
            ) from exc
        if model_id == END_MODEL_ID:
            return tuple(models)
        if len(models) >= max_models:
            raise DiscoveryError(
                f"unit {unit}: SunSpec chain longer than {max_models} models; refusing it"
            )
        if address + 2 + length > ADDRESS_SPACE:
            raise DiscoveryError(
                f"unit {unit}: SunSpec model {model_id} at {address} (length {length}) runs "
                "past the end of the address space"
            )
        models.append(ModelInfo(id=model_id, start=address, length=length))
        address += 2 + length


async def read_model(reader: RegisterReader, model: ModelInfo, *, unit: int) -> list[int]:
    """Every register of ``model`` (``ID`` and ``L`` included), in reads of at most 125."""
    return await read_span(reader, model.start, model.length + 2, unit=unit)


async def read_span(reader: RegisterReader, address: int, count: int, *, unit: int) -> list[int]:
    """``count`` registers from ``address``, in as few reads of at most 125 as possible."""
    regs: list[int] = []
    while len(regs) < count:
        chunk = min(MAX_READ, count - len(regs))
        got = await reader.read_holding(address + len(regs), chunk, unit=unit)
        if len(got) != chunk:
            raise DeviceProtocolError(
                f"asked for {chunk} registers at {address + len(regs)}, got {len(got)}"
            )
        regs.extend(got)
    return regs


def identity_from(common: Sequence[int]) -> DeviceIdentity:
    """Device identity from a common model (1) block: ``Mn``, ``Md``, ``SN``, ``Vr``."""
    definition = load_model(COMMON_MODEL)
    if definition is None:  # pysunspec2 always ships model 1; this is a broken install
        raise DiscoveryError("the SunSpec common model definition (model_1.json) is missing")
    values = decode_model(definition, common)

    def text(name: str) -> str | None:
        value = values.get(name)
        return (value.strip() or None) if isinstance(value, str) else None

    return DeviceIdentity(
        manufacturer=text("Mn"), model=text("Md"), serial=text("SN"), version=text("Vr"),
        protocol="sunspec",
    )
