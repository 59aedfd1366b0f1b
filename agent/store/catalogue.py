"""The purpose catalogue a signed update delivered, kept in the state directory.

``catalogue.json`` is written atomically (temporary file, fsync, rename, directory fsync) only
after the new version has been validated, so a power cut leaves the old file or the new one.
At start-up :func:`newest_catalogue` prefers the stored version over the configured (or factory)
one when it is newer; versions are dot-separated numbers (``2026.1`` < ``2026.2`` < ``2027.1``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from policy.catalogue import Catalogue, parse_catalogue
from policy.errors import PolicyError
from policy.storage import atomic_write, fsync_dir

log = logging.getLogger(__name__)

CATALOGUE_FILE = "catalogue.json"
_VERSION = re.compile(r"\d{1,9}(\.\d{1,9}){0,5}")


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a catalogue version; ValueError if it is not dot-separated numbers."""
    if _VERSION.fullmatch(version) is None:
        raise ValueError(f"catalogue version {version!r} is not dot-separated numbers "
                         "(e.g. 2026.2)")
    return tuple(int(part) for part in version.split("."))


def is_newer(candidate: Catalogue, current: Catalogue) -> bool:
    """Whether ``candidate``'s version is strictly newer; ValueError if either is unordered."""
    return version_key(candidate.version) > version_key(current.version)


def store_catalogue(state_dir: Path, text: bytes) -> Path:
    """Write a validated catalogue's JSON text to the state directory, atomically."""
    path = state_dir / CATALOGUE_FILE
    atomic_write(path, text)
    fsync_dir(state_dir)
    return path


def newest_catalogue(configured: Catalogue, state_dir: Path) -> Catalogue:
    """The stored catalogue if it is valid and newer than ``configured``, else ``configured``."""
    path = state_dir / CATALOGUE_FILE
    if not path.exists():
        return configured
    try:
        stored = parse_catalogue(path.read_bytes(), source=str(path))
        newer = is_newer(stored, configured)
    except (OSError, PolicyError, ValueError) as exc:
        log.warning("ignoring the stored catalogue %s: %s", path, exc)
        return configured
    return stored if newer else configured
