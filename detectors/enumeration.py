"""enumeration: many distinct APIs across many services in a few minutes, far beyond the agent's
own norm: the reconnaissance pattern (a read-only monitoring key walking ``Describe*``/``List*`` of
every service it can reach).

What it learns (:class:`BreadthProfile`, fitted with the baselines on the 28 days before the
window) is the agent's widest ``window`` (10 minutes, on a fixed grid): the most distinct APIs and
the most distinct services it called in one. In the scored window the same is counted on two grids
(offset by half a window, so a sweep across a grid line is seen whole). A window is *enumeration*
when it holds at least ``min_apis`` (15) distinct APIs and ``min_services`` (4) services, and at
least ``factor`` (2.5) times the agent's widest in the history (a Terraform apply that always
touches 40 APIs is judged against its own 40), or when at least ``min_new_share`` (half) of its
APIs are ones the agent never called in the history (``novelty``'s learned APIs): a monitor whose
polls already touch 20 APIs sweeping 25, 15 of them never used, is reconnaissance though it is
not 2.5 times as wide; an apply adding a module (a few new APIs among its usual ones) is not.
Failed calls count: a sweep is mostly refused.

Severity: medium; the finding lists the APIs and services, the agent's usual breadth, and an
``enumeration`` aspect for ``anomalous_behaviour``. Consecutive enumerating windows (within the
dedup window, 1h) make one finding.

An agent with under 7 active days of history is not judged (its norm is not known).

Known gaps: a slow sweep (a few APIs every ten minutes) stays under the breadth of any window; an
agent whose own work is broad (an administrator in the console, a Terraform apply) needs a sweep of
``factor`` times its widest; enumeration spread across several stolen identities is counted per
agent; ``failure_storm`` also reports a sweep that is mostly refused; a sweep of APIs the agent
already calls, under 2.5 times its widest, is quiet; where ``novelty``'s part was not learned (a
backtest of ``enumeration`` alone) only the breadth rule applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, aspect, capped, group_bursts, jsonable
from detectors.novelty import NoveltyProfile, _unknown
from models.baselines import History, Learned

WINDOW_SECONDS = 600  # the window breadth is learned and judged in (fixed: what is stored depends on it)


@dataclass
class BreadthProfile(Learned):
    """The agent's widest 10 minutes in the history: the most distinct APIs and services. None:
    fitted before breadth was learned (not judged)."""

    max_apis_10m: int | None = None
    max_services_10m: int | None = None

    # per agent: its widest aligned 10 minutes (windows never cross a UTC day)
    daily = f"""
    SELECT agent, max(apis) AS apis, max(services) AS services FROM (
        SELECT agent, time_bucket(INTERVAL {WINDOW_SECONDS} SECOND, event_time) AS w,
               count(DISTINCT service_name || ':' || event_name) AS apis,
               count(DISTINCT service_name) AS services
        FROM {{events}} WHERE in_range AND event_name IS NOT NULL GROUP BY ALL)
    GROUP BY agent
    """  # noqa: S608 - fixed SQL fragments; no values

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        source, params = history.part_rows(cls)
        rows = history.query(
            f"WITH daily AS {source} SELECT agent, max(apis), max(services) FROM daily GROUP BY agent",  # noqa: S608
            params)
        out = {agent: cls(0, 0) for agent in history.agents}
        for agent, apis, services in rows:
            if str(agent) in out:
                out[str(agent)] = cls(int(apis or 0), int(services or 0))
        return out


class Enumeration(Detector):
    id = "enumeration"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "1h",
        "min_apis": 15,
        "min_services": 4,
        "factor": 2.5,
        "min_new_share": 0.5,  # ... or this share of the window's APIs never used in the history
    }
    columns = ("event_id", "event_time", "agent", "event_name", "service_name", "error_code", "source_ip",
               "user_agent")
    learns = BreadthProfile

    def validate(self) -> None:
        for key in ("min_apis", "min_services", "factor"):
            value = self.params[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a number of at least 1, not {value!r}")
        share = self.params["min_new_share"]
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 < share <= 1:
            raise ValueError(f"min_new_share must be a share above 0 and at most 1, not {share!r}")

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        judged = {}
        for a in events["agent"].unique():
            baseline = models.baselines.get(str(a))
            part = baseline.part(BreadthProfile) if baseline is not None and baseline.learned else None
            if part is not None and part.max_apis_10m is not None:
                judged[str(a)] = part
        df = events[events["agent"].isin(list(judged)).to_numpy() & events["event_name"].notna().to_numpy()]
        if df.empty:
            return []
        df = df.assign(api=df["service_name"].fillna("").astype(str) + ":" + df["event_name"].astype(str),
                       service=df["service_name"].fillna("").astype(str))
        df = df.assign(new_api=df["api"].where(_never_used(df, models)))
        seconds = df["event_time"].to_numpy(dtype="datetime64[s]").astype(np.int64)
        loud = np.zeros(len(df), dtype=bool)
        for offset in (0, WINDOW_SECONDS // 2):
            w = (seconds + offset) // WINDOW_SECONDS
            frame = df.assign(w=w)
            wide = frame.groupby(["agent", "w"], sort=False).agg(apis=("api", "nunique"), services=("service", "nunique"),
                                                                 new=("new_api", "nunique"))
            apis = wide["apis"].to_numpy()
            need = np.array([max(self.params["min_apis"], self.params["factor"] * (judged[str(a)].max_apis_10m or 0))
                             for a, _ in wide.index])
            unseen = (apis >= self.params["min_apis"]) & (wide["new"].to_numpy() >= self.params["min_new_share"] * apis)
            hit = wide[((apis >= need) | unseen) & (wide["services"].to_numpy() >= self.params["min_services"])]
            if len(hit):
                loud |= pd.MultiIndex.from_arrays([frame["agent"], frame["w"]]).isin(hit.index)
        if not loud.any():
            return []
        rows = df[loud]
        out = []
        for agent, group in rows.groupby("agent", sort=False):
            for start, end in group_bursts(list(group["event_time"]), self.dedup_window):
                out.append(self._finding(str(agent), group.iloc[start:end], judged[str(agent)]))
        return out

    def _finding(self, agent: str, burst: pd.DataFrame, profile: BreadthProfile) -> Finding:
        apis = list(dict.fromkeys(burst["api"]))
        services = list(dict.fromkeys(burst["service"]))
        unseen = list(dict.fromkeys(burst["new_api"].dropna()))
        minutes = (burst["event_time"].iloc[-1] - burst["event_time"].iloc[0]).total_seconds() / 60
        failed = int(burst["error_code"].notna().sum())
        usual = f"its widest 10 minutes in 28 days had {profile.max_apis_10m} APIs of {profile.max_services_10m} services"
        never = f", {len(unseen)} of them never used in 28 days," if unseen else ""
        text = f"{len(apis)} distinct APIs of {len(services)} services in {max(minutes, 1):.0f} minutes{never} ({usual})"
        ratio = len(apis) / max(1, profile.max_apis_10m or 0)
        weight = min(1.0, 0.6 + 0.1 * np.log2(max(1.0, ratio / self.params["factor"])))
        evidence: dict[str, Any] = {
            "apis": capped(apis, 60), "services": capped(services, 30), "never_used": capped(unseen, 60),
            "count": len(burst), "failed": failed,
            "minutes": round(minutes, 1), "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 10),
            "user_agents": capped(dict.fromkeys(burst["user_agent"].dropna()), 5),
            "baseline": {"max_apis_in_10m": profile.max_apis_10m, "max_services_in_10m": profile.max_services_10m},
            "threshold": {k: self.params[k] for k in ("min_apis", "min_services", "factor", "min_new_share")},
            "aspects": [aspect("enumeration", text, weight, observed=len(apis), usual=profile.max_apis_10m)],
        }
        return Finding(
            detector=self.id, agent=agent, severity=self.severity, score=0.55 + 0.3 * weight,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=f"{agent} called {text}{f'; {failed} refused' if failed else ''}",
            event_ids=list(burst["event_id"]), evidence=jsonable(evidence), dedup_key="enumeration",
        )


def _never_used(df: pd.DataFrame, models: Models) -> np.ndarray:
    """Per row: an API its agent never called in the history (``novelty``'s learned APIs; False
    where they were not learned)."""
    known: dict[str, set[str]] = {}
    for a in df["agent"].unique():
        baseline = models.baselines.get(str(a))
        part = baseline.part(NoveltyProfile) if baseline is not None else None
        if part is not None and part.used is not None:
            known[str(a)] = set(part.used.get("api", []))
    agents = df["agent"].astype(str)
    return _unknown(agents, df["api"], known) & agents.isin(list(known)).to_numpy()
