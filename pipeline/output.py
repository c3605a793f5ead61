"""Render rows as a table, JSON or CSV - the shared ``--format`` of every listing command."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

FORMATS = ("table", "json", "csv")


def to_jsonable(value: Any) -> Any:
    """Timestamps become ISO-8601 UTC (``...Z``); JSON columns stay parsed; NaN and infinities
    (a pandas gap, a stored ``NaN``, ``0/0`` in SQL), pandas' NA and NaT become null, numpy
    scalars plain numbers: the result is strict JSON (write it with ``allow_nan=False``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # np.float32, np.int64, np.bool_
        return to_jsonable(value.item())
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
        return json.dumps([dict(zip(columns, map(to_jsonable, r), strict=True)) for r in rows],
                          indent=2, ensure_ascii=False, default=str, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(v, csv_mode=True) for v in row])
        return buf.getvalue().rstrip("\n")
    return table(columns, rows)


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
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if csv_mode else text.replace("\n", " ").replace("\r", " ").replace("\t", " ")
