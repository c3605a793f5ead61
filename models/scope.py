"""Each agent's declared scope, compiled once: its RAM policies, regions, source networks, hours."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from models.inventory import Agent, Hours, Inventory
from models.policy import PolicySet, compile_policy
from models.sources import address


@dataclass(frozen=True)
class AgentScope:
    agent: Agent
    policies: PolicySet
    regions: frozenset[str] | None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None
    hours: Hours | None
    expires: datetime | None

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def has_policies(self) -> bool:
        return bool(self.policies.policies)

    def region_allowed(self, region: str | None) -> bool:
        return self.regions is None or not region or region in self.regions

    def source_allowed(self, ip: str | None) -> bool | None:
        """True/False for a real address; None when the event's source is not an IP."""
        if self.networks is None:
            return True
        return _in_networks(ip, self.networks)


@lru_cache(maxsize=65536)
def _in_networks(ip: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool | None:
    addr = address(ip)
    if addr is None:
        return None
    return any(addr.version == net.version and addr in net for net in networks)


def compile_scopes(inventory: Inventory) -> dict[str, AgentScope]:
    """Compile every agent's policies once (the evaluator is on the hot path)."""
    out = {}
    for agent in inventory.agents:
        policies = PolicySet(compile_policy(doc, f"{agent.name}:policies[{i}]")
                             for i, doc in enumerate(agent.policies))
        out[agent.name] = AgentScope(
            agent=agent,
            policies=policies,
            regions=frozenset(agent.regions) if agent.regions else None,
            networks=tuple(agent.source_ips) if agent.source_ips else None,
            hours=agent.hours,
            expires=agent.expires,
        )
    return out
