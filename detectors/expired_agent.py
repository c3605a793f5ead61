"""expired_agent: an agent used after its ``expires`` (time-bound access: vendors, contractors,
break-glass grants).

One finding per agent per UTC day of use after expiry: its calls, APIs, source IPs, and how long
ago the access ended. Severity high; critical when it wrote successfully. (``trailwarden agents``
also flags agents past ``review_by`` and agents idle for 90 days.)

Known gaps: only the inventory's ``expires`` is checked, not whether the RAM user or its keys
were actually disabled; an agent whose identities were reused by a new owner still counts as the
old agent until the inventory says otherwise.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from detectors.base import Detector, Finding, Models, capped, jsonable


class ExpiredAgent(Detector):
    id = "expired_agent"
    severity = "high"
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "24h"}
    columns = ("event_id", "event_time", "agent", "event_name", "event_rw", "error_code", "source_ip")

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        out: list[Finding] = []
        expiring = {a.name: a.expires for a in models.inventory.agents if a.expires is not None}
        for agent, expires in expiring.items():
            rows = events[(events["agent"].eq(agent) & (events["event_time"] >= expires)).to_numpy()]
            if rows.empty:
                continue
            for day, group in rows.groupby(rows["event_time"].dt.strftime("%Y-%m-%d"), sort=False):
                out.append(self._finding(agent, expires, str(day), group))
        return out

    def _finding(self, agent: str, expires: datetime, day: str, group: pd.DataFrame) -> Finding:
        ok = group["error_code"].isna()
        wrote = bool((ok & group["event_rw"].eq("Write")).any())
        first = group["event_time"].iloc[0].to_pydatetime()
        after = first - expires
        apis = Counter(group["event_name"].dropna())
        evidence = {"expires": expires, "days_after_expiry": round(after.total_seconds() / 86400, 1),
                    "calls": len(group), "succeeded": int(ok.sum()), "wrote": wrote,
                    "apis": dict(apis.most_common(10)),
                    "source_ips": capped(dict.fromkeys(group["source_ip"].dropna()), 10),
                    "rule": "an agent's access ends at its `expires`"}
        return Finding(
            detector=self.id, agent=agent, severity="critical" if wrote else "high", score=0.9 if wrote else 0.8,
            first_seen=first, last_seen=group["event_time"].iloc[-1].to_pydatetime(),
            summary=(f"{agent} was used {after.days} days after its access expired on {expires:%Y-%m-%d}: "
                     f"{len(group)} call{'s' if len(group) != 1 else ''} ({int(ok.sum())} succeeded)"),
            event_ids=list(group["event_id"]), evidence=jsonable(evidence), dedup_key=f"expired:{day}",
        )
