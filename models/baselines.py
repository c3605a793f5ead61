"""Learned behaviour: each agent's normal rhythm, fitted from its own history.

A baseline is fitted on the ``history`` days before a scoring window (default 28, as CloudTrail
Insights does) and holds, per agent:

* when it acts: for each weekday and hour of the day, in the business time zone, on how many of
  the observed days it was active then (the hour-of-week profile), and the same pooled into
  weekdays vs weekends;
* how much and how often it fails: calls, failed calls, its worst 5-minute count of failures,
  and its busiest 5 minutes of calls (how bursty it is); and per hour of the week, its calls per
  day and failure rate (``rates_at``);
* where it calls from (``models.sources``): its source networks, regions and clients (user-agent
  families) with their calls, and how diverse they are: on how many local days each kind was seen,
  and how many of those days (after the first) brought a value never seen before. A role used from
  a fleet of instances brings new networks nearly every day; a CI key from one office, never.

Baselines stored before sources were learned load with those fields ``None``: not learned, for the
detectors that read them (``new_source``), until the next fit.

All aggregation runs in DuckDB, so fitting costs memory for the per-agent tables only, however long
the history. Baselines are stored with the data range they were fitted on; ``trailwarden train``
refits explicitly and ``detect`` fits what it needs for its window (never looking past it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from models.sources import IPV4_NETWORK_SQL, REGION_SQL, client_family, network_of
from pipeline.core.times import day_start, utcnow
from pipeline.store.store import Store

HISTORY = timedelta(days=28)
MIN_ACTIVE_DAYS = 7  # below this an agent's rhythm is not known: fall back to declared hours
MAX_SOURCES = 2000  # values kept per kind of source; an agent with more is taken as rotating them


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
    # calls and failed calls at [weekday 0-6][hour 0-23] (local time), over the whole history;
    # None: fitted before these were kept
    calls_by_hour: list[list[int]] | None = None
    failures_by_hour: list[list[int]] | None = None
    # where it calls from, per kind (models.sources.KINDS); None: fitted before sources were learned
    sources: dict[str, dict[str, int]] | None = None  # kind -> value -> calls
    source_days: dict[str, int] | None = None  # kind -> local days on which the kind was seen
    novel_days: dict[str, int] | None = None  # kind -> of those days after the first, how many brought a new value

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

    def rates_at(self, weekday: int, hour: int) -> dict[str, float] | None:
        """Its usual rates in this hour of the week: calls per observed day of that weekday, and
        the share of them that failed. None when not kept (an older baseline)."""
        if self.calls_by_hour is None or self.failures_by_hour is None:
            return None
        calls, failed = self.calls_by_hour[weekday][hour], self.failures_by_hour[weekday][hour]
        days = self.observed_by_weekday[weekday]
        return {"calls_per_day": round(calls / days, 2) if days else 0.0,
                "failure_rate": round(failed / calls, 4) if calls else 0.0}

    def known_sources(self, kind: str) -> dict[str, int]:
        """The values of a kind of source seen in the history, with their calls."""
        return (self.sources or {}).get(kind, {})

    def novelty(self, kind: str, min_days: int = MIN_ACTIVE_DAYS) -> float | None:
        """On what share of the days a kind of source was seen (after the first) a never-seen value
        appeared: 0 for an agent that always calls from the same places, near 1 for one that
        rotates. None when not learned: fitted before sources were, or seen on under ``min_days``
        days (at least 2)."""
        if self.source_days is None or self.novel_days is None:
            return None
        days = self.source_days.get(kind, 0)
        if days < max(min_days, 2):
            return None
        return self.novel_days.get(kind, 0) / (days - 1)

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
        known = {f.name for f in fields(cls)}  # older baselines lack fields (defaulted), newer may add some
        return cls(**{k: v for k, v in data.items() if k in known})


# Findings whose events a baseline must not learn from: what the team has not called a false
# positive. Suppressed findings are expected behaviour (learned); false positives are normal (learned).
UNLEARNED_STATUSES = ("open", "acknowledged", "resolved")

# The events of those findings, left out of a history [$1, $2): the event ids a finding lists, and,
# for a short finding whose ids were capped (findings keep up to 1,000), every event of its agent
# between its first and last event - a storm of 5,000 failures must not become the norm through the
# 4,000 ids it does not list. Long findings that were capped keep only their listed ids out.
_UNLEARNED = """
    event_id NOT IN (
        SELECT unnest(event_ids) FROM findings
        WHERE list_contains(?, status) AND last_seen >= ? AND first_seen < ?)
    AND NOT EXISTS (
        SELECT 1 FROM findings f
        WHERE list_contains(?, f.status) AND f.event_count > len(f.event_ids)
          AND f.last_seen - f.first_seen <= INTERVAL 1 DAY
          AND f.agent = events.agent AND events.event_time BETWEEN f.first_seen AND f.last_seen)
"""


def learnable(start: datetime, end: datetime, agents: list[str] | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its values) of the events a baseline fitted on [start, end) learns
    from: those of the window (and agents), without the events of open, acknowledged and resolved
    findings, so an incident never teaches the baseline that it is normal (a 45-failure storm
    would otherwise make the next identical storm look usual)."""
    where = "event_time >= ? AND event_time < ?"
    params: list[Any] = [start, end]
    if agents is not None:
        where += " AND list_contains(?, agent)"
        params.append(agents)
    statuses = list(UNLEARNED_STATUSES)
    return f"{where} AND {_UNLEARNED}", [*params, statuses, start, end, statuses]


def fit(store: Store, end: datetime, timezone: str, history: timedelta = HISTORY,
        agents: list[str] | None = None) -> dict[str, Baseline]:
    """Fit every agent's baseline on [end - history, end), entirely in SQL, from the events
    :func:`learnable` keeps."""
    start = end - history
    where, params = learnable(start, end, agents)
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
        SELECT agent, isodow(local) - 1 AS dow, hour(local) AS h, count(DISTINCT CAST(local AS DATE)) AS days,
               count(*) AS calls, count(*) FILTER (WHERE failed) AS failures
        FROM (SELECT agent, timezone(?, event_time) AS local, error_code IS NOT NULL AS failed
              FROM events WHERE {where})
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
    sources = _fit_sources(store, where, [timezone, *params])
    out: dict[str, Baseline] = {}
    for agent, calls, failures, active_days, first_seen in totals:
        by_weekday = _observed_days(first_seen, end, timezone)
        known, days, novel = sources.get(agent, ({}, {}, {}))
        out[agent] = Baseline(agent, start, end, timezone, int(active_days), sum(by_weekday[:5]),
                              sum(by_weekday[5:]), int(calls), int(failures), int(bursts.get(agent) or 0),
                              int(busy.get(agent) or 0), by_weekday, sources=known, source_days=days,
                              novel_days=novel)
    for b in out.values():
        b.calls_by_hour, b.failures_by_hour = [[0] * 24 for _ in range(7)], [[0] * 24 for _ in range(7)]
    for agent, dow, hour, days, calls, failures in profile:
        b = out[agent]
        b.hour_of_week[int(dow)][int(hour)] = int(days)
        assert b.calls_by_hour is not None and b.failures_by_hour is not None
        b.calls_by_hour[int(dow)][int(hour)], b.failures_by_hour[int(dow)][int(hour)] = int(calls), int(failures)
    return out


SourceStats = tuple[dict[str, dict[str, int]], dict[str, int], dict[str, int]]


def _fit_sources(store: Store, where: str, params: list[Any]) -> dict[str, SourceStats]:
    """Per agent and kind of source: each value's calls and first local day, and the days the kind
    was seen. SQL reduces the history to distinct (agent, kind, value) rows; only those reach
    Python, to fold IPv6 addresses into /64s and user agents into families."""
    rows = store.con.execute(
        f"""
        WITH combos AS (
            SELECT agent, CAST(timezone(?, event_time) AS DATE) AS day,
                   CASE ip_version WHEN 4 THEN {IPV4_NETWORK_SQL} WHEN 6 THEN source_ip END AS network,
                   {REGION_SQL} AS region, nullif(trim(user_agent), '') AS client, count(*) AS n
            FROM events WHERE {where} GROUP BY ALL)
        SELECT agent, kind, value, sum(n) AS calls, min(day) AS first_day, count(DISTINCT day) AS days
        FROM (UNPIVOT combos ON network, region, client INTO NAME kind VALUE value)
        GROUP BY GROUPING SETS ((agent, kind, value), (agent, kind))
        """,  # noqa: S608 - fixed SQL fragments; values are bound
        params).fetchall()
    seen: dict[tuple[str, str], dict[str, tuple[int, date]]] = {}
    days: dict[tuple[str, str], int] = {}
    for agent, kind, value, calls, first_day, n_days in rows:
        if value is None:
            days[(agent, kind)] = int(n_days)
            continue
        name = _source_value(kind, value)
        if name is not None:
            values = seen.setdefault((agent, kind), {})
            before = values.get(name, (0, first_day))
            values[name] = (before[0] + int(calls), min(before[1], first_day))
    out: dict[str, SourceStats] = {}
    for (agent, kind), values in seen.items():
        known, kind_days, novel = out.setdefault(agent, ({}, {}, {}))
        kind_days[kind] = days.get((agent, kind), 0)
        first = min(day for _, day in values.values())
        novel[kind] = len({day for _, day in values.values()} - {first})
        ranked = sorted(values.items(), key=lambda kv: (-kv[1][0], kv[0]))
        known[kind] = {name: calls for name, (calls, _) in ranked[:MAX_SOURCES]}
        if len(ranked) > MAX_SOURCES:  # too many to keep: judged as rotating
            novel[kind] = max(kind_days[kind] - 1, novel[kind])
    return out


def _source_value(kind: str, value: str) -> str | None:
    if kind == "client":
        return client_family(value)
    if kind == "network" and "/" not in value:  # IPv6 addresses come raw from SQL
        return network_of(value)
    return value


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
    """Replace the stored baselines of the histories these were fitted on (an agent that has no
    events there any more, after re-attribution, loses its row). One statement for all agents
    (row-at-a-time inserts cost ~1 ms each in DuckDB)."""
    if not baselines:
        return
    items = list(baselines.values())
    histories = {(b.history_start, b.history_end, b.timezone) for b in items}
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
            for start, end, tz in histories:
                con.execute("DELETE FROM baselines WHERE history_start = ? AND history_end = ? AND timezone = ?",
                            [start, end, tz])
            con.execute("INSERT OR REPLACE INTO baselines SELECT * FROM _tw_baselines")
        finally:
            con.unregister("_tw_baselines")


def refit(store: Store, when: datetime, timezone: str) -> dict[str, Baseline]:
    """Fit and store the baselines that windows on ``when``'s UTC day are scored against."""
    fitted = fit(store, day_start(when), timezone)
    save(store, fitted)
    return fitted


def load_or_fit(store: Store, end: datetime, timezone: str, history: timedelta = HISTORY) -> dict[str, Baseline]:
    """The baselines for a window starting at ``end``: stored ones when fitted on exactly that
    history and it has not changed since, else fitted now (and stored, when the store is
    writable). The history has changed when an agent's count of learnable events in it differs
    from the calls its baseline learned: late events arrived, the inventory re-attributed some, or
    a finding's triage moved its events in or out of what is learned (a false positive is)."""
    rows = store.con.execute(
        "SELECT agent, model FROM baselines WHERE history_end = ? AND history_start = ? AND timezone = ?",
        [end, end - history, timezone]).fetchall()
    if rows:
        stored = {agent: Baseline.from_json(model) for agent, model in rows}
        where, params = learnable(end - history, end)
        now = dict(store.con.execute(
            f"SELECT agent, count(*) FROM events WHERE {where} GROUP BY agent",  # noqa: S608 - fixed SQL
            params).fetchall())
        if now == {agent: b.calls for agent, b in stored.items()}:
            return stored
    fitted = fit(store, end, timezone, history)
    if not store.read_only:
        save(store, fitted)
    return fitted
