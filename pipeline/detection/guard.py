"""Running one detector's work so that its failure loses nothing else (``detect`` and the RAM
drift pass share it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from detectors.base import Detector, Finding

log = logging.getLogger("pipeline.detection.detect")


def guarded(det: Detector, report: Any, what: str, run: Callable[[], list[Finding]]) -> list[Finding]:
    """``run()`` (one detector's work), timed and counted in ``report``; when it raises, the error
    is logged and recorded (``what`` says which work: " to combine", " on RAM snapshot 3") and
    it gives nothing: one broken detector never loses the others' findings."""
    stats = report.detectors.setdefault(det.id, {"findings": 0, "seconds": 0.0, "error": None})
    started = time.monotonic()
    try:
        found = run()
    except Exception as exc:
        log.error("detector %s failed%s: %s: %s", det.id, what, type(exc).__name__, exc)
        log.debug("detector %s failed%s", det.id, what, exc_info=True)
        stats["error"] = f"{type(exc).__name__}: {exc}"
        found = []
    stats["seconds"] = round(stats["seconds"] + time.monotonic() - started, 3)
    stats["findings"] += len(found)
    return found
