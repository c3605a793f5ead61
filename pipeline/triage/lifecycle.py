"""Triage: a finding's lifecycle, suppressions, and the numbers to tune by.

* **Lifecycle.** ``open`` -> ``acknowledged`` -> ``resolved``, or ``false_positive``; every change
  is a row of ``finding_status_changes`` (who, when, why) and never overwritten. Slack hears of it
  as a reply in the finding's thread (``pipeline.service.alerting.outbox``). A finding that fires again
  after it was resolved becomes a new finding that names the earlier one (``previous_id``).
* **Suppressions.** "This is expected", said once: a detector, optionally narrowed to an agent, an
  action (``*`` wildcards), a source network and an error code, with a reason, an author and an
  expiry (90 days unless given). A new finding is suppressed when every one of its events matches;
  it is still stored, with status ``suppressed`` and the suppression's id, but not alerted.
  Removing or expiring a suppression keeps its row, so ``suppress list --all`` is the audit trail.
  Suppressions round-trip through YAML (``config/suppressions.yaml``) to be reviewed like code.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from models.policy import glob
from pipeline.core.errors import UsageError
from pipeline.core.times import iso, utcnow
from pipeline.store.store import Store, first_row

TRIAGE_STATUSES = ("acknowledged", "resolved", "false_positive")
STATUSES = ("open", *TRIAGE_STATUSES, "suppressed")
DEFAULT_SUPPRESSION = timedelta(days=90)
MIN_ID_PREFIX = 6
_SUPPRESSION_COLUMNS = ("id", "detector", "agent", "action", "source_cidr", "error_code", "reason", "created_by",
                        "created_at", "expires_at", "removed_by", "removed_at", "removed_reason", "imported_by",
                        "imported_at", "replaces")
_YAML_KEYS = ("id", "detector", "agent", "action", "source_cidr", "error_code", "reason", "created_by",
              "created_at", "expires_at")


def default_author() -> str:
    """Who is acting, when ``--by`` is not given: ``$TRAILWARDEN_USER``, else the login name."""
    try:
        return os.environ.get("TRAILWARDEN_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- finding ids and statuses ----------------------------------------------------------------------
def resolve_finding_ids(store: Store, given: Sequence[str]) -> list[str]:
    """Full ids for ids or unique prefixes (at least 6 characters, as tables show them shortened).
    Every unknown or ambiguous one is named in a single error."""
    out: list[str] = []
    problems: list[str] = []
    for text in given:
        key = text.strip()
        if len(key) < MIN_ID_PREFIX:
            problems.append(f"{text!r} (give at least {MIN_ID_PREFIX} characters)")
            continue
        rows = [r[0] for r in store.con.execute(
            "SELECT id FROM findings WHERE starts_with(id, ?) ORDER BY id LIMIT 3", [key]).fetchall()]
        if not rows:
            problems.append(f"{text!r} (no such finding)")
        elif len(rows) > 1 and key not in rows:
            problems.append(f"{text!r} (ambiguous: {', '.join(rows[:2])}, ...)")
        else:
            out.append(key if key in rows else rows[0])
    if problems:
        raise UsageError("unknown finding id(s): " + "; ".join(problems), key="ID")
    return list(dict.fromkeys(out))


@dataclass
class StatusChange:
    finding_id: str
    old: str
    new: str
    change_id: int | None  # None: nothing changed (it already had that status)


def set_status(store: Store, ids: Sequence[str], status: str, *, by: str, reason: str,
               now: datetime | None = None) -> list[StatusChange]:
    """Move findings to ``status`` (one of :data:`TRIAGE_STATUSES`), recording who and why; all in
    one transaction. A finding already in that status is left as it is."""
    if status not in TRIAGE_STATUSES:
        raise UsageError(f"status must be one of {', '.join(TRIAGE_STATUSES)}", key="STATUS")
    by, reason = _required(by, "--by"), _required(reason, "--reason")
    now = now or utcnow()
    changes: list[StatusChange] = []
    with store.transaction() as con:
        for fid in ids:
            row = first_row(con.execute("SELECT status FROM findings WHERE id = ?", [fid]))
            if row is None:
                raise UsageError(f"unknown finding id: {fid}", key="ID")
            old = str(row[0])
            if old == status:
                changes.append(StatusChange(fid, old, status, None))
                continue
            change = first_row(con.execute(
                "INSERT INTO finding_status_changes (finding_id, old_status, new_status, changed_by, reason, "
                "changed_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id", [fid, old, status, by, reason, now]))
            con.execute("UPDATE findings SET status = ?, updated_at = ? WHERE id = ?", [status, now, fid])
            changes.append(StatusChange(fid, old, status, int(change[0]) if change else None))
        _refresh_incidents(con, [c.finding_id for c in changes if c.change_id is not None])
    return changes


def _refresh_incidents(con: Any, finding_ids: Sequence[str]) -> None:
    """The incidents of changed findings take their new status (and who set it) in the same
    transaction, so the incident's Slack message is owed an update from the moment it commits."""
    from pipeline.detection.incidents import refresh

    if not finding_ids:
        return
    for (iid,) in con.execute("SELECT DISTINCT incident_id FROM findings WHERE list_contains(?, id) "
                              "AND incident_id IS NOT NULL", [list(finding_ids)]).fetchall():
        refresh(con, iid)


# what each triage of a whole incident changes: the findings still in one of these states
INCIDENT_TRIAGE_FROM = {"acknowledged": ("open",), "resolved": ("open", "acknowledged"),
                        "false_positive": ("open", "acknowledged")}


def set_incident_status(store: Store, incident: str, status: str, *, by: str, reason: str,
                        now: datetime | None = None) -> list[StatusChange]:
    """Triage a whole incident: every finding of it still open (acknowledge), or open or
    acknowledged (resolve, false positive), moves to ``status``, recorded per finding exactly as
    :func:`set_status` records it (who, why, when). Suppressed findings stay as they are."""
    if status not in INCIDENT_TRIAGE_FROM:
        raise UsageError(f"status must be one of {', '.join(TRIAGE_STATUSES)}", key="STATUS")
    ids = [r[0] for r in store.con.execute(
        "SELECT id FROM findings WHERE incident_id = ? AND list_contains(?, status) ORDER BY first_seen, id",
        [incident, list(INCIDENT_TRIAGE_FROM[status])]).fetchall()]
    return set_status(store, ids, status, by=by, reason=reason, now=now) if ids else []


def status_history(store: Store, finding_id: str) -> list[dict[str, Any]]:
    cols = ("id", "finding_id", "old_status", "new_status", "changed_by", "reason", "changed_at")
    rows = store.con.execute(
        f"SELECT {', '.join(cols)} FROM finding_status_changes WHERE finding_id = ? ORDER BY id",  # noqa: S608
        [finding_id]).fetchall()
    return [dict(zip(cols, r, strict=True)) for r in rows]


def last_resolution(con: Any, finding_id: str) -> dict[str, Any] | None:
    """Who resolved a finding, when and why (for the alert of its re-fire)."""
    row = first_row(con.execute(
        "SELECT changed_by, changed_at, reason FROM finding_status_changes WHERE finding_id = ? "
        "AND new_status = 'resolved' ORDER BY id DESC LIMIT 1", [finding_id]))
    return {"by": row[0], "at": row[1], "reason": row[2]} if row else None


def _required(value: str | None, key: str) -> str:
    text = (value or "").strip()
    if not text:
        raise UsageError(f"{key} must not be empty", key=key)
    return text


# -- suppressions ----------------------------------------------------------------------------------
@dataclass
class Suppression:
    id: str
    detector: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    agent: str | None = None
    action: str | None = None
    source_cidr: str | None = None
    error_code: str | None = None
    removed_by: str | None = None
    removed_at: datetime | None = None
    removed_reason: str | None = None
    imported_by: str | None = None   # who loaded this row with `suppress import` (None: `suppress add`)
    imported_at: datetime | None = None
    replaces: str | None = None      # the suppression this version replaced (ended by the same import)
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)  # keys a YAML entry set
    _network: Any = field(default=None, repr=False, compare=False)
    _action: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._network = ipaddress.ip_network(self.source_cidr, strict=False) if self.source_cidr else None
        self._action = glob(self.action, ignore_case=True) if self.action else None

    @property
    def broad(self) -> bool:
        """A whole detector, for every agent, with nothing narrowing it. A filter that matches
        everything (a /0 network, an action of only ``*`` and ``:``) narrows nothing."""
        return not (self.agent or self.error_code or (self.action and not self.catch_all_filters().get("action"))
                    or (self.source_cidr and not self.catch_all_filters().get("source_ip")))

    def catch_all_filters(self) -> dict[str, str]:
        """The filters given that match every event (``{"source_ip": "0.0.0.0/0"}``)."""
        out = {}
        if self._network is not None and self._network.prefixlen == 0:
            out["source_ip"] = str(self.source_cidr)
        if self.action and is_catch_all_action(self.action):
            out["action"] = self.action
        return out

    @property
    def needs_events(self) -> bool:
        return bool(self.action or self.source_cidr or self.error_code)

    def state(self, now: datetime) -> str:
        if self.removed_at is not None:
            return "removed"
        return "expired" if self.expires_at <= now else "active"

    def scope(self) -> str:
        parts = [f"detector={self.detector}"]
        parts += [f"{k}={v}" for k, v in (("agent", self.agent), ("action", self.action),
                                          ("source_ip", self.source_cidr), ("error_code", self.error_code)) if v]
        return " ".join(parts)

    def matches(self, detector: str, agent: str, events: Sequence[tuple[str, str | None, str | None]]) -> bool:
        """Does it cover a finding: the detector, the agent, and every event's (action, source IP,
        error code)? A narrowed suppression covers nothing it cannot check."""
        if detector != self.detector or (self.agent and agent != self.agent):
            return False
        if not self.needs_events:
            return True
        return bool(events) and all(self._event_matches(*e) for e in events)

    def _event_matches(self, action: str, source_ip: str | None, error_code: str | None) -> bool:
        if self._action is not None and not self._action.fullmatch(action):
            return False
        if self.error_code and (error_code or "") != self.error_code:
            return False
        if self._network is not None:
            try:
                return ipaddress.ip_address((source_ip or "").strip()) in self._network
            except ValueError:
                return False  # "Internal", masked or empty: not provably inside
        return True

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _SUPPRESSION_COLUMNS}
        if now is not None:
            out["state"] = self.state(now)
        return out


def new_suppression_id() -> str:
    return "sup-" + secrets.token_hex(4)


def is_catch_all_action(pattern: str) -> bool:
    """``*``, ``*:*`` and the like: an action glob that matches every action."""
    return set(pattern.strip()) <= {"*", ":"} and "*" in pattern


def broad_message(s: Suppression, hidden: Sequence[dict[str, Any]]) -> str:
    """Why a broad suppression is refused: what it would have hidden over the last 30 days."""
    catch_all = s.catch_all_filters()
    text = (f"this hides every {s.detector} finding for every agent ({len(hidden)} in the last 30 days"
            + (f", e.g. {hidden[0]['id'][:12]}: {hidden[0]['summary'][:80]}" if hidden else "") + ")")
    if catch_all:
        text += (" (" + " and ".join(f"{k} {v}" for k, v in catch_all.items())
                 + (" match" if len(catch_all) > 1 else " matches") + " everything)")
    return text


def validate_suppression(s: Suppression, *, detectors: Iterable[str], known_agents: Iterable[str],
                         now: datetime, source: str = "") -> None:
    """Exit-2 errors naming the offending key (and the file, for imports)."""
    where = f"{source}: " if source else ""
    if s.detector not in set(detectors):
        raise UsageError(f"{where}unknown detector {s.detector!r} (known: {', '.join(sorted(detectors))})",
                         key="--detector")
    if s.agent and s.agent not in set(known_agents):
        raise UsageError(f"{where}unknown agent {s.agent!r}: not in the inventory and never seen in the store",
                         key="--agent")
    if s.action and ":" not in s.action and not is_catch_all_action(s.action):
        raise UsageError(f"{where}action must look like service:Action (wildcards allowed), not {s.action!r}",
                         key="--action")
    if not s.reason.strip() or not s.created_by.strip():
        raise UsageError(f"{where}a suppression needs a reason and an author", key="--reason")
    if s.expires_at <= s.created_at:
        raise UsageError(f"{where}--until must be after the suppression starts", key="--until")


def parse_cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise UsageError(f"not an IP address or CIDR network: {text!r}", key="--source-ip") from None


def add_suppression(store: Store, s: Suppression) -> None:
    with store.transaction() as con:
        con.execute(f"INSERT INTO suppressions ({', '.join(_SUPPRESSION_COLUMNS)}) "  # noqa: S608
                    f"VALUES ({', '.join('?' * len(_SUPPRESSION_COLUMNS))})",
                    [getattr(s, k) for k in _SUPPRESSION_COLUMNS])


def remove_suppression(store: Store, suppression_id: str, *, by: str, reason: str,
                       now: datetime | None = None) -> Suppression:
    now = now or utcnow()
    by, reason = _required(by, "--by"), _required(reason, "--reason")
    found = [s for s in load_suppressions(store, include_inactive=True) if s.id == suppression_id]
    if not found:
        raise UsageError(f"unknown suppression id: {suppression_id}", key="ID")
    if found[0].removed_at is not None:
        raise UsageError(f"suppression {suppression_id} was already removed by {found[0].removed_by} "
                         f"at {found[0].removed_at:%Y-%m-%d %H:%M}Z", key="ID")
    with store.transaction() as con:
        con.execute("UPDATE suppressions SET removed_by = ?, removed_at = ?, removed_reason = ? WHERE id = ?",
                    [by, now, reason, suppression_id])
    found[0].removed_by, found[0].removed_at, found[0].removed_reason = by, now, reason
    return found[0]


def load_suppressions(store: Store, *, include_inactive: bool = False, now: datetime | None = None,
                      con: Any = None) -> list[Suppression]:
    con = con or store.con
    sql = f"SELECT {', '.join(_SUPPRESSION_COLUMNS)} FROM suppressions"  # noqa: S608 - fixed columns
    params: list[Any] = []
    if not include_inactive:
        sql += " WHERE removed_at IS NULL AND expires_at > ?"
        params.append(now or utcnow())
    rows = con.execute(sql + " ORDER BY created_at, id", params).fetchall()
    return [Suppression(**dict(zip(_SUPPRESSION_COLUMNS, r, strict=True))) for r in rows]


def finding_event_facts(con: Any, event_ids: Sequence[str]) -> list[tuple[str, str | None, str | None]]:
    """(RAM action, source IP, error code) of a finding's stored events."""
    from models.mapping import ram_code

    rows = con.execute("SELECT service_name, event_name, source_ip, error_code FROM events "
                       "WHERE list_contains(?, event_id)", [list(event_ids)]).fetchall()
    return [(f"{ram_code(service)}:{name or 'Unknown'}", ip, code) for service, name, ip, code in rows]


def matching_suppression(con: Any, suppressions: Sequence[Suppression], detector: str, agent: str,
                         event_ids: Sequence[str]) -> Suppression | None:
    candidates = [s for s in suppressions if s.detector == detector and (not s.agent or s.agent == agent)]
    if not candidates:
        return None
    facts = finding_event_facts(con, event_ids) if any(s.needs_events for s in candidates) else []
    return next((s for s in candidates if s.matches(detector, agent, facts)), None)


def would_hide(store: Store, s: Suppression, since: datetime) -> list[dict[str, Any]]:
    """The findings of the last days this suppression would have covered (for ``--force`` and the
    confirmation ``suppress add`` prints)."""
    rows = store.con.execute(
        "SELECT id, agent, severity, summary, event_ids FROM findings WHERE detector = ? AND last_seen >= ? "
        "AND (? IS NULL OR agent = ?) ORDER BY last_seen DESC", [s.detector, since, s.agent, s.agent]).fetchall()
    out = []
    for fid, agent, severity, summary, event_ids in rows:
        facts = finding_event_facts(store.con, event_ids) if s.needs_events else []
        if s.matches(s.detector, agent, facts):
            out.append({"id": fid, "agent": agent, "severity": severity, "summary": summary})
    return out


# -- YAML ------------------------------------------------------------------------------------------
def export_yaml(suppressions: Sequence[Suppression]) -> str:
    items = []
    for s in suppressions:
        item = {k: getattr(s, k) for k in _YAML_KEYS if getattr(s, k) is not None}
        for key in ("created_at", "expires_at"):
            item[key] = iso(item[key])
        items.append(item)
    header = ("# trailwarden suppressions: findings matching one are stored as 'suppressed' and not alerted.\n"
              "# Review changes here like code; load with `trailwarden suppress import FILE`.\n")
    return header + yaml.safe_dump({"suppressions": items}, sort_keys=False, allow_unicode=True, width=100)


def parse_yaml(path: Path, now: datetime, by: str | None = None) -> list[Suppression]:
    """Suppressions from a YAML file; a bad one exits 2 naming the file and the key. An entry
    without ``created_by`` is authored by ``by`` (the importer) when given."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read ({exc.strerror})", path=str(path)) from None
    except yaml.YAMLError as exc:
        raise UsageError(f"not valid YAML ({str(exc).splitlines()[0]})", path=str(path)) from None
    items = (data or {}).get("suppressions") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UsageError(f"{path}: suppressions: expected a list", key="suppressions")
    out = []
    for i, item in enumerate(items):
        where = f"{path}: suppressions[{i}]"
        if not isinstance(item, dict):
            raise UsageError(f"{where}: expected a mapping", key="suppressions")
        unknown = sorted(set(item) - set(_YAML_KEYS))
        if unknown:
            raise UsageError(f"{where}.{unknown[0]}: unknown key", key=unknown[0])
        for key in ("detector", "reason") if by else ("detector", "reason", "created_by"):
            if not str(item.get(key) or "").strip():
                raise UsageError(f"{where}.{key}: required", key=key)
        created = _when(item.get("created_at"), now, f"{where}.created_at")
        expires = _when(item.get("expires_at"), created + DEFAULT_SUPPRESSION, f"{where}.expires_at")
        try:
            cidr = str(ipaddress.ip_network(str(item["source_cidr"]), strict=False)) if item.get("source_cidr") else None
        except ValueError:
            raise UsageError(f"{where}.source_cidr: not an IP network: {item['source_cidr']!r}",
                             key="source_cidr") from None
        out.append(Suppression(
            id=str(item.get("id") or new_suppression_id()), detector=str(item["detector"]),
            reason=str(item["reason"]), created_by=_opt(item.get("created_by")) or str(by), created_at=created,
            expires_at=expires, agent=_opt(item.get("agent")), action=_opt(item.get("action")), source_cidr=cidr,
            error_code=_opt(item.get("error_code")), given=frozenset(k for k, v in item.items() if _opt(v))))
    ids = [s.id for s in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UsageError(f"{path}: suppression id {dupes[0]} appears twice", key="id")
    return out


def import_suppressions(store: Store, items: Sequence[Suppression], *, by: str, force: bool = False,
                        source: str = "", now: datetime | None = None) -> dict[str, Any]:
    """Load suppressions by id; nothing is overwritten. A new id is added. An entry that differs from
    the current version of its suppression (following ``replaces``) ends that version (removed by
    ``by``, "replaced by import") and is added as a new row, with a new id, that ``replaces`` it, so
    ``suppress list --all`` shows both. A removed one stays removed. Every row added records the
    importer (``imported_by``, ``imported_at``); its ``created_by`` is the file's, else ``by``.
    An entry to add or change that is broad is refused (nothing is written) unless ``force``."""
    by, now = _required(by, "--by"), now or utcnow()
    plan, result = _plan_import(store, items, by=by, force=force, source=source, now=now)
    with store.transaction() as con:
        for s, old in plan:
            if old is not None:
                con.execute("UPDATE suppressions SET removed_by = ?, removed_at = ?, removed_reason = ? WHERE id = ?",
                            [by, now, "replaced by import", old.id])
            con.execute(f"INSERT INTO suppressions ({', '.join(_SUPPRESSION_COLUMNS)}) "  # noqa: S608
                        f"VALUES ({', '.join('?' * len(_SUPPRESSION_COLUMNS))})",
                        [getattr(s, k) for k in _SUPPRESSION_COLUMNS])
            result["updated" if old is not None else "added"] += 1
            result["written"].append(s)
    return result


def _plan_import(store: Store, items: Sequence[Suppression], *, by: str, force: bool, source: str,
                 now: datetime) -> tuple[list[tuple[Suppression, Suppression | None]], dict[str, Any]]:
    """The rows to insert, each with the version it ends (None: a new suppression); nothing written."""
    rows = {s.id: s for s in load_suppressions(store, include_inactive=True)}
    successor = {s.replaces: s.id for s in rows.values() if s.replaces}
    plan: list[tuple[Suppression, Suppression | None]] = []
    result: dict[str, Any] = {"added": 0, "updated": 0, "unchanged": 0, "left_removed": [], "written": []}
    for i, s in enumerate(items):
        current = rows.get(s.id) if "id" in s.given else _same_filters(rows.values(), s, now)
        while current is not None and current.id in successor:
            current = rows[successor[current.id]]
        if current is not None:
            s = _as_new_version(s, current)
            if not any(getattr(current, k) != getattr(s, k) for k in _COMPARED_KEYS
                       if k in s.given or k not in ("created_by", "created_at")):
                result["unchanged"] += 1
                continue
            if current.removed_at is not None:
                result["left_removed"].append(current.id)
                continue
        if s.broad and not force:
            hidden = would_hide(store, s, now - timedelta(days=30))
            raise UsageError(f"{source}: suppressions[{i}] ({items[i].id}): {broad_message(s, hidden)}; narrow it, "
                             "or pass `suppress import --force`", key="--force")
        s.imported_by, s.imported_at = by, now
        plan.append((s, current))
        if current is not None:  # a later entry for the same suppression compares with this version
            rows[s.id], successor[current.id] = s, s.id
    return plan, result


_COMPARED_KEYS = tuple(k for k in _YAML_KEYS if k != "id")
_FILTER_KEYS = ("detector", "agent", "action", "source_cidr", "error_code")


def _same_filters(rows: Iterable[Suppression], s: Suppression, now: datetime) -> Suppression | None:
    """For an entry written without an ``id``: the active suppression with exactly its filters, so
    importing the same file twice does not add it twice."""
    return next((r for r in rows if r.removed_at is None and r.expires_at > now
                 and all(getattr(r, k) == getattr(s, k) for k in _FILTER_KEYS)), None)


def _as_new_version(s: Suppression, current: Suppression) -> Suppression:
    """An entry for an existing suppression, as the row that would replace it: a new id, and the
    current version's start and expiry where the file does not give them."""
    created = s.created_at if "created_at" in s.given else current.created_at
    expires = s.expires_at if "expires_at" in s.given else (
        current.expires_at if "created_at" not in s.given else created + DEFAULT_SUPPRESSION)
    return Suppression(id=new_suppression_id(), detector=s.detector, reason=s.reason, created_by=s.created_by,
                       created_at=created, expires_at=expires, agent=s.agent, action=s.action,
                       source_cidr=s.source_cidr, error_code=s.error_code, replaces=current.id, given=s.given)


def _opt(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _when(value: Any, default: datetime, key: str) -> datetime:
    if value is None or value == "":
        return default
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=default.tzinfo)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=default.tzinfo)
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{key}: not an ISO time: {value!r}", key=key.rsplit(".", 1)[-1]) from None
    return when if when.tzinfo else when.replace(tzinfo=default.tzinfo)


# -- stats -----------------------------------------------------------------------------------------
def finding_stats(store: Store, since: datetime, top: int = 10) -> dict[str, Any]:
    """Per detector and per agent: counts by status and the false-positive rate (false positives
    among the findings a human triaged); the noisiest dedup keys. Covers findings last seen since
    ``since``; the totals are exactly what ``findings --status all --since`` lists."""
    def by(column: str) -> list[dict[str, Any]]:
        rows = store.con.execute(
            f"SELECT {column}, status, count(*) FROM findings WHERE last_seen >= ? GROUP BY ALL",  # noqa: S608
            [since]).fetchall()
        table: dict[str, dict[str, int]] = {}
        for key, status, n in rows:
            table.setdefault(key, dict.fromkeys(STATUSES, 0))[status] = int(n)
        out = []
        for key, counts in sorted(table.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
            triaged = sum(counts[s] for s in TRIAGE_STATUSES)
            out.append({column: key, "total": sum(counts.values()), **counts,
                        "false_positive_rate": round(counts["false_positive"] / triaged, 3) if triaged else None})
        return out

    noisy = store.con.execute(
        "SELECT detector, agent, dedup_key, count(*) AS findings, sum(event_count) AS events, "
        "count(*) FILTER (WHERE status = 'false_positive') AS false_positives FROM findings "
        "WHERE last_seen >= ? GROUP BY ALL ORDER BY findings DESC, events DESC, detector, agent, dedup_key "
        "LIMIT ?", [since, top]).fetchall()
    total = first_row(store.con.execute("SELECT count(*) FROM findings WHERE last_seen >= ?", [since]))
    return {
        "since": since, "total": int(total[0]) if total else 0,
        "by_detector": by("detector"), "by_agent": by("agent"),
        "noisiest_keys": [{"detector": d, "agent": a, "key": k, "findings": int(n), "events": int(e),
                           "false_positives": int(fp)} for d, a, k, n, e, fp in noisy],
    }
