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


# the agent an identity's events get from a mapping: the AccessKey bound to their home account,
# then the AccessKey, then the identity bound to the home account, then the identity
def _mapped(keys: str, names: str, alias: str, row: str) -> str:
    return (f"LEFT JOIN {keys}_bound {alias}kb ON {alias}kb.key = {row}.access_key_id AND {alias}kb.account = {row}.account_id "
            f"LEFT JOIN {keys} {alias}k ON {alias}k.key = {row}.access_key_id "
            f"LEFT JOIN {names}_bound {alias}nb ON {alias}nb.identity = {row}.identity AND {alias}nb.account = {row}.account_id "
            f"LEFT JOIN {names} {alias}n ON {alias}n.identity = {row}.identity")


def _agent(alias: str) -> str:
    return f"coalesce({alias}kb.agent, {alias}k.agent, {alias}nb.agent, {alias}n.agent)"


_COUNTED = """
    WITH counted AS (
        SELECT identity, access_key_id, account_id, agent AS stored, count(*) AS n FROM events_hot GROUP BY ALL
        UNION ALL
        SELECT identity, access_key_id, account_id, agent, events FROM lake_identities
    ), ready AS (SELECT count(*) > 0 AS ready FROM attribution_version)"""

_COUNTS = f"""{_COUNTED}
    SELECT c.identity, c.n,
           CASE WHEN r.ready THEN coalesce({_agent('was_')}, c.identity) ELSE c.stored END AS before,
           {_agent('now_')} AS mapped
    FROM counted c CROSS JOIN ready r
    {_mapped('attribution_keys', 'attribution_identities', 'was_', 'c')}
    {_mapped('_tw_keys', '_tw_names', 'now_', 'c')}
"""  # noqa: S608 - fixed names


_CURRENT = f"""{_COUNTED}
    SELECT DISTINCT c.identity FROM counted c CROSS JOIN ready r
    {_mapped('attribution_keys', 'attribution_identities', 'was_', 'c')}
    WHERE CASE WHEN r.ready THEN coalesce({_agent('was_')}, c.identity) ELSE c.stored END = ?
"""  # noqa: S608 - fixed names


_OF_AGENTS = f"""{_COUNTED}
    SELECT DISTINCT a, c.identity FROM (
        SELECT c.*, CASE WHEN r.ready THEN coalesce({_agent('was_')}, c.identity) ELSE c.stored END AS a
        FROM counted c CROSS JOIN ready r
        {_mapped('attribution_keys', 'attribution_identities', 'was_', 'c')}) c
    WHERE list_contains(?, a)
"""  # noqa: S608 - fixed names


def identities_of(store: Store, agents: list[str]) -> dict[str, list[str]]:
    """The raw identities whose events are attributed to each of ``agents`` now (as
    :func:`agent_filter` finds them, for many agents at once)."""
    out: dict[str, list[str]] = {}
    for agent, identity in store.con.execute(_OF_AGENTS, [agents]).fetchall():
        out.setdefault(str(agent), []).append(str(identity))
    return out


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


_PAIR = pa.schema([("key", pa.string()), ("agent", pa.string())])
_NAME_PAIR = pa.schema([("identity", pa.string()), ("agent", pa.string())])
_BOUND = pa.schema([("key", pa.string()), ("account", pa.string()), ("agent", pa.string())])
_NAME_BOUND = pa.schema([("identity", pa.string()), ("account", pa.string()), ("agent", pa.string())])


@contextmanager
def _identity_tables(store: Store, inventory: Inventory) -> Iterator[None]:
    """The inventory's claims as four tables: AccessKey ids and user/role identities, each of the
    agents without ``accounts:`` and of those bound to accounts (one row per account)."""
    tables = _split(inventory)
    for name, table in tables.items():
        store.con.register(name, table)
    try:
        yield
    finally:
        for name in tables:
            store.con.unregister(name)


def _split(inventory: Inventory) -> dict[str, pa.Table]:
    keys: dict[str, str] = {}
    names: dict[str, str] = {}
    bound_keys: dict[tuple[str, str], str] = {}
    bound_names: dict[tuple[str, str], str] = {}
    for agent in inventory.agents:
        for ident in agent.identities:
            key = ident.removeprefix("access-key:") if ident.startswith("access-key:") else None
            if agent.accounts is None:
                (keys if key else names)[key or ident] = agent.name
            else:
                for account in agent.accounts:
                    (bound_keys if key else bound_names)[(key or ident, account)] = agent.name

    def bound(claims: dict[tuple[str, str], str], schema: pa.Schema) -> pa.Table:
        return pa.table([[k[0] for k in claims], [k[1] for k in claims], list(claims.values())], schema=schema)

    return {"_tw_keys": pa.table([list(keys), list(keys.values())], schema=_PAIR),
            "_tw_names": pa.table([list(names), list(names.values())], schema=_NAME_PAIR),
            "_tw_keys_bound": bound(bound_keys, _BOUND),
            "_tw_names_bound": bound(bound_names, _NAME_BOUND)}


def reattribute(store: Store, inventory: Inventory) -> int:
    """Make ``inventory`` the mapping the ``events`` view reads (same rule as at ingest: an
    AccessKey identity wins, then the user or role, else the raw identity) and record its
    fingerprint, in one transaction that writes O(agents) rows and no event. Returns how many
    stored events change agent (from per-identity counts)."""
    with _identity_tables(store, inventory), store.transaction() as con:
        changed = _changed(store)
        for table, registered in (("attribution_keys", "_tw_keys"), ("attribution_identities", "_tw_names"),
                                  ("attribution_keys_bound", "_tw_keys_bound"),
                                  ("attribution_identities_bound", "_tw_names_bound")):
            con.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {registered}")  # noqa: S608 - fixed names
        con.execute("DELETE FROM attribution_version")
        con.execute("INSERT INTO attribution_version VALUES (?, ?)", [inventory.fingerprint(), utcnow()])
        store.write_state(STATE_KEY, inventory.fingerprint())
    return changed
