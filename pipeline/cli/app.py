"""The ``trailwarden`` command: thin commands over the library.

Each command opens the store, calls one library function and renders the result. ``--config``
and ``--db`` are accepted before the command name and after it. Exit codes: 0 success, 1 runtime
failure, 2 bad usage or invalid config/input (the message names the file and the key).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from models.inventory import Attributor, Inventory, load_inventory
from pipeline import __version__
from pipeline.core.config import Config, load_config, resolve_config_path
from pipeline.core.errors import ScrubFilter, TerminalError, TrailwardenError, UsageError, scrub
from pipeline.core.inert import one_line
from pipeline.core.output import ALIASES, FORMATS, json_text, render, to_jsonable
from pipeline.store.attribution import STALE_NOTE, attribution_is_stale, reattribute_if_changed
from pipeline.store.store import Store, open_for_reading, open_store

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("trailwarden")


@dataclass
class App:
    """What every command needs: where the config and the store are, loaded once."""

    config_path: str | None = None
    db_path: str | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)
    _inventory: Inventory | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(resolve_config_path(self.config_path))
        return self._config

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            self._inventory = load_inventory(self.config.inventory)
        return self._inventory

    @property
    def database(self) -> Path:
        return Path(self.db_path) if self.db_path else self.config.database

    @property
    def config_file(self) -> Path | None:
        """The config file in use, or None for the built-in defaults."""
        return resolve_config_path(self.config_path)

    @property
    def inventory_source(self) -> str | None:
        """Where the inventory comes from, for messages; None when there is none."""
        inventory = self.config.inventory
        return str(inventory) if inventory is not None else None

    def validate_for_writing(self) -> None:
        """Everything a writing command reads, checked before it writes anything: the config (and
        its detector overrides) and the inventory."""
        from pipeline.detection.detect import active_detectors

        self.inventory  # noqa: B018 - loads and validates
        active_detectors(self.config, self.config_path)

    def reattribute(self, store: Store, allow: bool) -> int | None:
        """Bring the stored attribution in step with the inventory (refused, exit 2, when it would
        strip most events of their agents, unless ``allow``)."""
        why = None if self.config_file else (f"no config file: --config, $TRAILWARDEN_CONFIG or "
                                              f"config/trailwarden.yaml in {Path.cwd()}")
        return reattribute_if_changed(store, self.inventory, allow_orphans=allow, source=self.inventory_source,
                                      why=why)

    @property
    def database_of_config(self) -> Path:
        """The store a command finds without --db: the one the config names."""
        return self.config.database

    def open(self, *, read_only: bool = False) -> Store:
        """Writers wait (bounded) for the lock; readers never do: when the service is mid-cycle
        they read its last snapshot (at most one cycle old) and say so on stderr. Readers are
        sandboxed: the store and the retention archive's Parquet, no other file."""
        if read_only:
            retention = self.config.retention
            archive = [retention.archive_dir] if retention is not None and retention.archive_dir else []
            return open_for_reading(self.database, memory_limit=self.config.memory_limit, allowed_dirs=archive,
                                    on_snapshot=lambda p: click.echo(
                                        f"trailwarden: the store is busy; reading the snapshot {p}", err=True))
        return open_store(self.database, memory_limit=self.config.memory_limit)


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            app = ctx.find_object(App) or ctx.ensure_object(App)
            setattr(app, name, value)
        return value

    return callback


def common_options(func: F) -> F:
    """``--config`` and ``--db``, valid before and after the command name (the later wins)."""
    func = click.option("--db", metavar="PATH", expose_value=False, callback=_remember("db_path"),
                        help="The DuckDB store (overrides `database` in the config).")(func)
    return click.option("--config", metavar="PATH", expose_value=False,
                        callback=_remember("config_path"),
                        help="Config file (default: $TRAILWARDEN_CONFIG, else "
                             "config/trailwarden.yaml if present, else built-in defaults).")(func)


class FormatChoice(click.Choice):
    """``--format``: one vocabulary on every command (``table|json|csv``, ``html`` for replay);
    ``text``, the old name of ``table`` on some commands, is still taken (hidden) for scripts."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.lower() in ALIASES and ALIASES[value.lower()] in self.choices:
            value = ALIASES[value.lower()]
        return super().convert(value, param, ctx)


def format_option(choices: tuple[str, ...] = FORMATS, default: str = "table") -> Callable[[F], F]:
    return click.option("--format", "fmt", type=FormatChoice(choices, case_sensitive=False), default=default,
                        show_default=True, help="Output format.")


REATTRIBUTE_HELP = ("Accept an inventory that would leave most stored events with no agent (an empty or "
                    "absent one, say): re-attribute them all the same.")


def reattribute_option(func: F) -> F:
    return click.option("--reattribute", is_flag=True, help=REATTRIBUTE_HELP)(func)


pass_app = click.make_pass_decorator(App, ensure=True)


class UnexpectedEndOfData(Exception):
    """An EOFError that escaped a command (click would report it as "Aborted!", exit 130)."""


class _Cli(click.Group):
    """click turns EOFError, like Ctrl-C, into Abort; "aborted" and exit 130 are for Ctrl-C
    only, so an EOFError escaping a command becomes an internal error (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EOFError as exc:
            raise UnexpectedEndOfData(str(exc) or "unexpected end of data") from exc


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common_options
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Logs on stderr: plain lines, or one JSON object per line.")
@click.version_option(__version__, prog_name="trailwarden")
@click.pass_context
def cli(ctx: click.Context, debug: bool, log_format: str) -> None:
    """trailwarden watches the agents of an Alibaba Cloud account.

    It pulls ActionTrail events into DuckDB, attributes each to an agent from the inventory,
    scores them and tells the security team what matters.

    \b
    Start here:
      trailwarden demo                      # the whole pipeline on generated data
      trailwarden ingest --file trail/      # load ActionTrail files or an OSS dump
      trailwarden status                    # what is in the store
      trailwarden query "SELECT agent, count(*) FROM events GROUP BY 1"
    """
    ctx.ensure_object(App).debug = debug
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubFilter())  # no secret in any log line, ours or an SDK's
    handler.setFormatter(JsonLogFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("trailwarden").setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:  # the clients log every retry; trailwarden reports the outcome in one line
        for noisy in ("slack_sdk", "aliyun", "urllib3", "alibabacloud", "Tea", "darabonba"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, and any ``counts``."""

    def format(self, record: logging.LogRecord) -> str:
        from datetime import UTC, datetime

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        counts = getattr(record, "counts", None)
        if counts:
            entry["counts"] = counts
        if record.exc_info:
            entry["exception"] = (record.exc_text or self.formatException(record.exc_info)).splitlines()[-1]
        return json.dumps(to_jsonable(entry), default=str)


# -- ingest --------------------------------------------------------------------------------------
@cli.command()
@common_options
@click.option("--source", "sources", multiple=True, metavar="NAME",
              help="Ingest only this configured source (repeatable).")
@click.option("--file", "paths", multiple=True, metavar="PATH",
              help="A file or directory of ActionTrail events (repeatable): JSON array, single "
                   "event, NDJSON, LookupEvents body, .gz of any, OSS delivery folders.")
@click.option("--since", metavar="T", help="lookup_events sources: backfill from T (e.g. 30d, at most 90d).")
@format_option()
@reattribute_option
@pass_app
def ingest(app: App, sources: tuple[str, ...], paths: tuple[str, ...], since: str | None, fmt: str,
           reattribute: bool) -> None:
    """Pull from the configured sources, or ingest files, into the store, once.

    Re-running is safe: files already ingested are skipped by content hash, SLS and LookupEvents
    resume from the cursor committed with the last events, and events already stored are
    recognized by eventId. Input that cannot be parsed is quarantined with the reason (see
    `trailwarden query "SELECT * FROM quarantine"`); the rest goes on. A source that fails is
    reported and the others still run (exit 1).

    \b
    Examples:
      trailwarden ingest --file ../shared/datasets/real-attacks/
      trailwarden ingest --file oss-dump/AliyunLogs/Actiontrail/ --format json
      trailwarden ingest --source prod-trail
      trailwarden ingest --source history --since 30d     # LookupEvents backfill
    """
    from pipeline.core.times import parse_when, utcnow
    from pipeline.ingest.run import ingest_sources

    targets = _ingest_targets(app, sources, paths)
    backfill = parse_when(since, utcnow(), "--since") if since else None
    if backfill is not None:
        _check_backfill(targets, backfill)
    app.validate_for_writing()
    attribute = Attributor(app.inventory)
    started = time.monotonic()
    with app.open() as store, _recorded_run(store, "ingest") as counts:
        changed = app.reattribute(store, reattribute)
        if changed:
            counts["reattributed"] = changed
        outcomes = ingest_sources(store, targets, attribute, since=backfill, progress=_progress_bar)
        for outcome in outcomes:
            counts[outcome.name] = outcome.as_dict()
        counts["new"] = sum(o.report.new for o in outcomes if o.report)
        elapsed = time.monotonic() - started
        if fmt == "json":
            click.echo(json.dumps(to_jsonable({"seconds": round(elapsed, 3),
                                               "sources": {o.name: o.as_dict() for o in outcomes}}), indent=2,
                                  allow_nan=False))
        elif fmt == "csv":
            click.echo(_ingest_csv(outcomes, elapsed))
        else:
            for outcome in outcomes:
                if outcome.report:
                    click.echo(_ingest_line(outcome.name, outcome.as_dict(), elapsed))
        failed = [o for o in outcomes if o.error]
        if failed:  # raised inside: the run is recorded as failed, with this error
            raise TerminalError("; ".join(f"source {o.name!r}: {o.error}" for o in failed))


def _ingest_targets(app: App, sources: tuple[str, ...], paths: tuple[str, ...]) -> list[tuple[str, Any]]:
    from pipeline.core.config import FilesSource
    from pipeline.ingest.sources.files import find_files

    if paths:
        find_files(paths)  # a missing path is a usage error before anything is written
    targets: list[tuple[str, Any]] = [("files", list(paths))] if paths else []
    chosen = [app.config.source(n) for n in sources] if sources else ([] if paths else app.config.sources)
    for src in chosen:
        targets.append((src.name, [str(src.path)] if isinstance(src, FilesSource) else src))
    if not targets:
        raise UsageError("nothing to ingest: pass --file PATH or configure `sources` in the config")
    return targets


def _check_backfill(targets: list[tuple[str, Any]], backfill: datetime) -> None:
    """``--since`` is a LookupEvents backfill: refuse it where nothing would use it, and say when
    it reaches past the 90 days the API keeps."""
    from pipeline.core.config import LookupEventsSource
    from pipeline.core.times import utcnow
    from pipeline.ingest.sources.lookup_events import RETENTION

    lookups = [src.name for _, src in targets if isinstance(src, LookupEventsSource)]
    if not lookups:
        others = ", ".join(name for name, _ in targets)
        raise UsageError(f"--since backfills lookup_events sources only; nothing selected uses it ({others})",
                         key="--since")
    oldest = utcnow() - RETENTION
    if backfill < oldest:
        click.echo(f"note: LookupEvents keeps 90 days: backfilling {', '.join(lookups)} from "
                   f"{oldest:%Y-%m-%d %H:%M}Z, not {backfill:%Y-%m-%d}", err=True)


_INGEST_CSV = ["source", "new", "duplicates", "quarantined", "files", "skipped_files", "error", "seconds"]


def _ingest_csv(outcomes: list[Any], elapsed: float) -> str:
    """One row per source: its counts (0 where a source has no such count) and its error."""
    rows = [[o.name, *(o.as_dict().get(c, 0) for c in _INGEST_CSV[1:6]), o.error, round(elapsed, 3)]
            for o in outcomes]
    return render(_INGEST_CSV, rows, "csv")


def _ingest_line(name: str, rep: dict[str, Any], elapsed: float) -> str:
    files = rep.get("files", 0)
    skipped = rep.get("skipped_files", 0)
    line = (f"{name}: {rep.get('new', 0):,} new events, {rep.get('duplicates', 0):,} duplicates, "
            f"{rep.get('quarantined', 0):,} quarantined from {files:,} file{'s' if files != 1 else ''}")
    if skipped:
        line += f" ({skipped:,} already ingested, skipped)"
    return line + f" in {elapsed:.1f}s"


@contextmanager
def _progress_bar(_name: str, paths: list[str]) -> Iterator[Callable[[int], None] | None]:
    """A byte-based progress bar on a terminal; nothing when stderr is not one."""
    if not sys.stderr.isatty():
        yield None
        return
    from pipeline.core.output import Progress
    from pipeline.ingest.sources.files import find_files

    total = sum(p.stat().st_size for p in find_files(paths))
    bar = Progress(total, lambda text: click.echo(text, file=sys.stderr, nl=False))
    try:
        yield bar.update
    except BaseException:
        click.echo("", err=True)  # the error's line starts on a line of its own
        raise
    bar.finish()


@contextmanager
def _recorded_run(store: Store, command: str) -> Iterator[dict[str, Any]]:
    """Record the command in ``runs``: its counts on success, its error on failure."""
    run_id = store.start_run(command)
    counts: dict[str, Any] = {}
    try:
        yield counts
    except BaseException as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        try:
            store.finish_run(run_id, counts, error=message)
        except Exception:
            log.debug("could not record the failed run", exc_info=True)
        raise
    store.finish_run(run_id, to_jsonable(counts))


# -- query / status ------------------------------------------------------------------------------
@cli.command()
@common_options
@click.argument("sql")
@click.option("--param", "-p", "params", multiple=True, metavar="VALUE",
              help="A value bound to the next `?` in SQL (repeatable); never spliced into the text.")
@format_option()
@pass_app
def query(app: App, sql: str, params: tuple[str, ...], fmt: str) -> None:
    """Run one read-only SQL statement over the store.

    Tables: events, quarantine, ingest_state, ingested_files, runs, findings,
    finding_status_changes, suppressions, alerts, baselines, pipeline_state, schema_migrations.
    Times are UTC. One SELECT (or PRAGMA, CALL, PIVOT, EXPLAIN); no file but the store and the
    retention archive's Parquet (read_parquet('<retention.archive_dir>/*/*.parquet')).

    \b
    Examples:
      trailwarden query "SELECT agent, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC"
      trailwarden query "SELECT * FROM events WHERE agent = ?" -p staging-deploy --format json
    """
    from pipeline.store.status import run_query

    with app.open(read_only=True) as store:
        columns, rows = run_query(store, sql, params)
    click.echo(render(columns, rows, fmt))


@cli.command()
@common_options
@format_option()
@pass_app
def status(app: App, fmt: str) -> None:
    """Events, sources' cursors and lag, quarantine, and the last runs.

    `--format csv` is the per-partition table of the sources (one row per SLS shard, LookupEvents
    region or files source), for a monitoring script; `json` holds everything.

    \b
    Example:
      trailwarden status --format json
    """
    from pipeline.service.alerting.outbox import alert_target
    from pipeline.store.status import collect_status

    target = alert_target(app.config)
    with app.open(read_only=True) as store:
        info = collect_status(store, target.destination, target.min_severity)
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(info), indent=2, allow_nan=False))
        return
    if fmt == "csv":
        columns = ["source", "partition", "cursor_time", "watermark", "lag_seconds", "events",
                   "events_last_hour", "updated_at", "last_error", "last_error_at"]
        click.echo(render(columns, [[s.get(c) for c in columns] for s in info["sources"]], "csv"))
        return
    click.echo(_status_text(info))


def _status_text(info: dict[str, Any]) -> str:
    from pipeline.store.status import human_duration

    j = to_jsonable
    lines = [
        f"store       {info['database']} ({info['database_bytes'] / 2**20:.1f} MiB, schema v{info['schema_version']})",
        f"events      {info['events']:,} from {info['agents']:,} agents"
        + (f", {j(info['first_event'])} .. {j(info['last_event'])}" if info["events"] else ""),
        f"files       {info['files_ingested']:,} ingested",
        f"quarantine  {info['quarantined']:,}"
        + "".join(f"\n              {r['count']:,} {one_line(r['reason'])}" for r in info["quarantine_reasons"])
        + _more_reasons(info),
        "",
    ]
    if info["sources"]:
        lines.append(render(["source", "partition", "cursor_time", "watermark", "lag", "events", "last_hour",
                             "updated_at", "last_error"],
                            [[s["source"], s["partition"], s["cursor_time"], s["watermark"],
                              human_duration(s["lag_seconds"]), s["events"],
                              s["events_last_hour"], s["updated_at"], s["last_error"]] for s in info["sources"]],
                            "table", keys=2))
        lines.append("")
    service = info.get("service") or {}
    if service.get("steps"):
        lines.append(render(["step", "last_run", "status", "seconds", "error"],
                            [[x["step"], x["last_run"], x["status"], x["seconds"], x["error"]]
                             for x in service["steps"]], "table"))
        lines.append("")
    lines.append(f"alerts      {service.get('pending_alerts', 0):,} pending"
                 + (f" for {one_line(service['alert_destination'])}" if service.get("alert_destination") else ""))
    if service.get("snapshot"):
        snap = service["snapshot"]
        lines.append(f"snapshot    {snap['path']} ({snap['age_seconds']:.0f}s old)")
    lines.append("")
    if info["recent_runs"]:
        lines.append(render(["run", "command", "started_at", "status", "error"],
                            [[r["id"], r["command"], r["started_at"], r["status"], r["error"]]
                             for r in info["recent_runs"]], "table"))
    return "\n".join(lines).rstrip()


def _more_reasons(info: dict[str, Any]) -> str:
    more = info["quarantine_reason_kinds"] - len(info["quarantine_reasons"])
    if more <= 0:
        return ""
    return f"\n              … and {more:,} more kind{'s' if more != 1 else ''} of reason ({_ALL_REASONS})"


_ALL_REASONS = 'trailwarden query "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY n DESC"'


# -- detect / findings ---------------------------------------------------------------------------
@cli.command()
@common_options
@click.option("--since", metavar="T", help="Start of the window (2026-11-01, 2026-11-01T08:00:00Z, or 7d ago).")
@click.option("--until", metavar="T", help="End of the window, exclusive (default: now).")
@format_option()
@reattribute_option
@pass_app
def detect(app: App, since: str | None, until: str | None, fmt: str, reattribute: bool) -> None:
    """Score events in [since, until) with every detector and store the findings.

    Only events before the window are used as history, so a past window scores the same whenever
    it runs. Without flags, scores everything ingested since the last detect. Re-running over the
    same window adds no duplicate findings; a detector that fails is reported and the others run.

    \b
    Examples:
      trailwarden detect
      trailwarden detect --since 7d
      trailwarden detect --since 2026-11-01 --until 2026-11-08 --format json
    """
    from pipeline.core.times import parse_when, utcnow
    from pipeline.detection.detect import run_detect

    now = utcnow()
    start = parse_when(since, now, "--since") if since else None
    end = parse_when(until, now, "--until") if until else None
    if start and end and start >= end:
        raise UsageError("--since must be before --until", key="--since")
    app.validate_for_writing()
    inventory = app.inventory
    with app.open() as store, _recorded_run(store, "detect") as counts:
        changed = app.reattribute(store, reattribute)
        if changed:
            counts["reattributed"] = changed
        report = run_detect(store, app.config, inventory, since=start, until=end,
                            config_path=app.config_path, run_id=None)
        counts.update(report.as_dict())
        if report.failed:
            counts["failed_detectors"] = report.failed
        if fmt == "json":
            click.echo(json.dumps(to_jsonable(report.as_dict()), indent=2, allow_nan=False))
        elif fmt == "csv":
            click.echo(render(["detector", "findings", "seconds", "error"],
                              [[name, st["findings"], round(st["seconds"], 3), st["error"]]
                               for name, st in report.detectors.items()], "csv"))
        else:
            click.echo(_detect_text(report))
        if report.failed:
            raise TerminalError(f"detector(s) failed: {', '.join(report.failed)}; the others' findings "
                                "were stored (see `trailwarden status`)")


def _detect_text(report: Any) -> str:
    if report.since is None:
        return "Nothing new to score."
    j = to_jsonable
    lines = [f"Scored {report.events:,} events from {j(report.since)} to {j(report.until)}: "
             f"{report.new} new findings, {report.extended} extended."]
    if len(report.spans) > 1:
        lines.append(f"  in {len(report.spans)} separate stretches (each with its own baselines): "
                     + ", ".join(f"{j(a)} .. {j(b)}" for a, b in report.spans))
    for name, stats in report.detectors.items():
        state = f"failed: {one_line(stats['error'])}" if stats["error"] else f"{stats['findings']} findings"
        lines.append(f"  {name:<22} {state} ({stats['seconds']:.2f}s)")
    return "\n".join(lines)


@cli.command()
@common_options
@click.option("--since", metavar="T", required=True,
              help="Start (2026-11-01, 2026-11-01T08:00:00Z, or 30d ago); periods start at its UTC midnight.")
@click.option("--until", metavar="T", help="End of the window, exclusive (default: now).")
@click.option("--step", default="1d", show_default=True, metavar="DURATION",
              help="Period length: 1d, 12h, 7d (at least 1h); each period gets its own baselines.")
@click.option("--detector", "detector_ids", multiple=True, metavar="ID",
              help="Only this detector (repeatable; default: all).")
@click.option("--top", type=click.IntRange(1), default=20, show_default=True,
              help="Agents shown in the per-agent table.")
@format_option()
@pass_app
def backtest(app: App, since: str, until: str | None, step: str, detector_ids: tuple[str, ...], top: int,
             fmt: str) -> None:
    """What each detector would have raised, day by day, over stored history. Writes nothing.

    Each day is scored as a `detect` on that day would have scored it: with baselines fitted on the
    28 days before it, every detector with the config's `detectors:` overrides, and findings merged
    within each detector's dedup window (one that continues across midnight counts once, on the
    day it was first raised). To tune a threshold, run it again with a copy of the config.
    No findings, baselines, runs or state are stored. JSON: {window, step, detectors, days: [{day,
    counts, by_agent, ...}], totals, findings, notes}; CSV: one row per (day, detector, agent, count).

    \b
    Examples:
      trailwarden backtest --since 30d
      trailwarden backtest --since 2026-11-01 --until 2026-12-01 --detector failure_storm
      trailwarden --config tuned.yaml backtest --since 30d --format json > tuned.json
      trailwarden backtest --since 7d --step 12h --format csv
    """
    from pipeline.core.times import parse_step, parse_when, utcnow
    from pipeline.detection.backtest import as_text, run_backtest

    now = utcnow()
    start = parse_when(since, now, "--since")
    end = parse_when(until, now, "--until") if until else now
    period = parse_step(step)
    if start >= end:
        raise UsageError("must be before --until", key="--since")
    with app.open(read_only=True) as store:
        report = run_backtest(store, app.config, app.inventory, since=start, until=end, step=period,
                              only=detector_ids, config_path=app.config_path)
    if fmt == "json":
        click.echo(json_text(to_jsonable(report.as_dict()), indent=2))
    elif fmt == "csv":
        click.echo(render(["day", "detector", "agent", "count"], report.csv_rows(), "csv"))
    else:
        click.echo(as_text(report, top))
    failed = sorted({d for p in report.periods for d in p.errors})
    if failed:
        click.echo(f"trailwarden: warning: detector(s) failed on some days: {', '.join(failed)} "
                   "(see the notes); their counts there are missing", err=True)


@cli.group(invoke_without_command=True)
@common_options
@click.option("--agent", help="Only this agent (inventory name or raw identity).")
@click.option("--detector", help="Only this detector id.")
@click.option("--status", type=click.Choice(["open", "acknowledged", "resolved", "false_positive", "suppressed", "all"]),
              default="open", show_default=True, help="Only findings in this state (`all` for every one).")
@click.option("--since", metavar="T", help="Only findings seen since T (2026-11-01 or 7d).")
@click.option("--min-severity", type=click.Choice(["low", "medium", "high", "critical"]), help="Only this severe or worse.")
@click.option("--limit", type=click.IntRange(1), help="At most this many, newest first.")
@format_option()
@click.pass_context
def findings(ctx: click.Context, agent: str | None, detector: str | None, status: str, since: str | None,
             min_severity: str | None, limit: int | None, fmt: str) -> None:
    """List findings, newest first (open ones unless --status says otherwise); triage them.

    JSON output is an array of objects with id, detector, agent, severity, score, first_seen,
    last_seen, summary, event_ids, event_count, evidence and status.

    \b
    Examples:
      trailwarden findings
      trailwarden findings --agent ci-deployer --min-severity high
      trailwarden findings --detector out_of_scope --since 7d --format json
      trailwarden findings ack 3df22d5f1e --reason "looking into it"
      trailwarden findings stats --since 30d
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.core.times import parse_when, utcnow
    from pipeline.detection.findings import list_findings

    app = ctx.ensure_object(App)
    when = parse_when(since, utcnow(), "--since") if since else None
    with app.open(read_only=True) as store:
        check_filters(app, store, agent=agent, detector=detector)
        rows = list_findings(store, agent=agent, detector=detector, status=None if status == "all" else status,
                             since=when, min_severity=min_severity, limit=limit)
    if fmt == "table":
        cols = ["id", "severity", "status", "detector", "agent", "last_seen", "event_count", "summary"]
        click.echo(render(cols, [[r[c] for c in cols] for r in rows], "table"))
        return
    cols = list(rows[0]) if rows else ["id", "detector", "agent", "severity", "score", "first_seen",
                                       "last_seen", "summary", "event_ids", "event_count", "evidence", "status"]
    click.echo(render(cols, [[r[c] for c in cols] for r in rows], fmt))


def known_agents(app: App, store: Store) -> set[str]:
    """Inventory agents and every agent value in the store (raw identities of unregistered ones)."""
    known = {a.name for a in app.inventory.agents}
    for table in ("events", "findings"):
        known.update(r[0] for r in store.con.execute(f"SELECT DISTINCT agent FROM {table}").fetchall())  # noqa: S608
    return known


def check_filters(app: App, store: Store, *, agent: str | None = None, detector: str | None = None) -> None:
    """Exit 2 naming an --agent or --detector that matches nothing anywhere (not a typo's empty list)."""
    from detectors import registry

    if detector is not None:
        known = set(registry()) | {r[0] for r in store.con.execute("SELECT DISTINCT detector FROM findings").fetchall()}
        if detector not in known:
            raise UsageError(f"unknown detector {detector!r} (known: {', '.join(sorted(known))})", key="--detector")
    if agent is not None and agent not in known_agents(app, store):
        owner = app.inventory.identity_map.get(agent)
        why = (f"it is an identity of agent {owner}: use --agent {owner}" if owner
               else "not in the inventory and never seen in the store")
        raise UsageError(f"unknown agent {agent!r}: {why}", key="--agent")


def resolve_agent(app: App, name: str, doing: str) -> str:
    """The inventory agent a raw identity belongs to (``ram-user:ci-deploy`` -> ``ci-deployer``),
    said on stderr; any other name as given."""
    owner = None if app.inventory.agent(name) else app.inventory.identity_map.get(name)
    if owner is None:
        return name
    click.echo(f"trailwarden: {name} is an identity of agent {owner}: {doing} {owner}", err=True)
    return owner


@cli.command()
@common_options
@format_option()
@pass_app
def agents(app: App, fmt: str) -> None:
    """The inventory with each agent's last activity, open findings, expiry and review dates.

    Unregistered identities seen in the store are listed too, marked `unregistered`.

    \b
    Example:
      trailwarden agents --format json
    """
    from pipeline.investigate.agents import agent_rows, joined

    inventory = app.inventory
    if not app.database.exists():  # no store yet: the inventory alone, every agent never seen
        columns, rows = agent_rows(None, inventory)
    else:
        with app.open(read_only=True) as store:
            _note_if_attribution_stale(store, inventory)
            columns, rows = agent_rows(store, inventory)
    click.echo(render(columns, rows if fmt == "json" else joined(rows, "; " if fmt == "csv" else ", "), fmt))


def _note_if_attribution_stale(store: Store, inventory: Inventory) -> None:
    """Read-only commands show events under the agents they were stored with: say on stderr when
    the inventory changed since (only a writing command re-attributes them)."""
    if attribution_is_stale(store, inventory):
        click.echo(STALE_NOTE, err=True)


@cli.command()
@common_options
@click.option("--until", metavar="T", help="Fit for T's UTC day: on the 28 days before its midnight (default: today).")
@format_option()
@pass_app
def train(app: App, until: str | None, fmt: str) -> None:
    """Refit every agent's baseline on the 28 days before today's UTC midnight (or --until's) and
    store it: the baselines `detect` scores that day's windows against.

    `detect` fits what it needs by itself (on the days before its window, again whenever events
    arrive late in that history); `train` refits now and shows what was learned: active days,
    failure rates, the hours each agent keeps.

    \b
    Example:
      trailwarden train --format json
    """
    from models import baselines
    from pipeline.core.times import parse_when, utcnow

    end = parse_when(until, utcnow(), "--until") if until else utcnow()
    with app.open() as store, _recorded_run(store, "train") as counts:
        fitted = baselines.refit(store, end, app.config.timezone)
        counts["agents"] = len(fitted)
    columns = ["agent", "active_days", "learned", "calls", "failure_rate", "max_failures_5m", "max_calls_5m",
               "usual_hours"]
    rows = [[b.agent, b.active_days, b.learned, b.calls, round(b.failure_rate, 4), b.max_failures_5m,
             b.max_calls_5m, baselines.usual_hours(b)] for b in sorted(fitted.values(), key=lambda b: b.agent)]
    click.echo(render(columns, rows, fmt))


@cli.command()
@common_options
@click.option("--dry-run", is_flag=True, help="Show what would be posted; post and record nothing.")
@format_option(("table", "json"))
@pass_app
def alert(app: App, dry_run: bool, fmt: str) -> None:
    """Deliver pending findings to Slack (or print them when no `slack:` is configured).

    Every open finding at or above `slack.min_severity` is posted once: an agent's new findings
    in one message, later growth of a finding as a reply in its thread. Re-running, or running
    after a crash, never posts twice; when Slack is down or misconfigured, or SLACK_BOT_TOKEN is
    not set, the run fails and the findings stay pending for Slack, to go out on the next
    successful run. `--dry-run` shows every message a run would post (JSON: text and blocks,
    with their finding ids) and records nothing.

    \b
    Examples:
      trailwarden alert --dry-run
      SLACK_BOT_TOKEN=xoxb-... trailwarden alert
    """
    from pipeline.service.alerting.outbox import alert_target, deliver, enqueue, owed_count, preview
    from pipeline.service.alerting.slack import (
        ConsoleSender,
        SlackSender,
        missing_token,
        token_from_env,
    )

    target = alert_target(app.config)
    token = token_from_env()
    inventory = app.inventory
    if dry_run:
        if target.slack and not token:
            click.echo(f"trailwarden: note: {TOKEN_NOTE}", err=True)
        with app.open(read_only=True) as store:
            report = preview(store, target.destination, target.min_severity, inventory, _replay_command)
        click.echo(_preview_text(report.previews, target.destination, fmt))
        return
    slack = app.config.slack
    sender: Any = (ConsoleSender(click.echo) if slack is None
                   else SlackSender(token, slack.channel, slack.base_url) if token else None)
    with app.open() as store, _recorded_run(store, "alert") as counts:
        enqueued = enqueue(store, target.destination, target.min_severity)
        counts["enqueued"] = enqueued
        if sender is None:  # never the console instead: Slack is owed these
            raise missing_token(target.destination, owed_count(store, target.destination, target.min_severity))
        report = deliver(store, sender, inventory, _replay_command)
        report.enqueued = enqueued
        counts.update(report.as_dict())
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(report.as_dict()), indent=2, allow_nan=False))
    elif sender.destination != "console":
        click.echo(f"Posted {report.messages_sent} alert message(s) for {report.alerts_sent} finding(s) and "
                   f"{report.updates_sent} thread update(s) to {sender.destination}"
                   + (f"; {report.recovered} found already posted" if report.recovered else "")
                   + (f"; {report.pending} still pending" if report.pending else "") + ".")


TOKEN_NOTE = "SLACK_BOT_TOKEN is not set: `trailwarden alert` fails (and the alerts wait) until it is"


def _preview_text(posts: list[Any], destination: str, fmt: str) -> str:
    """`alert --dry-run`: each message as the console would show it, or as JSON (text and blocks
    as they would be posted, with the finding ids each carries)."""
    from pipeline.service.alerting.messages import as_text

    if fmt == "json":
        return json_text({"destination": destination, "messages": [p.as_dict() for p in posts]}, indent=2)
    out = []
    for post in posts:
        prefix = "  (reply) " if post.thread_ts else ""
        out.append(prefix + as_text(post.message).replace("\n", "\n" + prefix) + "\n")
    out.append(f"{len(posts)} message(s) would be posted to {destination}.")
    return "\n".join(out)


def _replay_command(agent: str, since: Any) -> str:
    start = (since - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
    command = "replay" if "replay" in cli.commands else "findings --agent"
    return f"trailwarden {command} {agent} --since {start}"


@cli.command(name="run")
@common_options
@reattribute_option
@pass_app
def run_command(app: App, reattribute: bool) -> None:
    """One full cycle: ingest every configured source, detect what is new, alert.

    A failing source or step is recorded and the rest still runs; the exit code is 1 and one line
    names the failed step(s). The snapshot analysts read is refreshed at the end. It needs a
    config file (an unattended job started in the wrong directory must not run on defaults).

    \b
    Example:
      trailwarden --config /etc/trailwarden/trailwarden.yaml run && trailwarden status
    """
    from pipeline.service.cycle import run_cycle

    _require_config_file(app, "run")
    app.validate_for_writing()
    result = run_cycle(app.config, app.inventory, app.database, config_path=app.config_path, echo=click.echo,
                       reattribute=reattribute, inventory_source=app.inventory_source)
    for step in result.steps:
        state = "ok" if step.ok else f"FAILED: {one_line(step.error)}"
        click.echo(f"{step.name:<7} {step.seconds:6.2f}s  {state}")
    if not result.ok:
        raise TerminalError("cycle step(s) failed: " + "; ".join(
            f"{s.name}: {s.error}" for s in result.steps if not s.ok))


@cli.command()
@common_options
@reattribute_option
@pass_app
def serve(app: App, reattribute: bool) -> None:
    """Run the cycle every `schedule.ingest_every` until SIGTERM or SIGINT (then exit 0).

    Cycles never overlap or pile up; a failed cycle is logged and recorded and the service keeps
    going; a step failing three cycles running is reported (and posted to Slack when configured).
    Baselines are refitted nightly, and the retention policy applied. While it runs, `query`,
    `findings` and notebooks read the snapshot it publishes after each cycle when the store is busy.

    \b
    Example:
      trailwarden --log-format json serve
    """
    from pipeline.service.cycle import Service

    _require_config_file(app, "serve")
    app.validate_for_writing()  # exit 2 before starting if the config or the inventory is invalid
    Service(app.config, lambda: load_inventory(app.config.inventory), app.database,
            config_path=app.config_path, echo=click.echo, reattribute=reattribute,
            inventory_source=app.inventory_source).start()


def _require_config_file(app: App, command: str) -> None:
    """The unattended commands never run on the built-in defaults: started in the wrong directory
    (a cron job in $HOME), they would watch nothing and say all is well."""
    if app.config_file is None:
        raise UsageError(f"`{command}` needs a config file and none was found: pass --config PATH or set "
                         f"TRAILWARDEN_CONFIG (config/trailwarden.yaml is not in {Path.cwd()})")


@cli.command()
@common_options
@format_option()
@pass_app
def prune(app: App, fmt: str) -> None:
    """Apply the retention policy now (`retention:` in the config; also run nightly by `serve`).

    Events older than `retention.events` are archived to Parquet under `retention.archive_dir`
    (when set) and deleted; the raw JSON of events older than `retention.raw_json` is dropped.
    Events that an open finding references are kept.

    \b
    Example:
      trailwarden prune --format json
    """
    from pipeline.store.retention import prune as apply_retention

    if app.config.retention is None:
        raise UsageError("no `retention:` in the config, e.g. retention: {events: 400d, raw_json: 90d, "
                         "archive_dir: data/archive}", path=app.config_path, key="retention")
    with app.open() as store, _recorded_run(store, "prune") as counts:
        report = apply_retention(store, app.config.retention)
        counts.update(vars(report))
    if fmt == "json":
        click.echo(json.dumps(vars(report), indent=2))
    elif fmt == "csv":
        click.echo(render(list(vars(report)), [list(vars(report).values())], "csv"))
    else:
        click.echo(f"archived {report.archived:,}, deleted {report.deleted:,}, raw JSON dropped for "
                   f"{report.raw_dropped:,}; kept {report.kept_as_evidence:,} old events an open finding cites")


@cli.command()
@common_options
@click.argument("agent")
@click.option("--since", metavar="T", help="Start of the window (default: 90 days before --until).")
@click.option("--until", metavar="T", help="End of the window (default: now).")
@format_option(("table", "json", "html"))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to FILE instead of stdout.")
@click.option("--unredacted", is_flag=True,
              help="Export secrets in the events (passwords, AccessKey secrets, tokens) as received.")
@pass_app
def replay(app: App, agent: str, since: str | None, until: str | None, fmt: str, output: str | None,
           unredacted: bool) -> None:
    """One agent's history: its timeline with findings, blast radius and what was new.

    AGENT is an inventory name or a raw identity (ram-user:ops-debug, role:Foo); an identity of an
    inventory agent (ram-user:ci-deploy) replays that agent. `json` is the
    complete record for a ticket (every event's raw JSON, and a SHA-256 over the export); `html` is
    one self-contained file with an activity chart, to attach to an incident. Secrets in the
    events are redacted (the export says how many); --unredacted keeps them.

    \b
    Examples:
      trailwarden replay ci-deployer --since 7d
      trailwarden replay ram-user:ops-debug --format html -o ops-debug.html
      trailwarden replay ci-deployer --since 2026-11-20 --until 2026-11-29 --format json -o evidence.json
    """
    from pipeline.core.times import parse_when, utcnow
    from pipeline.investigate.replay import build_replay
    from pipeline.investigate.replay_views import as_html, as_text

    now = utcnow()
    end = parse_when(until, now, "--until") if until else now
    start = parse_when(since, now, "--since") if since else end - timedelta(days=90)
    if start >= end:
        raise UsageError("--since must be before --until", key="--since")
    agent = resolve_agent(app, agent, "replaying")
    with app.open(read_only=True) as store:
        known = store.con.execute("SELECT 1 FROM events WHERE agent = ? LIMIT 1", [agent]).fetchall()
        if not known and app.inventory.agent(agent) is None:
            raise UsageError(f"no agent or identity {agent!r} in the store or the inventory", key="AGENT")
        _note_if_attribution_stale(store, app.inventory)
        report = build_replay(store, agent, app.inventory, since=start, until=end, with_raw=fmt != "table",
                              redact=not unredacted)
    text = (json_text(report, indent=2) if fmt == "json"
            else as_html(report) if fmt == "html" else as_text(report))
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output} ({report['summary']['events']:,} events, sha256 {report['sha256'][:16]}…)",
                   err=True)
    else:
        click.echo(text)


@cli.command(name="least-privilege")
@common_options
@click.argument("agent")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True,
              help="The window: the last N days.")
@click.option("--since", metavar="T", help="Start of the window instead (2026-11-01, 30d).")
@format_option()
@pass_app
def least_privilege_command(app: App, agent: str, days: int, since: str | None, fmt: str) -> None:
    """What AGENT is granted against what it used, and a tighter policy covering what it did.

    AGENT is an inventory agent, or one of its identities (ram-user:ci-deploy). Used = called and
    not refused for permission: a call that failed otherwise (Throttling, InvalidParameter) counts.

    \b
    Examples:
      trailwarden least-privilege ci-deployer
      trailwarden least-privilege etl-pipeline --days 30 --format json
    """
    from pipeline.core.times import parse_when, utcnow
    from pipeline.investigate.least_privilege import least_privilege

    now = utcnow()
    start = parse_when(since, now, "--since") if since else now - timedelta(days=days)
    agent = resolve_agent(app, agent, "comparing")
    with app.open(read_only=True) as store:
        _note_if_attribution_stale(store, app.inventory)
        result = least_privilege(store, app.inventory, agent, since=start)
    if fmt == "json":
        click.echo(json.dumps(to_jsonable(result), indent=2, allow_nan=False))
        return
    if fmt == "csv":  # one row per action used, then per granted pattern never used
        rows = [[u["action"], u["calls"], "used" if u["granted"] else "used, not granted"] for u in result["used"]]
        rows += [[g["pattern"], 0, "granted, unused"] for g in result["granted"] if not g["used_actions"]]
        click.echo(render(["action", "calls", "state"], rows, "csv"))
        return
    click.echo(f"{one_line(agent)}: granted vs used, {to_jsonable(result['window']['since'])} .. "
               f"{to_jsonable(result['window']['until'])}\n")
    click.echo(render(["granted pattern", "calls", "used actions"],
                      [[g["pattern"], g["calls"], ", ".join(g["used_actions"]) or "UNUSED"]
                       for g in result["granted"]], "table"))
    outside = [u for u in result["used"] if not u["granted"]]
    if outside:
        click.echo("\nUsed but not granted (see out_of_scope findings): "
                   + one_line(", ".join(f"{u['action']} ({u['calls']})" for u in outside)))
    if result["suggested_policy"] is None:
        click.echo("\nNo call in the window was allowed by its policies: nothing to keep. Detach them, "
                   "or retire the agent (`trailwarden agents` shows its last activity).")
        return
    click.echo("\nSuggested policy (allows exactly the granted actions used - calls not refused for permission, "
               "failed ones included; Deny statements kept):")
    click.echo(json.dumps(result["suggested_policy"], indent=2))


# -- policy --------------------------------------------------------------------------------------
@cli.group()
def policy() -> None:
    """Work with RAM policies: `trailwarden policy simulate --help`."""


@policy.command()
@common_options
@click.option("--policy", "policy_files", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="A RAM policy document (JSON) to evaluate (repeatable; all are combined).")
@click.option("--agent", help="Use this inventory agent's declared policies.")
@click.option("--action", help="The action, e.g. ecs:StopInstance.")
@click.option("--resource", help="The resource ARN, e.g. acs:ecs:cn-hangzhou:123:instance/i-1.")
@click.option("--context", "contexts", multiple=True, metavar="KEY=VALUE",
              help="A condition key's value, e.g. acs:SourceIp=203.0.113.5 (repeatable).")
@click.option("--batch", type=click.File("r"), metavar="FILE.jsonl",
              help='Evaluate JSON lines {"id", "policies": [...], "request": {"action", "resource", '
                   '"context"}}; prints {"id", "decision"} per line (- for stdin).')
@pass_app
def simulate(app: App, policy_files: tuple[str, ...], agent: str | None, action: str | None,
             resource: str | None, contexts: tuple[str, ...], batch: Any) -> None:
    """Would these policies allow a request? Prints Allow, ExplicitDeny or ImplicitDeny.

    \b
    Examples:
      trailwarden policy simulate --policy config/policies/ci-deployer.json \\
          --action ecs:StopInstance --resource 'acs:ecs:cn-hangzhou:1384926508761234:instance/i-1' \\
          --context acs:SourceIp=203.0.113.9
      trailwarden policy simulate --agent ci-deployer --action ram:CreateUser --resource '*'
      trailwarden policy simulate --batch requests.jsonl
    """
    from pipeline.investigate.simulate import simulate_batch, simulate_one

    if batch is not None:
        if policy_files or agent or action or resource or contexts:
            raise UsageError("--batch takes its policies and requests from the file; drop the other options")
        failures = simulate_batch(batch, click.echo)
        if failures:
            raise UsageError(f"{failures} line(s) of the batch were invalid (see their error field)",
                             path=getattr(batch, "name", None))
        return
    docs = _policy_documents(app, policy_files, agent)
    if not action or not resource:
        raise UsageError("give --action and --resource (or --batch FILE)")
    result = simulate_one(docs, action, resource, contexts)
    click.echo(result.decision.value)
    if result.reason and result.decision.value != "Allow":
        click.echo(result.reason, err=True)


def _policy_documents(app: App, files: tuple[str, ...], agent: str | None) -> list[Any]:
    docs: list[Any] = []
    for name in files:
        try:
            docs.append(json.loads(Path(name).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read a policy document: {exc}", path=name) from None
    if agent:
        found = app.inventory.agent(agent)
        if found is None:
            raise UsageError(f"no agent named {agent!r} in the inventory", key="--agent")
        docs.extend(found.policies)
    if not docs:
        raise UsageError("give --policy FILE or --agent NAME")
    return docs


# -- demo ----------------------------------------------------------------------------------------
@cli.command()
@common_options
@click.option("--days", default=30, show_default=True, type=click.IntRange(14, 120),
              help="How many days of traffic to generate.")
@click.option("--seed", default=7, show_default=True, type=int, help="Random seed (same seed, same data).")
@pass_app
def demo(app: App, days: int, seed: int) -> None:
    """The whole pipeline on generated data: no cloud account, no Slack, nothing to configure.

    Generates a month of ActionTrail traffic for the sample inventory in config/agents.yaml
    (a CI deployer, a read-only monitor, a nightly backup bot, a time-bound vendor, an ETL role,
    a Terraform role and a human admin) with a few planted incidents, writes it as an OSS-style
    dump, ingests it into the store every other command reads (--db, else the config's
    `database`, default data/trailwarden.duckdb) and prints what it found. A store that is not a
    demo's is never replaced (exit 2: pass --db OTHER). Run where no config is found, it writes
    config/trailwarden.yaml (the sample inventory, that store) so the next commands work there.

    \b
    Example:
      trailwarden demo && trailwarden status
    """
    from pipeline.demo.build import run_demo

    db = app.database
    wrote = _demo_config(app, db)
    run_demo(db, days=days, seed=seed, echo=click.echo)
    if wrote:
        click.echo(f"\nWrote {wrote}: this directory had no config; it names the sample inventory and "
                   f"{db}, so the commands below work from here.")
    _note_if_other_inventory(app)
    prefix = "" if db == app.database_of_config else f"--db {db} "
    click.echo(f"\nExplore: trailwarden {prefix}status\n"
               f"         trailwarden {prefix}findings --since 30d\n"
               f"         trailwarden {prefix}replay ci-deployer --since 7d\n"
               f"         trailwarden {prefix}alert --dry-run        # the Slack messages, printed (no token needed)")


def _note_if_other_inventory(app: App) -> None:
    """The demo's traffic is the sample inventory's: say so when the config names another one
    (the next writing command re-attributes the events to it)."""
    from pipeline.demo.build import CONFIG_DIR, demo_inventory

    if app.inventory.fingerprint() != demo_inventory().fingerprint():
        click.echo(f"trailwarden: note: the demo generated traffic for the sample inventory "
                   f"{CONFIG_DIR / 'agents.yaml'}; your config's inventory is "
                   f"{app.config.inventory or 'not set'}", err=True)


def _demo_config(app: App, db: Path) -> Path | None:
    """Where no config is found (no --config, no $TRAILWARDEN_CONFIG, no config/trailwarden.yaml),
    write config/trailwarden.yaml naming the sample inventory and the demo's store, so the next
    commands work from this directory. Never overwrites a file; returns the path written."""
    from pipeline.core.config import DEFAULT_CONFIG_PATH
    from pipeline.demo.build import CONFIG_DIR

    if resolve_config_path(app.config_path) is not None:
        return None
    text = ("# Written by `trailwarden demo`, where no config was found: the sample inventory and the\n"
            "# demo's store. Edit it to watch a real account (README: Config).\n"
            f"database: {json.dumps(str(db))}\n"
            "timezone: Asia/Shanghai\n"
            f"inventory: {json.dumps(str(CONFIG_DIR / 'agents.yaml'))}\n")
    DEFAULT_CONFIG_PATH.parent.mkdir(parents=True, exist_ok=True)
    try:
        with DEFAULT_CONFIG_PATH.open("x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:  # appeared meanwhile: it is the user's, leave it
        return None
    app._config = app._inventory = None  # the rest of this command reads it too
    return DEFAULT_CONFIG_PATH


# -- entry point ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    try:
        # color=True: click never strips escape sequences from what we print to a pipe, so CSV
        # stays exact data (what reaches a terminal is made inert where it is rendered)
        cli.main(args=argv, prog_name="trailwarden", standalone_mode=False, color=True)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("trailwarden: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except TrailwardenError as exc:
        click.echo(f"trailwarden: error: {one_line(scrub(str(exc)))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("trailwarden: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if _debug_requested(argv):
            raise
        click.echo(f"trailwarden: internal error: {type(exc).__name__}: "
                   f"{scrub(str(exc).splitlines()[0]) if str(exc) else ''} (run with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(0)


def _debug_requested(argv: list[str] | None) -> bool:
    return "--debug" in (argv if argv is not None else sys.argv[1:])


from pipeline.cli import triage  # noqa: E402,F401  - registers `findings ack|…`, `suppress …`
