"""RAM snapshots in the store: each one saved whole in one transaction (a kill -9 leaves it all or
nothing), none ever changed afterwards, documents stored once by their SHA-256 (migration
``0017_ram.sql``). Loading gives back the :class:`models.ram.Snapshot`.

Cost: a snapshot is its account's size in rows (an account of 1,000 users, 300 roles and 2,000
policies is ~6,000 small rows); documents already stored cost nothing more.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pyarrow as pa

from models.ram import (
    AccessKey,
    Group,
    Policy,
    PolicyKey,
    Role,
    Snapshot,
    SyncError,
    User,
    document_hash,
)
from pipeline.store.store import Store, first_row

_TABLES = {
    "ram_principals": ("snapshot_id", "kind", "name", "principal_id", "arn", "created_at", "console", "mfa",
                       "last_login", "trust_sha256", "service_linked"),
    "ram_memberships": ("snapshot_id", "group_name", "user_name"),
    "ram_attachments": ("snapshot_id", "principal", "policy_type", "policy_name"),
    "ram_policies": ("snapshot_id", "policy_type", "policy_name", "version", "updated_at", "document_sha256", "error"),
    "ram_access_keys": ("snapshot_id", "user_name", "access_key_id", "status", "created_at", "last_used"),
    "ram_sync_errors": ("snapshot_id", "principal", "call", "code", "message"),
}
_TIMES = frozenset({"created_at", "last_login", "updated_at", "last_used"})
_BOOLS = frozenset({"console", "mfa", "service_linked"})


def save_snapshot(store: Store, snapshot: Snapshot, *, source: str, calls: int = 0,
                  seconds: float | None = None) -> int:
    """Store ``snapshot`` as a new dated snapshot; returns its id."""
    documents: dict[str, str] = {}

    def keep(document: Any) -> str | None:
        if document is None:
            return None
        sha = document_hash(document)
        documents.setdefault(sha, json.dumps(document, sort_keys=True, ensure_ascii=False))
        return sha

    with store.transaction() as con:
        row = first_row(con.execute(
            "INSERT INTO ram_snapshots (taken_at, account, source, users, groups, roles, policies, access_keys, "
            "errors, calls, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [snapshot.taken_at, snapshot.account, source, len(snapshot.users), len(snapshot.groups),
             len(snapshot.roles), len(snapshot.policies), len(snapshot.keys), len(snapshot.errors), calls, seconds]))
        assert row is not None
        sid = int(row[0])
        rows = _rows(snapshot, sid, keep)
        _insert_documents(store, documents)
        for table, values in rows.items():
            _insert(store, table, values)
    snapshot.id = sid
    return sid


def _rows(s: Snapshot, sid: int, keep: Any) -> dict[str, list[tuple[Any, ...]]]:
    principals: list[tuple[Any, ...]] = [(sid, "user", u.name, u.id, None, u.created, u.console, u.mfa, u.last_login, None, None)
                  for u in s.users.values()]
    principals += [(sid, "group", g.name, None, None, None, None, None, None, None, None) for g in s.groups.values()]
    principals += [(sid, "role", r.name, r.id, r.arn, r.created, None, None, None, keep(r.trust), r.service_linked)
                   for r in s.roles.values()]
    attachments = [(sid, f"user/{u.name}", t, n) for u in s.users.values() for t, n in u.policies]
    attachments += [(sid, f"group/{g.name}", t, n) for g in s.groups.values() for t, n in g.policies]
    attachments += [(sid, f"role/{r.name}", t, n) for r in s.roles.values() for t, n in r.policies]
    return {
        "ram_principals": principals,
        "ram_memberships": [(sid, g, u.name) for u in s.users.values() for g in u.groups],
        "ram_attachments": attachments,
        "ram_policies": [(sid, p.type, p.name, p.version, p.updated, keep(p.document), p.error)
                         for p in s.policies.values()],
        "ram_access_keys": [(sid, k.user, k.id, k.status, k.created, k.last_used) for k in s.keys.values()],
        "ram_sync_errors": [(sid, e.principal, e.call, e.code, e.message) for e in s.errors],
    }


def _insert_documents(store: Store, documents: dict[str, str]) -> None:
    if not documents:
        return
    table = pa.table({"sha256": list(documents), "document": list(documents.values())})
    store.con.register("_tw_docs", table)
    try:
        store.con.execute("INSERT OR IGNORE INTO ram_documents SELECT sha256, document FROM _tw_docs")
    finally:
        store.con.unregister("_tw_docs")


def _insert(store: Store, table: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    columns = _TABLES[table]
    arrays = {}
    for i, name in enumerate(columns):
        values = [r[i] for r in rows]
        kind = (pa.timestamp("us", tz="UTC") if name in _TIMES else pa.bool_() if name in _BOOLS
                else pa.int64() if name == "snapshot_id" else pa.string())
        arrays[name] = pa.array(values, kind)
    store.con.register("_tw_rows", pa.table(arrays))
    try:
        store.con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM _tw_rows")  # noqa: S608 - fixed names
    finally:
        store.con.unregister("_tw_rows")


# -- reading -----------------------------------------------------------------------------------------
def latest_snapshot_id(store: Store, before: int | None = None) -> int | None:
    """The newest snapshot (or the newest before ``before``)."""
    row = first_row(store.con.execute(
        "SELECT max(id) FROM ram_snapshots WHERE ? IS NULL OR id < ?", [before, before]))
    return int(row[0]) if row and row[0] is not None else None


def snapshot_ids_after(store: Store, after: int) -> list[int]:
    return [int(r[0]) for r in store.con.execute("SELECT id FROM ram_snapshots WHERE id > ? ORDER BY id", [after]).fetchall()]


def has_ram_tables(store: Store) -> bool:
    return bool(store.con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'ram_snapshots'").fetchall())


def load_snapshot(store: Store, snapshot_id: int | None = None) -> Snapshot | None:
    """A stored snapshot (the newest when no id is given), or None when there is none."""
    if not has_ram_tables(store):
        return None
    sid = snapshot_id if snapshot_id is not None else latest_snapshot_id(store)
    if sid is None:
        return None
    head = first_row(store.con.execute("SELECT taken_at, account FROM ram_snapshots WHERE id = ?", [sid]))
    if head is None:
        return None
    snapshot = Snapshot(taken_at=head[0], account=head[1], id=sid)
    documents = _documents(store, sid)
    attached = _attachments(store, sid)
    members = _members(store, sid)
    _load_principals(store, sid, snapshot, documents, attached, members)
    for t, n, version, updated, sha, error in store.con.execute(
            "SELECT policy_type, policy_name, version, updated_at, document_sha256, error FROM ram_policies "
            "WHERE snapshot_id = ?", [sid]).fetchall():
        snapshot.policies[(t, n)] = Policy(t, n, version, updated, documents.get(sha) if sha else None, error)
    for user, key, status, created, last in store.con.execute(
            "SELECT user_name, access_key_id, status, created_at, last_used FROM ram_access_keys WHERE snapshot_id = ?",
            [sid]).fetchall():
        snapshot.keys[key] = AccessKey(key, user, status, created, last)
    snapshot.errors = [SyncError(*r) for r in store.con.execute(
        "SELECT principal, call, code, message FROM ram_sync_errors WHERE snapshot_id = ? ORDER BY principal, call",
        [sid]).fetchall()]
    return snapshot


def _documents(store: Store, sid: int) -> dict[str, dict[str, Any]]:
    rows = store.con.execute(
        "SELECT sha256, document FROM ram_documents WHERE sha256 IN ("
        " SELECT document_sha256 FROM ram_policies WHERE snapshot_id = $s"
        " UNION SELECT trust_sha256 FROM ram_principals WHERE snapshot_id = $s)", {"s": sid}).fetchall()
    return {sha: json.loads(text) for sha, text in rows}


def _attachments(store: Store, sid: int) -> dict[str, list[PolicyKey]]:
    out: dict[str, list[PolicyKey]] = {}
    for principal, t, n in store.con.execute(
            "SELECT principal, policy_type, policy_name FROM ram_attachments WHERE snapshot_id = ? "
            "ORDER BY principal, policy_type, policy_name", [sid]).fetchall():
        out.setdefault(principal, []).append((t, n))
    return out


def _members(store: Store, sid: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for group, user in store.con.execute(
            "SELECT group_name, user_name FROM ram_memberships WHERE snapshot_id = ? ORDER BY group_name", [sid]).fetchall():
        out.setdefault(user, []).append(group)
    return out


def _load_principals(store: Store, sid: int, snapshot: Snapshot, documents: dict[str, dict[str, Any]],
                     attached: dict[str, list[PolicyKey]], members: dict[str, list[str]]) -> None:
    for kind, name, pid, arn, created, console, mfa, last, trust, linked in store.con.execute(
            "SELECT kind, name, principal_id, arn, created_at, console, mfa, last_login, trust_sha256, service_linked "
            "FROM ram_principals WHERE snapshot_id = ?", [sid]).fetchall():
        policies = tuple(attached.get(f"{kind}/{name}", ()))
        if kind == "user":
            snapshot.users[name] = User(name, pid, created, console, mfa, last, policies, tuple(members.get(name, ())))
        elif kind == "group":
            snapshot.groups[name] = Group(name, policies)
        else:
            snapshot.roles[name] = Role(name, pid, arn, created, documents.get(trust) if trust else None, policies,
                                        bool(linked))


def known_documents(store: Store) -> dict[tuple[str, str, str | None, datetime | None], dict[str, Any]]:
    """The documents of the newest snapshot's readable policies, by (type, name, version, update
    time): what the next sync need not ask for again."""
    sid = latest_snapshot_id(store) if has_ram_tables(store) else None
    if sid is None:
        return {}
    rows = store.con.execute(
        "SELECT p.policy_type, p.policy_name, p.version, p.updated_at, d.document FROM ram_policies p "
        "JOIN ram_documents d ON d.sha256 = p.document_sha256 WHERE p.snapshot_id = ?", [sid]).fetchall()
    return {(t, n, v, u): json.loads(doc) for t, n, v, u, doc in rows}


def sync_status(store: Store, errors_shown: int = 5) -> dict[str, Any] | None:
    """The newest snapshot for ``status``: when, how big, how many calls failed (the first few)."""
    if not has_ram_tables(store):
        return None
    head = first_row(store.con.execute(
        "SELECT id, taken_at, source, users, groups, roles, policies, access_keys, errors, calls, seconds "
        "FROM ram_snapshots ORDER BY id DESC LIMIT 1"))
    if head is None:
        return None
    keys = ("snapshot", "taken_at", "source", "users", "groups", "roles", "policies", "access_keys", "errors",
            "calls", "seconds")
    out: dict[str, Any] = dict(zip(keys, head, strict=True))
    out["first_errors"] = [dict(zip(("principal", "call", "code", "message"), r, strict=True)) for r in store.con.execute(
        "SELECT principal, call, code, message FROM ram_sync_errors WHERE snapshot_id = ? ORDER BY principal, call "
        "LIMIT ?", [head[0], errors_shown]).fetchall()]
    return out
