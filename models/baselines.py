"""Learned behaviour: each agent's normal rhythm, fitted from its own history.

A baseline is fitted on the ``history`` days before a scoring window (default 28, as CloudTrail
Insights does) and holds, per agent:

* when it acts: for each weekday and hour of the day, in the business time zone, on how many of
  the observed days it was active then (the hour-of-week profile), and the same pooled into
  weekdays vs weekends;
* how much and how often it fails: calls, failed calls, its worst 5-minute count of failures,
  and its busiest 5 minutes of calls (how bursty it is).

All aggregation runs in DuckDB, so fitting costs memory for the per-agent tables only, however long
the history. Baselines are stored with the data range they were fitted on; ``trailwarden train``
refits explicitly and ``detect`` fits what it needs for its window (never looking past it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.store import Store, utcnow

HISTORY = timedelta(days=28)
MIN_ACTIVE_DAYS = 7  # below this an agent's rhythm is not known: fall back to declared hours


@dataclass
class Baseline:
    agent: str
    history_start: datetime
    history_end: datetime
    timezone: str
    active_days: int  # distinct local days with any activity
    observed_weekdays: int  # Mon-Fri days from the agent's first activity to history_end
    observed_weekends: int
    calls: int
    failures: int
    max_failures_5m: int  # the worst 5 minutes of failures in the history
    max_calls_5m: int  # calls in its busiest 5-minute bucket (burstiness)
    observed_by_weekday: list[int] = field(default_factory=lambda: [0] * 7)  # days of each weekday seen
    # days active at [weekday 0-6][hour 0-23] (local time)
    hour_of_week: list[list[int]] = field(default_factory=lambda: [[0] * 24 for _ in range(7)])

    @property
    def learned(self) -> bool:
        """Enough history to say what is normal (at least MIN_ACTIVE_DAYS active days)."""
        return self.active_days >= MIN_ACTIVE_DAYS

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    def hour_share(self, weekday: int, hour: int) -> float:
        """On what share of the observed days of this kind (weekday/weekend) the agent was active
        at this hour of the day."""
        days = self.hour_of_week
        weekend = weekday >= 5
        kinds = range(5, 7) if weekend else range(5)
        observed = self.observed_weekends if weekend else self.observed_weekdays
        if not observed:
            return 0.0
        return sum(days[d][hour] for d in kinds) / observed

    def near_share(self, weekday: int, hour: int, spread: int = 1) -> float:
        """The highest :meth:`hour_share` within ``spread`` hours: someone who works until 19:00
        is not odd at 20:15."""
        return max(self.hour_share(weekday, (hour + k) % 24) for k in range(-spread, spread + 1))

    def unusual_hours(self, min_share: float, spread: int = 1) -> np.ndarray:
        """168 flags, one per hour of the week (Monday 00:00 first): is acting then unusual,
        i.e. :meth:`near_share` below ``min_share``? The vectorized form of the detector's test."""
        days = np.asarray(self.hour_of_week, dtype=float)  # 7 x 24
        weekday = days[:5].sum(axis=0) / max(self.observed_weekdays, 1) if self.observed_weekdays else np.zeros(24)
        weekend = days[5:].sum(axis=0) / max(self.observed_weekends, 1) if self.observed_weekends else np.zeros(24)
        near = [np.max([np.roll(share, -k) for k in range(-spread, spread + 1)], axis=0)
                for share in (weekday, weekend)]
        return np.concatenate([near[0]] * 5 + [near[1]] * 2) < min_share

    def weeks_active_at(self, weekday: int, hour: int) -> int:
        return self.hour_of_week[weekday][hour]

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("history_start", "history_end"):
            data[key] = data[key].isoformat()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Baseline:
        data = json.loads(text)
        for key in ("history_start", "history_end"):
            data[key] = datetime.fromisoformat(data[key])
        return cls(**data)


def fit(store: Store, end: datetime, timezone: str, history: timedelta = HISTORY,
        agents: list[str] | None = None) -> dict[str, Baseline]:
    """Fit every agent's baseline on [end - history, end), entirely in SQL."""
    start = end - history
    where = "event_time >= ? AND event_time < ?"
    params: list[Any] = [start, end]
    if agents is not None:
        where += " AND list_contains(?, agent)"
        params.append(agents)
    totals = store.con.execute(
        f"""
        SELECT agent, count(*) AS calls, count(*) FILTER (WHERE error_code IS NOT NULL) AS failures,
               count(DISTINCT CAST(timezone(?, event_time) AS DATE)) AS active_days,
               min(event_time) AS first_seen
        FROM events WHERE {where} GROUP BY agent
        """,  # noqa: S608 - the WHERE is a fixed string; values are bound
        [timezone, *params]).fetchall()
    if not totals:
        return {}
    profile = store.con.execute(
        f"""
        SELECT agent, isodow(local) - 1 AS dow, hour(local) AS h, count(DISTINCT CAST(local AS DATE)) AS days
        FROM (SELECT agent, timezone(?, event_time) AS local FROM events WHERE {where})
        GROUP BY ALL
        """,  # noqa: S608 - as above
        [timezone, *params]).fetchall()
    # the worst 5 minutes of failures, sliding: (t - 5 min, t] at each failure, as failure_storm counts
    bursts = dict(store.con.execute(
        f"""
        SELECT agent, max(n) FROM (
            SELECT agent, count(*) OVER (PARTITION BY agent ORDER BY event_time
                RANGE BETWEEN INTERVAL 299999999 MICROSECOND PRECEDING AND CURRENT ROW) AS n
            FROM events WHERE {where} AND error_code IS NOT NULL)
        GROUP BY agent
        """,  # noqa: S608 - as above
        params).fetchall())
    busy = dict(store.con.execute(
        f"""
        SELECT agent, max(n) FROM (
            SELECT agent, time_bucket(INTERVAL 5 MINUTE, event_time) AS b, count(*) AS n
            FROM events WHERE {where} GROUP BY ALL)
        GROUP BY agent
        """,  # noqa: S608 - as above
        params).fetchall())
    out: dict[str, Baseline] = {}
    for agent, calls, failures, active_days, first_seen in totals:
        by_weekday = _observed_days(first_seen, end, timezone)
        out[agent] = Baseline(agent, start, end, timezone, int(active_days), sum(by_weekday[:5]),
                              sum(by_weekday[5:]), int(calls), int(failures), int(bursts.get(agent) or 0),
                              int(busy.get(agent) or 0), by_weekday)
    for agent, dow, hour, days in profile:
        out[agent].hour_of_week[int(dow)][int(hour)] = int(days)
    return out


def _observed_days(first_seen: datetime, end: datetime, timezone: str) -> list[int]:
    """How many of each weekday (Monday first) from the agent's first local day in the history to
    the end."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(timezone)
    first: date = first_seen.astimezone(tz).date()
    last: date = (end - timedelta(microseconds=1)).astimezone(tz).date()
    days = np.arange(np.datetime64(first), np.datetime64(last) + 1)
    weekday = (days.astype("datetime64[D]").view("int64") + 3) % 7  # 1970-01-01 was a Thursday (3)
    return [int(n) for n in np.bincount(weekday, minlength=7)]


def usual_hours(baseline: Baseline, min_share: float = 0.05) -> str:
    """The local hours an agent keeps, e.g. ``weekdays 09-20, weekends none``."""
    parts = []
    for label, weekday in (("weekdays", 0), ("weekends", 5)):
        hours = [h for h in range(24) if baseline.hour_share(weekday, h) >= min_share]
        parts.append(f"{label} {_ranges(hours) or 'none'}")
    return ", ".join(parts)


def _ranges(hours: list[int]) -> str:
    if len(hours) == 24:
        return "all day"
    out, start = [], None
    for h in range(25):
        if h < 24 and h in hours:
            start = h if start is None else start
        elif start is not None:
            out.append(f"{start:02d}-{h:02d}")
            start = None
    return " ".join(out)


def save(store: Store, baselines: dict[str, Baseline]) -> None:
    """One statement for all agents (row-at-a-time inserts cost ~1 ms each in DuckDB)."""
    if not baselines:
        return
    items = list(baselines.values())
    when = pa.timestamp("us", tz="UTC")
    table = pa.table({
        "agent": [b.agent for b in items],
        "history_start": pa.array([b.history_start for b in items], when),
        "history_end": pa.array([b.history_end for b in items], when),
        "timezone": [b.timezone for b in items],
        "fitted_at": pa.array([utcnow()] * len(items), when),
        "model": [b.to_json() for b in items],
    })
    with store.transaction() as con:
        con.register("_tw_baselines", table)
        try:
            con.execute("INSERT OR REPLACE INTO baselines SELECT * FROM _tw_baselines")
        finally:
            con.unregister("_tw_baselines")


def load_or_fit(store: Store, end: datetime, timezone: str, history: timedelta = HISTORY) -> dict[str, Baseline]:
    """The baselines for a window starting at ``end``: stored ones when fitted on exactly that
    history, else fitted now (and stored, when the store is writable)."""
    rows = store.con.execute(
        "SELECT agent, model FROM baselines WHERE history_end = ? AND history_start = ? AND timezone = ?",
        [end, end - history, timezone]).fetchall()
    if rows:
        return {agent: Baseline.from_json(model) for agent, model in rows}
    fitted = fit(store, end, timezone, history)
    if not store.read_only:
        save(store, fitted)
    return fitted
