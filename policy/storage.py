"""Crash-safe files: a TinyDB storage that replaces its file atomically, and the write helper.

TinyDB's own JSON storage rewrites its file in place, so a power cut mid-write leaves a
truncated file. Here every write goes to a temporary file in the same directory, is flushed
and fsynced, then ``os.replace``-d over the old file, and the directory is fsynced so the
rename itself is durable. At any instant the path holds either the complete old content or the
complete new content.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from policy import strict_json
from policy.errors import LedgerIntegrityError
from policy.strict_json import JSONRefused

TMP_SUFFIX = ".tmp"


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) so that a crash leaves either the
    old or the new file."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # a temp file left by a crash keeps its old mode otherwise
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicJSONStorage(Storage):
    """TinyDB storage with atomic, durable writes (see the module docstring).

    A leftover temporary file from an interrupted write is ignored and removed: the interrupted
    write never happened. A file that is not valid JSON raises :class:`LedgerIntegrityError`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        tmp = self._path.with_name(self._path.name + TMP_SUFFIX)
        if tmp.exists():
            tmp.unlink()

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return None
        if not raw:
            return None
        try:
            data = strict_json.loads(raw)
        except JSONRefused as exc:
            raise LedgerIntegrityError(str(self._path), "(file)",
                                       f"not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise LedgerIntegrityError(str(self._path), "(file)", "not a JSON object")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        atomic_write(self._path, json.dumps(data, ensure_ascii=False, sort_keys=True)
                     .encode("utf-8"))

    def close(self) -> None:
        """Nothing stays open between writes."""
