"""``trailwarden agents``: the inventory beside what the store knows about each agent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.accounts import Accounts
from models.inventory import Inventory
from pipeline.core.times import utcnow
from pipeline.store.store import Store

COLUMNS = ["agent", "owner", "environment", "purpose", "identities", "last_activity", "events_30d",
           "open_findings", "expires", "review_by", "flags"]
STALE_DAYS = 90


def agent_rows(store: Store | None, inventory: Inventory, reviews: dict[str, str] | None = None,
               accounts: Accounts | None = None) -> tuple[list[str], list[list[Any]]]:
    """One row per inventory agent, then per unregistered identity seen. Without a store yet
    (``None``) the inventory alone: no activity, every agent never seen. ``identities`` and
    ``flags`` are lists (JSON arrays); :func:`joined` makes them text for a table or CSV.
    ``reviews`` (each agent's ``review`` verdict) adds the ``review`` column. With the config's
    ``accounts`` (more than one), an ``accounts`` column (each agent's by alias; ``any`` without
    ``accounts:``) follows ``identities``, and an unregistered identity is shown with its home
    account (``ram-user:ops-debug@prod``), one row per home account it was seen in."""
    now = utcnow()
    several = accounts is not None and accounts.several
    activity, open_findings = _activity(store, now) if store is not None else ({}, {})
    rows: list[list[Any]] = []
    extra = (lambda name: [reviews.get(name)]) if reviews is not None else (lambda name: [])
    where: Any = (lambda names: [names]) if several else (lambda names: [])
    for agent in inventory.agents:
        last, recent = activity.get(agent.name, (None, 0))
        bound = [accounts.label(a) for a in agent.accounts] if accounts and agent.accounts else ["any"]
        rows.append([agent.name, agent.owner, agent.environment, agent.purpose, list(agent.identities),
                     *where(bound), last, recent, open_findings.get(agent.name, 0), agent.expires, agent.review_by,
                     _flags(agent.expires, agent.review_by, last, now), *extra(agent.name)])
    registered = {a.name for a in inventory.agents}
    unregistered = {name: value for name, value in activity.items() if name not in registered}
    if several and store is not None and accounts is not None:
        for name, home, last, recent, opened in _unregistered_by_home(store, sorted(unregistered), now):
            shown = accounts.identity(name, home)
            rows.append([shown, None, None, None, [shown], [accounts.label(home)], last, recent,
                         opened, None, None, ["unregistered"], *extra(name)])
    else:
        for name, (last, recent) in sorted(unregistered.items()):
            rows.append([name, None, None, None, [name], last, recent, open_findings.get(name, 0), None, None,
                         ["unregistered"], *extra(name)])
    columns = [*COLUMNS[:5], *(["accounts"] if several else []), *COLUMNS[5:]]
    return (columns if reviews is None else [*columns, "review"]), rows


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


def _unregistered_by_home(store: Store, names: list[str], now: datetime
                          ) -> list[tuple[str, str | None, Any, int, int]]:
    """Each unregistered identity per home account (``userIdentity.accountId``) it was seen in:
    its last activity, its events in 30 days and its open findings (those whose events' home
    account it is): the same name in two accounts is two identities."""
    if not names:
        return []
    opened = {(a, h): int(n) for a, h, n in store.con.execute(
        "SELECT agent, home_account, count(*) FROM findings WHERE status = 'open' "
        "AND agent IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL", [names]).fetchall()}
    return [(str(a), h, last, int(n), opened.get((a, h), 0)) for a, h, last, n in store.con.execute(
        "SELECT agent, account_id, max(event_time), count(*) FILTER (WHERE event_time >= ? - INTERVAL 30 DAY) "
        "FROM events WHERE agent IN (SELECT unnest(?::VARCHAR[])) GROUP BY agent, account_id "
        "ORDER BY agent, account_id NULLS LAST", [now, names]).fetchall()]


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
