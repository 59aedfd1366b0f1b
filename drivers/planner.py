"""Read planning: the cheapest set of read requests that covers every register span a poll needs.

Pure and synchronous. Spans come from :meth:`drivers.registers.RegisterPoint.spans`. A span is
never split across two requests (a 32-bit value read in two halves can tear), so overlapping
spans are first merged into blocks. A request then covers a run of consecutive blocks and the
gaps between them, at most :data:`MAX_REGISTERS` registers.

Cost model: a request costs ``request_cost`` seconds of bus time plus ``register_cost`` per
register it returns, gap registers included. On TCP the per-request round trip dominates; on RTU
every register costs 2 bytes of 11 bits on the wire, so at 9600 baud bridging a long gap is worse
than a second request. :func:`plan` is optimal for the model: a dynamic programme over the sorted
blocks (an optimal plan never needs a request that skips a block lying inside its range, so the
requests of some optimal plan cover consecutive runs of blocks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_REGISTERS = 125
"""Modbus limit for one read of holding or input registers."""

_BITS_PER_CHAR = 11  # RTU: start bit, 8 data bits, parity or second stop bit, stop bit
_REQUEST_CHARS = 8  # unit, function, address (2), count (2), CRC (2)
_RESPONSE_CHARS = 5  # unit, function, byte count, CRC (2); plus 2 per register
_SILENT_CHARS = 7  # a 3.5-character silent interval after the request and after the response


@dataclass(frozen=True, slots=True, kw_only=True)
class CostModel:
    """Estimated bus time of one read request: ``request_cost + registers * register_cost``."""

    name: str
    request_cost: float  # seconds per request, whatever its size
    register_cost: float  # seconds per register returned

    def __post_init__(self) -> None:
        if self.request_cost <= 0 or self.register_cost < 0:
            raise ValueError(f"cost model {self.name!r}: request_cost must be > 0 and "
                             f"register_cost >= 0, got {self.request_cost}, {self.register_cost}")

    def cost(self, count: int) -> float:
        """Bus time of one request returning ``count`` registers."""
        return self.request_cost + count * self.register_cost

    @classmethod
    def tcp(cls, *, round_trip: float = 0.005, register_cost: float = 0.000_01) -> CostModel:
        """Modbus TCP on a LAN: a few ms per round trip, a gap register costs next to nothing."""
        return cls(name="tcp", request_cost=round_trip, register_cost=register_cost)

    @classmethod
    def rtu(cls, baudrate: int, *, turnaround: float = 0.02, gap: float = 0.0) -> CostModel:
        """Modbus RTU at ``baudrate``: frame overhead, silent intervals and device turnaround
        per request, 2 bytes of 11 bits per register. ``gap`` is the bus's inter-request gap."""
        if baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        char = _BITS_PER_CHAR / baudrate
        overhead = (_REQUEST_CHARS + _RESPONSE_CHARS + _SILENT_CHARS) * char
        return cls(name=f"rtu-{baudrate}", request_cost=overhead + turnaround + gap,
                   register_cost=2 * char)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRequest:
    """One read: ``count`` registers from ``address``."""

    address: int
    count: int

    @property
    def end(self) -> int:
        """One past the last register read."""
        return self.address + self.count


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The requests for one poll, and how they compare with the bounds."""

    requests: tuple[ReadRequest, ...]
    minimum: int  # requests needed if gaps cost nothing (a lower bound for any plan)
    naive: int  # one request per distinct span, i.e. per point (plus its scale factors)
    cost: float  # estimated bus time of the plan, seconds

    @property
    def registers(self) -> int:
        """Registers transferred, gap registers included."""
        return sum(r.count for r in self.requests)


def blocks(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping spans into sorted, disjoint ``(start, end)`` blocks (end exclusive).

    Adjacent spans stay separate blocks: a request may end between them.
    Raises :class:`ValueError` for an empty or out-of-range span, or a block over 125 registers.
    """
    merged: list[tuple[int, int]] = []
    for address, count in sorted(set(spans)):
        if count < 1 or address < 0 or address + count > 0x10000:
            raise ValueError(f"span ({address}, {count}) is not a valid register range")
        if merged and address < merged[-1][1]:
            start, end = merged[-1]
            merged[-1] = (start, max(end, address + count))
        else:
            merged.append((address, address + count))
    for start, end in merged:
        if end - start > MAX_REGISTERS:
            raise ValueError(f"registers {start}..{end - 1} must be read at once but exceed "
                             f"{MAX_REGISTERS} registers")
    return merged


def plan(spans: Iterable[tuple[int, int]], model: CostModel, *,
         max_gap: int | None = None) -> Plan:
    """The cheapest requests covering ``spans`` under ``model``.

    ``max_gap`` forbids bridging more than that many unread registers in one request, for
    devices that answer reads across unimplemented registers with an exception.
    Ties in cost go to fewer requests.
    """
    span_set = set(spans)
    todo = blocks(span_set)
    requests = _optimal(todo, model, max_gap)
    return Plan(requests=requests, minimum=minimum_requests(todo), naive=len(span_set),
                cost=sum(model.cost(r.count) for r in requests))


def _optimal(todo: list[tuple[int, int]], model: CostModel,
             max_gap: int | None) -> tuple[ReadRequest, ...]:
    # best[j]: (cost, requests) of the cheapest plan for the first j blocks; back[j]: where the
    # last request of that plan starts.
    n = len(todo)
    best: list[tuple[float, int]] = [(0.0, 0)] + [(float("inf"), 0)] * n
    back = [0] * (n + 1)
    for j in range(1, n + 1):
        end = todo[j - 1][1]
        for i in range(j, 0, -1):  # the last request covers blocks i..j (1-based)
            start = todo[i - 1][0]
            if end - start > MAX_REGISTERS:
                break
            if i < j and max_gap is not None and todo[i][0] - todo[i - 1][1] > max_gap:
                break
            cost, count = best[i - 1]
            candidate = (cost + model.cost(end - start), count + 1)
            if candidate < best[j]:
                best[j], back[j] = candidate, i
    requests: list[ReadRequest] = []
    j = n
    while j > 0:
        i = back[j]
        requests.append(ReadRequest(address=todo[i - 1][0], count=todo[j - 1][1] - todo[i - 1][0]))
        j = i - 1
    return tuple(reversed(requests))


def minimum_requests(todo: list[tuple[int, int]]) -> int:
    """Fewest requests covering the blocks if gaps were free: greedy is optimal for this."""
    count, start = 0, None
    for block_start, block_end in todo:
        if start is None or block_end - start > MAX_REGISTERS:
            count, start = count + 1, block_start
    return count


def greedy(spans: Iterable[tuple[int, int]], model: CostModel) -> tuple[ReadRequest, ...]:
    """The obvious plan, kept as the baseline :func:`plan` must never lose to: extend the
    current request over the next gap while that is cheaper than starting a new request."""
    requests: list[ReadRequest] = []
    start = end = -1
    for block_start, block_end in blocks(spans):
        gap = block_start - end
        if requests and block_end - start <= MAX_REGISTERS and \
                gap * model.register_cost < model.request_cost:
            end = block_end
            requests[-1] = ReadRequest(address=start, count=end - start)
        else:
            start, end = block_start, block_end
            requests.append(ReadRequest(address=start, count=end - start))
    return tuple(requests)
