"""``trailwarden backtest``: what each detector would have raised, day by day, writing nothing.

The window is cut into periods (UTC days by default, aligned to the UTC midnight of ``since``).
Each period is scored the way a ``detect`` over that period would score it:

* **its own models**: declared scopes, and baselines fitted on the 28 days before the UTC day the
  period starts in (``pipeline.detection.learning.fit``, with the parts the chosen detectors learn:
  never stored, never looking past the period's start),
  so day 10 is judged by what was known on day 10, not by the whole month;
* **the same scoring** (``pipeline.detection.detect.score_window``): every detector with the config's
  overrides (so a copy of the config with other thresholds can be compared), the lookback before
  the period re-read so a burst across midnight is seen whole, a failing detector recorded for
  that period while the others run;
* **the same dedup, in memory**: a finding is merged into an earlier one of the same detector,
  agent and dedup key within the detector's dedup window, exactly as ``save_findings`` merges
  stored ones. So the counts are findings as they would have been alerted: one that continues
  across a period boundary counts once, in the period it was first raised.

Findings that lie wholly in the re-read lookback are dropped: those events were judged by their own
period's models, and a later baseline (which has learned them) must not re-judge them.

Nothing is written: no findings, baselines, runs or pipeline state. Open the store read-only.

Suppressions: each would-be finding that a suppression active now covers is marked with it
(``suppressed_by``) and counted apart (it would have been stored as ``suppressed``, not alerted);
it still counts as raised, since the counts are what the detectors do. Suppressions active now are
applied to every day, whenever they were added: the question is what today's rules would let through.

Known gaps: triage (acknowledged, resolved) is not applied; a finding continuing from before the window counts on its first period (findings already stored are
not consulted); events are attributed as stored (after an inventory change, a writing command
re-attributes them).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from detectors.base import Detector, Finding, Models, severity_rank
from models.baselines import MIN_ACTIVE_DAYS, Baseline
from models.inventory import Inventory
from models.scope import compile_scopes
from pipeline.core.config import Config
from pipeline.core.errors import UsageError
from pipeline.core.times import day_start, iso_seconds
from pipeline.detection import learning
from pipeline.detection.detect import DetectReport, active_detectors, max_lookback, score_window
from pipeline.store.attribution import attribution_is_stale
from pipeline.store.store import Store, first_row

DEFAULT_STEP = timedelta(days=1)
MIN_STEP = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass
class Raised:
    """A finding as it would have been stored and alerted: merged with its later parts."""

    id: str
    detector: str
    agent: str
    dedup_key: str
    severity: str
    score: float
    first_seen: datetime
    last_seen: datetime
    summary: str
    period: datetime  # the start of the period it was first raised in
    event_ids: set[str] = field(default_factory=set)
    suppressed_by: str | None = None  # the id of an active suppression that covers it

    @classmethod
    def first(cls, f: Finding, period: datetime) -> Raised:
        return cls(f.id, f.detector, f.agent, f.dedup_key, f.severity, f.score, f.first_seen, f.last_seen,
                   f.summary, period, set(f.event_ids))

    def extend(self, f: Finding) -> None:
        """As ``pipeline.detection.findings._extend``: wider span, more events, the worse severity and score;
        the newcomer's words only when it covers the whole finding."""
        if f.first_seen <= self.first_seen and f.last_seen >= self.last_seen:
            self.summary = f.summary
        self.first_seen, self.last_seen = min(self.first_seen, f.first_seen), max(self.last_seen, f.last_seen)
        self.event_ids.update(f.event_ids)
        if severity_rank(f.severity) > severity_rank(self.severity):
            self.severity = f.severity
        self.score = max(self.score, f.score)


class Dedup:
    """``save_findings``' merge rule over findings held in memory."""

    def __init__(self, windows: dict[str, timedelta]):
        self.windows = windows
        self.raised: list[Raised] = []
        self._by_key: dict[tuple[str, str, str], list[Raised]] = defaultdict(list)

    def add(self, f: Finding, period: datetime) -> Raised | None:
        """Merge ``f`` into the finding it continues, or raise it; return it when new."""
        window = self.windows.get(f.detector, timedelta(hours=1))
        same = self._by_key[(f.detector, f.agent, f.dedup_key)]
        near = [r for r in same if r.last_seen >= f.first_seen - window and r.first_seen <= f.last_seen + window]
        if near:  # the stored row with the same id first, else the latest
            min(near, key=lambda r: (r.id != f.id, -r.last_seen.timestamp())).extend(f)
            return None
        raised = Raised.first(f, period)
        same.append(raised)
        self.raised.append(raised)
        return raised


@dataclass
class Period:
    start: datetime
    end: datetime
    baseline_end: datetime  # the baselines were fitted on the 28 days before this
    events: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # detector -> its error
    unlearned: list[str] = field(default_factory=list)  # active agents without a learned baseline
    agents: list[str] = field(default_factory=list)  # agents with events in the period
    no_baselines: bool = False  # not one agent had a learned baseline


@dataclass
class BacktestReport:
    since: datetime
    until: datetime
    step: timedelta
    detectors: list[str]
    periods: list[Period] = field(default_factory=list)
    raised: list[Raised] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def label(self, when: datetime) -> str:
        """A period's name: its date for whole-day steps, else its start time."""
        if self.step % DAY == timedelta(0) and when == day_start(when):
            return f"{when:%Y-%m-%d}"
        return when.strftime("%Y-%m-%dT%H:%MZ")

    def counts(self) -> dict[datetime, Counter[str]]:
        out: dict[datetime, Counter[str]] = {p.start: Counter() for p in self.periods}
        for r in self.raised:
            out[r.period][r.detector] += 1
        return out

    def by_agent(self, period: datetime | None = None) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for r in self.raised:
            if period is None or r.period == period:
                out[r.agent][r.detector] += 1
        return dict(out)

    def weekly(self) -> list[dict[str, Any]]:
        """Per week (Monday to Sunday, UTC days; a partial first or last week as it is): per
        detector, the findings raised and those at medium or above, the agents that acted, and
        the findings at medium or above per 100 agents per week (scaled to seven days), the rate
        issue 15's quality gate is stated in."""
        weeks: dict[date, dict[str, Any]] = {}
        for p in self.periods:
            monday = p.start.date() - timedelta(days=p.start.weekday())
            week = weeks.setdefault(monday, {"week": f"{monday:%Y-%m-%d}", "days": 0.0, "events": 0,
                                             "agents": set(), "raised": Counter(), "medium_or_above": Counter()})
            week["days"] += (p.end - p.start) / DAY
            week["events"] += p.events
            week["agents"].update(p.agents)
        starts = {p.start: p.start.date() - timedelta(days=p.start.weekday()) for p in self.periods}
        for r in self.raised:
            week = weeks[starts[r.period]]
            week["raised"][r.detector] += 1
            if severity_rank(r.severity) >= severity_rank("medium"):
                week["medium_or_above"][r.detector] += 1
        out = []
        for week in weeks.values():
            agents, loud = len(week["agents"]), sum(week["medium_or_above"].values())
            rate = loud * 100 / agents * 7 / week["days"] if agents and week["days"] else 0.0
            out.append({**week, "agents": agents, "days": round(week["days"], 2),
                        "raised": {d: week["raised"][d] for d in self.detectors},
                        "medium_or_above": {d: week["medium_or_above"][d] for d in self.detectors},
                        "medium_or_above_per_100_agents_per_week": round(rate, 2)})
        return out

    def suppressed(self) -> int:
        return sum(r.suppressed_by is not None for r in self.raised)

    def totals(self) -> dict[str, int]:
        found = Counter(r.detector for r in self.raised)
        return {d: found[d] for d in self.detectors}

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts()
        days = [{"day": self.label(p.start), "start": p.start, "end": p.end, "events": p.events,
                 "baseline_end": p.baseline_end,
                 "counts": {d: counts[p.start][d] for d in self.detectors},
                 "by_agent": {a: dict(c) for a, c in sorted(self.by_agent(p.start).items())},
                 "errors": p.errors, "unlearned": p.unlearned} for p in self.periods]
        return {"window": {"since": self.since, "until": self.until}, "step": format_step(self.step),
                "detectors": self.detectors, "days": days, "weeks": self.weekly(), "totals": self.totals(),
                "suppressed": self.suppressed(),
                "findings": [self._finding(r) for r in self.raised], "notes": self.notes,
                "seconds": round(self.seconds, 3)}

    def _finding(self, r: Raised) -> dict[str, Any]:
        return {"day": self.label(r.period), "detector": r.detector, "agent": r.agent, "severity": r.severity,
                "summary": r.summary, "first_seen": r.first_seen, "last_seen": r.last_seen, "id": r.id,
                "score": r.score, "event_count": len(r.event_ids), "suppressed_by": r.suppressed_by}

    def csv_rows(self) -> list[list[Any]]:
        """One row per (period, detector, agent) that raised anything."""
        cells = Counter((r.period, r.detector, r.agent) for r in self.raised)
        order = {d: i for i, d in enumerate(self.detectors)}
        return [[self.label(p), d, a, n] for (p, d, a), n in sorted(cells.items(), key=lambda x: (
            x[0][0], order[x[0][1]], x[0][2]))]


def run_backtest(store: Store, config: Config, inventory: Inventory, *, since: datetime, until: datetime,
                 step: timedelta = DEFAULT_STEP, only: Sequence[str] = (),
                 config_path: str | None = None) -> BacktestReport:
    """Replay detection over [since, until) period by period; see the module docstring. Reads only."""
    started = time.monotonic()
    active = active_detectors(config, config_path)
    chosen = _chosen(active, only)
    start = day_start(since)
    _check_window(store, since, start, until, step)
    report = BacktestReport(start, until, step, [d.id for d in chosen])
    dedup = Dedup({d.id: d.dedup_window for d in chosen})
    # the lookback of every configured detector, chosen or not: counts never depend on --detector
    overlap = max_lookback(active)
    scopes = compile_scopes(inventory)
    fitted: dict[datetime, dict[str, Baseline]] = {}
    parts = learning.learners(chosen)
    for begin, end in periods(start, until, step):
        day = day_start(begin)
        if day not in fitted:  # one fit a UTC day, as detect does; never stored
            fitted = {day: learning.fit(store, day, config.timezone, parts=parts)}
        models = Models(inventory=inventory, scopes=scopes, timezone=config.tz, baselines=fitted[day])
        report.periods.append(_score_period(store, chosen, models, begin, end, start, overlap, dedup))
    report.raised = dedup.raised
    covered = _mark_suppressed(store, report.raised)
    report.notes = _notes(report, store, inventory) + covered
    report.seconds = time.monotonic() - started
    return report


def periods(since: datetime, until: datetime, step: timedelta) -> Iterator[tuple[datetime, datetime]]:
    start = since
    while start < until:
        yield start, min(start + step, until)
        start += step


def _score_period(store: Store, chosen: list[Detector], models: Models, begin: datetime, end: datetime,
                  since: datetime, overlap: timedelta, dedup: Dedup) -> Period:
    period = Period(begin, end, day_start(begin))
    scratch = DetectReport()
    period.events, found = score_window(store, chosen, models, begin, end, since=since, overlap=overlap,
                                        report=scratch)
    period.errors = {name: stats["error"] for name, stats in scratch.detectors.items() if stats.get("error")}
    for f in found:
        if f.last_seen >= begin:  # wholly in the lookback: judged already, by its own period
            dedup.add(f, begin)
    active = _active_agents(store, begin, end)
    period.agents = sorted(active)
    period.unlearned = sorted(a for a in active if not _learned(models, a))
    period.no_baselines = bool(active) and not any(b.learned for b in models.baselines.values())
    return period


def _learned(models: Models, agent: str) -> bool:
    baseline = models.baselines.get(agent)
    return baseline is not None and baseline.learned


def _active_agents(store: Store, begin: datetime, end: datetime) -> list[str]:
    return [r[0] for r in store.con.execute(
        "SELECT DISTINCT agent FROM events WHERE event_time >= ? AND event_time < ?", [begin, end]).fetchall()]


# -- input -------------------------------------------------------------------------------------------
def format_step(step: timedelta) -> str:
    seconds = int(step.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _chosen(active: list[Detector], only: Sequence[str]) -> list[Detector]:
    known = [d.id for d in active]
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UsageError(f"unknown detector {unknown[0]!r} (known: {', '.join(known)})", key="--detector")
    return [d for d in active if not only or d.id in only]


def _check_window(store: Store, since: datetime, start: datetime, until: datetime, step: timedelta) -> None:
    """``since`` as given, ``start`` the UTC midnight it falls on (where the periods begin)."""
    if since >= until:
        raise UsageError(f"must be before --until ({iso_seconds(since)} is not before {iso_seconds(until)})", key="--since")
    if step < MIN_STEP:
        raise UsageError("must be at least 1h", key="--step")
    row = first_row(store.con.execute("SELECT count(*) FROM events WHERE event_time >= ? AND event_time < ?",
                                      [start, until]))
    if row and row[0]:
        return
    span = first_row(store.con.execute("SELECT min(event_time), max(event_time) FROM events"))
    held = f"the store holds {iso_seconds(span[0])} .. {iso_seconds(span[1])}" if span and span[0] else "the store holds none"
    raise UsageError(f"no events between {iso_seconds(start)} and {iso_seconds(until)} ({held})", key="--since")


def _mark_suppressed(store: Store, raised: list[Raised]) -> list[str]:
    """Mark the findings today's active suppressions cover; a note per suppression that covers any."""
    from pipeline.triage.lifecycle import load_suppressions, matching_suppression

    suppressions = load_suppressions(store)
    if not suppressions:
        return []
    hits: Counter[str] = Counter()
    for r in raised:
        covering = matching_suppression(store.con, suppressions, r.detector, r.agent, sorted(r.event_ids))
        if covering is not None:
            r.suppressed_by = covering.id
            hits[covering.id] += 1
    return [f"suppression {s.id} ({s.detector}{f', {s.agent}' if s.agent else ''}: {s.reason}) covers "
            f"{hits[s.id]} of them" for s in suppressions if hits[s.id]]


# -- notes -------------------------------------------------------------------------------------------
def _notes(report: BacktestReport, store: Store, inventory: Inventory) -> list[str]:
    notes = []
    bare = [p for p in report.periods if p.no_baselines]
    if bare:
        notes.append(f"{_spans(report, bare)}: no agent had a learned baseline yet (under "
                     f"{MIN_ACTIVE_DAYS} active days in the 28 days before): odd_hours judges by "
                     "declared hours only there, failure_storm by its configured threshold")
    notes += _unlearned_notes(report)
    for p in report.periods:
        for name, error in p.errors.items():
            notes.append(f"{report.label(p.start)}: {name} failed ({error}); its count there is missing")
    quiet = [p for p in report.periods if not p.events]
    if quiet:
        notes.append(f"{_spans(report, quiet)}: no events")
    if attribution_is_stale(store, inventory):
        notes.append("the inventory changed since the events were attributed: agents are as stored "
                     "(any writing command, e.g. `trailwarden detect`, re-attributes them)")
    return notes


def _unlearned_notes(report: BacktestReport) -> list[str]:
    """Agents acting without a learned baseline (where others had one), grouped by when."""
    days: dict[str, list[Period]] = defaultdict(list)
    for p in report.periods:
        if not p.no_baselines:
            for agent in p.unlearned:
                days[agent].append(p)
    agents_by_when: dict[str, list[str]] = defaultdict(list)
    for agent, when in sorted(days.items()):
        agents_by_when[_spans(report, when)].append(agent)
    return [f"{when}: no learned baseline yet for {', '.join(agents)}" for when, agents in agents_by_when.items()]


def _spans(report: BacktestReport, chosen: list[Period]) -> str:
    """Consecutive periods as ranges: ``2026-10-30 .. 2026-11-05, 2026-11-09``."""
    runs: list[list[Period]] = []
    for p in chosen:
        if runs and runs[-1][-1].end == p.start:
            runs[-1].append(p)
        else:
            runs.append([p])
    return ", ".join(report.label(r[0].start) if len(r) == 1 else
                     f"{report.label(r[0].start)} .. {report.label(r[-1].start)}" for r in runs)


# -- the table -----------------------------------------------------------------------------------------
def as_text(report: BacktestReport, top: int = 20) -> str:
    """One row a period (a column a detector, and the total), the agents with most findings, notes."""
    from pipeline.core.inert import one_line
    from pipeline.core.output import render, to_jsonable

    total = len(report.raised)
    lines = [f"Backtest {to_jsonable(report.since)} .. {to_jsonable(report.until)}, step {format_step(report.step)}: "
             f"{total} finding{'s' if total != 1 else ''} would have been raised "
             f"({sum(p.events for p in report.periods):,} events scored in {report.seconds:.1f}s)"
             f"{_suppressed_words(report)}. "
             "Each period is judged by baselines fitted on the 28 days before its UTC day; nothing was stored.", ""]
    lines += [render(["day", "events", *report.detectors, "total"], _day_rows(report), "table"), ""]
    weeks = report.weekly()
    if len(report.periods) > 1 and report.step <= DAY:
        lines.append("By week (raised / at medium or above; the rate is medium or above per 100 agents per week):")
        lines += [render(["week", "days", "agents", *report.detectors, "per 100 agents"],
                         [[w["week"], f"{w['days']:g}", w["agents"],
                           *(f"{w['raised'][d]}/{w['medium_or_above'][d]}" for d in report.detectors),
                           f"{w['medium_or_above_per_100_agents_per_week']:g}"] for w in weeks], "table"), ""]
    agents = sorted(report.by_agent().items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    if agents:
        shown = f"top {top} of {len(agents)}" if len(agents) > top else f"{len(agents)}"
        lines.append(f"By agent ({shown}):")
        lines += [render(["agent", *report.detectors, "total"],
                         [[a, *(c[d] for d in report.detectors), sum(c.values())] for a, c in agents[:top]],
                         "table"), ""]
    if report.notes:
        lines += ["Notes:", *(f"  - {one_line(n)}" for n in report.notes)]
    return "\n".join(lines).rstrip()


def _suppressed_words(report: BacktestReport) -> str:
    n = report.suppressed()
    return f", {n} of them covered by active suppressions (stored as suppressed, not alerted)" if n else ""


def _day_rows(report: BacktestReport) -> list[list[Any]]:
    counts = report.counts()
    rows: list[list[Any]] = []
    for p in report.periods:
        cells = ["failed" if d in p.errors else counts[p.start][d] for d in report.detectors]
        rows.append([report.label(p.start), f"{p.events:,}", *cells, sum(counts[p.start].values())])
    totals = report.totals()
    rows.append(["total", f"{sum(p.events for p in report.periods):,}", *(totals[d] for d in report.detectors),
                 len(report.raised)])
    return rows
