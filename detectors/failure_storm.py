"""failure_storm: a burst of failed calls (a non-empty ``errorCode``) by one agent.

Failures are counted in a sliding ``window`` (default 5 minutes). A storm needs at least
``threshold`` failures in the window (default 10: Elastic's rule fires on 10 failures in 6 minutes,
Panther's on 15 denied calls in 10), failures making at least ``min_failure_ratio`` of the window's
calls (a Terraform apply of 800 calls with 1% errors is not a storm), and, when the agent has a
learned baseline, more than ``baseline_multiplier`` times its own worst 5 minutes of failures in
the last 28 days (an agent that always fails a lot is judged against itself: what it learns is
:class:`FailureProfile`). Thresholds can be set
per agent: ``detectors: {failure_storm: {agents: {ci-deployer: {threshold: 30}}}}``. The failures of
one burst make one finding.

Severity: high when the failures are permission denials (``NoPermission``, ``Forbidden*``,
``AccessDenied*``: enumeration looks like this) or reach twice the threshold; medium otherwise.

Known gaps: a slow attacker staying under the threshold per window is not seen here (``out_of_scope``
still reports refused calls); failures spread over many agents (a shared stolen key used as several
identities) are counted per agent; throttling storms caused by the provider look like storms too,
and say so in their error codes.
"""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, capped, group_bursts, jsonable
from models.baselines import Baseline, History, Learned
from pipeline.core.times import parse_duration

DENIALS = ("NoPermission", "Forbidden*", "AccessDenied*", "*Unauthorized*")


@dataclass
class FailureProfile(Learned):
    """How an agent fails: its worst 5 minutes of failures and its busiest 5 minutes of calls (how
    bursty it is) in the history, and per local hour of the week its calls and failed calls
    (``rates_at``)."""

    max_failures_5m: int = 0  # the worst 5 minutes of failures in the history
    max_calls_5m: int = 0  # calls in its busiest 5-minute bucket (burstiness)
    # calls and failed calls at [weekday 0-6][hour 0-23] (local time), over the whole history;
    # None: fitted before these were kept
    calls_by_hour: list[list[int]] | None = None
    failures_by_hour: list[list[int]] | None = None

    # Per agent and UTC day: the worst 5 minutes of failures, sliding ((t - 5 min, t] at each
    # failure, as score counts), counted with the failures just before the day (``burst``) and
    # without them (``burst_in_day``, for the history's first day: nothing before it is learned);
    # and the busiest aligned 5-minute bucket of calls.
    daily = """
    WITH bursts AS (
        SELECT agent, day, max(n) AS burst, max(n_day) AS burst_in_day FROM (
            SELECT agent, in_range, CAST(timezone('UTC', event_time) AS DATE) AS day,
                   count(*) OVER (PARTITION BY agent ORDER BY event_time
                       RANGE BETWEEN INTERVAL 299999999 MICROSECOND PRECEDING AND CURRENT ROW) AS n,
                   count(*) OVER (PARTITION BY agent, CAST(timezone('UTC', event_time) AS DATE) ORDER BY event_time
                       RANGE BETWEEN INTERVAL 299999999 MICROSECOND PRECEDING AND CURRENT ROW) AS n_day
            FROM {events} WHERE error_code IS NOT NULL)
        WHERE in_range GROUP BY agent, day),
    busy AS (
        SELECT agent, CAST(timezone('UTC', b) AS DATE) AS day, max(n) AS busy FROM (
            SELECT agent, time_bucket(INTERVAL 5 MINUTE, event_time) AS b, count(*) AS n
            FROM {events} WHERE in_range GROUP BY ALL)
        GROUP BY ALL)
    SELECT agent, day, burst, burst_in_day, busy FROM busy FULL JOIN bursts USING (agent, day)
    """

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        source, params = history.part_rows(cls)
        first_day = history.start.astimezone(UTC).date()
        peaks = {str(agent): (burst, busy) for agent, burst, busy in history.query(
            f"""
            WITH daily AS {source}
            SELECT agent, max(CASE WHEN day <= ? THEN burst_in_day ELSE burst END), max(busy)
            FROM daily GROUP BY agent
            """,  # noqa: S608 - the source is the driver's fixed SQL; values are bound
            [*params, first_day])}
        bursts = {agent: burst for agent, (burst, _) in peaks.items()}
        busy = {agent: b for agent, (_, b) in peaks.items()}
        out = {agent: cls(int(bursts.get(agent) or 0), int(busy.get(agent) or 0), _week(), _week())
               for agent in history.agents}
        for agent, dow, hour, _, calls, failures in history.by_hour_of_week:
            profile = out[agent]
            assert profile.calls_by_hour is not None and profile.failures_by_hour is not None
            profile.calls_by_hour[dow][hour], profile.failures_by_hour[dow][hour] = calls, failures
        return out

    def rates_at(self, weekday: int, hour: int, days: int) -> dict[str, float] | None:
        """Its usual rates in this hour of the week: calls per observed day of that weekday
        (``days``, from the shared baseline), and the share of them that failed. None when not
        kept (an older baseline)."""
        if self.calls_by_hour is None or self.failures_by_hour is None:
            return None
        calls, failed = self.calls_by_hour[weekday][hour], self.failures_by_hour[weekday][hour]
        return {"calls_per_day": round(calls / days, 2) if days else 0.0,
                "failure_rate": round(failed / calls, 4) if calls else 0.0}


class FailureStorm(Detector):
    id = "failure_storm"
    severity = "high"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "30m",
        "threshold": 10,
        "window": "5m",
        "min_failure_ratio": 0.25,
        "baseline_multiplier": 2.0,
        "agents": {},  # per-agent overrides of threshold / min_failure_ratio
    }
    columns = ("event_id", "event_time", "agent", "event_name", "error_code", "source_ip")
    learns = FailureProfile

    def validate(self) -> None:
        parse_duration(self.params["window"])  # raises ValueError with the offending text
        for key in ("threshold", "min_failure_ratio", "baseline_multiplier"):
            if not isinstance(self.params[key], int | float) or self.params[key] < 0:
                raise ValueError(f"{key} must be a non-negative number, not {self.params[key]!r}")
        agents = self.params.get("agents") or {}
        if not isinstance(agents, dict):
            raise ValueError("agents must map agent names to {threshold, min_failure_ratio}")
        for name, own in agents.items():
            if not isinstance(own, dict) or set(own) - {"threshold", "min_failure_ratio"}:
                raise ValueError(f"agents.{name} takes only threshold and min_failure_ratio, got {own!r}")
            for key, value in own.items():
                if not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"agents.{name}.{key} must be a non-negative number, not {value!r}")

    @property
    def lookback(self) -> timedelta:
        return max(self.dedup_window, parse_duration(self.params["window"]))

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        """All agents at once: each agent's events are laid end to end on one time axis, far enough
        apart that no window spans two agents, and counted with two binary searches."""
        window = parse_duration(self.params["window"])
        if not events["error_code"].notna().any():
            return []
        df = events.sort_values(["agent", "event_time"], kind="stable")
        codes, names = pd.factorize(df["agent"])
        axis = _axis(df["event_time"].to_numpy(dtype="datetime64[us]").astype(np.int64), codes, window)
        failed = df["error_code"].notna().to_numpy()
        span = int(window.total_seconds() * 1e6)
        fail_axis = axis[failed]
        n_fail = np.arange(1, len(fail_axis) + 1) - np.searchsorted(fail_axis, fail_axis - span, side="right")
        n_call = np.searchsorted(axis, fail_axis, side="right") - np.searchsorted(axis, fail_axis - span, side="right")
        limits = [self._limits(str(n), models.baselines.get(str(n))) for n in names]
        threshold = np.array([lim["threshold"] for lim in limits])[codes[failed]]
        ratio = np.array([lim["min_failure_ratio"] for lim in limits])[codes[failed]]
        stormy = (n_fail >= threshold) & (n_fail / np.maximum(n_call, 1) >= ratio)
        if not stormy.any():
            return []
        failures = df[failed].assign(n_fail=n_fail, n_call=n_call, stormy=stormy)
        out: list[Finding] = []
        for agent in failures.loc[failures["stormy"], "agent"].unique():
            rows = failures[(failures["agent"] == agent).to_numpy()]
            code = int(np.flatnonzero(names == agent)[0])
            for start, end in group_bursts(list(rows["event_time"]), max(window, self.dedup_window)):
                burst = rows.iloc[start:end]
                if burst["stormy"].any():
                    out.append(self._finding(str(agent), burst, window, limits[code],
                                             models.baselines.get(str(agent)), models.timezone))
        return out

    def _limits(self, agent: str, baseline: Baseline | None) -> dict[str, Any]:
        own = (self.params.get("agents") or {}).get(agent, {})
        threshold = int(own.get("threshold", self.params["threshold"]))
        learned = 0
        profile = baseline.part(FailureProfile) if baseline is not None else None
        if baseline is not None and baseline.learned and profile is not None:
            learned = math.floor(profile.max_failures_5m * float(self.params["baseline_multiplier"])) + 1
        return {"threshold": max(threshold, learned), "configured": threshold, "from_baseline": learned,
                "min_failure_ratio": float(own.get("min_failure_ratio", self.params["min_failure_ratio"]))}

    def _finding(self, agent: str, burst: pd.DataFrame, window: Any, limits: dict[str, Any],
                 baseline: Baseline | None, tz: Any) -> Finding:
        peak = int(burst["n_fail"].max())
        at_peak = burst.loc[burst["n_fail"].idxmax()]
        codes = Counter(burst["error_code"])
        denials = sum(n for c, n in codes.items() if any(fnmatch.fnmatchcase(c, p) for p in DENIALS))
        severity = "high" if denials * 2 >= len(burst) or peak >= 2 * limits["threshold"] else "medium"
        minutes = window.total_seconds() / 60
        evidence: dict[str, Any] = {
            "failures": len(burst), "peak_failures_in_window": peak, "window_minutes": minutes,
            "calls_in_window_at_peak": int(at_peak["n_call"]), "threshold": limits["threshold"],
            "configured_threshold": limits["configured"], "min_failure_ratio": limits["min_failure_ratio"],
            "error_codes": dict(codes.most_common(10)),
            "apis": dict(Counter(burst["event_name"].dropna()).most_common(10)),
            "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 10),
        }
        profile = baseline.part(FailureProfile) if baseline is not None else None
        if baseline is not None and profile is not None:
            local = burst["event_time"].iloc[0].tz_convert(tz)
            days = baseline.observed_by_weekday[local.weekday()]
            evidence["baseline"] = {"failure_rate": round(baseline.failure_rate, 4), "calls": baseline.calls,
                                    "max_failures_in_5m": profile.max_failures_5m,
                                    "threshold_from_baseline": limits["from_baseline"], "learned": baseline.learned,
                                    "at_this_hour": profile.rates_at(local.weekday(), local.hour, days),
                                    "hour_of_week": f"{local:%a %H}:00 ({tz})"}
        usual = (f"; it usually fails {baseline.failure_rate:.1%} of calls, at most "
                 f"{profile.max_failures_5m} in 5 minutes"
                 if baseline is not None and profile is not None and baseline.learned else "")
        top_api, top_code = next(iter(evidence["apis"]), "?"), codes.most_common(1)[0][0]
        summary = (f"{agent}: {peak} failed calls within {minutes:g} minutes ({len(burst)} in the burst, mostly "
                   f"{top_api} -> {top_code}){usual}")
        score = min(1.0, (0.7 if severity == "high" else 0.5) + 0.1 * math.log2(peak / limits["threshold"] + 1))
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=score,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=summary, event_ids=list(burst["event_id"]), evidence=jsonable(evidence), dedup_key="storm",
        )


def _week() -> list[list[int]]:
    return [[0] * 24 for _ in range(7)]


def _axis(times_us: np.ndarray, codes: np.ndarray, window: Any) -> np.ndarray:
    """Agent ``k``'s events shifted by ``k`` lanes, a lane wider than the whole window plus two
    counting windows, so sorted order is kept and no sliding window reaches across agents."""
    if not len(times_us):
        return times_us
    base = times_us.min()
    lane = int(times_us.max() - base) + 2 * int(window.total_seconds() * 1e6) + 1
    return (times_us - base) + codes.astype(np.int64) * lane
