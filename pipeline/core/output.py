"""Render rows as a table, JSON or CSV - the shared ``--format`` of every listing command.

Stored values are attacker-controlled (event fields), so what reaches a terminal is inert
(``pipeline.core.inert``): in a table every control, bidi and invisible character is shown as an escape
(``\\x1b``, ``<U+202E>``); JSON keeps the data exact but writes those characters as ``\\u``
escapes. CSV is data for other programs and keeps every value exactly as stored, except on a
terminal, where it is shown inert like a table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from pipeline.core.inert import json_inert, one_line, reveal

FORMATS = ("table", "json", "csv")
ALIASES = {"text": "table"}  # the old name of `table` on some commands: scripts still pass it


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


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, keys: int = 1) -> str:
    """``table`` (``text`` is its old name, kept for scripts), ``json`` (an array of objects) or
    ``csv`` (a header row; lists and mappings as JSON). ``keys``: leading columns a table cuts last."""
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
    return table([_cell(c) for c in columns], rows, keys=keys)


def json_text(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` for a terminal: non-ASCII text stays readable, and every character that could
    act on the terminal or hide is a ``\\u`` escape (the same data once parsed)."""
    return json_inert(json.dumps(value, ensure_ascii=False, default=str, allow_nan=False, **kwargs))


# Columns of free text: they give way first when a table is too wide (down to a readable share).
FREE_TEXT = frozenset({"summary", "reason", "error", "last_error", "purpose", "message", "used actions",
                       "removed_reason", "evidence", "identities", "usual_hours"})
KEY_MIN = 12  # a key column is cut only when nothing else is left to cut, and never below this


def terminal_width() -> int | None:
    """The width to fit: ``$COLUMNS`` when set, else the terminal stdout writes to; ``None``
    (no limit) when stdout is a pipe or a file, so ``| grep`` and ``> file`` get every character."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        if sys.stdout.isatty():
            return os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        pass
    return None


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int | None = None,
          keys: int = 1) -> str:
    """A plain aligned table, cut to fit the terminal (see :func:`terminal_width`).

    What gives way, in order: free-text columns (summary, reason, error...) down to a readable
    share of the width, then the widest other columns, then any column but the first ``keys``
    (the id or name that says what a row is), which are cut last. A cut cell ends with "…".
    When even the headers cannot be shown whole, each row is shown as a block (:func:`expanded`).
    """
    width = max_width or terminal_width()
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    if width is not None:
        numbers = {i for i in range(len(columns)) if all(_is_number(r[i]) for r in rows)}
        widths = fit_widths(list(columns), widths, width - 2 * (len(columns) - 1), keys, numbers)
        if any(w < len(c) and w < max(len(r[i]) for r in cells) for i, (c, w) in enumerate(zip(columns, widths,
                                                                                            strict=True))):
            return expanded(columns, cells, width)
    lines = ["  ".join(c.ljust(w)[:w] for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in cells:
        lines.append("  ".join(_fit(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def expanded(columns: Sequence[str], cells: Sequence[Sequence[str]], width: int) -> str:
    """One block of ``column  value`` lines per row: what a table becomes when the terminal is
    too narrow to show even its headers whole (like psql's expanded display)."""
    label = max(len(c) for c in columns)
    out = []
    for n, row in enumerate(cells, 1):
        out.append(f"-[ {n} ]" + "-" * max(0, min(width, label + 20) - len(f"-[ {n} ]")))
        out += [f"{c.ljust(label)}  {_fit(v, max(width - label - 2, 8))}".rstrip() for c, v in zip(columns, row,
                                                                                                   strict=True)]
    return "\n".join(out)


def fit_widths(columns: list[str], widths: list[int], budget: int, keys: int = 1,
               numbers: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Column widths summing to at most ``budget`` where possible, cutting in the order
    :func:`table` documents; each step shrinks its widest columns first, evenly. Columns of
    ``numbers`` are cut only when nothing else is left to cut but the keys: a cut count misleads."""
    widths = list(widths)
    free = [i for i, c in enumerate(columns) if i >= keys and c.lower() in FREE_TEXT]
    others = [i for i in range(keys, len(columns)) if i not in free]
    share = max(16, (2 * budget // 5) // max(1, len(free)))
    steps = [(free, lambda i: share), (others, lambda i: max(len(columns[i]), 6)),
             (free + others, lambda i: widths[i] if i in numbers else 4),
             (free + others, lambda i: 4 if i in numbers else 3),
             (list(range(min(keys, len(columns)))), lambda i: KEY_MIN)]
    for chosen, floor in steps:
        excess = sum(widths) - budget
        if excess <= 0:
            break
        _shrink(widths, {i: min(widths[i], floor(i)) for i in chosen}, excess)
    return widths


def _shrink(widths: list[int], floors: dict[int, int], excess: int) -> None:
    """Take ``excess`` characters from the columns in ``floors``, always from the widest ones
    (water-filling), never below a column's floor."""
    while excess > 0:
        open_ = [i for i in floors if widths[i] > floors[i]]
        if not open_:
            return
        top = max(widths[i] for i in open_)
        widest = [i for i in open_ if widths[i] == top]
        below = max([widths[i] for i in open_ if widths[i] < top] + [max(floors[i] for i in widest)])
        step = min(top - below, -(-excess // len(widest))) or 1
        for i in widest:
            cut = min(step, excess, widths[i] - floors[i])
            widths[i] -= cut
            excess -= cut


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float | Decimal) and not isinstance(value, bool))


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


class Progress:
    """A one-line progress bar with an honest time estimate, for a known total (bytes).

    The estimate is the whole run's average rate so far: remaining x elapsed / done. (click's
    bar averages per-sample rates, and a first sample taken while almost nothing was done - a
    file's read-ahead not yet reported - made a 22-second ingest say "0% 10:20:12".) No estimate
    is shown until 1% is done and a second has passed. Redrawn at most every ``every`` seconds;
    ``clock`` is injectable for tests.
    """

    def __init__(self, total: int, write: Callable[[str], Any], *, label: str = "ingesting",
                 width: int = 30, every: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.total, self.write, self.label, self.width, self.every = max(total, 0), write, label, width, every
        self.clock = clock
        self.done = 0
        self.started = clock()
        self._drawn_at: float | None = None

    def update(self, n: int) -> None:
        self.done = min(self.total, self.done + max(n, 0))
        now = self.clock()
        if self._drawn_at is None or now - self._drawn_at >= self.every:
            self._drawn_at = now
            self.write("\r" + self.line(now))

    def finish(self) -> None:
        self.write("\r" + self.line(self.clock(), final=True) + "\n")

    def eta(self, now: float) -> float | None:
        """Seconds left at the run's average rate; None while too little is done to say."""
        elapsed = now - self.started
        if self.total == 0 or self.done * 100 < self.total or elapsed < 1.0:
            return None
        return elapsed * (self.total - self.done) / self.done

    def line(self, now: float, final: bool = False) -> str:
        share = self.done / self.total if self.total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        if final:
            tail = f"done in {_clock(now - self.started)}"
        else:
            left = self.eta(now)
            tail = f"ETA {_clock(left)}" if left is not None else "ETA --:--"
        return f"{self.label}  [{bar}]  {share:4.0%}  {tail}"


def _clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02}:{rest % 60:02}" if h else f"{rest // 60:02}:{rest % 60:02}"


@contextmanager
def written(path: str | os.PathLike[str] | None) -> Iterator[TextIO]:
    """A text stream to ``path``, or to standard output when ``path`` is ``None``. A file is
    written beside its target and renamed into place when the block ends without error, so a
    reader never sees half of it and a failure leaves what was there before."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            yield out
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
