"""The installer's terminal for ``hems-agent provision``: a wrong answer is explained and asked
again (up to :data:`ATTEMPTS` times), then the run stops with nothing written.

Every value comes from a flag, else from the existing configuration, else (on a terminal) from a
prompt (see :mod:`agent.installer.provision.inputs`); each is checked by the same function of
:mod:`agent.installer.provision.checks` whichever way it came.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from agent.installer.provision.checks import (
    ProvisionError,
    RecipientInput,
    check_device,
    check_recipient,
    fingerprint,
)
from agent.installer.scan.range import device_answers

T = TypeVar("T")
ATTEMPTS = 3


class Prompter:
    """Asks on the terminal; a wrong answer is explained and asked again."""

    def __init__(self, read: Callable[[str], str] = input,
                 secret: Callable[[str], str] = getpass.getpass) -> None:
        self._read, self._secret = read, secret

    def ask(self, question: str, check: Callable[[str], T], *, default: str | None = None,
            secret: bool = False) -> T:
        shown = f"{question} [{default}]: " if default else f"{question}: "
        for attempt in range(1, ATTEMPTS + 1):
            answer = (self._secret if secret else self._read)(shown).strip()
            if not answer and default is not None:
                answer = default
            try:
                return check(answer)
            except ValueError as exc:
                left = ATTEMPTS - attempt
                print(f"  ✗ {exc}" + (f" — try again ({left} left)" if left else ""),
                      file=sys.stderr, flush=True)
        raise ProvisionError(f"{question}: no valid answer after {ATTEMPTS} attempts; "
                             "nothing was written")

    def confirm(self, question: str) -> bool:
        return self._read(f"{question} [y/N]: ").strip().lower() in ("y", "yes")

    def items(self, question: str, check: Callable[[str], T]) -> list[T]:
        """Ask for several values, one per line; an empty line ends the list."""
        found: list[T] = []
        while True:
            text = self.ask(question + " (empty line: done)", lambda s: s)
            if not text:
                return found
            try:
                found.append(check(text))
            except ValueError as exc:
                print(f"  ✗ {exc} — try again", file=sys.stderr, flush=True)

    def recipient(self, known: frozenset[str]) -> list[RecipientInput]:
        """Recipient keys, each confirmed by its fingerprint before it is accepted."""

        def confirmed(text: str) -> RecipientInput:
            candidate = check_recipient(text, known)
            print(f"  {candidate.id}: {candidate.kem}, fingerprint "
                  f"{fingerprint(candidate.key_id)}", flush=True)
            if not self.confirm(f"  Is this {candidate.id}'s fingerprint as on the key sheet?"):
                raise ValueError(f"{candidate.id}: fingerprint not confirmed, key not added")
            return candidate

        return self.items("Recipient public key ID=FILE", confirmed)

    def device(self) -> list[dict[str, Any]]:
        """Devices one by one; each must answer before it is accepted."""

        def reachable(text: str) -> dict[str, Any]:
            spec = check_device(text)
            problem = asyncio.run(device_answers(spec))
            if problem is not None:
                raise ValueError(f"device {spec['name']} does not answer: {problem}")
            return spec

        return self.items("Device NAME=HOST[:PORT][/UNIT]", reachable)
