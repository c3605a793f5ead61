"""An account's RAM state described in YAML: what the demo stores as its snapshot and what the
local fake RAM endpoint (``tests/fakes/ram.py``) serves. One description, so the demo's review and
the tests' reads through the real SDK see the same kind of account.

```yaml
account: "1384926508761234"
users:
  - name: ci-deploy
    created: -700d                   # an ISO time, or that long before now
    console: false                   # a console password (login profile)
    mfa: false
    last_login: -2d
    groups: [deployers]
    policies: [CiDeployer, {system: AdministratorAccess}]   # a name is a custom policy
    keys: [{id: LTAI5tCiDeploy7Qx2mK, status: Active, created: -200d, last_used: -1d}]
groups: [{name: deployers, policies: [...]}]
roles:
  - {name: BackupRole, trust: {Version: "1", Statement: [...]}, policies: [...]}
policies:                            # custom policies: a document inline or a file beside this one
  - {name: CiDeployer, file: policies/ci-deployer.json, version: v3}
```

System policies take their document from ``models/system_policies`` (vendored) unless one is
given (``{system: Name, document: {...}}``).
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.grants import system_policy
from models.ram import AccessKey, Group, Policy, PolicyKey, Role, Snapshot, User
from pipeline.core.config import read_yaml
from pipeline.core.errors import UsageError
from pipeline.core.times import parse_duration


def load_seed(path: Path, now: datetime) -> Snapshot:
    """The account described in ``path``, as a snapshot taken ``now`` (relative times resolved)."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UsageError("expected a mapping with users, groups, roles and policies", path=str(path))
    return seed_snapshot(data, now, base=path.parent, where=str(path))


def seed_snapshot(data: dict[str, Any], now: datetime, *, base: Path | None = None, where: str = "seed") -> Snapshot:
    snapshot = Snapshot(taken_at=now, account=str(data.get("account") or "") or None)
    for i, item in enumerate(data.get("policies") or []):
        policy = _custom(item, base, f"{where}: policies[{i}]", now)
        snapshot.policies[policy.key] = policy
    for group in data.get("groups") or []:
        snapshot.groups[group["name"]] = Group(group["name"], _refs(group.get("policies"), snapshot))
    for user in data.get("users") or []:
        _user(user, snapshot, now)
    for role in data.get("roles") or []:
        snapshot.roles[role["name"]] = Role(
            role["name"], id=str(role.get("id") or _numeric_id('3', role['name'])),
            arn=f"acs:ram::{snapshot.account or '1'}:role/{role['name'].lower()}",
            created=_when(role.get("created"), now), trust=role.get("trust") or _trust_account(snapshot.account),
            policies=_refs(role.get("policies"), snapshot), service_linked=bool(role.get("service_linked")))
    return snapshot


def _user(item: dict[str, Any], snapshot: Snapshot, now: datetime) -> None:
    name = item["name"]
    snapshot.users[name] = User(
        name, id=str(item.get("id") or _numeric_id('2', name)), created=_when(item.get("created"), now),
        console=bool(item.get("console", False)), mfa=bool(item.get("mfa", False)),
        last_login=_when(item.get("last_login"), now), policies=_refs(item.get("policies"), snapshot),
        groups=tuple(item.get("groups") or ()))
    for key in item.get("keys") or []:
        snapshot.keys[key["id"]] = AccessKey(key["id"], name, key.get("status", "Active"),
                                             _when(key.get("created"), now), _when(key.get("last_used"), now))


def _refs(items: Any, snapshot: Snapshot) -> tuple[PolicyKey, ...]:
    """``Name`` (custom) or ``{system: Name}`` / ``{custom: Name}``; system policies are added to
    the snapshot with their vendored (or given) document."""
    out: list[PolicyKey] = []
    for item in items or []:
        if isinstance(item, str):
            out.append(("Custom", item))
        elif "system" in item:
            key = ("System", str(item["system"]))
            if key not in snapshot.policies:
                snapshot.policies[key] = Policy("System", key[1], str(item.get("version", "v1")),
                                                document=item.get("document") or system_policy(key[1]))
            out.append(key)
        else:
            out.append(("Custom", str(item["custom"])))
    return tuple(out)


def _custom(item: dict[str, Any], base: Path | None, where: str, now: datetime) -> Policy:
    document = item.get("document")
    if "file" in item:
        path = (base or Path.cwd()) / str(item["file"])
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read policy file {path}: {exc}", path=where) from None
    return Policy("Custom", str(item["name"]), str(item.get("version", "v1")), _when(item.get("updated"), now),
                  document)


def _trust_account(account: str | None) -> dict[str, Any]:
    return {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                           "Principal": {"RAM": [f"acs:ram::{account or '1'}:root"]}}]}


def _numeric_id(prefix: str, name: str) -> str:
    """A stable id like RAM's (digits), from the name."""
    return f"{prefix}{zlib.crc32(name.encode()):010d}{zlib.adler32(name.encode()) % 10**7:07d}"


def _when(value: Any, now: datetime) -> datetime | None:
    """An ISO time, a datetime, or ``-400d`` (that long before ``now``)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    if text.startswith("-"):
        return now - parse_duration(text[1:])
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
