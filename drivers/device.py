"""The Modbus device poller: reads the points that are due, decodes them, reports quality.

A :class:`ModbusDevice` is a name, a link (anything with ``read_holding``/``read_input``, such as
:class:`drivers.transport.Bus`), a unit id, a tuple of :class:`RegisterPoint` (from SunSpec
discovery or a register profile) and the device's identity. Each point has its own interval;
:meth:`ModbusDevice.poll` reads only the points due, in the requests :mod:`drivers.planner`
chose, and :meth:`ModbusDevice.next_due` tells the caller when to come back.

Failure handling: an exception response or a garbled reply spoils only the points of that read
(``Quality.ERROR``) and the other reads go ahead. A device that does not answer ends the cycle
at once (further requests would each wait out the deadline on a shared bus); if nothing at all
was read, :class:`DeviceUnreachable` is raised so the supervisor can back off.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from drivers.errors import DeviceProtocolError, DeviceUnreachable
from drivers.models import DeviceIdentity, Quality, Reading
from drivers.planner import CostModel, ReadRequest, blocks, plan
from drivers.profiles import Profile
from drivers.registers import RegisterPoint, RegisterReader

log = logging.getLogger(__name__)
_PLAN_CACHE = 32  # distinct due sets remembered per device (a handful in practice)


class TableReader(RegisterReader, Protocol):
    """A :class:`RegisterReader` that also reads input registers (function 0x04)."""

    async def read_input(self, address: int, count: int, *, unit: int) -> list[int]:
        """Return ``count`` (1..125) input registers starting at ``address``."""
        ...


async def read_registers(reader: TableReader, function: str, address: int, count: int, *,
                         unit: int) -> list[int]:
    """Read from the holding or the input table."""
    if function == "holding":
        return await reader.read_holding(address, count, unit=unit)
    if function == "input":
        return await reader.read_input(address, count, unit=unit)
    raise ValueError(f"function must be 'holding' or 'input', got {function!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStats:
    """Counters since the device was created, for metrics and the bench."""

    polls: int = 0  # poll cycles that had work
    requests: int = 0  # read requests issued
    minimum: int = 0  # sum over cycles of the lower bound on requests
    naive: int = 0  # sum over cycles of one request per point span
    failed_requests: int = 0
    point_errors: int = 0  # readings with Quality.ERROR
    point_missing: int = 0  # readings with Quality.MISSING
    unreachable: int = 0  # cycles that raised DeviceUnreachable


@dataclass(frozen=True, slots=True, kw_only=True)
class _Batch:
    function: str
    request: ReadRequest
    points: tuple[int, ...]  # indexes of the due points this request serves (at least partly)


class ModbusDevice:
    """One Modbus unit and the points to read from it."""

    def __init__(self, *, name: str, reader: TableReader, unit: int,
                 points: Sequence[RegisterPoint], identity: DeviceIdentity,
                 cost: CostModel | None = None, max_gap: int | None = None,
                 slack: float = 0.25) -> None:
        """``cost`` is the link's cost model (``Bus.cost_model``; Modbus TCP if omitted);
        ``max_gap`` limits the unread registers one read may bridge; points due within
        ``slack`` seconds are read in the same cycle, keeping related points together."""
        if not points:
            raise ValueError(f"device {name!r} has no points to read")
        for function in {p.function for p in points}:  # fail now, not at the first poll
            blocks(s for p in points if p.function == function for s in p.spans())
        self.name = name
        self.unit = unit
        self.identity = identity
        self.points = tuple(points)
        self._reader = reader
        self._cost = cost or CostModel.tcp()
        self._max_gap = max_gap
        self._slack = slack
        # every register each point needs, to check a poll read them all
        self._registers = tuple(frozenset(a for s, c in p.spans() for a in range(s, s + c))
                                for p in self.points)
        self._next = [-math.inf] * len(self.points)
        self._stats = DeviceStats()
        self._plans: dict[tuple[int, ...], tuple[list[_Batch], int, int]] = {}

    @classmethod
    def from_profile(cls, profile: Profile, *, name: str, reader: TableReader, unit: int,
                     identity: DeviceIdentity, cost: CostModel | None = None) -> ModbusDevice:
        """A device read with a register profile's points and gap limit."""
        return cls(name=name, reader=reader, unit=unit, points=profile.points(),
                   identity=identity, cost=cost, max_gap=profile.max_gap)

    @property
    def stats(self) -> DeviceStats:
        """A snapshot of the counters."""
        return self._stats

    def next_due(self) -> float:
        """Monotonic time at which :meth:`poll` next has work (in the past: right away)."""
        return min(self._next)

    def due(self, now: float) -> tuple[int, ...]:
        """Indexes of the points due at ``now``."""
        return tuple(i for i, t in enumerate(self._next) if t <= now + self._slack)

    async def poll(self, now: float, *,
                   stamp: Callable[[], datetime] | None = None) -> list[Reading]:
        """Read and decode the points due at monotonic time ``now``; ``[]`` if none are due.

        The readings' time is ``stamp()`` called once the reads are done (default: the wall
        clock, UTC): a caller that stamps readings on its own clock passes it, so that each
        reading is built once with its final time. Raises :class:`DeviceUnreachable` if the
        device answered none of the requests; the points stay due.
        """
        due = self.due(now)
        if not due:
            return []
        batches = self._plan(due)
        images, failed, sent, answered = await self._read(batches)
        for i in due:
            previous, interval = self._next[i], self.points[i].interval
            self._next[i] = previous + interval if previous + interval > now else now + interval
        ts = datetime.now(UTC) if stamp is None else stamp()
        readings = [self._reading(i, images, failed, ts) for i in due]
        self._stats = _replace(
            self._stats, requests=sent, failed_requests=sent - answered,
            point_errors=sum(r.quality is Quality.ERROR for r in readings),
            point_missing=sum(r.quality is Quality.MISSING for r in readings))
        return readings

    def _plan(self, due: tuple[int, ...]) -> list[_Batch]:
        # The same points fall due cycle after cycle; planning is the costliest step of a
        # poll (an optimisation over the spans), so each distinct due set is planned once.
        cached = self._plans.get(due)
        if cached is None:
            if len(self._plans) >= _PLAN_CACHE:
                self._plans.clear()
            cached = self._plans[due] = self._make_plan(due)
        batches, minimum, naive = cached
        self._stats = _replace(self._stats, polls=1, minimum=minimum, naive=naive)
        return batches

    def _make_plan(self, due: tuple[int, ...]) -> tuple[list[_Batch], int, int]:
        by_function: dict[str, list[int]] = defaultdict(list)
        for i in due:
            by_function[self.points[i].function].append(i)
        batches: list[_Batch] = []
        minimum = naive = 0
        for function, indexes in sorted(by_function.items()):
            spans = [span for i in indexes for span in self.points[i].spans()]
            result = plan(spans, self._cost, max_gap=self._max_gap)
            minimum, naive = minimum + result.minimum, naive + result.naive
            for request in result.requests:
                served = tuple(i for i in indexes if any(
                    request.address <= a < request.end for a, _ in self.points[i].spans()))
                batches.append(_Batch(function=function, request=request, points=served))
        return batches, minimum, naive

    async def _read(self, batches: list[_Batch]
                    ) -> tuple[dict[str, dict[int, int]], set[int], int, int]:
        """Run the batches; return the register images by function, the failed points, the
        requests sent and those answered (the caller counts them with the poll's readings)."""
        images: dict[str, dict[int, int]] = defaultdict(dict)
        failed: set[int] = set()
        done = 0
        for n, batch in enumerate(batches):
            req = batch.request
            try:
                regs = await read_registers(self._reader, batch.function, req.address,
                                            req.count, unit=self.unit)
            except DeviceProtocolError as exc:
                # the device name only: the bus name carries a host address
                log.warning("%s: read %s %d+%d failed (exception code %s)", self.name,
                            batch.function, req.address, req.count, exc.exception_code)
                failed.update(batch.points)
            except DeviceUnreachable:
                if done == 0:
                    self._stats = _replace(self._stats, requests=n + 1,
                                           failed_requests=n + 1, unreachable=1)
                    raise
                log.warning("%s stopped answering mid-cycle", self.name)
                failed.update(i for b in batches[n:] for i in b.points)
                return images, failed, n + 1, done
            else:
                done += 1
                images[batch.function].update(zip(range(req.address, req.end), regs,
                                                  strict=True))
        return images, failed, len(batches), done

    def _reading(self, index: int, images: dict[str, dict[int, int]],
                 failed: set[int], ts: datetime) -> Reading:
        point = self.points[index]
        image = images.get(point.function, {})
        value: float | str | None = None
        quality = Quality.ERROR
        if index not in failed and image.keys() >= self._registers[index]:
            try:
                value = point.decode(image)
            except (ValueError, ArithmeticError) as exc:
                log.debug("%s: %s: undecodable: %s", self.name, point.point, exc)
            else:
                quality = Quality.MISSING if value is None else Quality.GOOD
        return Reading(device=self.name, point=point.point, kind=point.kind, value=value,
                       unit=point.unit, ts=ts, quality=quality)


def _replace(stats: DeviceStats, **increments: int) -> DeviceStats:
    """``stats`` with each named counter increased by the given amount."""
    return dataclasses.replace(
        stats, **{name: getattr(stats, name) + step for name, step in increments.items()})


async def probe(profile: Profile, reader: TableReader, unit: int) -> DeviceIdentity | None:
    """Who the device at ``unit`` is if it belongs to ``profile``'s family, else ``None``.

    An exception response (e.g. illegal address) means "not this family";
    :class:`DeviceUnreachable` propagates.
    """
    image: dict[str, dict[int, int]] = defaultdict(dict)
    try:
        for function, address, count in profile.identify_spans():
            regs = await read_registers(reader, function, address, count, unit=unit)
            image[function].update(zip(range(address, address + count), regs, strict=True))
        return profile.identity(image)
    except DeviceProtocolError:
        return None
    except ValueError as exc:  # e.g. a serial number that is not UTF-8
        log.debug("unit %d: %s identification undecodable: %s", unit, profile.family, exc)
        return None
