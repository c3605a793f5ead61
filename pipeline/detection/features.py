"""Baselines from daily aggregates: the per-day rows every learned part fits from, kept as each
UTC day seals, so a refit reads O(agents x days) rows instead of 28 days of raw events.

Every learned part declares its *daily* SQL (``models.baselines.Learned.daily``; the shared part's
is ``SHARED_DAILY``): per agent and some keys of one day (local day, hour, network...), sums,
maxima and counts that combine across days and across the pieces of a day. Once a UTC day has
ended (:func:`refresh`, run by the service before it detects) each part's rows for that day are
computed once from its events and stored in ``features_<part>_<version>``, registered in
``feature_days`` with the version of the part's SQL, the business time zone, the attribution
(inventory fingerprint) they were built with, and how many events the day and the day before
had (a late event changes the count: the day is built again). Sealing moves a day's events, never
changes them: the rows stay valid.

A fit (:func:`source`) reads, for each part, the stored rows of the days they are valid for, and
computes the rest from events: days not built yet (today's), days whose events (or the day
before's) changed in number since they were built (late events), days built with another version,
time zone or inventory, partial days at the edges of the history - and the *tainted cells*: what a baseline must not learn (the events of
open, acknowledged and resolved findings, ``learning.learnable``) is decided at fit time, since
triage moves findings in and out of it. Stored rows hold every event of the day; for each agent
and day a finding of that agent touches (and the day after: a sliding window looks back across
midnight), the stored rows are replaced by rows computed from the learnable events. The result is
the same baseline a fit from raw events gives (``tests/test_daily_features.py`` compares them).

Known gap: a finding raised before an inventory change moved its identity to another agent taints
the cells of the agent it was raised with, so its events are learned by the new agent when the
day's rows are stored. Stale days (an inventory change rewrites nothing, so every stored day is
stale after one) are rebuilt by :func:`refresh`, a bounded number per cycle; until then they are
read from their events, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import detectors
from models.baselines import HISTORY, SHARED, SHARED_DAILY, Learned, fill
from pipeline.core.times import utcnow
from pipeline.store import tiers
from pipeline.store.attribution import identities_of
from pipeline.store.store import Store, first_row

# how far before a day its daily SQL may look (failure_storm's sliding 5 minutes): the source of a
# day's rows includes these events with ``in_range`` false
LOOKBACK = timedelta(minutes=5)
KEEP = HISTORY + timedelta(days=2)  # stored days older than this before today are dropped


@dataclass(frozen=True)
class Part:
    """One part's daily rows: its key, its SQL, and the table they are stored in."""

    key: str
    sql: str

    @property
    def version(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:12]

    @property
    def table(self) -> str:
        return f"features_{self.key.lower()}_{self.version}"


def parts(kinds: Iterable[type[Learned]] | None = None) -> list[Part]:
    """The shared part and every part with daily rows (default: every registered detector's)."""
    if kinds is None:
        kinds = dict.fromkeys(d.learns for d in detectors.registry().values() if d.learns is not None)
    return [Part(SHARED, SHARED_DAILY), *(Part(k.__name__, k.daily) for k in kinds if k.daily is not None)]


def attribution(store: Store) -> str:
    """What the events' agents come from now: the inventory fingerprint of the mapping the view
    reads, or 'ingest' (the agents stored at ingest) before a mapping is written."""
    row = first_row(store.con.execute("SELECT max(fingerprint) FROM attribution_version"))
    return str(row[0]) if row and row[0] else "ingest"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


# -- building --------------------------------------------------------------------------------------
def _day_source(day: date) -> tuple[str, list[Any]]:
    """Every event of one UTC day, and those of the LOOKBACK before it (not in range)."""
    start = _midnight(day)
    return ("(SELECT *, event_time >= ? AS in_range FROM events WHERE event_time >= ? AND event_time < ?)",
            [start, start - LOOKBACK, start + timedelta(days=1)])


def day_counts(store: Store, first: date, last: date) -> dict[date, int]:
    """Events per UTC day in [first, last): the hot table's, grouped, plus the sealed files' rows
    (registered counts: no file is read)."""
    counts: dict[date, int] = {}
    for day, n in store.con.execute(
            "SELECT CAST(timezone('UTC', event_time) AS DATE) AS d, count(*) FROM events_hot "
            "WHERE event_time >= ? AND event_time < ? GROUP BY d", [_midnight(first), _midnight(last)]).fetchall():
        counts[day] = counts.get(day, 0) + int(n)
    for day, n in store.con.execute("SELECT day, sum(rows) FROM lake_files WHERE day >= ? AND day < ? GROUP BY day",
                                    [first, last]).fetchall():
        counts[day] = counts.get(day, 0) + int(n)
    return counts


def build_day(store: Store, day: date, timezone: str, kinds: Iterable[type[Learned]] | None = None) -> int:
    """Compute and store every part's rows of one UTC day (replacing what was stored for it), in
    one transaction; return the rows stored. A bounded step: one day's events."""
    tag = attribution(store)
    source, values = _day_source(day)
    total = 0
    with store.transaction() as con:
        counts = day_counts(store, day - timedelta(days=1), day + timedelta(days=1))
        for part in parts(kinds):
            sql = fill(part.sql, source, timezone)
            params = values * part.sql.count("{events}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {part.table} AS "  # noqa: S608 - names are code constants
                        f"SELECT CAST(NULL AS DATE) AS feature_day, * FROM ({sql}) WHERE false", params)
            con.execute(f"DELETE FROM {part.table} WHERE feature_day = ?", [day])  # noqa: S608
            con.execute(f"INSERT INTO {part.table} SELECT ? AS feature_day, * FROM ({sql})",  # noqa: S608
                        [day, *params])
            row = first_row(con.execute(f"SELECT count(*) FROM {part.table} WHERE feature_day = ?", [day]))  # noqa: S608
            rows = int(row[0]) if row else 0
            con.execute("INSERT OR REPLACE INTO feature_days BY NAME SELECT ? AS part, ? AS day, ? AS version, "
                        "? AS timezone, ? AS attribution, ? AS rows, ? AS events, ? AS events_before, ? AS built_at",
                        [part.key, day, part.version, timezone, tag, rows, counts.get(day, 0),
                         counts.get(day - timedelta(days=1), 0), utcnow()])
            total += rows
    return total


@dataclass
class FeatureReport:
    days: list[str] = field(default_factory=list)  # the days built
    rows: int = 0
    dropped_days: int = 0  # stored days older than KEEP, dropped
    stale_days: int = 0  # sealed days of the history still to build after this step

    def as_dict(self) -> dict[str, Any]:
        return {"days": self.days, "rows": self.rows, "dropped_days": self.dropped_days,
                "stale_days": self.stale_days}


def _valid(store: Store, counts: dict[date, int], first: date, last: date,
           timezone: str) -> dict[tuple[str, str], set[date]]:
    """Per (part, version): the days of [first, last) whose kept rows are valid now - built with
    this time zone and attribution, and the day and the day before still hold as many events as
    ``counts`` (:func:`day_counts` from the day before ``first``) says."""
    valid: dict[tuple[str, str], set[date]] = {}
    for key, version, day, events, before in store.con.execute(
            "SELECT part, version, day, events, events_before FROM feature_days WHERE day >= ? AND day < ? "
            "AND timezone = ? AND attribution = ?", [first, last, timezone, attribution(store)]).fetchall():
        if events == counts.get(day, 0) and before == counts.get(day - timedelta(days=1), 0):
            valid.setdefault((str(key), str(version)), set()).add(day)
    return valid


def stale_days(store: Store, timezone: str, now: datetime | None = None) -> list[date]:
    """The ended UTC days of the last KEEP with events whose rows are missing or stale (another
    version of some part's SQL, another time zone or inventory, events arrived since), oldest
    first."""
    now = now or utcnow()
    first, today = (now - KEEP).astimezone(UTC).date(), now.astimezone(UTC).date()
    counts = day_counts(store, first - timedelta(days=1), today)
    valid = _valid(store, counts, first, today, timezone)
    expected = [(p.key, p.version) for p in parts()]
    days = [d for d, n in counts.items() if n and d >= first]
    return sorted(d for d in days if any(d not in valid.get(k, set()) for k in expected))


def refresh(store: Store, timezone: str, *, max_days: int = 2, now: datetime | None = None) -> FeatureReport:
    """Build the rows of up to ``max_days`` stale ended days (newest first: the next refit needs
    the recent ones most), drop stored days older than KEEP and the tables of versions no longer
    used. The service runs it before it detects; each call is a bounded step."""
    now = now or utcnow()
    report = FeatureReport()
    report.dropped_days = _drop_old(store, (now - KEEP).astimezone(UTC).date())
    days = stale_days(store, timezone, now)
    for day in sorted(days, reverse=True)[:max_days]:
        report.rows += build_day(store, day, timezone)
        report.days.append(day.isoformat())
    report.stale_days = len(days) - len(report.days)
    return report


def _drop_old(store: Store, before: date) -> int:
    current = {p.table for p in parts()}
    tables = [r[0] for r in store.con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'features\\_%' ESCAPE '\\' "
        "AND NOT temporary").fetchall()]
    row = first_row(store.con.execute("SELECT count(DISTINCT day) FROM feature_days WHERE day < ?", [before]))
    dropped = int(row[0]) if row else 0
    with store.transaction() as con:
        for table in tables:
            if table not in current:
                con.execute(f"DROP TABLE {table}")
            else:
                con.execute(f"DELETE FROM {table} WHERE feature_day < ?", [before])  # noqa: S608
        keys = [p.key + ":" + p.version for p in parts()]
        con.execute("DELETE FROM feature_days WHERE day < ? OR NOT list_contains(?, part || ':' || version)",
                    [before, keys])
    return dropped


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Which days of a history each part reads stored, and which (agent, day) cells must be read
    from learnable events instead."""

    start: datetime
    end: datetime
    timezone: str
    where: str  # the learnable events of the history, every agent's (``learning.learnable``)
    params: list[Any]
    agents: list[str] | None  # the agents fitted (None: all)
    stored: dict[tuple[str, str], set[date]]  # (part key, version) -> days whose stored rows are valid
    tainted: dict[date, set[str]]  # day -> agents whose stored rows of that day must not be used
    empty: set[date] = field(default_factory=set)  # whole days of the history without any event
    identities: dict[str, list[str]] = field(default_factory=dict)  # tainted agent -> its raw identities
    # the stored events of [lo, hi) as a FROM-able relation (``tiers.events_between``: only the
    # sealed days of that range); "events" when not given
    events_between: Callable[[datetime, datetime], str] | None = None

    def source(self, key: str, sql: str) -> tuple[str, list[Any]]:
        """The per-day rows of ``sql`` (part ``key``) over the history: stored where valid, the
        rest from learnable events. A FROM-able relation and its values."""
        part = Part(key, sql)
        days = self.stored.get((key, part.version), set())
        branches: list[tuple[str, list[Any]]] = []
        if days:
            table = part.table
            cells = sorted(f"{d.isoformat()}|{a}" for d, agents in self.tainted.items() if d in days for a in agents)
            where = "list_contains(?, feature_day) AND NOT list_contains(?, CAST(feature_day AS VARCHAR) || '|' || agent)"
            values: list[Any] = [sorted(days), cells]
            if self.agents is not None:
                where += " AND list_contains(?, agent)"
                values.append(self.agents)
            branches.append((f"SELECT * EXCLUDE (feature_day) FROM {table} WHERE {where}", values))  # noqa: S608
        computed = self._computed(sql, days)
        if computed is not None:
            branches.append(computed)
        if not branches:  # a history without events: the rows of none, in their shape
            branches.append((fill(sql, "(SELECT *, false AS in_range FROM events WHERE false)", self.timezone), []))
        text = " UNION ALL BY NAME ".join(f"({b})" for b, _ in branches)
        return f"({text})", [v for _, values in branches for v in values]

    def _computed(self, sql: str, stored: set[date]) -> tuple[str, list[Any]] | None:
        """``sql`` over the learnable events the stored days do not cover - the stretches of the
        history not stored, and the tainted cells of stored days - in ONE scan (every scan of the
        view costs DuckDB its own buffers: a branch per stretch ran out of memory at 256 MB), or
        None when the stored days cover everything. The LOOKBACK before each stretch and cell is
        read too, with ``in_range`` false. The events left out (few: those of findings) are
        anti-joined by eventId: filtering with the learnable clause directly carries every column
        through its joins (2-3 times slower)."""
        ranges = _raw_ranges(self.start, self.end, stored | self.empty)
        tainted = sorted(d for d in self.tainted if d in stored)
        if not ranges and not tainted:
            return None
        lookback = f"INTERVAL {int(LOOKBACK.total_seconds())} SECOND"
        in_range: list[str] = []  # what the rows are for
        reach: list[str] = []  # what is read: those and the LOOKBACK before them, a time range each
        values: list[Any] = []
        reach_values: list[Any] = []
        for lo, hi in ranges:
            in_range.append("(event_time >= ? AND event_time < ?)")
            values += [lo, hi]
            reach.append("(event_time >= ? AND event_time < ?)")
            reach_values += [max(lo - LOOKBACK, self.start), hi]
        if tainted:
            cells = sorted(f"{d.isoformat()}|{a}" for d in tainted for a in self.tainted[d])
            key = "CAST(CAST(timezone('UTC', {t}) AS DATE) AS VARCHAR) || '|' || agent"
            in_range.append(f"list_contains(?, {key.format(t='event_time')})")
            values.append(cells)
            for day in tainted:
                mine = sorted(f"{day.isoformat()}|{a}" for a in self.tainted[day])
                # the agents' raw identities first: pushed into the scans, where the sealed files'
                # row-group statistics (sorted by identity) skip every other identity's events
                ids = sorted({i for a in self.tainted[day] for i in self.identities.get(a, [])})
                if not ids:
                    continue
                reach.append(f"(event_time >= ? AND event_time < ? AND identity IN ({', '.join('?' * len(ids))}) "
                             f"AND (list_contains(?, {key.format(t='event_time')}) "
                             f"OR list_contains(?, {key.format(t=f'event_time + {lookback}')})))")
                reach_values += [max(_midnight(day) - LOOKBACK, self.start), _midnight(day) + timedelta(days=1),
                                 *ids, mine, mine]
        if not reach:  # only tainted cells of agents without events now: nothing to compute
            return None
        agents = " AND list_contains(?, agent)" if self.agents is not None else ""
        # what is read, as one time range first: DuckDB pushes a range into the sealed files'
        # scans (their row groups' statistics skip the rest) but not an OR of ranges, with which
        # every sealed file of the history was read whole
        times = [v for v in reach_values if isinstance(v, datetime)]  # each (lo, hi) of `reach`
        reached = f"event_time >= ? AND event_time < ? AND ({' OR '.join(reach)})"
        reach_values = [min(times), max(times), *reach_values]
        # ... and from the files of that range's days only (opening every sealed file to skip it
        # cost each scan ~2.4 s at 300 sealed days)
        events = self.events_between(min(times), max(times)) if self.events_between else "events"
        source = (f"(SELECT *, {' OR '.join(in_range)} AS in_range FROM {events} AS events "  # noqa: S608
                  f"WHERE {reached}{agents} "
                  f"AND event_id NOT IN (SELECT event_id FROM {events} AS events WHERE {reached} "
                  f"AND NOT coalesce(({self.where}), false)))")
        params = [*values, *reach_values, *([self.agents] if self.agents is not None else []),
                  *reach_values, *self.params]
        return fill(sql, source, self.timezone), params * sql.count("{events}")


def _raw_ranges(start: datetime, end: datetime, stored: set[date]) -> list[tuple[datetime, datetime]]:
    """The stretches of [start, end) not covered by stored days, as (lo, hi)."""
    ranges: list[tuple[datetime, datetime]] = []
    lo = start
    while lo < end:
        day = lo.astimezone(UTC).date()
        if day in stored and _midnight(day) == lo:
            lo = _midnight(day) + timedelta(days=1)
            continue
        hi = lo
        while hi < end:
            d = hi.astimezone(UTC).date()
            if d in stored and _midnight(d) == hi:
                break
            hi = min(_midnight(d) + timedelta(days=1), end)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def plan(store: Store, start: datetime, end: datetime, timezone: str, where: str, params: list[Any],
         unlearned: Sequence[str], agents: list[str] | None = None) -> Plan:
    """What a fit on [start, end) (its learnable events, every agent's: ``where`` and ``params``;
    of ``agents`` only, when given) reads stored:
    for each part, the whole UTC days of the history whose rows were built with its current SQL,
    this time zone and the current attribution, and whose events have not changed in number since
    (:func:`_valid`); and the cells the findings with an ``unlearned`` status taint."""
    utc_start = start.astimezone(UTC)
    first = utc_start.date() if _midnight(utc_start.date()) == utc_start else utc_start.date() + timedelta(days=1)
    last = end.astimezone(UTC).date()  # exclusive: whole days end by `end`
    counts = day_counts(store, first - timedelta(days=1), last) if first < last else {}
    stored = _valid(store, counts, first, last, timezone) if first < last else {}
    empty = {first + timedelta(days=i) for i in range((last - first).days)} - {d for d, n in counts.items() if n}
    tainted = _tainted(store, start, end, unlearned)
    agents_tainted = sorted({a for cells in tainted.values() for a in cells})
    return Plan(start, end, timezone, where, params, agents, stored, tainted, empty,
                identities_of(store, agents_tainted) if agents_tainted else {},
                lambda lo, hi: tiers.events_between(store.con, store.path, lo, hi))


def _tainted(store: Store, start: datetime, end: datetime, unlearned: Sequence[str]) -> dict[date, set[str]]:
    """The (day, agent) cells whose stored rows may hold events a baseline must not learn, for the
    findings with an ``unlearned`` status: the cells of the events they list (``event_cells``,
    whatever agent the events are of), and every UTC day of their own agent from their first
    event to their last (a capped finding leaves out its whole span); each with the day after (a
    sliding window looks back across midnight)."""
    rows = store.con.execute(
        """
        WITH f AS (SELECT agent, first_seen, last_seen, event_cells FROM findings
                   WHERE list_contains(?, status) AND last_seen >= ? AND first_seen < ?),
        cells AS (
            SELECT CAST(timezone('UTC', first_seen) AS DATE) + CAST(unnest(range(0, date_diff(
                       'day', CAST(timezone('UTC', first_seen) AS DATE), CAST(timezone('UTC', last_seen) AS DATE)) + 1))
                   AS INTEGER) AS day, agent
            FROM f
            UNION ALL
            SELECT CAST(split_part(c, '|', 1) AS DATE), substr(c, 12)
            FROM (SELECT unnest(event_cells) AS c FROM f))
        SELECT DISTINCT day + d AS day, agent FROM cells, (VALUES (0), (1)) AS next(d)
        """, [list(unlearned), start - LOOKBACK, end]).fetchall()
    out: dict[date, set[str]] = {}
    for day, agent in rows:
        out.setdefault(day, set()).add(str(agent))
    return out
