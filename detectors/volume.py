"""volume: an agent making far more calls of one kind than its own history ever did: thousands of
``GetObject`` from a bucket (exfiltration), dozens of ``DeleteSnapshot`` where a couple is usual
(mass deletion).

What it learns (:class:`VolumeProfile`, fitted with the baselines on the 28 days before the window)
is, per agent and *kind of call* (its action and resource class: ``GetObject`` on
``bucket:finance-reports``, ``DeleteSnapshot`` on ``ACS::ECS::Snapshot``; ``models.activity``), its
busiest clock hour and its busiest local day of successful calls in the history, and on how many
days it was seen. Those peaks carry the agent's rhythm: a weekly Terraform apply, a catch-up day
after a holiday, the nightly batch are all in them. A window's hour (or local day) of one kind is
*voluminous* when it holds at least ``min_calls`` (30) successful calls and at least ``factor`` (4)
times the kind's peak; a kind never seen counts its peak as one call. A destructive action
(``Delete*``, ``Remove*``, ``Release*``...) needs only ``min_calls_destructive`` (10): a backup role
that deletes two snapshots a night and now deletes two dozen has done its damage well under 30.

Severity: low, listed as a ``volume`` aspect (observed vs usual) for ``anomalous_behaviour`` to
weigh with the agent's other unusual aspects, unless the volume is large on its own: medium when
an hour or day holds ``strong_factor`` (10) times the peak and at least ``strong_calls`` (300)
calls, or, for a destructive action (``Delete*``, ``Remove*``, ``Release*``...), at least
``strong_factor_destructive`` (6) times the peak and ``strong_calls_destructive`` (20) calls. The
voluminous kinds of one agent within the dedup window (3h) make one finding, listing each kind
with its count and usual peak.

An agent with under 7 active days of history (``models.baselines.MIN_ACTIVE_DAYS``) is not judged:
its rhythm is not known.

Known gaps: the usual is a 28-day peak per kind, not per hour of the week: a kind that is busy on
Monday nights but quiet on Tuesdays may be used at its Monday volume on a Tuesday unseen; a slow
exfiltration (a few hundred objects an hour, under the factor) is not voluminous; only the
``MAX_KINDS`` (400) busiest kinds of an agent are kept, a rarer one counts as never seen; a kind's
volume is counted per agent, so a key shared by two agents splits it; failed calls are
``failure_storm``'s, not counted here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, aspect, capped, group_bursts, jsonable
from models.activity import RESOURCE_CLASS_SQL, destructive, resource_classes
from models.baselines import History, Learned

MAX_KINDS = 400  # kinds of call kept per agent, busiest first


def kind_of(action: str, resource: str) -> str:
    """A kind of call as stored: ``GetObject`` or ``GetObject on bucket:finance``."""
    return f"{action} on {resource}" if resource else action


@dataclass
class VolumeProfile(Learned):
    """Per kind of call (``kind_of``): its busiest clock hour and local day of successful calls in the
    history, and the days it was seen. None: fitted before volumes were learned (not judged)."""

    hour_peaks: dict[str, int] | None = None
    day_peaks: dict[str, int] | None = None
    kind_days: dict[str, int] = field(default_factory=dict)

    # per agent, kind of call and local day: its successful calls and its busiest clock hour
    # (hours never cross a UTC day; a local day's pieces from two UTC days add up when combined)
    daily = f"""
    WITH calls AS (
        SELECT agent, event_name AS action, {RESOURCE_CLASS_SQL} AS rclass,
               time_bucket(INTERVAL 1 HOUR, event_time) AS hour,
               CAST(timezone({{tz}}, event_time) AS DATE) AS day
        FROM {{events}} WHERE in_range AND error_code IS NULL AND event_name IS NOT NULL),
    hours AS (SELECT agent, action, rclass, hour, any_value(day) AS day, count(*) AS n FROM calls GROUP BY ALL)
    SELECT agent, action, rclass, day, sum(n) AS n, max(n) AS hour_peak FROM hours GROUP BY ALL
    """  # noqa: S608 - fixed SQL fragments; no values

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        source, params = history.part_rows(cls)
        rows = history.query(
            f"""
            WITH daily AS {source},
            days AS (SELECT agent, action, rclass, day, sum(n) AS n, max(hour_peak) AS hour_peak
                     FROM daily GROUP BY ALL)
            SELECT agent, action, rclass, max(hour_peak), max(n), count(*), sum(n) AS total FROM days
            GROUP BY ALL
            """,  # noqa: S608 - the source is the driver's fixed SQL; values are bound
            params)
        out = {agent: cls({}, {}, {}) for agent in history.agents}
        ranked = sorted(rows, key=lambda r: (str(r[0]), -int(r[6]), str(r[1]), str(r[2])))
        for agent, action, rclass, hour_peak, day_peak, days, _ in ranked:
            profile = out.get(str(agent))
            if profile is None or profile.hour_peaks is None or len(profile.hour_peaks) >= MAX_KINDS:
                continue
            assert profile.day_peaks is not None
            kind = kind_of(str(action), str(rclass or ""))
            profile.hour_peaks[kind], profile.day_peaks[kind] = int(hour_peak), int(day_peak)
            profile.kind_days[kind] = int(days)
        return out


class Volume(Detector):
    id = "volume"
    severity = "low"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "3h",
        "min_calls": 30,  # an hour or day with fewer calls of a kind is never voluminous
        "min_calls_destructive": 10,  # ... nor, for a destructive action, with fewer than 10
        "factor": 4.0,  # ... nor one with under 4 times the kind's peak in the history
        "strong_factor": 10.0,  # medium on its own: 10 times the peak...
        "strong_calls": 300,  # ... and at least 300 calls
        "strong_factor_destructive": 6.0,  # a destructive action: 6 times the peak...
        "strong_calls_destructive": 20,  # ... and at least 20 calls
    }
    columns = ("event_id", "event_time", "agent", "event_name", "referenced_resources", "error_code",
               "source_ip")
    learns = VolumeProfile

    def validate(self) -> None:
        for key in ("min_calls", "min_calls_destructive", "factor", "strong_factor", "strong_calls",
                    "strong_factor_destructive", "strong_calls_destructive"):
            value = self.params[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a number of at least 1, not {value!r}")

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        profiles = {str(a): p for a in events["agent"].unique() if (p := _judged(models, str(a))) is not None}
        df = events[events["agent"].isin(list(profiles)).to_numpy() & events["error_code"].isna().to_numpy()
                    & events["event_name"].notna().to_numpy()]
        if df.empty:
            return []
        kinds = _kinds(df)
        df = df.assign(kind=kinds, hour=df["event_time"].dt.floor("h"),
                       day=df["event_time"].dt.tz_convert(models.timezone).dt.date)
        loud: list[pd.DataFrame] = []
        for span, peaks_of in (("hour", "hour_peaks"), ("day", "day_peaks")):
            counts = df.groupby(["agent", "kind", span], sort=False).size().rename("n").reset_index()
            counts = counts[counts["n"].to_numpy() >= self._min_calls(counts["kind"])]
            if counts.empty:
                continue
            usual = np.array([max(1, (getattr(profiles[str(a)], peaks_of) or {}).get(str(k), 0))
                              for a, k in zip(counts["agent"], counts["kind"], strict=True)])
            counts = counts.assign(usual=usual, ratio=counts["n"].to_numpy() / usual, span=span)
            loud.append(counts[counts["ratio"] >= self.params["factor"]].rename(columns={span: "at"}))
        if not loud or all(x.empty for x in loud):
            return []
        flagged = pd.concat(loud, ignore_index=True)
        out: list[Finding] = []
        for agent, marks in flagged.groupby("agent", sort=False):
            rows = df[(df["agent"] == agent).to_numpy() & df["kind"].isin(set(marks["kind"])).to_numpy()]
            rows = rows[_in_flagged(rows, marks)]
            for start, end in group_bursts(list(rows["event_time"]), self.dedup_window):
                burst = rows.iloc[start:end]
                if self._voluminous(burst, marks, profiles[str(agent)]):
                    out.append(self._finding(str(agent), burst, _marks_of(burst, marks), profiles[str(agent)]))
        return out

    def _voluminous(self, burst: pd.DataFrame, marks: pd.DataFrame, profile: VolumeProfile) -> bool:
        """A burst is reported when it holds a flagged hour, or when it alone holds the volume that
        flagged its day: a day flagged by a late burst does not make its usual morning calls a finding."""
        hours = {(k, a) for k, a, s in zip(marks["kind"], marks["at"], marks["span"], strict=True) if s == "hour"}
        if any((k, h) in hours for k, h in zip(burst["kind"], burst["hour"], strict=True)):
            return True
        for kind, n in burst["kind"].value_counts().items():
            usual = max(1, (profile.day_peaks or {}).get(str(kind), 0))
            if n >= self._min_calls(pd.Series([kind]))[0] and n >= self.params["factor"] * usual:
                return True
        return False

    def _min_calls(self, kinds: pd.Series) -> np.ndarray:
        """Per kind of call: the fewest calls an hour or day of it needs to be voluminous."""
        codes, uniques = pd.factorize(kinds)
        need = np.array([self.params["min_calls_destructive"] if destructive(str(k).split(" on ", 1)[0])
                         else self.params["min_calls"] for k in uniques] + [self.params["min_calls"]])
        return need[codes]

    def _finding(self, agent: str, burst: pd.DataFrame, marks: pd.DataFrame, profile: VolumeProfile) -> Finding:
        top = marks.sort_values(["ratio", "n"], ascending=False).drop_duplicates("kind")
        kinds = []
        strong = False
        for row in top.itertuples():
            action = str(row.kind).split(" on ", 1)[0]
            factor, calls = ((self.params["strong_factor_destructive"], self.params["strong_calls_destructive"])
                             if destructive(action) else (self.params["strong_factor"], self.params["strong_calls"]))
            strong = strong or (row.ratio >= factor and row.n >= calls)
            seen = profile.kind_days.get(str(row.kind), 0)
            kinds.append({"kind": row.kind, "observed": int(row.n), "per": row.span,
                          "usual_peak": int((getattr(profile, f"{row.span}_peaks") or {}).get(str(row.kind), 0)),
                          "days_seen": seen, "ratio": round(float(row.ratio), 1),
                          "destructive": destructive(action)})
        first = kinds[0]
        usual = (f"its busiest {first['per']} in 28 days had {first['usual_peak']}" if first["days_seen"]
                 else "never seen in 28 days")
        text = f"{first['observed']} {first['kind']} in one {first['per']} ({usual})"
        more = f" and {len(kinds) - 1} more kind{'s' if len(kinds) > 2 else ''} of call" if len(kinds) > 1 else ""
        weight = min(1.0, 0.35 + 0.15 * math.log2(max(k["ratio"] for k in kinds) / self.params["factor"] + 1))
        evidence: dict[str, Any] = {
            "kinds": capped(kinds, 10), "count": len(burst),
            "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 10),
            "threshold": {k: self.params[k] for k in ("min_calls", "min_calls_destructive", "factor", "strong_factor",
                                                      "strong_calls", "strong_factor_destructive",
                                                      "strong_calls_destructive")},
            "aspects": [aspect("volume", text + more, 1.0 if strong else weight, observed=first["observed"],
                               usual=first["usual_peak"], per=first["per"])],
        }
        severity = "medium" if strong else "low"
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=(0.6 if strong else 0.3) + 0.3 * weight,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=f"{agent} made {text}{more}", event_ids=list(burst["event_id"]),
            evidence=jsonable(evidence), dedup_key="volume",
        )


def _judged(models: Models, agent: str) -> VolumeProfile | None:
    baseline = models.baselines.get(agent)
    if baseline is None or not baseline.learned:
        return None
    profile = baseline.part(VolumeProfile)
    return profile if profile is not None and profile.hour_peaks is not None else None


def _kinds(df: pd.DataFrame) -> np.ndarray:
    classes = resource_classes(df["referenced_resources"])
    actions = df["event_name"].astype(str)
    return np.where(classes.to_numpy() == "", actions.to_numpy(),
                    (actions + " on " + classes.astype(str)).to_numpy()).astype(object)


def _marks_of(burst: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """The flagged hours within the burst, said first; the flagged days only when no hour is."""
    span = set(zip(burst["kind"], burst["hour"], strict=True))
    hours = marks[(marks["span"] == "hour").to_numpy()
                  & np.array([(k, a) in span for k, a in zip(marks["kind"], marks["at"], strict=True)], dtype=bool)]
    if len(hours):
        return hours
    days = set(zip(burst["kind"], burst["day"], strict=True))
    return marks[(marks["span"] == "day").to_numpy()
                 & np.array([(k, a) in days for k, a in zip(marks["kind"], marks["at"], strict=True)], dtype=bool)]


def _in_flagged(rows: pd.DataFrame, marks: pd.DataFrame) -> np.ndarray:
    """Which rows fall in a flagged (kind, hour) or (kind, day)."""
    hours = {(k, a) for k, a, s in zip(marks["kind"], marks["at"], marks["span"], strict=True) if s == "hour"}
    days = {(k, a) for k, a, s in zip(marks["kind"], marks["at"], marks["span"], strict=True) if s == "day"}
    return np.array([(k, h) in hours or (k, d) in days
                     for k, h, d in zip(rows["kind"], rows["hour"], rows["day"], strict=True)], dtype=bool)
