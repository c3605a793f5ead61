"""odd_hours: an agent acting at a time its own history makes improbable, or outside its declared
``hours``.

What it learns (:class:`HourProfile`, fitted with the baselines on the 28 days before the window)
says on what share of observed days of the same kind (weekdays, or weekend days) the agent was
active within an hour of this one, in the business time zone. Below ``min_share`` (5%) the
activity is odd. So a 24/7 poller and a nightly backup are never odd at their usual times, and
someone who often works until 19:00 is not odd at 20:15. An agent with under 7 active days of
history is judged by its declared ``hours`` alone, and not at all if it declares none (no
guessing). Odd events close together (within the dedup window) make one finding.

Severity: an hour the agent's own history makes improbable, inside what the inventory declares
(or with no declared hours), is a weak signal: low on its own (a person's evening or weekend
work, a backup three hours late, an on-call night), listed as an ``hour`` aspect for
``anomalous_behaviour`` to weigh with the agent's other unusual aspects. Outside the declared
``hours`` it is medium; high when the time is both outside the declared hours and unseen in the
baseline, or when a burst outside the declared hours wrote something successfully. Alibaba Cloud
service identities (``system:...``: the cloud acting for itself) are never judged.

Known gaps: an attacker who keeps to the agent's usual hours is invisible here (the other
detectors still see scope and failures); holidays look like weekdays; an agent whose schedule
changes is flagged until 28 days of the new rhythm have been learned; daylight-saving shifts in
the business time zone move the profile by an hour for a while.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, aspect, capped, group_bursts, jsonable
from models.baselines import Baseline, History, Learned
from models.inventory import Hours

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SERVICE_IDENTITY = "system:"  # an Alibaba Cloud service identity no inventory claims (ActionTrail type "system")


@dataclass
class HourProfile(Learned):
    """When an agent acts: for each local weekday and hour, on how many of the observed days it was
    active then (the hour-of-week profile), and how many weekdays and weekend days were observed
    (from its first active day in the history to its end)."""

    observed_weekdays: int = 0  # Mon-Fri days from the agent's first activity to history_end
    observed_weekends: int = 0
    # days active at [weekday 0-6][hour 0-23] (local time)
    hour_of_week: list[list[int]] = field(default_factory=lambda: [[0] * 24 for _ in range(7)])

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        out = {agent: cls(sum(b.observed_by_weekday[:5]), sum(b.observed_by_weekday[5:]))
               for agent, b in history.agents.items()}
        for agent, dow, hour, days, _, _ in history.by_hour_of_week:
            out[agent].hour_of_week[dow][hour] = days
        return out

    def hour_share(self, weekday: int, hour: int) -> float:
        """On what share of the observed days of this kind (weekday/weekend) the agent was active
        at this hour of the day."""
        weekend = weekday >= 5
        kinds = range(5, 7) if weekend else range(5)
        observed = self.observed_weekends if weekend else self.observed_weekdays
        if not observed:
            return 0.0
        return sum(self.hour_of_week[d][hour] for d in kinds) / observed

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

    def observed(self, weekday: int) -> int:
        """The observed days of this weekday's kind (weekdays, or weekend days)."""
        return self.observed_weekends if weekday >= 5 else self.observed_weekdays

    def usual_hours(self, min_share: float = 0.05) -> str:
        """The local hours an agent keeps, e.g. ``weekdays 09-20, weekends none``."""
        parts = []
        for label, weekday in (("weekdays", 0), ("weekends", 5)):
            hours = [h for h in range(24) if self.hour_share(weekday, h) >= min_share]
            parts.append(f"{label} {_ranges(hours) or 'none'}")
        return ", ".join(parts)


class OddHours(Detector):
    id = "odd_hours"
    severity = "low"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "60m",
        "min_share": 0.05,  # active near this hour on under 5% of comparable days = odd
        "spread_hours": 1,
        "check_declared_hours": True,
    }
    columns = ("event_id", "event_time", "agent", "event_name", "event_rw", "error_code", "source_ip")
    learns = HourProfile

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        """All agents at once; each distinct (agent, local minute of the week) is judged once."""
        judged = self._judged_agents(events, models)
        df = events[events["agent"].isin(list(judged)).to_numpy()]
        if df.empty:
            return []
        local = df["event_time"].dt.tz_convert(models.timezone)
        weekday, hour, minute = local.dt.day_of_week.to_numpy(), local.dt.hour.to_numpy(), local.dt.minute.to_numpy()
        codes, names = pd.factorize(df["agent"])
        unusual_at = np.zeros((len(names), 168), dtype=bool)  # per agent, per hour of the week
        undeclared_at = np.zeros((len(names), 10080), dtype=bool)  # per agent, per minute of the week
        for i, name in enumerate(names):
            learned, hours = judged[str(name)]
            if learned is not None:
                unusual_at[i] = learned.unusual_hours(self.params["min_share"], self.params["spread_hours"])
            if hours is not None:
                undeclared_at[i] = ~hours.minute_table()
        unusual = unusual_at[codes, weekday * 24 + hour]
        undeclared = undeclared_at[codes, weekday * 1440 + hour * 60 + minute]
        odd = df.assign(unusual=unusual, undeclared=undeclared, local=local)[unusual | undeclared]
        out: list[Finding] = []
        for agent, rows in odd.groupby("agent", sort=False):
            learned, hours = judged[str(agent)]
            baseline = models.baselines.get(str(agent))
            for start, end in group_bursts(list(rows["event_time"]), self.dedup_window):
                out.append(self._finding(str(agent), rows.iloc[start:end], learned, hours, baseline, models))
        return out

    def _judged_agents(self, events: pd.DataFrame,
                       models: Models) -> dict[str, tuple[HourProfile | None, Hours | None]]:
        """Agents with a learned rhythm or declared hours; the others are not judged (no guessing)."""
        out = {}
        for agent in events["agent"].unique():
            name = str(agent)
            if name.startswith(SERVICE_IDENTITY):  # the cloud acting for itself keeps no office hours
                continue
            baseline = models.baselines.get(name)
            scope = models.scopes.get(name)
            hours = scope.hours if scope is not None and self.params["check_declared_hours"] else None
            learned = baseline.part(HourProfile) if baseline is not None and baseline.learned else None
            if learned is not None or hours is not None:
                out[name] = (learned, hours)
        return out

    def _finding(self, agent: str, burst: pd.DataFrame, learned: HourProfile | None, hours: Hours | None,
                 baseline: Baseline | None, models: Models) -> Finding:
        first_local = burst["local"].iloc[0]
        weekday, hour = int(first_local.weekday()), int(first_local.hour)
        undeclared = bool(burst["undeclared"].any())
        both = bool(burst["unusual"].any() and undeclared)
        wrote = bool(((burst["event_rw"] == "Write") & burst["error_code"].isna()).any())
        severity = "high" if both or (wrote and undeclared) else "medium" if undeclared else "low"
        kind = "weekend" if weekday >= 5 else "weekday"
        evidence: dict[str, Any] = {
            "local_time": first_local.isoformat(), "timezone": str(models.timezone),
            "hour_of_week": f"{DAYS[weekday]} {hour:02d}:00", "count": len(burst),
            "apis": dict(Counter(burst["event_name"].dropna()).most_common(5)),
            "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 5),
            "declared_hours": _hours_text(hours),
            "outside_declared_hours": bool(burst["undeclared"].any()),
        }
        profile = baseline.part(HourProfile) if baseline is not None else None
        if baseline is not None and profile is not None:
            evidence["baseline"] = {
                "active_days": baseline.active_days,
                "history_days": (baseline.history_end - baseline.history_start).days,
                f"{kind}s_observed": profile.observed(weekday),
                f"{kind}s_active_this_hour": round(profile.hour_share(weekday, hour) * profile.observed(weekday)),
                "share_near_this_hour": round(profile.near_share(weekday, hour, self.params["spread_hours"]), 3),
                f"{DAYS[weekday]}s_observed": baseline.observed_by_weekday[weekday],
                f"{DAYS[weekday]}s_active_at_{hour:02d}": profile.weeks_active_at(weekday, hour),
                "learned": baseline.learned,
            }
            evidence["threshold"] = {"min_share": self.params["min_share"], "spread_hours": self.params["spread_hours"]}
        share = learned.near_share(weekday, hour, self.params["spread_hours"]) if learned else 0.0
        rarity = 1 - min(1.0, share / self.params["min_share"])
        base = {"low": 0.3, "medium": 0.55, "high": 0.75}[severity]
        summary = _summary(agent, burst, first_local, learned, baseline, hours, self.params["spread_hours"])
        # the aspect anomalous_behaviour weighs: an hour outside what was declared weighs more
        evidence["aspects"] = [aspect("hour", summary.split("; ", 1)[-1], (0.5 if undeclared else 0.25) + 0.15 * rarity,
                                      share_near_this_hour=round(share, 3), declared_hours=_hours_text(hours),
                                      outside_declared_hours=undeclared)]
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=base + 0.2 * rarity,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=summary, event_ids=list(burst["event_id"]), evidence=jsonable(evidence), dedup_key="odd_hours",
        )


def _hours_text(hours: Hours | None) -> str | None:
    if hours is None:
        return None
    return f"{hours.days} {hours.start:%H:%M}-{hours.end:%H:%M}"


def _summary(agent: str, burst: pd.DataFrame, first_local: pd.Timestamp, learned: HourProfile | None,
             baseline: Baseline | None, hours: Hours | None, spread: int) -> str:
    n = len(burst)
    when = f"{first_local:%H:%M} {DAYS[first_local.weekday()]} {first_local:%Y-%m-%d} ({first_local.tzinfo})"
    apis = [str(a) for a, _ in Counter(burst["event_name"].dropna()).most_common(3)]
    more = len(set(burst["event_name"].dropna())) - len(apis)
    calls = f" ({', '.join(apis)}{f' and {more} more' if more > 0 else ''})" if apis else ""
    what = f"{agent} made {n} call{'s' if n != 1 else ''}{calls} at {when}"
    reasons = []
    if learned is not None and baseline is not None and burst["unusual"].any():
        observed = learned.observed(first_local.weekday())
        days = round(learned.near_share(first_local.weekday(), first_local.hour, spread) * observed)
        kind = "weekend days" if first_local.weekday() >= 5 else "weekdays"
        lo, hi = (first_local.hour - spread) % 24, (first_local.hour + spread + 1) % 24
        reasons.append(f"in {baseline.observed_days} days it was active "
                       f"{lo:02d}:00-{hi:02d}:00 on {days} of {observed} {kind}")
    elif baseline is not None and not baseline.learned:
        reasons.append(f"too little history to learn its rhythm ({baseline.active_days} active days)")
    if hours is not None and burst["undeclared"].any():
        reasons.append(f"outside its declared hours {_hours_text(hours)}")
    return what + "; " + "; ".join(reasons) if reasons else what


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
