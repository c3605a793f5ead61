"""What is planted in a generated organisation's last two weeks: in-scope incidents (every call
allowed by the agent's declared policies, regions and source networks: only learned behaviour can
tell) and benign churn traps (change that must page no one). Each is a :class:`Label`; its events
are an :class:`Extra` generated with the day it falls on.

Incidents (issue 15): a stolen CI key reading thousands of objects from a bucket it never touched;
a read-only monitoring identity enumerating dozens of APIs across many services in minutes; a
person's key used from two distant networks within minutes; a backup role deleting dozens of
snapshots instead of a couple; an ETL role's STS session reused from a new network with
python-requests while the job runs from its usual one; a service role called from outside
Alibaba's networks; a console sign-in without MFA by someone who always used it, right after
another identity unbound their MFA device; the first use of a sensitive family (``kms:*``,
``ram:*``, ``actiontrail:*``) its policy always allowed, by an agent with a stable history. Two
more are drawn from these kinds, so there are ten. Sizes, times, agents and sources vary by seed,
and the thief often keeps the agent's habits (its network, client and hours: a poisoned build on
the CI runner, the monitor's sweep from its own host, deletions from the backup host right after
its run), as real ones do; the kinds that need another network (a key or a session used twice, a
service role outside, an MFA bypass) often keep the agent's client, from addresses that look
like anyone's (broadband, another account's ECS) as well as VPSs abroad.

Traps, one of each: a public holiday and its catch-up day; an on-call night at 02:00; a new region
rolled out as declared; an AccessKey rotated (both keys in the inventory); a new agent with a few
days of history; a Terraform apply touching many resources on its usual day; evening or weekend
work within the person's declared hours; a backup three hours late within its declared hours; an
office NAT change within the declared CIDR.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from ipaddress import ip_address, ip_network
from typing import Any

from pipeline.demo.org_agents import (
    HOME_REGION,
    Org,
    OrgAgent,
    allow,
    backup_run,
    build_service,
    ci_deploy,
    ci_ip,
    console_user,
    etl_runs,
    etl_session,
    human_ip,
    monitor_actor,
    page,
    service_actor,
    terraform_run,
    vendor_session,
    work_session,
)
from pipeline.demo.org_calls import (
    API,
    HOSTILE_NETWORKS,
    UA_CLI,
    UA_CONSOLE,
    UA_OSSUTIL,
    UA_PY_SDK,
    UA_REQUESTS,
    UA_TERRAFORM,
    Event,
    access_key_id,
    at,
    call,
    host_in,
    resource_id,
    session,
    signin,
    subnet_in,
)
from pipeline.demo.synthetic import BUSINESS_TZ, Actor

Make = Callable[[random.Random], Iterator[Event]]


@dataclass
class Label:
    """A planted incident (``expect`` "raise") or benign trap ("quiet"). ``start``/``end`` are set
    for day-long traps; otherwise they are the first and last of the label's events. ``related``:
    other agents whose findings in the window are explained by it (the admin who unbound a
    device), neither required nor counted as other findings."""

    id: str
    kind: str
    agent: str
    expect: str
    description: str
    start: datetime | None = None
    end: datetime | None = None
    related: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "agent": self.agent, "expect": self.expect,
               "start": _iso(self.start), "end": _iso(self.end), "description": self.description}
        if self.related:
            out["related"] = self.related
        return out


@dataclass
class Extra:
    """Events generated on ``day`` in ``agent``'s file, for ``label`` (None: unlabelled)."""

    agent: str
    day: date
    label: str | None
    make: Make


def _iso(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


class Planner:
    """Chooses agents, days and sizes for every label, changing the agents it plans on where the
    label needs it (a grant, a declared region, a second key), before the inventory is written."""

    def __init__(self, org: Org, rng: random.Random):
        self.org, self.rng = org, rng
        self.claimed: set[str] = set()
        self.labels: list[Label] = []
        self.extras: list[Extra] = []
        self.days = [org.scored_from + timedelta(days=k) for k in range((org.end - org.scored_from).days)]

    # -- helpers --------------------------------------------------------------------------------
    def pick(self, kinds: tuple[str, ...], ok: Callable[[OrgAgent], bool] = lambda a: True,
             fix: Callable[[OrgAgent], None] | None = None) -> OrgAgent | None:
        """An unclaimed agent of ``kinds`` (never the newest) that ``ok`` accepts; failing that,
        with ``fix``, any of them made acceptable by it. None when there is none."""
        free = [a for a in self.org.agents if a.kind in kinds and a.name not in self.claimed and not a.active_from]
        found = [a for a in free if ok(a)] or (free if fix else [])
        if not found:
            return None
        agent = self.rng.choice(found)
        if not ok(agent) and fix:
            fix(agent)
        self.claimed.add(agent.name)
        return agent

    def day(self, ok: Callable[[date], bool] = lambda d: True, last: int = 1) -> date:
        """A scored day (not among the last ``last``) that ``ok`` accepts."""
        choices = [d for d in self.days[: len(self.days) - last] if ok(d)]
        return self.rng.choice(choices)

    def next_working(self, day: date) -> date | None:
        return next((d for d in self.days if d > day and self.org.working(d)), None)

    def add(self, label: Label, extras: list[tuple[date, Make]] | None = None) -> None:
        self.labels.append(label)
        for day, make in extras or []:
            self.extras.append(Extra(label.agent, day, label.id, make))

    def window(self, first: date, days: int = 2) -> tuple[datetime, datetime]:
        return at(first, 0), min(at(first + timedelta(days=days), 0), at(self.org.end, 0))

    def persistent(self, first: date) -> tuple[datetime, datetime]:
        """From ``first`` to the scenario's end: a change that stays (a new region, a rotated key,
        a new NAT address) is benign every day after it too, so a finding on it then trips the trap
        rather than counting as another finding."""
        return at(first, 0), at(self.org.end, 0)


def _hostile(rng: random.Random) -> str:
    return host_in(rng, rng.choice(HOSTILE_NETWORKS))


# Networks a thief calls from that look like anyone's: Chinese broadband (a /12 no agent's home is
# in) and another account's Alibaba Cloud ECS (public addresses, not the organisation's networks).
ORDINARY_NETWORKS = ("218.72.0.0/13", "124.160.0.0/13", "47.242.0.0/15", "39.104.0.0/14")


def _elsewhere(rng: random.Random) -> str:
    """A network no agent uses: a VPS abroad half the time, else one that looks like a home or a
    cloud host (an attacker on a Chinese broadband line or in their own ECS instance)."""
    if rng.random() < 0.5:
        return _hostile(rng)
    return host_in(rng, subnet_in(rng, rng.choice(ORDINARY_NETWORKS)))


def _size(rng: random.Random, *ranges: tuple[int, int]) -> int:
    """A size drawn from one of ``ranges`` (small to large), so a seed's incident is not always huge."""
    lo, hi = rng.choice(ranges)
    return rng.randint(lo, hi)


# == traps ===========================================================================================
def plan_traps(plan: Planner) -> None:
    _holiday(plan)
    for trap in (_oncall_night, _new_region, _key_rotation, _new_agent, _big_apply, _after_hours, _late_backup,
                 _nat_change):
        trap(plan)


def _holiday(plan: Planner) -> None:
    """A public holiday on a Monday-Thursday of the scored weeks (and one in the history): the
    weekday agents stop; the next day they catch up (CI deploys twice as often, hourly ETL jobs
    reprocess the missed day)."""
    org, rng = plan.org, plan.rng
    def fits(d: date) -> bool:
        return d.weekday() < 4 and d > org.scored_from
    holiday = plan.day(fits, last=2)
    org.holidays.add(holiday)
    org.catchups.add(holiday + timedelta(days=1))
    history = [org.start + timedelta(days=k) for k in range(7, (org.scored_from - org.start).days - 1)]
    history = [d for d in history if d.weekday() < 4]
    if history:
        past = rng.choice(history)
        org.holidays.add(past)
        org.catchups.add(past + timedelta(days=1))
    agent = plan.pick(("ci",)) or plan.pick(("etl",), lambda a: a.p["schedule"] == "hourly")
    assert agent is not None
    start, end = plan.window(holiday)
    plan.add(Label("trap-holiday", "public_holiday", agent.name, "quiet",
                   f"public holiday on {holiday:%a %Y-%m-%d} (nothing on weekdays' agents), then a catch-up day: "
                   f"{agent.name} does twice its usual work", start, end))


def _oncall_night(plan: Planner) -> None:
    """The on-call person, paged at about 02:00 on a night of their rotation (earlier rotations in
    the history had their pages too)."""
    org, rng = plan.org, plan.rng
    night = plan.day(lambda d: org.on_call(d) is not None and org.on_call(d) == org.on_call(d + timedelta(days=1)))
    name = org.on_call(night)
    assert name is not None
    plan.claimed.add(name)
    agent = next(a for a in org.agents if a.name == name)
    start = rng.uniform(25.5, 26.5)  # 01:30-02:30 after ``night``
    plan.add(Label("trap-oncall-night", "oncall_night", name, "quiet",
                   f"{name} is paged at {int(start) - 24:02d}:{int(start % 1 * 60):02d} on their on-call rotation and "
                   "works from home for under an hour"),
             [(night, lambda r: page(org, agent, night, r, start))])


def _new_region(plan: Planner) -> None:
    """A CI deployer starts deploying to a region its inventory entry declares but it never used."""
    org, rng = plan.org, plan.rng
    agent = plan.pick(("ci",))
    assert agent is not None
    region = rng.choice([r for r in ("ap-southeast-1", "cn-beijing", "cn-shenzhen", "cn-shanghai")
                         if r not in (agent.regions or [])])
    agent.regions = [*(agent.regions or [HOME_REGION]), region]
    first = plan.day(org.working, last=2)
    agent.p.update(new_region=region, new_region_from=first)
    start, end = plan.persistent(first)
    plan.add(Label("trap-new-region", "new_region", agent.name, "quiet",
                   f"{agent.name} rolls out to {region}, declared in its regions, from {first:%a %Y-%m-%d}", start, end),
             [(first, lambda r: ci_deploy(org, agent, at(first, r.uniform(10, 16)), r, region))])


def _key_rotation(plan: Planner) -> None:
    """A person rotates their own CLI AccessKey in the console: the new key (declared in the
    inventory beside the old one) takes over, the old one is disabled, then deleted."""
    org, rng = plan.org, plan.rng
    agent = plan.pick(("human",), lambda a: a.p["key"] is not None) or plan.pick(("human",))
    assert agent is not None
    _give_key(org, agent)
    day = plan.day(org.working, last=3)
    new = access_key_id(org.seed, agent.name, 1)
    agent.identities.append(f"access-key:{new}")
    rotated = at(day, rng.uniform(10, 16))
    agent.p.update(rotated=rotated, new_key=new)
    after = plan.next_working(day)
    start, end = plan.persistent(day)
    extras: list[tuple[date, Make]] = [(day, lambda r: _rotate(org, agent, day, rotated, r))]
    if after:
        extras.append((after, lambda r: _delete_old(org, agent, after, r)))
    plan.add(Label("trap-key-rotation", "key_rotation", agent.name, "quiet",
                   f"{agent.name} rotates its AccessKey: {new} (declared) replaces {agent.p['key']}", start, end), extras)


def _unpinned(agent: OrgAgent) -> None:
    """A person who declares no source networks (and so works from home too)."""
    agent.source_ips = None
    agent.p["home"] = agent.p["home"] or "115.192.36.0/24"
    agent.p["wfh"] = agent.p["wfh"] or 0.1


def _give_key(org: Org, agent: OrgAgent) -> None:
    if agent.p["key"] is None:
        agent.p["key"] = access_key_id(org.seed, agent.name, 0)
        agent.identities.append(f"access-key:{agent.p['key']}")


def _rotate(org: Org, agent: OrgAgent, day: date, when: datetime, rng: random.Random) -> Iterator[Event]:
    user, ip = console_user(agent, when - timedelta(minutes=5)), human_ip(org, agent, day, rng, home=False)
    me = {"UserName": agent.p["user"]}
    yield call(rng, user, when - timedelta(minutes=2), "Ims:ListAccessKeys", ip=ip, ua=UA_CONSOLE, params=me)
    yield call(rng, user, when - timedelta(minutes=1), "Ims:CreateAccessKey", ip=ip, ua=UA_CONSOLE, params=me)
    cli = Actor("ram-user", agent.p["user"], agent.p["principal"], agent.p["new_key"])
    for k, api in enumerate(("Sts:GetCallerIdentity", "Ecs:DescribeInstances", "Ecs:DescribeInstances", "Oss:ListObjects")):
        res = agent.p["buckets"][0] if api == "Oss:ListObjects" else None
        yield call(rng, cli, when + timedelta(minutes=3 + k), api, ip=ip, ua=UA_CLI, resource=res)
    yield call(rng, user, when + timedelta(hours=2), "Ims:UpdateAccessKey", ip=ip, ua=UA_CONSOLE,
               params={**me, "UserAccessKeyId": agent.p["key"], "Status": "Inactive"})


def _delete_old(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    when = at(day, rng.uniform(10, 12))
    ip = human_ip(org, agent, day, rng, home=False)
    user = console_user(agent, when - timedelta(minutes=3))
    yield call(rng, user, when, "Ims:DeleteAccessKey", ip=ip, ua=UA_CONSOLE,
               params={"UserName": agent.p["user"], "UserAccessKeyId": agent.p["key"]})
    cli = Actor("ram-user", agent.p["user"], agent.p["principal"], agent.p["new_key"])
    for k in range(rng.randint(3, 12)):
        yield call(rng, cli, when + timedelta(minutes=10 + 7 * k), "Ecs:DescribeInstances", ip=ip, ua=UA_CLI)


def _new_agent(plan: Planner) -> None:
    """The organisation's newest agent, registered a few days before the end."""
    agent = next(a for a in plan.org.agents if a.active_from)
    plan.claimed.add(agent.name)
    assert agent.active_from is not None
    start, end = at(agent.active_from, 0), at(plan.org.end, 0)
    plan.add(Label("trap-new-agent", "new_agent", agent.name, "quiet",
                   f"{agent.name} ({agent.kind}) is new: its first activity is on {agent.active_from:%a %Y-%m-%d}",
                   start, end))


def _big_apply(plan: Planner) -> None:
    """A Terraform apply on its usual day and hour touching two to three times its usual
    resources, most of them written."""
    org, rng = plan.org, plan.rng
    agent = plan.pick(("terraform",))
    assert agent is not None
    usual = agent.p["apply_day"]
    day = plan.day(lambda d: d.weekday() == usual and org.working(d), last=0)
    agent.p["big_apply"] = day
    reads = round(agent.p["resources"] * rng.uniform(2, 3))
    writes = round(reads * rng.uniform(0.4, 0.8))
    plan.add(Label("trap-big-apply", "terraform_apply", agent.name, "quiet",
                   f"{agent.name}'s apply on its usual day touches {reads} resources and changes {writes}"),
             [(day, lambda r: terraform_run(org, agent, at(day, agent.p["apply_hour"], r.uniform(0, 20)), r, reads,
                                            writes))])


def _after_hours(plan: Planner) -> None:
    """A person works on a Saturday afternoon or a weekday evening (within their declared hours, if
    they declare any)."""
    org, rng = plan.org, plan.rng
    agent = plan.pick(("human",), lambda a: a.source_ips is None, fix=_unpinned)
    assert agent is not None
    if agent.hours:
        agent.hours = {"days": "daily", "from": "07:00", "to": "23:30"}
    weekend = rng.random() < 0.5
    day = plan.day(lambda d: d.weekday() == 5) if weekend else plan.day(org.working)
    start = rng.uniform(13, 16) if weekend else rng.uniform(20.5, 21.5)
    end = start + rng.uniform(1, 2)
    calls = rng.randint(15, 60)
    plan.add(Label("trap-after-hours", "evening_or_weekend_work", agent.name, "quiet",
                   f"{agent.name} works {'on a Saturday afternoon' if weekend else 'in the evening'} from home"),
             [(day, lambda r: work_session(org, agent, day, r, start, end, home=True, calls=calls))])


def _late_backup(plan: Planner) -> None:
    """A backup run three hours late, still inside its declared hours."""
    org = plan.org
    agent = plan.pick(("backup",))
    assert agent is not None
    agent.hours = {"days": "daily", "from": "00:00", "to": "06:00"}
    day = plan.day()
    agent.p["late"] = day
    start = agent.p["start"] + 3
    plan.add(Label("trap-late-backup", "late_backup", agent.name, "quiet",
                   f"{agent.name}'s nightly run starts three hours late ({int(start):02d}:{int(start % 1 * 60):02d}), "
                   f"inside its declared hours 00:00-06:00"),
             [(day, lambda r: backup_run(org, agent, at(day, start, r.uniform(0, 12)), r, prune=r.randint(1, 3)))])


def _nat_change(plan: Planner) -> None:
    """A vendor office changes its NAT: a new egress address in another /24 of the CIDR the
    inventory declares for it."""
    org = plan.org
    agent = plan.pick(("vendor",), lambda a: a.expires is not None and a.expires > at(org.end, 0)) or plan.pick(("vendor",))
    assert agent is not None
    if agent.expires and agent.expires <= at(org.end, 0):  # its contract was renewed
        agent.expires = at(org.end + timedelta(days=90), 0)
    cidr = agent.p["cidr"]
    old = agent.p["egress"]
    new_net = subnet_in(plan.rng, cidr, 24)
    while ip_address(old) in ip_network(new_net):
        new_net = subnet_in(plan.rng, cidr, 24)
    new = host_in(plan.rng, new_net)
    day = plan.day(org.working, last=3)
    agent.p["nat"] = (day, new)
    start, end = plan.persistent(day)
    days = [d for d in (day, plan.next_working(day)) if d]
    plan.add(Label("trap-nat-change", "office_nat_change", agent.name, "quiet",
                   f"{agent.name}'s office NAT moves from {old} to {new}, both inside the declared {cidr}", start, end),
             [(d, _vendor_day(org, agent, d)) for d in days])


def _vendor_day(org: Org, agent: OrgAgent, day: date) -> Make:
    """The vendor's session on ``day`` (a closure per day: a lambda in a loop would share it)."""
    return lambda r: vendor_session(org, agent, day, r, r.uniform(10, 16))


# == incidents ==========================================================================================
def plan_incidents(plan: Planner) -> None:
    kinds = [_exfiltration, _enumeration, _two_networks, _mass_deletion, _session_reuse, _service_outside,
             _mfa_bypass, _sensitive_novelty]
    for n, kind in enumerate(kinds):
        if not kind(plan, f"incident-{n + 1:02d}"):
            raise ValueError(f"no agent left for {kind.__name__.strip('_')}: use more agents")
    again = [k for k in kinds if k is not _mfa_bypass]
    plan.rng.shuffle(again)
    n = len(kinds)
    for kind in again:
        if n == 10:
            break
        if kind(plan, f"incident-{n + 1:02d}"):
            n += 1
    if n < 10:
        raise ValueError("not enough agents for ten incidents: use more agents")


def _when(plan: Planner, ok: Callable[[date], bool] = lambda d: True,
          usual: tuple[float, float] | None = None) -> tuple[date, float]:
    """A scored day and a local hour: business hours or the middle of the night; with ``usual``
    (the agent's own hours), inside them more often than not (a thief who keeps the agent's hours)."""
    day = plan.day(ok)
    if usual and plan.rng.random() < 0.6:
        return day, plan.rng.uniform(*usual)
    night = plan.rng.random() < 0.45
    return day, plan.rng.uniform(0.5, 5.5) if night else plan.rng.uniform(9.5, 17.5)


def _exfiltration(plan: Planner, lid: str) -> bool:
    org, rng = plan.org, plan.rng
    agent = plan.pick(("ci",))
    if agent is None:
        return False
    if not agent.p["sloppy_oss"]:  # the grant that makes this in scope: oss:GetObject on *
        agent.statements.append(allow(["oss:GetObject", "oss:ListObjects"]))
        agent.p["sloppy_oss"] = True
    targets = [a.p["lake"] for a in org.agents if a.kind == "etl"]
    bucket = rng.choice([*targets, "customer-exports", "finance-reports", "hr-payroll"])
    day, hour = _when(plan, org.working, usual=(9.5, 18.5))
    count = _size(rng, (150, 600), (600, 2000), (2000, 6000))
    inside = rng.random() < 0.65  # a poisoned build on the runner, with its usual client; else the key elsewhere
    where = "a poisoned build on its own CI runner" if inside else "an outside host"
    plan.add(Label(lid, "exfiltration", agent.name, "raise",
                   f"{agent.name}'s key reads {count} objects from {bucket}, a bucket it never touched, from {where}"),
             [(day, lambda r: _read_bucket(org, agent, at(day, hour), r, bucket, count, inside))])
    return True


def _read_bucket(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, bucket: str, count: int,
                 inside: bool) -> Iterator[Event]:
    actor = Actor("ram-user", agent.p["user"], agent.p["principal"], agent.p["key"])
    ip = ci_ip(org, agent, rng) if inside else _elsewhere(rng)
    ua = rng.choice((agent.p["ua"], agent.p["ua"], UA_OSSUTIL)) if inside else rng.choice((UA_OSSUTIL, UA_REQUESTS,
                                                                                          agent.p["ua"]))
    rate = rng.uniform(0.5, 10)
    for k in range(count):
        when = t + timedelta(seconds=k / rate)
        if k % 1000 == 0:
            yield call(rng, actor, when, "Oss:ListObjects", ip=ip, ua=ua, resource=bucket,
                       params={"marker": f"export/{k:06d}.csv"})
        yield call(rng, actor, when, "Oss:GetObject", ip=ip, ua=ua, resource=f"{bucket}/export/{k:06d}.csv")


_ENUMERATION = [spec for spec, api in API.items()
                if api.rw == "Read" and api.name.startswith(("Describe", "List", "Get", "Query"))
                and api.service not in ("Oss", "Kms", "Sls") and api.resource_type is None]
_ENUMERATION += ["Oss:GetService", "Kms:ListKeys", "Kms:ListSecrets", "Kms:ListAliases", "Sls:ListProject"]


def _enumeration(plan: Planner, lid: str) -> bool:
    org, rng = plan.org, plan.rng
    agent = plan.pick(("monitor",))
    if agent is None:
        return False
    agent.statements, agent.system_policies = [], ["ReadOnlyAccess"]  # the lazy grant: everything readable
    apis = rng.sample(_ENUMERATION, min(len(_ENUMERATION), _size(rng, (20, 35), (35, 60))))
    services = {a.split(":")[0] for a in apis}
    minutes = rng.uniform(2, 9)
    day, hour = _when(plan)
    plan.add(Label(lid, "enumeration", agent.name, "raise",
                   f"{agent.name} enumerates {len(apis)} APIs across {len(services)} services in {minutes:.0f} minutes"),
             [(day, lambda r: _enumerate(org, agent, at(day, hour), r, apis, minutes))])
    return True


def _enumerate(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, apis: list[str],
               minutes: float) -> Iterator[Event]:
    outside = not agent.source_ips and rng.random() < 0.3  # mostly the monitor's own host, its own client
    ip = _elsewhere(rng) if outside else agent.p["ip"]
    ua = rng.choice((UA_REQUESTS, UA_CLI)) if outside else agent.p["ua"]
    actor = monitor_actor(org, agent, t)
    calls = [(api, region) for api in apis for region in rng.sample(agent.regions or [HOME_REGION], 1)
             for _ in range(rng.randint(1, 3))]
    step = minutes * 60 / len(calls)
    for k, (api, region) in enumerate(calls):
        yield call(rng, actor, t + timedelta(seconds=k * step), api, ip=ip, ua=ua, region=region,
                   vpc=None if outside else agent.p["vpc"])


def _two_networks(plan: Planner, lid: str) -> bool:
    org, rng = plan.org, plan.rng
    def fix(a: OrgAgent) -> None:
        _unpinned(a)
        _give_key(org, a)
    agent = plan.pick(("human",), lambda a: a.p["key"] is not None and a.source_ips is None, fix=fix)
    if agent is None:
        return False
    day = plan.day(org.working)
    hour = rng.uniform(10, 17) if rng.random() < 0.7 else rng.uniform(19, 22.5)
    minutes = rng.uniform(8, 30)
    plan.add(Label(lid, "key_two_networks", agent.name, "raise",
                   f"{agent.name}'s AccessKey is used from its office and from an outside host abroad within "
                   f"{minutes:.0f} minutes"),
             [(day, lambda r: _two_places(org, agent, day, at(day, hour), r, minutes))])
    return True


def _two_places(org: Org, agent: OrgAgent, day: date, t: datetime, rng: random.Random, minutes: float) -> Iterator[Event]:
    key = Actor("ram-user", agent.p["user"], agent.p["principal"], agent.p["key"])
    office, thief = human_ip(org, agent, day, rng, home=t.astimezone(BUSINESS_TZ).hour >= 19), _elsewhere(rng)
    ua_thief = rng.choice((UA_CLI, UA_CLI, UA_PY_SDK, UA_REQUESTS))  # often the owner's own CLI
    regions = ["cn-hangzhou", "cn-shanghai", "cn-beijing", "ap-southeast-1", "us-west-1", "eu-central-1"]
    for _ in range(rng.randint(8, 25)):
        yield call(rng, key, t + timedelta(seconds=rng.uniform(0, minutes * 60)), "Ecs:DescribeInstances", ip=office,
                   ua=UA_CLI)
    script: list[tuple[str, str, str | None]] = [("Sts:GetCallerIdentity", HOME_REGION, None)]
    script += [("Ecs:DescribeInstances", r, None) for r in regions]
    for bucket in agent.p["buckets"]:
        script += [("Oss:ListObjects", HOME_REGION, bucket)]
        script += [("Oss:GetObject", HOME_REGION, f"{bucket}/reports/{n:04d}.csv") for n in range(rng.randint(2, 60))]
    start = t + timedelta(minutes=rng.uniform(1, minutes / 3))
    for k, (api, region, res) in enumerate(script):
        yield call(rng, key, start + timedelta(seconds=3 * k + rng.random()), api, ip=thief, ua=ua_thief,
                   region=region, resource=res)


def _mass_deletion(plan: Planner, lid: str) -> bool:
    org, rng = plan.org, plan.rng
    agent = plan.pick(("backup",))
    if agent is None:
        return False
    count = _size(rng, (20, 40), (40, 90))  # dozens, where a couple is usual
    minutes = rng.uniform(2, 15)
    day, hour = _when(plan)
    if rng.random() < 0.5:
        hour = agent.p["start"] + 0.6  # right after its own run, from its own host
    plan.add(Label(lid, "mass_deletion", agent.name, "raise",
                   f"{agent.name} deletes {count} snapshots in {minutes:.0f} minutes instead of its usual couple"),
             [(day, lambda r: _delete_snapshots(org, agent, at(day, hour), r, count, minutes))])
    return True


def _delete_snapshots(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, count: int,
                      minutes: float) -> Iterator[Event]:
    p = agent.p
    outside = rng.random() < 0.25  # mostly its own host and client: the job's code or its host compromised
    ip, ua = (_elsewhere(rng), rng.choice((UA_CLI, UA_REQUESTS, p["ua"]))) if outside else (p["ip"], p["ua"])
    sess = session(org.seed, Actor("assumed-role", p["role"], p["principal"]), f"backup-{t:%Y%m%d%H%M}", t)
    vpc = None if outside else org.vpc
    for k in range(3):
        yield call(rng, sess, t + timedelta(seconds=2 * k), "Ecs:DescribeSnapshots", ip=ip, ua=ua, vpc=vpc,
                   region=agent.region, params={"PageNumber": str(k + 1), "PageSize": "100"})
    step = minutes * 60 / count
    for k in range(count):
        snap = resource_id("s-bp1", org.seed, agent.name, "old", k)
        yield call(rng, sess, t + timedelta(seconds=10 + k * step), "Ecs:DeleteSnapshot", ip=ip, ua=ua, vpc=vpc,
                   region=agent.region, resource=snap, params={"SnapshotId": snap})


def _session_reuse(plan: Planner, lid: str) -> bool:
    org, rng = plan.org, plan.rng
    agent = plan.pick(("etl",))
    if agent is None:
        return False
    day = plan.day(lambda d: bool(etl_runs(org, agent, d)))
    hour = rng.choice(etl_runs(org, agent, day))
    offset = rng.uniform(8, 45)
    count = _size(rng, (10, 60), (60, 400))
    ua = rng.choice((UA_REQUESTS, UA_REQUESTS, agent.p["ua"]))
    client = "python-requests" if ua == UA_REQUESTS else "the job's own client"
    plan.add(Label(lid, "session_reuse", agent.name, "raise",
                   f"{agent.name}'s STS session of {hour:02.0f}:00 is reused from an outside network with "
                   f"{client} ({count} reads) while the "
                   "job runs from its usual one"),
             [(day, lambda r: _reuse_session(org, agent, at(day, hour, offset), r, count, ua))])
    return True


def _reuse_session(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, count: int,
                   ua: str) -> Iterator[Event]:
    sess = etl_session(org, agent, t)
    ip = _elsewhere(rng)
    buckets = [agent.p["lake"], *agent.p["sources"]]
    for k, bucket in enumerate(buckets):
        yield call(rng, sess, t + timedelta(seconds=k), "Oss:ListObjects", ip=ip, ua=ua, resource=bucket)
    for k in range(count):
        bucket = rng.choice(buckets)
        yield call(rng, sess, t + timedelta(seconds=5 + 1.5 * k), "Oss:GetObject", ip=ip, ua=ua,
                   resource=f"{bucket}/curated/{rng.randrange(10**6):06d}.parquet")


def _service_outside(plan: Planner, lid: str) -> bool:
    org, rng = plan.org, plan.rng
    agent = plan.pick(("service",), lambda a: a.p["flavour"] != "linked",
                      fix=lambda a: _as_instance_role(org, a))
    if agent is None:
        return False
    day, hour = _when(plan)
    count = _size(rng, (3, 20), (20, 300))
    plan.add(Label(lid, "service_role_outside", agent.name, "raise",
                   f"{agent.name}'s role credentials, taken from one of its hosts, are used from the internet "
                   f"({count + 2} calls)"),
             [(day, lambda r: _stolen_service_session(org, agent, at(day, hour), r, count))])
    return True


def _as_instance_role(org: Org, agent: OrgAgent) -> None:
    """Make a service-linked role agent an ECS instance role of the same app (a service-linked
    role's credentials never leave Alibaba Cloud)."""
    fresh = build_service(org, org.rng("instance-role", agent.name), agent.name, agent.p["app"], flavour="ecs")
    for name in ("purpose", "identities", "statements", "latent", "p"):
        setattr(agent, name, getattr(fresh, name))


def _stolen_service_session(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, count: int) -> Iterator[Event]:
    p = agent.p
    sess = service_actor(org, agent, t, rng.choice(p["hosts"]))
    ip, ua = _elsewhere(rng), rng.choice((p["ua"], p["ua"], UA_CLI, UA_PY_SDK, UA_OSSUTIL))  # often its own SDK
    yield call(rng, sess, t, "Oss:ListObjects", ip=ip, ua=ua, resource=p["bucket"])
    yield call(rng, sess, t + timedelta(seconds=4), "Oss:ListObjects", ip=ip, ua=ua, resource=p["bucket"],
               params={"prefix": "uploads/"})
    for k in range(count):
        yield call(rng, sess, t + timedelta(seconds=8 + 2 * k), "Oss:GetObject", ip=ip, ua=ua,
                   resource=f"{p['bucket']}/uploads/{rng.getrandbits(40):010x}")


def _mfa_bypass(plan: Planner, lid: str) -> bool:
    org, rng = plan.org, plan.rng
    def fix(a: OrgAgent) -> None:
        _unpinned(a)
        a.p["mfa"] = True
    admin = plan.pick(("admin",))
    victim = plan.pick(("human",), lambda a: a.p["mfa"] and a.source_ips is None, fix=fix)
    if admin is None or victim is None:
        return False
    day, hour = _when(plan)
    hour = rng.choice((hour, rng.uniform(19, 23)))
    gap = rng.uniform(2, 30)
    plan.add(Label(lid, "mfa_bypass", victim.name, "raise",
                   f"{admin.name} unbinds {victim.name}'s MFA device; {gap:.0f} minutes later {victim.name} signs in "
                   "to the console without MFA", related=[admin.name]),
             [(day, lambda r: _unbind_then_signin(org, admin, victim, day, at(day, hour), r, gap))])
    return True


def _unbind_then_signin(org: Org, admin: OrgAgent, victim: OrgAgent, day: date, t: datetime, rng: random.Random,
                        gap: float) -> Iterator[Event]:
    admin_ip = human_ip(org, admin, day, rng, home=rng.random() < 0.5)
    console = console_user(admin, t - timedelta(minutes=10))
    target = {"UserName": victim.p["user"]}
    yield call(rng, console, t, "Ims:GetUserMFAInfo", ip=admin_ip, ua=UA_CONSOLE, params=target)
    yield call(rng, console, t + timedelta(seconds=30), "Ims:UnbindMFADevice", ip=admin_ip, ua=UA_CONSOLE, params=target)
    t2 = t + timedelta(minutes=gap)
    roll = rng.random()  # a thief abroad, at home in another city, or on the victim's own office network
    ip = (_hostile(rng) if roll < 0.35 else host_in(rng, subnet_in(rng, rng.choice(ORDINARY_NETWORKS))) if roll < 0.65
          else human_ip(org, victim, day, rng, home=False))
    user = console_user(victim, t2, mfa=False)
    yield signin(rng, user, t2, ip=ip, ua=victim.p["browser"])
    for k in range(rng.randint(5, 40)):
        api = rng.choice(("Ecs:DescribeInstances", "Oss:ListObjects", "Oss:GetObject", "Rds:DescribeDBInstances",
                          "Ims:GetUser"))
        bucket = rng.choice(victim.p["buckets"])
        res = {"Oss:ListObjects": bucket, "Oss:GetObject": f"{bucket}/reports/{k:04d}.csv",
               "Ims:GetUser": victim.p["user"]}.get(api)
        params = {"UserName": victim.p["user"]} if api == "Ims:GetUser" else None
        yield call(rng, user, t2 + timedelta(seconds=30 + 25 * k), api, ip=ip, ua=UA_CONSOLE, resource=res, params=params)


_SENSITIVE: dict[str, tuple[tuple[str, int], ...]] = {
    "kms": (("Kms:ListSecrets", 1), ("Kms:GetSecretValue", 6), ("Kms:Decrypt", 3)),
    "ram": (("Ims:ListUsers", 2), ("Ram:ListRoles", 1), ("Ram:ListPolicies", 2), ("Ram:GetPolicy", 3),
            ("Ims:ListAccessKeys", 3), ("Ram:GetRole", 2)),
    "actiontrail": (("Actiontrail:DescribeTrails", 1), ("Actiontrail:GetTrailStatus", 1),
                    ("Actiontrail:LookupEvents", 8)),
}


def _sensitive_novelty(plan: Planner, lid: str) -> bool:
    org = plan.org
    agent = plan.pick(("ci", "terraform", "etl", "service"), lambda a: a.latent is not None, fix=_add_latent)
    if agent is None:
        return False
    family = str(agent.latent)
    day, hour = _when(plan, org.working if agent.kind in ("ci", "terraform") else (lambda d: True))
    plan.add(Label(lid, "sensitive_novelty", agent.name, "raise",
                   f"{agent.name} calls {family}:* for the first time (its policy always allowed it)"),
             [(day, lambda r: _first_sensitive(org, agent, at(day, hour), r, family))])
    return True


def _add_latent(agent: OrgAgent) -> None:
    """Grant a sensitive family the agent never uses (an over-grant, as real policies have)."""
    if agent.kind == "terraform":
        agent.statements.append(allow("actiontrail:*"))
        agent.latent = "actiontrail"
    elif agent.kind == "ci" or agent.p.get("uses_kms") or agent.p.get("flavour") == "linked":
        agent.statements.append(allow(["ram:Get*", "ram:List*"]))
        agent.latent = "ram"
    else:
        agent.statements.append(allow(["kms:Decrypt", "kms:GetSecretValue", "kms:ListSecrets"]))
        agent.latent = "kms"


def _first_sensitive(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, family: str) -> Iterator[Event]:
    actor, ip, ua, vpc = _usual_self(org, agent, t, rng)
    k = 0
    for api, most in _SENSITIVE[family]:
        for n in range(rng.randint(1, most)):
            k += 1
            res, params = _sensitive_target(org, agent, api, n, rng)
            yield call(rng, actor, t + timedelta(seconds=6 * k + rng.random() * 4), api, ip=ip, ua=ua, vpc=vpc,
                       region=agent.region, resource=res, params=params)


def _usual_self(org: Org, agent: OrgAgent, t: datetime, rng: random.Random) -> tuple[Actor, str, str, str | None]:
    """The agent as it usually calls: identity, address, client, VPC."""
    p = agent.p
    if agent.kind == "ci":
        return Actor("ram-user", p["user"], p["principal"], p["key"]), ci_ip(org, agent, rng), p["ua"], None
    if agent.kind == "terraform":
        ip = host_in(rng, agent.source_ips[0]) if agent.source_ips else ci_ip(org, agent, rng)
        sess = session(org.seed, Actor("assumed-role", p["role"], p["principal"]), f"terraform-{t:%Y%m%d%H%M%S}", t)
        return sess, ip, UA_TERRAFORM, None
    if agent.kind == "etl":
        return etl_session(org, agent, t), p["ip"], p["ua"], org.vpc
    host = rng.choice(p["hosts"])
    ecs = p["flavour"] == "ecs"
    return service_actor(org, agent, t, host), host if ecs else "Internal", p["ua"], org.vpc if ecs else None


def _sensitive_target(org: Org, agent: OrgAgent, api: str, n: int, rng: random.Random) -> tuple[str | None, dict[str, Any] | None]:
    app = agent.p.get("app") or agent.name
    if api == "Kms:GetSecretValue":
        return f"prod/{app}/secret-{n}", {"SecretName": f"prod/{app}/secret-{n}"}
    if api == "Kms:Decrypt":
        return resource_id("key-", org.seed, "novel", app), None
    if api == "Ims:ListAccessKeys":
        return None, {"UserName": rng.choice([a.p["user"] for a in org.agents if "user" in a.p])}
    if api == "Ram:GetRole":
        return rng.choice([a.p["role"] for a in org.agents if a.p.get("role")]), None
    if api == "Ram:GetPolicy":
        return rng.choice(("AdministratorAccess", "AliyunOSSFullAccess", "AliyunRAMFullAccess")), None
    if api == "Actiontrail:GetTrailStatus":
        return "org-trail", {"Name": "org-trail"}
    return None, None

