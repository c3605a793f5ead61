"""The detector contract, the finding it returns, and the models it reads.

A detector is one small module holding one :class:`Detector` subclass: an ``id``, a default
``severity``, its tunable ``parameters`` (with defaults, overridable in the config as
``detectors: {<id>: {<param>: value}}``), the event ``columns`` it reads, a docstring saying what
it misses, and a pure ``score(events, models, now) -> list[Finding]``: no I/O, no clock. What it
learns from history beyond the shared baseline, it declares (``learns``: a
``models.baselines.Learned`` part with its own fields and fit), and so does a detector whose
findings matter more beside another detector's (``coincidence``).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from models.baselines import Baseline, Learned
from models.inventory import Inventory
from models.ram import Change, Snapshot
from models.scope import AgentScope
from pipeline.core.redact import redacted
from pipeline.core.times import parse_duration

SEVERITIES = ("low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def finding_id(detector: str, agent: str, dedup_key: str, first_seen: datetime) -> str:
    """Stable across re-runs: the same detector, agent, key and first event give the same id."""
    text = f"{detector}\0{agent}\0{dedup_key}\0{first_seen.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Finding:
    detector: str
    agent: str
    severity: str
    score: float  # 0..1
    first_seen: datetime
    last_seen: datetime
    summary: str  # one line a human understands
    event_ids: list[str]
    evidence: dict[str, Any]  # the observed value, the rule or baseline it broke, the threshold
    dedup_key: str  # what makes two findings "the same thing" within the dedup window
    id: str = ""
    status: str = "open"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        self.score = round(min(1.0, max(0.0, float(self.score))), 3)
        # evidence reaches Slack, `findings` and exports: whatever a detector put there, no secrets
        self.evidence = redacted(self.evidence)
        if not self.id:
            self.id = finding_id(self.detector, self.agent, self.dedup_key, self.first_seen)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "detector": self.detector, "agent": self.agent, "severity": self.severity,
            "score": self.score, "first_seen": self.first_seen, "last_seen": self.last_seen,
            "summary": self.summary, "event_ids": list(self.event_ids), "evidence": self.evidence,
            "status": self.status,
        }


@dataclass(frozen=True)
class Coincidence:
    """A detector's finding is raised to ``severity`` when another detector's finding about the same
    agent lies within ``window`` of it (``pipeline.detection.detect`` applies it once all detectors
    have scored), and names those findings in its evidence (``coincides_with``)."""

    window: timedelta
    severity: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"coincidence severity must be one of {', '.join(SEVERITIES)}, not {self.severity!r}")
        if self.window <= timedelta(0):
            raise ValueError(f"coincidence window must be positive, not {self.window}")


@dataclass
class Models:
    """What detectors know beyond the window's events: declared scopes and learned baselines."""

    inventory: Inventory
    scopes: dict[str, AgentScope]
    timezone: ZoneInfo
    baselines: dict[str, Baseline] = field(default_factory=dict)
    ram: Snapshot | None = None  # the newest RAM snapshot (``ram sync``), when there is one
    ram_changes: list[Change] = field(default_factory=list)  # a new snapshot's changes (the drift pass only)


class Detector(ABC):
    """Subclass once per module, implementing :meth:`score`. Parameters are validated against
    ``parameters``' keys."""

    id: ClassVar[str]
    severity: ClassVar[str]
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "60m"}
    columns: ClassVar[tuple[str, ...]] = ()
    # events (lower-case names) whose request parameters the detector reads: loading them costs a
    # parse of the raw JSON, so only these get the ``request_parameters`` column filled
    parameter_events: ClassVar[frozenset[str]] = frozenset()
    # what it learns from each agent's history beyond the shared baseline (models.baselines): its
    # part, fitted and stored by pipeline.detection.learning; read it with ``baseline.part(...)``
    learns: ClassVar[type[Learned] | None] = None

    def __init__(self, **overrides: Any):
        unknown = sorted(set(overrides) - set(self.parameters))
        if unknown:
            raise KeyError(unknown[0])
        self.params = {**self.parameters, **overrides}
        self.dedup_window = parse_duration(self.params.get("dedup_window", "60m"))
        self.validate()

    def validate(self) -> None:  # noqa: B027 - an optional hook: most detectors need no checks
        """Check parameter values; raise ValueError saying which and why (reported with the
        config key). Detectors with structured parameters override this."""

    def bind(self, config: Any) -> None:  # noqa: B027 - an optional hook
        """Learn what it needs from the pipeline config (e.g. which SLS logstores hold the trail)."""

    @property
    def lookback(self) -> timedelta:
        """How far before a chunk a detector must see to judge its first events whole."""
        return self.dedup_window

    @property
    def coincidence(self) -> Coincidence | None:
        """When this detector's findings are raised beside another detector's (None: never). A
        detector that declares one builds it from its parameters, so the config can tune it."""
        return None

    @abstractmethod
    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        """The findings among ``events`` (this detector's ``columns``), judged with ``models``."""

    def combine(self, findings: list[Finding], models: Models) -> list[Finding]:
        """Findings made from the other detectors' findings of the same events (``anomalous_behaviour``
        tells one story per agent from their weak signals); run by ``pipeline.detection.detect``
        once every detector has scored. None by default."""
        return []


def aspect(kind: str, text: str, weight: float, **figures: Any) -> dict[str, Any]:
    """One unusual aspect of an agent's behaviour, as a weak-signal finding lists it in its
    evidence (``aspects``): its kind (``hour``, ``network``, ``volume``, ``novelty``...), one line
    saying what was seen and what is usual, how much it weighs (0..1: how unusual and how much it
    matters), and the figures behind it (observed, usual, threshold). ``anomalous_behaviour``
    combines the aspects of one agent's findings close together into one story."""
    return {"aspect": kind, "text": text, "weight": round(min(1.0, max(0.0, float(weight))), 3), **figures}


def group_bursts(times: Sequence[datetime], gap: timedelta) -> list[tuple[int, int]]:
    """Split sorted times into runs whose consecutive gaps are at most ``gap``: [start, end) indexes."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(times)):
        if times[i] - times[i - 1] > gap:
            runs.append((start, i))
            start = i
    if times:
        runs.append((start, len(times)))
    return runs


def capped(items: Iterable[Any], limit: int = 20) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if len(out) >= limit:
            break
        out.append(item)
    return out


# the RPC envelope every call carries: signing and transport, nothing about what the call did
_ENVELOPE = frozenset(k.lower() for k in (
    "AcsHost", "AcsProduct", "HostId", "RequestId", "Format", "Version", "Timestamp", "AccessKeyId",
    "SignatureMethod", "SignatureVersion", "SignatureNonce", "SignatureType", "Signature", "callerBidEmail",
    "callerBid", "callerUid", "callerType", "ak_proxy", "ClientToken"))


def request_evidence(text: Any) -> Any:
    """A call's request parameters for a finding's evidence: the JSON parsed, without the RPC
    envelope (signature, timestamp, host...), with secrets redacted at any depth, by key and by
    value (``pipeline.core.redact``: ``LoginProfile.Password``, ``Body: "password=..."``). None when it
    is not JSON."""
    params = parsed_parameters(text)
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if k.lower() not in _ENVELOPE}
    return None if params is None else redacted(params)


def parsed_parameters(text: Any) -> Any:
    """A call's request parameters (the JSON text of the ``request_parameters`` column) parsed;
    None when there are none or they are not JSON."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def named_user(text: Any) -> str | None:
    """The ``UserName`` a RAM call names in its request parameters (any case of the key; None:
    none, or unreadable)."""
    params = parsed_parameters(text)
    if not isinstance(params, dict):
        return None
    for key, value in params.items():
        if str(key).lower() == "username" and value not in (None, ""):
            return str(value)
    return None


def jsonable(value: Any) -> Any:
    """Evidence must be strict JSON: numpy scalars and timestamps become plain values, a missing
    number (NaN, from a pandas gap) or an infinity becomes None."""
    return json.loads(json.dumps(_finite(value), default=_default, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.generic):
        number = value.item() if isinstance(value, np.generic) else value
        return None if isinstance(number, float) and not math.isfinite(number) else number
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "item"):
        return _finite(value.item())
    return str(value)
