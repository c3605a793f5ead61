"""Render rows as a table, JSON or CSV - the shared ``--format`` of every listing command.

Stored values are attacker-controlled (event fields), so what reaches a terminal is inert
(``pipeline.inert``): in a table every control, bidi and invisible character is shown as an escape
(``\\x1b``, ``<U+202E>``); JSON keeps the data exact but writes those characters as ``\\u``
escapes. CSV is data for other programs and keeps every value exactly as stored, except on a
terminal, where it is shown inert like a table.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pipeline.inert import json_inert, one_line, reveal

FORMATS = ("table", "json", "csv")


def to_jsonable(value: Any) -> Any:
    """Timestamps become ISO-8601 UTC (``...Z``); JSON columns stay parsed."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    if fmt == "json":
        return json_text([dict(zip(columns, map(to_jsonable, r), strict=True)) for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(v, csv_mode=True) for v in row])
        text = buf.getvalue().rstrip("\n")
        # CSV is data, exact in a pipe or a file; on a terminal a person reads it, and it is shown
        # inert like a table (line breaks and tabs kept: CSV quotes them)
        return reveal(text, keep="\n\t") if sys.stdout.isatty() else text
    return table([_cell(c) for c in columns], rows)


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` for a terminal: non-ASCII text stays readable, and every character that could
    act on the terminal or hide is a ``\\u`` escape (the same data once parsed)."""
    return json_inert(json.dumps(value, ensure_ascii=False, default=str, **kwargs))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int | None = None) -> str:
    """A plain aligned table; wide cells are cut with an ellipsis to fit the terminal."""
    width = max_width or shutil.get_terminal_size((160, 24)).columns
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    budget = max(width - 2 * (len(columns) - 1), 10 * len(columns))
    while sum(widths) > budget and max(widths) > 12:
        widest = widths.index(max(widths))
        widths[widest] = max(12, widths[widest] - max(1, (sum(widths) - budget)))
    lines = ["  ".join(c.ljust(w)[:w] for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in cells:
        lines.append("  ".join(_fit(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


def _cell(value: Any, csv_mode: bool = False) -> str:
    if value is None:
        return "" if csv_mode else "-"
    if isinstance(value, datetime):
        return to_jsonable(value)
    if isinstance(value, dict | list):
        text = json.dumps(to_jsonable(value), ensure_ascii=False)
        return text if csv_mode else one_line(text)
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if csv_mode else one_line(text)
