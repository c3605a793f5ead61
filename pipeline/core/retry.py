"""One way to retry a call: transient errors are retried with a back-off, terminal ones pass at
once, a stop request ends the wait, and what a failed attempt may have done can be checked before
trying again. Used by the SLS and LookupEvents readers and the Slack sender (dlt-style: every error
is marked transient or terminal, and retried in one place)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pipeline.core.errors import TrailwardenError

T = TypeVar("T")


class Stopped(Exception):
    """Asked to stop while waiting to retry: the caller ends its run at the last whole unit it
    handed over (a pull, a page), which the next run resumes from."""


def not_now(error: TrailwardenError) -> TrailwardenError:
    """Mark a transient error not to be retried within this run (an unreachable endpoint: the
    next run tries again)."""
    error.retry = False  # type: ignore[attr-defined]
    return error


def exponential(base: float, cap: float = 30.0) -> Callable[[TrailwardenError, int], float]:
    """Waits of ``base``, ``2 x base``, ``4 x base``... seconds, at most ``cap``."""
    return lambda _error, attempt: min(cap, base * 2 ** attempt)


def call_with_retries(call: Callable[[], T], *, classify: Callable[[Exception], TrailwardenError],
                      retries: int, wait: Callable[[TrailwardenError, int], float],
                      sleep: Callable[[float], None], stop: Callable[[], bool] = lambda: False,
                      recover: Callable[[TrailwardenError], T | None] | None = None) -> T:
    """``call()``, and again after a wait while it fails transiently, at most ``retries`` more times.

    ``classify`` turns what ``call`` raised into a trailwarden error (or raises something else,
    which passes through): a terminal one, or a transient one marked ``retry = False``, is raised
    at once; a transient one is retried, and raised as it is once the retries are spent. Before a
    wait, ``stop()`` true raises :class:`Stopped`. After a wait, ``recover(error)`` may find that
    the failed attempt took effect after all (a message posted before a timeout) and return its
    result instead of calling again.
    """
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:  # classify decides; what it does not know, it re-raises
            error = classify(exc)
        if not error.transient or not getattr(error, "retry", True) or attempt == retries:
            raise error
        if stop():
            raise Stopped
        sleep(wait(error, attempt))
        if recover is not None:
            found = recover(error)
            if found is not None:
                return found
    raise AssertionError("unreachable")
