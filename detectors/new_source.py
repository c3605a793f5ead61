"""new_source: an agent calling from somewhere its own history never saw: a new source network (the
/24 of an IPv4 address, the /64 of an IPv6 one), a new region, or a new client (user-agent family:
``aliyun-cli``, ``terraform``, ``python-requests``, ``console``...; see ``models.sources``).

What it learns (:class:`SourceProfile`, fitted with the baselines on the 28 days before the
window) is, per agent and kind of source, the values seen and how diverse they are: the share of
the days the kind was seen (after the first) that brought a never-seen value, its *novelty*. A
kind is *stable* for an agent when its novelty is at most ``max_novelty`` (0.1: about two new
values in 20 days), and only a new value of a stable kind is reported. So a role used from a fleet of instances (a new /24 most days, novelty
near 1) is quiet about networks, yet reported when it appears in a never-seen region or with a
never-seen client, if those are stable for it. A kind seen on fewer than ``min_days`` (7) days of
the history, or a baseline stored before sources were learned, is not judged: no guessing. A source
that is not an address ("Internal", masked, a host name, empty) has no network, a call to a global
service (RAM, STS) no region, an empty user agent no client.

The new calls of one agent from one new source (its network when that is new, else its region,
else its client) within the dedup window (24h) make one finding, which names everything else that
was new in them, what was known and the diversity figures.

Severity: low. A new place is a weak signal on its own (an office NAT change inside the declared
CIDR, a region rolled out as declared, a person working from a new café): each finding lists its
new network, region and client as ``aspects``, weighing less when the inventory declares the
value (a network inside the agent's declared ``source_ips``, a region among its ``regions``), for
``anomalous_behaviour`` to weigh with the agent's other unusual aspects (a new network *and* a
never-touched bucket *and* ten times the usual reads is one high story). It also declares a
coincidence (``coincidence_window`` 1h, ``coincidence_severity`` high):
``pipeline.detection.detect`` raises it to high when another detector found something at medium
or above about the same agent within an hour of it (out of scope, a failure storm), and names the
findings near it in the evidence (``coincides_with``).

Known gaps: an attacker calling from the agent's usual network, region and client (a compromised
CI runner, a host in the same /24) is invisible here; a kind an agent rotates is never reported on
its own, and an agent that rotates every kind never; an agent active on under ``min_days`` days
(a weekly job) is not judged; the first day of a legitimate move (a new office, a new runner pool)
raises one finding per agent and source, as the baseline learns it only the next day; a backtest
over several days scores them all against one baseline, so a new source is reported again in
each dedup window it is used in; the user agent is whatever the client sent (a thief can copy it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from detectors.base import (
    SEVERITIES,
    Coincidence,
    Detector,
    Finding,
    Models,
    aspect,
    capped,
    group_bursts,
    jsonable,
)
from models.baselines import MIN_ACTIVE_DAYS, Baseline, History, Learned
from models.scope import AgentScope
from models.sources import (
    IPV4_NETWORK_SQL,
    KINDS,
    REGION_SQL,
    Coded,
    client_family,
    network_of,
    source_values,
)
from pipeline.core.times import parse_duration

_WORDS = {"network": ("network", "networks"), "region": ("region", "regions"), "client": ("client", "clients")}
MAX_SOURCES = 2000  # values kept per kind of source; an agent with more is taken as rotating them


@dataclass
class SourceProfile(Learned):
    """Where an agent calls from (``models.sources``): per kind, its source networks, regions and
    clients (user-agent families) with their calls, on how many local days the kind was seen, and
    how many of those days (after the first) brought a value never seen before. A role used from a
    fleet of instances brings new networks nearly every day; a CI key from one office, never. None:
    stored before sources were learned (not judged until the next fit)."""

    sources: dict[str, dict[str, int]] | None = None  # kind -> value -> calls
    source_days: dict[str, int] | None = None  # kind -> local days on which the kind was seen
    novel_days: dict[str, int] | None = None  # kind -> how many of those days (after the first) brought a new value

    # per agent and local day: its (network, region, client) combinations and their calls
    daily = f"""
    SELECT agent, CAST(timezone({{tz}}, event_time) AS DATE) AS day,
           CASE ip_version WHEN 4 THEN {IPV4_NETWORK_SQL} WHEN 6 THEN source_ip END AS network,
           {REGION_SQL} AS region, nullif(trim(user_agent), '') AS client, count(*) AS n
    FROM {{events}} WHERE in_range GROUP BY ALL
    """  # noqa: S608 - fixed SQL fragments; no values

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        """SQL reduces the history's per-day combinations to distinct (agent, kind, value) rows
        with their calls, first local day and days seen; only those reach Python, to fold IPv6
        addresses into /64s and user agents into families."""
        source, params = history.part_rows(cls)
        rows = history.query(
            f"""
            WITH combos AS {source}
            SELECT agent, kind, value, sum(n) AS calls, min(day) AS first_day, count(DISTINCT day) AS days
            FROM (UNPIVOT combos ON network, region, client INTO NAME kind VALUE value)
            GROUP BY GROUPING SETS ((agent, kind, value), (agent, kind))
            """,  # noqa: S608 - the source is the driver's fixed SQL; values are bound
            params)
        out = {agent: cls({}, {}, {}) for agent in history.agents}
        for (agent, kind), (values, days) in _folded(rows).items():
            out[agent]._learn(kind, values, days)
        return out

    def _learn(self, kind: str, values: dict[str, tuple[int, date]], days: int) -> None:
        assert self.sources is not None and self.source_days is not None and self.novel_days is not None
        self.source_days[kind] = days
        first = min(day for _, day in values.values())
        self.novel_days[kind] = len({day for _, day in values.values()} - {first})
        ranked = sorted(values.items(), key=lambda kv: (-kv[1][0], kv[0]))
        self.sources[kind] = {name: calls for name, (calls, _) in ranked[:MAX_SOURCES]}
        if len(ranked) > MAX_SOURCES:  # too many to keep: judged as rotating
            self.novel_days[kind] = max(days - 1, self.novel_days[kind])

    def known(self, kind: str) -> dict[str, int]:
        """The values of a kind of source seen in the history, with their calls."""
        return (self.sources or {}).get(kind, {})

    def novelty(self, kind: str, min_days: int = MIN_ACTIVE_DAYS) -> float | None:
        """On what share of the days a kind of source was seen (after the first) a never-seen value
        appeared: 0 for an agent that always calls from the same places, near 1 for one that
        rotates. None when not learned: fitted before sources were, or seen on under ``min_days``
        days (at least 2)."""
        if self.source_days is None or self.novel_days is None:
            return None
        days = self.source_days.get(kind, 0)
        if days < max(min_days, 2):
            return None
        return self.novel_days.get(kind, 0) / (days - 1)


def _folded(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], tuple[dict[str, tuple[int, date]], int]]:
    """Per (agent, kind): each folded value's calls and first day, and the days the kind was seen."""
    seen: dict[tuple[str, str], dict[str, tuple[int, date]]] = {}
    days: dict[tuple[str, str], int] = {}
    for agent, kind, value, calls, first_day, n_days in rows:
        if value is None:
            days[(agent, kind)] = int(n_days)
            continue
        name = _source_value(kind, value)
        if name is not None:
            values = seen.setdefault((agent, kind), {})
            before = values.get(name, (0, first_day))
            values[name] = (before[0] + int(calls), min(before[1], first_day))
    return {key: (values, days.get(key, 0)) for key, values in seen.items()}


def _source_value(kind: str, value: str) -> str | None:
    if kind == "client":
        return client_family(value)
    if kind == "network" and "/" not in value:  # IPv6 addresses come raw from SQL
        return network_of(value)
    return value


class NewSource(Detector):
    id = "new_source"
    severity = "low"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "24h",
        "max_novelty": 0.1,  # a kind is stable when new values came on at most 10% of its days
        "min_days": 7,  # days a kind must have been seen on before it is judged
        "coincidence_window": "1h",  # another detector's finding this close (see `coincidence`)...
        "coincidence_severity": "high",  # ...raises this one to this severity
    }
    columns = ("event_id", "event_time", "agent", "event_name", "source_ip", "acs_region", "is_global",
               "service_name", "user_agent", "error_code")
    learns = SourceProfile

    def validate(self) -> None:
        novelty, days = self.params["max_novelty"], self.params["min_days"]
        if not isinstance(novelty, int | float) or not 0 <= novelty <= 1:
            raise ValueError(f"max_novelty must be a share between 0 and 1, not {novelty!r}")
        if not isinstance(days, int) or days < 2:
            raise ValueError(f"min_days must be a whole number of days, at least 2, not {days!r}")
        parse_duration(self.params["coincidence_window"])
        if self.params["coincidence_severity"] not in SEVERITIES:
            raise ValueError(f"coincidence_severity must be one of {', '.join(SEVERITIES)}")

    @property
    def coincidence(self) -> Coincidence:
        return Coincidence(parse_duration(self.params["coincidence_window"]),
                           str(self.params["coincidence_severity"]))

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        stable = self._stable_kinds(events, models)
        df = events[events["agent"].isin(list(stable)).to_numpy()]
        if df.empty:
            return []
        values = source_values(df)
        codes, names = pd.factorize(df["agent"])
        new = {kind: _unknown(codes, values[kind], [stable[str(n)].get(kind) for n in names]) for kind in KINDS}
        novel = new["network"] | new["region"] | new["client"]
        if not novel.any():
            return []
        rows = df[novel].assign(**{k: _named(values[k], novel) for k in KINDS},
                                **{f"new_{k}": v[novel] for k, v in new.items()})
        rows = rows.assign(key=_primary_key(rows))
        out: list[Finding] = []
        for (agent, key), group in rows.groupby(["agent", "key"], sort=False):
            group = group.sort_values(["event_time", "event_id"])
            baseline = models.baselines[str(agent)]
            for start, end in group_bursts(list(group["event_time"]), self.dedup_window):
                out.append(self._finding(str(agent), str(key), group.iloc[start:end], baseline,
                                         _profile(baseline), models.scopes.get(str(agent))))
        return out

    def _stable_kinds(self, events: pd.DataFrame, models: Models) -> dict[str, dict[str, set[str]]]:
        """Per judged agent, its stable kinds of source and their known values."""
        out: dict[str, dict[str, set[str]]] = {}
        for agent in events["agent"].unique():
            baseline = models.baselines.get(str(agent))
            if baseline is None:
                continue
            profile = _profile(baseline)
            kinds = {kind: set(profile.known(kind)) for kind in KINDS if self._is_stable(profile, kind)}
            if kinds:
                out[str(agent)] = kinds
        return out

    def _is_stable(self, profile: SourceProfile, kind: str) -> bool:
        novelty = profile.novelty(kind, self.params["min_days"])
        return novelty is not None and novelty <= self.params["max_novelty"]

    def _finding(self, agent: str, key: str, burst: pd.DataFrame, baseline: Baseline,
                 profile: SourceProfile, scope: AgentScope | None = None) -> Finding:
        kind, value = key.split(":", 1)
        new = {k: capped(dict.fromkeys(burst.loc[burst[f"new_{k}"], k]), 10) for k in KINDS}
        new = {k: v for k, v in new.items() if v}
        ok = burst["error_code"].isna()
        evidence: dict[str, Any] = {
            "kind": kind, "value": value, "new": new, "count": len(burst), "succeeded": int(ok.sum()),
            "failed": int((~ok).sum()), "error_codes": dict(Counter(burst["error_code"].dropna())),
            "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 10),
            "regions": capped(dict.fromkeys(burst["acs_region"].dropna()), 10),
            "user_agents": capped(dict.fromkeys(burst["user_agent"].dropna()), 5),
            "apis": dict(Counter(burst["event_name"].dropna()).most_common(5)),
            "known": {k: dict(Counter(profile.known(k)).most_common(10)) for k in KINDS},
            "diversity": {k: self._diversity(profile, k) for k in KINDS},
            "history_days": (baseline.history_end - baseline.history_start).days,
            "observed_days": baseline.observed_days,  # since its first event in the history
            "threshold": {"max_novelty": self.params["max_novelty"], "min_days": self.params["min_days"]},
        }
        novelty = profile.novelty(kind, self.params["min_days"]) or 0.0
        calm = 1 - novelty / self.params["max_novelty"] if self.params["max_novelty"] else 1.0
        score = 0.3 + 0.1 * (len(new) - 1) + 0.1 * calm
        evidence["aspects"] = _aspects(new, burst, profile, scope, calm)
        return Finding(
            detector=self.id, agent=agent, severity=self.severity, score=score,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=_summary(agent, kind, value, burst, evidence), event_ids=list(burst["event_id"]),
            evidence=jsonable(evidence), dedup_key=f"new_source:{key}",
        )

    def _diversity(self, profile: SourceProfile, kind: str) -> dict[str, Any]:
        novelty = profile.novelty(kind, self.params["min_days"])
        return {"distinct": len(profile.known(kind)),
                "days_seen": (profile.source_days or {}).get(kind, 0),
                "days_with_a_new_value": (profile.novel_days or {}).get(kind, 0),
                "novelty": None if novelty is None else round(novelty, 3),
                "stable": self._is_stable(profile, kind)}


# how much a new value of each kind weighs as an aspect of the agent's behaviour; a value the
# inventory declares (a network inside its source_ips, one of its regions) weighs DECLARED_WEIGHT
WEIGHTS = {"network": 0.35, "region": 0.25, "client": 0.3}
DECLARED_WEIGHT = 0.1


def _aspects(new: dict[str, list[Any]], burst: pd.DataFrame, profile: SourceProfile, scope: AgentScope | None,
             calm: float) -> list[dict[str, Any]]:
    """One aspect per kind of new source: what was new, what was known, and whether the inventory
    declares it (then it weighs little: activity inside what was declared is never more than low)."""
    out = []
    for kind, values in new.items():
        declared = scope is not None and all(_declared(scope, kind, v, burst) for v in values)
        known = list(profile.known(kind))
        text = (f"new {_WORDS[kind][0]} {', '.join(map(str, values[:3]))}"
                f"{' (declared in the inventory)' if declared else ''}; usual: "
                f"{', '.join(known[:3]) or 'none'}{', ...' if len(known) > 3 else ''}")
        weight = DECLARED_WEIGHT if declared else WEIGHTS[kind] * (0.7 + 0.3 * max(0.0, calm))
        out.append(aspect(kind, text, weight, new=values, usual=known[:10], declared=declared))
    return out


def _declared(scope: AgentScope, kind: str, value: Any, burst: pd.DataFrame) -> bool:
    """Whether the inventory declares this new value: a network whose calls all come from the
    agent's declared source networks, a region among its declared regions."""
    if kind == "region":
        return scope.regions is not None and str(value) in scope.regions
    if kind == "network" and scope.networks is not None:
        ips = burst.loc[burst["network"] == value, "source_ip"].dropna().unique()
        return len(ips) > 0 and all(scope.source_allowed(str(ip)) for ip in ips)
    return False


def _profile(baseline: Baseline) -> SourceProfile:
    """Its learned sources; not learned (nothing judged) when the baseline was fitted without them."""
    return baseline.part(SourceProfile) or SourceProfile()


def _unknown(codes: np.ndarray, values: Coded, known: list[set[str] | None]) -> np.ndarray:
    """Per row: is the value missing from its agent's known values? Never for a missing value or an
    agent whose kind is not judged (``None``). Each distinct (agent, value) is looked up once."""
    vcodes, vnames = values
    width = len(vnames) + 1
    pairs, inverse = np.unique(codes.astype(np.int64) * width + vcodes + 1, return_inverse=True)
    verdicts = np.zeros(len(pairs), dtype=bool)
    for i, pair in enumerate(pairs):
        agent, value = divmod(int(pair), width)
        seen = known[agent]
        verdicts[i] = value > 0 and seen is not None and vnames[value - 1] not in seen
    return verdicts[inverse.reshape(-1)]


def _named(values: Coded, mask: np.ndarray) -> np.ndarray:
    codes, names = values
    return np.array([*names, None], dtype=object)[codes[mask]]


def _primary_key(rows: pd.DataFrame) -> pd.Series:
    """What a new call is filed under: its network when that is new, else its region, else its client."""
    key = "client:" + rows["client"].astype(str)
    key = key.where(~rows["new_region"], "region:" + rows["region"].astype(str))
    return key.where(~rows["new_network"], "network:" + rows["network"].astype(str))


def _summary(agent: str, kind: str, value: str, burst: pd.DataFrame, ev: dict[str, Any]) -> str:
    first = burst.iloc[0]
    what = {"network": f"called from a never-seen network {value} ({first['source_ip']})",
            "region": f"worked in a never-seen region {value}",
            "client": f"called with a never-seen client {value}"}[kind]
    div, known = ev["diversity"][kind], list(ev["known"][kind])
    one, many = _WORDS[kind]
    usual = (f"in {ev['observed_days']} days it used {div['distinct']} {one if div['distinct'] == 1 else many}"
             f" ({', '.join(known[:3])}{', ...' if len(known) > 3 else ''}), a new one on "
             f"{div['days_with_a_new_value']} of {max(div['days_seen'] - 1, 0)} days")
    also = [f"{_WORDS[k][1 if len(v) > 1 else 0]} {', '.join(map(str, v))}"
            for k, v in ev["new"].items() if k != kind]
    n, ok = ev["count"], ev["succeeded"]
    outcome = f"{n} call{'s' if n != 1 else ''}, {f'{ok} succeeded' if ok else 'all failed'}"
    return f"{agent} {what}: {usual}{'; also new: ' + '; '.join(also) if also else ''} ({outcome})"
