"""The organisation-scale scenario generator (pipeline/demo/organisation.py) and its scorer
(pipeline/demo/score.py): what issue 15's learned-behaviour detectors are developed and judged on.

A small organisation (24 agents, three weeks, a tiny volume: the shape, not the size) is written
once per module. It must be what it claims: deterministic per seed; every event in ActionTrail's
real shape (ingest quarantines nothing), attributed to a declared agent; every planted incident
inside its agent's declared scope (the RAM policy engine allows each call, and ``out_of_scope``
raises nothing); every trap inside what the inventory declares where the trap says so; labels
that name real agents and windows inside the scored weeks. The scorer is checked on hand-made
findings.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import detectors
from models.inventory import Attributor, Inventory, load_inventory
from models.mapping import CallerFacts, CallFacts, is_authorized_call, requests
from models.policy import Decision
from models.scope import compile_scopes
from models.sources import client_family
from pipeline.core.config import Config, load_config
from pipeline.demo.organisation import Scenario, build_org, generate
from pipeline.demo.score import load_labels, score
from pipeline.detection.detect import run_detect
from pipeline.detection.findings import list_findings
from pipeline.ingest.events import normalize
from pipeline.ingest.run import ingest_files
from pipeline.store.store import open_store
from tests.conftest import ROOT

TZ = ZoneInfo("Asia/Shanghai")
END = datetime(2026, 11, 30, tzinfo=UTC)  # -> the scenario ends at local midnight 2026-11-29 16:00Z
SMALL = {"agents": 24, "weeks": 3, "end": END, "volume": 0.003}
INCIDENT_KINDS = {"exfiltration", "enumeration", "key_two_networks", "mass_deletion", "session_reuse",
                  "service_role_outside", "mfa_bypass", "sensitive_novelty"}
TRAP_KINDS = {"public_holiday", "oncall_night", "new_region", "key_rotation", "new_agent", "terraform_apply",
              "evening_or_weekend_work", "late_backup", "office_nat_change"}


def _tree_digest(root: Path) -> dict[str, str]:
    """What the generator wrote (not a store a test ran there)."""
    paths = [root / "labels.json", *(root / "config").rglob("*"), *(root / "events").rglob("*")]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths) if p.is_file()}


def _events(root: Path) -> Iterator[dict[str, Any]]:
    for path in sorted((root / "events").rglob("*.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            yield from (json.loads(line) for line in lines)


def _when(ev: dict[str, Any]) -> datetime:
    return datetime.strptime(ev["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, list[dict[str, Any]], Inventory]:
    """The scenario, all its events (small enough to hold) with their agents, and its inventory."""
    scenario = generate(tmp_path_factory.mktemp("org") / "scenario", seed=5, **SMALL)  # type: ignore[arg-type]
    inventory = load_inventory(scenario.root / "config" / "agents.yaml")
    attribute = Attributor(inventory)
    events = []
    for ev in _events(scenario.root):
        typed = normalize(ev)
        events.append({**ev, "_agent": attribute(typed.identity, typed.access_key_id), "_typed": typed})
    return scenario, events, inventory


def _labels(scenario: Scenario) -> list[dict[str, Any]]:
    return load_labels(scenario.root / "labels.json")[0]


def _label(scenario: Scenario, kind: str) -> dict[str, Any]:
    return next(lb for lb in _labels(scenario) if lb["kind"] == kind)


def _during(events: list[dict[str, Any]], label: dict[str, Any], agent: str | None = None) -> list[dict[str, Any]]:
    start, end = _time(label["start"]), _time(label["end"])
    return [e for e in events if e["_agent"] == (agent or label["agent"]) and start <= _when(e) <= end]


# -- the scenario as a whole ------------------------------------------------------------------------
def test_the_same_seed_writes_the_same_bytes_and_another_seed_another_organisation(org: Any, tmp_path: Path) -> None:
    scenario, _, _ = org
    again = generate(tmp_path / "again", seed=5, jobs=2, **SMALL)  # type: ignore[arg-type]
    assert _tree_digest(again.root) == _tree_digest(scenario.root)
    assert again.events == scenario.events > 0

    def plan(seed: int) -> tuple[list[str], list[tuple[str, str]]]:
        built, labels, _ = build_org(24, 3, seed, END.date(), 0.003)
        return [a.name for a in built.agents], [(lb.kind, lb.agent) for lb in labels]

    assert plan(5) == plan(5) and plan(6) != plan(5)


def test_the_config_and_inventory_load_and_the_mix_is_an_organisations(org: Any) -> None:
    scenario, _, inventory = org
    config = load_config(scenario.config)
    assert config.inventory == Path("config/agents.yaml") and config.timezone == "Asia/Shanghai"
    assert len(inventory.agents) == 24
    names = {a.name for a in inventory.agents}
    for prefix in ("ci-", "terraform-", "monitor-", "backup-", "etl-", "svc-", "vendor-"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert any(a.expires for a in inventory.agents)  # time-bound vendors
    assert any(a.hours for a in inventory.agents) and any(a.source_ips for a in inventory.agents)


def test_every_event_is_ingested_none_quarantined(org: Any, tmp_path: Path) -> None:
    scenario, _, inventory = org
    with open_store(tmp_path / "store.duckdb") as store:
        report = ingest_files(store, [scenario.events_dir], Attributor(inventory))
    assert report.quarantined == 0
    assert report.new == scenario.events and report.duplicates == 0


def test_events_are_in_the_real_shape_and_all_belong_to_declared_agents(org: Any) -> None:
    scenario, events, inventory = org
    declared = {a.name for a in inventory.agents}
    agents = Counter(e["_agent"] for e in events)
    assert set(agents) - declared == {"system:ecs.aliyuncs.com"}  # Alibaba Cloud acting by itself
    assert declared <= set(agents)  # every agent acts
    kinds = Counter(e["userIdentity"]["type"] for e in events)
    assert {"ram-user", "assumed-role", "system"} <= set(kinds)
    sts = [e for e in events if e["userIdentity"]["type"] == "assumed-role"]
    assert all(e["userIdentity"]["accessKeyId"].startswith("STS.") and ":" in e["userIdentity"]["userName"]
               and "mfaAuthenticated" in e["userIdentity"]["sessionContext"]["attributes"] for e in sts)
    keys = {e["userIdentity"].get("accessKeyId") for e in events if e["userIdentity"]["type"] == "ram-user"}
    assert any(k and k.startswith("LTAI") for k in keys)
    signins = [e for e in events if e["eventName"] == "ConsoleSignin"]
    assert signins and {e["additionalEventData"]["mfaChecked"] for e in signins} == {"true", "false"}
    assert {"aliyun-cli", "terraform", "alibabacloud-sdk-python", "alibabacloud-sdk-go", "aliyun-sdk-java",
            "console", "python-requests"} <= {client_family(e["userAgent"]) for e in events}
    assert "Internal" in {e["sourceIpAddress"] for e in events}
    # every source is an address, or a token the cloud writes (a person on the VPN has an address too)
    sources = {e["sourceIpAddress"] for e in events}
    assert not {s for s in sources if not _address(s) and s != "Internal" and not s.endswith(".aliyuncs.com")}
    codes = {e.get("errorCode") for e in events} - {None, ""}
    assert codes and not codes & {"NoPermission", "Forbidden", "AccessDenied"}  # rare, and never a denial
    assert all(scenario.start <= _when(e) < scenario.end for e in events)


def test_a_role_session_keeps_one_sts_key_for_its_lifetime(org: Any) -> None:
    _, events, _ = org
    keys: dict[str, set[str]] = {}
    for e in events:
        if e["userIdentity"]["type"] == "assumed-role":
            keys.setdefault(e["userIdentity"]["userName"], set()).add(e["userIdentity"]["accessKeyId"])
    assert keys and all(len(k) == 1 for k in keys.values())


# -- incidents: inside the declared scope ------------------------------------------------------------------
def test_every_incident_call_is_allowed_by_the_agents_declared_scope(org: Any) -> None:
    """Through the project's policy engine: each RAM-authorized call of each incident is allowed by
    the agent's policies, in its declared regions, from its declared networks."""
    scenario, events, inventory = org
    scopes = compile_scopes(inventory)
    incidents = [lb for lb in _labels(scenario) if lb["expect"] == "raise"]
    assert {lb["kind"] for lb in incidents} == INCIDENT_KINDS and len(incidents) == 10
    for label in incidents:
        own = [e for name in [label["agent"], *label.get("related", [])] for e in _during(events, label, name)]
        assert own, label["id"]
        scope = scopes[label["agent"]]
        for e in own:
            ev, scope = e["_typed"], scopes[e["_agent"]]
            assert scope.region_allowed(ev.acs_region) or ev.is_global, (label["id"], ev.acs_region)
            assert scope.source_allowed(ev.source_ip) is not False, (label["id"], ev.source_ip)
            if is_authorized_call(ev.event_type, ev.service_name):
                for req in _requests(ev, scope.policies.condition_keys):
                    assert scope.policies.evaluate(req).decision is Decision.ALLOW, (label["id"], req.action, req.resource)


def _requests(ev: Any, keys: frozenset[str]) -> list[Any]:
    params = json.dumps(ev.request_parameters) if ev.request_parameters is not None else None
    facts = CallFacts(ev.event_type, ev.event_name, ev.service_name, ev.service_code, ev.acs_region,
                      ev.recipient_account_id or ev.account_id, ev.referenced_resources, ev.resource_type,
                      ev.resource_name, params)
    caller = CallerFacts(ev.event_time, ev.source_ip, ev.ip_version, ev.vpc_id, ev.mfa_authenticated,
                         ev.access_key_id, ev.secure_transport, ev.identity_type, ev.account_id, ev.user_name,
                         ev.role_name, ev.user_agent)
    return requests(facts, caller, keys)


def test_out_of_scope_raises_nothing_on_the_whole_organisation(org: Any, tmp_path: Path) -> None:
    """The inventory declares what every agent does, incidents included: the declared-scope check
    alone sees nothing here, only learned behaviour can."""
    scenario, _, inventory = org
    only = Config(timezone="Asia/Shanghai",
                  detectors={name: {"enabled": False} for name in detectors.registry() if name != "out_of_scope"})
    with open_store(tmp_path / "store.duckdb") as store:
        ingest_files(store, [scenario.events_dir], Attributor(inventory))
        report = run_detect(store, only, inventory, since=scenario.start, until=scenario.end)
        found = list_findings(store, status="all")
    assert report.detectors["out_of_scope"]["error"] is None and report.events == scenario.events
    assert found == []


def test_the_incidents_are_what_their_labels_say(org: Any) -> None:
    scenario, events, _ = org
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for label in _labels(scenario):
        if label["expect"] == "raise":
            by_kind.setdefault(label["kind"], []).append(label)
    exfil = _during(events, by_kind["exfiltration"][0])
    gets = [e for e in exfil if e["eventName"] == "GetObject"]
    bucket = gets[0]["referencedResources"]["ACS::OSS::Object"][0].split("/")[0]
    history = [e for e in events if e["_agent"] == by_kind["exfiltration"][0]["agent"] and _when(e) < scenario.detect_since]
    assert len(gets) >= 150 and not any(bucket in json.dumps(e.get("referencedResources")) for e in history)
    enum = _during(events, by_kind["enumeration"][0])
    assert len({e["eventName"] for e in enum}) >= 20 and len({e["serviceName"] for e in enum}) >= 5
    assert (_time(by_kind["enumeration"][0]["end"]) - _time(by_kind["enumeration"][0]["start"])) <= timedelta(minutes=10)
    two = by_kind["key_two_networks"][0]
    with_key = [e for e in _during(events, two) if e["userIdentity"].get("accessKeyId")]
    def net(ip: str) -> str:
        return ip.rsplit(".", 1)[0]
    known = {net(e["sourceIpAddress"]) for e in events if e["_agent"] == two["agent"] and _when(e) < _time(two["start"])}
    assert len({e["userIdentity"]["accessKeyId"] for e in with_key}) == 1
    used = {net(e["sourceIpAddress"]) for e in with_key}
    assert used & known and used - known  # the owner's usual network (a /24 of it) and the thief's
    deletes = [e for e in _during(events, by_kind["mass_deletion"][0]) if e["eventName"] == "DeleteSnapshot"]
    assert len(deletes) >= 20
    reuse = [e for e in _during(events, by_kind["session_reuse"][0]) if not e.get("vpcId")]  # the job runs in its VPC
    key = {e["userIdentity"]["accessKeyId"] for e in reuse}
    assert len(reuse) >= 10 and len(key) == 1
    job = [e for e in events if e["userIdentity"].get("accessKeyId") in key and e.get("vpcId")]
    assert job and {e["sourceIpAddress"] for e in job}.isdisjoint({e["sourceIpAddress"] for e in reuse})
    mfa = by_kind["mfa_bypass"][0]
    unbind = [e for e in _during(events, mfa, mfa["related"][0]) if e["eventName"] == "UnbindMFADevice"]
    signin = [e for e in _during(events, mfa) if e["eventName"] == "ConsoleSignin"
              and e["additionalEventData"]["mfaChecked"] == "false"]
    assert unbind and signin and unbind[0]["requestParameters"]["UserName"] == signin[0]["userIdentity"]["userName"]
    assert _when(unbind[0]) < _when(signin[0]) <= _when(unbind[0]) + timedelta(minutes=31)
    earlier = [e for e in events if e["_agent"] == mfa["agent"] and e["eventName"] == "ConsoleSignin"
               and _when(e) < _time(mfa["start"])]
    assert earlier and {e["additionalEventData"]["mfaChecked"] for e in earlier} == {"true"}
    novel = by_kind["sensitive_novelty"][0]
    during = {e["serviceName"] for e in _during(events, novel)}
    before = {e["serviceName"] for e in events if e["_agent"] == novel["agent"] and _when(e) < _time(novel["start"])}
    assert during - before and during - before <= {"Kms", "Ims", "Ram", "Actiontrail"}


def _incident_events(seed: int) -> dict[str, list[tuple[Any, list[dict[str, Any]]]]]:
    """Per incident kind, (its agent, its events) for a seed's organisation: planned and made
    without writing the history (the makers are what the generator writes on the incident's day)."""
    import random

    org, labels, extras = build_org(60, 3, seed, END.date(), 0.001)
    agents = {a.name: a for a in org.agents}
    out: dict[str, list[tuple[Any, list[dict[str, Any]]]]] = {}
    for label in labels:
        if label.expect != "raise":
            continue
        made = [ev for x in extras if x.label == label.id for ev in x.make(random.Random(f"{seed}/{label.id}"))]
        out.setdefault(label.kind, []).append((agents[label.agent], made))
    return out


def test_incidents_vary_by_seed_and_often_come_from_the_agents_own_network_and_client() -> None:
    """Issue 15's held-out incidents are hard because a thief keeps the agent's habits: over a few
    seeds, each kind that can be done from the agent's own place is done so in some (the stolen CI
    key read from its runner with its usual client, the monitor's sweep from its own host, the
    backup role deleting from its own host) and elsewhere in others, at sizes from small to large;
    the incidents that need another network (a key or session used twice, a service role outside)
    sometimes keep the agent's client."""
    own: dict[str, set[bool]] = {}
    sizes: dict[str, list[int]] = {}
    client_kept: dict[str, set[bool]] = {}
    for seed in range(1, 9):
        for kind, found in _incident_events(seed).items():
            for agent, made in found:
                usual_ip = {str(agent.p.get("ip"))} | {str(n) for n in agent.source_ips or []}
                usual_ua = agent.p.get("ua")
                mine = [e for e in made if e["userIdentity"].get("principalId", "").startswith(agent.p["principal"])]
                home = all(e["sourceIpAddress"] in usual_ip or e.get("vpcId")
                           or any(ip_address(e["sourceIpAddress"]) in ip_network(n) for n in agent.source_ips or [])
                           or (kind == "exfiltration" and not agent.source_ips
                               and any(ip_address(e["sourceIpAddress"]) in ip_network(p)
                                       for p in ("20.42.0.0/15", "40.84.0.0/14", "52.234.0.0/15", "4.148.0.0/14",
                                                 "172.176.0.0/14")))
                           for e in mine)
                own.setdefault(kind, set()).add(home and all(e["userAgent"] == usual_ua for e in mine))
                sizes.setdefault(kind, []).append(len(mine))
                client_kept.setdefault(kind, set()).add(any(e["userAgent"] == usual_ua for e in mine))
    for kind in ("exfiltration", "enumeration", "mass_deletion"):
        assert own[kind] == {True, False}, (kind, own[kind])
    for kind in ("session_reuse", "service_role_outside"):
        assert True in client_kept[kind], kind
    assert min(sizes["exfiltration"]) < 700 < 2000 < max(sizes["exfiltration"])
    assert min(sizes["mass_deletion"]) < 40 < max(sizes["mass_deletion"])


def test_service_roles_call_from_alibabas_networks_except_in_their_incident(org: Any) -> None:
    scenario, events, _ = org
    label = _label(scenario, "service_role_outside")
    inside = ("11.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12")

    def internal(ip: str) -> bool:
        try:
            return any(ip_address(ip) in ip_network(n) for n in inside)
        except ValueError:  # "Internal", or a service's host name
            return True

    incident = _during(events, label)
    usual = [e for e in events if e["_agent"] == label["agent"] and e not in incident]
    assert usual and all(internal(e["sourceIpAddress"]) for e in usual)
    assert incident and not any(internal(e["sourceIpAddress"]) for e in incident)


# -- traps: benign, and inside what is declared ---------------------------------------------------------
def _agent(inventory: Inventory, name: str) -> Any:
    agent = inventory.agent(name)
    assert agent is not None
    return agent


def test_the_new_region_is_declared_and_new(org: Any) -> None:
    scenario, events, inventory = org
    label = _label(scenario, "new_region")
    agent = _agent(inventory, label["agent"])
    during = {e["acsRegion"] for e in _during(events, label)}
    before = {e["acsRegion"] for e in events if e["_agent"] == agent.name and _when(e) < _time(label["start"])}
    assert during - before and during <= set(agent.regions)


def test_the_rotated_key_is_in_the_inventory_and_replaces_the_old_one(org: Any) -> None:
    scenario, events, inventory = org
    label = _label(scenario, "key_rotation")
    agent = _agent(inventory, label["agent"])
    keys = [i.split(":", 1)[1] for i in agent.identities if i.startswith("access-key:")]
    assert len(keys) == 2
    old, new = keys
    used = [e["userIdentity"].get("accessKeyId") for e in events if e["_agent"] == agent.name]
    assert new in used and old in used
    last_old = max(_when(e) for e in events if e["userIdentity"].get("accessKeyId") == old)
    first_new = min(_when(e) for e in events if e["userIdentity"].get("accessKeyId") == new)
    assert _time(label["start"]) <= first_new <= _time(label["end"]) and last_old < first_new + timedelta(hours=3)


def test_the_late_backup_runs_inside_its_declared_hours(org: Any) -> None:
    scenario, events, inventory = org
    label = _label(scenario, "late_backup")
    agent = _agent(inventory, label["agent"])
    run = _during(events, label)
    assert run and agent.hours is not None
    assert all(agent.hours.contains(_when(e).astimezone(TZ)) for e in run)
    starts: dict[Any, datetime] = {}
    for e in events:
        if e["_agent"] == agent.name and _when(e) < scenario.detect_since:
            day = _when(e).astimezone(TZ).date()
            starts[day] = min(starts.get(day, _when(e)), _when(e))
    usual = sorted(t.astimezone(TZ).hour * 60 + t.astimezone(TZ).minute for t in starts.values())[len(starts) // 2]
    late = _time(label["start"]).astimezone(TZ)
    assert 150 <= late.hour * 60 + late.minute - usual <= 210  # three hours late, give or take the jitter


def test_the_nat_change_stays_inside_the_declared_cidr(org: Any) -> None:
    scenario, events, inventory = org
    label = _label(scenario, "office_nat_change")
    agent = _agent(inventory, label["agent"])
    during = {e["sourceIpAddress"] for e in _during(events, label)}
    before = {e["sourceIpAddress"] for e in events if e["_agent"] == agent.name and _when(e) < _time(label["start"])}
    assert during and all(any(ip_address(ip) in net for net in agent.source_ips) for ip in during)
    networks = {str(ip_network(f"{ip}/24", strict=False)) for ip in during - before}
    assert networks and networks.isdisjoint({str(ip_network(f"{ip}/24", strict=False)) for ip in before})


def test_after_hours_work_and_the_oncall_night_are_the_peoples_own(org: Any) -> None:
    scenario, events, inventory = org
    evening = _label(scenario, "evening_or_weekend_work")
    agent = _agent(inventory, evening["agent"])
    local = [_when(e).astimezone(TZ) for e in _during(events, evening)]
    assert local and all(t.weekday() >= 5 or t.hour >= 20 for t in local)
    assert agent.hours is None or all(agent.hours.contains(t) for t in local)
    night = _label(scenario, "oncall_night")
    hours = {_when(e).astimezone(TZ).hour for e in _during(events, night)}
    assert hours and hours <= {1, 2, 3}


def test_the_holiday_is_quiet_and_the_next_day_catches_up(org: Any) -> None:
    scenario, events, inventory = org
    label = _label(scenario, "public_holiday")
    holiday = _time(label["start"]).astimezone(TZ).date()
    assert label["agent"].startswith("ci-")
    daily = Counter(_when(e).astimezone(TZ).date() for e in events if e["_agent"] == label["agent"])
    deploys = Counter(_when(e).astimezone(TZ).date() for e in events
                      if e["_agent"] == label["agent"] and e["eventName"] == "CreateImage")
    others = [n for d, n in deploys.items() if d != holiday + timedelta(days=1)]
    assert daily[holiday] == 0 and deploys[holiday + timedelta(days=1)] > max(others)
    people = {a.name for a in inventory.agents if a.purpose.startswith(("Engineer", "Cloud administrator"))}
    assert people and not any(e["_agent"] in people and _when(e).astimezone(TZ).date() == holiday for e in events)


def test_the_new_agent_has_only_a_few_days_and_the_big_apply_is_on_its_usual_day(org: Any) -> None:
    scenario, events, _ = org
    new = _label(scenario, "new_agent")
    first = min(_when(e) for e in events if e["_agent"] == new["agent"])
    assert _time(new["start"]) <= first and scenario.end - first <= timedelta(days=5)
    apply = _label(scenario, "terraform_apply")
    mine = [e for e in events if e["_agent"] == apply["agent"]]
    sessions = Counter(e["userIdentity"]["userName"] for e in mine)
    biggest = sessions.most_common(1)[0][0]
    big = [e for e in mine if e["userIdentity"]["userName"] == biggest]
    assert all(_time(apply["start"]) <= _when(e) <= _time(apply["end"]) for e in big)
    applies = {e["userIdentity"]["userName"] for e in mine if e["eventRW"] == "Write" and _when(e) < scenario.detect_since}
    usual = {_when(e).astimezone(TZ).weekday() for e in mine if e["userIdentity"]["userName"] in applies}
    assert usual == {_time(apply["start"]).astimezone(TZ).weekday()}


# -- labels ---------------------------------------------------------------------------------------------------
def test_labels_name_real_agents_and_windows_inside_the_scored_weeks(org: Any) -> None:
    scenario, events, inventory = org
    labels, meta = load_labels(scenario.root / "labels.json")
    names = {a.name for a in inventory.agents}
    assert len(labels) == 19 and len({lb["id"] for lb in labels}) == 19
    assert {lb["kind"] for lb in labels if lb["expect"] == "quiet"} == TRAP_KINDS
    assert len({lb["agent"] for lb in labels}) == 19  # one agent per label: no finding explains two
    for lb in labels:
        assert lb["agent"] in names and set(lb.get("related", [])) <= names
        assert _time(meta["detect_since"]) <= _time(lb["start"]) <= _time(lb["end"]) <= _time(meta["end"]), lb["id"]
        assert _during(events, lb), lb["id"]
    assert _time(meta["end"]) - _time(meta["detect_since"]) == timedelta(days=14)


def test_too_few_agents_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipeline.demo.organisation", str(tmp_path / "o"), "--agents", "10"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "organisation: error: at least 24 agents: the ten incidents and nine traps need their own"


# -- the scorer -------------------------------------------------------------------------------------------------
LABELS = [
    {"id": "i1", "kind": "exfiltration", "agent": "ci-a", "expect": "raise", "start": "2026-11-20T03:00:00Z",
     "end": "2026-11-20T03:30:00Z"},
    {"id": "i2", "kind": "mfa_bypass", "agent": "bob", "expect": "raise", "start": "2026-11-21T10:00:00Z",
     "end": "2026-11-21T10:20:00Z", "related": ["admin-x"]},
    {"id": "t1", "kind": "late_backup", "agent": "backup-a", "expect": "quiet", "start": "2026-11-22T20:00:00Z",
     "end": "2026-11-22T20:40:00Z"},
    {"id": "t2", "kind": "key_rotation", "agent": "carol", "expect": "quiet", "start": "2026-11-23T00:00:00Z",
     "end": "2026-11-25T00:00:00Z"},
]


def _finding(n: int, agent: str, first: str, last: str, severity: str = "medium", detector: str = "d") -> dict[str, Any]:
    return {"id": f"f{n}", "agent": agent, "severity": severity, "detector": detector, "first_seen": first,
            "last_seen": last, "summary": "s"}


def test_the_scorer_counts_raised_quiet_and_other_findings() -> None:
    findings = [
        _finding(1, "ci-a", "2026-11-20T02:00:00Z", "2026-11-20T03:00:00Z", "high"),  # overlaps at its edge: raises i1
        _finding(2, "bob", "2026-11-21T10:05:00Z", "2026-11-21T10:06:00Z", "low"),  # low: raises nothing
        _finding(3, "admin-x", "2026-11-21T10:00:00Z", "2026-11-21T10:01:00Z"),  # related: neither raise nor other
        _finding(4, "backup-a", "2026-11-22T20:10:00Z", "2026-11-22T20:11:00Z", "medium"),  # trips t1
        _finding(5, "carol", "2026-11-25T00:00:01Z", "2026-11-25T01:00:00Z", "critical"),  # after t2: other
        _finding(6, "dave", "2026-11-24T00:00:00Z", "2026-11-24T00:00:00Z"),  # no label: other
        _finding(7, "dave", "2026-11-24T00:00:00Z", "2026-11-24T00:00:00Z", "low"),  # low: not counted at all
    ]
    result = score(findings, LABELS, agents=50, days=14)
    incidents = {i["id"]: i for i in result["incidents"]}
    traps = {t["id"]: t for t in result["traps"]}
    assert incidents["i1"]["raised"] and [f["id"] for f in incidents["i1"]["findings"]] == ["f1"]
    assert not incidents["i2"]["raised"] and incidents["i2"]["findings"] == []
    assert not traps["t1"]["quiet"] and [f["id"] for f in traps["t1"]["findings"]] == ["f4"]
    assert traps["t2"]["quiet"]
    assert sorted(f["id"] for f in result["other"]) == ["f5", "f6"]
    assert result["other_per_100_agents_per_day"] == round(2 * 100 / 50 / 14, 3)
    assert (result["raised"], result["tripped"]) == (1, 1)
    assert result["targets_met"] == {"incidents": False, "traps": False, "other": True} and not result["passed"]


def test_the_scorer_passes_a_run_that_meets_every_target() -> None:
    findings = [_finding(1, "ci-a", "2026-11-20T03:10:00Z", "2026-11-20T03:11:00Z"),
                _finding(2, "bob", "2026-11-21T10:05:00Z", "2026-11-21T10:06:00Z", "high")]
    result = score(findings, LABELS, agents=50, days=14)
    assert result["passed"] and result["raised"] == 2 and result["other_count"] == 0


# -- the whole pipeline, as the held-out scenario is run ---------------------------------------------------------
@pytest.mark.slow
def test_org_eval_runs_the_cli_as_the_contract_says_and_scores_every_label(org: Any, tmp_path: Path) -> None:
    scenario, _, _ = org
    out = tmp_path / "score.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "org_eval.py"), str(scenario.root), "--json",
                           str(out)], capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["score"]
    assert len(result["incidents"]) == 10 and len(result["traps"]) == 9
    assert "incidents raised" in proc.stdout and "traps tripped" in proc.stdout
    detectors_seen = {f["detector"] for row in result["incidents"] + result["traps"] for f in row["findings"]}
    detectors_seen |= {f["detector"] for f in result["other"]}
    # the inventory is complete and every agent acts inside it: no scope, identity or expiry findings
    assert not detectors_seen & {"out_of_scope", "unregistered_identity", "expired_agent"}
    assert (scenario.root / "data" / "trailwarden.duckdb").exists()



# -- an interrupted generation ---------------------------------------------------------------------------------
def test_an_interrupted_generation_leaves_no_labels_to_score_it_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """labels.json is written last and an earlier one removed first: a half-written scenario is
    never scored against another scenario's labels, and org_eval says why it refuses it."""
    root = tmp_path / "scenario"
    root.mkdir()
    (root / "labels.json").write_text('{"scenario": {}, "labels": []}\n')

    def killed(*_: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.demo.organisation._write_events", killed)
    with pytest.raises(KeyboardInterrupt):
        generate(root, seed=5, **SMALL)  # type: ignore[arg-type]
    assert not (root / "labels.json").exists()
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "org_eval.py"), str(root)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"org_eval: error: {root} has no labels.json: not a scenario, or its generation " \
                                  "was interrupted (write it with --generate)"


def test_a_change_that_stays_is_a_trap_until_the_scenarios_end(org: Any) -> None:
    """A new region, a rotated key and a new NAT address are still benign days later: a finding
    on them then trips the trap (not "other")."""
    scenario, _, _ = org
    for kind in ("new_region", "key_rotation", "office_nat_change"):
        label = _label(scenario, kind)
        assert _time(label["end"]) == scenario.end, kind


def _address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
