"""`trailwarden accounts` and `accounts sync`: the organisation's accounts, as the config declares
them, as the Resource Directory lists them, and as the store's events show them.

``accounts sync`` reads the directory (:mod:`pipeline.ram.directory`), stores the sync and compares
it with the config: the accounts configured (with their alias), those the directory lists and the
config does not (with a ready-to-paste ``accounts:`` snippet whose aliases are proposed from the
display names) and configured accounts the directory does not list.

``accounts`` lists the configured accounts with what the last sync said of them, the last event
per account in the store and its events in the last 30 days of the store (``recipient_account_id``,
else ``account_id``: where the call happened).
An account whose last event is more than :data:`GAP` older than the store's newest event is a gap:
its trail stopped arriving while others kept coming. What it misses: a store nobody ingests any more
(every account equally old) is not a gap here; ``status`` shows the sources' lag.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.accounts import Accounts
from pipeline.core.config import Config
from pipeline.core.inert import one_line
from pipeline.ram.directory import (
    PAGE,
    Directory,
    DirectoryApi,
    connect_directory,
    last_sync,
    read_directory,
    save_directory,
)
from pipeline.store.store import Store, first_row

GAP = timedelta(hours=24)
RECENT = timedelta(days=30)  # events are counted over this long, up to the store's newest event


@dataclass
class SyncResult:
    """What one ``accounts sync`` found, compared with the config."""

    sync: int
    directory: Directory
    accounts: list[dict[str, Any]]
    not_configured: list[dict[str, Any]]
    not_in_directory: list[dict[str, Any]]
    snippet: str
    calls: int = 0
    throttled: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = self.directory
        return {"sync": self.sync, "taken_at": d.taken_at,
                "directory": {"id": d.id, "master_account_id": d.master_account_id,
                              "master_account_name": d.master_account_name},
                "accounts": self.accounts, "not_configured": self.not_configured,
                "not_in_directory": self.not_in_directory, "snippet": self.snippet, "calls": self.calls,
                "throttled": self.throttled, "seconds": self.seconds}


def sync_accounts(store: Store, config: Config, *, api: DirectoryApi | None = None, page: int = PAGE) -> SyncResult:
    """Read the Resource Directory (through ``api``, else a client for the config's
    ``resource_directory.endpoint``), store the sync, and compare it with the config."""
    api = api or connect_directory(config.resource_directory.endpoint)
    started = time.monotonic()
    directory = read_directory(api, page=page)
    seconds = round(time.monotonic() - started, 3)
    sync_id = save_directory(store, directory, calls=api.calls, seconds=seconds)
    result = compare(sync_id, directory, Accounts(config.accounts or []))
    result.calls, result.throttled, result.seconds = api.calls, api.throttled, seconds
    return result


def compare(sync_id: int, directory: Directory, configured: Accounts) -> SyncResult:
    """The directory's accounts beside the configured ones."""
    listed = {a.id for a in directory.accounts}
    rows = [{"id": a.id, "alias": configured.alias(a.id), "configured": configured.alias(a.id) is not None,
             "display_name": a.display_name, "type": a.type, "status": a.status, "join_method": a.join_method,
             "join_time": a.join_time, "path": a.path} for a in directory.accounts]
    taken = set(configured.aliases)
    new = [{"id": a.id, "display_name": a.display_name, "proposed_alias": propose_alias(a.display_name, a.id, taken)}
           for a in directory.accounts if configured.alias(a.id) is None]
    missing = [{"id": i, "alias": alias} for i, alias in configured if i not in listed]
    return SyncResult(sync_id, directory, rows, new, missing, snippet(configured, new, {m["id"] for m in missing}))


def propose_alias(display_name: str | None, account_id: str, taken: set[str]) -> str:
    """``Staging (EU)`` -> ``staging-eu``; a name with nothing usable (all digits, another script)
    -> ``account-<last 4 digits>``; ``-2``, ``-3``... when already taken. Adds it to ``taken``."""
    base = re.sub(r"[^a-z0-9]+", "-", (display_name or "").lower()).strip("-")[:32].strip("-")
    if not base or base.isdigit():
        base = f"account-{account_id[-4:]}"
    alias, n = base, 2
    while alias in taken:
        alias, n = f"{base}-{n}", n + 1
    taken.add(alias)
    return alias


def snippet(configured: Accounts, new: list[dict[str, Any]], not_listed: set[str]) -> str:
    """The whole ``accounts:`` section: what is configured, then what the directory adds (its
    display name as a comment, made one inert line), ready to replace the config's."""
    lines = ["accounts:"]
    for account_id, alias in configured:
        note = "  # not in the Resource Directory" if account_id in not_listed else ""
        lines.append(f'  - {{id: "{account_id}", alias: {alias}}}{note}')
    for item in new:
        name = one_line(item["display_name"] or "").replace("#", "")[:60]
        lines.append(f'  - {{id: "{item["id"]}", alias: {item["proposed_alias"]}}}  # new: {name}'.rstrip())
    return "\n".join(lines)


@dataclass
class AccountsView:
    """The ``accounts`` listing."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    synced_at: datetime | None = None
    newest_event: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"synced_at": self.synced_at, "newest_event": self.newest_event, "accounts": self.rows}


def list_accounts(store: Store | None, config: Config) -> AccountsView:
    """The configured accounts (then accounts seen in recent events but not configured), each with
    what the last sync said of it, its last event and its events in the :data:`RECENT` days up to
    the store's newest event."""
    configured = Accounts(config.accounts or [])
    synced = last_sync(store) if store is not None else None
    members = {a.id: a for a in synced[1].accounts} if synced else {}
    newest, seen = account_activity(store, [i for i, _ in configured]) if store is not None else (None, {})
    ids = [i for i, _ in configured] + sorted(i for i in seen if configured.alias(i) is None)
    rows = []
    for account_id in ids:
        last, events = seen.get(account_id, (None, 0))
        member = members.get(account_id)
        rows.append({"alias": configured.alias(account_id), "id": account_id,
                     "configured": configured.alias(account_id) is not None,
                     "in_directory": (member is not None) if synced else None,
                     "display_name": member.display_name if member else None, "last_event": last,
                     "events_30d": events, "gap": _gap(last, newest)})
    return AccountsView(rows, synced[1].taken_at if synced else None, newest)


def _gap(last: datetime | None, newest: datetime | None) -> str | None:
    """Why the account's trail looks stopped, or None."""
    if newest is None:
        return None
    if last is None:
        return "no events"
    behind = newest - last
    if behind <= GAP:
        return None
    return f"stopped: last event {_span(behind)} before the newest in the store"


def _span(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h"


def account_activity(store: Store, wanted: list[str]) -> tuple[datetime | None, dict[str, tuple[datetime, int]]]:
    """The store's newest event time, and account id -> (its last event, its events in the
    :data:`RECENT` days up to the newest), counted where each call happened
    (``recipient_account_id``, else the caller's ``account_id``).

    One pass over the recent events (DuckDB skips older row groups by their time ranges), so the
    cost follows the last month, not the stored history; only a ``wanted`` account with no recent
    event is looked for further back (its last event is what a responder asks: when did it stop?)."""
    row = first_row(store.con.execute("SELECT max(event_time) FROM events"))
    newest = row[0] if row else None
    if newest is None:
        return None, {}
    since = newest - RECENT
    found = {str(r[0]): (r[1], int(r[2])) for r in store.con.execute(
        "SELECT coalesce(recipient_account_id, account_id) AS acct, max(event_time), count(*) FROM events "
        "WHERE event_time >= ? AND acct IS NOT NULL GROUP BY 1", [since]).fetchall()}
    missing = [i for i in wanted if i not in found]
    if missing:
        found.update({str(r[0]): (r[1], 0) for r in store.con.execute(
            "SELECT coalesce(recipient_account_id, account_id) AS acct, max(event_time) FROM events "
            "WHERE event_time < ? AND acct IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1", [since, missing]).fetchall()})
    return newest, found
