"""Read planning: coverage, the 125-register limit, optimality against brute force and greedy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.planner import MAX_REGISTERS, CostModel, ReadRequest, blocks, greedy, plan

MODELS = [CostModel.tcp(), CostModel.rtu(9600), CostModel.rtu(19200),
          CostModel(name="flat", request_cost=1.0, register_cost=0.0)]
model_st = st.sampled_from(MODELS)
span_st = st.tuples(st.integers(0, 400), st.integers(1, 4))
spans_st = st.lists(span_st, min_size=0, max_size=40)


def covered(requests: tuple[ReadRequest, ...], span: tuple[int, int]) -> bool:
    address, count = span
    return any(r.address <= address and address + count <= r.end for r in requests)


@given(spans_st, model_st)
def test_every_span_is_read_whole_by_one_request(spans: list[tuple[int, int]],
                                                  model: CostModel) -> None:
    result = plan(spans, model)
    assert all(covered(result.requests, s) for s in spans)


@given(spans_st, model_st, st.none() | st.integers(0, 20))
def test_no_request_exceeds_125_registers(spans: list[tuple[int, int]], model: CostModel,
                                          max_gap: int | None) -> None:
    result = plan(spans, model, max_gap=max_gap)
    assert all(1 <= r.count <= MAX_REGISTERS for r in result.requests)
    assert all(covered(result.requests, s) for s in spans)


@given(spans_st, model_st)
def test_bounds_hold(spans: list[tuple[int, int]], model: CostModel) -> None:
    result = plan(spans, model)
    assert result.minimum <= len(result.requests) <= result.naive
    assert result.naive == len(set(spans))


@given(spans_st, model_st)
def test_never_costs_more_than_greedy(spans: list[tuple[int, int]], model: CostModel) -> None:
    baseline = sum(model.cost(r.count) for r in greedy(spans, model))
    assert plan(spans, model).cost <= baseline + 1e-12


def partitions(items: list[tuple[int, int]]) -> Iterator[list[list[tuple[int, int]]]]:
    """Every set partition of ``items``."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1:]]
        yield [[first], *part]


def brute_force(spans: list[tuple[int, int]], model: CostModel) -> float:
    """Cheapest plan over every grouping of spans into requests, consecutive or not."""
    best = float("inf")
    for part in partitions(sorted(set(spans))):
        ranges = [(min(a for a, _ in g), max(a + c for a, c in g)) for g in part]
        if all(end - start <= MAX_REGISTERS for start, end in ranges):
            best = min(best, sum(model.cost(end - start) for start, end in ranges))
    return best


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 3)), max_size=6), model_st)
def test_equals_brute_force_on_small_inputs(spans: list[tuple[int, int]],
                                            model: CostModel) -> None:
    assert plan(spans, model).cost == pytest.approx(brute_force(spans, model), abs=1e-12)


def test_tcp_bridges_gaps_that_rtu_9600_does_not() -> None:
    spans = [(0, 2), (40, 2)]
    assert plan(spans, CostModel.tcp()).requests == (ReadRequest(address=0, count=42),)
    assert len(plan(spans, CostModel.rtu(9600)).requests) == 2


def test_rtu_bridges_a_short_gap() -> None:
    assert len(plan([(0, 2), (5, 2)], CostModel.rtu(9600)).requests) == 1


def test_long_runs_split_at_125() -> None:
    spans = [(a, 1) for a in range(300)]
    result = plan(spans, CostModel.tcp())
    assert len(result.requests) == result.minimum == 3
    assert result.naive == 300


def test_max_gap_stops_bridging() -> None:
    spans = [(0, 2), (4, 2), (10, 2)]
    assert len(plan(spans, CostModel.tcp(), max_gap=2).requests) == 2
    assert len(plan(spans, CostModel.tcp(), max_gap=0).requests) == 3
    assert plan(spans, CostModel.tcp(), max_gap=0).minimum == 1


def test_overlapping_spans_merge_into_one_block() -> None:
    assert blocks([(10, 4), (12, 4), (16, 1), (10, 4)]) == [(10, 16), (16, 17)]


def test_empty_plan() -> None:
    result = plan([], CostModel.tcp())
    assert result.requests == () and result.minimum == 0 and result.cost == 0


@pytest.mark.parametrize(
    ("spans", "message"),
    [([(0, 0)], "not a valid register range"), ([(-1, 2)], "not a valid register range"),
     ([(65535, 2)], "not a valid register range"), ([(0, 100), (90, 40)], "exceed 125")],
)
def test_bad_spans_are_named(spans: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(spans, CostModel.tcp())


def test_rtu_cost_model_numbers() -> None:
    model = CostModel.rtu(9600, turnaround=0.0)
    char = 11 / 9600
    assert model.register_cost == pytest.approx(2 * char)
    assert model.request_cost == pytest.approx(20 * char)
    with pytest.raises(ValueError, match="baudrate"):
        CostModel.rtu(0)
