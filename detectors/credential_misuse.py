"""credential_misuse: one credential used by two parties - an AccessKey or a role's STS session at
once from places that never go together for its agent, a role session whose place *and* client
change mid-session, or a cloud-only identity (a service role, an ECS instance role, a job inside a
VPC) used from the internet.

A *credential* is an AccessKey id (a long-term ``LTAI…`` key, or an assumed role's ``STS.…`` key,
which lives as long as its session), else a console session (the user and the session's
``creationDate``). A *place* is ``cloud`` or a public /16 (IPv6 /48): see ``models.places``, which
says why prefixes and not a geolocation database.

What it learns (:class:`CredentialProfile`, fitted with the baselines on the 28 days before the
window), per agent: the places it calls from (calls and days each), the pairs of places its
credentials were used from within ``concurrent_window`` (the same 30-minute slots; an STS
session: anywhere in the session), and how often a public place was new to it (novelty, as
``new_source``).

It fires on:

* **concurrent use**: the same credential used from two places within ``concurrent_window``
  (30m; an STS session: anywhere in it, whatever the gap - a token does not move on its own),
  when the pair never went together in the agent's history. Medium when one of the places is new
  to the agent, high when the client (user-agent family) differs on the new side too - the ETL
  case: the job from its usual network while its token is reused from a new one with
  ``python-requests``. Both places known but never together is low (a weak signal for the
  combiner). An agent that rotates public networks (novelty above ``max_novelty``: a hosted CI
  pool) is not reported for two places at once unless the client changed too (then medium);
* **outside the cloud**: an agent whose history is cloud-only (at least ``min_days`` days of
  calls, none from a public address) calling from a public address: high. Its credentials exist
  only inside Alibaba Cloud (an instance's metadata service, a function's runtime, a service's
  own host), so a call from the internet is a stolen token.

Never above low: a place inside the agent's declared ``source_ips`` (what the inventory declares
is not by itself suspicious), an agent with under 7 active days of history (``models.baselines``)
or without a learned profile. One finding per agent, credential and new place within the dedup
window (1h), listing the usual side, both clients and the calls made from the new place.

Known gaps: a thief inside the same /16 as the agent (a neighbour on the ISP, the same cloud VPC:
a stolen instance token used from another instance is ``cloud`` on both sides) is invisible;
a thief who waits for the real job to end and reuses a long-term key from a new place alone is
``new_source``'s, not this detector's (only an STS session's whole life is one window); two
places that went together once in 28 days are accepted for good; the place is the address's
prefix, not its location (no distance); an attacker who copies the agent's user agent turns a
high into a medium; a key of an agent that rotates networks (a hosted CI pool), used at once from
a new /16 with the client it always uses, is quiet; a single public call in a role's 28 days makes
it not cloud-only (until it ages out of the history); events without an address (masked, empty)
are not judged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from detectors.base import Detector, Finding, Models, capped, group_bursts, jsonable
from models.baselines import Baseline, History, Learned
from models.places import CLOUD, FAMILY_SQL, PARTS_SQL, address_family, fold
from models.sources import client_family
from pipeline.core.times import parse_duration

MAX_PLACES = 500  # places kept per agent; an agent with more is taken as rotating them
MAX_PAIRS = 2000
SLOT_SECONDS = 1800  # what "together" means when learning: the same half hour (or the same STS session)
# a credential in SQL: only grouping needs it (never compared with the frame's), so a console
# session is named by its epoch, cheaper than a formatted time
_CREDENTIAL_SQL = ("CASE WHEN nullif(access_key_id, '') IS NOT NULL THEN access_key_id WHEN session_created IS NOT NULL "
                   "THEN 'console:' || coalesce(user_name, '') || '@' || CAST(epoch(session_created) AS VARCHAR) END")


@dataclass
class CredentialProfile(Learned):
    """Where an agent's credentials are used from (``models.places``): per place its calls and
    local days, the pairs of places one credential was used from together, and on how many of the
    days with a public place (after the first) a never-seen public place appeared. None: stored
    before this part existed (not judged until the next fit)."""

    places: dict[str, list[int]] | None = None  # place -> [calls, days]
    together: list[str] | None = None  # "placeA|placeB" (sorted) used together by one credential
    public_days: int | None = None  # local days with a call from a public place
    novel_public_days: int | None = None  # of those (after the first), days that brought a new public place

    # per agent, cheap keys of the address (its first octets), credential and half hour: calls
    daily = f"""
    SELECT agent, {PARTS_SQL}, {_CREDENTIAL_SQL} AS cred, access_key_id LIKE 'STS.%' AS sts,
           epoch(event_time)::BIGINT // {SLOT_SECONDS} AS bucket, count(*) AS n
    FROM {{events}} WHERE in_range GROUP BY ALL
    """  # noqa: S608 - fixed SQL fragments; no values

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        """From the history's per-day rows, grouped into cells (agent, place, credential, local day
        of the half hour, half hour or STS session); from those, per (agent, place) calls and
        days, the pairs of places one credential was used from in a half hour or the next (a
        self-join of the cells), and each agent's days with a public place. Only those small
        tables reach Python."""
        source, params = history.part_rows(cls)
        rows = history.query(
            f"""
            WITH parts AS {source},
            cells AS (
                SELECT agent, {FAMILY_SQL} AS place, cred, CASE WHEN sts THEN 0 ELSE bucket END AS slot,
                       CAST(timezone(?, to_timestamp(bucket * {SLOT_SECONDS})) AS DATE) AS day, sum(n) AS n
                FROM parts GROUP BY ALL),
            placed AS MATERIALIZED (SELECT * FROM cells WHERE place IS NOT NULL),
            together AS (SELECT DISTINCT agent, cred, slot, place FROM placed WHERE cred IS NOT NULL),
            -- the next slot's places as if in this one: "this half hour or the next" as an equi-join
            reach AS (SELECT * FROM together UNION ALL SELECT agent, cred, slot - 1, place FROM together WHERE slot > 0)
            SELECT 'place' AS what, agent, place, NULL AS other, sum(n) AS calls, count(DISTINCT day) AS days,
                   min(day) AS first_day
            FROM placed GROUP BY agent, place
            UNION ALL
            SELECT 'pair', a.agent, a.place, b.place, count(*), NULL, NULL
            FROM together a JOIN reach b ON a.agent = b.agent AND a.cred = b.cred AND a.slot = b.slot
            WHERE a.place <> b.place
            GROUP BY ALL
            UNION ALL
            SELECT 'day', agent, NULL, NULL, sum(n), NULL, day FROM placed WHERE place <> '{CLOUD}' GROUP BY agent, day
            """,  # noqa: S608 - fixed SQL fragments; values are bound
            [*params, history.timezone])
        out = {agent: cls({}, [], 0, 0) for agent in history.agents}
        firsts: dict[str, dict[str, Any]] = {}
        days: dict[str, set[Any]] = {}
        for what, agent, place, other, calls, n_days, day in rows:
            if agent not in out:
                continue
            part = out[agent]
            assert part.places is not None and part.together is not None
            if what == "place":
                name = fold(place)
                if name is None:
                    continue
                before = part.places.get(name, [0, 0])
                part.places[name] = [before[0] + int(calls), max(before[1], int(n_days))]
                if name != CLOUD:
                    first = firsts.setdefault(agent, {})
                    first[name] = min(first.get(name, day), day)
            elif what == "pair":
                a, b = fold(place), fold(other)
                if a and b and a != b:
                    part.together.append("|".join(sorted((a, b))))
            else:
                days.setdefault(agent, set()).add(day)
        for agent, part in out.items():
            part._settle(sorted(days.get(agent, ())), firsts.get(agent, {}))
        return out

    def _settle(self, public_days: list[Any], firsts: dict[str, Any]) -> None:
        """Novelty of public places; cap what is stored (an agent past the caps is rotating)."""
        assert self.places is not None and self.together is not None
        self.public_days = len(public_days)
        novel = set(firsts.values()) - ({public_days[0]} if public_days else set())
        self.novel_public_days = len(novel)
        if len(self.places) > MAX_PLACES:
            ranked = sorted(self.places.items(), key=lambda kv: (-kv[1][0], kv[0]))[:MAX_PLACES]
            self.places = dict(ranked)
            self.novel_public_days = max(self.public_days - 1, self.novel_public_days)
        self.together = sorted(set(self.together))[:MAX_PAIRS]

    def known(self) -> set[str]:
        return set(self.places or {})

    def pairs(self) -> set[tuple[str, str]]:
        return {tuple(p.split("|", 1)) for p in self.together or []}  # type: ignore[misc]

    def cloud_only(self, min_days: int) -> bool:
        """Every call of the history from inside the cloud, on at least ``min_days`` days."""
        places = self.places or {}
        return set(places) == {CLOUD} and places[CLOUD][1] >= min_days

    def novelty(self, min_days: int) -> float | None:
        """Share of the days with a public place (after the first) that brought a new one; None
        when public places were seen on under ``min_days`` days."""
        if self.public_days is None or self.public_days < max(min_days, 2):
            return None
        return (self.novel_public_days or 0) / (self.public_days - 1)


class CredentialMisuse(Detector):
    id = "credential_misuse"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "1h",
        "concurrent_window": "30m",  # two places this close on one key are the key used twice at once
        "max_novelty": 0.1,  # an agent whose public places change on more days rotates them
        "min_days": 7,  # days of history a cloud-only verdict (and the novelty) needs
    }
    columns = ("event_id", "event_time", "agent", "event_name", "source_ip", "vpc_id", "user_agent", "access_key_id",
               "user_name", "session_created", "error_code")
    learns = CredentialProfile

    def validate(self) -> None:
        if parse_duration(self.params["concurrent_window"]) <= timedelta(0):
            raise ValueError("concurrent_window must be positive")
        novelty, days = self.params["max_novelty"], self.params["min_days"]
        if not isinstance(novelty, int | float) or not 0 <= novelty <= 1:
            raise ValueError(f"max_novelty must be a share between 0 and 1, not {novelty!r}")
        if not isinstance(days, int) or days < 2:
            raise ValueError(f"min_days must be a whole number of days, at least 2, not {days!r}")

    @property
    def lookback(self) -> timedelta:
        return max(self.dedup_window, parse_duration(self.params["concurrent_window"]))

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        df = _placed(events)
        if df.empty:
            return []
        df = df.assign(declared=_declared(df, models))
        suspects = _unlearned(self._switches(df), models, self.params["max_novelty"], self.params["min_days"])
        outside = self._outside(df, models)
        if not suspects and not outside:
            return []
        out: list[Finding] = []
        judged = _merge(suspects, outside)
        sub = df[df["cred"].isin({cred for _, cred, _ in judged}).to_numpy()]
        by_cred = sub.groupby(["agent", "cred"], sort=False).indices
        for (agent, cred, place), verdicts in judged.items():
            used = sub.iloc[by_cred[(agent, cred)]]
            here = (used["place"] == place).to_numpy()
            rows, usual = used[here], used[~here]
            for start, end in group_bursts(list(rows["event_time"]), self.dedup_window):
                burst = rows.iloc[start:end]
                found = self._finding(agent, cred, place, burst, usual, verdicts, models.baselines.get(agent))
                if found is not None:
                    out.append(found)
        return out

    # -- what is unusual ----------------------------------------------------------------------------
    def _switches(self, df: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Per (agent, credential, place): the places the credential was used from within the
        window of it (an STS session: at any time), from consecutive calls, vectorised."""
        window = parse_duration(self.params["concurrent_window"])
        cred_codes, creds = pd.factorize(df["cred"])
        place_codes, _ = pd.factorize(df["place"])
        times = pd.DatetimeIndex(df["event_time"]).as_unit("ns").asi8
        order = np.lexsort((times, cred_codes))
        cred, place, times = cred_codes[order], place_codes[order], times[order]
        switch = np.zeros(len(order), dtype=bool)
        sts = np.asarray(pd.Series(creds).str.startswith("STS."), dtype=bool)[cred]
        gap = np.diff(times) <= int(window.total_seconds() * 1e9)
        switch[1:] = (cred[1:] == cred[:-1]) & (gap | sts[1:]) & (place[1:] != place[:-1])
        at = np.flatnonzero(switch)
        if not len(at):
            return {}
        rows, prev = order[at], order[at - 1]
        agents, places = df["agent"].to_numpy(), df["place"].to_numpy()
        client_codes, _ = pd.factorize(df["client"])
        changed = (client_codes[rows] != client_codes[prev]) & (client_codes[rows] >= 0) & (client_codes[prev] >= 0)
        pairs = pd.DataFrame({"agent": np.concatenate([agents[rows], agents[rows]]),
                              "cred": np.concatenate([df["cred"].to_numpy()[rows]] * 2),
                              "here": np.concatenate([places[rows], places[prev]]),
                              "there": np.concatenate([places[prev], places[rows]]),
                              "changed": np.concatenate([changed, changed])})
        pairs = pairs.groupby(["agent", "cred", "here", "there"], sort=False)["changed"].any().reset_index()
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        for agent, cred_id, here, there, client_changed in pairs.itertuples(index=False):
            entry = out.setdefault((str(agent), str(cred_id), str(here)), {"with": set(), "changed": False})
            entry["with"].add(str(there))
            entry["changed"] = entry["changed"] or bool(client_changed)
        return out

    def _outside(self, df: pd.DataFrame, models: Models) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Public, undeclared calls of agents whose learned history is cloud-only."""
        cloud_only = [a for a in df["agent"].unique()
                      if (p := _profile(models.baselines.get(str(a)))) is not None and p.cloud_only(self.params["min_days"])]
        public = df[(df["place"] != CLOUD).to_numpy() & ~df["declared"].to_numpy() & df["agent"].isin(cloud_only).to_numpy()]
        out: dict[tuple[str, str, str], dict[str, Any]] = {}
        for (agent, cred, place), _ in public.groupby(["agent", "cred", "place"], sort=False):
            profile = _profile(models.baselines.get(str(agent)))
            if profile is not None and profile.cloud_only(self.params["min_days"]):
                out[(str(agent), str(cred), str(place))] = {"outside": True}
        return out

    # -- the finding --------------------------------------------------------------------------------
    def _finding(self, agent: str, cred: str, place: str, burst: pd.DataFrame, usual: pd.DataFrame,
                 verdict: dict[str, Any], baseline: Baseline | None) -> Finding | None:
        """The finding about the calls from ``place``; None when nothing is unusual about them (the
        pairs were learned), or when they are the usual side of a pair whose other side is
        reported (the newer place, else the one the agent used least)."""
        profile = _profile(baseline)
        learned = baseline is not None and baseline.learned and profile is not None
        known = profile.known() if profile else set()
        pairs = profile.pairs() if profile else set()
        near = usual[(usual["event_time"] >= burst["event_time"].iloc[0] - self._reach(cred))
                     & (usual["event_time"] <= burst["event_time"].iloc[-1] + self._reach(cred))]
        others = sorted(p for p in verdict.get("with", set()) if tuple(sorted((p, place))) not in pairs)
        if others:
            firsts = {p: usual.loc[usual["place"] == p, "event_time"].min() for p in others}
            if not _reported_side(place, burst["event_time"].iloc[0], firsts, profile):
                others = []
        clients = set(burst["client"].dropna())
        usual_clients = set(near["client"].dropna())
        changed_client = bool(clients and usual_clients and not clients & usual_clients)
        new_place = place not in known
        declared = bool(burst["declared"].all())
        novelty = profile.novelty(self.params["min_days"]) if profile else None
        rotating = novelty is not None and novelty > self.params["max_novelty"]
        reasons: list[str] = []
        severity = "low"
        if verdict.get("outside"):
            reasons.append("outside_cloud")
            severity = "high"
        if others:
            reasons.append("mid_session_change" if cred.startswith("STS.") and changed_client else "concurrent")
            if new_place and changed_client and not rotating:
                severity = "high"
            elif new_place and (not rotating or changed_client) and severity != "high":
                severity = "medium"
        if not reasons or (rotating and not changed_client and reasons == ["concurrent"]):
            return None  # nothing unusual; or an agent that rotates networks being itself
        if declared or not learned:
            severity = "low"
        evidence: dict[str, Any] = {
            "reasons": reasons, "key_or_session": cred, "place": place, "new_place": new_place,
            "declared": declared, "together_with": others,
            "count": len(burst), "succeeded": int(burst["error_code"].isna().sum()),
            "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 10),
            "clients": sorted(clients)[:5], "usual_clients": sorted(usual_clients)[:5],
            "usual_source_ips": capped(dict.fromkeys(near["source_ip"].dropna()), 10),
            "apis": dict(Counter(burst["event_name"].dropna()).most_common(5)),
            "known_places": dict(Counter({k: v[0] for k, v in (profile.places or {}).items()}).most_common(10))
            if profile else {},
            "places_known": len(known), "pairs_known": len(pairs),
            "public_novelty": None if novelty is None else round(novelty, 3),
            "learned": learned,
            "threshold": {k: self.params[k] for k in ("concurrent_window", "max_novelty", "min_days")},
        }
        return Finding(
            detector=self.id, agent=agent, severity=severity,
            score={"low": 0.3, "medium": 0.6, "high": 0.85}[severity],
            first_seen=burst["event_time"].iloc[0].to_pydatetime(),
            last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=_summary(agent, cred, place, burst, evidence, profile, baseline),
            event_ids=list(burst["event_id"]), evidence=jsonable(evidence),
            dedup_key=f"credential_misuse:{cred}:{place}")

    def _reach(self, cred: str) -> timedelta:
        return timedelta(hours=12) if cred.startswith("STS.") else parse_duration(self.params["concurrent_window"])



def _reported_side(place: str, first: Any, partners: dict[str, Any], profile: CredentialProfile | None) -> bool:
    """Of two places never seen together, the one a finding is about: the one new to the agent;
    of two new ones (or with nothing learned), the one used later; of two known ones, the one the
    agent called least from (ties: by name)."""
    calls = {k: v[0] for k, v in ((profile.places or {}) if profile else {}).items()}
    for other, other_first in partners.items():
        if place in calls and other not in calls:
            return False
        if place in calls and (calls[place], place) > (calls[other], other):
            return False
        if place not in calls and other not in calls and (first, place) < (other_first, other):
            return False
    return True


def _unlearned(switches: dict[tuple[str, str, str], dict[str, Any]], models: Models, max_novelty: float,
               min_days: int) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The switches between places whose pair the agent's history never saw together; for an
    agent that rotates public networks, only those where the client changed too."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    pairs: dict[str, tuple[set[tuple[str, str]], bool]] = {}
    for (agent, cred, place), entry in switches.items():
        if agent not in pairs:
            profile = _profile(models.baselines.get(agent))
            novelty = profile.novelty(min_days) if profile else None
            pairs[agent] = (profile.pairs() if profile else set(), novelty is not None and novelty > max_novelty)
        known, rotating = pairs[agent]
        new = {p for p in entry["with"] if tuple(sorted((p, place))) not in known}
        if new and (entry["changed"] or not rotating):
            out[(agent, cred, place)] = {"with": new}
    return out


def _merge(*parts: dict[tuple[str, str, str], dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for part in parts:
        for key, value in part.items():
            entry = out.setdefault(key, {})
            for k, v in value.items():
                entry[k] = entry.get(k, set()) | v if isinstance(v, set) else v
    return out


def _profile(baseline: Baseline | None) -> CredentialProfile | None:
    if baseline is None:
        return None
    part = baseline.part(CredentialProfile)
    return part if part is not None and part.places is not None else None


def _placed(events: pd.DataFrame) -> pd.DataFrame:
    """The window's calls that have a credential and a place, with both (and the client family).
    Each distinct address and user agent is worked out once: the cost follows the distinct
    values, not the rows."""
    if events.empty:
        return events
    key = events["access_key_id"].astype(object).where(events["access_key_id"].fillna("").ne("").to_numpy())
    console = key.isna().to_numpy() & events["session_created"].notna().to_numpy()
    cred = np.array(key.to_numpy(dtype=object), dtype=object)  # a copy: pandas may hand out a read-only view
    if console.any():
        sub = events[console]
        cred[console] = ("console:" + sub["user_name"].fillna("").astype(str) + "@"
                         + pd.to_datetime(sub["session_created"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_numpy()
    ip_codes, ips = pd.factorize(events["source_ip"])
    place = np.array([address_family(ip) for ip in ips] + [None], dtype=object)[ip_codes]
    in_vpc = events["vpc_id"].fillna("").ne("").to_numpy(dtype=bool)
    place[in_vpc] = CLOUD
    ua_codes, ua_uniques = pd.factorize(events["user_agent"])
    clients = np.array([client_family(u) for u in ua_uniques] + [None], dtype=object)
    keep = pd.notna(cred) & pd.notna(place)
    df = events[keep]
    return df.assign(cred=cred[keep], place=place[keep], client=clients[ua_codes][keep]).reset_index(drop=True)


def _declared(df: pd.DataFrame, models: Models) -> np.ndarray:
    """Per row: is the source address inside the agent's declared ``source_ips``?"""
    out = np.zeros(len(df), dtype=bool)
    for agent, idx in df.groupby("agent", sort=False).indices.items():
        declared = models.inventory.agent(str(agent))
        cidrs = declared.source_ips if declared is not None else None
        if not cidrs:
            continue
        ips = df["source_ip"].to_numpy()[idx]
        verdict = {ip: _inside(ip, cidrs) for ip in set(ips)}
        out[idx] = [verdict[ip] for ip in ips]
    return out


def _inside(ip: Any, cidrs: list[Any]) -> bool:
    try:
        addr = ip_address(str(ip))
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in cidrs)


def _summary(agent: str, cred: str, place: str, burst: pd.DataFrame, ev: dict[str, Any],
             profile: CredentialProfile | None, baseline: Baseline | None) -> str:
    who = _short(cred)
    n = ev["count"]
    calls = f"{n} call{'s' if n != 1 else ''}"
    where = f"{place} ({burst['source_ip'].iloc[0]})"
    clients = f" with {', '.join(ev['clients'])}" if ev["clients"] else ""
    days = baseline.observed_days if baseline else 0
    known = ", ".join(list(ev["known_places"])[:3]) or "nothing"
    parts = []
    if "outside_cloud" in ev["reasons"]:
        parts.append(f"{agent}'s {who} was used from the internet, {where}{clients} ({calls}): in {days} days "
                     f"it only ever called from inside Alibaba Cloud")
    if ev["together_with"]:
        usual = ", ".join(ev["together_with"][:3])
        what = ("its session moved mid-session" if "mid_session_change" in ev["reasons"]
                else "was used at once")
        newness = "a place new to it" if ev["new_place"] else "a known place"
        client = (f"; client {', '.join(ev['usual_clients'])} -> {', '.join(ev['clients'])}"
                  if ev["clients"] and ev["usual_clients"] and ev["clients"] != ev["usual_clients"] else "")
        parts.append(f"{agent}'s {who} {what} from {usual} and {where}, {newness} ({calls}){client}: in {days} days "
                     f"its credentials were used from {ev['places_known']} places ({known}), never these together")
    text = "; ".join(parts)
    if ev["declared"]:
        text += " (inside its declared source_ips)"
    elif not ev["learned"]:
        text += " (too little history to judge: low)"
    return text


def _short(cred: str) -> str:
    if cred.startswith("STS."):
        return f"STS session {cred[:12]}…"
    if cred.startswith("console:"):
        return "console session"
    return f"AccessKey {cred}"
