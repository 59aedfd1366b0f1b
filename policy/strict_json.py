"""The one JSON reader for bytes that come from outside or back from disk.

``json.loads`` alone is not safe on hostile input: about 2 KB of nested brackets raises
``RecursionError`` (not ``ValueError``) from deep inside the parser, a duplicated key is
silently resolved to its last value (so two parsers may read the same signed bytes
differently), ``NaN``/``Infinity`` and ``1e999`` (infinity) are accepted, and ``"\\ud800"``
yields a string that cannot be encoded back to UTF-8. :func:`loads` refuses all of these with
:class:`JSONRefused`, whose ``reason`` is a short code for metrics and logs:

``encoding``
    the bytes are not in the expected encoding (ASCII or UTF-8);
``too_deep``
    arrays and objects nest deeper than ``max_depth``; checked by a scan of the bytes *before*
    the parser runs, so the parser never recurses deeper than that;
``syntax``
    not one JSON text (includes integers beyond Python's 4,300-digit conversion limit);
``duplicate_key``
    an object names the same key twice;
``not_finite``
    ``NaN``, ``Infinity`` or a number that overflows to infinity;
``lone_surrogate``
    a string holds half of a UTF-16 surrogate pair.

These are the rules of I-JSON (RFC 7493) plus the depth bound. Callers translate
:class:`JSONRefused` into their own documented error once, at their edge.
"""

from __future__ import annotations

import math
import re
from json import JSONDecoder
from typing import Any

from policy.errors import PolicyError

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted. The deepest legitimate documents nest
under 10 (a catalogue is 6 deep, 8 inside a command, 9 in the ledger file); 64 leaves room and
stays far below the interpreter's recursion limit (1,000), whoever calls."""

# A string, or an unterminated one up to the end: never backtracks, so the scan is linear.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_OPEN = frozenset(b"[{")
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONRefused(PolicyError, ValueError):
    """JSON bytes refused by :func:`loads`; ``reason`` is a short code, the message says why.

    A ``ValueError`` too, so readers that already treat bad JSON as a ``ValueError`` keep doing
    so.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def loads(data: bytes | str, *, encoding: str = "utf-8", max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON text strictly; raise :class:`JSONRefused` for anything refused.

    ``data`` as bytes is decoded with ``encoding`` (``"ascii"`` for canonical, signed JSON).
    """
    if isinstance(data, str):
        if _SURROGATE.search(data):
            raise JSONRefused("lone_surrogate", "the text holds a lone UTF-16 surrogate")
        text, raw = data, data.encode("utf-8")
    else:
        raw = bytes(data)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise JSONRefused("encoding", f"not {encoding.upper()} text (byte {exc.start})"
                              ) from None
    if raw.count(b"[") + raw.count(b"{") > max_depth:  # else it cannot nest deeper
        depth = nesting_depth(raw)
        if depth > max_depth:
            raise JSONRefused("too_deep", f"nests {depth} levels deep; at most {max_depth} "
                                          "are allowed")
    try:
        value = _DECODER.decode(text)
    except RecursionError:  # unreachable after the depth scan; the last line of defence
        raise JSONRefused("too_deep", "nests too deep for the parser") from None
    except JSONRefused:
        raise
    except ValueError as exc:  # JSONDecodeError, and the int conversion's digit limit
        raise JSONRefused("syntax", f"not valid JSON: {_first_line(exc)}") from None
    if b"\\u" in raw:  # only an escape can make a lone surrogate (UTF-8 decoding refuses them)
        _check_strings(value)
    return value


def nesting_depth(raw: bytes) -> int:
    """Deepest nesting of arrays and objects in ``raw``, strings skipped. Exact for valid
    JSON; for any other input never below the depth a parser reaches before its first error
    (up to that error both agree on where strings begin and end)."""
    brackets = (_STRING.sub(b"", raw) if b'"' in raw else raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif depth:
            depth -= 1
    return deepest


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        raise JSONRefused("duplicate_key", f"key {_shown(key)} appears twice in an object")
    return obj


def _constant(name: str) -> Any:
    raise JSONRefused("not_finite", f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONRefused("not_finite", "a number overflows to infinity")
    return value


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates anywhere (keys and values); iterative, depth is bounded anyway."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            strings: Any = (node,)
        elif isinstance(node, dict):
            strings = node.keys()
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
            continue
        else:
            continue
        for text in strings:
            if not text.isascii() and _SURROGATE.search(text):
                raise JSONRefused("lone_surrogate", "a string holds a lone UTF-16 surrogate")


def _shown(key: str) -> str:
    """A key for an error message: short and printable (it may come from anyone)."""
    return repr(key[:32]) if key.isprintable() else "(unprintable)"


def _first_line(exc: ValueError) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


_DECODER = JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
