"""JSON Schemas of the envelope bodies, one per header ``kind``, and the receiver's check.

The schemas (``<kind>.schema.json``, JSON Schema 2020-12) are the normative body format of
docs/wire-format.md §4; any validator can use them. This module checks a body against its
kind's schema with a small validator of the subset they use (``type``, ``enum``, ``const``,
``properties``/``required``/``additionalProperties``, ``items``/``prefixItems``/``minItems``/
``maxItems``, ``pattern``, ``minimum``/``maximum``, ``format: date-time``, ``oneOf``, local
``$ref``), so the receiver needs no schema library. A schema using any other keyword is
refused when loaded, so nothing in a schema is silently left unchecked.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

KINDS = ("data", "consent", "deletion", "event")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_CHECKED = {"type", "enum", "const", "properties", "required", "additionalProperties",
            "items", "prefixItems", "minItems", "maxItems", "pattern", "minimum", "maximum",
            "format", "oneOf", "$ref"}
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) in (int, float),
}


class SchemaError(ValueError):
    """A schema uses a keyword this validator does not check."""


@cache
def schema(kind: str) -> dict[str, Any]:
    """The parsed schema of ``kind``'s body (checked for unsupported keywords)."""
    text = resources.files(__name__).joinpath(f"{kind}.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    _check_keywords(loaded, kind)
    return loaded


def _check_keywords(node: Any, where: str) -> None:
    if isinstance(node, dict):
        unknown = set(node) - _ANNOTATIONS - _CHECKED
        if unknown:
            raise SchemaError(f"{where}: unsupported keywords {sorted(unknown)}")
        for key, sub in node.items():
            if key in ("properties", "$defs"):
                for name, s in sub.items():
                    _check_keywords(s, f"{where}/{key}/{name}")
            elif key in ("items", "additionalProperties", "oneOf", "prefixItems"):
                for s in sub if isinstance(sub, list) else [sub]:
                    _check_keywords(s, f"{where}/{key}")


def body_problem(kind: str, body: Any) -> str | None:
    """Where and why ``body`` breaks ``kind``'s schema (e.g. ``/records/0/good: expected
    integer``), or None if it fits."""
    root = schema(kind)
    return _problem(root, body, "", root)


def _problem(s: Any, value: Any, at: str, root: dict[str, Any]) -> str | None:
    if not isinstance(s, dict):  # true/false schemas
        return None if s else f"{at or '/'}: not allowed"
    if "$ref" in s:
        s = _resolve(root, s["$ref"])
    for check in (_scalar_problem, _object_problem, _array_problem, _one_of_problem):
        found = check(s, value, at or "/", root)
        if found is not None:
            return found
    return None


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise SchemaError(f"only local $ref is supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _scalar_problem(s: dict[str, Any], v: Any, at: str, root: dict[str, Any]) -> str | None:
    types = s.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](v) for t in names):
            return f"{at}: expected {' or '.join(names)}, got {_json_type(v)}"
    if "const" in s and not _same(v, s["const"]):
        return f"{at}: must be {json.dumps(s['const'])}"
    if "enum" in s and not any(_same(v, e) for e in s["enum"]):
        return f"{at}: not one of {json.dumps(s['enum'])}"
    if isinstance(v, str):
        if "pattern" in s and re.search(_ecma_end(s["pattern"]), v) is None:
            return f"{at}: does not match {s['pattern']}"
        if s.get("format") == "date-time" and not _is_datetime(v):
            return f"{at}: not an ISO 8601 date-time with an offset"
    if _TYPES["number"](v) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            return f"{at}: below {s['minimum']}"
        if "maximum" in s and v > s["maximum"]:
            return f"{at}: above {s['maximum']}"
    return None


def _object_problem(s: dict[str, Any], v: Any, at: str, root: dict[str, Any]) -> str | None:
    if not isinstance(v, dict):
        return None
    missing = [k for k in s.get("required", ()) if k not in v]
    if missing:
        return f"{at}: missing {missing}"
    props, extra = s.get("properties", {}), s.get("additionalProperties", True)
    for key, item in v.items():
        sub = props.get(key, extra)
        if sub is False:
            return f"{at}: unexpected key {_cut(key)!r}"
        found = _problem(sub, item, f"{at.rstrip('/')}/{_cut(key)}", root)
        if found is not None:
            return found
    return None


def _array_problem(s: dict[str, Any], v: Any, at: str, root: dict[str, Any]) -> str | None:
    if not isinstance(v, list):
        return None
    if not s.get("minItems", 0) <= len(v) <= s.get("maxItems", len(v)):
        return f"{at}: {len(v)} items, expected {s.get('minItems', 0)}..{s.get('maxItems')}"
    prefix = s.get("prefixItems", [])
    for index, item in enumerate(v):
        sub = prefix[index] if index < len(prefix) else s.get("items", True)
        found = _problem(sub, item, f"{at.rstrip('/')}/{index}", root)
        if found is not None:
            return found
    return None


def _one_of_problem(s: dict[str, Any], v: Any, at: str, root: dict[str, Any]) -> str | None:
    if "oneOf" not in s:
        return None
    results = [_problem(sub, v, at, root) for sub in s["oneOf"]]
    fits = results.count(None)
    if fits == 1:
        return None
    if fits == 0:
        return f"{at}: fits none of its forms ({'; '.join(str(r) for r in results)})"
    return f"{at}: fits more than one of its forms"


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # true is not 1


def _ecma_end(pattern: str) -> str:
    """A final ``$`` as ECMA-262 reads it: Python's also matches before a trailing newline."""
    if pattern.endswith("$") and not pattern.endswith(r"\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def _is_datetime(text: str) -> bool:
    """RFC 3339 ``date-time``: seconds and an offset are required."""
    if _RFC3339.fullmatch(text) is None:
        return False
    try:
        datetime.fromisoformat(text.upper())
    except ValueError:  # e.g. month 13
        return False
    return True


def _json_type(v: Any) -> str:
    return next(name for name in ("null", "boolean", "integer", "number", "string", "array",
                                  "object") if _TYPES[name](v) and
                (name != "integer" or type(v) is int))


def _cut(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit - 3]}..."
