"""The one harness every detector's tests run through, so each ``test_<detector>.py`` holds only
its detector's firing and non-firing examples.

An example is ActionTrail events (:class:`Trail`, or conftest's ``make_event``) by the agents of an
inventory (:func:`agent`, :func:`inventory`), ingested into a fresh store (conftest's ``store``
fixture; :func:`ingest`), then either scored by one detector on the frame ``trailwarden detect``
would load (:func:`score`: the detector's columns and request parameters, the declared scopes, the
baselines given) or run through ``run_detect`` end to end (:func:`detect`). Baselines are fitted as
``detect`` fits them (:func:`learned`), from a history ingested into a store of their own.
"""

from __future__ import annotations

import copy
import itertools
import json
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from detectors.base import Detector, Finding, Models
from models.baselines import Baseline
from models.inventory import Attributor, Inventory
from models.scope import compile_scopes
from pipeline.core.config import Config
from pipeline.detection import learning
from pipeline.detection.detect import DetectReport, load_events, run_detect
from pipeline.ingest.run import IngestReport, ingest_files
from pipeline.store.store import Store, open_store
from tests.conftest import BASE_EVENT, write_ndjson

EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))  # every plausible event
UTC_ZONE = ZoneInfo("UTC")
ACCOUNT = str(BASE_EVENT["userIdentity"]["accountId"])

# The learned-behaviour tests' calendar: 28 days of history, then the scored week, in the business
# time zone; SINCE is a Monday 00:00 local (HISTORY_DAYS run Mon 10-26 .. Sun 11-22).
TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
SINCE = datetime(2026, 11, 23, tzinfo=TZ)
UNTIL = SINCE + timedelta(days=7)
HISTORY_DAYS = [SINCE.date() - timedelta(days=28 - i) for i in range(28)]
WEEK = [SINCE.date() + timedelta(days=i) for i in range(7)]


# -- the inventory -----------------------------------------------------------------------------------
def agent(name: str, *identities: str, policies: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """An inventory entry: ``identities`` like ``ram-user:ci-deploy`` or ``role:OpsRole`` (default
    ``ram-user:<name>``), ``policies`` and any other field (``hours``, ``regions``...)."""
    return {"name": name, "purpose": "test agent", "owner": "platform-team", "environment": "production",
            "identities": list(identities) or [f"ram-user:{name}"], "policies": policies or [], **extra}


def inventory(*agents: dict[str, Any]) -> Inventory:
    return Inventory.model_validate({"agents": list(agents)})


# -- events ------------------------------------------------------------------------------------------
class Trail:
    """ActionTrail events (conftest's ``BASE_EVENT`` shape) by the agents of ``inv``, each acting as
    its first identity (a RAM user, or an assumed role's session), or by a raw identity
    (``ram-user:ops-debug``) the inventory does not know. ``batch`` keeps event ids unique across
    trails ingested into one store; ``defaults`` are ActionTrail fields every event gets."""

    def __init__(self, inv: Inventory | None = None, batch: int = 0, **defaults: Any) -> None:
        self.identities = {a.name: a.identities[0] for a in (inv.agents if inv is not None else [])}
        self.batch = batch
        self.defaults = defaults
        self.events: list[dict[str, Any]] = []
        self._who: list[str] = []

    def add(self, who: str, when: datetime, name: str = "DescribeInstances", *, error: str | None = None,
            rw: str | None = None, ip: str | None = None, ua: str | None = None, region: str | None = None,
            **fields: Any) -> dict[str, Any]:
        """One call by ``who`` at ``when`` (any time zone; stored in UTC); ``error`` makes it a refused
        call; ``rw``, ``ip``, ``ua`` and ``region`` are short for eventRW, sourceIpAddress, userAgent
        and acsRegion; other ActionTrail fields as keywords."""
        ev = copy.deepcopy(BASE_EVENT)
        ev.update(eventId=f"00000000-0000-4000-{self.batch:04d}-{len(self.events):012d}", eventName=name,
                  eventTime=when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                  userIdentity=self._identity(who), **self.defaults)
        short = {"eventRW": rw, "sourceIpAddress": ip, "userAgent": ua, "acsRegion": region}
        ev.update({k: v for k, v in short.items() if v is not None}, **fields)
        if error:
            ev["errorCode"], ev["errorMessage"] = error, "refused"
        self.events.append(ev)
        self._who.append(who)
        return ev

    def burst(self, who: str, start: datetime, n: int, every: float = 2.0, name: str = "DescribeInstances",
              **kw: Any) -> list[str]:
        """``n`` calls ``every`` seconds from ``start``: their event ids."""
        return [self.add(who, start + timedelta(seconds=every * i), name, **kw)["eventId"] for i in range(n)]

    def ids(self, who: str) -> list[str]:
        return [e["eventId"] for e, w in zip(self.events, self._who, strict=True) if w == who]

    def _identity(self, who: str) -> dict[str, Any]:
        kind, _, principal = self.identities.get(who, who).partition(":")
        if kind not in ("ram-user", "role") or not principal:
            raise ValueError(f"{who!r} is neither an agent of the trail's inventory nor ram-user:/role:NAME")
        ident = {"type": "ram-user" if kind == "ram-user" else "assumed-role", "accountId": ACCOUNT,
                 "principalId": f"2000{zlib.crc32(principal.encode())}", "userName": principal}
        if kind == "role":
            ident["userName"] = f"{principal}:i-{len(self.events)}"  # a session per call
        return ident


def ingest(store: Store, events: list[dict[str, Any]], inv: Inventory, *, now: datetime | None = None,
           whole: bool = True) -> IngestReport:
    """Ingest ``events`` as ``trailwarden ingest`` does (a file beside the store), attributed with
    ``inv``; ``whole``: every event must be stored, none quarantined."""
    path = _unique(Path(store.path).parent, "events.ndjson")
    write_ndjson(path, events)
    report = ingest_files(store, [path], Attributor(inv), now=now)
    if whole:
        assert (report.quarantined, report.new) == (0, len(events)), report
    return report


def _unique(folder: Path, name: str) -> Path:
    for n in itertools.count():
        path = folder / f"{n}-{name}"
        if not path.exists():
            return path
    raise AssertionError("unreachable")


# -- scoring -------------------------------------------------------------------------------------------
def frame(store: Store, *detectors: Detector, since: datetime = EVER[0], until: datetime = EVER[1]) -> pd.DataFrame:
    """The events of [since, until) as ``detect`` loads them for these detectors: their columns, and
    the request parameters of the events they read them for."""
    columns = list(dict.fromkeys(("event_id", "event_time", "agent", *(c for d in detectors for c in d.columns))))
    return load_events(store, columns, since, until, frozenset().union(*(d.parameter_events for d in detectors)))


def models(inv: Inventory, timezone: ZoneInfo = UTC_ZONE, baselines: Mapping[str, Baseline] | None = None) -> Models:
    return Models(inventory=inv, scopes=compile_scopes(inv), timezone=timezone, baselines=dict(baselines or {}))


def score(store: Store, detector: Detector, inv: Inventory, *, since: datetime = EVER[0],
          until: datetime = EVER[1], timezone: ZoneInfo = UTC_ZONE, baselines: Mapping[str, Baseline] | None = None,
          now: datetime | None = None, events: pd.DataFrame | None = None) -> list[Finding]:
    """``detector``'s findings on the stored events of [since, until) (or ``events``), judged with
    ``inv``'s scopes and ``baselines``, oldest first. Each is the detector's and its evidence is
    strict JSON (what Slack and ``findings --format json`` get)."""
    df = frame(store, detector, since=since, until=until) if events is None else events
    found = detector.score(df, models(inv, timezone, baselines), now or until)
    for f in found:
        assert f.detector == detector.id
        json.dumps(f.evidence, allow_nan=False)
    return sorted(found, key=lambda f: (f.first_seen, f.agent, f.dedup_key))


def detect(store: Store, inv: Inventory, since: datetime, until: datetime, *, timezone: str = "UTC",
           detectors: dict[str, dict[str, Any]] | None = None) -> DetectReport:
    """``run_detect`` over [since, until) with a config of this time zone and detector overrides."""
    return run_detect(store, Config(timezone=timezone, detectors=detectors or {}), inv, since=since, until=until)


def learned(folder: Path, events: Iterable[dict[str, Any]], inv: Inventory, end: datetime, timezone: str, *,
            now: datetime | None = None) -> dict[str, Baseline]:
    """The baselines ``detect`` would fit on the 28 days before ``end`` from this history (ingested
    into a store of its own in ``folder``)."""
    with open_store(folder / "history.duckdb") as store:
        ingest(store, list(events), inv, now=now)
        return learning.fit(store, end, timezone)
