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
from typing import Any, Self, TypeVar
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


@dataclass
class History:
    """What a part's fit reads: the learnable events of [start, end) (``where`` and its values
    ``params``, a WHERE clause over ``events``), the business time zone, and the shared part of
    every agent that has learnable events there."""

    query: Query
    where: str
    params: list[Any]
    start: datetime
    end: datetime
    timezone: str
    agents: dict[str, Baseline]

    @cached_property
    def by_hour_of_week(self) -> list[HourRow]:
        """Per agent and local (weekday, hour): on how many days it was active then, its calls and
        failed calls. One scan of the history, made for the first part that asks, shared by all."""
        rows = self.query(
            f"""
            SELECT agent, isodow(local) - 1 AS dow, hour(local) AS h, count(DISTINCT CAST(local AS DATE)) AS days,
                   count(*) AS calls, count(*) FILTER (WHERE failed) AS failures
            FROM (SELECT agent, timezone(?, event_time) AS local, error_code IS NOT NULL AS failed
                  FROM events WHERE {self.where})
            GROUP BY ALL
            """,  # noqa: S608 - the WHERE is the driver's fixed string; values are bound
            [self.timezone, *self.params])
        return [(str(a), int(d), int(h), int(days), int(c), int(f)) for a, d, h, days, c, f in rows]


def fit_shared(query: Query, where: str, params: list[Any], start: datetime, end: datetime,
               timezone: str) -> dict[str, Baseline]:
    """The shared part of every agent with learnable events in [start, end) (``where``)."""
    totals = query(
        f"""
        SELECT agent, count(*) AS calls, count(*) FILTER (WHERE error_code IS NOT NULL) AS failures,
               count(DISTINCT CAST(timezone(?, event_time) AS DATE)) AS active_days,
               min(event_time) AS first_seen
        FROM events WHERE {where} GROUP BY agent
        """,  # noqa: S608 - the WHERE is the driver's fixed string; values are bound
        [timezone, *params])
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
