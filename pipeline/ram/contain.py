"""``trailwarden contain``: the incident playbook for one agent (identify, preserve, revoke), and
its exact reversal.

The plan, read live from RAM (read-only calls: ``GetPolicy``, ``ListAccessKeys``,
``ListPoliciesForUser``, ``GetRole``, ``ListPoliciesForRole``):

1. write the agent's evidence first: the replay JSON export (90 days, with its SHA-256) to a file;
2. create the deny-all custom policy :data:`DENY_POLICY` once per account (an existing one is
   used only if it is exactly deny-all: a policy of that name that allows anything is refused);
3. set every active AccessKey of each of the agent's RAM users to ``Inactive``;
4. attach the deny-all policy to each of its users and roles (it also stops role sessions
   already issued: an explicit deny wins over every allow, at each call).

Execution (``--execute``) records each call in ``containment_steps`` (status ``calling``) and
commits *before* making it, then records its answer: a kill -9 at any moment leaves at most one
call whose outcome is unknown, and a re-run resolves it (``EntityAlreadyExists`` or an already
inactive key for a call this containment already made counts as its own). One failing call is
recorded and the others still run (exit 1, re-run to finish); an unreachable endpoint or refused
credentials stop the run. A re-run continues the same containment (same id, same evidence).

Undo reverses exactly the calls this containment made (and those whose outcome is unknown),
latest first: each key it deactivated is set ``Active`` again and the deny-all policy is
detached where it attached it; a key that was already inactive, or a deny-all policy someone else
had attached, is left as it was. The deny-all policy itself is kept (detached) for the next
containment. Every reversal is recorded the same way (``undoes`` names the step).

Each run that changed RAM adds a line to the history of the agent's open findings (a
``finding_status_changes`` row whose ``new_status`` is ``contained`` / ``uncontained``; the
finding's own status is unchanged), which the alert outbox posts to their Slack threads.

Known gaps: an ``access-key:`` identity is followed to its user only through the last ``ram
sync`` snapshot (else the plan says so and the run fails visibly); roles the agent could assume
are not contained (their sessions are the role's); console passwords are not removed (the deny-all
policy makes a login useless).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from alibabacloud_ram20150501 import models as ram

from models.inventory import Agent, Inventory
from models.ram import Snapshot
from pipeline.core.errors import TerminalError, TrailwardenError, UsageError
from pipeline.core.times import utcnow
from pipeline.investigate.replay import write_replay
from pipeline.ram.client import CallFailed, Gone, RamApi, RamUnavailable
from pipeline.ram.snapshots import has_ram_tables
from pipeline.store.store import Store, first_row

DENY_POLICY = "TrailwardenDenyAll"
DENY_DOCUMENT: dict[str, Any] = {"Version": "1", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
PROTECTED_WHY = "so you don't disable the monitoring that would see the next incident"
OPEN = ("running", "failed", "contained", "undoing", "undo_failed")  # a containment not (fully) undone
_OURS = ("calling", "failed", "done")  # an earlier attempt of this containment: its effect is ours


class Refused(UsageError):
    """A protected agent without ``--force``."""


@dataclass
class Step:
    action: str  # write_evidence | create_deny_policy | deactivate_key | attach_deny | reactivate_key | detach_deny
    target: str  # a file, policy/NAME, key/ID, user/NAME, role/NAME
    user: str | None = None  # the key's user
    status: str = "planned"  # planned | done | already | gone | failed | skipped (done by an earlier run)
    result: str | None = None
    undoes: int | None = None

    def describe(self) -> str:
        what = {
            "write_evidence": f"write the evidence (replay JSON export, 90 days, with its SHA-256) to {self.target}",
            "create_deny_policy": f"create the custom policy {DENY_POLICY} (Deny * on *), once for the account",
            "deactivate_key": f"set AccessKey {self.target.removeprefix('key/')} of user/{self.user} to Inactive",
            "attach_deny": f"attach {DENY_POLICY} to {self.target}",
            "reactivate_key": f"set AccessKey {self.target.removeprefix('key/')} of user/{self.user} to Active again",
            "detach_deny": f"detach {DENY_POLICY} from {self.target}",
        }
        return what.get(self.action, f"{self.action} {self.target}")

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "user": self.user, "status": self.status,
                "result": self.result, "does": self.describe()}


@dataclass
class Containment:
    """A plan, or what a run did with it."""

    agent: str
    id: str | None = None  # the containment continued (or made) by this run
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the plan could not cover (a failure when run)
    status: str = "plan"  # plan | contained | failed | undone | undo_failed | nothing
    evidence: str | None = None
    evidence_sha256: str | None = None
    protected: bool = False
    forced: bool = False

    @property
    def failed(self) -> list[Step]:
        return [s for s in self.steps if s.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "containment": self.id, "status": self.status, "protected": self.protected,
                "forced": self.forced, "evidence": self.evidence, "evidence_sha256": self.evidence_sha256,
                "notes": self.notes, "steps": [s.as_dict() for s in self.steps]}


# -- the plan --------------------------------------------------------------------------------------------
def agent_of(inventory: Inventory, name: str) -> Agent:
    agent = inventory.agent(name)
    if agent is None:
        known = ", ".join(a.name for a in inventory.agents) or "none"
        raise UsageError(f"not an inventory agent: {name} (known: {known})", key="AGENT")
    return agent


def check_protected(agent: Agent, force: bool) -> None:
    if agent.protected and not force:
        raise Refused(f"{agent.name} is protected in the inventory (protected: true), so it is not contained "
                      f"without --force, {PROTECTED_WHY}")


def principals(agent: Agent, snapshot: Snapshot | None) -> tuple[list[str], list[str], list[str]]:
    """The agent's RAM users and roles, and its ``access-key:`` identities whose user no snapshot
    knows (covered only if they turn out to be a key of one of those users)."""
    users: list[str] = []
    roles: list[str] = []
    loose: list[str] = []
    for identity in agent.identities:
        kind, _, value = identity.partition(":")
        if kind == "ram-user":
            users.append(value)
        elif kind == "role":
            roles.append(value)
        elif snapshot is not None and value in snapshot.keys:
            users.append(snapshot.keys[value].user)
        else:
            loose.append(value)
    return list(dict.fromkeys(users)), list(dict.fromkeys(roles)), loose


def plan(store: Store | None, api: RamApi, inventory: Inventory, name: str, snapshot: Snapshot | None, *,
         evidence_dir: Path, force: bool = False) -> Containment:
    """What containing ``name`` takes now (RAM read live; nothing changed). Continues the agent's
    open containment when there is one."""
    agent = agent_of(inventory, name)
    out = Containment(agent.name, protected=agent.protected, forced=force and agent.protected)
    current = open_containment(store, agent.name) if store is not None else None
    earlier: dict[tuple[str, str], str] = {}
    if current is not None:
        out.id, out.evidence, out.evidence_sha256 = current["id"], current["evidence_path"], current["evidence_sha256"]
        earlier = _step_states(store, out.id) if store is not None else {}
    users, roles, loose = principals(agent, snapshot)
    listed: set[str] = set()
    evidence = out.evidence or str(evidence_dir / f"{agent.name}-{{containment}}.json")
    out.steps.append(Step("write_evidence", evidence, status="skipped" if out.evidence else "planned"))
    out.steps.append(_deny_policy_step(api, earlier))
    for user in users:
        keys = _call(api, "ListAccessKeys", api.ram.list_access_keys, ram.ListAccessKeysRequest(user_name=user))
        if keys is None:
            out.steps.append(Step("attach_deny", f"user/{user}", status="gone", result="no such user in RAM"))
            continue
        for key in (keys.access_keys.access_key if keys.access_keys and keys.access_keys.access_key else []):
            listed.add(key.access_key_id)
            state = earlier.get(("deactivate_key", f"key/{key.access_key_id}"))
            if key.status == "Active" or state in ("calling", "failed"):
                out.steps.append(Step("deactivate_key", f"key/{key.access_key_id}", user))
            elif state == "done":
                out.steps.append(Step("deactivate_key", f"key/{key.access_key_id}", user, status="skipped"))
        out.steps.append(_attach_step(api, f"user/{user}", earlier))
    for role in roles:
        if _call(api, "GetRole", api.ram.get_role, ram.GetRoleRequest(role_name=role)) is None:
            out.steps.append(Step("attach_deny", f"role/{role}", status="gone", result="no such role in RAM"))
        else:
            out.steps.append(_attach_step(api, f"role/{role}", earlier))
    out.notes = [f"access-key:{key}: its RAM user is not known (not in the last RAM snapshot, not a key of the "
                 "agent's users); run `trailwarden ram sync`, or disable the key in the console" for key in loose
                 if key not in listed]
    return out


def _deny_policy_step(api: RamApi, earlier: dict[tuple[str, str], str]) -> Step:
    step = Step("create_deny_policy", f"policy/{DENY_POLICY}")
    if earlier.get((step.action, step.target)) in ("done", "already"):
        step.status = "skipped"
        return step
    body = _call(api, "GetPolicy", api.ram.get_policy,
                 ram.GetPolicyRequest(policy_type="Custom", policy_name=DENY_POLICY))
    if body is not None:
        _check_deny_all(body)
        step.status, step.result = "already", "exists, deny-all"
    return step


def _attach_step(api: RamApi, principal: str, earlier: dict[tuple[str, str], str]) -> Step:
    """Attach the deny-all policy, unless this containment did (skipped) or it was there already
    (``already``: someone else's, left attached by undo)."""
    step = Step("attach_deny", principal)
    state = earlier.get((step.action, principal))
    if state in ("done", "already"):
        step.status = "skipped"
        return step
    kind, _, name = principal.partition("/")
    if kind == "user":
        body = _call(api, "ListPoliciesForUser", api.ram.list_policies_for_user,
                     ram.ListPoliciesForUserRequest(user_name=name))
    else:
        body = _call(api, "ListPoliciesForRole", api.ram.list_policies_for_role,
                     ram.ListPoliciesForRoleRequest(role_name=name))
    attached = [(p.policy_type, p.policy_name) for p in
                (body.policies.policy if body is not None and body.policies and body.policies.policy else [])]
    if ("Custom", DENY_POLICY) in attached and state is None:
        step.status, step.result = "already", "attached before this containment (left as it is by --undo)"
    return step


def _check_deny_all(body: Any) -> None:
    version = getattr(body, "default_policy_version", None)
    text = getattr(version, "policy_document", None)
    try:
        document = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        document = None
    if not _is_deny_all(document):
        raise TerminalError(f"RAM already has a custom policy {DENY_POLICY} that is not deny-all: trailwarden will "
                            "not attach it; delete or rename it, then run `trailwarden contain` again")


def _is_deny_all(document: Any) -> bool:
    if not isinstance(document, dict):
        return False
    statements = document.get("Statement")
    return isinstance(statements, list) and bool(statements) and all(
        isinstance(s, dict) and s.get("Effect") == "Deny" and s.get("Action") in ("*", ["*"])
        and s.get("Resource") in ("*", ["*"]) and not s.get("Condition") for s in statements)


def _call(api: RamApi, action: str, method: Callable[[Any], Any], request: Any) -> Any:
    """A read for the plan: its body, None when the entity does not exist. Any other failure
    stops the plan (a plan that guessed would not be the plan)."""
    try:
        return api.call(action, partial(lambda m, r: m(r).body, method, request))
    except Gone:
        return None
    except CallFailed as exc:
        raise TerminalError(f"RAM refused {action} ({exc.code}) while planning the containment: trailwarden's "
                            f"key needs ram:{action}") from None


# -- the store ----------------------------------------------------------------------------------------
def open_containment(store: Store | None, agent: str) -> dict[str, Any] | None:
    """The agent's latest containment that is not (fully) undone."""
    if store is None or not has_ram_tables(store):
        return None
    cols = ("id", "agent", "reason", "created_by", "started_at", "status", "forced", "evidence_path", "evidence_sha256")
    row = first_row(store.con.execute(
        f"SELECT {', '.join(cols)} FROM containments WHERE agent = ? AND status IN ?"  # noqa: S608
        " ORDER BY started_at DESC LIMIT 1", [agent, list(OPEN)]))
    return dict(zip(cols, row, strict=True)) if row else None


def _step_states(store: Store, cid: str) -> dict[tuple[str, str], str]:
    """Each (action, target) of the containment: its best state so far (done > already > calling > failed)."""
    rank = {"done": 4, "already": 3, "calling": 2, "failed": 1, "gone": 0}
    out: dict[tuple[str, str], str] = {}
    for action, target, status in store.con.execute(
            "SELECT action, target, status FROM containment_steps WHERE containment_id = ? ORDER BY id", [cid]).fetchall():
        key = (str(action), str(target))
        if key not in out or rank.get(str(status), 0) > rank.get(out[key], 0):
            out[key] = str(status)
    return out


def _carry(store: Store, cid: str, api: RamApi, step: Step) -> None:
    """One RAM call: recorded as ``calling`` before it is made and with its result after; RAM
    unreachable is recorded as the step's failure and stops the run."""
    step_id = _begin(store, cid, step)
    try:
        _run(api, step)
    except RamUnavailable as exc:
        step.status, step.result = "failed", str(exc)
        _end(store, step_id, step)
        raise
    _end(store, step_id, step)


def _begin(store: Store, cid: str, step: Step) -> int:
    """The step, recorded and committed before its call."""
    with store.transaction() as con:
        row = first_row(con.execute(
            "INSERT INTO containment_steps (containment_id, action, target, user_name, status, undoes, called_at) "
            "VALUES (?, ?, ?, ?, 'calling', ?, ?) RETURNING id",
            [cid, step.action, step.target, step.user, step.undoes, utcnow()]))
    assert row is not None
    return int(row[0])


def _end(store: Store, step_id: int, step: Step) -> None:
    with store.transaction() as con:
        con.execute("UPDATE containment_steps SET status = ?, result = ?, finished_at = ? WHERE id = ?",
                    [step.status, (step.result or "")[:1000], utcnow(), step_id])


def _set(store: Store, cid: str, **values: Any) -> None:
    with store.transaction() as con:
        con.execute(f"UPDATE containments SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",  # noqa: S608
                    [*values.values(), cid])


# -- execution ------------------------------------------------------------------------------------------
def carry_out(store: Store, api: RamApi, inventory: Inventory, planned: Containment, *, by: str, reason: str,
            now: datetime | None = None) -> Containment:
    """Run ``planned``: the evidence, then each RAM call, each recorded before it is made."""
    now = now or utcnow()
    if planned.id is None:
        planned.id = f"ctn-{secrets.token_hex(4)}"
        with store.transaction() as con:
            con.execute("INSERT INTO containments (id, agent, reason, created_by, started_at, status, forced) "
                        "VALUES (?, ?, ?, ?, ?, 'running', ?)", [planned.id, planned.agent, reason, by, now, planned.forced])
    else:
        _set(store, planned.id, status="running")
    cid = planned.id
    changed = 0
    try:
        for step in planned.steps:
            if step.status in ("skipped", "already", "gone"):
                continue
            if step.action == "write_evidence":
                _write_evidence(store, inventory, planned, step)
                continue
            _carry(store, cid, api, step)
            changed += step.status == "done"
    except BaseException:
        _set(store, cid, status="failed", finished_at=utcnow())
        raise
    planned.status = "failed" if planned.failed or planned.notes else "contained"
    _set(store, cid, status=planned.status, finished_at=utcnow())
    if changed:
        _note_findings(store, planned.agent, "contained", by,
                       f"contained with `trailwarden contain` ({cid}): {reason}; {_summary(planned)}")
    return planned


def _write_evidence(store: Store, inventory: Inventory, planned: Containment, step: Step) -> None:
    """The replay export, streamed to a temporary file (memory flat in the agent's events),
    fsynced and renamed into place before any RAM call."""
    assert planned.id is not None
    path = Path(step.target.replace("{containment}", planned.id))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = path.with_name(path.name + ".partial")
    with partial_path.open("w", encoding="utf-8") as fh:
        replay = write_replay(store, planned.agent, inventory, fh)
        fh.flush()
        os.fsync(fh.fileno())
    partial_path.replace(path)
    step.target, step.status = str(path), "done"
    step.result = f"{replay.report['summary']['events']} events, sha256 {replay.sha256}"
    planned.evidence, planned.evidence_sha256 = str(path), replay.sha256
    with store.transaction() as con:
        con.execute("INSERT INTO containment_steps (containment_id, action, target, status, result, called_at, "
                    "finished_at) VALUES (?, 'write_evidence', ?, 'done', ?, ?, ?)",
                    [planned.id, step.target, step.result, utcnow(), utcnow()])
        con.execute("UPDATE containments SET evidence_path = ?, evidence_sha256 = ? WHERE id = ?",
                    [planned.evidence, planned.evidence_sha256, planned.id])


def _run(api: RamApi, step: Step) -> None:
    """One writing call; its answer in ``step.status`` / ``step.result``. "Already so" answers
    are ``done`` (the step's effect is there; for a step this containment tried before, its own)."""
    kind, _, name = step.target.partition("/")
    deny = {"policy_type": "Custom", "policy_name": DENY_POLICY}
    calls: dict[str, tuple[str, Callable[[Any], Any], Any]] = {
        "create_deny_policy": ("CreatePolicy", api.ram.create_policy, ram.CreatePolicyRequest(
            policy_name=DENY_POLICY, policy_document=json.dumps(DENY_DOCUMENT),
            description="trailwarden contain: denies everything to the principals it is attached to")),
        "deactivate_key": ("UpdateAccessKey", api.ram.update_access_key, ram.UpdateAccessKeyRequest(
            user_name=step.user, user_access_key_id=name, status="Inactive")),
        "reactivate_key": ("UpdateAccessKey", api.ram.update_access_key, ram.UpdateAccessKeyRequest(
            user_name=step.user, user_access_key_id=name, status="Active")),
    }
    if kind == "user":
        calls["attach_deny"] = ("AttachPolicyToUser", api.ram.attach_policy_to_user,
                                ram.AttachPolicyToUserRequest(user_name=name, **deny))
        calls["detach_deny"] = ("DetachPolicyFromUser", api.ram.detach_policy_from_user,
                                ram.DetachPolicyFromUserRequest(user_name=name, **deny))
    elif kind == "role":
        calls["attach_deny"] = ("AttachPolicyToRole", api.ram.attach_policy_to_role,
                                ram.AttachPolicyToRoleRequest(role_name=name, **deny))
        calls["detach_deny"] = ("DetachPolicyFromRole", api.ram.detach_policy_from_role,
                                ram.DetachPolicyFromRoleRequest(role_name=name, **deny))
    action, method, request = calls[step.action]
    try:
        api.call(action, partial(method, request))
        step.status, step.result = "done", f"{action}: ok"
    except Gone as exc:
        step.status, step.result = "gone", str(exc)  # undo: nothing to reverse any more
    except CallFailed as exc:
        if exc.code.startswith("EntityAlreadyExists"):  # attached / created already: the effect is there
            step.status, step.result = "done", f"{action}: {exc.code} (already so)"
        else:
            step.status, step.result = "failed", str(exc)
    except RamUnavailable:
        raise
    except TrailwardenError as exc:  # throttling that outlasted the retries
        step.status, step.result = "failed", str(exc)


def _summary(c: Containment) -> str:
    done = [s for s in c.steps if s.status == "done" and s.action not in ("write_evidence", "create_deny_policy")]
    keys = sum(s.action in ("deactivate_key", "reactivate_key") for s in done)
    policies = [s.target for s in done if s.action in ("attach_deny", "detach_deny")]
    verb = "reactivated" if any(s.action == "reactivate_key" for s in done) else "deactivated"
    pol = "detached from" if any(s.action == "detach_deny" for s in done) else "attached to"
    parts = [f"{keys} AccessKey(s) {verb}"] + ([f"{DENY_POLICY} {pol} {', '.join(policies)}"] if policies else [])
    if c.failed:
        parts.append(f"{len(c.failed)} call(s) failed")
    return "; ".join(parts)


def _note_findings(store: Store, agent: str, what: str, by: str, reason: str) -> int:
    """A line in the history (and so the Slack thread) of each of the agent's open findings."""
    now = utcnow()
    with store.transaction() as con:
        rows = con.execute("SELECT id, status FROM findings WHERE agent = ? AND status IN ('open', 'acknowledged')",
                           [agent]).fetchall()
        for fid, status in rows:
            con.execute("INSERT INTO finding_status_changes (finding_id, old_status, new_status, changed_by, reason, "
                        "changed_at) VALUES (?, ?, ?, ?, ?, ?)", [fid, status, what, by, reason[:2000], now])
    return len(rows)


# -- undo ---------------------------------------------------------------------------------------------------
def undo(store: Store, api: RamApi, inventory: Inventory, name: str, *, by: str, reason: str) -> Containment:
    """Reverse what the agent's open containment did; ``status`` ``nothing`` when there is none."""
    agent = agent_of(inventory, name)
    current = open_containment(store, agent.name)
    out = Containment(agent.name)
    if current is None:
        out.status = "nothing"
        return out
    cid = out.id = str(current["id"])
    out.evidence, out.evidence_sha256 = current["evidence_path"], current["evidence_sha256"]
    for step_id, action, target, user in _to_reverse(store, cid):
        out.steps.append(Step("reactivate_key" if action == "deactivate_key" else "detach_deny", target, user,
                              undoes=step_id))
    _set(store, cid, status="undoing")
    try:
        for step in out.steps:
            _carry(store, cid, api, step)
    except BaseException:
        _set(store, cid, status="undo_failed")
        raise
    out.status = "undo_failed" if out.failed else "undone"
    _set(store, cid, status=out.status, undo_reason=reason, undone_by=by, undone_at=utcnow())
    if any(s.status == "done" for s in out.steps):
        _note_findings(store, agent.name, "uncontained", by,
                       f"containment {cid} undone with `trailwarden contain --undo`: {reason}; {_summary(out)}")
    return out


def _to_reverse(store: Store, cid: str) -> list[tuple[int, str, str, str | None]]:
    """The calls the containment made (or may have made: ``calling``), not reversed yet, latest first."""
    rows = store.con.execute(
        """
        SELECT s.id, s.action, s.target, s.user_name FROM containment_steps s
        WHERE s.containment_id = ? AND s.action IN ('deactivate_key', 'attach_deny') AND s.status IN ('done', 'calling')
          AND NOT EXISTS (SELECT 1 FROM containment_steps u WHERE u.containment_id = s.containment_id
                          AND u.undoes IS NOT NULL AND u.target = s.target AND u.status IN ('done', 'gone')
                          AND u.id > s.id)
        ORDER BY s.id DESC
        """, [cid]).fetchall()
    seen: set[tuple[str, str]] = set()
    out = []
    for sid, action, target, user in rows:  # one reversal per target, however often it was tried
        if (action, target) not in seen:
            seen.add((action, target))
            out.append((int(sid), str(action), str(target), str(user) if user else None))
    return out
