"""The strict JSON reader: what it refuses, with which reason, and what it still accepts."""

from __future__ import annotations

import json

import pytest

from policy import strict_json
from policy.errors import PolicyError
from policy.strict_json import MAX_DEPTH, JSONRefused, loads, nesting_depth


@pytest.mark.parametrize(("data", "reason"), [
    (b"[" * 2000 + b"]" * 2000, "too_deep"),
    (b'{"a":' * 2000, "too_deep"),  # cut short: refused before the parser sees it
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too_deep"),
    (b'{"seq":1,"seq":2}', "duplicate_key"),
    (b'[{"a":{"b":1,"b":1}}]', "duplicate_key"),
    (b"NaN", "not_finite"),
    (b"[-Infinity]", "not_finite"),
    (b"1e400", "not_finite"),
    (b"9" * 5000, "syntax"),  # beyond Python's 4,300-digit int conversion limit
    (b'["\\ud800"]', "lone_surrogate"),
    (b'{"\\udfff":1}', "lone_surrogate"),
    (b"\xff{}", "encoding"),
    (b"{} {}", "syntax"),
    (b'"\x01"', "syntax"),
    (b"", "syntax"),
])
def test_refusals_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(JSONRefused) as caught:
        loads(data)
    assert caught.value.reason == reason and str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PolicyError)


def test_ascii_is_enforced_when_asked() -> None:
    assert loads('["é"]'.encode()) == ["é"]
    with pytest.raises(JSONRefused, match="not ASCII"):
        loads('["é"]'.encode(), encoding="ascii")


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, None, True, "x"], "b": {"c": "😀"}},
    [[[[]]]],
    "a" * 100_000,
    -0.0,
    10 ** 4000,
])
def test_what_json_dumps_writes_reads_back(value: object) -> None:
    assert loads(json.dumps(value)) == value
    assert loads(json.dumps(value, ensure_ascii=False).encode()) == value


def test_the_depth_limit_is_inclusive_and_strings_do_not_count() -> None:
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(at_limit) is not None
    in_strings = json.dumps(["[" * 5000, "\\" + "{" * 5000, '"]'])
    assert nesting_depth(in_strings.encode()) == 1
    assert loads(in_strings)[0] == "[" * 5000


def test_the_depth_scan_stops_counting_at_an_unterminated_string() -> None:
    # The string swallows the rest, as it does for the parser, which fails right there.
    data = b'["' + b"[" * 5000
    assert nesting_depth(data) == 1
    with pytest.raises(JSONRefused, match="Unterminated string") as caught:
        loads(data)
    assert caught.value.reason == "syntax"


def test_a_repeated_key_message_shows_the_key_briefly() -> None:
    with pytest.raises(JSONRefused, match=r"key 'aaaa.*' appears twice") as caught:
        loads('{"' + "a" * 500 + '":1,"' + "a" * 500 + '":2}')
    assert len(str(caught.value)) < 100
    with pytest.raises(JSONRefused, match=r"key \(unprintable\) appears twice"):
        loads('{"\\n":1,"\\n":2}')


def test_the_limit_sits_far_below_the_recursion_limit() -> None:
    import sys

    assert sys.getrecursionlimit() > strict_json.MAX_DEPTH * 4
