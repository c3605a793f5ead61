"""Recording a command or a service step in ``runs``: its counts when it succeeds, its error (one
line, scrubbed of secrets) when it fails. One helper for the CLI and the service."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.core.errors import TrailwardenError
from pipeline.core.output import to_jsonable
from pipeline.store.store import Store

log = logging.getLogger("trailwarden")


def error_line(exc: BaseException) -> str:
    """What a failed run records: a trailwarden error's message, else the type and the message
    (the first line of either)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, TrailwardenError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def recorded_run(store: Store, command: str, *, timed: bool = False) -> Iterator[dict[str, Any]]:
    """Record ``command`` in ``runs`` around the block, which fills the yielded counts. On an
    exception the run is recorded as failed with :func:`error_line` and the exception goes on; a
    block that sets ``counts["error"]`` (a step that partly failed) is recorded as failed with it.
    ``timed`` adds the run's ``seconds`` to its counts."""
    run_id = store.start_run(command)
    started = time.monotonic()
    counts: dict[str, Any] = {}
    try:
        yield counts
    except BaseException as exc:
        _finish(store, run_id, counts, error_line(exc), started if timed else None)
        raise
    error = counts.get("error")
    _finish(store, run_id, counts, str(error) if error else None, started if timed else None)


def _finish(store: Store, run_id: int, counts: dict[str, Any], error: str | None, started: float | None) -> None:
    if started is not None:
        counts["seconds"] = round(time.monotonic() - started, 3)
    try:
        store.finish_run(run_id, to_jsonable(counts), error=error)
    except Exception:
        if error is None:
            raise
        log.debug("could not record the failed run", exc_info=True)  # the failure itself goes on
