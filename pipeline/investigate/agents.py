"""``trailwarden agents``: the inventory beside what the store knows about each agent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.inventory import Inventory
from pipeline.core.times import utcnow
from pipeline.store.store import Store

COLUMNS = ["agent", "owner", "environment", "purpose", "identities", "last_activity", "events_30d",
           "open_findings", "expires", "review_by", "flags"]
STALE_DAYS = 90


def agent_rows(store: Store | None, inventory: Inventory,
               reviews: dict[str, str] | None = None) -> tuple[list[str], list[list[Any]]]:
    """One row per inventory agent, then per unregistered identity seen. Without a store yet
    (``None``) the inventory alone: no activity, every agent never seen. ``identities`` and
    ``flags`` are lists (JSON arrays); :func:`joined` makes them text for a table or CSV.
    ``reviews`` (each agent's ``review`` verdict) adds the ``review`` column."""
    now = utcnow()
    activity, open_findings = _activity(store, now) if store is not None else ({}, {})
    rows: list[list[Any]] = []
    extra = (lambda name: [reviews.get(name)]) if reviews is not None else (lambda name: [])
    for agent in inventory.agents:
        last, recent = activity.get(agent.name, (None, 0))
        rows.append([agent.name, agent.owner, agent.environment, agent.purpose, list(agent.identities),
                     last, recent, open_findings.get(agent.name, 0), agent.expires, agent.review_by,
                     _flags(agent.expires, agent.review_by, last, now), *extra(agent.name)])
    registered = {a.name for a in inventory.agents}
    for name, (last, recent) in sorted(activity.items()):
        if name not in registered:
            rows.append([name, None, None, None, [name], last, recent, open_findings.get(name, 0), None, None,
                         ["unregistered"], *extra(name)])
    return (COLUMNS if reviews is None else [*COLUMNS, "review"]), rows


def joined(rows: list[list[Any]], sep: str) -> list[list[Any]]:
    """The rows with their list cells joined by ``sep`` (", " in a table, "; " in CSV)."""
    return [[sep.join(v) if isinstance(v, list) else v for v in row] for row in rows]


def _activity(store: Store, now: datetime) -> tuple[dict[str, tuple[Any, int]], dict[str, int]]:
    activity = {a: (last, n) for a, last, n in store.con.execute(
        "SELECT agent, max(event_time), count(*) FILTER (WHERE event_time >= ? - INTERVAL 30 DAY) "
        "FROM events GROUP BY agent", [now]).fetchall()}
    open_findings = dict(store.con.execute(
        "SELECT agent, count(*) FROM findings WHERE status = 'open' GROUP BY agent").fetchall())
    return activity, open_findings


def _flags(expires: datetime | None, review_by: Any, last: datetime | None, now: datetime) -> list[str]:
    flags = []
    if expires and expires <= now:
        flags.append("expired")
    if review_by and review_by <= now.date():
        flags.append("review overdue")
    if last is None:
        flags.append("never seen")
    elif (now - last).days >= STALE_DAYS:
        flags.append(f"idle {STALE_DAYS}d+")
    return flags


def known_agents(store: Store, inventory: Inventory) -> set[str]:
    """Inventory agents and every agent value in the store (raw identities of unregistered ones)."""
    known = {a.name for a in inventory.agents}
    for table in ("events", "findings"):
        known.update(r[0] for r in store.con.execute(f"SELECT DISTINCT agent FROM {table}").fetchall())  # noqa: S608
    return known


def has_events(store: Store, agent: str) -> bool:
    """Whether the store holds any event of ``agent``."""
    return bool(store.con.execute("SELECT 1 FROM events WHERE agent = ? LIMIT 1", [agent]).fetchall())
