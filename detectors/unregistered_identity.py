"""unregistered_identity: activity by an identity that no agent in the inventory owns (the
"identity graveyard": old users, forgotten keys, shadow automation), and any use of the root
account.

One finding per identity per UTC day, saying what it did: its APIs, calls, failures, source IPs.
The root account is critical (it is unconstrained by RAM); another identity is medium, high when
it wrote successfully. Alibaba Cloud's own service identities (``system``, ``AliyunServiceEvent``)
are not agents and are ignored.

Known gaps: an identity that is registered but impersonated is the other detectors' business; a
role session used through an AccessKey that the inventory lists under another agent is attributed
to that agent, not reported here.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from detectors.base import Detector, Finding, Models, capped, jsonable


class UnregisteredIdentity(Detector):
    id = "unregistered_identity"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "24h", "ignore": []}  # identities to leave alone
    columns = ("event_id", "event_time", "agent", "identity", "identity_type", "event_type", "event_name",
               "event_rw", "error_code", "source_ip", "user_agent")

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        registered = {a.name for a in models.inventory.agents}
        ignored = set(self.params["ignore"])
        mask = (~events["agent"].isin(list(registered | ignored))
                & events["identity_type"].ne("system") & events["event_type"].ne("AliyunServiceEvent"))
        rows = events[mask.fillna(False).to_numpy()]
        if rows.empty:
            return []
        day = rows["event_time"].dt.strftime("%Y-%m-%d")
        out = []
        for (agent, when), group in rows.groupby(["agent", day], sort=False):
            out.append(self._finding(str(agent), str(when), group))
        return out

    def _finding(self, agent: str, day: str, group: pd.DataFrame) -> Finding:
        root = bool(group["identity_type"].eq("root-account").any())
        ok = group["error_code"].isna()
        wrote = bool((ok & group["event_rw"].eq("Write")).any())
        severity = "critical" if root else "high" if wrote else "medium"
        apis = Counter(group["event_name"].dropna())
        evidence = {"identity": agent, "day": day, "calls": len(group), "failed": int((~ok).sum()),
                    "wrote": wrote, "apis": dict(apis.most_common(10)),
                    "source_ips": capped(dict.fromkeys(group["source_ip"].dropna()), 10),
                    "user_agents": capped(dict.fromkeys(group["user_agent"].dropna()), 5),
                    "rule": "every identity acting on the account belongs to an inventory agent"}
        what = ", ".join(f"{n}x {api}" if n > 1 else api for api, n in apis.most_common(4))
        who = "the root account" if root else f"{agent}, which is in no agent of the inventory,"
        return Finding(
            detector=self.id, agent=agent, severity=severity, score={"critical": 0.95, "high": 0.75}.get(severity, 0.5),
            first_seen=group["event_time"].iloc[0].to_pydatetime(), last_seen=group["event_time"].iloc[-1].to_pydatetime(),
            summary=f"{who} made {len(group)} call{'s' if len(group) != 1 else ''} on {day}: {what}",
            event_ids=list(group["event_id"]), evidence=jsonable(evidence), dedup_key=f"unregistered:{day}",
        )
