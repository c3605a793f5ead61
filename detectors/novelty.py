"""novelty: the first use, by an agent with a stable history, of a service, an API, a bucket or
resource type, or a sensitive action family (``ram:*``, ``kms:*``, ``sts:AssumeRole``,
``actiontrail:*``, ``sls:Delete*``; ``models.activity``), weighted by sensitivity and grouped per
agent per local day: one finding listing everything new that day.

What it learns (:class:`NoveltyProfile`, fitted with the baselines on the 28 days before the
window) is, per agent, the services, APIs (``Service:Action``) and resource classes
(``bucket:<name>``, ``ACS::ECS::Snapshot``) it used, and how often its set of APIs still grows:
the share of its active days (after the first) that brought an API never used before, its
*novelty*. An agent is *stable* when it has at least 7 active days and a novelty of at most
``max_novelty`` (0.15): a CI key, a backup role, a service; a person exploring the console is not.

A RAM call a user makes about itself (listing, creating, disabling or deleting its own AccessKeys,
changing its password, binding its MFA device: ``SELF_SERVICE``, naming no other user) is
self-service, not the ``ram:*`` family: a person rotating their own key is benign churn; unbinding
*another* user's MFA device is not.

Severity: the first use of a sensitive family by a stable agent is medium (a CI key's first
``kms:GetSecretValue``, a Terraform role's first ``actiontrail:LookupEvents``: its policy may have
allowed them all along), and is listed with the others as a ``novelty`` aspect weighted by the
family's sensitivity. A new service, API or resource alone is low: a ``novelty`` aspect for
``anomalous_behaviour`` to weigh with the agent's other unusual aspects (a never-touched bucket
read ten times more than anything usual, from a new network). For an agent that is not stable, only
sensitive families are reported, at low.

An agent with under 7 active days of history is not judged (``train`` says which are not learned).

Known gaps: an agent that keeps exploring (a person, a new service still being built) is judged on
sensitive families only; what it learns is 28 days, so a quarterly job's APIs are new each quarter;
the resource class is the bucket or the resource type, never the object or instance (a new
instance is not novel; a new bucket is); up to ``MAX_VALUES`` (2,000) values per kind are kept, a
busier agent's rarer ones count as new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, aspect, capped, jsonable, named_user
from models.activity import RESOURCE_CLASS_SQL, family_weight, resource_classes, sensitive_family
from models.baselines import Baseline, History, Learned

MAX_VALUES = 2000
KINDS = ("service", "api", "resource")
WEIGHTS = {"service": 0.3, "api": 0.15, "resource": 0.3}  # per kind of new value (at most one each)
# RAM calls a user makes about itself (its own AccessKeys, password, MFA device): self-service, not the
# use of RAM's power over others, when they name no other user (lower-case: detect's parameter events)
SELF_SERVICE = frozenset({
    "listaccesskeys", "createaccesskey", "updateaccesskey", "deleteaccesskey", "getaccesskeylastused",
    "changepassword", "getloginprofile", "getuser", "getusermfainfo", "createvirtualmfadevice",
    "bindmfadevice", "getsecuritypreference"})


@dataclass
class NoveltyProfile(Learned):
    """What an agent used: its services, APIs and resource classes (``used``), and on how many of
    its active days (after the first) a never-used API appeared (``api_novel_days``). None: fitted
    before novelty was learned (not judged)."""

    used: dict[str, list[str]] | None = None  # kind -> values, busiest first
    api_novel_days: int = 0

    # per agent and local day: the (service, API, resource class) combinations it used
    daily = f"""
    SELECT agent, CAST(timezone({{tz}}, event_time) AS DATE) AS day,
           service_name AS service, service_name || ':' || event_name AS api,
           nullif({RESOURCE_CLASS_SQL}, '') AS resource, count(*) AS n
    FROM {{events}} WHERE in_range AND event_name IS NOT NULL GROUP BY ALL
    """  # noqa: S608 - fixed SQL fragments; no values

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        source, params = history.part_rows(cls)
        rows = history.query(
            f"""
            WITH combos AS {source}
            SELECT agent, kind, value, sum(n) AS calls, min(day) AS first_day
            FROM (UNPIVOT combos ON service, api, resource INTO NAME kind VALUE value)
            GROUP BY ALL
            """,  # noqa: S608 - the source is the driver's fixed SQL; values are bound
            params)
        out = {agent: cls({k: [] for k in KINDS}, 0) for agent in history.agents}
        firsts: dict[str, set[date]] = {}
        for agent, kind, value, _calls, first_day in sorted(rows, key=lambda r: (str(r[0]), str(r[1]), -int(r[3]),
                                                                                 str(r[2]))):
            profile = out.get(str(agent))
            if profile is None or profile.used is None or value is None:
                continue
            values = profile.used[str(kind)]
            if len(values) < MAX_VALUES:
                values.append(str(value))
            if kind == "api":
                firsts.setdefault(str(agent), set()).add(first_day)
        for agent, days in firsts.items():
            out[agent].api_novel_days = max(0, len(days) - 1)  # the first day's APIs are all "new"
        return out

    def novelty(self, baseline: Baseline) -> float:
        """The share of its active days (after the first) that brought a never-used API."""
        return self.api_novel_days / max(1, baseline.active_days - 1)


class Novelty(Detector):
    id = "novelty"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "24h",
        "max_novelty": 0.15,  # stable: new APIs came on at most 15% of its active days
    }
    columns = ("event_id", "event_time", "agent", "event_name", "service_name", "referenced_resources",
               "error_code", "source_ip", "user_name", "request_parameters")
    parameter_events = SELF_SERVICE
    learns = NoveltyProfile

    def validate(self) -> None:
        value = self.params["max_novelty"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"max_novelty must be a share between 0 and 1, not {value!r}")

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        judged = {str(a): j for a in events["agent"].unique() if (j := self._judged(models, str(a))) is not None}
        df = events[events["agent"].isin(list(judged)).to_numpy() & events["event_name"].notna().to_numpy()]
        if df.empty:
            return []
        service = df["service_name"].fillna("").astype(str)
        values = {"service": service, "api": service + ":" + df["event_name"].astype(str),
                  "resource": resource_classes(df["referenced_resources"])}
        agents = df["agent"].astype(str)
        new = {kind: _unknown(agents, values[kind], {a: set(p.used.get(kind, [])) if p.used else set()
                                                     for a, (p, _) in judged.items()})
               for kind in KINDS}
        # each distinct API's family once, each distinct (agent, family) pair's verdict once
        codes, apis = pd.factorize(values["api"])
        families = np.array([sensitive_family(*str(a).split(":", 1)) for a in apis] + [None], dtype=object)[codes]
        known_families = {a: {sensitive_family(*api.split(":", 1)) for api in (p.used or {}).get("api", [])}
                          for a, (p, _) in judged.items()}
        families = np.where(_self_service(df), None, families)
        has_family = pd.Series(families).notna().to_numpy()
        new_family = np.zeros(len(df), dtype=bool)
        if has_family.any():
            new_family[has_family] = _unknown(agents[has_family], pd.Series(families[has_family]),
                                              {a: {f for f in fs if f} for a, fs in known_families.items()})
        agent_codes, agent_names = pd.factorize(agents)
        stable = np.array([judged[str(a)][1] for a in agent_names], dtype=bool)[agent_codes]
        novel = new_family | (stable & (new["service"] | new["api"] | new["resource"]))
        if not novel.any():
            return []
        rows = df[novel].assign(day=df["event_time"][novel].dt.tz_convert(models.timezone).dt.date,
                                family=np.where(new_family[novel], families[novel], None),
                                **{k: values[k][novel] for k in KINDS},
                                **{f"new_{k}": new[k][novel] & stable[novel] for k in KINDS})
        out = []
        for (agent, day), group in rows.groupby(["agent", "day"], sort=False):
            profile, is_stable = judged[str(agent)]
            out.append(self._finding(str(agent), day, group.sort_values(["event_time", "event_id"]), profile,
                                     models.baselines[str(agent)], is_stable))
        return out

    def _judged(self, models: Models, agent: str) -> tuple[NoveltyProfile, bool] | None:
        """Its profile and whether it is stable; None when it is not judged."""
        baseline = models.baselines.get(agent)
        if baseline is None or not baseline.learned:
            return None
        profile = baseline.part(NoveltyProfile)
        if profile is None or profile.used is None:
            return None
        return profile, profile.novelty(baseline) <= self.params["max_novelty"]

    def _finding(self, agent: str, day: date, group: pd.DataFrame, profile: NoveltyProfile, baseline: Baseline,
                 stable: bool) -> Finding:
        new = {k: capped(dict.fromkeys(group.loc[group[f"new_{k}"], k]), 20) for k in KINDS}
        new = {k: v for k, v in new.items() if v}
        families = capped(dict.fromkeys(group["family"].dropna()), 10)
        usual = {k: len((profile.used or {}).get(k, [])) for k in KINDS}
        parts = [f"sensitive {', '.join(families)}"] if families else []
        parts += [f"{len(v)} {k}{'s' if len(v) > 1 else ''} ({', '.join(map(str, v[:3]))}{', ...' if len(v) > 3 else ''})"
                  for k, v in new.items()]
        novelty = profile.novelty(baseline)
        history = (f"in {baseline.active_days} active days it used {usual['service']} services, {usual['api']} APIs and "
                   f"{usual['resource']} resource classes, a new API on {profile.api_novel_days} days")
        weight = max([family_weight(f) * (0.8 if stable else 0.4) for f in families] or [0.0])
        weight = max(weight, sum(WEIGHTS[k] for k in new))
        severity = "medium" if families and stable else "low"
        ok = group["error_code"].isna()
        evidence: dict[str, Any] = {
            "new": new, "sensitive_families": families, "stable": stable, "count": len(group),
            "succeeded": int(ok.sum()), "failed": int((~ok).sum()),
            "apis": dict(group["api"].value_counts().head(10)),
            "source_ips": capped(dict.fromkeys(group["source_ip"].dropna()), 10),
            "baseline": {"active_days": baseline.active_days, "known": usual,
                         "days_with_a_new_api": profile.api_novel_days, "novelty": round(novelty, 3)},
            "threshold": {"max_novelty": self.params["max_novelty"]},
            "aspects": [aspect("novelty", f"first use of {'; '.join(parts)}; {history}", weight,
                               new=new, sensitive_families=families)],
        }
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=(0.55 if severity == "medium" else 0.3) + 0.3 * weight,
            first_seen=group["event_time"].iloc[0].to_pydatetime(),
            last_seen=group["event_time"].iloc[-1].to_pydatetime(),
            summary=f"{agent} used for the first time on {day:%Y-%m-%d}: {'; '.join(parts)} ({history})",
            event_ids=list(group["event_id"]), evidence=jsonable(evidence), dedup_key=f"novelty:{day:%Y-%m-%d}",
        )


def _self_service(df: pd.DataFrame) -> np.ndarray:
    """Per row: a RAM call a user makes about itself (``SELF_SERVICE``, naming no user or its own)."""
    names = df["event_name"].astype(str).str.lower()
    candidate = names.isin(SELF_SERVICE).to_numpy() & df["user_name"].notna().to_numpy()
    out = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(candidate):
        target = named_user(df["request_parameters"].iloc[i])
        out[i] = target is None or target == str(df["user_name"].iloc[i])
    return out


def _unknown(agents: pd.Series, values: pd.Series, known: dict[str, set[str]]) -> np.ndarray:
    """Per row: is the (non-empty) value missing from its agent's known values? Each distinct
    (agent, value) pair is looked up once: the pairs are integer codes (agent code times the
    number of values plus value code), uniqued in numpy - hashing (agent, value) tuples took
    seconds on a 500-agent day."""
    if not len(agents):
        return np.zeros(0, dtype=bool)
    agent_codes, agent_names = pd.factorize(agents.to_numpy())
    value_codes, value_names = pd.factorize(values.astype(str).to_numpy())
    width = len(value_names) + 1
    pairs = (agent_codes.astype(np.int64) + 1) * width + (value_codes + 1)
    uniques, inverse = np.unique(pairs, return_inverse=True)
    verdicts = np.array([_is_new(agent_names, value_names, int(p) // width - 1, int(p) % width - 1, known)
                         for p in uniques], dtype=bool)
    return verdicts[inverse.reshape(-1)]


def _is_new(agents: Any, values: Any, a: int, v: int, known: dict[str, set[str]]) -> bool:
    value = str(values[v]) if v >= 0 else ""
    return bool(value) and value not in known.get(str(agents[a]) if a >= 0 else "", set())
