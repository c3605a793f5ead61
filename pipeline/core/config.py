"""The pipeline config (``config/trailwarden.yaml``), validated once with pydantic.

Secrets never live here: credentials come from the environment only. Relative paths in the config are relative to the working
directory, as in the documented example (``inventory: config/agents.yaml``).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.core.errors import UsageError
from pipeline.core.times import parse_duration

DEFAULT_CONFIG_PATH = Path("config/trailwarden.yaml")


Duration = Annotated[timedelta, Field(json_schema_extra={"format": "duration"})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlsSource(_Strict):
    name: str
    type: Literal["sls"]
    endpoint: str
    project: str
    logstore: str
    start_time: datetime | None = None  # where a new shard starts; default: the beginning
    max_batches: int = Field(default=200, ge=1)  # per shard per run, so a run stays bounded
    batch_size: int = Field(default=100, ge=1, le=1000)  # LogGroups per pull (SLS allows 1000)


class LookupEventsSource(_Strict):
    name: str
    type: Literal["lookup_events"]
    region: str
    endpoint: str | None = None  # for tests and proxies
    lookback: Duration = timedelta(days=7)
    # pages of 50 events read per run (2 a second): a larger window goes on next run, so a
    # backfill in the service does not hold up the cycle's detect and alert for long
    max_pages: int = Field(default=10_000, ge=1)

    _v = field_validator("lookback", mode="before")(parse_duration)


class FilesSource(_Strict):
    name: str
    type: Literal["files"]
    path: Path


Source = Annotated[SlsSource | LookupEventsSource | FilesSource, Field(discriminator="type")]


class Schedule(_Strict):
    ingest_every: Duration = timedelta(minutes=5)
    ram_sync_every: Duration = timedelta(hours=6)  # `serve` reads RAM this often (when `ram:` is configured)

    _v = field_validator("ingest_every", "ram_sync_every", mode="before")(parse_duration)

    @field_validator("*")
    @classmethod
    def _at_least_a_second(cls, value: Any) -> Any:
        """APScheduler would silently run a zero interval every second: say so instead."""
        if isinstance(value, timedelta) and value < timedelta(seconds=1):
            raise ValueError(f"must be at least 1s (got {value.total_seconds():g}s)")
        return value


class SlackConfig(_Strict):
    channel: str
    min_severity: Literal["low", "medium", "high", "critical"] = "medium"
    base_url: str | None = None  # for tests and proxies
    # who may triage from Slack (buttons, modal): the members of this user group (S…) or channel
    # (C…, G…); unset: the messages carry no buttons (SLACK_APP_TOKEN runs the app, see README)
    triage_group: str | None = None

    @field_validator("triage_group")
    @classmethod
    def _slack_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[SCG][A-Z0-9]{6,}", value):
            raise ValueError("must be a Slack user-group id (S0123ABCD) or channel id (C0123ABCD)")
        return value

    @field_validator("base_url")
    @classmethod
    def _web_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError("must be an http:// or https:// address, e.g. https://slack.com/api/")
        if value is not None and not value.endswith("/"):
            value += "/"  # slack_sdk joins method names onto it
        return value


def endpoint_address(value: str | None) -> str | None:
    """An API endpoint override: ``host[:port]`` or ``http(s)://host[:port]``."""
    if value is not None and not re.fullmatch(r"(https?://)?[^\s/]+/?", value):
        raise ValueError("must be a host[:port] or an http(s)://host[:port] address")
    return value


class RamConfig(_Strict):
    """Reading RAM (`ram sync`, `review`, `contain`). Present (even empty: ``ram: {}``), `serve`
    syncs it every ``schedule.ram_sync_every``."""

    endpoint: str | None = None  # RAM (and IMS) endpoint, for tests and proxies; default ram.aliyuncs.com
    ims_endpoint: str | None = None  # IMS apart from RAM; default: endpoint, else ims.aliyuncs.com

    _address = field_validator("endpoint", "ims_endpoint")(endpoint_address)


class Account(_Strict):
    """One Alibaba Cloud account of the organisation: its id (digits, as ActionTrail writes
    ``userIdentity.accountId``) and the short alias people and findings call it by."""

    id: str
    alias: str

    @field_validator("id", mode="before")
    @classmethod
    def _account_id(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # an unquoted id reads as a number; its digits are what matter
        if not isinstance(value, str) or not re.fullmatch(r"\d{6,32}", value):
            raise ValueError("must be an Alibaba Cloud account id: digits, quoted (\"1234567890123456\")")
        return value

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", value) or value.isdigit():
            raise ValueError("must be lowercase letters, digits and '-' and not all digits (e.g. prod, staging-eu)")
        return value


class ResourceDirectoryConfig(_Strict):
    """Reading the Resource Directory (`accounts sync`)."""

    endpoint: str | None = None  # for tests and proxies; default resourcemanager.aliyuncs.com

    _address = field_validator("endpoint")(endpoint_address)


class Retention(_Strict):
    """How long the store keeps events (compliance decides); older ones go to Parquet first."""

    events: Duration = timedelta(days=400)  # events older than this leave the store
    raw_json: Duration | None = None  # keep the raw JSON only this long (typed columns stay)
    archive_dir: Path | None = None  # archive events to Parquet here before deleting them

    @field_validator("events", "raw_json", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)


class StoreConfig(_Strict):
    """The tiered store (README, "The store"): UTC days older than ``seal_after`` are sealed to
    Parquet by the service's cycle, at most ``seal_days_per_cycle`` days (and as many compactions)
    per cycle, so a cycle never does more than a bounded step of it. Absent: nothing is sealed."""

    seal_after: Duration = timedelta(days=2)
    seal_days_per_cycle: int = Field(default=1, ge=1, le=31)

    @field_validator("seal_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)


class LakeConfig(_Strict):
    """Where sealed days go (DESIGN: an optional shared location); absent: beside the store."""

    path: Path


class Config(_Strict):
    database: Path = Path("data/trailwarden.duckdb")
    timezone: str = "UTC"
    inventory: Path | None = None
    sources: list[Source] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=Schedule)
    detectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    slack: SlackConfig | None = None
    retention: Retention | None = None
    store: StoreConfig | None = None
    lake: LakeConfig | None = None
    ram: RamConfig | None = None
    accounts: list[Account] | None = None  # absent: one account, as before
    resource_directory: ResourceDirectoryConfig = Field(default_factory=ResourceDirectoryConfig)
    memory_limit: str = "256MB"  # DuckDB memory_limit for the pipeline connection (see README, Performance)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)") from None
        return value

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, value: list[Any]) -> list[Any]:
        names = [s.name for s in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return value

    @field_validator("accounts")
    @classmethod
    def _unique_accounts(cls, value: list[Account] | None) -> list[Account] | None:
        """An id or an alias twice would make a label or an agent's `accounts:` ambiguous."""
        for what, plural in (("id", "ids"), ("alias", "aliases")):
            seen = [getattr(a, what) for a in value or []]
            dupes = sorted({v for v in seen if seen.count(v) > 1})
            if dupes:
                raise ValueError(f"account {plural} must be unique; repeated: {', '.join(dupes)}")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def source(self, name: str) -> Any:
        for src in self.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise UsageError(f"no source named {name!r} (known: {known})", key="--source")


def resolve_config_path(explicit: str | None) -> Path | None:
    """``--config``, else ``$TRAILWARDEN_CONFIG``, else ``config/trailwarden.yaml`` if present."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TRAILWARDEN_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load_config(path: Path | None) -> Config:
    """Read and validate; any problem is a :class:`UsageError` naming the file and the key."""
    if path is None:
        return Config()
    data = read_yaml(path)
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise UsageError("expected a mapping of settings at the top level", path=str(path))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, path) from None


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError("file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read: {exc}", path=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"invalid YAML: {problem}", path=str(path), key=where) from None


def validation_error(exc: ValidationError, path: Path | str, prefix: str = "") -> UsageError:
    """The first pydantic error as one line: ``file: key.path: message``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not _is_union_tag(p)]
    key = prefix + ".".join(loc).replace(".[", "[") if loc else prefix.rstrip(".") or None
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return UsageError(message, path=str(path), key=_index_keys(key) if key else None)


def _is_union_tag(part: Any) -> bool:
    return part in ("sls", "lookup_events", "files")


def _index_keys(key: str) -> str:
    """``sources.1.logstore`` -> ``sources[1].logstore``."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
