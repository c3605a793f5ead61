"""Realistic ActionTrail traffic for the demo and the benchmarks: no cloud account needed.

Three accounts, as an organisation separates its environments (:data:`ACCOUNTS`: staging, prod,
security). Seven production agents with the habits of their kind (a CI deployer, a 24/7 polling
monitor, a nightly backup role, a time-bound vendor, a daytime ETL role, a human admin who
sometimes stays late, a weekly Terraform apply with 1% benign errors) and a staging CI user act
over a window of days, in the shape real trails produce (see ../shared/notes/actiontrail.md
section 1.5); a production deploy role only CI may assume is there too. On top of that, a few
incidents are planted near the end of the window; :data:`INCIDENTS` says what and when, so the
demo can tell which of them the detectors caught. The staging traffic and the multi-account
incidents draw on a random stream of their own, so the production traffic of a seed is what it
was before there were three accounts.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

ACCOUNT = "1384926508761234"  # prod: every production agent's home
STAGING = "1779304125568802"
SECURITY = "1602251983347719"
ACCOUNTS = {"staging": STAGING, "prod": ACCOUNT, "security": SECURITY}  # the config's accounts:
BUSINESS_TZ = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Api:
    service: str  # serviceName as ActionTrail writes it (the product)
    name: str
    rw: str
    version: str
    resource_type: str | None = None

    @property
    def host(self) -> str:
        return self.service.lower()


def _api(spec: str, rw: str, version: str, rtype: str | None = None) -> Api:
    service, name = spec.split(":")
    return Api(service, name, rw, version, rtype)


APIS = {a.name: a for a in [
    _api("Ecs:DescribeInstances", "Read", "2014-05-26"),
    _api("Ecs:DescribeInstanceAttribute", "Read", "2014-05-26", "ACS::ECS::Instance"),
    _api("Ecs:DescribeImages", "Read", "2014-05-26"),
    _api("Ecs:CreateImage", "Write", "2014-05-26", "ACS::ECS::Instance"),
    _api("Ecs:RunInstances", "Write", "2014-05-26", "ACS::ECS::Instance"),
    _api("Ecs:DeleteInstance", "Write", "2014-05-26", "ACS::ECS::Instance"),
    _api("Ecs:RebootInstance", "Write", "2014-05-26", "ACS::ECS::Instance"),
    _api("Ecs:DescribeSecurityGroups", "Read", "2014-05-26"),
    _api("Ecs:CreateSecurityGroup", "Write", "2014-05-26", "ACS::ECS::SecurityGroup"),
    _api("Ecs:AuthorizeSecurityGroup", "Write", "2014-05-26", "ACS::ECS::SecurityGroup"),
    _api("Ecs:ModifyInstanceAttribute", "Write", "2014-05-26", "ACS::ECS::Instance"),
    _api("Ecs:DescribeDisks", "Read", "2014-05-26"),
    _api("Ecs:DescribeSnapshots", "Read", "2014-05-26"),
    _api("Ecs:CreateSnapshot", "Write", "2014-05-26", "ACS::ECS::Disk"),
    _api("Ecs:DeleteSnapshot", "Write", "2014-05-26", "ACS::ECS::Snapshot"),
    _api("Rds:DescribeDBInstances", "Read", "2014-08-15"),
    _api("Rds:DescribeDatabases", "Read", "2014-08-15", "ACS::RDS::DBInstance"),
    _api("Rds:DescribeBackups", "Read", "2014-08-15", "ACS::RDS::DBInstance"),
    _api("Rds:CreateBackup", "Write", "2014-08-15", "ACS::RDS::DBInstance"),
    _api("Slb:DescribeLoadBalancers", "Read", "2014-05-15"),
    _api("Slb:AddBackendServers", "Write", "2014-05-15", "ACS::SLB::LoadBalancer"),
    _api("Slb:RemoveBackendServers", "Write", "2014-05-15", "ACS::SLB::LoadBalancer"),
    _api("Cms:DescribeMetricList", "Read", "2019-01-01"),
    _api("Oss:GetObject", "Read", "2019-05-17", "ACS::OSS::Object"),
    _api("Oss:PutObject", "Write", "2019-05-17", "ACS::OSS::Object"),
    _api("Oss:ListObjects", "Read", "2019-05-17", "ACS::OSS::Bucket"),
    _api("Ims:ListUsers", "Read", "2015-05-01"),
    _api("Ims:GetUser", "Read", "2015-05-01", "ACS::RAM::User"),
    _api("Ims:CreateUser", "Write", "2015-05-01", "ACS::RAM::User"),
    _api("Ims:CreateAccessKey", "Write", "2015-05-01", "ACS::RAM::User"),
    _api("Ims:AttachPolicyToUser", "Write", "2015-05-01", "ACS::RAM::User"),
    _api("Kms:ListSecrets", "Read", "2016-01-20"),
    _api("Kms:GetSecretValue", "Read", "2016-01-20", "ACS::KMS::Secret"),
    _api("Actiontrail:DescribeTrails", "Read", "2020-07-06"),
    _api("Actiontrail:StopLogging", "Write", "2020-07-06", "ACS::ActionTrail::Trail"),
    _api("Actiontrail:UpdateTrail", "Write", "2020-07-06", "ACS::ActionTrail::Trail"),
    _api("Sts:AssumeRole", "Write", "2015-04-01", "ACS::RAM::Role"),
    _api("AasSub:ConsoleSignin", "Write", "", None),
    _api("AasCustomer:ConsoleSignin", "Write", "", None),
]}

UA_CLI = "aliyun-cli/3.0.204 (linux; amd64) Go/1.21.6"
UA_PY = "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/2.14.0 python-requests/2.31.0"
UA_JAVA = "aliyun-sdk-java/3.17.4(Linux/5.10.134-16.al8.x86_64/amd64;1.8.0_392)"
UA_BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/130.0.0.0 Safari/537.36")


@dataclass(frozen=True)
class Actor:
    """Who acts: an identity as ActionTrail records it."""

    kind: str  # ram-user | assumed-role | root-account
    name: str  # user name or role name
    principal: str  # user id or role id
    access_key: str | None = None

    def identity(self, rng: random.Random, session: str | None = None) -> dict[str, Any]:
        ui: dict[str, Any] = {"type": self.kind, "accountId": ACCOUNT}
        if self.kind == "assumed-role":
            session = session or "session"
            ui.update(principalId=f"{self.principal}:{session}", userName=f"{self.name}:{session}",
                      accessKeyId="STS." + _token(rng, 24),
                      sessionContext={"attributes": {"mfaAuthenticated": "false",
                                                     "creationDate": "2021-01-01T00:00:00Z"}})
        elif self.kind == "root-account":
            ui.update(principalId=ACCOUNT, userName="root")
        else:
            ui.update(principalId=self.principal, userName=self.name)
            if self.access_key:
                ui["accessKeyId"] = self.access_key
        return ui


def _token(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(n))


def event(rng: random.Random, actor: Actor, when: datetime, api_name: str | Api, *, region: str = "cn-hangzhou",
          ip: str, ua: str, resource: str | None = None, error: tuple[str, str] | None = None,
          session: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ActionTrail event as a trail delivers it (about 1 KB of JSON). ``api_name`` names one of
    :data:`APIS`, or is an :class:`Api` of the caller's own (the organisation generator's)."""
    api = api_name if isinstance(api_name, Api) else APIS[api_name]
    request_id = str(uuid.UUID(int=rng.getrandbits(128))).upper()
    identity = actor.identity(rng, session)
    if api.service in ("AasSub", "AasCustomer"):
        return _signin(actor, identity, when, ip, ua, request_id)
    host = f"{api.host}.{region}.aliyuncs.com" if api.service not in ("Ims",) else "ims.aliyuncs.com"
    req: dict[str, Any] = {
        "RegionId": region, "AcsHost": host, "AcsProduct": api.service, "RequestId": request_id,
        "HostId": host, "Format": "JSON", "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if actor.kind == "assumed-role":
        req["stsTokenPlayerUid"] = ACCOUNT
        req["stsTokenPrincipalName"] = f"{actor.name}/{session}"
    req.update(params or {})
    ev: dict[str, Any] = {
        "eventId": request_id, "eventVersion": "1", "eventType": "ApiCall", "eventRW": api.rw,
        "eventName": api.name, "eventSource": host, "serviceName": api.service,
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "acsRegion": region,
        "sourceIpAddress": ip, "userAgent": ua, "requestId": request_id, "apiVersion": api.version,
        "userIdentity": identity, "requestParameters": req, "additionalEventData": {"Scheme": "https"},
        "recipientAccountId": ACCOUNT, "isGlobal": api.service == "Ims",
        "errorCode": "", "errorMessage": "",
        "responseElements": {"RequestId": request_id},
    }
    if resource and api.resource_type:
        ev["referencedResources"] = {api.resource_type: [resource]}
    if error:
        ev["errorCode"], ev["errorMessage"] = error
        ev["responseElements"] = {"Code": error[0], "Message": error[1], "RequestId": request_id}
    return ev


def _signin(actor: Actor, identity: dict[str, Any], when: datetime, ip: str, ua: str,
            request_id: str) -> dict[str, Any]:
    root = actor.kind == "root-account"
    return {
        "eventId": request_id, "eventVersion": 1, "eventType": "ConsoleSignin",
        "eventName": "ConsoleSignin", "eventSource": "signin.aliyun.com",
        "serviceName": "AasCustomer" if root else "AasSub", "acsRegion": "cn-hangzhou",
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "sourceIpAddress": ip, "userAgent": ua,
        "requestId": request_id, "userIdentity": identity, "isGlobal": True,
        "additionalEventData": ({"loginAccount": "root", "isMFAChecked": "false"} if root
                                else {"mfaChecked": "true", "callbackUrl": "https://home.console.aliyun.com/"}),
    }


DENIED = ("NoPermission", "You are not authorized to do this action. You should be authorized by RAM.")

CI = Actor("ram-user", "ci-deploy", "276519384021775532", "LTAI5tCiDeploy7Qx2mK")
MONITOR = Actor("ram-user", "cms-reader", "209844175526013847", "LTAI5tMonRead3Kp9Zw")
BACKUP = Actor("assumed-role", "BackupRole", "390117264583920114")
VENDOR = Actor("ram-user", "vendor-acme", "231907745513380216")
ETL = Actor("assumed-role", "EtlRole", "357720491163308825")
ALICE = Actor("ram-user", "alice", "281155062730448391")
TERRAFORM = Actor("assumed-role", "TerraformRole", "366018275510092284")
OPS_DEBUG = Actor("ram-user", "ops-debug", "244470092217754420", "LTAI5tOpsDbg0Xc4Rt")
ROOT = Actor("root-account", "root", ACCOUNT)
STAGING_CI = Actor("ram-user", "ci-staging", "271843390016254471", "LTAI5tCiStaging4Hw8nB")
PROD_DEPLOY = Actor("assumed-role", "ProdDeployRole", "301662915874420937")


def in_account(ev: dict[str, Any], home: str, acted_in: str | None = None) -> dict[str, Any]:
    """The event of an identity of ``home`` (``userIdentity.accountId``), recorded in ``acted_in``
    (``recipientAccountId``; default: home)."""
    ev["userIdentity"]["accountId"] = home
    ev["recipientAccountId"] = acted_in or home
    if "stsTokenPlayerUid" in ev.get("requestParameters", {}):
        ev["requestParameters"]["stsTokenPlayerUid"] = home
    return ev


def _local(day: datetime, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """``day`` (a UTC midnight) at a wall-clock time in the business time zone, as UTC."""
    local = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=BUSINESS_TZ)
    return local.astimezone(UTC)


def _instances(rng: random.Random, n: int = 1) -> list[str]:
    return ["i-bp1" + _token(rng, 17).lower() for _ in range(n)]


# -- the agents' habits, one day at a time --------------------------------------------------------
def monitor_day(rng: random.Random, day: datetime) -> Iterator[dict[str, Any]]:
    """Every 5 minutes, day and night: describe instances, databases, load balancers, metrics."""
    for slot in range(288):
        t = day + timedelta(minutes=5 * slot, seconds=rng.randint(0, 20))
        region = "cn-shanghai" if slot % 6 == 5 else "cn-hangzhou"
        for k, api in enumerate(("DescribeInstances", "DescribeDBInstances", "DescribeLoadBalancers")):
            flaky = rng.random() < 0.0015  # a few benign failures a day: the service hiccups
            yield event(rng, MONITOR, t + timedelta(seconds=k), api, region=region, ip="198.51.100.10",
                        ua=UA_PY, params={"PageSize": "100", "PageNumber": "1"},
                        error=("ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
                        if flaky else None)
        if slot % 3 == 0:
            yield event(rng, MONITOR, t + timedelta(seconds=4), "DescribeMetricList", region=region,
                        ip="198.51.100.10", ua=UA_PY,
                        params={"Namespace": "acs_ecs_dashboard", "MetricName": "CPUUtilization"})


def ci_day(rng: random.Random, day: datetime) -> Iterator[dict[str, Any]]:
    """Weekdays: a handful of deploys during working hours, each a burst of a dozen calls."""
    if _local(day, 12).astimezone(BUSINESS_TZ).weekday() >= 5:
        return
    for _ in range(rng.randint(2, 6)):
        t = _local(day, rng.randint(9, 18), rng.randint(0, 59))
        ip = f"203.0.113.{rng.randint(10, 40)}"
        old, new = _instances(rng, 2)
        artifact = f"release-artifacts/payment-service/{t:%Y%m%d%H%M}.tar.gz"
        steps: list[tuple[str, str | None, tuple[str, str] | None]] = [
                 ("GetObject", artifact, None), ("DescribeImages", None, None),
                 ("CreateImage", old, None), ("RunInstances", new, None),
                 ("DescribeInstances", None, None), ("DescribeInstances", None, None),
                 ("DescribeSecurityGroups", None, None), ("AddBackendServers", "lb-bp1payments01", None),
                 ("RemoveBackendServers", "lb-bp1payments01", None), ("DeleteInstance", old, None)]
        if rng.random() < 0.05:  # a flaky deploy: throttled once
            steps.insert(4, ("DescribeInstances", None, ("Throttling.User", "Request was denied due to user flow control.")))
        for i, (api, res, err) in enumerate(steps):
            yield event(rng, CI, t + timedelta(seconds=20 * i), api, ip=ip, ua=UA_CLI, resource=res, error=err,
                        params={"InstanceId": res} if res and res.startswith("i-") else None)


def backup_day(rng: random.Random, day: datetime) -> Iterator[dict[str, Any]]:
    """Every night at 01:00-02:00 local: snapshot six disks, prune old snapshots, back up RDS."""
    t = _local(day, 1, rng.randint(0, 10))
    session = f"backup-{t:%Y%m%d}"
    ip = f"100.104.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
    yield event(rng, BACKUP, t, "DescribeDisks", ip=ip, ua=UA_PY, session=session)
    for i in range(6):
        disk = "d-bp1" + _token(rng, 17).lower()
        yield event(rng, BACKUP, t + timedelta(minutes=1 + i), "CreateSnapshot", ip=ip, ua=UA_PY,
                    session=session, resource=disk, params={"DiskId": disk})
        yield event(rng, BACKUP, t + timedelta(minutes=8 + i), "DeleteSnapshot", ip=ip, ua=UA_PY,
                    session=session, resource="s-bp1" + _token(rng, 17).lower())
    yield event(rng, BACKUP, t + timedelta(minutes=15), "CreateBackup", ip=ip, ua=UA_PY, session=session,
                resource="rm-bp1orders01")
    for i in range(3):
        yield event(rng, BACKUP, t + timedelta(minutes=30 + i), "PutObject", ip=ip, ua=UA_PY, session=session,
                    resource=f"db-backups/orders/{t:%Y%m%d}/part-{i}.xb")


def etl_hour(rng: random.Random, hour: datetime) -> Iterator[dict[str, Any]]:
    """Weekdays, every hour from 08:00 to 19:00 local at about :05: list the lake, read the day's
    raw partitions, write the curated one; now and then a read times out."""
    local = hour.astimezone(BUSINESS_TZ)
    if local.weekday() >= 5 or not 8 <= local.hour <= 19:
        return
    t = hour + timedelta(minutes=5, seconds=rng.randint(0, 50))
    session = f"etl-{t:%Y%m%d%H}"
    ip = "100.104.33.17"
    yield event(rng, ETL, t, "DescribeDBInstances", ip=ip, ua=UA_JAVA, session=session)
    yield event(rng, ETL, t + timedelta(seconds=3), "ListObjects", ip=ip, ua=UA_JAVA, session=session,
                resource="data-lake")
    for i in range(3):
        slow = rng.random() < 0.01
        yield event(rng, ETL, t + timedelta(seconds=10 + i), "GetObject", ip=ip, ua=UA_JAVA, session=session,
                    resource=f"data-lake/orders/raw/{t:%Y%m%d}/{i:03d}.parquet",
                    error=("RequestTimeout", "Your socket connection to the server was not read from.") if slow else None)
    for i in range(2):
        yield event(rng, ETL, t + timedelta(seconds=60 + i), "PutObject", ip=ip, ua=UA_JAVA, session=session,
                    resource=f"data-lake/orders/curated/{t:%Y%m%d%H}/{i:03d}.parquet")


def vendor_day(rng: random.Random, day: datetime, expires: datetime | None) -> Iterator[dict[str, Any]]:
    """Weekdays while the contract runs: a support session or two, mostly looking."""
    if _local(day, 12).astimezone(BUSINESS_TZ).weekday() >= 5 or (expires and day >= expires):
        return
    for _ in range(rng.choice((0, 1, 1, 2))):
        t = _local(day, rng.randint(10, 16), rng.randint(0, 59))
        ip = f"192.0.2.{rng.randint(20, 60)}"
        yield event(rng, VENDOR, t, "ConsoleSignin", ip=ip, ua=UA_BROWSER)
        for i, inst in enumerate(_instances(rng, 3)):
            yield event(rng, VENDOR, t + timedelta(minutes=1 + i), "DescribeInstanceAttribute", ip=ip,
                        ua="AliyunConsole", resource=inst, params={"InstanceId": inst})
        yield event(rng, VENDOR, t + timedelta(minutes=6), "GetObject", ip=ip, ua="AliyunConsole",
                    resource=f"payment-logs/{t:%Y/%m/%d}/app.log")
        if rng.random() < 0.2:
            inst = _instances(rng)[0]
            yield event(rng, VENDOR, t + timedelta(minutes=9), "RebootInstance", ip=ip, ua="AliyunConsole",
                        resource=inst, params={"InstanceId": inst})


def admin_day(rng: random.Random, day: datetime) -> Iterator[dict[str, Any]]:
    """Weekdays: signs in in the morning, then a couple of dozen console actions."""
    if _local(day, 12).astimezone(BUSINESS_TZ).weekday() >= 5:
        return
    ip = "198.18.7.21"
    t = _local(day, 9, rng.randint(0, 40))
    yield event(rng, ALICE, t, "ConsoleSignin", ip=ip, ua=UA_BROWSER)
    choices = ["DescribeInstances", "DescribeSecurityGroups", "ListUsers", "GetUser", "DescribeDBInstances",
               "ModifyInstanceAttribute", "AuthorizeSecurityGroup", "DescribeTrails", "ListObjects"]
    late = rng.random() < 0.3  # some days a little longer, never past 20:45
    for i in range(rng.randint(10, 30)):
        hour = rng.randint(19, 20) if late and i < 3 else rng.randint(9, 18)
        when = _local(day, hour, rng.randint(0, 45 if hour == 20 else 59), rng.randint(0, 59))
        api = rng.choice(choices)
        res = {"ModifyInstanceAttribute": _instances(rng)[0], "AuthorizeSecurityGroup": "sg-bp1web01",
               "GetUser": "ci-deploy", "ListObjects": "release-artifacts"}.get(api)
        yield event(rng, ALICE, when, api, ip=ip, ua="AliyunConsole", resource=res)


def staging_ci_day(rng: random.Random, day: datetime) -> Iterator[dict[str, Any]]:
    """Weekdays in the staging account: release candidates built and deployed a few times a day,
    each a short burst (fetch the artifact, start an instance, check it, stop the old one)."""
    if _local(day, 12).astimezone(BUSINESS_TZ).weekday() >= 5:
        return
    for _ in range(rng.randint(3, 7)):
        t = _local(day, rng.randint(9, 19), rng.randint(0, 59))
        ip = f"203.0.113.{rng.randint(61, 80)}"
        old, new = _instances(rng, 2)
        steps = [("GetObject", f"release-artifacts/payment-service/rc-{t:%Y%m%d%H%M}.tar.gz"),
                 ("RunInstances", new), ("DescribeInstances", None), ("DescribeInstances", None),
                 ("DeleteInstance", old)]
        for i, (api, res) in enumerate(steps):
            ev = event(rng, STAGING_CI, t + timedelta(seconds=15 * i), api, ip=ip, ua=UA_CLI, resource=res,
                       params={"InstanceId": res} if res and res.startswith("i-") else None)
            yield in_account(ev, STAGING)


def terraform_day(rng: random.Random, day: datetime) -> Iterator[dict[str, Any]]:
    """Tuesdays at 14:00 local: a Terraform apply of ~400 calls in ten minutes, about 1% failing
    (throttled, or a parameter the provider rejects) - normal, and never a storm."""
    if _local(day, 12).astimezone(BUSINESS_TZ).weekday() != 1:
        return
    t = _local(day, 14, rng.randint(0, 5))
    session = f"terraform-{t:%Y%m%d}"
    ip = f"203.0.113.{rng.randint(50, 60)}"
    plan = ["DescribeInstances", "DescribeSecurityGroups", "DescribeLoadBalancers", "DescribeDBInstances",
            "DescribeImages", "DescribeDisks"]
    for i in range(rng.randint(350, 450)):
        api = rng.choice(plan) if i % 20 else rng.choice(("ModifyInstanceAttribute", "AuthorizeSecurityGroup"))
        fail = rng.random() < 0.01
        error = rng.choice((("Throttling.User", "Request was denied due to user flow control."),
                            ("InvalidParameter", "The specified parameter is not valid."))) if fail else None
        res = _instances(rng)[0] if api == "ModifyInstanceAttribute" else ("sg-bp1web01" if api.startswith("Auth") else None)
        yield event(rng, TERRAFORM, t + timedelta(milliseconds=1500 * i), api, ip=ip, ua="Terraform/1.9.8 terraform-provider-alicloud/1.235.0",
                    session=session, resource=res, error=error)


# -- the planted incidents ------------------------------------------------------------------------
@dataclass(frozen=True)
class Incident:
    key: str
    agent: str
    what: str
    day_offset: int  # days before the end of the window


INCIDENTS = (
    Incident("stolen-ci-key", "ci-deployer",
             "the CI key used at 03:00 on a weekend from an unknown IP to create an admin user", 1),
    Incident("secret-enumeration", "monitor-readonly",
             "the monitor reads KMS secrets it was never given: 45 denied calls in 90 s", 5),
    Incident("stop-logging", "admin-alice", "the admin stops the audit trail late at night", 2),
    Incident("expired-vendor", "vendor-acme", "the vendor's account used after its contract expired", 1),
    Incident("unregistered-user", "ram-user:ops-debug",
             "an identity in no inventory opens a security group to the world", 6),
    Incident("root-signin", "root-account:" + ACCOUNT, "someone signs in as the root account", 4),
    Incident("etl-at-night", "etl-pipeline",
             "the daytime ETL role reads 40 objects from the lake at 03:10 on a Sunday", 1),
    Incident("cross-account-role", "staging-ci",
             "the staging CI key assumes the production deploy role at 02:40 and uses it in prod", 3),
    Incident("undeclared-account", "nightly-backup",
             "the backup role reads the security account's audit-log bucket", 2),
)


def incident_day(incident: Incident, end: datetime) -> datetime:
    """The UTC midnight of the incident's day; the stolen key strikes on the last weekend."""
    day = end - timedelta(days=incident.day_offset)
    if incident.key in ("stolen-ci-key", "etl-at-night"):  # the last Saturday / Sunday
        wanted = 5 if incident.key == "stolen-ci-key" else 6
        while _local(day, 3).astimezone(BUSINESS_TZ).weekday() != wanted:
            day -= timedelta(days=1)
    return day


def incident_window(incident: Incident, end: datetime) -> tuple[datetime, datetime]:
    """The incident's local (business time zone) day, as UTC instants [start, stop)."""
    day = incident_day(incident, end)
    return _local(day, 0), _local(day + timedelta(days=1), 0)


def incident_events(rng: random.Random, end: datetime) -> Iterator[dict[str, Any]]:
    day = {i.key: incident_day(i, end) for i in INCIDENTS}
    yield from _stolen_key(rng, day["stolen-ci-key"])
    t = _local(day["secret-enumeration"], 14, 12)
    for i in range(45):
        api = "ListSecrets" if i % 5 == 0 else "GetSecretValue"
        yield event(rng, MONITOR, t + timedelta(seconds=2 * i), api, ip="198.51.100.10", ua=UA_PY,
                    resource=f"prod/payments/db-password-{i % 9}", error=DENIED)
    t = _local(day["stop-logging"], 23, 41)
    yield event(rng, ALICE, t, "DescribeTrails", ip="198.18.7.21", ua="AliyunConsole")
    yield event(rng, ALICE, t + timedelta(seconds=40), "StopLogging", ip="198.18.7.21", ua="AliyunConsole",
                resource="prod-trail", params={"Name": "prod-trail"})
    t = _local(day["expired-vendor"], 11, 5)
    for i, api in enumerate(("ConsoleSignin", "DescribeInstanceAttribute", "GetObject")):
        res = {"DescribeInstanceAttribute": "i-bp1payments0001", "GetObject": "payment-logs/2026/keys.txt"}.get(api)
        yield event(rng, VENDOR, t + timedelta(minutes=i), api, ip="192.0.2.44", ua="AliyunConsole", resource=res)
    t = _local(day["unregistered-user"], 16, 30)
    for i, api in enumerate(("DescribeInstances", "DescribeSecurityGroups", "CreateSecurityGroup",
                             "AuthorizeSecurityGroup")):
        yield event(rng, OPS_DEBUG, t + timedelta(minutes=i), api, ip="198.18.7.99", ua=UA_CLI,
                    resource="sg-bp1debug01" if "Security" in api and "Describe" not in api else None,
                    params={"SourceCidrIp": "0.0.0.0/0", "PortRange": "22/22"} if api.startswith("Auth") else None)
    t = _local(day["root-signin"], 20, 14)
    yield event(rng, ROOT, t, "ConsoleSignin", ip="45.83.64.12", ua=UA_BROWSER)
    t = _local(day["etl-at-night"], 3, 10)
    for i in range(40):
        yield event(rng, ETL, t + timedelta(seconds=3 * i), "GetObject", ip="100.104.33.17", ua=UA_JAVA,
                    session="etl-manual", resource=f"data-lake/customers/pii/part-{i:04d}.parquet")


def account_incident_events(rng: random.Random, end: datetime) -> Iterator[dict[str, Any]]:
    """The multi-account incidents: a cross-account role session and an undeclared account."""
    day = {i.key: incident_day(i, end) for i in INCIDENTS}
    yield from _staging_key_in_prod(rng, _local(day["cross-account-role"], 2, 40))
    t = _local(day["undeclared-account"], 1, 47)
    session, ip = f"backup-{t:%Y%m%d}", "100.104.77.12"
    yield in_account(event(rng, BACKUP, t, "ListObjects", ip=ip, ua=UA_PY, session=session,
                           resource="security-audit-logs"), ACCOUNT, SECURITY)
    for i in range(3):
        yield in_account(event(rng, BACKUP, t + timedelta(seconds=20 + 5 * i), "GetObject", ip=ip, ua=UA_PY,
                               session=session, resource=f"security-audit-logs/actiontrail/{t:%Y%m%d}/{i:03d}.gz"),
                         ACCOUNT, SECURITY)


def _staging_key_in_prod(rng: random.Random, t: datetime) -> Iterator[dict[str, Any]]:
    """The staging CI key assumes the production deploy role (``AssumeRole``: the role's ARN in
    prod, a session name, an hour; the STS key it returns) and uses the session in prod: the
    session's events carry that key and the call's time as ``sessionContext.creationDate``."""
    ip, session = "203.0.113.66", f"ci-staging-{t:%H%M}"
    sts = "STS.NU" + _token(rng, 22)
    call = event(rng, STAGING_CI, t, "AssumeRole", ip=ip, ua=UA_CLI, resource="ProdDeployRole",
                 params={"RoleArn": f"acs:ram::{ACCOUNT}:role/proddeployrole", "RoleSessionName": session,
                         "DurationSeconds": "3600"})
    expires = (t + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    call["responseElements"] = {"RequestId": call["requestId"], "Credentials": {
        "AccessKeyId": sts, "AccessKeySecret": "****", "SecurityToken": "****", "Expiration": expires},
        "AssumedRoleUser": {"Arn": f"acs:ram::{ACCOUNT}:role/proddeployrole/{session}",
                            "AssumedRoleId": f"{PROD_DEPLOY.principal}:{session}"}}
    yield in_account(call, STAGING)
    created = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    acts: list[tuple[str, str | None, dict[str, Any] | None]] = [
        ("DescribeInstances", None, None), ("DescribeSecurityGroups", None, None),
        ("AuthorizeSecurityGroup", "sg-bp1payments01", {"SourceCidrIp": "0.0.0.0/0", "PortRange": "22/22"}),
        *((("GetObject", f"customer-exports/2026/orders-{i:02d}.csv", None)) for i in range(6)),
        ("RunInstances", _instances(rng)[0], None)]
    for i, (api, res, params) in enumerate(acts):
        ev = event(rng, PROD_DEPLOY, t + timedelta(minutes=2, seconds=30 * i), api, ip=ip, ua=UA_CLI,
                   session=session, resource=res, params=params)
        ev["userIdentity"]["accessKeyId"] = sts
        ev["userIdentity"]["sessionContext"]["attributes"]["creationDate"] = created
        yield in_account(ev, ACCOUNT)


def _stolen_key(rng: random.Random, day: datetime) -> Iterator[dict[str, Any]]:
    t = _local(day, 3, 10)
    ip, ua = "185.220.101.34", "python-requests/2.31.0"
    script: list[tuple[str, str, str | None, tuple[str, str] | None]] = [
              ("DescribeInstances", "cn-hangzhou", None, None), ("DescribeInstances", "cn-beijing", None, None),
              ("DescribeInstances", "ap-southeast-1", None, None), ("ListUsers", "cn-hangzhou", None, None),
              ("CreateUser", "cn-hangzhou", "svc-backup2", None),
              ("CreateAccessKey", "cn-hangzhou", "svc-backup2", None),
              ("AttachPolicyToUser", "cn-hangzhou", "svc-backup2", None),
              ("GetSecretValue", "cn-hangzhou", "prod/payments/api-key", DENIED),
              ("DescribeTrails", "cn-hangzhou", None, None)]
    for i, (api, region, res, err) in enumerate(script):
        params: dict[str, Any] | None = {"UserName": res} if res and not res.startswith("prod/") else None
        if api == "AttachPolicyToUser":
            params = {"UserName": res, "PolicyName": "AdministratorAccess", "PolicyType": "System"}
        yield event(rng, CI, t + timedelta(seconds=25 * i), api, region=region, ip=ip, ua=ua,
                    resource=res, error=err, params=params)


# -- putting it together ---------------------------------------------------------------------------
def month(end: datetime, days: int = 30, seed: int = 7, vendor_expires: datetime | None = None,
          incidents: bool = True) -> list[dict[str, Any]]:
    """Every event of ``days`` days ending at ``end`` (a UTC midnight), in time order."""
    rng = random.Random(seed)
    staging = random.Random(f"staging-{seed}")  # its own stream: prod's traffic stays as it was
    start = end - timedelta(days=days)
    out: list[dict[str, Any]] = []
    for d in range(days):
        day = start + timedelta(days=d)
        for gen in (monitor_day(rng, day), ci_day(rng, day), backup_day(rng, day),
                    vendor_day(rng, day, vendor_expires), admin_day(rng, day), terraform_day(rng, day)):
            out.extend(gen)
        for h in range(24):
            out.extend(etl_hour(rng, day + timedelta(hours=h)))
        out.extend(staging_ci_day(staging, day))
    if incidents:
        out.extend(incident_events(rng, end))
        out.extend(account_incident_events(staging, end))
    out.sort(key=lambda e: e["eventTime"])
    return out


def stream(n: int, seed: int = 7, end: datetime | None = None) -> Iterator[dict[str, Any]]:
    """``n`` events of everyday traffic (no incidents) in time order, a month at a time, ending
    near ``end`` (default: today, UTC midnight). For benchmarks: memory holds one month."""
    end = end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    per_month = len(month(end, seed=seed, incidents=False))
    months = -(-n * 10 // (per_month * 9))  # months vary a little in size: plan 10% spare
    left = n
    for m in range(months - 1, -1, -1):
        chunk = month(end - timedelta(days=30 * m), seed=seed + m, incidents=False)[:left]
        yield from chunk
        left -= len(chunk)
        if not left:
            return
