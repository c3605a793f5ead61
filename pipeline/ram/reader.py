"""Reading an account's RAM state into a :class:`models.ram.Snapshot`.

The calls, in order: ``ListUsers``, ``ListGroups`` (each group's ``ListUsersForGroup`` and
``ListPoliciesForGroup``), ``ListRoles`` (each role's ``GetRole`` for its trust policy and
``ListPoliciesForRole``), each user's ``ListPoliciesForUser`` and ``ListAccessKeys``; IMS's
credential report (``GenerateCredentialReport``, ``GetCredentialReport``) for console access, MFA,
the last console login and each AccessKey's last use; ``ListPolicies`` for the custom policies'
versions, and ``GetPolicy`` for the document of each attached policy that is not already known
(same type, name, default version and update time as in an earlier snapshot: versions never
change once made, so an unchanged account costs no ``GetPolicy`` at all).

Lists are paged with ``Marker``/``IsTruncated`` (1,000 a page). A per-principal call that fails
for good is recorded in :attr:`Snapshot.errors` and the rest is read; a principal that vanished
meanwhile (``EntityNotExist``) is left out. The account-wide lists must succeed: without them the
snapshot would say nothing true, so their failure stops the read (nothing is stored).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from alibabacloud_ims20190815 import models as ims
from alibabacloud_ram20150501 import models as ram

from models.ram import AccessKey, Group, Policy, PolicyKey, Role, Snapshot, SyncError, User
from pipeline.core.errors import TrailwardenError
from pipeline.core.times import utcnow
from pipeline.ram.client import CallFailed, Gone, RamApi, RamUnavailable

log = logging.getLogger(__name__)
PAGE = 1000
REPORT_POLLS = 10  # GenerateCredentialReport is asynchronous: how often to ask before giving up
KnownDocuments = Mapping[tuple[str, str, str | None, datetime | None], dict[str, Any]]


class Reader:
    def __init__(self, api: RamApi, known: KnownDocuments | None = None, *, now: datetime | None = None,
                 sleep: Callable[[float], None] | None = None, page: int = PAGE):
        self.api = api
        self.page = page
        self.known = dict(known or {})
        self.snapshot = Snapshot(taken_at=now or utcnow())
        self.sleep = sleep or api.sleep
        self.reused = 0  # policy documents known from an earlier snapshot (no GetPolicy)

    def read(self) -> Snapshot:
        self._users()
        self._groups()
        self._roles()
        for name in sorted(self.snapshot.users):
            self._per_user(name)
        self._credential_report()
        self._documents()
        return self.snapshot

    # -- one call, its failure recorded -----------------------------------------------------------
    def _try(self, principal: str, action: str, method: Callable[[Any], Any], request: Any = None) -> Any:
        """``method(request)``'s body; None when it failed for good (recorded) or the principal is
        gone."""
        try:
            return self.api.call(action, partial(_body, method, request))
        except Gone:
            return None
        except RamUnavailable:
            raise
        except TrailwardenError as exc:  # a CallFailed, or throttling that outlasted the retries
            code = getattr(exc, "code", "") or type(exc).__name__
            self.snapshot.errors.append(SyncError(principal, action, str(code), str(exc)))
            return None

    def _account_list(self, action: str, method: Callable[[Any], Any], request: Callable[..., Any],
                      items: Callable[[Any], list[Any]]) -> Iterator[Any]:
        """Every item of an account-wide paged list (``request(marker=...)`` makes each page's
        request); its failure stops the read."""
        marker: str | None = None
        while True:
            try:
                body = self.api.call(action, partial(_body, method, request(marker=marker, max_items=self.page)))
            except CallFailed as exc:
                raise RamUnavailable(f"RAM refused {action} ({exc.code}): trailwarden's key needs "
                                     f"ram:{action} (see config/trailwarden-ram-reader-policy.json)") from None
            yield from items(body)
            if not body.is_truncated or not body.marker:
                return
            marker = body.marker

    def _paged(self, principal: str, action: str, method: Callable[[Any], Any], request: Callable[..., Any],
               items: Callable[[Any], list[Any]]) -> list[Any] | None:
        out: list[Any] = []
        marker: str | None = None
        while True:
            body = self._try(principal, action, method, request(marker=marker, max_items=self.page))
            if body is None:
                return None
            out.extend(items(body))
            if not body.is_truncated or not body.marker:
                return out
            marker = body.marker

    # -- principals ------------------------------------------------------------------------------------
    def _users(self) -> None:
        for u in self._account_list("ListUsers", self.api.ram.list_users, ram.ListUsersRequest,
                                    lambda b: b.users.user if b.users and b.users.user else []):
            self.snapshot.users[u.user_name] = User(u.user_name, id=u.user_id, created=_time(u.create_date))

    def _groups(self) -> None:
        groups = list(self._account_list("ListGroups", self.api.ram.list_groups, ram.ListGroupsRequest,
                                         lambda b: b.groups.group if b.groups and b.groups.group else []))
        for g in groups:
            name = g.group_name
            members = self._paged(f"group/{name}", "ListUsersForGroup", self.api.ram.list_users_for_group,
                                  partial(ram.ListUsersForGroupRequest, group_name=name),
                                  lambda b: b.users.user if b.users and b.users.user else [])
            policies = self._policies(f"group/{name}", "ListPoliciesForGroup", self.api.ram.list_policies_for_group,
                                      ram.ListPoliciesForGroupRequest(group_name=name))
            if members is None and policies is None and not self._failed(f"group/{name}"):
                continue  # gone
            self.snapshot.groups[name] = Group(name, policies or ())
            for member in members or []:
                user = self.snapshot.users.get(member.user_name)
                if user is not None:
                    self.snapshot.users[user.name] = replace(user, groups=(*user.groups, name))

    def _roles(self) -> None:
        roles = list(self._account_list("ListRoles", self.api.ram.list_roles, ram.ListRolesRequest,
                                        lambda b: b.roles.role if b.roles and b.roles.role else []))
        for r in roles:
            name = r.role_name
            got = self._try(f"role/{name}", "GetRole", self.api.ram.get_role, ram.GetRoleRequest(role_name=name))
            if got is None and not self._failed(f"role/{name}"):
                continue  # gone
            detail = got.role if got is not None else None
            policies = self._policies(f"role/{name}", "ListPoliciesForRole", self.api.ram.list_policies_for_role,
                                      ram.ListPoliciesForRoleRequest(role_name=name))
            trust = _json(detail.assume_role_policy_document) if detail is not None else None
            self.snapshot.roles[name] = Role(
                name, id=r.role_id, arn=r.arn, created=_time(r.create_date), trust=trust, policies=policies or (),
                service_linked=bool(detail is not None and detail.is_service_linked_role)
                or name.startswith("AliyunServiceRoleFor"))

    def _per_user(self, name: str) -> None:
        principal = f"user/{name}"
        policies = self._policies(principal, "ListPoliciesForUser", self.api.ram.list_policies_for_user,
                                  ram.ListPoliciesForUserRequest(user_name=name))
        keys = self._try(principal, "ListAccessKeys", self.api.ram.list_access_keys,
                         ram.ListAccessKeysRequest(user_name=name))
        if policies is None and keys is None and not self._failed(principal):
            del self.snapshot.users[name]  # deleted while we read
            return
        self.snapshot.users[name] = replace(self.snapshot.users[name], policies=policies or ())
        for k in (keys.access_keys.access_key if keys is not None and keys.access_keys and keys.access_keys.access_key else []):
            self.snapshot.keys[k.access_key_id] = AccessKey(k.access_key_id, name, k.status or "Active", _time(k.create_date))

    def _policies(self, principal: str, action: str, method: Callable[[Any], Any],
                  request: Any) -> tuple[PolicyKey, ...] | None:
        body = self._try(principal, action, method, request)
        if body is None:
            return None
        out: list[PolicyKey] = []
        for p in (body.policies.policy if body.policies and body.policies.policy else []):
            key = (p.policy_type, p.policy_name)
            out.append(key)
            if key not in self.snapshot.policies:
                self.snapshot.policies[key] = Policy(p.policy_type, p.policy_name, p.default_version)
        return tuple(out)

    def _failed(self, principal: str) -> bool:
        return any(e.principal == principal for e in self.snapshot.errors)

    # -- console, MFA, last use: the credential report ------------------------------------------------
    def _credential_report(self) -> None:
        rows = self._report_rows()
        if rows is None:  # recorded; fall back to one call per key for the last use
            self._last_used_by_key(set(self.snapshot.keys))
            return
        matched: set[str] = set()
        for row in rows:
            name = (row.get("user") or "").split("@", 1)[0]
            user = self.snapshot.users.get(name)
            if user is None:
                continue
            self.snapshot.users[name] = replace(user, console=_flag(row.get("password_exist")), mfa=_flag(row.get("mfa_active")),
                                                last_login=_time(row.get("user_last_logon")))
            matched |= self._match_keys(name, row)
        self._last_used_by_key(set(self.snapshot.keys) - matched)

    def _report_rows(self) -> list[dict[str, str]] | None:
        state = None
        for attempt in range(REPORT_POLLS):
            body = self._try("account", "GenerateCredentialReport", _no_request(self.api.ims.generate_credential_report))
            if body is None:
                return None
            state = str(body.state or "").upper()
            if state == "COMPLETE":
                break
            self.sleep(min(5.0, 0.5 * 2 ** attempt))
        else:
            self.snapshot.errors.append(SyncError("account", "GenerateCredentialReport", "NotReady",
                                                  f"the credential report was still {state} after {REPORT_POLLS} tries"))
            return None
        rows: list[dict[str, str]] = []
        token: str | None = None
        while True:
            body = self._try("account", "GetCredentialReport", self.api.ims.get_credential_report,
                             ims.GetCredentialReportRequest(next_token=token))
            if body is None:
                return None
            rows.extend(_report_page(body.content))
            # IsTruncated is the *string* "false" (notes/ram-api.md): a plain truth test never ends
            if str(body.is_truncated).lower() != "true" or not body.next_token:
                return rows
            token = body.next_token

    def _match_keys(self, user: str, row: Mapping[str, str]) -> set[str]:
        """The report names no key ids: its key slots are matched to the listed keys by creation
        time (``access_key_N_last_rotated``)."""
        keys = self.snapshot.keys_of(user)
        matched: set[str] = set()
        for slot in ("access_key_1", "access_key_2", "additional_access_key_1", "additional_access_key_2",
                     "additional_access_key_3"):
            created = _time(row.get(f"{slot}_last_rotated"))
            key = next((k for k in keys if created and k.created and abs((k.created - created).total_seconds()) < 1
                        and k.id not in matched), None)
            if key is not None:
                self.snapshot.keys[key.id] = replace(key, last_used=_time(row.get(f"{slot}_last_used")))
                matched.add(key.id)
        return matched

    def _last_used_by_key(self, ids: set[str]) -> None:
        for key_id in sorted(ids):
            key = self.snapshot.keys[key_id]
            body = self._try(f"user/{key.user}", "GetAccessKeyLastUsed", self.api.ram.get_access_key_last_used,
                             ram.GetAccessKeyLastUsedRequest(user_name=key.user, user_access_key_id=key.id))
            last = body.access_key_last_used.last_used_date if body is not None and body.access_key_last_used else None
            self.snapshot.keys[key_id] = replace(key, last_used=_time(last))

    # -- documents ---------------------------------------------------------------------------------
    def _documents(self) -> None:
        updated = self._custom_versions()
        for key, policy in sorted(self.snapshot.policies.items()):
            version, when = updated.get(key, (policy.version, None))
            known = self.known.get((key[0], key[1], version, when))
            if known is not None:
                self.snapshot.policies[key] = Policy(key[0], key[1], version, when, known)
                self.reused += 1
                continue
            body = self._try(f"policy/{key[0]}/{key[1]}", "GetPolicy", self.api.ram.get_policy,
                             ram.GetPolicyRequest(policy_type=key[0], policy_name=key[1]))
            self.snapshot.policies[key] = _policy(key, version, when, body)

    def _custom_versions(self) -> dict[PolicyKey, tuple[str | None, datetime | None]]:
        items = self._paged("account", "ListPolicies", self.api.ram.list_policies,
                            partial(ram.ListPoliciesRequest, policy_type="Custom"),
                            lambda b: b.policies.policy if b.policies and b.policies.policy else [])
        return {("Custom", p.policy_name): (p.default_version, _time(p.update_date)) for p in items or []}


def _body(method: Callable[[Any], Any], request: Any) -> Any:
    return method(request).body


def _no_request(method: Callable[[], Any]) -> Callable[[Any], Any]:
    """A call that takes no request (``GenerateCredentialReport``), shaped like one that does."""
    return lambda _request: method()


def _policy(key: PolicyKey, version: str | None, when: datetime | None, body: Any) -> Policy:
    """The policy with its default document; an error instead when it could not be read or is not
    JSON (its grants are then unknown)."""
    if body is None or body.default_policy_version is None:
        return Policy(key[0], key[1], version, when, None, "could not be read (see the sync errors)")
    text = body.default_policy_version.policy_document
    document = _json(text)
    if not isinstance(document, dict):
        return Policy(key[0], key[1], version, when, None, "its document is not a JSON object")
    return Policy(key[0], key[1], body.default_policy_version.version_id or version, when, document)


def _report_page(content: str | None) -> list[dict[str, str]]:
    try:
        text = base64.b64decode(content or "", validate=True).decode("utf-8-sig")
    except (binascii.Error, ValueError):
        return []
    return list(csv.DictReader(io.StringIO(text)))


def _json(text: Any) -> Any:
    if isinstance(text, dict):
        return text
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _flag(value: str | None) -> bool | None:
    text = (value or "").strip().upper()
    return True if text == "TRUE" else False if text == "FALSE" else None


def _time(value: Any) -> datetime | None:
    """RAM's ``2015-01-23T12:33:18Z``; ``N/A``, ``-`` and empty are None."""
    text = str(value or "").strip()
    if not text or text in ("N/A", "-", "no_information"):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
