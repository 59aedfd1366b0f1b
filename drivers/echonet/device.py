"""The ECHONET Lite device poller, shaped like :class:`drivers.device.ModbusDevice`.

An :class:`EchonetDevice` is one object (address + EOJ) with the table entries its Get map
lists. :meth:`EchonetDevice.poll` Gets the properties that are due and returns canonical
readings, plus any values the device pushed (INF/INFC) since the last poll;
:meth:`EchonetDevice.next_due` tells the caller when to come back.

Qualities: a Get_SNA refusal (PDC 0) or a no-data / overflow code is ``MISSING`` for that read,
never the previous value; a wrong size or out-of-range value is ``ERROR``. A silent device ends
the cycle at once and, if nothing was read, raises :class:`DeviceUnreachable` (points stay due).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from drivers.echonet import meter
from drivers.echonet.client import EchonetClient
from drivers.echonet.codec import Eoj, Frame
from drivers.echonet.discovery import ObjectInfo, describe, meter_context
from drivers.echonet.tables import EpcSpec, MeterContext, decode_value
from drivers.errors import DeviceProtocolError, DeviceUnreachable
from drivers.models import DeviceIdentity, Quality, Reading

log = logging.getLogger(__name__)

PUSH_BUFFER = 1000  # pushed readings kept between polls; the oldest go first


@dataclass(slots=True)
class EchonetStats:
    """Counters since the device was created."""

    polls: int = 0
    requests: int = 0
    failed_requests: int = 0
    point_errors: int = 0
    point_missing: int = 0
    pushed: int = 0
    unreachable: int = 0


class EchonetDevice:
    """One ECHONET Lite object and the table entries to read from it. Read-only."""

    def __init__(self, *, name: str, client: EchonetClient, address: str, eoj: Eoj,
                 properties: Sequence[EpcSpec], identity: DeviceIdentity,
                 meter_context: MeterContext | None = None, pushed: Sequence[EpcSpec] = (),
                 chunk: int = 8, slack: float = 0.25) -> None:
        """``properties`` are polled (each at its ``interval``); ``pushed`` are decoded when
        the device sends them by INF/INFC; ``chunk`` limits EPCs per Get."""
        if not properties and not pushed:
            raise ValueError(f"device {name!r} has no properties to read")
        self.name, self.address, self.eoj, self.identity = name, address, eoj, identity
        self.properties = tuple(properties)
        self.meter = meter_context
        self.stats = EchonetStats()
        self._client, self._chunk, self._slack = client, chunk, slack
        self._pushed_specs = {p.code: p for p in pushed}
        self._next = [-math.inf] * len(self.properties)
        self._buffer: collections.deque[Reading] = collections.deque(maxlen=PUSH_BUFFER)
        self._unsubscribe = client.subscribe(self._notified)

    @classmethod
    async def open(cls, client: EchonetClient, *, name: str, address: str, eoj: Eoj,
                   info: ObjectInfo | None = None, chunk: int = 8) -> EchonetDevice:
        """Describe the object (Get map, identity, meter coefficient and unit) and build
        the device with the table entries its Get map lists."""
        info = info or await describe(client, address, eoj)
        if info.table is None:
            raise DeviceProtocolError(f"{address} {eoj}: class 0x{eoj.class_code:04X} has no "
                                      "EPC table")
        listed = [p for p in info.table.properties if p.code in info.get_map and p.point]
        polled = [p for p in listed if p.interval is not None]
        pushed = [p for p in info.table.properties if p.decoder == "fixed_time"]
        return cls(name=name, client=client, address=address, eoj=eoj, properties=polled,
                   identity=info.identity, meter_context=await meter_context(client, info),
                   pushed=pushed, chunk=chunk)

    def close(self) -> None:
        """Stop taking notifications."""
        self._unsubscribe()

    def next_due(self) -> float:
        """Monotonic time at which :meth:`poll` next has work (in the past: right away)."""
        return min(self._next, default=math.inf)

    def due(self, now: float) -> tuple[int, ...]:
        """Indexes of the properties due at ``now``."""
        return tuple(i for i, t in enumerate(self._next) if t <= now + self._slack)

    async def poll(self, now: float) -> list[Reading]:
        """Read the properties due at monotonic time ``now``, plus readings pushed since."""
        pushed = list(self._buffer)
        self._buffer.clear()
        due = self.due(now)
        if not due:
            return pushed
        self.stats.polls += 1
        values, failed = await self._read([self.properties[i].code for i in due])
        for i in due:
            previous, interval = self._next[i], self.properties[i].interval or 60.0
            self._next[i] = previous + interval if previous + interval > now else now + interval
        ts = datetime.now(UTC)
        readings = [self._reading(self.properties[i], values, failed, ts) for i in due]
        self.stats.point_errors += sum(r.quality is Quality.ERROR for r in readings)
        self.stats.point_missing += sum(r.quality is Quality.MISSING for r in readings)
        return pushed + readings

    async def _read(self, epcs: list[int]) -> tuple[dict[int, bytes | None], set[int]]:
        values: dict[int, bytes | None] = {}
        failed: set[int] = set()
        for start in range(0, len(epcs), self._chunk):
            part = epcs[start:start + self._chunk]
            self.stats.requests += 1
            try:
                values.update(await self._client.get(self.address, self.eoj, part))
            except DeviceProtocolError as exc:
                self.stats.failed_requests += 1
                failed.update(part)
                log.warning("%s: %s", self.name, exc)
            except DeviceUnreachable:
                self.stats.failed_requests += 1
                if not values:
                    self.stats.unreachable += 1
                    raise
                failed.update(epcs[start:])
                break
        return values, failed

    def _reading(self, entry: EpcSpec, values: dict[int, bytes | None], failed: set[int],
                 ts: datetime) -> Reading:
        assert entry.point is not None  # only point entries are polled
        value: float | str | None = None
        if entry.code in failed:
            quality = Quality.ERROR
        elif (edt := values.get(entry.code)) is None:
            quality = Quality.MISSING  # refused (Get_SNA): missing now, not the last value
        else:
            try:
                value = decode_value(entry, edt, self.meter)
                quality = Quality.GOOD if value is not None else Quality.MISSING
            except ValueError as exc:
                quality = Quality.ERROR
                log.warning("%s: %s", self.name, exc)
        return Reading(device=self.name, point=entry.point, kind=entry.kind, value=value,
                       unit=entry.unit, ts=ts, quality=quality)

    def _notified(self, address: str, frame: Frame) -> None:
        if address != self.address or frame.seoj != self.eoj:
            return
        polled = {p.code: p for p in self.properties}
        for prop in frame.properties:
            if (entry := self._pushed_specs.get(prop.epc)) is not None:
                try:
                    item = meter.decode_fixed_time(entry, prop.edt,
                                                   self.meter or MeterContext())
                except ValueError as exc:
                    log.warning("%s: pushed %s", self.name, exc)
                    continue
                self._buffer.append(meter.timed_reading(self.name, entry, item))
            elif (entry := polled.get(prop.epc)) is not None:
                self._buffer.append(self._reading(entry, {prop.epc: prop.edt}, set(),
                                                  datetime.now(UTC)))
            else:
                continue
            self.stats.pushed += 1
