"""Hand freed heap memory back to the system (glibc's ``malloc_trim``).

glibc keeps memory that Python and the libraries have freed inside its heap, and gives back on
its own only what lies at the top of the heap above a threshold. Start-up (thousands of
short-lived objects of the imports and the configuration) and the household page (templates
compiled on first use, a login's scrypt) leave such free pages behind. The daemon calls
:func:`trim` on every tick: with nothing to give back it takes microseconds.
On a C library without ``malloc_trim`` (musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the C library the interpreter itself is linked with
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # no C library to open, or not glibc
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
