"""Attribution at read time: each event's agent comes from a small identity->agent mapping.

The ``events`` view derives ``agent`` from the tables ``attribution_keys`` (AccessKey id -> agent)
and ``attribution_identities`` (user/role identity -> agent): the AccessKey first, then the
identity, else the raw identity - the rule ingest applies. When the inventory changes (a new
agent, an identity moved, an AccessKey added), the next command that writes replaces the mapping:
O(agents) rows, never an event (stored events, hot or sealed, are never rewritten). The mapping is
versioned with the inventory's fingerprint (``pipeline_state`` and ``attribution_version``).
Until a mapping is written (a store made before read-time attribution, or one only ingested into
by the library), the agent stored at ingest is read. An inventory that would strip most events of
their agents is refused first; that check and the count of events changing agent come from
per-identity counts (the hot table grouped, plus ``lake_identities`` of the sealed files), never
a scan of sealed events. Findings keep the agent they were raised with (they store it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from models.inventory import Inventory
from pipeline.core.errors import UsageError
from pipeline.core.times import utcnow
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
        if not mapping_written(store):  # attributed at ingest with this inventory: adopt it as the mapping
            reattribute(store, inventory)
        return None
    if not allow_orphans:
        orphans = would_orphan(store, inventory)
        if orphans.too_many(inventory):
            raise UsageError(refusal(orphans, inventory, source, why))
    return reattribute(store, inventory)


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


def mapping_written(store: Store) -> bool:
    """Does the view read the mapping (else the agent stored at ingest)?"""
    row = first_row(store.con.execute("SELECT count(*) FROM attribution_version"))
    return bool(row and row[0])


_COUNTS = """
    WITH counted AS (
        SELECT identity, access_key_id, agent AS stored, count(*) AS n FROM events_hot GROUP BY ALL
        UNION ALL
        SELECT identity, access_key_id, agent, events FROM lake_identities
    ), ready AS (SELECT count(*) > 0 AS ready FROM attribution_version)
    SELECT c.identity, c.n,
           CASE WHEN r.ready THEN coalesce(ok.agent, oi.agent, c.identity) ELSE c.stored END AS before,
           coalesce(k.agent, n.agent) AS mapped
    FROM counted c CROSS JOIN ready r
    LEFT JOIN attribution_keys ok ON ok.key = c.access_key_id
    LEFT JOIN attribution_identities oi ON oi.identity = c.identity
    LEFT JOIN _tw_keys k ON k.key = c.access_key_id
    LEFT JOIN _tw_names n ON n.identity = c.identity
"""


_CURRENT = """
    WITH counted AS (
        SELECT identity, access_key_id, agent AS stored FROM events_hot GROUP BY ALL
        UNION ALL
        SELECT identity, access_key_id, agent FROM lake_identities
    ), ready AS (SELECT count(*) > 0 AS ready FROM attribution_version)
    SELECT DISTINCT c.identity FROM counted c CROSS JOIN ready r
    LEFT JOIN attribution_keys k ON k.key = c.access_key_id
    LEFT JOIN attribution_identities n ON n.identity = c.identity
    WHERE CASE WHEN r.ready THEN coalesce(k.agent, n.agent, c.identity) ELSE c.stored END = ?
"""


def agent_filter(store: Store, agent: str) -> tuple[str, list[str]]:
    """A condition on ``events`` that selects ``agent``'s events, and its parameters, for queries
    of one agent (replay). ``agent = ?`` alone is derived per row after the mapping's joins, so
    DuckDB cannot push it into the scans: it would read (and decompress) every event of the
    window. So it is preceded by ``identity IN (...)``: the raw identities whose events are
    attributed to ``agent`` now (one GROUP BY of the hot table's identity columns plus the sealed
    files' per-identity counts), which DuckDB pushes into the scans, where the sealed files'
    row-group statistics (they are sorted by identity) skip the other identities' events."""
    ids = [r[0] for r in store.con.execute(_CURRENT, [agent]).fetchall()]
    if not ids:
        return "false", []
    return f"identity IN ({', '.join('?' * len(ids))}) AND agent = ?", [*ids, agent]


def would_orphan(store: Store, inventory: Inventory) -> Orphans:
    """Count, per agent, the stored events the inventory would take from it: events attributed
    to an agent today (their agent is not their raw identity) that it maps to no agent. One
    GROUP BY of the hot table's identity columns plus the sealed files' per-identity counts."""
    with _identity_tables(store, inventory):
        rows = store.con.execute(
            f"""
            SELECT before, sum(n) AS attributed, coalesce(sum(n) FILTER (WHERE mapped IS NULL), 0) AS lost
            FROM ({_COUNTS}) WHERE before IS DISTINCT FROM identity GROUP BY before
            """).fetchall()  # noqa: S608 - fixed SQL
    return Orphans(sum(int(r[1]) for r in rows), {str(r[0]): int(r[2]) for r in rows if r[2]})


def _changed(store: Store) -> int:
    """Events whose agent the registered ``_tw_keys``/``_tw_names`` mapping would change."""
    row = first_row(store.con.execute(
        f"SELECT coalesce(sum(n), 0) FROM ({_COUNTS}) WHERE before IS DISTINCT FROM coalesce(mapped, identity)"))  # noqa: S608
    return int(row[0]) if row else 0


@contextmanager
def _identity_tables(store: Store, inventory: Inventory) -> Iterator[None]:
    """The inventory's identity map as two tables: AccessKey ids, and user/role identities."""
    keys, names = _split(inventory)
    store.con.register("_tw_keys", pa.table({"key": list(keys), "agent": list(keys.values())},
                                            schema=pa.schema([("key", pa.string()), ("agent", pa.string())])))
    store.con.register("_tw_names", pa.table({"identity": list(names), "agent": list(names.values())},
                                             schema=pa.schema([("identity", pa.string()), ("agent", pa.string())])))
    try:
        yield
    finally:
        store.con.unregister("_tw_keys")
        store.con.unregister("_tw_names")


def _split(inventory: Inventory) -> tuple[dict[str, str], dict[str, str]]:
    pairs = inventory.identity_map.items()
    keys = {ident.removeprefix("access-key:"): agent for ident, agent in pairs if ident.startswith("access-key:")}
    names = {ident: agent for ident, agent in pairs if not ident.startswith("access-key:")}
    return keys, names


def reattribute(store: Store, inventory: Inventory) -> int:
    """Make ``inventory`` the mapping the ``events`` view reads (same rule as at ingest: an
    AccessKey identity wins, then the user or role, else the raw identity) and record its
    fingerprint, in one transaction that writes O(agents) rows and no event. Returns how many
    stored events change agent (from per-identity counts)."""
    with _identity_tables(store, inventory), store.transaction() as con:
        changed = _changed(store)
        con.execute("DELETE FROM attribution_keys")
        con.execute("DELETE FROM attribution_identities")
        con.execute("DELETE FROM attribution_version")
        con.execute("INSERT INTO attribution_keys SELECT key, agent FROM _tw_keys")
        con.execute("INSERT INTO attribution_identities SELECT identity, agent FROM _tw_names")
        con.execute("INSERT INTO attribution_version VALUES (?, ?)", [inventory.fingerprint(), utcnow()])
        store.write_state(STATE_KEY, inventory.fingerprint())
    return changed
