"""The unattended service: ``run`` (one cycle) and ``serve`` (APScheduler 3.x, every interval).

A cycle is ingest -> detect -> alert (with ``store:`` configured: ingest -> features -> detect ->
alert -> seal, README "The store"), as one job (ordering by construction, never overlapping:
``max_instances=1``, ``coalesce=True``, a misfire grace of one interval). Each step is recorded in
``runs`` (``cycle.ingest`` ...); a failing source or step does not stop the others, and a step
failing three cycles running is reported (and posted to Slack when it is configured).

Concurrency with analysts: the service opens the store only for the length of a cycle (waiting,
bounded, if a reader holds it) and afterwards publishes a snapshot, a plain copy of the closed
file; readers (``query``, ``findings``, notebooks) that find the store busy read the snapshot, so
nobody blocks anybody for longer than a cycle. A nightly job refits baselines and applies the
retention policy. With ``ram:`` configured, ``ram sync`` runs every ``schedule.ram_sync_every`` as
its own job (on the same single worker, so never beside a cycle), recorded in ``runs``; with
``slack:`` too, the weekly permission review is posted on Mondays at 09:00 (local time).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from models.inventory import Attributor, Inventory
from pipeline.core.config import Config
from pipeline.core.errors import TrailwardenError, scrub
from pipeline.core.times import utcnow
from pipeline.store.runs import error_line, recorded_run
from pipeline.store.store import Store, open_store, publish_snapshot

log = logging.getLogger("trailwarden.service")
STEPS = ("ingest", "detect", "alert")
REPEATED_FAILURES = 3


@dataclass
class StepResult:
    name: str
    ok: bool = True
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class CycleResult:
    started: datetime
    steps: list[StepResult] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    @property
    def failed(self) -> list[str]:
        return [s.name for s in self.steps if not s.ok]


def run_cycle(config: Config, inventory: Inventory, db: Path, *, config_path: str | None = None,
              echo: Callable[[str], None] = print, stopping: Callable[[], bool] = lambda: False,
              snapshot: bool = True, lock_wait: float = 60.0,
              unrecorded: list[RunRecord] | None = None, reattribute: bool = False,
              inventory_source: str | None = None) -> CycleResult:
    """One cycle; every step is recorded, a failed step never prevents the next.

    Before any step, the detectors' config is validated and the stored events are re-attributed
    if the inventory changed; an inventory that would strip most events of their agents fails the
    whole cycle (:class:`UsageError`) unless ``reattribute`` - new events attributed with it would
    be as wrong. ``stopping`` ends the wait for the store and the ingest early (at a batch
    boundary: what was read is committed with its cursor) and skips the steps not begun.
    ``unrecorded`` runs (cycles that could not open the store) are written to ``runs`` first. A
    snapshot that cannot be published is reported as a failed step ``snapshot``."""
    from pipeline.detection.detect import active_detectors
    from pipeline.store.attribution import reattribute_if_changed

    active_detectors(config, config_path)
    result = CycleResult(started=utcnow())
    with open_store(db, memory_limit=config.memory_limit, lock_wait=lock_wait, stop=stopping,
                    on_wait=log.warning) as store:
        _record_runs(store, unrecorded or [])
        reattribute_if_changed(store, inventory, allow_orphans=reattribute, source=inventory_source)
        steps: tuple[tuple[str, Callable[..., dict[str, Any]]], ...] = (
            ("ingest", partial(_ingest, stop=stopping)), ("detect", _detect), ("alert", _alert))
        if config.store is not None:
            steps = (*steps[:1], ("features", _features), *steps[1:], ("seal", _seal))
        for name, step in steps:
            if stopping():
                result.stopped_early = True
                break
            result.steps.append(_recorded(store, name, partial(step, store, config, inventory, config_path, echo)))
    if snapshot:
        started = time.monotonic()
        try:
            publish_snapshot(db)
        except OSError as exc:
            result.steps.append(StepResult("snapshot", ok=False, seconds=round(time.monotonic() - started, 3),
                                           error=f"could not publish the snapshot: {exc}"))
    return result


@dataclass
class RunRecord:
    """A run the store could not take when it happened (the store was locked, say): recorded in
    ``runs`` at the next chance. ``counts["cycles"]`` failed cycles in a row share one record."""

    command: str
    started: datetime
    finished: datetime
    error: str | None = None
    counts: dict[str, Any] = field(default_factory=lambda: {"cycles": 1})


def _record_runs(store: Store, runs: list[RunRecord]) -> None:
    """Write the runs to ``runs`` and forget them."""
    for run in runs:
        store.record_run(run.command, run.started, run.finished, run.counts, run.error)
    runs.clear()


def _recorded(store: Store, name: str, step: Callable[[], dict[str, Any]]) -> StepResult:
    """Run one step, recorded in ``runs`` as ``cycle.<name>`` (with its seconds); its failure is
    the result's error, never raised: a failed step does not stop the cycle."""
    started = time.monotonic()
    result = StepResult(name)
    try:
        with recorded_run(store, f"cycle.{name}", timed=True) as counts:
            counts.update(step())
            result.counts = dict(counts)
    except TrailwardenError as exc:
        result.error = str(exc)
    except Exception as exc:  # a bug in one step must not take the service down
        log.exception("step %s failed", name)
        result.error = error_line(exc)
    result.seconds = round(time.monotonic() - started, 3)
    if result.error is None and result.counts.get("error"):
        result.error = str(result.counts["error"])
    if result.error is not None:  # printed by `run`, logged and posted by `serve`
        result.ok, result.error = False, scrub(result.error)
    return result


def _ingest(store: Store, config: Config, inventory: Inventory, _path: str | None, _echo: Any, *,
            stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    from pipeline.ingest.run import ingest_sources, ingest_targets
    from pipeline.store.sessions import link_sessions

    targets = ingest_targets(config, skip_missing=lambda name, path: log.warning(
        "source %s: %s does not exist (yet); skipped", name, path))
    outcomes = ingest_sources(store, targets, Attributor(inventory), stop=stop)
    counts: dict[str, Any] = {o.name: o.as_dict() for o in outcomes}
    counts["new"] = sum(o.report.new for o in outcomes if o.report)
    counts["role_sessions"] = vars(link_sessions(store))
    failed = [f"{o.name}: {o.error}" for o in outcomes if o.error]
    if failed:
        counts["error"] = "; ".join(failed)  # the other sources were ingested all the same
    return counts


def _detect(store: Store, config: Config, inventory: Inventory, path: str | None, _echo: Any) -> dict[str, Any]:
    from pipeline.detection.detect import run_detect

    report = run_detect(store, config, inventory, config_path=path)
    counts = report.as_dict()
    if report.failed:
        counts["error"] = f"detector(s) failed: {', '.join(report.failed)}"
    note = _unavailable_history(store)
    if note:  # scored and learned without those days: said in the step's line, `status` and the log
        counts["note"] = note
    return counts


def _unavailable_history(store: Store) -> str | None:
    """The sealed days of detect's history (the baselines' 28 days and the window) whose files
    cannot be read, named; None when all can."""
    from datetime import timedelta

    from models.baselines import HISTORY
    from pipeline.store.lake import unavailable_note

    return unavailable_note(store, (utcnow() - HISTORY - timedelta(days=1)).date())


def _seal(store: Store, config: Config, _inventory: Inventory, _path: str | None, _echo: Any) -> dict[str, Any]:
    """Seal the oldest sealable days and compact as many days of late events (bounded: at most
    ``store.seal_days_per_cycle`` of each per cycle; the rest waits for the next cycles)."""
    from pipeline.store import lake

    assert config.store is not None
    if config.lake is not None:
        lake.use_root(store, config.lake.path)
    sealed = lake.seal(store, config.store.seal_after, max_days=config.store.seal_days_per_cycle)
    compacted = lake.compact(store, max_days=config.store.seal_days_per_cycle)
    return {"sealed": sealed.as_dict(), "compacted": compacted.as_dict(),
            "waiting": len(lake.sealable_days(store, config.store.seal_after))}


def _features(store: Store, config: Config, _inventory: Inventory, _path: str | None, _echo: Any) -> dict[str, Any]:
    """Keep the per-day rows baselines fit from for the UTC days that ended (README, "Baselines
    from daily aggregates"), before detect refits: at most ``store.seal_days_per_cycle + 1`` days
    per cycle, newest first (after an inventory change every kept day is stale: they are rebuilt
    over the next cycles and read from their events meanwhile)."""
    return _keep_feature_days(store, config)


def _keep_feature_days(store: Store, config: Config) -> dict[str, Any]:
    """One bounded step of keeping per-day rows (the cycle's ``features`` step and the nightly refit's)."""
    from pipeline.detection import features

    assert config.store is not None
    return features.refresh(store, config.timezone, max_days=config.store.seal_days_per_cycle + 1).as_dict()


def _alert(store: Store, config: Config, inventory: Inventory, _path: str | None,
           echo: Callable[[str], None]) -> dict[str, Any]:
    """Enqueue what is owed and deliver it (``alert_once``); a missing Slack token fails the step
    and the alerts stay pending for Slack."""
    from pipeline.service.alerting.step import alert_once

    return alert_once(store, config, inventory, echo).as_dict()


class Service:
    """``serve``: the cycle on an interval, a nightly refit, clean stops on SIGTERM/SIGINT."""

    def __init__(self, config: Config, load_inventory: Callable[[], Inventory], db: Path, *,
                 config_path: str | None = None, echo: Callable[[str], None] = print,
                 reattribute: bool = False, inventory_source: str | None = None):
        self.config = config
        self.reattribute = reattribute
        self.inventory_source = inventory_source
        self.load_inventory = load_inventory
        self.db = db
        self.config_path = config_path
        self.echo = echo
        self._stop = threading.Event()
        self._failures: dict[str, int] = {}
        self._unrecorded: list[RunRecord] = []  # failed cycles that could not write to the store
        self.cycles = 0

    def build_scheduler(self) -> Any:
        """The cycle every interval and the nightly job, on ONE worker thread: no job ever runs
        beside another (the cycle beside itself, or the nightly refit beside a cycle)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.blocking import BlockingScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        every = self.config.schedule.ingest_every
        scheduler = BlockingScheduler(timezone=UTC, executors={"default": ThreadPoolExecutor(1)}, job_defaults={
            "max_instances": 1, "coalesce": True, "misfire_grace_time": max(1, int(every.total_seconds()))})
        scheduler.add_job(self.cycle, IntervalTrigger(seconds=every.total_seconds(), timezone=UTC),
                          id="cycle", next_run_time=datetime.now(UTC), replace_existing=True)
        scheduler.add_job(self.nightly, CronTrigger(hour=3, minute=30, timezone=self.config.tz),
                          id="nightly", replace_existing=True)
        if self.config.ram is not None:  # queued behind the first cycle (one worker)
            sync_every = self.config.schedule.ram_sync_every
            scheduler.add_job(self.ram_sync, IntervalTrigger(seconds=sync_every.total_seconds(), timezone=UTC),
                              id="ram_sync", next_run_time=datetime.now(UTC), replace_existing=True,
                              misfire_grace_time=max(1, int(sync_every.total_seconds())))
            if self.config.slack is not None:
                scheduler.add_job(self.weekly_review, CronTrigger(day_of_week="mon", hour=9, timezone=self.config.tz),
                                  id="weekly_review", replace_existing=True, misfire_grace_time=6 * 3600)
        return scheduler

    def start(self) -> None:
        every = self.config.schedule.ingest_every
        scheduler = self.build_scheduler()

        def stop(signum: int, _frame: Any) -> None:
            log.info("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
            self._stop.set()
            threading.Thread(target=scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("serving: a cycle every %ss on %s", int(every.total_seconds()), self.db)
        triage = self.start_triage()
        try:
            scheduler.start()
        finally:
            if triage is not None:
                triage.close()
        self._record_unrecorded()
        log.info("stopped after %s cycles", self.cycles)

    def start_triage(self) -> Any:
        """Triage from Slack beside the cycle, when configured (``slack.triage_group`` and
        SLACK_APP_TOKEN): the app hands presses to the cycle through its inbox. A refused app
        token leaves the service alerting, and says so in the log, in `status` and in Slack."""
        from pipeline.service.slack_app import start_triage

        try:
            handler = start_triage(self.config, self.db, self.load_inventory)
        except TrailwardenError as exc:
            log.error("%s", exc)
            _notify(self.config, f"trailwarden: {exc}")
            return None
        if handler is not None:
            log.info("triage from Slack: connected in Socket Mode")
        return handler

    @property
    def lock_wait(self) -> float:
        """How long a cycle waits for a store another process holds: about an interval (5 s to
        60 s); longer would only delay the next cycle, and the failure is recorded."""
        return min(60.0, max(5.0, self.config.schedule.ingest_every.total_seconds()))

    def cycle(self) -> None:
        if self._stop.is_set():
            return
        started = utcnow()
        try:
            result = run_cycle(self.config, self.load_inventory(), self.db, config_path=self.config_path,
                               echo=self.echo, stopping=self._stop.is_set, lock_wait=self.lock_wait,
                               unrecorded=self._unrecorded, reattribute=self.reattribute,
                               inventory_source=self.inventory_source)
        except Exception as exc:  # e.g. the store stayed locked: recorded, and the next cycle retries
            self._cycle_failed(started, exc)
            return
        self.cycles += 1
        self._failures.pop("cycle", None)
        for step in result.steps:
            if step.ok:
                self._failures.pop(step.name, None)
                log.info("step %s ok in %.2fs", step.name, step.seconds, extra={"counts": _brief(step.counts)})
            else:
                log.error("step %s failed: %s", step.name, step.error)
                self._count_failure(step.name, step.error or "")
        snapshot = next((s for s in result.steps if s.name == "snapshot"), None)
        if snapshot is not None:  # the store is closed by now: recorded with the next cycle
            self._unrecord(f"cycle.{snapshot.name}", result.started, utcnow(), snapshot.error)
        elif self._failures.pop("snapshot", None):
            self._unrecord("cycle.snapshot", result.started, utcnow(), None)

    def _cycle_failed(self, started: datetime, exc: Exception) -> None:
        """A cycle that could not run (the store stayed locked, the inventory became invalid...):
        logged, and recorded as a failed run of each step once the store can be written."""
        if self._stop.is_set():
            log.info("stopping: the cycle did not run (%s)", exc)
            return
        error = scrub(str(exc) if isinstance(exc, TrailwardenError) else f"{type(exc).__name__}: {exc}")
        log.log(logging.ERROR, "cycle failed: %s", error, exc_info=not isinstance(exc, TrailwardenError))
        for name in STEPS:
            self._unrecord(f"cycle.{name}", started, utcnow(), f"cycle failed: {error}")
        self._count_failure("cycle", error)

    def _unrecord(self, command: str, started: datetime, finished: datetime, error: str | None) -> None:
        last = next((r for r in reversed(self._unrecorded) if r.command == command), None)
        if last is not None and last.error == error and error is not None:  # the same failure again
            last.finished = finished
            last.counts["cycles"] += 1
        else:
            self._unrecorded.append(RunRecord(command, started, finished, error))

    def _record_unrecorded(self) -> None:
        """On the way out: failed cycles not in ``runs`` yet, if the store can be had quickly."""
        if not self._unrecorded:
            return
        try:
            with open_store(self.db, memory_limit=self.config.memory_limit, lock_wait=2.0) as store:
                _record_runs(store, self._unrecorded)
        except TrailwardenError as exc:
            log.error("could not record %s failed run(s) in the store: %s", len(self._unrecorded), exc)

    def nightly(self) -> None:
        from pipeline.detection import learning

        if self._stop.is_set():  # queued behind a cycle when the stop came
            return
        try:
            with open_store(self.db, memory_limit=self.config.memory_limit, lock_wait=60.0,
                            stop=self._stop.is_set, on_wait=log.warning) as store:
                if self.config.store is not None:  # the day that just ended, kept before the refit reads it
                    _keep_feature_days(store, self.config)
                fitted = learning.refit(store, utcnow(), self.config.timezone)
                if self.config.retention is not None:
                    from pipeline.store.retention import prune

                    prune(store, self.config.retention)
            publish_snapshot(self.db)
            log.info("nightly refit of %s baselines done", len(fitted))
        except TrailwardenError as exc:
            log.error("nightly job failed: %s", exc)

    def ram_sync(self) -> None:
        """``ram sync`` as the service's own job: a failure is logged and recorded (``status``
        shows it) and counted like a step's; the next interval tries again."""
        from pipeline.ram.sync import ram_sync

        if self._stop.is_set():
            return
        try:
            with open_store(self.db, memory_limit=self.config.memory_limit, lock_wait=self.lock_wait,
                            stop=self._stop.is_set, on_wait=log.warning) as store, \
                    recorded_run(store, "ram sync", timed=True) as counts:
                report = ram_sync(store, self.config, stop=self._stop.is_set)
                counts.update({k: v for k, v in report.as_dict().items() if k != "errors"})
                counts["errors"] = len(report.errors)
                if report.error:
                    counts["error"] = report.error
            publish_snapshot(self.db)
        except TrailwardenError as exc:
            log.error("ram sync failed: %s", scrub(str(exc)))
            self._count_failure("ram_sync", str(exc))
            return
        if report.error:
            log.error("ram sync: %s", report.error)
            self._count_failure("ram_sync", report.error)
        else:
            self._failures.pop("ram_sync", None)
            log.info("ram sync: snapshot %s, %s calls", report.snapshot, report.calls)

    def weekly_review(self) -> None:
        """The permission review in Slack (``alerting.review_post``), recorded as ``review post``."""
        from pipeline.investigate.review import review
        from pipeline.ram.snapshots import load_snapshot
        from pipeline.service.alerting.review_post import post_review
        from pipeline.service.alerting.slack import TOKEN_ENV, SlackSender, token_from_env

        token = token_from_env()
        if self._stop.is_set() or self.config.slack is None:
            return
        try:
            if not token:
                raise TrailwardenError(f"{TOKEN_ENV} is not set: the weekly review was not posted")
            sender = SlackSender(token, self.config.slack.channel, self.config.slack.base_url)
            with open_store(self.db, memory_limit=self.config.memory_limit, lock_wait=self.lock_wait,
                            stop=self._stop.is_set, on_wait=log.warning) as store, \
                    recorded_run(store, "review post") as counts:
                result = review(store, self.load_inventory(), load_snapshot(store))
                counts.update(post_review(store, sender, result, utcnow(), self.config.tz))
            publish_snapshot(self.db)
        except TrailwardenError as exc:
            log.error("weekly review: %s", scrub(str(exc)))
            self._count_failure("weekly_review", str(exc))

    def _count_failure(self, step: str, error: str) -> None:
        self._failures[step] = self._failures.get(step, 0) + 1
        if self._failures[step] == REPEATED_FAILURES:
            message = f"trailwarden: step {step} has failed {REPEATED_FAILURES} cycles in a row: {error}"
            log.error(message)
            _notify(self.config, message)


def _notify(config: Config, message: str) -> None:
    """Tell Slack the service itself is unwell (best effort: Slack may be the thing failing). The
    error text may quote an event or a server, so it is a plain_text section (nothing formats)."""
    from pipeline.service.alerting.messages import Message, untrusted
    from pipeline.service.alerting.slack import TOKEN_ENV, SlackSender, token_from_env

    token = token_from_env()
    if config.slack is None:
        return
    if not token:
        log.error("could not post the health warning to Slack: %s is not set", TOKEN_ENV)
        return
    try:
        text = untrusted(scrub(message), 1500)
        SlackSender(token, config.slack.channel, config.slack.base_url, retries=1).post(
            Message(text=f":warning: {text}", blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": ":warning: *trailwarden needs attention*",
                                             "verbatim": True}},
                {"type": "section", "text": {"type": "plain_text", "text": text, "emoji": False}}]),
            key=f"health-{int(time.time())}")
    except TrailwardenError as exc:
        log.error("could not post the health warning to Slack: %s", exc)


def _brief(counts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if isinstance(v, int | float | str)}
