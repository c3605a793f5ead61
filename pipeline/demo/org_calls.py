"""The building blocks of the organisation generator (``organisation.py``): the APIs an organisation
calls, who calls them (RAM users with AccessKeys, console users with or without MFA, assumed-role
sessions with one STS AccessKey for their lifetime, Alibaba Cloud's own service identities), the
networks they call from and the clients they use.

Every event is built by the demo's own builder (:func:`pipeline.demo.synthetic.event`), so the
two generators write the same shape (../shared/notes/actiontrail.md section 1); what the demo does
not need (a session's stable STS key and creation time, MFA on console sessions, global RAM/STS
endpoints, VPC ids, OSS bucket endpoints, ``system`` identities) is set here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from pipeline.demo import synthetic
from pipeline.demo.synthetic import ACCOUNT, BUSINESS_TZ, Actor, Api

Event = dict[str, Any]

# -- APIs: the demo's, and what an organisation of sixty agents calls besides -----------------------
_MORE = [
    ("Ecs:DescribeRegions", "Read", "2014-05-26", None), ("Ecs:DescribeZones", "Read", "2014-05-26", None),
    ("Ecs:DescribeInstanceStatus", "Read", "2014-05-26", None),
    ("Ecs:DescribeInstanceTypes", "Read", "2014-05-26", None),
    ("Ecs:DescribeKeyPairs", "Read", "2014-05-26", None),
    ("Ecs:DescribeNetworkInterfaces", "Read", "2014-05-26", None),
    ("Ecs:DescribeLaunchTemplates", "Read", "2014-05-26", None), ("Ecs:DescribeTags", "Read", "2014-05-26", None),
    ("Ecs:DescribeAutoSnapshotPolicyEx", "Read", "2014-05-26", None),
    ("Ecs:StartInstance", "Write", "2014-05-26", "ACS::ECS::Instance"),
    ("Ecs:StopInstance", "Write", "2014-05-26", "ACS::ECS::Instance"),
    ("Ecs:TagResources", "Write", "2014-05-26", "ACS::ECS::Instance"),
    ("Ecs:RevokeSecurityGroup", "Write", "2014-05-26", "ACS::ECS::SecurityGroup"),
    ("Ecs:DeleteImage", "Write", "2014-05-26", "ACS::ECS::Image"),
    ("Vpc:DescribeVpcs", "Read", "2016-04-28", None), ("Vpc:DescribeVSwitches", "Read", "2016-04-28", None),
    ("Vpc:DescribeEipAddresses", "Read", "2016-04-28", None),
    ("Vpc:DescribeNatGateways", "Read", "2016-04-28", None),
    ("Vpc:DescribeRouteTableList", "Read", "2016-04-28", None),
    ("Vpc:CreateVSwitch", "Write", "2016-04-28", "ACS::VPC::VSwitch"),
    ("Vpc:AssociateEipAddress", "Write", "2016-04-28", None),
    ("Slb:DescribeLoadBalancerAttribute", "Read", "2014-05-15", "ACS::SLB::LoadBalancer"),
    ("Slb:DescribeHealthStatus", "Read", "2014-05-15", "ACS::SLB::LoadBalancer"),
    ("Slb:SetBackendServers", "Write", "2014-05-15", "ACS::SLB::LoadBalancer"),
    ("Rds:DescribeDBInstanceAttribute", "Read", "2014-08-15", "ACS::RDS::DBInstance"),
    ("Rds:DescribeSlowLogs", "Read", "2014-08-15", "ACS::RDS::DBInstance"),
    ("Rds:DescribeDBInstancePerformance", "Read", "2014-08-15", "ACS::RDS::DBInstance"),
    ("Rds:DescribeAccounts", "Read", "2014-08-15", "ACS::RDS::DBInstance"),
    ("Cms:DescribeMetricLast", "Read", "2019-01-01", None), ("Cms:DescribeMetricMetaList", "Read", "2019-01-01", None),
    ("Cms:DescribeAlertHistoryList", "Read", "2019-01-01", None),
    ("Cms:DescribeSystemEventAttribute", "Read", "2019-01-01", None),
    ("Oss:HeadObject", "Read", "2019-05-17", "ACS::OSS::Object"),
    ("Oss:DeleteObject", "Write", "2019-05-17", "ACS::OSS::Object"),
    ("Oss:GetService", "Read", "2019-05-17", None),
    ("Oss:GetBucketInfo", "Read", "2019-05-17", "ACS::OSS::Bucket"),
    ("Oss:GetBucketAcl", "Read", "2019-05-17", "ACS::OSS::Bucket"),
    ("Oss:GetBucketLifecycle", "Read", "2019-05-17", "ACS::OSS::Bucket"),
    ("Ims:ListAccessKeys", "Read", "2015-05-01", "ACS::RAM::User"),
    ("Ims:UpdateAccessKey", "Write", "2015-05-01", "ACS::RAM::User"),
    ("Ims:DeleteAccessKey", "Write", "2015-05-01", "ACS::RAM::User"),
    ("Ims:UnbindMFADevice", "Write", "2015-05-01", "ACS::RAM::User"),
    ("Ims:GetUserMFAInfo", "Read", "2015-05-01", "ACS::RAM::User"),
    ("Ims:GetLoginProfile", "Read", "2015-05-01", "ACS::RAM::User"),
    ("Ims:ListGroups", "Read", "2015-05-01", None), ("Ims:GetAccountAlias", "Read", "2015-05-01", None),
    ("Ram:ListRoles", "Read", "2015-05-01", None), ("Ram:GetRole", "Read", "2015-05-01", "ACS::RAM::Role"),
    ("Ram:ListPolicies", "Read", "2015-05-01", None), ("Ram:GetPolicy", "Read", "2015-05-01", "ACS::RAM::Policy"),
    ("Ram:ListPoliciesForUser", "Read", "2015-05-01", "ACS::RAM::User"),
    ("Kms:Decrypt", "Read", "2016-01-20", "ACS::KMS::Key"), ("Kms:GenerateDataKey", "Read", "2016-01-20", "ACS::KMS::Key"),
    ("Kms:ListKeys", "Read", "2016-01-20", None), ("Kms:DescribeKey", "Read", "2016-01-20", "ACS::KMS::Key"),
    ("Kms:ListAliases", "Read", "2016-01-20", None),
    ("Sts:AssumeRole", "Write", "2015-04-01", None), ("Sts:GetCallerIdentity", "Read", "2015-04-01", None),
    ("Actiontrail:LookupEvents", "Read", "2020-07-06", None),
    ("Actiontrail:GetTrailStatus", "Read", "2020-07-06", "ACS::ActionTrail::Trail"),
    ("Sls:ListProject", "Read", "2020-12-30", None), ("Sls:ListLogStores", "Read", "2020-12-30", "ACS::SLS::Project"),
    ("Sls:PostLogStoreLogs", "Write", "2020-12-30", "ACS::SLS::Project"),
    ("Sls:GetLogStoreLogs", "Read", "2020-12-30", "ACS::SLS::Project"),
    ("CS:DescribeClustersV1", "Read", "2015-12-15", None), ("CS:DescribeClusterDetail", "Read", "2015-12-15", None),
    ("FC:ListServices", "Read", "2021-04-06", None), ("FC:ListFunctions", "Read", "2021-04-06", None),
    ("Ess:DescribeScalingGroups", "Read", "2014-08-28", None),
    ("Ess:DescribeScalingActivities", "Read", "2014-08-28", None),
    ("R-kvstore:DescribeInstances", "Read", "2015-01-01", None),
    ("Dds:DescribeDBInstances", "Read", "2015-12-01", None),
    ("Polardb:DescribeDBClusters", "Read", "2017-08-01", None),
    ("Alidns:DescribeDomains", "Read", "2015-01-09", None), ("Alidns:DescribeDomainRecords", "Read", "2015-01-09", None),
    ("Cdn:DescribeUserDomains", "Read", "2018-05-10", None), ("Nas:DescribeFileSystems", "Read", "2017-06-26", None),
    ("ResourceManager:ListResourceGroups", "Read", "2020-03-31", None),
    ("BssOpenApi:QueryAccountBalance", "Read", "2017-12-14", None),
]
API: dict[str, Api] = {f"{a.service}:{a.name}": a for a in synthetic.APIS.values()}
API.update({spec: synthetic._api(spec, rw, version, rtype) for spec, rw, version, rtype in _MORE})
_GLOBAL_HOSTS = {"Ram": "ram.aliyuncs.com", "Sts": "sts.aliyuncs.com", "ResourceManager": "resourcemanager.aliyuncs.com",
                 "BssOpenApi": "business.aliyuncs.com"}

# -- clients, by family ------------------------------------------------------------------------------
UA_CLI = synthetic.UA_CLI
UA_TERRAFORM = "Terraform/1.9.8 (+https://www.terraform.io) terraform-provider-alicloud/1.235.0"
UA_PY_SDK = "AlibabaCloud (Linux; x86_64) Python/3.11.9 Core/2.14.0 python-requests/2.31.0"
UA_GO_SDK = "AlibabaCloud (linux; amd64) Go/go1.22.5 Core/1.0.0 TeaDSL/1"
UA_JAVA = synthetic.UA_JAVA
UA_OSS_PY = "aliyun-sdk-python/2.18.4(Linux/5.10.134-16.al8.x86_64/x86_64;3.11.9)"
UA_OSSUTIL = "aliyun-sdk-go/v2.2.9 (Linux/5.15.0-105-generic/amd64;go1.20.4)/ossutil/v1.7.19"
UA_REQUESTS = "python-requests/2.32.3"
UA_CONSOLE = "AliyunConsole"
BROWSERS = (synthetic.UA_BROWSER,
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
            "Safari/537.36 Edg/131.0.0.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 "
            "Safari/605.1.15",
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0")
SDK_CLIENTS = (UA_PY_SDK, UA_GO_SDK, UA_JAVA)

# -- errors an organisation's benign traffic really sees (never a permission denial) -----------------
THROTTLED = ("Throttling.User", "Request was denied due to user flow control.")
UNAVAILABLE = ("ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
BAD_PARAMETER = ("InvalidParameter", "The specified parameter is not valid.")
INSTANCE_STATE = ("IncorrectInstanceStatus", "The current status of the resource does not support this operation.")
NO_SUCH_KEY = ("NoSuchKey", "The specified key does not exist.")
TIMEOUT = ("RequestTimeout", "Your socket connection to the server was not read from or written to within the timeout period.")
BENIGN_ERRORS = (THROTTLED, UNAVAILABLE, BAD_PARAMETER)


@lru_cache(maxsize=1 << 16)
def stable_token(alphabet: str, n: int, *parts: object) -> str:
    """``n`` characters of ``alphabet`` that depend only on ``parts``: a key or id that two
    generators (a job and the incident that reuses its session) compute alike, without sharing a
    random stream."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    while len(digest) < n:
        digest += hashlib.sha256(digest).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:n])


ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
DIGITS = "0123456789"


def access_key_id(*parts: object) -> str:
    return "LTAI5t" + stable_token(ALNUM, 18, "ak", *parts)


def principal_id(*parts: object) -> str:
    return "2" + stable_token(DIGITS, 17, "pid", *parts)


def resource_id(prefix: str, *parts: object) -> str:
    return prefix + stable_token(LOWER, 17, prefix, *parts)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- who calls ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConsoleUser(Actor):
    """A RAM user in the web console: no AccessKey; the console session records whether MFA was
    used at sign-in (``sessionContext.attributes.mfaAuthenticated``)."""

    mfa: bool = True
    signed_in: str = "2026-01-01T00:00:00Z"

    def identity(self, rng: random.Random, session: str | None = None) -> dict[str, Any]:
        return {"type": "ram-user", "accountId": ACCOUNT, "principalId": self.principal, "userName": self.name,
                "sessionContext": {"attributes": {"mfaAuthenticated": "true" if self.mfa else "false",
                                                  "creationDate": self.signed_in}}}


@dataclass(frozen=True)
class Session(Actor):
    """An assumed-role session: ``Role:session`` with one STS AccessKey for its whole lifetime
    (``key`` = :func:`session_key` of the role and session, so whoever holds it is the same)."""

    session: str = "session"
    key: str = ""
    created: str = "2026-01-01T00:00:00Z"

    def identity(self, rng: random.Random, session: str | None = None) -> dict[str, Any]:
        return {"type": "assumed-role", "accountId": ACCOUNT, "principalId": f"{self.principal}:{self.session}",
                "userName": f"{self.name}:{self.session}", "accessKeyId": self.key,
                "sessionContext": {"attributes": {"mfaAuthenticated": "false", "creationDate": self.created}}}


@dataclass(frozen=True)
class Service(Actor):
    """Alibaba Cloud acting on its own (``userIdentity.type`` ``system``): auto snapshots, scaling,
    releasing expired instances. Its ``name`` is the service's host."""

    def identity(self, rng: random.Random, session: str | None = None) -> dict[str, Any]:
        return {"type": "system", "accountId": ACCOUNT, "principalId": ACCOUNT, "userName": self.name}


def session_key(seed: int, role: str, session: str) -> str:
    return "STS." + stable_token(ALNUM, 28, seed, role, session)


@lru_cache(maxsize=1 << 14)
def session(seed: int, role: Actor, name: str, created: datetime) -> Session:
    """The session ``name`` of ``role`` created at ``created``: the same key wherever it is used."""
    return Session(role.kind, role.name, role.principal, None, name, session_key(seed, role.name, name),
                   stamp(created))


# -- one call ---------------------------------------------------------------------------------------------
def call(rng: random.Random, actor: Actor, when: datetime, api: str, *, ip: str, ua: str,
         region: str = "cn-hangzhou", resource: str | None = None, error: tuple[str, str] | None = None,
         params: dict[str, Any] | None = None, vpc: str | None = None) -> Event:
    """One event of ``actor`` calling ``api`` (``Service:Name``), built by the demo's builder."""
    spec = API[api]
    ev = synthetic.event(rng, actor, when, spec, region=region, ip=ip, ua=ua, resource=resource, error=error,
                         session=actor.session if isinstance(actor, Session) else None, params=params)
    host = _GLOBAL_HOSTS.get(spec.service)
    if host:  # RAM, STS, billing: global endpoints, global events
        ev["eventSource"] = ev["requestParameters"]["AcsHost"] = ev["requestParameters"]["HostId"] = host
        ev["isGlobal"] = True
    elif spec.service == "Oss" and resource:
        endpoint = f"oss-{region}-internal" if vpc else f"oss-{region}"
        ev["eventSource"] = f"{resource.split('/', 1)[0]}.{endpoint}.aliyuncs.com"
    if vpc:
        ev["vpcId"] = vpc
    if isinstance(actor, Service):
        ev["eventType"] = "AliyunServiceEvent"
        ev["userAgent"] = actor.name
    return ev


def signin(rng: random.Random, user: ConsoleUser, when: datetime, *, ip: str, ua: str) -> Event:
    """A RAM user's console sign-in; ``additionalEventData.mfaChecked`` and the session context say
    whether MFA was used."""
    ev = synthetic.event(rng, user, when, "ConsoleSignin", ip=ip, ua=ua)
    ev["additionalEventData"]["mfaChecked"] = "true" if user.mfa else "false"
    return ev


# -- networks ----------------------------------------------------------------------------------------------
SERVICE_NETWORKS = ("11.0.0.0/8", "100.64.0.0/10")  # Alibaba Cloud's own (E4's 11.168.x.x, 100.104.x.x)
# Public networks no agent of the organisation ever uses: where stolen credentials turn up.
HOSTILE_NETWORKS = ("185.220.101.0/24", "185.220.100.0/24", "45.141.215.0/24", "5.188.206.0/24",
                    "167.71.128.0/20", "134.209.32.0/20", "95.216.64.0/20", "45.77.160.0/20",
                    "103.152.220.0/22", "194.26.192.0/22", "91.92.240.0/22", "2.56.8.0/22")
# Chinese broadband pools (home workers) and hosted-CI pools (addresses change every run).
HOME_POOLS = ("115.192.0.0/12", "122.224.0.0/12", "36.16.0.0/12", "112.0.0.0/12", "183.128.0.0/12",
              "223.64.0.0/12", "117.136.0.0/13", "60.176.0.0/12")
HOSTED_CI_POOLS = ("20.42.0.0/15", "40.84.0.0/14", "52.234.0.0/15", "4.148.0.0/14", "172.176.0.0/14")


def host_in(rng: random.Random, cidr: str) -> str:
    """A random host address of ``cidr`` (never its network or broadcast address)."""
    base, size = _network(cidr)
    return str(ipaddress.IPv4Address(base + rng.randint(1, size - 2)))


@lru_cache(maxsize=1024)
def _network(cidr: str) -> tuple[int, int]:
    net = ipaddress.ip_network(cidr)
    return int(net.network_address), net.num_addresses


def subnet_in(rng: random.Random, cidr: str, prefix: int = 24) -> str:
    """A random ``/prefix`` inside ``cidr``."""
    net = ipaddress.ip_network(cidr)
    base = int(net.network_address) + rng.randrange(2 ** (prefix - net.prefixlen)) * 2 ** (32 - prefix)
    return str(ipaddress.ip_network((base, prefix)))


def service_ip(rng: random.Random) -> str:
    """Where Alibaba Cloud's services call from: "Internal", or an address of its own networks."""
    roll = rng.random()
    if roll < 0.4:
        return "Internal"
    return host_in(rng, SERVICE_NETWORKS[0] if roll < 0.7 else SERVICE_NETWORKS[1])


# -- the business calendar -----------------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def local_midnight(day: date) -> datetime:
    """``day`` 00:00 in the business time zone, as UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=BUSINESS_TZ).astimezone(UTC)


def at(day: date, hour: float, minute: float = 0, second: float = 0) -> datetime:
    """``day`` at a wall-clock time in the business time zone, as UTC (hours may pass 24)."""
    return local_midnight(day) + timedelta(hours=hour, minutes=minute, seconds=second)


def local_day(when: datetime) -> date:
    return when.astimezone(BUSINESS_TZ).date()
