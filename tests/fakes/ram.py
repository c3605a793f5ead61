"""A fake RAM (2015-05-01) and IMS (2019-08-15) endpoint on 127.0.0.1, for the real
``alibabacloud-ram20150501`` and ``alibabacloud-ims20190815`` clients (notes/ram-api.md).

The signature check, routing, scripting and the error answer are :mod:`tests.fakes.openapi`'s
(shared with the fake Resource Directory). This fake answers JSON the way RAM does: lists paged
with ``Marker`` / ``IsTruncated`` / ``MaxItems`` (default 100, at most 1000; a marker is bound to
the request it continues), errors with RAM's codes (``EntityNotExist.User``,
``EntityAlreadyExists.Policy``, ``EntityAlreadyExists.User.Policy``...). The IMS credential
report is base64 CSV in pages whose ``IsTruncated`` is the *string* ``"true"``/``"false"``, as the
real API's.

State comes from a YAML seed (``pipeline.ram.seed``) and changes with the writing calls the
containment uses (``UpdateAccessKey``, ``CreatePolicy``, ``AttachPolicyToUser|Role``,
``DetachPolicyFromUser|Role``). Scripting: :meth:`FakeRam.fail_next` (``Throttling.User`` and
friends, optionally only for one action and after some good calls), :meth:`FakeRam.hang_next`
(apply a call, then never answer: a client killed meanwhile cannot know it took effect).

Run in its own process with ``python -m tests.fakes.ram SEED.yaml`` (prints ``port N``), or in
this one as a context manager. :class:`RamFakeProcess` starts the process and scripts it through
the control paths ``/__fake__/...``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.ram import Snapshot
from pipeline.ram.seed import load_seed
from tests.fakes.openapi import ACCESS_KEY_ID, ACCESS_KEY_SECRET, Failure, OpenApiFake

RAM_VERSION, IMS_VERSION = "2015-05-01", "2019-08-15"
DEFAULT_ITEMS, MAX_ITEMS = 100, 1000
REPORT_PAGE = 50  # users per credential report page


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


class FakeRam(OpenApiFake):
    """RAM and IMS over one account's state, served on 127.0.0.1."""

    thread_name = "fake-ram"
    host_id = "ram.aliyuncs.com"

    def __init__(self, snapshot: Snapshot, *, credentials: Mapping[str, str] | None = None,
                 documents: Mapping[tuple[str, str], str] | None = None):
        super().__init__(credentials=credentials)
        self.account = snapshot.account or "1384926508761234"
        self._load(snapshot, documents or {})

    @classmethod
    def from_seed(cls, path: Path, **kwargs: Any) -> FakeRam:
        return cls(load_seed(path, datetime.now(UTC)), **kwargs)

    def _load(self, snap: Snapshot, texts: Mapping[tuple[str, str], str]) -> None:
        self.users = {n: {"UserName": n, "UserId": u.id, "DisplayName": n, "CreateDate": _iso(u.created),
                          "UpdateDate": _iso(u.created), "LastLoginDate": _iso(u.last_login),
                          "console": u.console, "mfa": u.mfa, "policies": [list(k) for k in u.policies],
                          "groups": list(u.groups)} for n, u in snap.users.items()}
        self.groups = {n: {"GroupName": n, "GroupId": f"g-{n}", "policies": [list(k) for k in g.policies]}
                       for n, g in snap.groups.items()}
        self.roles = {n: {"RoleName": n, "RoleId": r.id, "Arn": r.arn, "CreateDate": _iso(r.created),
                          "trust": json.dumps(r.trust), "policies": [list(k) for k in r.policies]}
                      for n, r in snap.roles.items()}
        self.policies = {f"{t}/{n}": {"PolicyName": n, "PolicyType": t, "DefaultVersion": p.version or "v1",
                                      "UpdateDate": _iso(p.updated), "CreateDate": _iso(p.updated),
                                      "document": texts.get((t, n), json.dumps(p.document))}
                         for (t, n), p in snap.policies.items()}
        self.keys = {k.id: {"AccessKeyId": k.id, "user": k.user, "Status": k.status, "CreateDate": _iso(k.created),
                            "last_used": _iso(k.last_used)} for k in snap.keys.values()}

    def state(self) -> dict[str, Any]:
        """What the account holds now: every key's status, every attachment, the custom policies."""
        with self.lock:
            return {"keys": {k: v["Status"] for k, v in self.keys.items()},
                    "user_policies": {n: sorted("/".join(p) for p in u["policies"]) for n, u in self.users.items()},
                    "role_policies": {n: sorted("/".join(p) for p in r["policies"]) for n, r in self.roles.items()},
                    "policies": {k: v["document"] for k, v in self.policies.items() if k.startswith("Custom/")}}

    def control(self, what: str, args: dict[str, Any]) -> tuple[int, Any]:
        """The shared controls, and ``state``."""
        return (200, self.state()) if what == "state" else super().control(what, args)

    # -- paging ----------------------------------------------------------------------------------
    def _page(self, items: list[dict[str, Any]], query: Mapping[str, str], bound: str) -> tuple[list[Any], dict[str, Any]]:
        try:
            size = int(query.get("MaxItems") or DEFAULT_ITEMS)
        except ValueError:
            raise Failure(400, "InvalidParameter.MaxItems", "MaxItems is not a number") from None
        if not 1 <= size <= MAX_ITEMS:
            raise Failure(400, "InvalidParameter.MaxItems", f"MaxItems must be 1-{MAX_ITEMS}")
        start = 0
        if query.get("Marker"):
            try:
                mark = json.loads(base64.b64decode(query["Marker"], validate=True))
                start = int(mark["o"]) if mark["b"] == bound else -1
            except (ValueError, binascii.Error, KeyError, TypeError):
                start = -1
            if start < 0:
                raise Failure(400, "InvalidParameter.Marker", "The marker is invalid.")
        page = items[start:start + size]
        more = start + size < len(items)
        extra: dict[str, Any] = {"IsTruncated": more}
        if more:
            extra["Marker"] = base64.b64encode(json.dumps({"b": bound, "o": start + size}).encode()).decode()
        return page, extra

    @staticmethod
    def _public(item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k[:1].isupper() and v is not None}

    def _user(self, query: Mapping[str, str]) -> dict[str, Any]:
        name = query.get("UserName", "")
        if name not in self.users:
            raise Failure(404, "EntityNotExist.User", f"The user does not exist: {name}")
        return self.users[name]

    def _role(self, query: Mapping[str, str]) -> dict[str, Any]:
        name = query.get("RoleName", "")
        if name not in self.roles:
            raise Failure(404, "EntityNotExist.Role", f"The role does not exist: {name}")
        return self.roles[name]

    def _policy_entry(self, kind: str, name: str) -> dict[str, Any]:
        if f"{kind}/{name}" not in self.policies:
            raise Failure(404, "EntityNotExist.Policy", f"The policy does not exist: {name}")
        return self.policies[f"{kind}/{name}"]

    def _policies_of(self, refs: list[list[str]]) -> dict[str, Any]:
        out = []
        for kind, name in refs:
            p = self.policies.get(f"{kind}/{name}", {})
            out.append({"PolicyName": name, "PolicyType": kind, "DefaultVersion": p.get("DefaultVersion", "v1"),
                        "AttachDate": "2026-01-01T00:00:00Z", "Description": ""})
        return {"Policies": {"Policy": out}}

    # -- RAM reads -----------------------------------------------------------------------------
    def _ListUsers(self, q: Mapping[str, str]) -> dict[str, Any]:
        page, extra = self._page([self._public(u) for _, u in sorted(self.users.items())], q, "users")
        return {**extra, "Users": {"User": page}}

    def _GetUser(self, q: Mapping[str, str]) -> dict[str, Any]:
        return {"User": self._public(self._user(q))}

    def _ListGroups(self, q: Mapping[str, str]) -> dict[str, Any]:
        page, extra = self._page([self._public(g) for _, g in sorted(self.groups.items())], q, "groups")
        return {**extra, "Groups": {"Group": page}}

    def _ListUsersForGroup(self, q: Mapping[str, str]) -> dict[str, Any]:
        group = q.get("GroupName", "")
        if group not in self.groups:
            raise Failure(404, "EntityNotExist.Group", f"The group does not exist: {group}")
        members = [{"UserName": n, "DisplayName": n, "JoinDate": "2026-01-01T00:00:00Z"}
                   for n, u in sorted(self.users.items()) if group in u["groups"]]
        page, extra = self._page(members, q, f"members/{group}")
        return {**extra, "Users": {"User": page}}

    def _ListRoles(self, q: Mapping[str, str]) -> dict[str, Any]:
        page, extra = self._page([self._public(r) for _, r in sorted(self.roles.items())], q, "roles")
        return {**extra, "Roles": {"Role": page}}

    def _GetRole(self, q: Mapping[str, str]) -> dict[str, Any]:
        role = self._role(q)
        return {"Role": {**self._public(role), "AssumeRolePolicyDocument": role["trust"]}}

    def _ListPoliciesForUser(self, q: Mapping[str, str]) -> dict[str, Any]:
        return self._policies_of(self._user(q)["policies"])

    def _ListPoliciesForRole(self, q: Mapping[str, str]) -> dict[str, Any]:
        return self._policies_of(self._role(q)["policies"])

    def _ListPoliciesForGroup(self, q: Mapping[str, str]) -> dict[str, Any]:
        group = q.get("GroupName", "")
        if group not in self.groups:
            raise Failure(404, "EntityNotExist.Group", f"The group does not exist: {group}")
        return self._policies_of(self.groups[group]["policies"])

    def _ListAccessKeys(self, q: Mapping[str, str]) -> dict[str, Any]:
        name = self._user(q)["UserName"]
        keys = [self._public(k) for k in self.keys.values() if k["user"] == name]
        return {"AccessKeys": {"AccessKey": keys}}

    def _GetAccessKeyLastUsed(self, q: Mapping[str, str]) -> dict[str, Any]:
        user = self._user(q)
        key = self.keys.get(q.get("UserAccessKeyId", ""))
        if key is None or key["user"] != user["UserName"]:
            raise Failure(404, "EntityNotExist.User.AccessKey", "The access key does not exist.")
        return {"AccessKeyLastUsed": {"LastUsedDate": key["last_used"] or ""}}

    def _ListPolicies(self, q: Mapping[str, str]) -> dict[str, Any]:
        kind = q.get("PolicyType")
        items = [self._public(p) for _, p in sorted(self.policies.items()) if kind in (None, p["PolicyType"])]
        page, extra = self._page(items, q, f"policies/{kind}")
        return {**extra, "Policies": {"Policy": page}}

    def _GetPolicy(self, q: Mapping[str, str]) -> dict[str, Any]:
        kind = q.get("PolicyType")
        if kind not in ("System", "Custom"):
            raise Failure(400, "InvalidParameter.PolicyType", "PolicyType must be System or Custom")
        p = self._policy_entry(kind, q.get("PolicyName", ""))
        return {"Policy": self._public(p), "DefaultPolicyVersion": {
            "VersionId": p["DefaultVersion"], "IsDefaultVersion": True, "PolicyDocument": p["document"],
            "CreateDate": p.get("UpdateDate")}}

    # -- RAM writes (what containment calls) ---------------------------------------------------------
    def _UpdateAccessKey(self, q: Mapping[str, str]) -> dict[str, Any]:
        user = self._user(q)
        key = self.keys.get(q.get("UserAccessKeyId", ""))
        if key is None or key["user"] != user["UserName"]:
            raise Failure(404, "EntityNotExist.User.AccessKey", "The access key does not exist.")
        if q.get("Status") not in ("Active", "Inactive"):
            raise Failure(400, "InvalidParameter.Status", "Status must be Active or Inactive")
        key["Status"] = q["Status"]
        return {}

    def _CreatePolicy(self, q: Mapping[str, str]) -> dict[str, Any]:
        name = q.get("PolicyName", "")
        if f"Custom/{name}" in self.policies:
            raise Failure(409, "EntityAlreadyExists.Policy", f"The policy already exists: {name}")
        try:
            json.loads(q.get("PolicyDocument", ""))
        except ValueError:
            raise Failure(400, "MalformedPolicyDocument", "The policy document is malformed.") from None
        self.policies[f"Custom/{name}"] = {"PolicyName": name, "PolicyType": "Custom", "DefaultVersion": "v1",
                                           "CreateDate": _iso(datetime.now(UTC)), "UpdateDate": _iso(datetime.now(UTC)),
                                           "Description": q.get("Description", ""), "document": q["PolicyDocument"]}
        return {"Policy": self._public(self.policies[f"Custom/{name}"])}

    def _attach(self, holder: dict[str, Any], q: Mapping[str, str], kind: str) -> dict[str, Any]:
        ref = [q.get("PolicyType", ""), q.get("PolicyName", "")]
        self._policy_entry(*ref)
        if ref in holder["policies"]:
            raise Failure(409, f"EntityAlreadyExists.{kind}.Policy", "The policy is already attached.")
        holder["policies"].append(ref)
        return {}

    def _detach(self, holder: dict[str, Any], q: Mapping[str, str], kind: str) -> dict[str, Any]:
        ref = [q.get("PolicyType", ""), q.get("PolicyName", "")]
        if ref not in holder["policies"]:
            raise Failure(404, f"EntityNotExist.{kind}.Policy", "The policy is not attached.")
        holder["policies"].remove(ref)
        return {}

    def _AttachPolicyToUser(self, q: Mapping[str, str]) -> dict[str, Any]:
        return self._attach(self._user(q), q, "User")

    def _AttachPolicyToRole(self, q: Mapping[str, str]) -> dict[str, Any]:
        return self._attach(self._role(q), q, "Role")

    def _DetachPolicyFromUser(self, q: Mapping[str, str]) -> dict[str, Any]:
        return self._detach(self._user(q), q, "User")

    def _DetachPolicyFromRole(self, q: Mapping[str, str]) -> dict[str, Any]:
        return self._detach(self._role(q), q, "Role")

    # -- IMS -------------------------------------------------------------------------------------
    def _GenerateCredentialReport(self, _q: Mapping[str, str]) -> dict[str, Any]:
        return {"State": "COMPLETE"}

    def _GetCredentialReport(self, q: Mapping[str, str]) -> dict[str, Any]:
        rows = self._report_rows()
        start = int(q.get("NextToken") or 0)
        size = int(q.get("MaxItems") or REPORT_PAGE)
        page = rows[start:start + size]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(_REPORT_COLUMNS)
        writer.writerows(page)
        more = start + size < len(rows)
        body: dict[str, Any] = {"Content": base64.b64encode(out.getvalue().encode()).decode(),
                                "GeneratedTime": _iso(datetime.now(UTC)), "IsTruncated": "true" if more else "false"}
        if more:
            body["NextToken"] = str(start + size)
        return body

    def _report_rows(self) -> list[list[str]]:
        rows = []
        for name, u in sorted(self.users.items()):
            keys = sorted((k for k in self.keys.values() if k["user"] == name), key=lambda k: k["CreateDate"] or "")
            row = [f"{name}@{self.account}.onaliyun.com", u["CreateDate"] or "N/A", u["LastLoginDate"] or "N/A",
                   _tf(u["console"]), _tf(u["console"]) if u["console"] else "N/A", "N/A", "N/A", _tf(u["mfa"])]
            for i in range(2):
                key = keys[i] if i < len(keys) else None
                row += ([_tf(True), _tf(key["Status"] == "Active"), key["CreateDate"] or "N/A", key["last_used"] or "N/A"]
                        if key else ["FALSE", "N/A", "N/A", "N/A"])
            rows.append(row)
        return rows


_REPORT_COLUMNS = ["user", "user_creation_time", "user_last_logon", "password_exist", "password_active",
                   "password_last_changed", "password_next_rotation", "mfa_active",
                   "access_key_1_exist", "access_key_1_active", "access_key_1_last_rotated", "access_key_1_last_used",
                   "access_key_2_exist", "access_key_2_active", "access_key_2_last_rotated", "access_key_2_last_used"]


def _tf(value: Any) -> str:
    return "TRUE" if value else "FALSE"


class RamFakeProcess:
    """The fake in its own process (``python -m tests.fakes.ram SEED``), scripted over HTTP."""

    def __init__(self, seed: Path, *, extra: dict[str, Any] | None = None):
        self.seed = seed
        self.extra = extra or {}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> RamFakeProcess:
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.ram", str(self.seed), json.dumps(self.extra)],
                                     cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("port "):
            self.proc.kill()
            raise RuntimeError(f"the fake RAM did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, what: str, **args: Any) -> Any:
        request = urllib.request.Request(f"{self.endpoint}/__fake__/{what}", data=json.dumps(args).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fail_next(self, code: str, **args: Any) -> None:
        self.control("fail", code=code, **args)

    def hang_next(self, action: str, **args: Any) -> None:
        self.control("hang", action=action, **args)

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("state")
        return result

    def calls(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("calls")
        return result


def credentials_env() -> dict[str, str]:
    """The environment that makes trailwarden sign with the fake's credentials."""
    return {"ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET}


def main(argv: list[str]) -> None:
    """``python -m tests.fakes.ram SEED.yaml [JSON of {"documents": {"Custom/Name": text}}]``."""
    extra = json.loads(argv[1]) if len(argv) > 1 else {}
    documents = {tuple(k.split("/", 1)): v for k, v in (extra.get("documents") or {}).items()}
    fake = FakeRam.from_seed(Path(argv[0]), documents=documents).start()
    print(f"port {fake.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
