"""Role-session lineage: which agent is really behind what a role session did.

Every successful ``AssumeRole`` call in the store becomes a *session* (``role_sessions``): the
role it assumed (account and name from the ``RoleArn``), its ``RoleSessionName``, its lifetime
(``DurationSeconds``, 3,600 s when absent), the STS AccessKey it issued when ActionTrail recorded
the answer, and who called it. Every event made by an ``assumed-role`` identity ``Role:Session``
is then linked to the session it was made in (``session_links``), and each session's *origin* is
followed through chains (A assumes R1, R1 assumes R2) to the first caller that is not itself a role
session — the agent the responder is asking about.

Linking never guesses. A candidate session has the event's role and session name in the event's
account, and was live at the event's time (one minute of clock skew either side). Among the
candidates, an exact STS AccessKey wins, then a session created when the event's
``sessionContext.creationDate`` says (within a minute; a session created at another time is
excluded), then the time window alone; a tie left after that is broken only by the source network
of the ``AssumeRole`` call, else the event is ``ambiguous`` with how many sessions were live. An
event with no candidate is ``no-session``: its ``AssumeRole`` is not in the store (issued before the
stored history, by a cloud service, or by a console role switch), and it says so.

The tables are derived from ``events`` and kept current by :func:`link_sessions` after each ingest,
in bounded work: the events ingested since it last ran, plus earlier unlinked events that a newly
arrived session covers (late or out-of-order delivery). Rebuilding them from scratch gives the same
links (``full=True``).

Missed: a role session whose name changes nothing about the caller (a console role switch records
no ``AssumeRole`` in the store) cannot be traced; nor can sessions created through
``AssumeRoleWithSAML``/``AssumeRoleWithOIDC`` (their callers are outside the accounts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from pipeline.store.store import Store, first_row

STATE_KEY = "sessions.linked_through"  # the newest ingested_at the links cover
DEFAULT_DURATION = 3600  # seconds: STS's default session lifetime
MAX_DURATION = 43200  # seconds: the longest a role session may last
SKEW = "INTERVAL 1 MINUTE"

# One row per successful AssumeRole call ingested after $1 (NULL = every one): the session it
# opened, or why it cannot be linked. Parameter names are read in both casings (ActionTrail writes
# RoleArn; converted traffic sometimes roleArn).
_NEW_SESSIONS = f"""
WITH calls AS (
    SELECT event_id, event_time, identity, identity_type, access_key_id, account_id, source_ip,
           coalesce(request_parameters->>'$.RoleArn', request_parameters->>'$.roleArn') AS arn,
           coalesce(request_parameters->>'$.RoleSessionName', request_parameters->>'$.roleSessionName') AS sname,
           coalesce(request_parameters->>'$.DurationSeconds', request_parameters->>'$.durationSeconds') AS dur,
           coalesce(response_elements->>'$.Credentials.AccessKeyId',
                    response_elements->>'$.credentials.accessKeyId') AS sts_key
    FROM {{source}}
    WHERE event_name = 'AssumeRole' AND error_code IS NULL AND ($1::TIMESTAMPTZ IS NULL OR ingested_at > $1)
      AND event_id NOT IN (SELECT session_id FROM role_sessions)
), parsed AS (
    SELECT *, regexp_extract(arn, '^acs:ram::([0-9]+):role/([^/:*]+)$', 1) AS racct,
              regexp_extract(arn, '^acs:ram::([0-9]+):role/([^/:*]+)$', 2) AS rname,
              TRY_CAST(dur AS INTEGER) AS seconds
    FROM calls
)
SELECT event_id, event_time,
       event_time + to_seconds(CASE WHEN seconds BETWEEN 1 AND {MAX_DURATION} THEN seconds
                                    ELSE {DEFAULT_DURATION} END),
       nullif(racct, ''), nullif(rname, ''), nullif(sname, ''), nullif(sts_key, ''),
       identity, access_key_id, account_id, NULL, source_ip,
       CASE WHEN arn IS NULL OR arn = '' OR racct = '' OR sname IS NULL OR sname = '' THEN 'unlinkable'
            ELSE 'ok' END,
       CASE WHEN arn IS NULL OR arn = '' THEN 'the call names no RoleArn'
            WHEN racct = '' THEN 'malformed role ARN: ' || left(arn, 120)
            WHEN sname IS NULL OR sname = '' THEN 'the call names no RoleSessionName'
       END,
       NULL, NULL, NULL, NULL, NULL, NULL
FROM parsed
"""  # noqa: S608 - fixed text (constants of this module); values are bound

# The hot events with the payload columns the ``events`` view derives from ``raw`` (the table
# stores only ``raw``: a generated column would parse it on every insert).
_HOT = ("(SELECT *, json_extract(raw, '$.requestParameters') AS request_parameters, "
        "json_extract(raw, '$.responseElements') AS response_elements FROM events_hot)")

# The assumed-role events to link now: those ingested after $1, and those not linked yet that one
# of the sessions added in this run ([$2, $3]: their earliest start, latest expiry) may cover.
_TARGETS = f"""
CREATE OR REPLACE TEMP TABLE _tw_targets AS
SELECT event_id, event_time, role_name, session_name, account_id, access_key_id, session_created, source_ip
FROM {{source}}
WHERE identity_type = 'assumed-role' AND ($1::TIMESTAMPTZ IS NULL OR ingested_at > $1)
UNION
SELECT event_id, event_time, role_name, session_name, account_id, access_key_id, session_created, source_ip
FROM events
WHERE $2::TIMESTAMPTZ IS NOT NULL AND identity_type = 'assumed-role'
  AND event_time BETWEEN $2::TIMESTAMPTZ - {SKEW} AND $3::TIMESTAMPTZ + {SKEW}
  AND event_id IN (SELECT event_id FROM session_links WHERE status <> 'linked'
                   AND event_time BETWEEN $2::TIMESTAMPTZ - {SKEW} AND $3::TIMESTAMPTZ + {SKEW})
"""  # noqa: S608 - fixed text (constants of this module); values are bound

# Every target with its verdict: the chosen session, or why there is none.
_LINKS = f"""
WITH cand AS (
    SELECT t.event_id, t.event_time, s.session_id, s.source_ip = t.source_ip AS same_net,
           CASE WHEN t.access_key_id IS NOT NULL AND t.access_key_id = s.sts_key THEN 0
                WHEN t.session_created IS NOT NULL THEN 1
                ELSE 2 END AS rank
    FROM _tw_targets t
    JOIN role_sessions s
      ON s.status = 'ok' AND lower(s.role_name) = lower(t.role_name) AND s.session_name = t.session_name
     AND (t.account_id IS NULL OR s.role_account = t.account_id)
     AND t.event_time BETWEEN s.started - {SKEW} AND s.expires + {SKEW}
     AND (t.session_created IS NULL OR (t.access_key_id IS NOT NULL AND t.access_key_id = s.sts_key)
          OR abs(epoch(t.session_created) - epoch(s.started)) <= 60)
), best AS (
    SELECT *, min(rank) OVER (PARTITION BY event_id) AS best_rank FROM cand
), kept AS (
    SELECT event_id, any_value(event_time) AS event_time, any_value(rank) AS rank,
           count(*) AS n, list(session_id ORDER BY session_id) AS sessions,
           list(session_id ORDER BY session_id) FILTER (WHERE same_net) AS by_net
    FROM best WHERE rank = best_rank GROUP BY event_id
)
SELECT t.event_id, t.event_time,
       CASE WHEN k.n = 1 THEN k.sessions[1] WHEN len(k.by_net) = 1 THEN k.by_net[1] END AS session_id,
       CASE WHEN k.n IS NULL THEN 'no-session' WHEN k.n = 1 OR len(k.by_net) = 1 THEN 'linked'
            ELSE 'ambiguous' END AS status,
       CASE WHEN k.n IS NULL THEN
                'its AssumeRole is not in the store (issued before the stored history, by a cloud '
                || 'service, or by a console role switch)'
                || CASE WHEN t.session_created IS NOT NULL
                        THEN '; the session was created ' || strftime(t.session_created AT TIME ZONE 'UTC',
                                                                      '%Y-%m-%dT%H:%M:%SZ')
                        ELSE '' END
            WHEN k.n = 1 THEN CASE k.rank WHEN 0 THEN 'sts-key' WHEN 1 THEN 'created' ELSE 'window' END
            WHEN len(k.by_net) = 1 THEN 'window+network'
            ELSE k.n || ' sessions of this role with this name were live; not guessed'
       END AS reason
FROM _tw_targets t LEFT JOIN kept k USING (event_id)
"""  # noqa: S608 - fixed text (constants of this module)


@dataclass
class LinkReport:
    sessions: int = 0  # sessions added
    unlinkable: int = 0  # of which could not be linked (reason recorded)
    linked: int = 0  # events linked to a session
    ambiguous: int = 0
    no_session: int = 0
    origins: int = 0  # sessions whose origin was resolved in this run


def link_sessions(store: Store, *, full: bool = False) -> LinkReport:
    """Add the sessions and links the events ingested since the last run call for, and resolve
    the new sessions' origins, in one transaction (a kill -9 leaves the previous state, and the
    next run redoes the work). ``full`` rebuilds both tables from every stored event."""
    report = LinkReport()
    with store.transaction() as con:
        if full:
            con.execute("DELETE FROM session_links")
            con.execute("DELETE FROM role_sessions")
        mark = None if full else _watermark(store)
        # what arrived since the last run is in the hot table (late events for sealed days too);
        # a rebuild reads every event
        source = "events" if full else _HOT
        newest = first_row(con.execute(f"SELECT max(ingested_at) FROM {source}"))  # noqa: S608 - fixed names
        if newest is None or newest[0] is None or (mark is not None and newest[0] <= mark):
            return report
        upto: datetime = newest[0]
        before, unlinkable = _counts(store)
        con.execute(f"INSERT INTO role_sessions {_NEW_SESSIONS.format(source=source)}", [mark])
        after, now_unlinkable = _counts(store)
        report.sessions, report.unlinkable = after - before, now_unlinkable - unlinkable
        span = first_row(con.execute(
            "SELECT min(started), max(expires) FROM role_sessions WHERE origin_status IS NULL AND status = 'ok'"))
        low, high = span if span else (None, None)
        con.execute(_TARGETS.format(source=source), [mark, low, high])
        # bounded by the targets' times: the links' zone maps skip the rest of the history
        con.execute("DELETE FROM session_links WHERE event_time BETWEEN (SELECT min(event_time) FROM _tw_targets) "
                    "AND (SELECT max(event_time) FROM _tw_targets) AND event_id IN (SELECT event_id FROM _tw_targets)")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _tw_links AS {_LINKS}")
        con.execute("INSERT INTO session_links SELECT * FROM _tw_links")
        counts = dict(con.execute("SELECT status, count(*) FROM _tw_links GROUP BY status").fetchall())
        report.linked, report.ambiguous = int(counts.get("linked", 0)), int(counts.get("ambiguous", 0))
        report.no_session = int(counts.get("no-session", 0))
        con.execute("DROP TABLE _tw_links")
        con.execute("DROP TABLE _tw_targets")
        _callers(store)
        report.origins = _resolve_origins(store)
        store.write_state(STATE_KEY, upto.isoformat())
    return report


def _watermark(store: Store) -> datetime | None:
    value = store.read_state(STATE_KEY)
    return datetime.fromisoformat(value) if value else None


def _counts(store: Store) -> tuple[int, int]:
    """Sessions stored, and how many of them are unlinkable."""
    row = first_row(store.con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'unlinkable') FROM role_sessions"))
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _callers(store: Store) -> None:
    """A session opened by a role session (its AssumeRole was made by an assumed-role identity)
    records the session its call was made in, once that call is linked."""
    store.con.execute(
        """
        UPDATE role_sessions SET caller_session = l.session_id
        FROM session_links l
        WHERE l.event_id = role_sessions.session_id AND l.status = 'linked'
          AND role_sessions.caller_session IS DISTINCT FROM l.session_id
        """)


# How far a chain is followed: deeper than any real delegation, shallow enough that a loop (which
# time order makes impossible, but input is not trusted) ends.
MAX_CHAIN = 10


def _resolve_origins(store: Store) -> int:
    """Give each session whose origin is not known yet its origin and chain, from its caller: a
    caller that is not a role session is the origin; a role session's origin is its session's.
    Sessions whose calling session is not in the store say so; those whose calling session is not
    resolved yet wait for the next run. Returns how many were resolved as known."""
    con = store.con
    resolved = 0
    for _ in range(MAX_CHAIN):
        rows = con.execute(
            """
            SELECT s.session_id, s.caller_identity, s.caller_key, s.caller_account, s.role_name, s.role_account,
                   s.caller_session, p.origin_identity, p.origin_key, p.origin_account, p.origin_status, p.chain,
                   s.status, s.reason, p.origin_session
            FROM role_sessions s LEFT JOIN role_sessions p ON p.session_id = s.caller_session
            WHERE s.origin_status IS NULL OR (s.origin_status <> 'known' AND s.caller_session IS NOT NULL
                                              AND p.origin_status = 'known')
            """).fetchall()
        updates = [u for u in map(_origin, rows) if u is not None]
        if not updates:
            break
        _update_origins(con, updates)
        resolved += sum(1 for u in updates if u[3] == "known")
    return resolved


_ORIGIN_SCHEMA = pa.schema([("origin_identity", pa.string()), ("origin_key", pa.string()),
                            ("origin_account", pa.string()), ("origin_status", pa.string()),
                            ("chain", pa.list_(pa.string())), ("origin_session", pa.string()),
                            ("session_id", pa.string())])


def _update_origins(con: duckdb.DuckDBPyConnection, updates: list[tuple[Any, ...]]) -> None:
    """One UPDATE for all of them (row by row, 20,000 sessions took seconds)."""
    table = pa.Table.from_pylist([dict(zip(_ORIGIN_SCHEMA.names, u, strict=True)) for u in updates],
                                 schema=_ORIGIN_SCHEMA)
    con.register("_tw_origins", table)
    try:
        con.execute(
            """
            UPDATE role_sessions SET origin_identity = o.origin_identity, origin_key = o.origin_key,
                   origin_account = o.origin_account, origin_status = o.origin_status, chain = o.chain,
                   origin_session = o.origin_session
            FROM _tw_origins o WHERE o.session_id = role_sessions.session_id
            """)
    finally:
        con.unregister("_tw_origins")


def _origin(row: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The origin columns of one session (see :data:`_ORIGIN_SCHEMA`), or None to wait for its
    calling session's origin."""
    (sid, caller, key, account, role, role_account, caller_session, p_ident, p_key, p_account, p_status,
     p_chain, status, reason, p_session) = row
    here = f"{role or '?'}@{role_account or '?'}"
    if status != "ok":
        return None if reason is None else (caller, key, account, f"unlinkable: {reason}", [here], sid, sid)
    if not str(caller).startswith("role:"):
        return caller, key, account, "known", [here], sid, sid
    if caller_session is None:
        return (None, None, None,
                f"the calling session of {caller} is not in the store (started before the stored history, "
                "by a cloud service or a console role switch, or not linkable)", [here], None, sid)
    if p_status == "known":
        return p_ident, p_key, p_account, "known", [*(p_chain or []), here], p_session, sid
    return None  # the calling session's origin is not known yet: wait for it



@dataclass(frozen=True)
class Origin:
    """Who is behind a set of role-session events: the agent (as the store attributes the first
    ``AssumeRole`` of the chain), its home account, and the chain of roles it went through."""

    agent: str
    account: str | None
    chain: list[str]


def origin_of(con: duckdb.DuckDBPyConnection, event_ids: list[str], first: datetime, last: datetime) -> Origin | None:
    """The origin most of these events (made between ``first`` and ``last``) trace back to, or
    None when none of them was made by a linked role session with a known origin. Reads the links
    of that time span only."""
    row = first_row(con.execute(
        """
        SELECT s.origin_session, any_value(s.origin_account), any_value(s.chain ORDER BY s.started DESC), count(*) AS n
        FROM session_links l JOIN role_sessions s USING (session_id)
        WHERE l.event_time BETWEEN ? AND ? AND list_contains(?, l.event_id) AND l.status = 'linked'
          AND s.origin_status = 'known' AND s.origin_session IS NOT NULL
        GROUP BY s.origin_session ORDER BY n DESC, s.origin_session LIMIT 1
        """, [first, last, event_ids]))
    if row is None:
        return None
    agent = first_row(con.execute(
        "SELECT e.agent FROM events e WHERE e.event_time = (SELECT started FROM role_sessions WHERE session_id = $1) "
        "AND e.event_id = $1", [row[0]]))
    return Origin(str(agent[0]), row[1], list(row[2] or [])) if agent else None
