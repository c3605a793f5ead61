"""audit_tampering: an agent stops, deletes or weakens the audit trail or where it is delivered.

Fires on ActionTrail ``StopLogging``, ``DeleteTrail`` and ``UpdateTrail``; on deleting or
shrinking the trail's SLS logstore or project (``DeleteLogStore``, ``DeleteProject``,
``UpdateLogStore`` - for the logstores and projects of the configured SLS sources, and any named
``actiontrail_*``); and on deleting an OSS bucket that receives the trail (named in
``delivery_buckets``, or seen as ``OssBucketName`` in a trail call). It fires whatever the agent's
declared scope says: an administrator who stops logging is exactly what to look at. Severity
critical; high for an attempt that was refused. The calls of one agent and one action within the
dedup window make one finding.

Known gaps: delivery to a bucket or logstore in another account is not followed; deleting the OSS
objects (not the bucket), changing a bucket's lifecycle, or revoking the trail's RAM role weakens
the trail without these names; ``UpdateTrail`` is flagged whatever it changed (the request
parameters are in the evidence for a human to judge).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from detectors.base import (
    Detector,
    Finding,
    Models,
    capped,
    group_bursts,
    jsonable,
    request_evidence,
)

TRAIL_CALLS = {"stoplogging": "stopped the audit trail", "deletetrail": "deleted the audit trail",
               "updatetrail": "changed the audit trail's configuration"}
LOG_CALLS = {"deletelogstore": "deleted an SLS logstore", "deleteproject": "deleted an SLS project",
             "updatelogstore": "changed an SLS logstore (retention?)"}


class AuditTampering(Detector):
    id = "audit_tampering"
    severity = "critical"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "60m",
        "delivery_buckets": [],  # OSS buckets the trail delivers to
        "log_targets": [],  # SLS projects/logstores that hold the trail (added from the config's sources)
    }
    columns = ("event_id", "event_time", "agent", "event_name", "service_name", "error_code", "source_ip",
               "referenced_resources", "resource_name", "request_parameters")
    parameter_events = frozenset([*TRAIL_CALLS, *LOG_CALLS, "deletebucket", "createtrail"])

    def bind(self, config: Any) -> None:
        targets = set(self.params["log_targets"])
        for src in getattr(config, "sources", []):
            if getattr(src, "type", None) == "sls":
                targets.update((src.project, src.logstore))
        self.params["log_targets"] = sorted(targets)

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        names = events["event_name"].str.lower()
        service = events["service_name"].str.lower()
        trail = names.isin(list(TRAIL_CALLS)) & service.eq("actiontrail")
        logs = names.isin(list(LOG_CALLS)) & service.isin(["sls", "log"])
        buckets = names.eq("deletebucket") & service.eq("oss")
        candidates = events[(trail | logs | buckets).fillna(False).to_numpy()]
        if candidates.empty:
            return []
        delivery = set(self.params["delivery_buckets"]) | _trail_buckets(events[trail.fillna(False).to_numpy()])
        hits = candidates[[self._is_tampering(row, delivery) for row in candidates.itertuples(index=False)]]
        out: list[Finding] = []
        for (agent, name), rows in hits.groupby(["agent", hits["event_name"].str.lower()], sort=False):
            for start, end in group_bursts(list(rows["event_time"]), self.dedup_window):
                out.append(self._finding(str(agent), str(name), rows.iloc[start:end]))
        return out

    def _is_tampering(self, row: Any, delivery: set[str]) -> bool:
        name = str(row.event_name).lower()
        if name in TRAIL_CALLS:
            return True
        targets = _targets(row)
        if name in LOG_CALLS:
            watched = set(self.params["log_targets"])
            return any(t in watched or t.lower().startswith("actiontrail") for t in targets)
        return bool(targets & delivery) or any("actiontrail" in t.lower() for t in targets)

    def _finding(self, agent: str, name: str, burst: pd.DataFrame) -> Finding:
        refused = burst["error_code"].notna()
        severity = "high" if refused.all() else "critical"
        what = {**TRAIL_CALLS, **LOG_CALLS}.get(name, "deleted an OSS bucket the trail delivers to")
        targets = sorted(set().union(*(_targets(r) for r in burst.itertuples(index=False))))
        params = [request_evidence(p) for p in burst["request_parameters"].dropna()][:3]
        evidence = {"action": str(burst["event_name"].iloc[0]), "count": len(burst),
                    "succeeded": int((~refused).sum()), "targets": capped(targets, 10),
                    "error_codes": dict(Counter(burst["error_code"].dropna())),
                    "source_ips": capped(dict.fromkeys(burst["source_ip"].dropna()), 5),
                    "request_parameters": params, "rule": "the audit trail must not be stopped or weakened"}
        outcome = "and it worked" if not refused.all() else "but it was refused"
        target = f" ({', '.join(targets[:3])})" if targets else ""
        return Finding(
            detector=self.id, agent=agent, severity=severity, score=0.98 if severity == "critical" else 0.8,
            first_seen=burst["event_time"].iloc[0].to_pydatetime(), last_seen=burst["event_time"].iloc[-1].to_pydatetime(),
            summary=f"{agent} {what}{target} {outcome}", event_ids=list(burst["event_id"]),
            evidence=jsonable(evidence), dedup_key=f"tamper:{name}",
        )


def _targets(row: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(row.referenced_resources, str):
        try:
            for names in json.loads(row.referenced_resources).values():
                out.update(str(n) for n in names)
        except (ValueError, AttributeError):
            pass
    if isinstance(row.resource_name, str) and row.resource_name:
        out.add(row.resource_name)
    if isinstance(row.request_parameters, str):
        try:
            params = json.loads(row.request_parameters)
        except ValueError:
            params = {}
        if isinstance(params, dict):
            for key in ("Name", "BucketName", "bucketName", "ProjectName", "projectName", "LogstoreName",
                        "logstoreName", "trailName", "TrailName", "name"):
                if isinstance(params.get(key), str):
                    out.add(params[key])
    return out


def _trail_buckets(trail_events: pd.DataFrame) -> set[str]:
    out: set[str] = set()
    for text in trail_events["request_parameters"].dropna():
        try:
            params = json.loads(text)
        except ValueError:
            continue
        if isinstance(params, dict) and isinstance(params.get("OssBucketName"), str):
            out.add(params["OssBucketName"])
    return out
