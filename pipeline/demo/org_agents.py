"""The agents of a generated organisation: what each kind declares in the inventory (purpose,
owner, identities, a least-privilege RAM policy that allows what it really does, and where natural
regions, source networks, hours, an expiry) and how it behaves, one local day at a time.

Kinds, with the habits of their kind: CI deployers (weekday business hours, from a self-hosted
runner pool or from hosted runners whose addresses change every run), monitoring pollers (around
the clock, read-only, many services), nightly backup roles (snapshots created, a couple deleted),
ETL roles (assumed-role sessions reading and writing their buckets on a schedule), people (office
hours with MFA in the console, some from home, some with a CLI key, holidays and vacations),
on-call people (a weekly rotation, paged some nights), cloud administrators, time-bound vendors,
Terraform roles (a weekly apply on their usual day, plans on weekdays) and service roles (ECS
instance roles, Function Compute roles, service-linked roles, calling from Alibaba's networks).

Each agent-day draws from its own random stream (seed, agent, day), so a day can be generated on
its own and the output depends only on the arguments.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pipeline.demo.org_calls import (
    BENIGN_ERRORS,
    BROWSERS,
    HOME_POOLS,
    HOSTED_CI_POOLS,
    INSTANCE_STATE,
    NO_SUCH_KEY,
    THROTTLED,
    TIMEOUT,
    UA_CLI,
    UA_CONSOLE,
    UA_GO_SDK,
    UA_JAVA,
    UA_OSS_PY,
    UA_PY_SDK,
    UA_TERRAFORM,
    UNAVAILABLE,
    ConsoleUser,
    Event,
    Service,
    Session,
    access_key_id,
    at,
    call,
    host_in,
    local_midnight,
    principal_id,
    resource_id,
    service_ip,
    session,
    signin,
    stamp,
    subnet_in,
)
from pipeline.demo.synthetic import ACCOUNT, Actor

HOME_REGION = "cn-hangzhou"
OTHER_REGIONS = ("cn-shanghai", "cn-beijing", "cn-shenzhen")


def allow(actions: list[str] | str, resources: list[str] | str = "*") -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


def bucket_arns(*buckets: str) -> list[str]:
    return [arn for b in buckets for arn in (f"acs:oss:*:*:{b}", f"acs:oss:*:*:{b}/*")]


@dataclass
class OrgAgent:
    """One agent: its inventory entry and the parameters of its behaviour (``p``)."""

    name: str
    kind: str
    purpose: str
    owner: str
    environment: str
    identities: list[str]
    statements: list[dict[str, Any]]
    system_policies: list[str] = field(default_factory=list)
    regions: list[str] | None = None
    source_ips: list[str] | None = None
    hours: dict[str, str] | None = None
    expires: datetime | None = None
    active_from: date | None = None  # a new agent's first day
    latent: str | None = None  # a sensitive family its policy allows and it never uses
    p: dict[str, Any] = field(default_factory=dict)

    def policy(self) -> dict[str, Any]:
        return {"Version": "1", "Statement": self.statements}

    def entry(self, policy_file: str) -> dict[str, Any]:
        """The agent as ``agents.yaml`` declares it."""
        out: dict[str, Any] = {"name": self.name, "purpose": self.purpose, "owner": self.owner,
                               "environment": self.environment, "identities": list(self.identities),
                               "policies": [*([{"file": policy_file}] if self.statements else []),
                                            *({"system": s} for s in self.system_policies)]}
        if self.regions:
            out["regions"] = list(self.regions)
        if self.source_ips:
            out["source_ips"] = list(self.source_ips)
        if self.hours:
            out["hours"] = dict(self.hours)
        if self.expires:
            out["expires"] = stamp(self.expires)
        return out

    @property
    def region(self) -> str:
        return (self.regions or [HOME_REGION])[0]


@dataclass
class Org:
    """What every agent's day depends on: the seed, the volume, the calendar and shared resources."""

    seed: int
    volume: float
    start: date
    end: date  # exclusive
    scored_from: date  # the last two weeks, where every label lies
    holidays: set[date] = field(default_factory=set)
    catchups: set[date] = field(default_factory=set)
    offices: dict[str, dict[str, Any]] = field(default_factory=dict)
    ci_pool: str = "47.97.112.0/26"
    vpc: str = "vpc-bp1org"
    oncall: list[str] = field(default_factory=list)  # the rotation, one week each
    agents: list[OrgAgent] = field(default_factory=list)

    def working(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def on_call(self, day: date) -> str | None:
        """Who is on call on ``day`` (the rotation hands over on Mondays)."""
        if not self.oncall:
            return None
        monday = self.start - timedelta(days=self.start.weekday())
        week = (day - monday).days // 7
        return self.oncall[week % len(self.oncall)]

    def rng(self, *parts: object) -> random.Random:
        return random.Random("/".join(map(str, (self.seed, *parts))))

    def scaled(self, base: float, minimum: int = 1) -> int:
        return max(minimum, round(base * self.volume))


Behaviour = Callable[[Org, OrgAgent, date, random.Random], Iterator[Event]]


def _error(rng: random.Random, rate: float, errors: tuple[tuple[str, str], ...] = BENIGN_ERRORS) -> tuple[str, str] | None:
    return rng.choice(errors) if rng.random() < rate else None


def _ram_user(agent: OrgAgent, user: str, key: str | None = None) -> Actor:
    return Actor("ram-user", user, agent.p["principal"], key)


# -- CI deployers -----------------------------------------------------------------------------------
def build_ci(org: Org, rng: random.Random, name: str, app: str) -> OrgAgent:
    user = name
    key = access_key_id(org.seed, name, 0)
    bucket, lb = f"release-{app}", resource_id("lb-bp1", org.seed, app)
    self_hosted = rng.random() < 0.6
    regions = [HOME_REGION] + ([rng.choice(OTHER_REGIONS)] if rng.random() < 0.3 else [])
    sloppy = rng.random() < 0.5  # oss:GetObject on * (a common, lazy grant)
    oss = ([allow(["oss:GetObject", "oss:ListObjects"]), allow("oss:PutObject", f"acs:oss:*:*:{bucket}/*")] if sloppy
           else [allow(["oss:GetObject", "oss:ListObjects", "oss:PutObject"], bucket_arns(bucket))])
    statements = [allow("ecs:Describe*"),
                  allow(["ecs:RunInstances", "ecs:CreateImage", "ecs:DeleteInstance", "ecs:TagResources"],
                        "acs:ecs:*:*:*"),
                  allow(["slb:DescribeLoadBalancerAttribute", "slb:DescribeHealthStatus", "slb:AddBackendServers",
                         "slb:RemoveBackendServers"], f"acs:slb:*:*:loadbalancer/{lb}"), *oss]
    latent = None
    if rng.random() < 0.3:  # deploy tooling was once meant to read roles; it never has
        statements.append(allow(["ram:Get*", "ram:List*"]))
        latent = "ram"
    agent = OrgAgent(name, "ci", f"Deploy {app} releases to production from the CI pipeline", f"{app}-team",
                     "production", [f"ram-user:{user}", f"access-key:{key}"], statements, regions=regions,
                     source_ips=[org.ci_pool] if self_hosted else None, latent=latent,
                     hours={"days": "mon-fri", "from": "08:00", "to": "22:00"} if rng.random() < 0.5 else None)
    agent.p = {"principal": principal_id(org.seed, name), "user": user, "key": key, "bucket": bucket, "lb": lb,
               "app": app, "sloppy_oss": sloppy, "ua": rng.choice((UA_CLI, UA_CLI, UA_PY_SDK, UA_GO_SDK)),
               "deploys": sorted(rng.sample(range(1, 9), 2)), "new_region_from": None, "new_region": None}
    return agent


def ci_ip(org: Org, agent: OrgAgent, rng: random.Random) -> str:
    if agent.source_ips:
        return host_in(rng, agent.source_ips[0])
    return host_in(rng, subnet_in(rng, rng.choice(HOSTED_CI_POOLS)))


def ci_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Weekdays, business hours: deploys, each a burst of a dozen to thirty calls; on the day
    after a public holiday the held-back deploys on top of the day's own (more than any other day)."""
    if not org.working(day):
        return
    lo, hi = agent.p["deploys"]
    count = rng.randint(lo, hi) + (hi if day in org.catchups else 0)
    for _ in range(count):
        yield from ci_deploy(org, agent, at(day, rng.uniform(9, 19)), rng, _deploy_region(agent, day, rng))


def _deploy_region(agent: OrgAgent, day: date, rng: random.Random) -> str:
    since = agent.p.get("new_region_from")
    if since and day >= since and rng.random() < 0.5:
        return str(agent.p["new_region"])
    used = [r for r in (agent.regions or [HOME_REGION]) if r != agent.p.get("new_region")]
    return rng.choice(used)


def ci_deploy(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, region: str) -> Iterator[Event]:
    p = agent.p
    actor = _ram_user(agent, p["user"], p["key"])
    ip, ua, bucket = ci_ip(org, agent, rng), p["ua"], p["bucket"]
    build = f"{t:%Y%m%d%H%M}"
    old = [resource_id("i-bp1", org.seed, agent.name, build, "old", k) for k in range(rng.randint(1, 3))]
    new = [resource_id("i-bp1", org.seed, agent.name, build, "new", k) for k in range(len(old))]
    steps: list[tuple[str, str | None]] = [("Oss:ListObjects", bucket)]
    steps += [("Oss:GetObject", f"{bucket}/builds/{build}/{k:02d}.tar.gz") for k in range(org.scaled(rng.uniform(1, 8)))]
    steps += [("Ecs:DescribeImages", None), ("Ecs:CreateImage", old[0])]
    steps += [("Ecs:RunInstances", i) for i in new] + [("Ecs:TagResources", i) for i in new]
    steps += [("Ecs:DescribeInstances", None)] * rng.randint(2, 5) + [("Ecs:DescribeInstanceStatus", None)]
    steps += [("Slb:DescribeLoadBalancerAttribute", p["lb"]), ("Slb:AddBackendServers", p["lb"])]
    steps += [("Slb:DescribeHealthStatus", p["lb"])] * rng.randint(1, 3) + [("Slb:RemoveBackendServers", p["lb"])]
    steps += [("Ecs:DeleteInstance", i) for i in old] + [("Oss:PutObject", f"{bucket}/deploys/{build}.json")]
    for i, (api, res) in enumerate(steps):
        error = _error(rng, 0.02, (THROTTLED,)) if api == "Ecs:DescribeInstances" else None
        if api == "Ecs:DeleteInstance" and rng.random() < 0.01:
            error = INSTANCE_STATE
        params = {"InstanceId": res} if res and res.startswith("i-") else None
        yield call(rng, actor, t + timedelta(seconds=8 * i + rng.random() * 5), api, ip=ip, ua=ua, region=region,
                   resource=res, error=error, params=params)


# -- Terraform roles --------------------------------------------------------------------------------
_TF_READS = ("Ecs:DescribeInstances", "Ecs:DescribeSecurityGroups", "Vpc:DescribeVpcs", "Vpc:DescribeVSwitches",
             "Slb:DescribeLoadBalancers", "Rds:DescribeDBInstances", "Ecs:DescribeDisks", "Ecs:DescribeImages",
             "Vpc:DescribeEipAddresses", "Vpc:DescribeNatGateways", "Vpc:DescribeRouteTableList", "Ecs:DescribeTags",
             "Ram:GetRole")
_TF_WRITES = ("Ecs:ModifyInstanceAttribute", "Ecs:AuthorizeSecurityGroup", "Ecs:RevokeSecurityGroup",
              "Ecs:TagResources", "Vpc:CreateVSwitch", "Slb:SetBackendServers")


def build_terraform(org: Org, rng: random.Random, name: str, stack: str) -> OrgAgent:
    role = "Terraform" + "".join(w.title() for w in stack.split("-")) + "Role"
    statements = [allow(["ecs:*", "vpc:*", "slb:*", "rds:Describe*"]), allow(["ram:GetRole", "ram:ListRoles"]),
                  allow("sts:GetCallerIdentity")]
    latent = None
    if rng.random() < 0.35:  # the stack once managed the trail
        statements.append(allow("actiontrail:*"))
        latent = "actiontrail"
    agent = OrgAgent(name, "terraform", f"Apply the {stack} Terraform stack from the platform repository",
                     "platform-team", "production", [f"role:{role}"], statements, regions=[HOME_REGION],
                     source_ips=[org.ci_pool] if rng.random() < 0.6 else None, latent=latent)
    agent.p = {"principal": principal_id(org.seed, role), "role": role, "apply_day": rng.randint(0, 4),
               "apply_hour": rng.uniform(10, 16), "resources": rng.randint(80, 260),
               "plans": rng.uniform(0.3, 2.0), "big_apply": None}
    return agent


def terraform_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Plans on some weekdays (a refresh: one read per managed resource); the weekly apply on its
    usual day (moved to the next working day by a holiday) also writes ~5-10% of them."""
    if not org.working(day):
        return
    p = agent.p
    for _ in range(min(4, _poisson(rng, p["plans"]))):
        yield from terraform_run(org, agent, at(day, rng.uniform(9.5, 18.5)), rng, p["resources"], 0)
    if _apply_day(org, agent, day) and day != p.get("big_apply"):
        yield from terraform_run(org, agent, at(day, p["apply_hour"], rng.uniform(0, 20)), rng, p["resources"],
                                 round(p["resources"] * rng.uniform(0.05, 0.1)))


def _apply_day(org: Org, agent: OrgAgent, day: date) -> bool:
    usual = agent.p["apply_day"]
    if day.weekday() == usual:
        return True
    before = day - timedelta(days=1)  # the usual day was a holiday: apply the next working day
    return before.weekday() == usual and before in org.holidays


def terraform_run(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, reads: int, writes: int) -> Iterator[Event]:
    p = agent.p
    sess = session(org.seed, Actor("assumed-role", p["role"], p["principal"]), f"terraform-{t:%Y%m%d%H%M%S}", t)
    ip = host_in(rng, agent.source_ips[0]) if agent.source_ips else host_in(rng, subnet_in(rng, rng.choice(HOSTED_CI_POOLS)))
    yield call(rng, sess, t, "Sts:GetCallerIdentity", ip=ip, ua=UA_TERRAFORM)
    step = 0.4 + rng.random()
    for i in range(reads):
        api = _TF_READS[i % len(_TF_READS)]
        res = p["role"] if api == "Ram:GetRole" else None
        yield call(rng, sess, t + timedelta(seconds=1 + step * i), api, ip=ip, ua=UA_TERRAFORM, region=agent.region,
                   resource=res, error=_error(rng, 0.005, (THROTTLED,)))
    base = t + timedelta(seconds=2 + step * reads)
    for i in range(writes):
        api = rng.choice(_TF_WRITES)
        res = {"Vpc:CreateVSwitch": None, "Slb:SetBackendServers": resource_id("lb-bp1", org.seed, agent.name, i % 7),
               "Ecs:AuthorizeSecurityGroup": resource_id("sg-bp1", org.seed, agent.name, i % 11),
               "Ecs:RevokeSecurityGroup": resource_id("sg-bp1", org.seed, agent.name, i % 11)}.get(
            api, resource_id("i-bp1", org.seed, agent.name, i % 40))
        yield call(rng, sess, base + timedelta(seconds=3 * i), api, ip=ip, ua=UA_TERRAFORM, region=agent.region,
                   resource=res, error=_error(rng, 0.01, (THROTTLED, ("InvalidParameter", "The specified parameter is not valid."))))


# -- monitoring pollers ------------------------------------------------------------------------------
MONITOR_GROUPS: dict[str, tuple[str, ...]] = {
    "ecs": ("Ecs:DescribeInstances", "Ecs:DescribeInstanceStatus", "Ecs:DescribeDisks"),
    "rds": ("Rds:DescribeDBInstances", "Rds:DescribeDBInstancePerformance"),
    "slb": ("Slb:DescribeLoadBalancers", "Slb:DescribeHealthStatus"),
    "cms": ("Cms:DescribeMetricList", "Cms:DescribeMetricLast"),
    "vpc": ("Vpc:DescribeEipAddresses", "Vpc:DescribeNatGateways"),
    "kvstore": ("R-kvstore:DescribeInstances",),
    "cs": ("CS:DescribeClustersV1",),
    "ess": ("Ess:DescribeScalingGroups",),
}
_RAM_PREFIX = {"ecs": "ecs", "rds": "rds", "slb": "slb", "cms": "cms", "vpc": "vpc", "kvstore": "r-kvstore",
               "cs": "cs", "ess": "ess"}


def build_monitor(org: Org, rng: random.Random, name: str, tool: str) -> OrgAgent:
    groups = rng.sample(sorted(MONITOR_GROUPS), rng.randint(3, 6))
    regions = [HOME_REGION, *rng.sample(OTHER_REGIONS, rng.randint(0, 2))]
    as_role = rng.random() < 0.4
    role, user = "".join(w.title() for w in tool.split("-")) + "MonitorRole", f"{tool}-reader"
    in_vpc = rng.random() < 0.5
    host = host_in(rng, "172.16.0.0/12") if in_vpc else host_in(rng, subnet_in(rng, "47.96.0.0/13"))
    key = access_key_id(org.seed, name, 0)
    readonly = rng.random() < 0.5  # the lazy grant: everything readable
    statements = [] if readonly else [allow([f"{_RAM_PREFIX[g]}:Describe*" for g in groups])]
    identities = [f"role:{role}"] if as_role else [f"ram-user:{user}", f"access-key:{key}"]
    agent = OrgAgent(name, "monitor", f"Poll {', '.join(groups)} health for the {tool} dashboards", "sre-team",
                     "production", identities, statements, system_policies=["ReadOnlyAccess"] if readonly else [],
                     regions=regions, source_ips=[f"{host}/32"] if (not in_vpc and rng.random() < 0.6) else None)
    agent.p = {"principal": principal_id(org.seed, name), "groups": groups, "role": role if as_role else None,
               "user": user, "key": key, "ip": host, "vpc": org.vpc if in_vpc else None,
               "ua": rng.choice((UA_PY_SDK, UA_GO_SDK, UA_JAVA)), "interval": rng.choice((1, 2, 2, 3, 5)),
               "pages": {g: rng.choice((1, 1, 2, 3, 4)) for g in groups}}  # the fleet's size, in pages of 100
    return agent


def monitor_actor(org: Org, agent: OrgAgent, t: datetime) -> Actor:
    p = agent.p
    if not p["role"]:
        return _ram_user(agent, p["user"], p["key"])
    block = t.replace(minute=0, second=0, microsecond=0, hour=t.hour - t.hour % 6)
    return session(org.seed, Actor("assumed-role", p["role"], p["principal"]), f"{p['ip']}-{block:%Y%m%d%H}", block)


def monitor_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Polls around the clock: each poll asks every region for its fast APIs (a page of 100 at a
    time), every sixth poll also the slow ones (the second API of a group and beyond)."""
    p = agent.p
    polls = org.scaled(1440 / p["interval"], 24)
    step = 86400 / polls
    for n in range(polls):
        t = at(day, 0, 0, n * step + rng.uniform(0, min(20, step / 4)))
        actor = monitor_actor(org, agent, t)
        k = 0
        for region in agent.regions or [HOME_REGION]:
            for g in p["groups"]:
                for api in MONITOR_GROUPS[g][: None if n % 6 == 0 else 1]:
                    for page in range(1, p["pages"][g] + 1):
                        k += 1
                        yield call(rng, actor, t + timedelta(seconds=0.4 * k), api, ip=p["ip"], ua=p["ua"],
                                   region=region, vpc=p["vpc"], params={"PageSize": "100", "PageNumber": str(page)},
                                   error=_error(rng, 0.002, (UNAVAILABLE, THROTTLED)))


# -- nightly backups ---------------------------------------------------------------------------------
def build_backup(org: Org, rng: random.Random, name: str, target: str) -> OrgAgent:
    role = "Backup" + "".join(w.title() for w in target.split("-")) + "Role"
    bucket = f"backups-{target}"
    statements = [allow(["ecs:DescribeDisks", "ecs:DescribeSnapshots"]),
                  allow(["ecs:CreateSnapshot", "ecs:DeleteSnapshot"], ["acs:ecs:*:*:disk/*", "acs:ecs:*:*:snapshot/*"]),
                  allow(["rds:CreateBackup", "rds:DescribeBackups"], "acs:rds:*:*:dbinstance/*"),
                  allow(["oss:PutObject", "oss:ListObjects"], bucket_arns(bucket))]
    declared = rng.random() < 0.7
    agent = OrgAgent(name, "backup", f"Snapshot the {target} disks and copy database dumps to OSS every night",
                     "dba-team", "production", [f"role:{role}"], statements, regions=[HOME_REGION],
                     hours={"days": "daily", "from": "00:00", "to": "06:00"} if declared else None)
    agent.p = {"principal": principal_id(org.seed, role), "role": role, "bucket": bucket,
               "start": rng.uniform(0.9, 1.6), "disks": [resource_id("d-bp1", org.seed, name, k) for k in range(rng.randint(4, 16))],
               "dbs": [resource_id("rm-bp1", org.seed, name, k) for k in range(rng.randint(0, 2))],
               "ip": host_in(rng, "172.16.0.0/12"), "ua": rng.choice((UA_PY_SDK, UA_GO_SDK)), "late": None}
    return agent


def backup_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Every night: snapshot each disk, prune a couple of old snapshots, back up the databases,
    copy the dumps to OSS. (Its ``late`` day's run is a trap's: ``org_labels``.)"""
    if day != agent.p["late"]:
        yield from backup_run(org, agent, at(day, agent.p["start"], rng.uniform(0, 12)), rng, prune=rng.randint(1, 3))


def backup_run(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, prune: int) -> Iterator[Event]:
    p = agent.p
    sess = session(org.seed, Actor("assumed-role", p["role"], p["principal"]), f"backup-{t:%Y%m%d%H%M}", t)
    kw: dict[str, Any] = {"ip": p["ip"], "ua": p["ua"], "vpc": org.vpc, "region": agent.region}
    yield call(rng, sess, t, "Ecs:DescribeDisks", **kw)
    clock = t
    for disk in p["disks"]:
        clock += timedelta(seconds=rng.uniform(20, 70))
        yield call(rng, sess, clock, "Ecs:CreateSnapshot", resource=disk, params={"DiskId": disk}, **kw,
                   error=_error(rng, 0.004, (THROTTLED,)))
    clock += timedelta(seconds=30)
    yield call(rng, sess, clock, "Ecs:DescribeSnapshots", **kw)
    for k in range(prune):
        snap = resource_id("s-bp1", org.seed, agent.name, t.date(), k)
        yield call(rng, sess, clock + timedelta(seconds=5 + 4 * k), "Ecs:DeleteSnapshot", resource=snap,
                   params={"SnapshotId": snap}, **kw)
    clock += timedelta(minutes=2)
    for db in p["dbs"]:
        yield call(rng, sess, clock, "Rds:CreateBackup", resource=db, params={"DBInstanceId": db}, **kw)
        yield call(rng, sess, clock + timedelta(minutes=rng.uniform(5, 15)), "Rds:DescribeBackups", resource=db, **kw)
    clock += timedelta(minutes=18)
    for k in range(org.scaled(rng.uniform(2, 20))):
        yield call(rng, sess, clock + timedelta(seconds=6 * k), "Oss:PutObject",
                   resource=f"{p['bucket']}/{t:%Y/%m/%d}/part-{k:04d}.xb", **kw)


# -- ETL roles ------------------------------------------------------------------------------------------
SCHEDULES = {"hourly": (0.4, "weekdays 08:00-20:00, every hour"), "2h": (0.3, "every two hours, every day"),
             "nightly": (0.3, "every night at 02:00")}


def build_etl(org: Org, rng: random.Random, name: str, domain: str, sources: list[str]) -> OrgAgent:
    role = "Etl" + "".join(w.title() for w in domain.split("-")) + "Role"
    runner = rng.random() < 0.5  # a RAM user on the job host assumes the role for each run
    lake = f"data-lake-{domain}"
    schedule = rng.choices(list(SCHEDULES), [w for w, _ in SCHEDULES.values()])[0]
    statements = [allow(["oss:ListObjects", "oss:GetObject", "oss:PutObject", "oss:HeadObject", "oss:DeleteObject"],
                        bucket_arns(lake)),
                  allow(["oss:ListObjects", "oss:GetObject"], bucket_arns(*sources))]
    identities = [f"role:{role}"]
    user, key = f"etl-{domain}-runner", access_key_id(org.seed, name, 0)
    latent = None
    if runner:
        identities += [f"ram-user:{user}", f"access-key:{key}"]
        statements.append(allow("sts:AssumeRole", f"acs:ram::{ACCOUNT}:role/{role}"))
    if rng.random() < 0.3:  # decrypting the warehouse password was planned, never shipped
        statements.append(allow(["kms:Decrypt", "kms:GetSecretValue", "kms:ListSecrets"]))
        latent = "kms"
    agent = OrgAgent(name, "etl", f"Load {domain} data into the lake ({SCHEDULES[schedule][1]})", "data-team",
                     "production", identities, statements, regions=[HOME_REGION], latent=latent)
    agent.p = {"principal": principal_id(org.seed, role), "role": role, "runner": runner, "user": user, "key": key,
               "user_principal": principal_id(org.seed, user), "lake": lake, "sources": sources,
               "schedule": schedule, "ip": host_in(rng, "172.16.0.0/12"), "ua": rng.choice((UA_JAVA, UA_OSS_PY)),
               "objects": rng.uniform(60, 400) if schedule != "nightly" else rng.uniform(600, 2500)}
    return agent


def etl_runs(org: Org, agent: OrgAgent, day: date) -> list[float]:
    """The local hours the job starts at on ``day``."""
    schedule = agent.p["schedule"]
    if schedule == "hourly":
        return [float(h) for h in range(8, 21)] if org.working(day) else []
    if schedule == "2h":
        return [float(h) for h in range(0, 24, 2)]
    return [2.0]


def etl_session_name(agent: OrgAgent, t: datetime) -> str:
    return f"etl-{agent.p['lake'].removeprefix('data-lake-')}-{t:%Y%m%d%H}"


def etl_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Each scheduled run: (AssumeRole,) list the sources, read the new partitions, write the
    curated ones; after a public holiday the hourly job reprocesses the missed day (twice the
    reads)."""
    factor = 2 if (day in org.catchups and agent.p["schedule"] == "hourly") else 1
    for hour in etl_runs(org, agent, day):
        yield from etl_run(org, agent, at(day, hour, 4, rng.uniform(0, 90)), rng, factor)


def etl_session(org: Org, agent: OrgAgent, t: datetime) -> Session:
    start = t.replace(minute=0, second=0, microsecond=0)
    return session(org.seed, Actor("assumed-role", agent.p["role"], agent.p["principal"]),
                   etl_session_name(agent, t), start + timedelta(minutes=4))


def etl_run(org: Org, agent: OrgAgent, t: datetime, rng: random.Random, factor: int = 1) -> Iterator[Event]:
    p = agent.p
    kw: dict[str, Any] = {"ip": p["ip"], "ua": p["ua"], "vpc": org.vpc, "region": agent.region}
    sess = etl_session(org, agent, t)
    if p["runner"]:
        runner = Actor("ram-user", p["user"], p["user_principal"], p["key"])
        arn = f"acs:ram::{ACCOUNT}:role/{p['role']}"
        yield call(rng, runner, t - timedelta(seconds=2), "Sts:AssumeRole", ip=p["ip"], ua=UA_PY_SDK,
                   params={"RoleArn": arn, "RoleSessionName": sess.session, "DurationSeconds": "3600"})
    part = f"{t:%Y%m%d%H}"
    clock = t
    for src in [p["lake"], *p["sources"]]:
        clock += timedelta(seconds=rng.uniform(1, 4))
        yield call(rng, sess, clock, "Oss:ListObjects", resource=src, params={"prefix": f"raw/{part[:8]}/"}, **kw)
    reads = org.scaled(p["objects"] * rng.uniform(0.7, 1.3) * factor, 2)
    for k in range(reads):
        bucket = p["lake"] if k % 3 else rng.choice([p["lake"], *p["sources"]])
        err = _error(rng, 0.004, (TIMEOUT, NO_SUCH_KEY))
        yield call(rng, sess, clock + timedelta(seconds=1 + 0.5 * k), "Oss:GetObject",
                   resource=f"{bucket}/raw/{part[:8]}/{k:05d}.parquet", error=err, **kw)
    clock += timedelta(seconds=2 + 0.5 * reads)
    for k in range(max(1, reads // 3)):
        yield call(rng, sess, clock + timedelta(seconds=0.8 * k), "Oss:PutObject",
                   resource=f"{p['lake']}/curated/{part}/{k:05d}.parquet", **kw)


# -- service roles -------------------------------------------------------------------------------------
SERVICE_FLAVOURS = ("ecs", "ecs", "fc", "fc", "linked")
_DIURNAL = [0.35, 0.3, 0.25, 0.25, 0.25, 0.3, 0.45, 0.7, 1.0, 1.25, 1.35, 1.4, 1.3, 1.3, 1.35, 1.4, 1.35, 1.3,
            1.25, 1.3, 1.35, 1.2, 0.9, 0.55]


def build_service(org: Org, rng: random.Random, name: str, app: str, flavour: str | None = None) -> OrgAgent:
    flavour = flavour or rng.choice(SERVICE_FLAVOURS)
    bucket = f"{app}-assets"
    role = {"ecs": "".join(w.title() for w in app.split("-")) + "EcsRole", "fc": f"fc-{app}-role",
            "linked": "AliyunServiceRoleForEss" + "".join(w.title() for w in app.split("-"))}[flavour]
    uses_kms = flavour != "linked" and rng.random() < 0.3
    if flavour == "linked":
        statements = [allow(["ecs:DescribeInstances", "ecs:RunInstances", "ecs:DeleteInstance"]),
                      allow(["slb:AddBackendServers", "slb:RemoveBackendServers", "slb:DescribeLoadBalancers"])]
    else:
        statements = [allow(["oss:GetObject", "oss:PutObject", "oss:HeadObject", "oss:ListObjects"], bucket_arns(bucket)),
                      allow("log:PostLogStoreLogs", f"acs:log:*:*:project/{app}-logs")]
    if uses_kms:
        statements.append(allow("kms:Decrypt"))
    latent = None
    if flavour != "linked" and not uses_kms and rng.random() < 0.4:  # the secret was moved to KMS "later"
        statements.append(allow(["kms:Decrypt", "kms:GetSecretValue", "kms:ListSecrets"]))
        latent = "kms"
    purpose = {"ecs": f"ECS instance role of the {app} service", "fc": f"Function Compute role of the {app} functions",
               "linked": f"Auto Scaling service-linked role for the {app} fleet"}[flavour]
    agent = OrgAgent(name, "service", purpose, f"{app}-team", "production", [f"role:{role}"], statements,
                     regions=[HOME_REGION], latent=latent)
    agent.p = {"principal": principal_id(org.seed, role), "role": role, "flavour": flavour, "bucket": bucket,
               "app": app, "uses_kms": uses_kms, "rate": rng.uniform(200, 900),
               "hosts": [host_in(rng, "172.16.0.0/12") for _ in range(rng.randint(2, 6))],
               "ua": rng.choice((UA_GO_SDK, UA_JAVA, UA_OSS_PY))}
    return agent


def service_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Around the clock, busier by day: the app's reads and writes of its bucket, its log
    shipping, a key decrypt now and then; a service-linked role scales the fleet a few times."""
    if agent.p["flavour"] == "linked":
        yield from _scaling_day(org, agent, day, rng)
        return
    for hour in range(24):
        for _ in range(org.scaled(agent.p["rate"] * _DIURNAL[hour] * rng.uniform(0.8, 1.2), 0)):
            yield _service_call(org, agent, at(day, hour, 0, rng.uniform(0, 3600)), rng)


def service_actor(org: Org, agent: OrgAgent, t: datetime, host: str) -> Actor:
    """ECS instance roles renew their credentials every six hours per instance; Function Compute
    every three hours per container."""
    span = 6 if agent.p["flavour"] == "ecs" else 3
    block = t.replace(minute=0, second=0, microsecond=0, hour=t.hour - t.hour % span)
    name = (resource_id("i-bp1", org.seed, host) if agent.p["flavour"] == "ecs"
            else "fc-" + resource_id("", org.seed, host)[:12])
    return session(org.seed, Actor("assumed-role", agent.p["role"], agent.p["principal"]), f"{name}-{block:%m%d%H}", block)


def _service_call(org: Org, agent: OrgAgent, t: datetime, rng: random.Random) -> Event:
    p = agent.p
    host = rng.choice(p["hosts"])
    actor = service_actor(org, agent, t, host)
    ip, vpc = (host, org.vpc) if p["flavour"] == "ecs" else (service_ip(rng), None)
    roll = rng.random()
    if roll < 0.5:
        api, res = "Oss:GetObject", f"{p['bucket']}/static/{rng.randrange(5000):05d}.bin"
    elif roll < 0.7:
        api, res = "Oss:PutObject", f"{p['bucket']}/uploads/{t:%Y%m%d}/{rng.getrandbits(40):010x}"
    elif roll < 0.8:
        api, res = "Oss:HeadObject", f"{p['bucket']}/static/{rng.randrange(5000):05d}.bin"
    elif roll < 0.97 or not p["uses_kms"]:
        return call(rng, actor, t, "Sls:PostLogStoreLogs", ip=ip, ua=p["ua"], vpc=vpc, region=agent.region,
                    resource=f"{p['app']}-logs", params={"project": f"{p['app']}-logs", "logstore": "app"})
    else:
        api, res = "Kms:Decrypt", resource_id("key-", org.seed, p["app"])
    err = _error(rng, 0.003, (NO_SUCH_KEY,) if api == "Oss:GetObject" else (UNAVAILABLE,))
    return call(rng, actor, t, api, ip=ip, ua=p["ua"], vpc=vpc, region=agent.region, resource=res, error=err)


def _scaling_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    p = agent.p
    ua = "ess.aliyuncs.com"
    for hour, out in ((8.5, True), (21.5, False)):
        t = at(day, hour, rng.uniform(0, 40))
        actor = session(org.seed, Actor("assumed-role", p["role"], p["principal"]), "ess", t.replace(minute=0, second=0))
        yield call(rng, actor, t, "Ecs:DescribeInstances", ip=ua, ua=ua, region=agent.region)
        for k in range(rng.randint(1, 4)):
            inst = resource_id("i-bp1", org.seed, agent.name, day, k)
            api = "Ecs:RunInstances" if out else "Ecs:DeleteInstance"
            yield call(rng, actor, t + timedelta(seconds=10 + 30 * k), api, ip=ua, ua=ua, region=agent.region,
                       resource=inst, params={"InstanceId": inst})
            lb_api = "Slb:AddBackendServers" if out else "Slb:RemoveBackendServers"
            yield call(rng, actor, t + timedelta(seconds=25 + 30 * k), lb_api, ip=ua, ua=ua, region=agent.region,
                       resource=resource_id("lb-bp1", org.seed, p["app"]))


# -- people ---------------------------------------------------------------------------------------------
CONSOLE_READS = ("Ecs:DescribeInstances", "Ecs:DescribeInstanceAttribute", "Ecs:DescribeSecurityGroups",
                 "Rds:DescribeDBInstances", "Rds:DescribeSlowLogs", "Cms:DescribeMetricList", "Oss:ListObjects",
                 "Oss:GetObject", "Slb:DescribeLoadBalancers", "Vpc:DescribeVpcs", "Oss:GetBucketInfo",
                 "Sls:GetLogStoreLogs", "CS:DescribeClustersV1", "Ecs:DescribeDisks")
CONSOLE_WRITES = ("Ecs:RebootInstance", "Ecs:ModifyInstanceAttribute", "Ecs:StartInstance", "Ecs:StopInstance")
CLI_CALLS = ("Ecs:DescribeInstances", "Oss:ListObjects", "Oss:GetObject", "Sts:GetCallerIdentity",
             "Rds:DescribeDBInstances", "Sls:GetLogStoreLogs")


def human_statements(user: str, buckets: list[str], ops: bool = False) -> list[dict[str, Any]]:
    reads = ["ecs:Describe*", "rds:Describe*", "slb:Describe*", "vpc:Describe*", "cms:Describe*", "cs:Describe*",
             "log:GetLogStoreLogs", "log:ListLogStores", "sts:GetCallerIdentity"]
    writes = ["ecs:RebootInstance", "ecs:ModifyInstanceAttribute", "ecs:StartInstance", "ecs:StopInstance"]
    if ops:
        writes += ["slb:AddBackendServers", "slb:RemoveBackendServers", "slb:SetBackendServers"]
    return [allow(reads), allow(writes, "acs:ecs:*:*:instance/*" if not ops else "*"),
            allow(["oss:ListObjects", "oss:GetObject", "oss:GetBucketInfo"], bucket_arns(*buckets)),
            allow(["ram:GetUser", "ram:ListAccessKeys", "ram:CreateAccessKey", "ram:UpdateAccessKey",
                   "ram:DeleteAccessKey", "ram:GetUserMFAInfo"], f"acs:ram:*:*:user/{user}")]


def build_human(org: Org, rng: random.Random, name: str, user: str, team: str, buckets: list[str],
                kind: str = "human") -> OrgAgent:
    office = rng.choice(sorted(org.offices))
    has_key = rng.random() < 0.45
    key = access_key_id(org.seed, name, 0)
    ident = [f"ram-user:{user}"] + ([f"access-key:{key}"] if has_key else [])
    strict = kind == "human" and rng.random() < 0.2  # the team declares where its people sign in from
    declared = [org.offices[office]["cidr"], org.offices["vpn"]["cidr"]] if strict else None
    purpose = {"human": f"Engineer on the {team.removesuffix('-team')} team (console and CLI)",
               "oncall": "SRE on the weekly on-call rotation"}[kind]
    agent = OrgAgent(name, kind, purpose, team, "production", ident,
                     human_statements(user, buckets, ops=kind == "oncall"), source_ips=declared,
                     hours={"days": "daily", "from": "07:00", "to": "23:30"} if (kind == "human" and rng.random() < 0.25) else None)
    agent.p = {"principal": principal_id(org.seed, user), "user": user, "key": key if has_key else None,
               "buckets": buckets, "office": office, "mfa": rng.random() < 0.85,
               "home": None if strict else subnet_in(rng, rng.choice(HOME_POOLS)), "wfh": 0.0 if strict else rng.uniform(0, 0.3),
               "late": rng.uniform(0, 0.15), "weekend": rng.choice((0, 0, 0, 0.03, 0.08)), "busy": rng.uniform(60, 250), "browser": rng.choice(BROWSERS),
               "vacation": None, "rotated": None, "new_key": None, "nat": None}
    room = (org.scored_from - org.start).days - 14
    if room > 0 and rng.random() < 0.3:  # a week off somewhere in the history
        first = org.start + timedelta(days=7 + rng.randrange(room))
        agent.p["vacation"] = (first, first + timedelta(days=7))
    return agent


def human_ip(org: Org, agent: OrgAgent, day: date, rng: random.Random, home: bool) -> str:
    p = agent.p
    if home:
        return host_in(rng, p["home"]) if p["home"] else host_in(rng, org.offices["vpn"]["cidr"])
    office = org.offices[p["office"]]
    egress = office["egress"]
    if p["nat"] and day >= p["nat"][0]:
        egress = p["nat"][1]
    if egress is None:  # the VPN: no single egress, an address of its range each day
        return host_in(rng, office["cidr"])
    return str(egress)


def away(agent: OrgAgent, day: date) -> bool:
    vac = agent.p.get("vacation")
    return bool(vac and vac[0] <= day < vac[1])


def human_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Working days: a sign-in (with MFA, for most) in the morning, console browsing and a few
    changes through the day, CLI calls for those with a key; from home some days; some evenings
    a little longer. Nothing on holidays, weekends and vacations."""
    if away(agent, day):
        return
    if not org.working(day):  # now and then a weekend hour from home
        if day.weekday() >= 5 and rng.random() < agent.p["weekend"]:
            start = rng.uniform(10, 21)
            yield from work_session(org, agent, day, rng, start, start + rng.uniform(0.3, 1.5), True, rng.randint(5, 30))
        return
    home = rng.random() < agent.p["wfh"]
    start = rng.uniform(8.5, 10.5)
    end = rng.uniform(17.5, 19.5) if rng.random() > agent.p["late"] else rng.uniform(19.5, 21.0)
    yield from work_session(org, agent, day, rng, start, end, home, calls=org.scaled(agent.p["busy"] * rng.uniform(0.5, 1.5), 5))


def console_user(agent: OrgAgent, signed_in: datetime, mfa: bool | None = None) -> ConsoleUser:
    return ConsoleUser("ram-user", agent.p["user"], agent.p["principal"], None,
                       agent.p["mfa"] if mfa is None else mfa, stamp(signed_in))


def work_session(org: Org, agent: OrgAgent, day: date, rng: random.Random, start: float, end: float, home: bool,
                 calls: int) -> Iterator[Event]:
    """Sign in at ``start`` (local hours), then ``calls`` console and CLI calls until ``end``."""
    ip = human_ip(org, agent, day, rng, home)
    t0 = at(day, start)
    user = console_user(agent, t0)
    yield signin(rng, user, t0, ip=ip, ua=agent.p["browser"])
    key = current_key(agent, day, t0)
    for _ in range(calls):
        t = at(day, rng.uniform(start, end))
        if key and rng.random() < 0.3:
            cli = Actor("ram-user", agent.p["user"], agent.p["principal"], current_key(agent, day, t))
            yield _cli_call(org, agent, cli, t, rng, ip)
        else:
            yield _console_call(org, agent, user, t, rng, ip)


def current_key(agent: OrgAgent, day: date, t: datetime) -> str | None:
    """The CLI key in use at ``t``: the new one from its rotation on."""
    rotated = agent.p.get("rotated")
    if rotated and t >= rotated:
        return str(agent.p["new_key"])
    return agent.p.get("key")


def _console_call(org: Org, agent: OrgAgent, user: ConsoleUser, t: datetime, rng: random.Random, ip: str) -> Event:
    api = rng.choice(CONSOLE_WRITES) if rng.random() < 0.04 else rng.choice(CONSOLE_READS)
    res = _human_resource(org, agent, api, rng)
    return call(rng, user, t, api, ip=ip, ua=UA_CONSOLE, resource=res, params={"InstanceId": res} if res and res.startswith("i-") else None,
                error=INSTANCE_STATE if api in CONSOLE_WRITES and rng.random() < 0.05 else None)


def _cli_call(org: Org, agent: OrgAgent, cli: Actor, t: datetime, rng: random.Random, ip: str) -> Event:
    api = rng.choice(CLI_CALLS)
    return call(rng, cli, t, api, ip=ip, ua=UA_CLI, resource=_human_resource(org, agent, api, rng),
                error=_error(rng, 0.01, (NO_SUCH_KEY,)) if api == "Oss:GetObject" else None)


def _human_resource(org: Org, agent: OrgAgent, api: str, rng: random.Random) -> str | None:
    bucket = rng.choice(agent.p["buckets"])
    if api in ("Oss:ListObjects", "Oss:GetBucketInfo"):
        return bucket
    if api == "Sls:GetLogStoreLogs":
        return bucket.rsplit("-", 1)[0] + "-logs"
    if api == "Oss:GetObject":
        return f"{bucket}/reports/{rng.randrange(300):04d}.csv"
    if api in ("Ecs:DescribeInstanceAttribute", *CONSOLE_WRITES):
        return resource_id("i-bp1", org.seed, agent.p["buckets"][0], rng.randrange(12))
    return None


def oncall_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """A person's day, and on their on-call week a page some nights (and weekends): signed in from
    home, twenty to sixty calls in under an hour."""
    yield from human_day(org, agent, day, rng)
    if org.on_call(day) != agent.name or day in agent.p.get("quiet_nights", ()):
        return
    if rng.random() < 0.3:
        yield from page(org, agent, day, rng, rng.choice((rng.uniform(19.5, 23.5), rng.uniform(24.5, 30))))


def page(org: Org, agent: OrgAgent, day: date, rng: random.Random, start: float) -> Iterator[Event]:
    """One page: ``start`` in local hours of ``day`` (past 24 = the small hours after it)."""
    minutes = rng.uniform(15, 55)
    yield from work_session(org, agent, day, rng, start, start + minutes / 60, home=True, calls=rng.randint(20, 60))


def build_admin(org: Org, rng: random.Random, name: str, user: str) -> OrgAgent:
    agent = build_human(org, rng, name, user, "cloud-platform", ["cloud-platform-shared"])
    agent.kind, agent.purpose = "admin", "Cloud administrator (human): RAM users, groups and policies"
    agent.statements = [*agent.statements[:3], allow("ram:*"), allow(["actiontrail:Describe*", "actiontrail:LookupEvents"])]
    agent.p["mfa"] = True
    agent.source_ips = None
    return agent


_ADMIN_READS = ("Ims:ListUsers", "Ims:GetUser", "Ram:ListPoliciesForUser", "Ims:ListAccessKeys", "Ims:GetLoginProfile",
                "Ims:GetUserMFAInfo", "Ram:ListRoles", "Ram:GetRole", "Ram:ListPolicies", "Ram:GetPolicy", "Ims:ListGroups")


def admin_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """A person's day, plus RAM housekeeping: reviewing users, keys, MFA, roles and policies."""
    yield from human_day(org, agent, day, rng)
    if not org.working(day) or away(agent, day):
        return
    ip = human_ip(org, agent, day, rng, home=False)
    t0 = at(day, rng.uniform(10, 17))
    user = console_user(agent, t0)
    people = [a.p["user"] for a in org.agents if a.kind in ("human", "oncall", "vendor")] or [agent.p["user"]]
    for k in range(rng.randint(3, 25)):
        api = rng.choice(_ADMIN_READS)
        res = {"Ram:GetRole": "ReadOnlyAuditRole", "Ram:GetPolicy": "AliyunECSReadOnlyAccess"}.get(api)
        params = None
        if api in ("Ims:GetUser", "Ram:ListPoliciesForUser", "Ims:ListAccessKeys", "Ims:GetLoginProfile",
                   "Ims:GetUserMFAInfo"):
            res = rng.choice(people)
            params = {"UserName": res}
        yield call(rng, user, t0 + timedelta(seconds=20 * k), api, ip=ip, ua=UA_CONSOLE, resource=res, params=params)


# -- vendors ---------------------------------------------------------------------------------------------
def build_vendor(org: Org, rng: random.Random, name: str, company: str, app: str) -> OrgAgent:
    user = f"vendor-{company}"
    cidr = subnet_in(rng, rng.choice(("116.228.0.0/16", "58.246.0.0/16", "221.133.0.0/16")), 22)
    bucket = f"{app}-logs"
    statements = [allow(["ecs:Describe*", "slb:Describe*", "cms:Describe*"]),
                  allow("ecs:RebootInstance", "acs:ecs:*:*:instance/*"),
                  allow(["oss:GetObject", "oss:ListObjects"], bucket_arns(bucket))]
    history = (org.scored_from - org.start).days
    ended = history > 21 and rng.random() < 0.3  # a contract that ended in the history (quiet since)
    expires = local_midnight(org.start + timedelta(days=rng.randint(14, history - 7)) if ended
                             else org.end + timedelta(days=rng.randint(20, 200)))
    agent = OrgAgent(name, "vendor", f"{company.title()} support engineers for the {app} service (contract)",
                     f"{app}-team", "production", [f"ram-user:{user}"], statements, regions=[HOME_REGION],
                     source_ips=[cidr], hours={"days": "mon-fri", "from": "09:00", "to": "18:30"}, expires=expires)
    agent.p = {"principal": principal_id(org.seed, user), "user": user, "bucket": bucket, "app": app, "cidr": cidr,
               "egress": host_in(rng, subnet_in(rng, cidr, 24)), "mfa": rng.random() < 0.5,
               "busy": rng.uniform(0.3, 1.2), "browser": rng.choice(BROWSERS), "nat": None}
    return agent


def vendor_day(org: Org, agent: OrgAgent, day: date, rng: random.Random) -> Iterator[Event]:
    """Working days, within the contract: a support session or two, mostly looking."""
    if not org.working(day) or (agent.expires and at(day, 0) >= agent.expires):
        return
    for _ in range(_poisson(rng, agent.p["busy"])):
        yield from vendor_session(org, agent, day, rng, rng.uniform(9.5, 16.5))


def vendor_session(org: Org, agent: OrgAgent, day: date, rng: random.Random, start: float) -> Iterator[Event]:
    p = agent.p
    ip = p["nat"][1] if p["nat"] and day >= p["nat"][0] else p["egress"]
    t0 = at(day, start)
    user = console_user(agent, t0)
    yield signin(rng, user, t0, ip=ip, ua=p["browser"])
    for k in range(rng.randint(4, 18)):
        api = rng.choice(("Ecs:DescribeInstances", "Ecs:DescribeInstanceAttribute", "Slb:DescribeLoadBalancers",
                          "Cms:DescribeMetricList", "Oss:ListObjects", "Oss:GetObject"))
        res = {"Oss:ListObjects": p["bucket"], "Oss:GetObject": f"{p['bucket']}/{day:%Y/%m/%d}/app-{k}.log",
               "Ecs:DescribeInstanceAttribute": resource_id("i-bp1", org.seed, p["app"], k % 5)}.get(api)
        yield call(rng, user, t0 + timedelta(minutes=1 + 2 * k, seconds=rng.uniform(0, 60)), api, ip=ip,
                   ua=UA_CONSOLE, resource=res)
    if rng.random() < 0.1:
        inst = resource_id("i-bp1", org.seed, p["app"], 0)
        yield call(rng, user, t0 + timedelta(minutes=45), "Ecs:RebootInstance", ip=ip, ua=UA_CONSOLE, resource=inst,
                   params={"InstanceId": inst})


# -- Alibaba Cloud's own work (no agent) ----------------------------------------------------------------------
def system_day(org: Org, day: date, rng: random.Random) -> Iterator[Event]:
    """What the cloud does by itself: automatic snapshot policies at night, expired pay-as-you-go
    instances released, auto-renewals."""
    ecs = Service("system", "ecs.aliyuncs.com", ACCOUNT)
    for k in range(org.scaled(rng.uniform(5, 30), 2)):
        disk = resource_id("d-bp1", org.seed, "auto", k)
        yield call(rng, ecs, at(day, 2, rng.uniform(0, 50)), "Ecs:CreateSnapshot", ip="ecs.aliyuncs.com",
                   ua="ecs.aliyuncs.com", resource=disk, params={"DiskId": disk})
    if rng.random() < 0.2:
        inst = resource_id("i-bp1", org.seed, "expired", day)
        yield call(rng, ecs, at(day, rng.uniform(0, 24)), "Ecs:DeleteInstance", ip="ecs.aliyuncs.com",
                   ua="ecs.aliyuncs.com", resource=inst, params={"InstanceId": inst})


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth), for small means."""
    limit, k, product = pow(2.718281828459045, -mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


BEHAVIOURS: dict[str, Behaviour] = {
    "ci": ci_day, "terraform": terraform_day, "monitor": monitor_day, "backup": backup_day, "etl": etl_day,
    "service": service_day, "human": human_day, "oncall": oncall_day, "admin": admin_day, "vendor": vendor_day,
}


def day_events(org: Org, agent: OrgAgent, day: date) -> Iterator[Event]:
    """Everything ``agent`` does on local ``day`` in its everyday life."""
    if agent.active_from and day < agent.active_from:
        return iter(())
    return BEHAVIOURS[agent.kind](org, agent, day, org.rng(agent.name, day))
