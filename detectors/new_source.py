"""new_source: an agent calling from somewhere its own history never saw: a new source network (the
/24 of an IPv4 address, the /64 of an IPv6 one), a new region, or a new client (user-agent family:
``aliyun-cli``, ``terraform``, ``python-requests``, ``console``...; see ``models.sources``).

The baseline (``models.baselines``, the 28 days before the window) holds, per agent and kind of
source, the values seen and how diverse they are: the share of the days the kind was seen (after
the first) that brought a never-seen value, its *novelty*. A kind is *stable* for an agent when its
novelty is at most ``max_novelty`` (0.1: about two new values in 20 days), and only a new value of a
stable kind is reported. So a role used from a fleet of instances (a new /24 most days, novelty
near 1) is quiet about networks, yet reported when it appears in a never-seen region or with a
never-seen client, if those are stable for it. A kind seen on fewer than ``min_days`` (7) days of
the history, or a baseline stored before sources were learned, is not judged: no guessing. A source
that is not an address ("Internal", masked, a host name, empty) has no network, a call to a global
service (RAM, STS) no region, an empty user agent no client.

The new calls of one agent from one new source (its network when that is new, else its region,
else its client) within the dedup window (24h) make one finding, which names everything else that
was new in them, what was known and the diversity figures.

Severity: medium. ``pipeline.detection.detect`` raises it to ``coincidence_severity`` (high) when another
detector found something about the same agent within ``coincidence_window`` (1h) of it (a new place
*and* odd hours, or out of scope), and names those findings in the evidence (``coincides_with``).

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
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from detectors.base import SEVERITIES, Detector, Finding, Models, capped, group_bursts, jsonable
from models.baselines import Baseline
from models.sources import KINDS, Coded, source_values
from pipeline.core.times import parse_duration

_WORDS = {"network": ("network", "networks"), "region": ("region", "regions"), "client": ("client", "clients")}


class NewSource(Detector):
    id = "new_source"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "24h",
        "max_novelty": 0.1,  # a kind is stable when new values came on at most 10% of its days
        "min_days": 7,  # days a kind must have been seen on before it is judged
        "coincidence_window": "1h",  # read by pipeline.detection.detect: another detector's finding this close...
        "coincidence_severity": "high",  # ...raises this one to this severity
    }
    columns = ("event_id", "event_time", "agent", "event_name", "source_ip", "acs_region", "is_global",
               "service_name", "user_agent", "error_code")

    def validate(self) -> None:
        novelty, days = self.params["max_novelty"], self.params["min_days"]
        if not isinstance(novelty, int | float) or not 0 <= novelty <= 1:
            raise ValueError(f"max_novelty must be a share between 0 and 1, not {novelty!r}")
        if not isinstance(days, int) or days < 2:
            raise ValueError(f"min_days must be a whole number of days, at least 2, not {days!r}")
        parse_duration(self.params["coincidence_window"])
        if self.params["coincidence_severity"] not in SEVERITIES:
            raise ValueError(f"coincidence_severity must be one of {', '.join(SEVERITIES)}")

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
            for start, end in group_bursts(list(group["event_time"]), self.dedup_window):
                out.append(self._finding(str(agent), str(key), group.iloc[start:end], models.baselines[str(agent)]))
        return out

    def _stable_kinds(self, events: pd.DataFrame, models: Models) -> dict[str, dict[str, set[str]]]:
        """Per judged agent, its stable kinds of source and their known values."""
        out: dict[str, dict[str, set[str]]] = {}
        for agent in events["agent"].unique():
            baseline = models.baselines.get(str(agent))
            if baseline is None:
                continue
            kinds = {kind: set(baseline.known_sources(kind)) for kind in KINDS
                     if self._is_stable(baseline, kind)}
            if kinds:
                out[str(agent)] = kinds
        return out

    def _is_stable(self, baseline: Baseline, kind: str) -> bool:
        novelty = baseline.novelty(kind, self.params["min_days"])
        return novelty is not None and novelty <= self.params["max_novelty"]

    def _finding(self, agent: str, key: str, burst: pd.DataFrame, baseline: Baseline) -> Finding:
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
            "known": {k: dict(Counter(baseline.known_sources(k)).most_common(10)) for k in KINDS},
            "diversity": {k: self._diversity(baseline, k) for k in KINDS},
            "history_days": (baseline.history_end - baseline.history_start).days,
            "observed_days": sum(baseline.observed_by_weekday),  # since its first event in the history
            "threshold": {"max_novelty": self.params["max_novelty"], "min_days": self.params["min_days"]},
        }
        novelty = baseline.novelty(kind, self.params["min_days"]) or 0.0
        calm = 1 - novelty / self.params["max_novelty"] if self.params["max_novelty"] else 1.0
        score = 0.5 + 0.1 * (len(new) - 1) + 0.1 * calm
        return Finding(
            detector=self.id, agent=agent, severity=self.severity, score=score,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=_summary(agent, kind, value, burst, evidence), event_ids=list(burst["event_id"]),
            evidence=jsonable(evidence), dedup_key=f"new_source:{key}",
        )

    def _diversity(self, baseline: Baseline, kind: str) -> dict[str, Any]:
        novelty = baseline.novelty(kind, self.params["min_days"])
        return {"distinct": len(baseline.known_sources(kind)),
                "days_seen": (baseline.source_days or {}).get(kind, 0),
                "days_with_a_new_value": (baseline.novel_days or {}).get(kind, 0),
                "novelty": None if novelty is None else round(novelty, 3),
                "stable": self._is_stable(baseline, kind)}


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
