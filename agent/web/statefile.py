"""Small JSON files of the household page in the state directory (sessions, pending requests).

Each file is one JSON object with a format version ``"v"``, written atomically with mode 0600
(temp file, fsync, rename, directory fsync), so a power cut leaves the old or the new file.
A file that cannot be read back is not fatal: the page must still let the household in. It is
renamed to ``<name>.damaged`` (kept for inspection, never overwritten by the next save) and a
warning names it; the page starts as if the file were absent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from agent.wire.keys import write_file_atomic
from policy import strict_json

log = logging.getLogger(__name__)

T = TypeVar("T")


class DamagedFile(ValueError):
    """The file's content is not what its reader expects (the message says what)."""


def load(path: Path, version: int, parse: Callable[[dict[str, Any]], T]) -> T | None:
    """``parse`` of the object stored at ``path``; None when there is no file (or it was
    damaged and set aside). ``parse`` raises :class:`DamagedFile`, ``KeyError``,
    ``TypeError`` or ``ValueError`` on content it does not accept."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = strict_json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != version:
            raise DamagedFile(f"expected a JSON object with \"v\": {version}")
        return parse(data)
    except (KeyError, TypeError, ValueError) as exc:  # json and DamagedFile are ValueErrors
        aside = path.with_name(path.name + ".damaged")
        path.replace(aside)
        log.warning("%s is damaged (%s: %s); moved to %s and started without it", path,
                    type(exc).__name__, exc, aside.name)
        return None


def save(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` (with its ``"v"``) atomically, mode 0600."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("ascii")
    write_file_atomic(path, body + b"\n", mode=0o600)


def when(value: object) -> datetime:
    """An aware datetime stored as ISO 8601 (what :meth:`datetime.isoformat` wrote)."""
    if not isinstance(value, str):
        raise DamagedFile(f"time {value!r} is not a string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise DamagedFile(f"time {value!r} has no UTC offset")
    return parsed
