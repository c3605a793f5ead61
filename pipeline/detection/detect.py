"""``trailwarden detect``: score the events of a window with every detector and store findings.

A window ``[since, until)`` is scored a day at a time. Detectors see only that window's events
and the models (declared scopes; baselines fitted on history before ``since``), so scoring last
week gives the same findings whether it runs then or now. Each detector runs in isolation: one
that raises is recorded and the others still run. Without a window, detect scores what was
ingested since the last detect (a watermark on ``ingested_at`` in ``pipeline_state``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pandas as pd

import detectors
from detectors.base import Detector, Finding, Models, capped, severity_rank
from detectors.permission_drift import link as link_drift
from models.inventory import Inventory
from models.mapping import PARAMETER_TARGETS
from models.scope import compile_scopes
from pipeline.core.config import Config
from pipeline.core.times import day_start, utcnow
from pipeline.detection import learning
from pipeline.detection.findings import save_findings
from pipeline.detection.guard import guarded
from pipeline.ingest.events import EARLIEST_EVENT_TIME, EVENT_COLUMNS, FUTURE_TOLERANCE
from pipeline.store.store import Store, first_row

log = logging.getLogger(__name__)
STATE_KEY = "detect.ingested_until"
CHUNK_EVENTS = 100_000  # events per scoring chunk: memory follows this, not the history
_ALWAYS = ("event_id", "event_time", "agent")


@dataclass
class DetectReport:
    since: datetime | None = None
    until: datetime | None = None
    events: int = 0
    new: int = 0
    extended: int = 0
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_ids: list[str] = field(default_factory=list)
    spans: list[tuple[datetime, datetime]] = field(default_factory=list)  # a plain detect's stretches

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.detectors.items() if v.get("error")]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"since": self.since, "until": self.until, "events": self.events, "new": self.new,
               "extended": self.extended, "detectors": self.detectors}
        if len(self.spans) > 1:
            out["spans"] = [{"since": a, "until": b} for a, b in self.spans]
        return out


def build_models(store: Store, config: Config, inventory: Inventory, since: datetime) -> Models:
    """Declared scopes, and baselines fitted on the 28 days before the UTC day ``since`` falls in
    (never after it; one fit a day serves every cycle of that day)."""
    from pipeline.ram.snapshots import load_snapshot

    return Models(inventory=inventory, scopes=compile_scopes(inventory), timezone=config.tz,
                  baselines=learning.load_or_fit(store, day_start(since), config.timezone),
                  ram=load_snapshot(store))


def run_detect(store: Store, config: Config, inventory: Inventory, *, since: datetime | None = None,
               until: datetime | None = None, config_path: str | None = None,
               run_id: int | None = None) -> DetectReport:
    active = active_detectors(config, config_path)
    report = DetectReport()
    now = utcnow()
    if since is None and until is None:
        from pipeline.detection.ram_drift import score_ram_changes

        _detect_pending(store, config, inventory, active, report, run_id, now)
        score_ram_changes(store, config, inventory, active, report, run_id)  # what new `ram sync`s saw
        return report
    earliest, latest = plausible_times(now)
    since = max(since or _first_event(store, earliest, latest) or earliest, earliest)
    until = min(until or now, latest)
    if since >= until:
        return report
    report.since, report.until = since, until
    report.events += _score_span(store, config, inventory, active, since, until, report, run_id,
                                 overlap=max_lookback(active))
    return report


# Event times a window may reach are those ingest accepts (pipeline.ingest.events); a store written before
# ingest refused the others may still hold some (1970, year 1, 9999): they never move a window, nor
# overflow one.
MAX_SPANS = 32  # separate stretches of days scored by one plain detect; closer ones merge beyond it


def plausible_times(now: datetime) -> tuple[datetime, datetime]:
    """The range of event times detection considers: [2010-01-01, now + 1 day]."""
    return EARLIEST_EVENT_TIME, now + FUTURE_TOLERANCE


def _detect_pending(store: Store, config: Config, inventory: Inventory, active: list[Detector],
                    report: DetectReport, run_id: int | None, now: datetime) -> DetectReport:
    """Score what was ingested since the last detect: each stretch of days that received new
    events on its own, with the baselines of its own first day, so one late or backfilled event
    from long ago neither drags today's window back to its day nor scores today against that
    day's history. Each stretch re-reads the detectors' lookback before it (bounded by the
    store's first event), so a burst that began in the last run is seen whole."""
    _retry_failed(store, config, inventory, active, report, run_id)
    spans, watermark = _pending_spans(store, now)
    if not spans:
        if watermark is not None:  # only implausible times arrived: nothing to score, all seen
            store.write_state(STATE_KEY, watermark.isoformat())
        return report
    first = _first_event(store, *plausible_times(now))
    lookback = max_lookback(active)
    for start, end in spans:
        start = max(start - lookback, first) if first else start
        report.since = min(report.since or start, start)
        report.until = max(report.until or end, end)
        report.spans.append((start, end))
        report.events += _score_span(store, config, inventory, active, start, end, report, run_id,
                                     overlap=lookback)
        _remember_failures(store, active, report, start, end)
    assert watermark is not None
    store.write_state(STATE_KEY, watermark.isoformat())
    return report


def _score_span(store: Store, config: Config, inventory: Inventory, chosen: list[Detector], since: datetime,
                until: datetime, report: DetectReport, run_id: int | None, *, overlap: timedelta) -> int:
    """Score [since, until) with these detectors, a chunk at a time, and store what they find."""
    models = build_models(store, config, inventory, since)
    dedup = {d.id: d.dedup_window for d in chosen}
    events = 0
    for start, end in _chunks(store, since, until):
        # each chunk also re-reads the lookback before it, so a burst across the cut is seen
        # whole; its finding has the same id either way and save_findings keeps the whole one
        counted, findings = score_window(store, chosen, models, start, end, since=since, overlap=overlap,
                                         report=report)
        events += counted
        saved = save_findings(store, findings, dedup, run_id, tz=config.tz)
        report.new += saved.new
        report.extended += saved.extended
        report.new_ids.extend(saved.new_ids)
    return events


# -- a detector that failed scores its window again next time ------------------------------------------
RETRY_PREFIX = "detect.retry:"


def _remember_failures(store: Store, active: list[Detector], report: DetectReport, since: datetime,
                       until: datetime) -> None:
    """The watermark moves on for the detectors that scored; one that failed keeps the span it
    missed (merged with any earlier one) in ``pipeline_state``, to score it alone next time."""
    for det in active:
        if report.detectors.get(det.id, {}).get("error"):
            start, end = _retry_span(store, det.id) or (since, until)
            store.write_state(RETRY_PREFIX + det.id, f"{min(start, since).isoformat()}/{max(end, until).isoformat()}")


def _retry_failed(store: Store, config: Config, inventory: Inventory, active: list[Detector],
                  report: DetectReport, run_id: int | None) -> None:
    """Score again, with the detector alone, each span a failed detector missed; forget the span
    once it scores (a detector that fails again keeps it, and stays reported as failed)."""
    for det in active:
        span = _retry_span(store, det.id)
        if span is None:
            continue
        start, end = span
        log.info("detector %s failed on %s .. %s before: scoring that again", det.id, start, end)
        _score_span(store, config, inventory, [det], start, end, report, run_id, overlap=det.lookback)
        if not report.detectors.get(det.id, {}).get("error"):
            store.con.execute("DELETE FROM pipeline_state WHERE name = ?", [RETRY_PREFIX + det.id])


def _retry_span(store: Store, detector: str) -> tuple[datetime, datetime] | None:
    value = store.read_state(RETRY_PREFIX + detector)
    if not value:
        return None
    start, _, end = value.partition("/")
    return datetime.fromisoformat(start), datetime.fromisoformat(end)


def _chunks(store: Store, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """Whole UTC days, merged while they hold under CHUNK_EVENTS events together (a day is never
    split, so a detector sees every burst of a day at once)."""
    days = store.con.execute(
        "SELECT time_bucket(INTERVAL 1 DAY, event_time) AS d, count(*) FROM events "
        "WHERE event_time >= ? AND event_time < ? GROUP BY d ORDER BY d", [since, until]).fetchall()
    chunks: list[tuple[datetime, datetime]] = []
    start, count = since, 0
    for day, n in days:
        if count and count + n > CHUNK_EVENTS:
            chunks.append((start, max(day, start)))
            start, count = max(day, start), 0
        count += n
    if count:
        chunks.append((start, until))
    return chunks


def active_detectors(config: Config, config_path: str | None = None) -> list[Detector]:
    """Every registered detector with the config's overrides (validated), bound to the config."""
    active = detectors.build(config.detectors, config_path)
    for det in active:
        det.bind(config)
    return active


def max_lookback(active: list[Detector]) -> timedelta:
    """How far before a window its scoring re-reads: the longest lookback of the detectors."""
    return max((d.lookback for d in active), default=timedelta(0))


def score_window(store: Store, active: list[Detector], models: Models, start: datetime, end: datetime, *,
                 since: datetime, overlap: timedelta, report: DetectReport) -> tuple[int, list[Finding]]:
    """Score [start, end) with these detectors and models, writing nothing. The ``overlap`` before
    ``start`` (never before ``since``) is re-read, so a burst across the cut is seen whole.
    Returns how many events fall in [start, end) (the lookback is not new) and the findings."""
    columns = _columns(active)
    with_parameters = frozenset().union(*(d.parameter_events for d in active))
    events = load_events(store, columns, max(since, start - overlap), end, with_parameters)
    return int((events["event_time"] >= start).sum()), _score_all(active, events, models, end, report)


def _score_all(active: list[Detector], events: pd.DataFrame, models: Models, now: datetime,
               report: DetectReport) -> list[Finding]:
    out: list[Finding] = []
    for det in active:
        out.extend(guarded(det, report, "", partial(det.score, events, models, now) if len(events) else list))
    return _combined(link_drift(_raise_coinciding(out, active)), active, models, report)


def _combined(findings: list[Finding], active: list[Detector], models: Models,
              report: DetectReport) -> list[Finding]:
    """Add what the combining detectors (``Detector.combine``: ``anomalous_behaviour``) make of
    the others' findings; one that raises is recorded like a failed score, the findings kept."""
    out = list(findings)
    for det in active:
        if type(det).combine is not Detector.combine:  # if it raises, the weak signals stay, as they are
            out.extend(guarded(det, report, " to combine", partial(det.combine, findings, models)))
    return out


def _raise_coinciding(findings: list[Finding], active: list[Detector]) -> list[Finding]:
    """Detectors are independent, but some findings matter more together: a detector that declares
    a :class:`detectors.base.Coincidence` (new_source) has a finding raised to its severity when
    another detector's finding about the same agent, at medium or above, lies within its window
    (a weak signal beside another weak one is ``anomalous_behaviour``'s to weigh, not a raise);
    the evidence names every finding near it (``coincides_with``) and the summary says so. Runs
    once all detectors scored a chunk."""
    rules = {d.id: d.coincidence for d in active if d.coincidence is not None}
    by_agent: dict[str, list[Finding]] = {}
    for f in findings:
        by_agent.setdefault(f.agent, []).append(f)
    loud = {id(f) for f in findings if severity_rank(f.severity) >= MEDIUM}  # as scored, before any raise
    for f in findings:
        rule = rules.get(f.detector)
        if rule is not None:
            near = [g for g in by_agent[f.agent] if g.detector != f.detector
                    and g.first_seen <= f.last_seen + rule.window and g.last_seen >= f.first_seen - rule.window]
            if any(id(g) in loud for g in near):
                _raise(f, near, rule.severity)
    return findings


MEDIUM = severity_rank("medium")


def _raise(f: Finding, near: list[Finding], severity: str) -> None:
    if severity_rank(severity) > severity_rank(f.severity):
        f.severity, f.score = severity, max(f.score, 0.75)
    f.evidence["coincides_with"] = capped(
        ({"detector": g.detector, "id": g.id, "severity": g.severity,
          "first_seen": g.first_seen.isoformat().replace("+00:00", "Z")}
         for g in sorted(near, key=lambda g: (g.first_seen, g.detector, g.id))), 10)
    f.summary += f"; coincides with {', '.join(sorted({g.detector for g in near}))}"


def _columns(active: list[Detector]) -> list[str]:
    wanted = dict.fromkeys(_ALWAYS)
    for det in active:
        for col in det.columns:
            if col not in EVENT_COLUMNS and col not in ("agent", "source", "ingested_at", "request_parameters"):
                raise RuntimeError(f"detector {det.id} reads unknown column {col!r}")
            wanted[col] = None
    return list(wanted)


def load_events(store: Store, columns: list[str], since: datetime, until: datetime,
                parameter_events: frozenset[str] = frozenset(PARAMETER_TARGETS)) -> pd.DataFrame:
    """The window's events, oldest first, with only the columns the detectors read.

    ``request_parameters`` (a virtual column over the raw JSON, costly to read) is filled only for
    the events named in ``parameter_events`` (lower-case event names).
    """
    select = [
        "CASE WHEN list_contains($names, lower(event_name)) THEN request_parameters::VARCHAR END "
        "AS request_parameters" if c == "request_parameters" else c
        for c in columns
    ]
    sql = (f"SELECT {', '.join(select)} FROM events "  # noqa: S608 - names from the detectors' declared columns
           "WHERE event_time >= $since AND event_time < $until ORDER BY agent, event_time, event_id")
    params: dict[str, Any] = {"since": since, "until": until}
    if "request_parameters" in columns:
        params["names"] = sorted(parameter_events)
    # through Arrow: twice as fast as .df() for string-heavy frames (measured, benchmarks/)
    df = store.con.sql(sql, params=params).to_arrow_table().to_pandas()
    if "event_time" in df:
        df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    return df


def _pending_spans(store: Store, now: datetime) -> tuple[list[tuple[datetime, datetime]], datetime | None]:
    """Events ingested since the last detect: the stretches of UTC days they fall on (days with a
    day or more between them are separate stretches), each as [first event, last event + 1 us),
    and the new watermark. Implausible times are left out (see :func:`plausible_times`)."""
    done = store.read_state(STATE_KEY)
    floor = datetime.fromisoformat(done) if done else datetime(1970, 1, 1, tzinfo=UTC)
    earliest, latest = plausible_times(now)
    days = store.con.execute(
        "SELECT time_bucket(INTERVAL 1 DAY, event_time) AS d, min(event_time), max(event_time) FROM events "
        "WHERE ingested_at > ? AND event_time >= ? AND event_time <= ? GROUP BY d ORDER BY d",
        [floor, earliest, latest]).fetchall()
    row = first_row(store.con.execute("SELECT max(ingested_at) FROM events WHERE ingested_at > ?", [floor]))
    watermark = row[0] if row else None
    spans: list[list[datetime]] = []
    for day, lo, hi in days:
        if spans and day - spans[-1][2] <= timedelta(days=1):
            spans[-1][1], spans[-1][2] = hi, day
        else:
            spans.append([lo, hi, day])
    while len(spans) > MAX_SPANS:  # many scattered days: merge the two closest stretches
        i = min(range(len(spans) - 1), key=lambda k: spans[k + 1][0] - spans[k][1])
        spans[i][1:] = spans[i + 1][1:]
        del spans[i + 1]
    return [(lo, hi + timedelta(microseconds=1)) for lo, hi, _ in spans], watermark


def _first_event(store: Store, earliest: datetime, latest: datetime) -> datetime | None:
    """The first plausible event time in the store."""
    row = first_row(store.con.execute(
        "SELECT min(event_time) FROM events WHERE event_time >= ? AND event_time <= ?", [earliest, latest]))
    return row[0] if row else None
