"""Keep the stored ``agent`` column in step with the inventory.

Events are attributed when they are ingested. When the inventory changes (a new agent, an identity
moved, an AccessKey added), the events already stored are re-attributed once, the next time a
command that writes runs with the new inventory: a fingerprint of the identity map is kept in
``pipeline_state``. An inventory that would strip most events of their agents is refused first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from models.inventory import Inventory
from pipeline.core.errors import UsageError
from pipeline.store.store import Store, first_row

STATE_KEY = "inventory.fingerprint"
STALE_NOTE = ("note: the inventory changed since events were attributed; run `trailwarden detect` "
              "(or any ingest) to re-attribute them")


def attribution_is_stale(store: Store, inventory: Inventory) -> bool:
    """The stored events were attributed with another inventory: until a writing command
    re-attributes them, read-only commands show them under their old agents."""
    return store.read_state(STATE_KEY) not in (None, inventory.fingerprint())


ORPHAN_LIMIT = 0.5  # a new inventory may leave at most this share of attributed events agentless


@dataclass
class Orphans:
    """What a new inventory would take away: stored events attributed to an agent today that it
    attributes to no agent (their raw identity), per agent, and how many are attributed at all."""

    attributed: int
    lost: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.lost.values())

    def too_many(self, inventory: Inventory) -> bool:
        if not self.total:
            return False
        return not inventory.agents or self.total > ORPHAN_LIMIT * self.attributed


def reattribute_if_changed(store: Store, inventory: Inventory, *, allow_orphans: bool = False,
                           source: str | None = None, why: str | None = None) -> int | None:
    """Re-attribute stored events if the inventory changed since last time; return how many
    events changed agent, or None when the inventory is unchanged.

    An inventory that is empty or absent, or that would leave most attributed events with no agent
    (a missing or wrong config: a cron job started in another directory), is refused with what it
    would change, before anything is written, unless ``allow_orphans`` (``--reattribute``).
    ``source`` names where the inventory came from, and ``why`` why there is none, for that message."""
    fingerprint = inventory.fingerprint()
    if store.read_state(STATE_KEY) == fingerprint:
        return None
    if not allow_orphans:
        orphans = would_orphan(store, inventory)
        if orphans.too_many(inventory):
            raise UsageError(refusal(orphans, inventory, source, why))
    changed = reattribute(store, inventory)
    store.write_state(STATE_KEY, fingerprint)
    return changed


def refusal(orphans: Orphans, inventory: Inventory, source: str | None, why: str | None = None) -> str:
    """One line: what the inventory would change, and how to go on."""
    named = sorted(orphans.lost.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{agent} ({n:,})" for agent, n in named[:5]) + (
        f" and {len(named) - 5} more" if len(named) > 5 else "")
    what = (f"the inventory {source} has no agents" if source and not inventory.agents
            else f"the inventory {source}" if source
            else f"no inventory is configured ({why})" if why else "no inventory is configured")
    return (f"refusing to re-attribute the store: {what}; {orphans.total:,} of the {orphans.attributed:,} "
            f"events attributed to agents would belong to no agent: {shown}. Check --config (or "
            "$TRAILWARDEN_CONFIG, or run where config/trailwarden.yaml is); to accept this inventory, "
            "run again with --reattribute")


def would_orphan(store: Store, inventory: Inventory) -> Orphans:
    """Count, per agent, the stored events :func:`reattribute` would take from it (one scan of the
    identity columns; it runs only when the inventory changed)."""
    with _identity_tables(store, inventory):
        rows = store.con.execute(
            """
            SELECT e.agent, count(*) AS attributed,
                   count(*) FILTER (WHERE k.agent IS NULL AND n.agent IS NULL) AS lost
            FROM events e
            LEFT JOIN _tw_keys k ON k.key = e.access_key_id
            LEFT JOIN _tw_names n ON n.identity = e.identity
            WHERE e.agent IS DISTINCT FROM e.identity
            GROUP BY e.agent
            """).fetchall()
    return Orphans(sum(int(r[1]) for r in rows), {str(r[0]): int(r[2]) for r in rows if r[2]})


@contextmanager
def _identity_tables(store: Store, inventory: Inventory) -> Iterator[None]:
    """The inventory's identity map as two tables: AccessKey ids, and user/role identities."""
    pairs = inventory.identity_map.items()
    keys = {ident.removeprefix("access-key:"): agent for ident, agent in pairs if ident.startswith("access-key:")}
    names = {ident: agent for ident, agent in pairs if not ident.startswith("access-key:")}
    store.con.register("_tw_keys", pa.table({"key": list(keys), "agent": list(keys.values())},
                                            schema=pa.schema([("key", pa.string()), ("agent", pa.string())])))
    store.con.register("_tw_names", pa.table({"identity": list(names), "agent": list(names.values())},
                                             schema=pa.schema([("identity", pa.string()), ("agent", pa.string())])))
    try:
        yield
    finally:
        store.con.unregister("_tw_keys")
        store.con.unregister("_tw_names")


def reattribute(store: Store, inventory: Inventory) -> int:
    """Same rule as at ingest: an AccessKey identity wins, then the user or role, else the raw
    identity."""
    with _identity_tables(store, inventory), store.transaction() as con:
        row = first_row(con.execute(
            """
            UPDATE events SET agent = fresh.agent
            FROM (
                SELECT e.event_id, coalesce(k.agent, n.agent, e.identity) AS agent
                FROM events e
                LEFT JOIN _tw_keys k ON k.key = e.access_key_id
                LEFT JOIN _tw_names n ON n.identity = e.identity
            ) AS fresh
            WHERE events.event_id = fresh.event_id AND events.agent IS DISTINCT FROM fresh.agent
            """))
    return int(row[0]) if row else 0
