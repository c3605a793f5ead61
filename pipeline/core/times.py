"""Time, one way for the whole project: now in UTC, durations and times as users write them, and
ISO-8601 as trailwarden writes it. Every datetime inside trailwarden is timezone-aware UTC."""

from __future__ import annotations

import re
import time as _time
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from pipeline.core.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MIN_STEP = timedelta(hours=1)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


# What "now" is for every caller of utcnow: the wall clock, except where a test moves time on
# (``monkeypatch.setattr(times, "clock", ...)``) instead of sleeping until it has passed.
clock: Callable[[], datetime] = _wall_clock


def utcnow() -> datetime:
    return clock()


# How waiting is done (pacing posts to Slack, say): the wall clock's sleep, except where a test
# records the pauses instead (``monkeypatch.setattr(times, "sleep", ...)``).
sleep: Callable[[float], None] = _time.sleep


def pause(seconds: float) -> None:
    sleep(seconds)


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``7d`` (a bare number is seconds). ValueError when it is not one
    (config validation turns that into the file and key)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (write e.g. 30s, 5m, 1h, 7d)")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def parse_when(text: str, now: datetime, key: str) -> datetime:
    """``2026-11-01``, ``2026-11-01T08:00:00Z``, ``7d`` / ``24h`` (that long ago), or ``now``."""
    text = text.strip()
    if text == "now":
        return now
    if re.fullmatch(r"\d+\s*[smhd]", text):
        return now - parse_duration(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a time: {text!r} (use 2026-11-01, 2026-11-01T08:00:00Z or 7d)",
                         key=key) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_until(text: str, now: datetime) -> datetime:
    """A future limit: ``2027-01-31`` (the end of that UTC day), an ISO time, or a duration from
    now (``30d``)."""
    value = text.strip()
    try:
        return now + parse_duration(value)
    except (ValueError, TypeError):
        pass
    try:
        day = date.fromisoformat(value)
        return datetime.combine(day, time(0), tzinfo=now.tzinfo) + timedelta(days=1)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--until: expected a date (2027-01-31), a time or a duration (30d), not {text!r}",
                         key="--until") from None
    return when if when.tzinfo else when.replace(tzinfo=now.tzinfo)


def parse_step(text: str) -> timedelta:
    """A period length: ``1d``, ``12h``, ``7d``; at least an hour."""
    try:
        step = parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc), key="--step") from None
    if step < MIN_STEP:
        raise UsageError(f"must be at least 1h, not {text!r}", key="--step")
    return step


def iso(when: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``, to the microsecond: how trailwarden writes times."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_seconds(when: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``, to the second (API windows, day labels)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_start(when: datetime) -> datetime:
    """The UTC midnight that begins ``when``'s day."""
    return when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
