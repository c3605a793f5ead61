"""cross_account: an agent acting in an account it does not declare, and a role assumed by
someone its inventory entry does not expect.

Two rules, both from the inventory alone (whatever RAM's policies allow):

* **Cross-environment drift.** An agent that declares ``accounts:`` acts only there. A call it
  makes in another account (the account it acted in: ``recipientAccountId``, else its home
  account), or an ``AssumeRole`` of a role in another account (the ``RoleArn``'s account), is out
  of its scope. One finding per agent and foreign account per dedup window, naming both accounts
  (by alias): high when it wrote or assumed a role there, medium for reads alone, and low when
  every such call was refused (an attempt RAM stopped: quiet by default, below Slack's usual
  ``min_severity``).
* **Unexpected assumer.** A role agent that declares ``assumable_by:`` (agents, and
  ``service:<host>`` for a cloud service, matching the ``system:<host>`` identity) may be assumed by
  those alone, checked against the immediate caller of ``AssumeRole`` (its agent, or its raw
  identity when no agent claims it). Anyone else is a finding on the role's agent, naming the
  caller, one per caller per dedup window: high when a call succeeded, medium when RAM refused
  every one.

Agents without ``accounts:`` and roles without ``assumable_by:`` are never judged here, so a
single-account inventory raises nothing. What the role session then did is traced to its origin
by the role-session links (``session_links``): the findings on those events carry ``origin_agent``.

Known gaps: an agent's account is the one the event records; a call through a resource shared
from another account (an OSS bucket policy granting another account) is recorded in the caller's
account and is not seen as cross-account. Events whose home account (``userIdentity.accountId``)
is outside the agent's ``accounts:`` are not its own (the same user name in another account is
another identity) and are left to attribution and ``unregistered_identity``. A session of an
expected role used later from another account than its origin's is not judged here. An
``AssumeRole`` whose ``RoleArn`` is missing or malformed names no target and is not judged (the
role-session links record it as unlinkable).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from detectors.base import Detector, Finding, Models, capped, jsonable, parsed_parameters
from models.accounts import Accounts

_ROLE_ARN = re.compile(r"^acs:ram::([0-9]+):role/([^/:*]+)$")
_SCORE = {"low": 0.3, "medium": 0.55, "high": 0.8, "critical": 0.95}


def role_arn(params: Any) -> tuple[str, str] | None:
    """(account, role name) of an AssumeRole's ``RoleArn`` (either casing, as the role-session
    links read it); None when absent or malformed."""
    parsed = parsed_parameters(params)
    if not isinstance(parsed, dict):
        return None
    arn = parsed.get("RoleArn", parsed.get("roleArn"))
    match = _ROLE_ARN.match(arn) if isinstance(arn, str) else None
    return (match[1], match[2]) if match else None


@dataclass(frozen=True)
class _Role:
    """A role agent that declares who may assume it."""

    agent: str
    allowed: tuple[str, ...]


class CrossAccount(Detector):
    id = "cross_account"
    severity = "high"
    parameters: ClassVar[dict[str, Any]] = {"dedup_window": "24h"}
    columns = ("event_id", "event_time", "agent", "identity", "identity_type", "event_name", "event_rw",
               "error_code", "account_id", "recipient_account_id", "request_parameters", "source_ip")
    parameter_events = frozenset({"assumerole"})

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        self.accounts = Accounts()

    def bind(self, config: Any) -> None:
        """The config's ``accounts:`` name the accounts in findings (``prod (1234...)``)."""
        self.accounts = Accounts(getattr(config, "accounts", None) or [])

    def label(self, account: str | None) -> str:
        """``prod (1234567890123456)`` for a configured account, the bare id otherwise."""
        if not account:
            return "an unrecorded account"
        alias = self.accounts.alias(account)
        return f"{alias} ({account})" if alias else account

    def score(self, events: pd.DataFrame, models: Models, now: datetime) -> list[Finding]:
        declared = {a.name: frozenset(a.accounts) for a in models.inventory.agents if a.accounts}
        roles = _assumable_roles(models)
        if events.empty or not (declared or roles):
            return []
        assume = events["event_name"].eq("AssumeRole").to_numpy()
        targets = pd.Series([role_arn(p) if a else None
                             for p, a in zip(events["request_parameters"], assume, strict=True)],
                            index=events.index, dtype=object)
        return [*self._drift(events, targets, declared), *self._assumers(events, targets, roles)]

    # -- cross-environment drift ------------------------------------------------------------------
    def _drift(self, events: pd.DataFrame, targets: pd.Series, declared: dict[str, frozenset[str]]) -> list[Finding]:
        """Per agent that declares accounts: its own calls (home account declared, or unrecorded)
        that acted in, or assumed a role of, an account outside them."""
        out = []
        rows = events[events["agent"].isin(list(declared)).to_numpy()]
        for agent, group in rows.groupby("agent", sort=False):
            home = declared[str(agent)]
            own = group[group["account_id"].isna().to_numpy() | group["account_id"].isin(list(home)).to_numpy()]
            acted = own["recipient_account_id"].fillna(own["account_id"])
            target = targets.loc[own.index].map(lambda t: t[0] if t else None)
            foreign = acted.where(acted.notna() & ~acted.isin(list(home)),
                                  target.where(target.notna() & ~target.isin(list(home))))
            hits = own.assign(foreign=foreign)[foreign.notna().to_numpy()]
            for account, calls in hits.groupby("foreign", sort=False):
                out.append(self._drift_finding(str(agent), sorted(home), str(account), calls, targets))
        return out

    def _drift_finding(self, agent: str, home: list[str], account: str, calls: pd.DataFrame,
                       targets: pd.Series) -> Finding:
        ok = calls["error_code"].isna()
        assumed = sorted({f"role {t[1]}" for i in calls.index[(calls["event_name"].eq("AssumeRole") & ok).to_numpy()]
                          if (t := targets.loc[i]) and t[0] == account})
        wrote = bool((ok & calls["event_rw"].eq("Write")).any())
        severity = "low" if not ok.any() else "high" if wrote or assumed else "medium"
        apis = Counter(calls["event_name"].dropna())
        declared = ", ".join(self.label(a) for a in home)
        summary = (f"{agent}, declared for {declared}, acted in {self.label(account)}: {_calls(apis)}"
                   + (f" (assumed {', '.join(assumed)} there)" if assumed else "")
                   + ("; RAM refused every call" if not ok.any() else ""))
        evidence = {"declared_accounts": [self.label(a) for a in home], "acted_in": self.label(account),
                    "account": self.accounts.alias(account) or account, "calls": len(calls),
                    "refused": int((~ok).sum()), "wrote": wrote, "roles_assumed": assumed,
                    "apis": dict(apis.most_common(10)),
                    "rule": "an agent that declares accounts acts only in them"}
        return self._finding(agent, severity, summary, calls, evidence, f"drift:{account}")

    def _finding(self, agent: str, severity: str, summary: str, calls: pd.DataFrame, evidence: dict[str, Any],
                 dedup_key: str) -> Finding:
        """One finding over ``calls``, with their source networks added to ``evidence``."""
        evidence = {**evidence, "source_ips": capped(dict.fromkeys(calls["source_ip"].dropna()), 10)}
        return Finding(detector=self.id, agent=agent, severity=severity, score=_SCORE[severity],
                       first_seen=calls["event_time"].min().to_pydatetime(),
                       last_seen=calls["event_time"].max().to_pydatetime(), summary=summary,
                       event_ids=calls["event_id"].tolist(), evidence=jsonable(evidence), dedup_key=dedup_key)

    # -- unexpected assumers ---------------------------------------------------------------------
    def _assumers(self, events: pd.DataFrame, targets: pd.Series,
                  roles: dict[tuple[str | None, str], _Role]) -> list[Finding]:
        """Each AssumeRole of a role whose agent declares ``assumable_by:``, by a caller it does not
        list: grouped per role agent and caller."""
        if not roles:
            return []
        calls = events[targets.notna().to_numpy()]
        unexpected: dict[tuple[str, str], list[Any]] = {}
        for i, agent, identity in zip(calls.index, calls["agent"], calls["identity"], strict=True):
            account, name = targets.loc[i]
            role = roles.get((account, name.lower())) or roles.get((None, name.lower()))
            if role is not None and not _expected(str(agent), str(identity), role.allowed):
                unexpected.setdefault((role.agent, str(agent)), []).append(i)
        return [self._assumer_finding(role_agent, roles, calls.loc[index], targets)
                for (role_agent, _), index in unexpected.items()]

    def _assumer_finding(self, role_agent: str, roles: dict[tuple[str | None, str], _Role], calls: pd.DataFrame,
                         targets: pd.Series) -> Finding:
        ok = calls["error_code"].isna()
        severity = "high" if ok.any() else "medium"
        caller, identity = str(calls["agent"].iloc[0]), str(calls["identity"].iloc[0])
        home = calls["account_id"].dropna()
        caller_label = caller if caller != identity else self.accounts.identity(identity, home.iloc[0] if len(home) else None)
        account, role = targets.loc[calls.index[0]]
        allowed = next(r.allowed for r in roles.values() if r.agent == role_agent)
        where = f" from {self.label(str(home.iloc[0]))}" if len(home) and home.iloc[0] != account else ""
        summary = (f"{caller_label}{where} assumed role {role} in {self.label(account)} (agent {role_agent}), "
                   f"which only {', '.join(allowed)} may assume"
                   + ("" if ok.any() else f"; RAM refused it ({calls['error_code'].dropna().iloc[0]})")
                   + (f" ({len(calls)} calls)" if len(calls) > 1 else ""))
        evidence = {"caller": caller_label, "caller_identity": identity,
                    "caller_account": self.label(str(home.iloc[0])) if len(home) else None, "role": role,
                    "role_account": self.label(account), "account": self.accounts.alias(account) or account,
                    "assumable_by": list(allowed), "calls": len(calls), "succeeded": int(ok.sum()),
                    "rule": "a role is assumed only by whom its agent declares (assumable_by)"}
        return self._finding(role_agent, severity, summary, calls, evidence, f"assumer:{caller}")


def _assumable_roles(models: Models) -> dict[tuple[str | None, str], _Role]:
    """(role account or None for any, lower-case role name) -> its agent, for each role agent that
    declares ``assumable_by:`` (role names are matched without case, as RAM's ARNs may lower them)."""
    out: dict[tuple[str | None, str], _Role] = {}
    for agent in models.inventory.agents:
        if not agent.assumable_by:
            continue
        accounts: Iterable[str | None] = agent.accounts or [None]
        for ident in agent.identities:
            if ident.startswith("role:"):
                for account in accounts:
                    out[(account, ident.removeprefix("role:").lower())] = _Role(agent.name, tuple(agent.assumable_by))
    return out


def _expected(caller: str, identity: str, allowed: Iterable[str]) -> bool:
    """Is the caller allowed: its agent named, or (a cloud service) ``service:<host>`` for its
    ``system:<host>`` identity?"""
    for entry in allowed:
        if entry.startswith("service:"):
            if f"system:{entry.removeprefix('service:')}" in (identity, caller):
                return True
        elif entry == caller:
            return True
    return False


def _calls(apis: Counter[str]) -> str:
    """``2x GetObject, AssumeRole``: the most frequent APIs."""
    return ", ".join(f"{n}x {api}" if n > 1 else api for api, n in apis.most_common(4))
