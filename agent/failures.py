"""Context for a failure that is contained (one message dropped, one task restarted).

A contained failure is logged once, with where it happened but without its message: an
exception raised while checking outside input may quote that input, and logs carry no
personal data.
"""

from __future__ import annotations


def raised_at(exc: BaseException) -> str:
    """``module:line`` of the innermost frame ``exc`` was raised in (``?`` if unknown)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_globals.get('__name__', '?')}:{tb.tb_lineno}"
