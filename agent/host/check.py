"""The result of one ``hems-agent doctor`` check, shared by every check family and the report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"  # worth knowing, not a failure (e.g. a check turned off in the config)


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One result: what was checked, how it went, in plain words, and the fix for a failure."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def passed(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.PASS, detail=detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status=Status.FAIL, detail=detail, fix=fix)
