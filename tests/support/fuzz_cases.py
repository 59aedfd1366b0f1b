"""The fuzz tests, written once and instantiated twice: a few dozen examples each in
``make test`` (tests/unit/kernel/test_fuzz_smoke.py) and thousands in ``make proof``
(tests/proof/test_fuzz_*.py). ``cases(budget)`` returns the test functions for one budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import fuzz as f

Test = Callable[..., None]


def cases(examples: int, *, deadline: float | None = 5000) -> dict[str, Test]:
    """The fuzz tests with ``examples`` examples each (``deadline`` ms per example: a hang
    shows up as a deadline failure, not as a stuck run)."""
    budget = settings(max_examples=examples, deadline=deadline, derandomize=examples < 100,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

    @budget
    @given(st.lists(f.REGISTER, max_size=6), f.DTYPE, st.sampled_from(["big", "little"]),
           st.sampled_from(["big", "little", "middle"]))
    def codec(regs: list[int], dtype: str, word: str, byte: str) -> None:
        f.check_codec(regs, dtype, word, byte)

    @budget
    @given(st.data())
    def sunspec_decode(data: st.DataObject) -> None:
        model_id = data.draw(st.sampled_from(f.sunspec_models()))
        f.check_sunspec_decode(model_id, data.draw(st.lists(f.REGISTER, max_size=300)))

    @budget
    @given(st.lists(st.tuples(st.sampled_from([1, 103, 120, 160, 203, 802, 65535, 7]),
                              st.lists(f.REGISTER, max_size=80)), max_size=4),
           st.none() | st.sampled_from([0xFFFF, 0, 1]))
    def discovery(chain: list[tuple[int, list[int]]], tail: int | None) -> None:
        f.check_discovery(f.sunspec_image(chain, tail))

    @budget
    @given(f.EDITS)
    def profile_edits(edits: list[tuple[int, str, Any]]) -> None:
        f.check_profile(f.mutate(f.sungrow_profile(), edits))

    @budget
    @given(f.JSON)
    def profile_random(doc: Any) -> None:
        f.check_profile(doc)

    @budget
    @given(f.EDITS)
    def config_edits(edits: list[tuple[int, str, Any]]) -> None:
        doc = f.mutate(f.CONFIG_BASE, edits)
        f.check_config(f.toml_dumps(doc if isinstance(doc, dict) else {"x": doc}))

    @budget
    @given(st.text(max_size=200))
    def config_text(text: str) -> None:
        f.check_config(text)

    @budget
    @given(f.EDITS)
    def catalogue_edits(edits: list[tuple[int, str, Any]]) -> None:
        f.check_catalogue(json.dumps(f.mutate(f.factory_catalogue(), edits)))

    @budget
    @given(st.binary(max_size=200) | st.text(max_size=200))
    def catalogue_random(text: str | bytes) -> None:
        f.check_catalogue(text)

    @budget
    @given(f.BYTE_EDITS)
    def ledger(edits: list[tuple[int, str, bytes]]) -> None:
        f.check_ledger(f.mutate_bytes(f.ledger_bytes()[0], edits))

    @budget
    @given(f.PURPOSES, f.TIERS, f.KINDS, f.WINDOWS,
           st.lists(st.fixed_dictionaries({"point": f.POINTS, "mean": st.floats(0, 1e4)}),
                    max_size=4),
           st.integers(0, 2**63 - 1), st.booleans(), f.BYTE_EDITS)
    def receiver(purpose: str, tier: str, kind: str, window: int | None,
                 records: list[dict[str, Any]], seq: int, mutate: bool,
                 edits: list[tuple[int, str, bytes]]) -> None:
        genuine = f.seal_for_fuzz(purpose=purpose, tier=tier, kind=kind, window=window,
                                  records=records, seq=seq)
        payload = f.mutate_bytes(genuine, edits) if mutate else genuine
        f.check_receiver(genuine, payload, f"hems/v1/{f.SITE}/{purpose}/{kind}")

    return {name: fn for name, fn in locals().items() if callable(fn) and name != "budget"}
