"""Learned behaviour: each agent's normal rhythm, fitted from its own history.

A baseline is fitted on the ``history`` days before a scoring window (default 28, as CloudTrail
Insights does). It has two kinds of content:

* the **shared part** (:class:`Baseline`), which every detector may read: the agent, the history
  range and business time zone it was fitted in, its active local days, its calls and failed calls,
  and how many of each weekday it was observed on (from its first local day in the history to the
  end: where its first activity lies). Whether it is ``learned`` (at least MIN_ACTIVE_DAYS active
  days) is decided here, once, for every detector;
* the **parts detectors learn** (:class:`Learned`): a detector that needs more declares
  ``learns = <its part>``, a small dataclass of its own fields with a ``fit`` over the learnable
  events of the history (SQL run through :attr:`History.query`: nothing here touches the store).
  odd_hours learns when the agent acts, failure_storm how it fails, new_source where it calls from.

Each part learns from *per-day rows* (``Learned.daily``, the shared part's ``SHARED_DAILY``): a
day's events reduced to sums, maxima and distinct local days per agent and a few keys, which
combine across days. ``pipeline.detection.features`` keeps them as each UTC day seals, so a refit
reads O(agents x days) rows; :meth:`History.daily` gives a part its rows over the history, kept or
computed from events, and the fit combines them.

``pipeline.detection.learning`` fits the shared part and every detector's part, stores them and
loads them. All aggregation runs in DuckDB, so fitting costs memory for the per-agent tables only,
however long the history.

Stored, a baseline is one flat JSON object: the shared fields and each part's fields side by side
(names never collide: the detector catalogue test checks). A field missing from an older stored
baseline takes its part's default (``None`` for what is not learned yet, e.g. the sources of a
baseline stored before sources were learned: not judged until the next fit), and a field a newer
version added is ignored, so stored baselines load across versions, both ways.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar, Self, TypeVar
from zoneinfo import ZoneInfo

import numpy as np

HISTORY = timedelta(days=28)
MIN_ACTIVE_DAYS = 7  # below this an agent's rhythm is not known: fall back to declared hours

# How a part's fit reads the store: DB-API style, ``query(sql, params) -> rows`` (positional ``?``).
Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class Learned(ABC):
    """What one detector learns about an agent, beyond the shared part: subclass it as a
    ``@dataclass`` in the detector's module, and declare it there with ``learns = <the class>``.

    Every field needs a default, so a baseline stored before the field existed still loads; the
    default must mean "not learned" to the detector (``None``, an empty profile). Field names are
    the stored JSON's keys: they must not collide with the shared fields or another part's."""

    # The per-day rows its fit reads (``History.part_rows``), or None when it reads only the shared
    # part's: a SELECT over ``{events}`` with ``{tz}`` (:func:`fill`), no ``?``. Its rows must
    # combine across days and across pieces of one day (sums, maxima, distinct local days), for a
    # day's rows are stored as the UTC day seals and the day's events may come in pieces.
    daily: ClassVar[str | None] = None

    @classmethod
    @abstractmethod
    def fit(cls, history: History) -> dict[str, Self]:
        """This part for each agent of ``history.agents``, from the learnable events of the history
        (an agent left out gets the defaults)."""

    @classmethod
    def stored_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type] # a dataclass, by contract

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Self:
        """The part from a stored baseline's flat JSON object: its own keys, defaults for those it
        lacks, everything else ignored."""
        return cls(**{k: data[k] for k in cls.stored_fields() if k in data})

    def stored(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload] # a dataclass, by contract


P = TypeVar("P", bound=Learned)


@dataclass
class Baseline:
    """The shared part of an agent's baseline, and the parts detectors learned (``part``)."""

    agent: str
    history_start: datetime
    history_end: datetime
    timezone: str
    active_days: int  # distinct local days with any activity
    calls: int
    failures: int
    # days of each weekday (Monday first) from the agent's first local day in the history to its end
    observed_by_weekday: list[int] = field(default_factory=lambda: [0] * 7)
    parts: dict[type[Learned], Learned] = field(default_factory=dict)

    @property
    def learned(self) -> bool:
        """Enough history to say what is normal (at least MIN_ACTIVE_DAYS active days)."""
        return self.active_days >= MIN_ACTIVE_DAYS

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def observed_days(self) -> int:
        """Local days from its first activity in the history to the end of the history."""
        return sum(self.observed_by_weekday)

    def part(self, kind: type[P]) -> P | None:
        """What a detector learned (None: not fitted with this baseline)."""
        found = self.parts.get(kind)
        return found if isinstance(found, kind) else None

    def to_json(self) -> str:
        """One flat object: the shared fields, then each part's."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "parts"}
        for key in ("history_start", "history_end"):
            data[key] = data[key].isoformat()
        for part in self.parts.values():
            data.update(part.stored())
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str, kinds: Iterable[type[Learned]] = ()) -> Baseline:
        """A stored baseline with the parts ``kinds`` (each from its own keys of the object)."""
        data = json.loads(text)
        for key in ("history_start", "history_end"):
            data[key] = datetime.fromisoformat(data[key])
        shared = {f.name for f in fields(cls)} - {"parts"}
        baseline = cls(**{k: v for k, v in data.items() if k in shared})
        baseline.parts = {kind: kind.from_stored(data) for kind in kinds}
        return baseline


# (agent, weekday 0-6, local hour, days active in that hour, calls, failed calls)
HourRow = tuple[str, int, int, int, int, int]

# The shared part's per-day rows: per agent, local day and local hour, its calls, failed calls and
# first call. ``by_hour_of_week``, ``fit_shared`` and the stored-baseline check combine them.
SHARED_DAILY = """
SELECT agent, CAST(local AS DATE) AS local_day, hour(local) AS h, count(*) AS calls,
       count(*) FILTER (WHERE failed) AS failures, min(event_time) AS first_seen
FROM (SELECT agent, event_time, timezone({tz}, event_time) AS local, error_code IS NOT NULL AS failed
      FROM {events} WHERE in_range)
GROUP BY ALL
"""

# How the per-day rows of a history are read: ``rows(key, daily_sql) -> (from_sql, params)``, a
# parenthesised FROM-able relation and the values its ``?`` take (``pipeline.detection.features``
# reads stored rows where it can).
Rows = Callable[[str, str], tuple[str, list[Any]]]


def raw_rows(daily: str, where: str, params: list[Any], timezone: str) -> tuple[str, list[Any]]:
    """A part's per-day rows computed from the learnable events themselves: ``daily`` over
    ``events WHERE <where>``, every event in range."""
    source = f"(SELECT *, true AS in_range FROM events WHERE {where})"  # noqa: S608 - fixed SQL
    return "(" + fill(daily, source, timezone) + ")", params * daily.count("{events}")


def fill(daily: str, source: str, timezone: str) -> str:
    """A daily SQL with its placeholders filled: ``{events}`` (the events it reads, with a boolean
    ``in_range``: false for the events before the range that a sliding window may look back on)
    and ``{tz}`` (the business time zone, a quoted literal)."""
    return daily.replace("{events}", source).replace("{tz}", "'" + timezone.replace("'", "''") + "'")


@dataclass
class History:
    """What a part's fit reads: the learnable events of [start, end) (``where`` and its values
    ``params``, a WHERE clause over ``events``), the business time zone, the shared part of every
    agent that has learnable events there, and how per-day rows are read (``rows``; default:
    computed from the events).

    A part learns from per-day rows (:attr:`Learned.daily`): :meth:`daily` gives the rows of the
    whole history, stored ones for the days kept as they sealed and computed ones for the rest, so
    a refit reads O(agents x days) rows, not the raw events."""

    query: Query
    where: str
    params: list[Any]
    start: datetime
    end: datetime
    timezone: str
    agents: dict[str, Baseline]
    rows: Rows | None = None

    def daily(self, key: str, sql: str) -> tuple[str, list[Any]]:
        """The per-day rows ``sql`` gives over the history: a FROM-able relation and its values."""
        if self.rows is not None:
            return self.rows(key, sql)
        return raw_rows(sql, self.where, self.params, self.timezone)

    def part_rows(self, kind: type[Learned]) -> tuple[str, list[Any]]:
        assert kind.daily is not None, f"{kind.__name__} declares no daily rows"
        return self.daily(kind.__name__, kind.daily)

    @cached_property
    def by_hour_of_week(self) -> list[HourRow]:
        """Per agent and local (weekday, hour): on how many days it was active then, its calls and
        failed calls. From the shared per-day rows, for the first part that asks, shared by all."""
        source, params = self.daily(SHARED, SHARED_DAILY)
        rows = self.query(
            f"""
            WITH daily AS {source}
            SELECT agent, isodow(local_day) - 1 AS dow, h, count(DISTINCT local_day) AS days,
                   sum(calls) AS calls, sum(failures) AS failures
            FROM daily GROUP BY ALL
            """,  # noqa: S608 - the source is the driver's fixed SQL; values are bound
            params)
        return [(str(a), int(d), int(h), int(days), int(c), int(f)) for a, d, h, days, c, f in rows]


SHARED = "shared"  # the key of the shared part's per-day rows


def fit_shared(source: tuple[str, list[Any]], query: Query, start: datetime, end: datetime,
               timezone: str) -> dict[str, Baseline]:
    """The shared part of every agent with learnable events in [start, end), from the shared
    per-day rows (``source``: :meth:`History.daily` of :data:`SHARED_DAILY`)."""
    text, params = source
    totals = query(
        f"""
        WITH daily AS {text}
        SELECT agent, sum(calls) AS calls, sum(failures) AS failures,
               count(DISTINCT local_day) AS active_days, min(first_seen) AS first_seen
        FROM daily GROUP BY agent
        """,  # noqa: S608 - the source is the driver's fixed SQL; values are bound
        params)
    return {str(agent): Baseline(str(agent), start, end, timezone, int(active_days), int(calls), int(failures),
                                 observed_days(first_seen, end, timezone))
            for agent, calls, failures, active_days, first_seen in totals}


def observed_days(first_seen: datetime, end: datetime, timezone: str) -> list[int]:
    """How many of each weekday (Monday first) from the agent's first local day in the history to
    the end."""
    tz = ZoneInfo(timezone)
    first: date = first_seen.astimezone(tz).date()
    last: date = (end - timedelta(microseconds=1)).astimezone(tz).date()
    days = np.arange(np.datetime64(first), np.datetime64(last) + 1)
    weekday = (days.astype("datetime64[D]").view("int64") + 3) % 7  # 1970-01-01 was a Thursday (3)
    return [int(n) for n in np.bincount(weekday, minlength=7)]
