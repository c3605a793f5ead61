"""odd_hours: an agent acting at a time its own history makes improbable, or outside its declared
``hours``.

The baseline (``models.baselines``, fitted on the 28 days before the window) says on what share of
observed days of the same kind (weekdays, or weekend days) the agent was active within an hour of
this one, in the business time zone. Below ``min_share`` (5%) the activity is odd. So a 24/7 poller
and a nightly backup are never odd at their usual times, and someone who often works until 19:00
is not odd at 20:15. An agent with under 7 active days of history is judged by its declared
``hours`` alone, and not at all if it declares none (no guessing). Odd events close together
(within the dedup window) make one finding.

Severity: medium; high when the time is both outside the declared hours and unseen in the
baseline, or when an odd burst wrote something successfully.

Known gaps: an attacker who keeps to the agent's usual hours is invisible here (the other
detectors still see scope and failures); holidays look like weekdays; an agent whose schedule
changes is flagged until 28 days of the new rhythm have been learned; daylight-saving shifts in
the business time zone move the profile by an hour for a while.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, capped, group_bursts, jsonable
from models.baselines import Baseline
from models.inventory import Hours

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class OddHours(Detector):
    id = "odd_hours"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "60m",
        "min_share": 0.05,  # active near this hour on under 5% of comparable days = odd
        "spread_hours": 1,
        "check_declared_hours": True,
    }
    columns = ("event_id", "event_time", "agent", "event_name", "event_rw", "error_code", "source_ip")

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

    def _judged_agents(self, events: pd.DataFrame, models: Models) -> dict[str, tuple[Baseline | None, Hours | None]]:
        """Agents with a learned rhythm or declared hours; the others are not judged (no guessing)."""
        out = {}
        for agent in events["agent"].unique():
            name = str(agent)
            baseline = models.baselines.get(name)
            scope = models.scopes.get(name)
            hours = scope.hours if scope is not None and self.params["check_declared_hours"] else None
            learned = baseline if baseline is not None and baseline.learned else None
            if learned is not None or hours is not None:
                out[name] = (learned, hours)
        return out

    def _finding(self, agent: str, burst: pd.DataFrame, learned: Baseline | None, hours: Hours | None,
                 baseline: Baseline | None, models: Models) -> Finding:
        first_local = burst["local"].iloc[0]
        weekday, hour = int(first_local.weekday()), int(first_local.hour)
        both = bool(burst["unusual"].any() and burst["undeclared"].any())
        wrote = bool(((burst["event_rw"] == "Write") & burst["error_code"].isna()).any())
        severity = "high" if both or wrote else "medium"
        kind = "weekend" if weekday >= 5 else "weekday"
        evidence: dict[str, Any] = {
            "local_time": first_local.isoformat(), "timezone": str(models.timezone),
            "hour_of_week": f"{DAYS[weekday]} {hour:02d}:00", "count": len(burst),
            "apis": dict(Counter(burst["event_name"].dropna()).most_common(5)),
            "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 5),
            "declared_hours": _hours_text(hours),
            "outside_declared_hours": bool(burst["undeclared"].any()),
        }
        if baseline is not None:
            evidence["baseline"] = {
                "active_days": baseline.active_days,
                "history_days": (baseline.history_end - baseline.history_start).days,
                f"{kind}s_observed": baseline.observed_weekends if weekday >= 5 else baseline.observed_weekdays,
                f"{kind}s_active_this_hour": round(baseline.hour_share(weekday, hour) *
                                                   (baseline.observed_weekends if weekday >= 5
                                                    else baseline.observed_weekdays)),
                "share_near_this_hour": round(baseline.near_share(weekday, hour, self.params["spread_hours"]), 3),
                f"{DAYS[weekday]}s_observed": baseline.observed_by_weekday[weekday],
                f"{DAYS[weekday]}s_active_at_{hour:02d}": baseline.weeks_active_at(weekday, hour),
                "learned": baseline.learned,
            }
            evidence["threshold"] = {"min_share": self.params["min_share"], "spread_hours": self.params["spread_hours"]}
        share = learned.near_share(weekday, hour, self.params["spread_hours"]) if learned else 0.0
        score = (0.55 if severity == "medium" else 0.75) + 0.2 * (1 - min(1.0, share / self.params["min_share"]))
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=score,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=_summary(agent, burst, first_local, learned, baseline, hours, self.params["spread_hours"]),
            event_ids=list(burst["event_id"]), evidence=jsonable(evidence), dedup_key="odd_hours",
        )


def _hours_text(hours: Hours | None) -> str | None:
    if hours is None:
        return None
    return f"{hours.days} {hours.start:%H:%M}-{hours.end:%H:%M}"


def _summary(agent: str, burst: pd.DataFrame, first_local: pd.Timestamp, learned: Baseline | None,
             baseline: Baseline | None, hours: Hours | None, spread: int) -> str:
    n = len(burst)
    when = f"{first_local:%H:%M} {DAYS[first_local.weekday()]} {first_local:%Y-%m-%d} ({first_local.tzinfo})"
    apis = [str(a) for a, _ in Counter(burst["event_name"].dropna()).most_common(3)]
    more = len(set(burst["event_name"].dropna())) - len(apis)
    calls = f" ({', '.join(apis)}{f' and {more} more' if more > 0 else ''})" if apis else ""
    what = f"{agent} made {n} call{'s' if n != 1 else ''}{calls} at {when}"
    reasons = []
    if learned is not None and burst["unusual"].any():
        weekend = first_local.weekday() >= 5
        observed = learned.observed_weekends if weekend else learned.observed_weekdays
        days = round(learned.near_share(first_local.weekday(), first_local.hour, spread) * observed)
        kind = "weekend days" if weekend else "weekdays"
        lo, hi = (first_local.hour - spread) % 24, (first_local.hour + spread + 1) % 24
        reasons.append(f"in {sum(learned.observed_by_weekday)} days it was active "
                       f"{lo:02d}:00-{hi:02d}:00 on {days} of {observed} {kind}")
    elif baseline is not None and not baseline.learned:
        reasons.append(f"too little history to learn its rhythm ({baseline.active_days} active days)")
    if hours is not None and burst["undeclared"].any():
        reasons.append(f"outside its declared hours {_hours_text(hours)}")
    return what + "; " + "; ".join(reasons) if reasons else what
