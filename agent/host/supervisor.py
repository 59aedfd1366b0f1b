"""Restart-with-backoff for tasks whose failure must never take the daemon down, and the bounded
stop of tasks (:func:`cancel_and_wait`).

Transports do not retry; this is the one place that owns backoff (capped exponential with full
jitter). A task that ran well for a while resets its backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Backoff:
    """Capped exponential backoff with full jitter."""

    initial: float = 1.0
    cap: float = 300.0
    reset_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    stop: asyncio.Event,
    backoff: Backoff | None = None,
    on_failure: Callable[[str, BaseException], None] | None = None,
    fatal: tuple[type[BaseException], ...] = (),
    clock: Callable[[], float] = lambda: asyncio.get_running_loop().time(),
) -> None:
    """Run ``run()`` until ``stop`` is set, restarting it with backoff when it fails.

    ``run`` returning normally while ``stop`` is not set counts as a failure too (a poller is
    not supposed to end). Cancellation, and errors of the ``fatal`` types, pass straight
    through.
    """
    backoff = backoff or Backoff()
    while not stop.is_set():
        started = clock()
        try:
            await run()
            if stop.is_set():
                return
            error: BaseException = RuntimeError("task ended unexpectedly")
        except fatal:
            raise
        except Exception as exc:  # contain one task's failure; logged once, with context
            error = exc
        if clock() - started >= backoff.reset_after:
            backoff.reset()
        delay = backoff.next_delay()
        log.warning("%s failed (%s: %s); restarting in %.1f s",
                    name, type(error).__name__, error, delay)
        if on_failure is not None:
            on_failure(name, error)
        try:
            async with asyncio.timeout(delay):
                await stop.wait()
        except TimeoutError:
            continue


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *,
                          grace: float | None) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait at most ``grace`` seconds (None: no bound) for them to end
    (their own cleanup runs); returns those still running then, which are logged as "did not
    stop in time" by name. The caller goes on either way, with the rest of its own deadline.

    The wait is :func:`asyncio.wait`, so a cancellation aimed at the caller (or its own
    ``asyncio.timeout``) is never swallowed: it propagates, and the tasks stay cancelled. A
    task that ended with an error other than its cancellation has that error raised here,
    once all have been waited for, as awaiting it would.
    """
    tasks = list(tasks)
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    late: list[asyncio.Task[Any]] = []
    if pending:
        _, still = await asyncio.wait(pending, timeout=grace)
        late = [task for task in pending if task in still]
    if late:
        log.warning("did not stop in time: %s", ", ".join(task.get_name() for task in late))
    for task in tasks:
        error = task.exception() if task.done() and not task.cancelled() else None
        if error is not None:
            raise error
    return late
