"""How an ingest is reported: one line per source, or CSV."""

from __future__ import annotations

from typing import Any

from pipeline.core.output import render

INGEST_CSV = ["source", "new", "duplicates", "quarantined", "files", "skipped_files", "error", "seconds"]


def ingest_csv(outcomes: list[Any], elapsed: float) -> str:
    """One row per source: its counts (0 where a source has no such count) and its error."""
    rows = [[o.name, *(o.as_dict().get(c, 0) for c in INGEST_CSV[1:6]), o.error, round(elapsed, 3)]
            for o in outcomes]
    return render(INGEST_CSV, rows, "csv")


def ingest_line(name: str, rep: dict[str, Any], elapsed: float) -> str:
    files = rep.get("files", 0)
    skipped = rep.get("skipped_files", 0)
    line = (f"{name}: {rep.get('new', 0):,} new events, {rep.get('duplicates', 0):,} duplicates, "
            f"{rep.get('quarantined', 0):,} quarantined from {files:,} file{'s' if files != 1 else ''}")
    if skipped:
        line += f" ({skipped:,} already ingested, skipped)"
    return line + f" in {elapsed:.1f}s"
