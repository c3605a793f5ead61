"""anomalous_behaviour: one story per agent. The learned-behaviour detectors (``odd_hours``,
``new_source``, ``volume``, ``novelty``, ``enumeration``) report weak signals: each finding lists
the unusual *aspects* it saw (``detectors.base.aspect``: an hour, a network, a client, a volume,
something new, a sweep), with the agent's baseline and a weight. This detector scores no events of
its own: once every detector has scored, it gathers each agent's weak findings that lie within
``window`` (1h) of each other and, when they show at least ``min_aspects`` (2) different kinds of
aspect, makes one ranked finding of them: every aspect listed with its baseline, the strongest
first, and a score that is the sum of the strongest weight of each kind.

Severity: medium from ``medium_at`` (0.9) total weight, high from ``high_at`` (1.4): a stolen key
that reads a never-touched bucket (novelty 0.3) ten times more than anything usual (volume ~0.6)
from a never-seen network (0.35) and client (0.3) is high; an on-call night at 02:00 from home (an
hour 0.3, a network 0.35) stays below medium, as does anything the inventory declares (a declared
region or network weighs 0.1). Below ``medium_at`` nothing is made: the weak findings stay low.
The findings a story is made of are named in its evidence (``findings``) and each names the story
(``story``); a medium one among them is lowered to low, so the story is the one finding that is
alerted (a high one, e.g. ``new_source`` raised beside ``out_of_scope``, is kept).

An agent without a learned baseline (under 7 active days, ``models.baselines.MIN_ACTIVE_DAYS``)
gets no story: its normal is not known, so its weak signals stay low.

Known gaps: only the aspects of one scoring chunk (a day or more) are combined, and only those
within ``window`` of each other: a slow attack spreading its signals over a day (a new network in
the morning, the bulk read at night) is two weak findings; the weights are judgement, set so no
single weak signal and no pair of the weakest reaches medium; the strong detectors
(``out_of_scope``, ``failure_storm``, ``privilege_escalation``...) raise on their own and are not
part of a story.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from detectors.base import Detector, Finding, Models, capped, jsonable, severity_rank
from pipeline.core.times import parse_duration


class AnomalousBehaviour(Detector):
    id = "anomalous_behaviour"
    severity = "medium"
    parameters: ClassVar[dict[str, Any]] = {
        "dedup_window": "2h",
        "window": "1h",  # weak findings of an agent this close together tell one story
        "min_aspects": 2,  # different kinds of aspect a story needs
        "medium_at": 0.9,  # total weight (the strongest of each kind, summed)
        "high_at": 1.4,
    }
    columns = ("event_id", "event_time", "agent")

    def validate(self) -> None:
        parse_duration(self.params["window"])
        for key in ("min_aspects", "medium_at", "high_at"):
            value = self.params[key]
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{key} must be a positive number, not {value!r}")
        if self.params["high_at"] < self.params["medium_at"]:
            raise ValueError("high_at must be at least medium_at")

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        """Nothing of its own: see :meth:`combine`."""
        return []

    def combine(self, findings: list[Finding], models: Models) -> list[Finding]:
        window = parse_duration(self.params["window"])
        by_agent: dict[str, list[Finding]] = {}
        for f in findings:
            if f.detector != self.id and f.evidence.get("aspects"):
                by_agent.setdefault(f.agent, []).append(f)
        out = []
        for agent, weak in by_agent.items():
            baseline = models.baselines.get(agent)
            if baseline is None or not baseline.learned:
                continue
            weak.sort(key=lambda f: (f.first_seen, f.detector, f.id))
            group: list[Finding] = []
            for f in weak:
                if group and f.first_seen > max(g.last_seen for g in group) + window:
                    out.extend(self._story(agent, group))
                    group = []
                group.append(f)
            out.extend(self._story(agent, group))
        return out

    def _story(self, agent: str, group: list[Finding]) -> list[Finding]:
        strongest: dict[str, dict[str, Any]] = {}
        for f in group:
            for a in f.evidence["aspects"]:
                kind = str(a.get("aspect"))
                if kind not in strongest or float(a.get("weight", 0)) > float(strongest[kind].get("weight", 0)):
                    strongest[kind] = {**a, "detector": f.detector, "finding": f.id}
        total = sum(float(a.get("weight", 0)) for a in strongest.values())
        if len(strongest) < self.params["min_aspects"] or total < self.params["medium_at"]:
            return []
        severity = "high" if total >= self.params["high_at"] else "medium"
        ranked = sorted(strongest.values(), key=lambda a: (-float(a.get("weight", 0)), str(a["aspect"])))
        first, last = min(f.first_seen for f in group), max(f.last_seen for f in group)
        minutes = max(1, round((last - first).total_seconds() / 60))
        said = "; ".join(f"{a['aspect']}: {a['text']}" for a in ranked)
        ids = list(dict.fromkeys(e for f in group for e in f.event_ids))
        story = Finding(
            detector=self.id, agent=agent, severity=severity, score=min(1.0, 0.4 + total / 3),
            first_seen=first, last_seen=last,
            summary=f"{agent}: {len(ranked)} unusual aspects within {minutes} minutes (weight {total:.2f}) - {said}",
            event_ids=ids,
            evidence=jsonable({
                "weight": round(total, 3), "aspects": ranked,
                "findings": capped(({"detector": f.detector, "id": f.id, "severity": f.severity} for f in group), 20),
                "threshold": {k: self.params[k] for k in ("window", "min_aspects", "medium_at", "high_at")}}),
            dedup_key="story",
        )
        for f in group:  # folded into the story: it is the one alerted
            f.evidence["story"] = story.id
            if severity_rank(f.severity) == severity_rank("medium"):
                f.severity = "low"
        return [story]
