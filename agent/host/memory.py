"""Hand freed heap memory back to the system (glibc's ``malloc_trim``).

glibc keeps memory that Python and the libraries have freed inside its heap, and gives back on
its own only what lies at the top of the heap above a threshold. Start-up (thousands of
short-lived objects of the imports and the configuration) and the household page (templates
compiled on first use, a login's scrypt) leave such free pages behind. The daemon calls
:func:`trim` once it is ready, and the page a second after it has answered
(:class:`DeferredTrim`, requests in a burst fold into one): not on every tick, where it took
about 0.1 ms of CPU each time, to give back pages the next poll takes again.
:func:`single_arena` keeps every thread's allocations in the main heap: the daemon's few
worker threads (the event loop's executor: a login's scrypt, file work) would each get an arena
of their own, kept for the process's life. On a C library other than glibc (musl) both do
nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
from collections.abc import Callable

_M_ARENA_MAX = -8  # glibc's malloc.h


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:  # the C library the interpreter itself is linked with
        return ctypes.CDLL(None)
    except OSError:
        return None


def single_arena() -> bool:
    """Have glibc malloc use one arena for all threads (call before threads start); True
    when it took."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, 1))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    function = getattr(_libc(), "malloc_trim", None)
    if function is None:  # not glibc
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    trim: Callable[[int], int] = function
    return trim


def trim() -> bool:
    """Return the heap's free pages to the system; True when some were returned."""
    function = _malloc_trim()
    if function is None:
        return False
    return bool(function(0))


class DeferredTrim:
    """One :func:`trim`, ``delay`` seconds after the first :meth:`request`; the requests made
    before it runs fold into it."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self._handle: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def request(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self._handle = None
        trim()
