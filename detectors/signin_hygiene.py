"""signin_hygiene: console sign-ins that drop MFA - an identity that always signed in with MFA
signing in without it, and a sign-in right after someone else unbound the user's MFA device.

Whether a sign-in used MFA is ActionTrail's ``additionalEventData.mfaChecked`` (a RAM user;
``isMFAChecked`` for the root account), stored in ``mfa_authenticated`` by ingest
(``pipeline.ingest.events.signin_mfa``). The target of ``UnbindMFADevice`` /
``DeactivateMFADevice`` is the ``UserName`` of its request parameters.

What it learns (:class:`SigninProfile`, with the baselines, on the 28 days before the window):
per agent and user, its successful console sign-ins with and without MFA and the local days they
fell on.

It fires on:

* **MFA dropped**: a successful sign-in without MFA by a user whose history has at least
  ``min_signins`` (5) sign-ins on at least 3 days, every one with MFA: medium. A user who
  sometimes signs in without MFA, or has too few sign-ins, is not judged;
* **after an unbind**: a user's sign-in within ``follow_window`` (24h) after another identity
  unbound or deactivated that user's MFA device: high when the sign-in had no MFA (the device was
  removed so that someone could sign in with the password alone), medium when it had (a device was
  bound again). This needs no history: it is not a learned finding.

The sign-ins of one user within the dedup window (24h) make one finding, with the unbind (who,
when, from where) and the sign-ins' addresses and browsers. A brand-new agent (under 7 active
days) has no learned MFA habit, so only the unbind rule can raise it above low.

Known gaps: a legitimate device replacement (a lost phone: the administrator unbinds it, the user
signs in without MFA to bind a new one) looks exactly like the attack and is raised high - the
evidence says where the sign-in came from; an unbind by the user themself is not reported (it is
not "aimed at another user"); a sign-in more than ``follow_window`` after the unbind is judged only
by the learned rule; an API session (AccessKey) never signs in, so MFA on API calls is not judged;
a failed sign-in is ignored; a sign-in whose event says nothing about MFA is not judged by the
learned rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self

import pandas as pd

from detectors.base import Detector, Finding, Models, capped, group_bursts, jsonable, named_user
from models.baselines import Baseline, History, Learned
from models.sources import client_family
from pipeline.core.times import parse_duration

UNBIND_EVENTS = frozenset({"unbindmfadevice", "deactivatemfadevice"})
MIN_SIGNIN_DAYS = 3
MAX_USERS = 50  # users kept per agent (an agent is one person or a few)


@dataclass
class SigninProfile(Learned):
    """Per user of an agent: successful console sign-ins with MFA, without, and on how many local
    days. None: stored before this part existed."""

    signins: dict[str, list[int]] | None = None  # user -> [with MFA, without MFA, days]

    # per agent, user and local day: successful console sign-ins with MFA and without
    daily = """
    SELECT agent, coalesce(user_name, '') AS who, CAST(timezone({tz}, event_time) AS DATE) AS day,
           count(*) FILTER (WHERE mfa_authenticated) AS with_mfa,
           count(*) FILTER (WHERE NOT mfa_authenticated) AS without_mfa
    FROM {events} WHERE in_range AND event_name = 'ConsoleSignin' AND error_code IS NULL
    GROUP BY ALL
    """

    @classmethod
    def fit(cls, history: History) -> dict[str, Self]:
        source, params = history.part_rows(cls)
        rows = history.query(
            f"""
            WITH daily AS {source}
            SELECT agent, who, sum(with_mfa) AS signed_mfa, sum(without_mfa) AS signed_plain,
                   count(DISTINCT day) AS days
            FROM daily GROUP BY agent, who ORDER BY agent, signed_mfa + signed_plain DESC
            """,  # noqa: S608 - the source is the driver's fixed SQL; values are bound
            params)
        out = {agent: cls({}) for agent in history.agents}
        for agent, who, with_mfa, without_mfa, days in rows:
            part = out.get(agent)
            if part is not None and part.signins is not None and len(part.signins) < MAX_USERS:
                part.signins[str(who)] = [int(with_mfa), int(without_mfa), int(days)]
        return out

    def always_mfa(self, user: str, min_signins: int) -> list[int] | None:
        """The user's [with, without, days] when every sign-in of the history used MFA and there
        were enough of them to say so; else None."""
        counts = (self.signins or {}).get(user)
        if counts is None:
            return None
        with_mfa, without_mfa, days = counts
        return counts if without_mfa == 0 and with_mfa >= min_signins and days >= MIN_SIGNIN_DAYS else None


class SigninHygiene(Detector):
    id = "signin_hygiene"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "24h",
        "follow_window": "24h",  # a sign-in this soon after an unbind of the user's device follows it
        "min_signins": 5,  # sign-ins (all with MFA) before "always used MFA" is believed
    }
    columns = ("event_id", "event_time", "agent", "event_name", "error_code", "user_name", "identity_type",
               "mfa_authenticated", "source_ip", "user_agent", "request_parameters")
    parameter_events = UNBIND_EVENTS
    learns = SigninProfile

    def validate(self) -> None:
        if parse_duration(self.params["follow_window"]) <= timedelta(0):
            raise ValueError("follow_window must be positive")
        n = self.params["min_signins"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"min_signins must be a whole number, at least 1, not {n!r}")

    @property
    def lookback(self) -> timedelta:
        return max(self.dedup_window, parse_duration(self.params["follow_window"]))

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        ok = events["error_code"].isna()
        signins = events[(events["event_name"] == "ConsoleSignin").to_numpy() & ok.to_numpy()]
        if signins.empty:
            return []
        unbinds = _unbinds(events[events["event_name"].str.lower().isin(UNBIND_EVENTS).to_numpy() & ok.to_numpy()])
        follow = parse_duration(self.params["follow_window"])
        judged = []
        for row in signins.itertuples(index=False):
            user = str(row.user_name or "")
            before = [u for u in unbinds.get(user, []) if row.event_time - follow <= u["time"] <= row.event_time]
            baseline = models.baselines.get(str(row.agent))
            habit = self._habit(baseline, user)
            no_mfa = row.mfa_authenticated is False or (before and row.mfa_authenticated is not True)
            if not before and not (habit and row.mfa_authenticated is False):
                continue
            judged.append({"row": row, "unbinds": before, "habit": habit, "no_mfa": bool(no_mfa)})
        out: list[Finding] = []
        by_user: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for item in judged:
            by_user.setdefault((str(item["row"].agent), str(item["row"].user_name or "")), []).append(item)
        for (agent, user), items in by_user.items():
            for start, end in group_bursts([i["row"].event_time for i in items], self.dedup_window):
                out.append(self._finding(agent, user, items[start:end], models.baselines.get(agent)))
        return out

    def _habit(self, baseline: Baseline | None, user: str) -> list[int] | None:
        if baseline is None or not baseline.learned:
            return None
        part = baseline.part(SigninProfile)
        return part.always_mfa(user, self.params["min_signins"]) if part is not None else None

    def _finding(self, agent: str, user: str, items: list[dict[str, Any]], baseline: Baseline | None) -> Finding:
        unbinds = {u["event_id"]: u for i in items for u in i["unbinds"]}
        without = [i for i in items if i["no_mfa"]]
        habit = next((i["habit"] for i in items if i["habit"]), None)
        severity = ("high" if without else "medium") if unbinds else "medium"
        rows = [i["row"] for i in items]
        first_unbind = min((u["time"] for u in unbinds.values()), default=None)
        evidence: dict[str, Any] = {
            "user": user, "signins": len(rows), "without_mfa": len(without),
            "source_ips": capped(dict.fromkeys(str(r.source_ip) for r in rows if r.source_ip), 10),
            "browsers": capped(dict.fromkeys(str(client_family(r.user_agent)) for r in rows if r.user_agent), 5),
            "unbinds": [{"by": u["by"], "agent": u["agent"], "event": u["event"], "time": u["time"],
                         "source_ip": u["source_ip"]} for u in list(unbinds.values())[:10]],
            "history": ({"with_mfa": habit[0], "without_mfa": habit[1], "days": habit[2]} if habit else None),
            "threshold": {k: self.params[k] for k in ("follow_window", "min_signins")},
        }
        first = min([r.event_time for r in rows] + ([first_unbind] if first_unbind is not None else []))
        last = max(r.event_time for r in rows)
        ids = list(dict.fromkeys([*unbinds, *(str(r.event_id) for r in rows)]))
        return Finding(
            detector=self.id, agent=agent, severity=severity,
            score={"medium": 0.6, "high": 0.9}[severity],
            first_seen=pd.Timestamp(first).to_pydatetime(), last_seen=pd.Timestamp(last).to_pydatetime(),
            summary=_summary(agent, user, rows, without, list(unbinds.values()), habit, baseline),
            event_ids=ids, evidence=jsonable(evidence),
            dedup_key=f"signin_hygiene:{user}")


def _unbinds(df: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Per target user: the unbinds of their MFA device by another identity."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in df.itertuples(index=False):
        target = named_user(row.request_parameters)
        if not target or target == (row.user_name or ""):
            continue
        out.setdefault(target, []).append({
            "event_id": str(row.event_id), "time": row.event_time, "by": str(row.user_name or ""),
            "agent": str(row.agent), "event": str(row.event_name), "source_ip": row.source_ip})
    return out


def _summary(agent: str, user: str, rows: list[Any], without: list[dict[str, Any]], unbinds: list[dict[str, Any]],
             habit: list[int] | None, baseline: Baseline | None) -> str:
    first = rows[0]
    n = len(rows)
    signed = (f"{user} signed in to the console {'without MFA' if without else 'with MFA'} from {first.source_ip}"
              + (f" ({n} sign-ins)" if n > 1 else ""))
    parts = [f"{agent}: {signed}"]
    if unbinds:
        u = unbinds[0]
        minutes = max(0, round((first.event_time - u["time"]).total_seconds() / 60))
        parts.append(f"{minutes} min after {u['by'] or u['agent']} ran {u['event']} on {user}'s MFA device")
    if habit:
        days = baseline.observed_days if baseline else habit[2]
        parts.append(f"in {days} days all {habit[0]} of {user}'s sign-ins used MFA")
    return "; ".join(parts)
