"""The ``trailwarden`` command: thin commands over the library.

Each command opens the store, calls one library function and renders the result. ``--config``
and ``--db`` are accepted before the command name and after it. Exit codes: 0 success, 1 runtime
failure, 2 bad usage or invalid config/input (the message names the file and the key).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from models.inventory import Inventory, load_inventory
from pipeline import __version__
from pipeline.core.config import Config, load_config, resolve_config_path
from pipeline.core.errors import ScrubFilter, UsageError
from pipeline.core.output import ALIASES, FORMATS, to_jsonable
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
            self._inventory = load_inventory(self.config.inventory, self.config.accounts)
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
        from datetime import UTC

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        counts = getattr(record, "counts", None)
        if counts:
            entry["counts"] = counts
        if record.exc_info:
            entry["exception"] = (record.exc_text or self.formatException(record.exc_info)).splitlines()[-1]
        return json.dumps(to_jsonable(entry), default=str)


def known_agents(app: App, store: Store) -> set[str]:
    """Inventory agents and every agent value in the store."""
    from pipeline.investigate.agents import known_agents as known

    return known(store, app.inventory)


def check_filters(app: App, store: Store, *, agent: str | None = None, detector: str | None = None) -> None:
    """Exit 2 naming an --agent or --detector that matches nothing anywhere (not a typo's empty list)."""
    from detectors import registry
    from pipeline.detection.findings import known_detectors

    if detector is not None:
        known = set(registry()) | known_detectors(store)
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


def _note_if_attribution_stale(store: Store, inventory: Inventory) -> None:
    """Read-only commands show events under the agents they were stored with: say on stderr when
    the inventory changed since (only a writing command re-attributes them)."""
    if attribution_is_stale(store, inventory):
        click.echo(STALE_NOTE, err=True)


def _note_if_days_unavailable(store: Store, start: datetime, end: datetime) -> None:
    """A reader covering sealed days whose files cannot be read says so on stderr (the view
    leaves them out: what is shown is not all there was)."""
    from pipeline.store.lake import unavailable_note

    note = unavailable_note(store, start.astimezone(UTC).date(), end.astimezone(UTC).date())
    if note:
        click.echo(f"note: {note}", err=True)


def _require_config_file(app: App, command: str) -> None:
    """The unattended commands never run on the built-in defaults: started in the wrong directory
    (a cron job in $HOME), they would watch nothing and say all is well."""
    if app.config_file is None:
        raise UsageError(f"`{command}` needs a config file and none was found: pass --config PATH or set "
                         f"TRAILWARDEN_CONFIG (config/trailwarden.yaml is not in {Path.cwd()})")
