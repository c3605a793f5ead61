"""Keep the stored ``agent`` column in step with the inventory.

Events are attributed when they are ingested. When the inventory changes (a new agent, an identity
moved, an AccessKey added), the events already stored are re-attributed once, the next time a
command that writes runs with the new inventory: a fingerprint of the identity map is kept in
``pipeline_state``.
"""

from __future__ import annotations

import pyarrow as pa

from models.inventory import Inventory
from pipeline.store import Store, first_row

STATE_KEY = "inventory.fingerprint"
STALE_NOTE = ("note: the inventory changed since events were attributed; run `trailwarden detect` "
              "(or any ingest) to re-attribute them")


def attribution_is_stale(store: Store, inventory: Inventory) -> bool:
    """The stored events were attributed with another inventory: until a writing command
    re-attributes them, read-only commands show them under their old agents."""
    return store.read_state(STATE_KEY) not in (None, inventory.fingerprint())


def reattribute_if_changed(store: Store, inventory: Inventory) -> int | None:
    """Re-attribute stored events if the inventory changed since last time; return how many
    events changed agent, or None when the inventory is unchanged."""
    fingerprint = inventory.fingerprint()
    if store.read_state(STATE_KEY) == fingerprint:
        return None
    changed = reattribute(store, inventory)
    store.write_state(STATE_KEY, fingerprint)
    return changed


def reattribute(store: Store, inventory: Inventory) -> int:
    """Same rule as at ingest: an AccessKey identity wins, then the user or role, else the raw
    identity."""
    pairs = inventory.identity_map.items()
    keys = {ident.removeprefix("access-key:"): agent for ident, agent in pairs if ident.startswith("access-key:")}
    names = {ident: agent for ident, agent in pairs if not ident.startswith("access-key:")}
    store.con.register("_tw_keys", pa.table({"key": list(keys), "agent": list(keys.values())},
                                            schema=pa.schema([("key", pa.string()), ("agent", pa.string())])))
    store.con.register("_tw_names", pa.table({"identity": list(names), "agent": list(names.values())},
                                             schema=pa.schema([("identity", pa.string()), ("agent", pa.string())])))
    try:
        with store.transaction() as con:
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
    finally:
        store.con.unregister("_tw_keys")
        store.con.unregister("_tw_names")
    return int(row[0]) if row else 0
