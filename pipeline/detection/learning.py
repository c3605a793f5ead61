"""Fitting, storing and loading baselines (``models.baselines``): the shared part, and the part
each detector declares it learns (``Detector.learns``), fitted on the same learnable events.

A fit runs the shared fit, then each part's ``fit`` over a :class:`models.baselines.History` of the
learnable events (:func:`learnable`: the events of open, acknowledged and resolved findings are
left out). Stored baselines hold every registered detector's part, whichever detectors are enabled
today, so one stored baseline serves any config (a detector enabled later the same day, ``train``'s
columns) and the previous version too; only a fit that is never stored (``backtest``) learns the
chosen detectors' parts alone.

Baselines are stored with the data range they were fitted on; ``trailwarden train`` refits
explicitly and ``detect`` fits what it needs for its window (never looking past it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

import detectors
from detectors.base import Detector
from models.baselines import HISTORY, SHARED, SHARED_DAILY, Baseline, History, Learned, fit_shared
from pipeline.core.times import day_start, utcnow
from pipeline.detection import features
from pipeline.store.store import Store

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


def learners(chosen: Iterable[Detector | type[Detector]] | None = None) -> list[type[Learned]]:
    """The parts these detectors learn (every registered detector's when None), each once."""
    found = detectors.registry().values() if chosen is None else chosen
    return list(dict.fromkeys(d.learns for d in found if d.learns is not None))


def fit(store: Store, end: datetime, timezone: str, history: timedelta = HISTORY,
        agents: list[str] | None = None, parts: Sequence[type[Learned]] | None = None) -> dict[str, Baseline]:
    """Fit every agent's baseline on [end - history, end), entirely in SQL, from the events
    :func:`learnable` keeps: the shared part, then each of ``parts`` (default: every registered
    detector's). Each part reads its per-day rows (``pipeline.detection.features``): stored for
    the sealed days they were kept for, computed from events for the rest."""
    return _fitted(_history(store, end - history, end, timezone, agents), parts)


def _fitted(learning: History, parts: Sequence[type[Learned]] | None = None) -> dict[str, Baseline]:
    """The shared part over a planned history, then each of ``parts`` (default: every registered
    detector's)."""
    shared = fit_shared(learning.daily(SHARED, SHARED_DAILY), learning.query, learning.start, learning.end,
                        learning.timezone)
    if not shared:
        return {}
    learning.agents = shared
    for kind in learners() if parts is None else parts:
        fitted = kind.fit(learning)
        for agent, baseline in shared.items():
            baseline.parts[kind] = fitted[agent] if agent in fitted else kind()
    return shared


def _history(store: Store, start: datetime, end: datetime, timezone: str,
             agents: list[str] | None = None) -> History:
    """The learnable history of [start, end), its per-day rows planned (stored or computed)."""
    where, params = learnable(start, end, agents)

    def query(sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        return store.con.execute(sql, list(values)).fetchall()

    everyone, values = learnable(start, end)
    planned = features.plan(store, start, end, timezone, everyone, values, UNLEARNED_STATUSES, agents)
    return History(query, where, params, start, end, timezone, {}, planned.source)


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
    learning = _history(store, end - history, end, timezone)  # planned once: checked, and fitted if it changed
    if rows:
        kinds = learners()
        stored = {agent: Baseline.from_json(model, kinds) for agent, model in rows}
        source, values = learning.daily(SHARED, SHARED_DAILY)
        now = {str(agent): int(calls) for agent, calls in learning.query(
            f"WITH daily AS {source} SELECT agent, sum(calls) FROM daily GROUP BY agent",  # noqa: S608 - fixed SQL
            values)}
        if now == {agent: b.calls for agent, b in stored.items()}:
            return stored
    fitted = _fitted(learning)
    if not store.read_only:
        save(store, fitted)
    return fitted
