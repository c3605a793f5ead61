"""The agent inventory (``config/agents.yaml``): who acts on the account's behalf, and how an
event is attributed to one of them.

Every agent has a purpose, an owner and an environment, the identities it acts through
(``ram-user:NAME``, ``role:NAME``, ``access-key:ID``) and its least-privilege scope as RAM policy
documents (inline, or ``file:`` relative to the inventory file). An identity belongs to at most
one agent in each account: ``accounts:`` binds an agent's identities to those home accounts, so
the same ``ram-user:ci-deploy`` may be one agent in staging and another in prod; an agent without
``accounts:`` takes every account no bound agent claims (:meth:`Inventory.agent_for`). An event
whose identity matches no agent keeps its raw identity as its agent, so unregistered activity is
never dropped. ``assumable_by:`` names who may assume a role agent's role (agents, or
``service:<host>`` for a cloud service).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from functools import cached_property
from importlib import resources
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models.accounts import Accounts
from models.policy import PolicyError, compile_policy
from pipeline.core.config import Account, read_yaml, validation_error
from pipeline.core.errors import UsageError

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_IDENTITY = re.compile(r"^(ram-user|role|access-key):(\S+)$")
_SERVICE = re.compile(r"^service:[a-z0-9][a-z0-9.-]*\.[a-z]{2,}$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(spec: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``mon-wed,fri``, ``daily`` -> weekday numbers (Monday = 0)."""
    spec = spec.strip().lower()
    if spec in ("daily", "all", "every day", "mon-sun"):
        return frozenset(range(7))
    out: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"days must look like mon-fri or sat,sun; got {spec!r}")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(out)


class Hours(BaseModel):
    """When the agent is expected to act, in the config's ``timezone``; ``to`` < ``from`` wraps."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    days: str = "daily"
    start: time = Field(default=time(0, 0), alias="from")
    end: time = Field(default=time(23, 59, 59), alias="to")

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        if isinstance(value, int):  # YAML reads 08:00 unquoted as a sexagesimal int
            return time(value // 60, value % 60)
        return value

    def minute_table(self) -> np.ndarray:
        """10,080 flags, one per minute of the week (Monday 00:00 first): inside the hours? The
        vectorized form of :meth:`contains`."""
        days = np.array(sorted(parse_days(self.days)))
        minute = np.arange(10080)
        weekday, clock = minute // 1440, minute % 1440
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute + (1 if self.end.second else 0)
        today = np.isin(weekday, days)
        if start <= end:
            return today & (clock >= start) & (clock <= end)
        yesterday = np.isin((weekday - 1) % 7, days)
        return (today & (clock >= start)) | (yesterday & (clock <= end))

    def contains(self, local: datetime) -> bool:
        """Is this local (already converted to the business time zone) moment inside the hours?"""
        clock = local.time().replace(tzinfo=None)
        days = parse_days(self.days)
        if self.start <= self.end:
            return local.weekday() in days and self.start <= clock <= self.end
        if clock >= self.start:  # the evening part of an overnight window
            return local.weekday() in days
        return (local.weekday() - 1) % 7 in days and clock <= self.end


_SLACK_ID = re.compile(r"^(?:<@)?([UW][A-Z0-9]{6,})>?$|^(?:<!subteam\^)?(S[A-Z0-9]{6,})(?:\|[^>]*)?>?$")


def slack_mention(value: str) -> str:
    """``U0123ABCD`` -> ``<@U0123ABCD>``, ``S0123ABCD`` -> ``<!subteam^S0123ABCD>``; anything else
    is refused (a mention is markup: only ids, never free text, become one)."""
    match = _SLACK_ID.match(value.strip())
    if not match:
        raise ValueError("must be a Slack user id (U0123ABCD), a user-group id (S0123ABCD) or its mention "
                         "(<@U0123ABCD>, <!subteam^S0123ABCD>)")
    return f"<@{match[1]}>" if match[1] else f"<!subteam^{match[2]}>"


class Agent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    purpose: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    identities: list[str] = Field(min_length=1)
    policies: list[dict[str, Any]] = Field(default_factory=list)
    regions: list[str] | None = None
    source_ips: list[IPv4Network | IPv6Network] | None = None
    hours: Hours | None = None
    expires: datetime | None = None
    review_by: date | None = None
    protected: bool = False  # `contain` refuses it without --force (monitoring, break-glass)
    # the owner in Slack: a user (U…, W…) or user-group (S…) id, or its mention
    # (``<@U0123ABCD>``, ``<!subteam^S0123ABCD>``); kept as the mention alerts use
    owner_slack: str | None = None
    # the home accounts its identities match in (aliases from the config's `accounts:`, or ids;
    # held as ids); None: any account no bound agent claims
    accounts: list[str] | None = Field(default=None, min_length=1)
    # for a role agent: who may assume its role (agent names, `service:<host>` for a cloud service)
    assumable_by: list[str] | None = Field(default=None, min_length=1)

    @field_validator("accounts", mode="before")
    @classmethod
    def _account_ids(cls, value: Any, info: ValidationInfo) -> Any:
        """Aliases become ids; an alias the config does not define is an error naming it."""
        if not isinstance(value, list):
            return value
        known = (info.context or {}).get("accounts") or Accounts()
        out = []
        for item in value:
            name = str(item) if isinstance(item, int | str) and not isinstance(item, bool) else None
            resolved = known.resolve(name) if name else None
            if resolved is None:
                defined = ", ".join(known.aliases) or "none: the config has no `accounts:`"
                raise ValueError(f"account {item!r} is not an account id nor an alias the config's "
                                 f"`accounts:` defines (aliases: {defined})")
            out.append(resolved)
        return list(dict.fromkeys(out))

    @field_validator("assumable_by")
    @classmethod
    def _assumers(cls, value: list[str] | None) -> list[str] | None:
        for who in value or []:
            if not (_NAME.match(who) or _SERVICE.match(who)):
                raise ValueError(f"{who!r} is neither an agent name nor service:<host> "
                                 "(e.g. service:ecs.aliyuncs.com)")
        return value

    @model_validator(mode="after")
    def _assumable_is_a_role(self) -> Agent:
        if self.assumable_by and not any(i.startswith("role:") for i in self.identities):
            raise ValueError("assumable_by is for role agents, and this agent has no role: identity")
        return self

    @field_validator("owner_slack")
    @classmethod
    def _slack_mention(cls, value: str | None) -> str | None:
        return None if value is None else slack_mention(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits and '-' (e.g. staging-deploy)")
        return value

    @field_validator("identities")
    @classmethod
    def _identities(cls, value: list[str]) -> list[str]:
        for ident in value:
            if not _IDENTITY.match(ident):
                raise ValueError(
                    f"{ident!r} is not an identity; write ram-user:NAME, role:NAME or access-key:ID")
        return value

    @field_validator("source_ips", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        if isinstance(value, list):
            try:
                return [ip_network(str(v), strict=False) for v in value]
            except ValueError as exc:
                raise ValueError(f"not an IP or CIDR: {exc}") from None
        return value

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value else value


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: list[Agent] = Field(default_factory=list)
    path: str | None = None

    @model_validator(mode="after")
    def _unique(self, info: ValidationInfo) -> Inventory:
        accounts = (info.context or {}).get("accounts") or Accounts()
        seen_names: set[str] = set()
        claims: dict[str, list[Agent]] = {}
        for i, agent in enumerate(self.agents):
            if agent.name in seen_names:
                raise ValueError(f"agents[{i}].name: {agent.name!r} is declared twice")
            seen_names.add(agent.name)
            for ident in agent.identities:
                for other in claims.get(ident, []):
                    _no_overlap(i, ident, other, agent, accounts)
                claims.setdefault(ident, []).append(agent)
        for i, agent in enumerate(self.agents):
            unknown = [who for who in agent.assumable_by or [] if _NAME.match(who) and who not in seen_names]
            if unknown:
                raise ValueError(f"agents[{i}].assumable_by: {unknown[0]!r} is not an agent of this inventory "
                                 f"(agent {agent.name!r})")
        return self

    def agent(self, name: str) -> Agent | None:
        return next((a for a in self.agents if a.name == name), None)

    @property
    def identity_map(self) -> dict[str, str]:
        """identity -> agent. An identity several agents claim (in different accounts) maps to the
        one without ``accounts:``, else the first: per-account attribution is :meth:`agent_for`."""
        out: dict[str, str] = {}
        for a in self.agents:
            for ident in a.identities:
                if ident not in out or a.accounts is None:
                    out[ident] = a.name
        return out

    @property
    def bound(self) -> bool:
        """Whether any agent declares ``accounts:``."""
        return any(a.accounts is not None for a in self.agents)

    @cached_property
    def _claims(self) -> dict[str, tuple[dict[str, str], str | None]]:
        """identity -> (home account -> the agent bound there, the agent without ``accounts:``)."""
        out: dict[str, tuple[dict[str, str], str | None]] = {}
        for a in self.agents:
            for ident in a.identities:
                bound, anywhere = out.get(ident, ({}, None))
                if a.accounts is None:
                    anywhere = a.name
                else:
                    bound.update(dict.fromkeys(a.accounts, a.name))
                out[ident] = (bound, anywhere)
        return out

    def agent_for(self, identity: str, access_key_id: str | None, home: str | None) -> str | None:
        """The agent an event belongs to, from its identity, AccessKey and home account
        (``userIdentity.accountId``); None when no agent claims it there (an unregistered identity).

        Precedence: the AccessKey first (a key is one credential, whatever user or role it signs
        for), then the user or role identity; for each, the agent bound to the home account wins
        over one without ``accounts:``. An unknown home account matches only unbound agents."""
        candidates = ([f"access-key:{access_key_id}"] if access_key_id else []) + [identity]
        for ident in candidates:
            bound, anywhere = self._claims.get(ident, ({}, None))
            agent = bound.get(home) if home else None
            if agent or anywhere:
                return agent or anywhere
        return None

    def fingerprint(self) -> str:
        """Changes whenever attribution could change (with account bindings: when they change)."""
        claims: list[Any] = sorted(self.identity_map.items())
        if self.bound:
            claims = sorted([ident, a.name, sorted(a.accounts or [])] for a in self.agents for ident in a.identities)
        return hashlib.sha256(json.dumps(claims).encode()).hexdigest()[:16]


def _no_overlap(index: int, ident: str, first: Agent, second: Agent, accounts: Accounts) -> None:
    """Two agents may claim one identity only in accounts that do not overlap."""
    if first.accounts is None and second.accounts is None:
        raise ValueError(f"agents[{index}].identities: {ident!r} already belongs to agent {first.name!r} "
                         f"(agent {second.name!r} claims it too, and neither declares `accounts:`: both would "
                         "take it in every account)")
    if first.accounts is None or second.accounts is None:
        return  # the bound agent takes its accounts, the other the rest
    shared = [a for a in second.accounts if a in first.accounts]
    if shared:
        where = accounts.label(shared[0])
        where = f"{where} ({shared[0]})" if where != shared[0] else where
        raise ValueError(f"agents[{index}].identities: {ident!r} is claimed by agents {first.name!r} and "
                         f"{second.name!r} in account {where}: give them accounts that do not overlap")


class Attributor:
    """Maps an event's identity (and AccessKey, and home account) to the agent that owns it, or
    to the raw identity when none does. With agents bound to accounts, by
    :meth:`Inventory.agent_for`'s precedence; else by the identity map alone (the home account
    changes nothing)."""

    def __init__(self, inventory: Inventory | None):
        self._map = inventory.identity_map if inventory else {}
        self._bound = inventory if inventory is not None and inventory.bound else None

    def __call__(self, identity: str, access_key_id: str | None, home: str | None = None) -> str:
        if self._bound is not None:
            return self._bound.agent_for(identity, access_key_id, home) or identity
        if access_key_id:
            agent = self._map.get(f"access-key:{access_key_id}")
            if agent:
                return agent
        return self._map.get(identity, identity)


def load_inventory(path: Path | None, accounts: Sequence[Account] | None = None) -> Inventory:
    """Read and validate the inventory; errors name the file, the agent and the key. ``accounts``
    (the config's) resolve the aliases agents' ``accounts:`` use."""
    if path is None:
        return Inventory()
    data = read_yaml(path)
    if data is None:
        return Inventory(path=str(path))
    if not isinstance(data, dict) or "agents" not in data:
        raise UsageError("expected a top-level `agents:` list", path=str(path))
    agents = data.get("agents") or []
    if not isinstance(agents, list):
        raise UsageError("expected a list of agents", path=str(path), key="agents")
    resolved = [_with_policies(a, i, path) for i, a in enumerate(agents)]
    try:
        return Inventory.model_validate({"agents": resolved, "path": str(path)},
                                        context={"accounts": Accounts(accounts or [])})
    except ValidationError as exc:
        raise _named(validation_error(exc, path), agents) from None


def _with_policies(agent: Any, index: int, path: Path) -> Any:
    """Resolve ``{file: x.json}`` (relative to the inventory) and ``{system: Name}`` entries, and
    validate every document as RAM policy, so a bad scope fails at load, naming where."""
    if not isinstance(agent, dict) or not isinstance(agent.get("policies"), list):
        return agent
    name = agent.get("name")
    docs = []
    for j, pol in enumerate(agent["policies"]):
        try:
            docs.append(_policy(pol, path, f"agents[{index}].policies[{j}]"))
        except UsageError as exc:  # every policy error names the agent too
            suffix = f" (agent {name!r})" if name else ""
            raise UsageError(exc.message + suffix, path=exc.path, key=exc.key) from None
    return {**agent, "policies": docs}


def _policy(pol: Any, path: Path, key: str) -> dict[str, Any]:
    """One entry of ``policies:`` as a validated document; a ``file:`` one's errors name its file."""
    policy_file = None
    if isinstance(pol, dict) and set(pol) == {"file"}:
        policy_file = path.parent / str(pol["file"])
        doc = _read_policy(policy_file, path, key)
    elif isinstance(pol, dict) and set(pol) == {"system"}:
        doc = _system_policy(str(pol["system"]), path, key)
    elif isinstance(pol, dict) and "Statement" in pol:
        doc = pol
    else:
        raise UsageError("expected a RAM policy document, {file: PATH} or {system: NAME}",
                         path=str(path), key=key)
    try:
        compile_policy(doc, key)
    except PolicyError as exc:
        where = f"{key}.{exc.where}" if exc.where else key
        in_file = f" in policy file {policy_file}" if policy_file else ""
        raise UsageError(exc.message + in_file, path=str(path), key=where) from None
    return doc


def system_policy_names() -> list[str]:
    folder = resources.files("models") / "system_policies"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def _system_policy(name: str, inventory: Path, key: str) -> dict[str, Any]:
    if name not in system_policy_names():
        raise UsageError(f"unknown system policy {name!r}; vendored: {', '.join(system_policy_names())}",
                         path=str(inventory), key=key)
    text = (resources.files("models") / "system_policies" / f"{name}.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def _read_policy(policy_path: Path, inventory: Path, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(policy_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"policy file not found: {policy_path}", path=str(inventory), key=key) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read policy file {policy_path}: {exc}", path=str(inventory),
                         key=key) from None
    if not isinstance(doc, dict) or "Statement" not in doc:
        raise UsageError(f"{policy_path} is not a RAM policy document (no Statement)",
                         path=str(inventory), key=key)
    return doc


def _named(err: UsageError, agents: list[Any]) -> UsageError:
    """Add the agent's name to ``agents[3].hours`` style keys, so the message is findable."""
    match = re.match(r"agents\[(\d+)\]", err.key or "")
    if match and int(match[1]) < len(agents) and isinstance(agents[int(match[1])], dict):
        name = agents[int(match[1])].get("name")
        if name:
            return UsageError(f"{err.message} (agent {name!r})", path=err.path, key=err.key)
    return err
