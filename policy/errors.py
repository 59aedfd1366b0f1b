"""The policy package's exceptions: one root, subclasses say what the caller does next.

* :class:`CatalogueError` — the purpose catalogue is invalid: fix the file, do not start.
* :class:`ConsentError` — a consent change was refused (unknown purpose, tier too fine,
  contract-required purpose): show the message to whoever asked, change nothing.
* :class:`LedgerIntegrityError` — the ledger on disk fails its hash chain, signature or head
  check: stop releasing data and raise an alarm; never repair silently.
"""

from __future__ import annotations


class PolicyError(Exception):
    """Root of every error raised by :mod:`policy`."""


class CatalogueError(PolicyError):
    """The catalogue file is invalid. The message names the file and the field path."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}")


class ConsentError(PolicyError):
    """A consent operation was refused or the consent state cannot be trusted."""


class LedgerIntegrityError(ConsentError):
    """The ledger was tampered with, truncated or is unreadable; ``record`` names where."""

    def __init__(self, source: str, record: str, problem: str) -> None:
        self.source = source
        self.record = record
        self.problem = problem
        super().__init__(f"{source}: record {record}: {problem}")
