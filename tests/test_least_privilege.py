"""``trailwarden least-privilege`` on the demo's month: granted against used, and a suggested
policy that is valid, still allows every call the agent was allowed to make, and allows nothing
the original policy did not nor anything the agent never did.

The suggestion is checked the way a user would check it: fed back to ``trailwarden policy
simulate --batch`` with the agent's observed calls (built from the store as the ``out_of_scope``
detector builds RAM requests) and with probes it must refuse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from models.inventory import Attributor, Inventory, load_inventory
from models.mapping import CallerFacts, CallFacts, is_authorized_call, requests
from models.policy import Decision, Request, compile_policy, evaluate
from pipeline.ingest.run import ingest_files
from pipeline.investigate.least_privilege import least_privilege
from pipeline.store.store import Store, open_store
from tests.conftest import ROOT, run_cli, write_ndjson

INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")
AGENTS = [a.name for a in INVENTORY.agents]
DAYS = 30


@dataclass
class Agent:
    result: dict[str, Any]  # the CLI's JSON
    observed: list[Request]  # distinct RAM requests of its calls in the window RAM did not refuse
    probes: dict[str, list[Request]] = field(default_factory=dict)  # what the suggestion must refuse
    original: dict[str, str] = field(default_factory=dict)  # request id -> decision
    suggested: dict[str, str] = field(default_factory=dict)


@dataclass
class Demo:
    db: Path
    since: datetime
    agents: dict[str, Agent]


def _condition_keys(docs: list[dict[str, Any]]) -> set[str]:
    return {key.lower() for doc in docs for st in _statements(doc)
            for keys in (st.get("Condition") or {}).values() for key in keys}


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    st = doc.get("Statement") or []
    return [st] if isinstance(st, dict) else list(st)


def _observed(db: Path, agent: str, since: datetime, keys: set[str]) -> list[Request]:
    """One RAM request per resource of each call RAM did not refuse (succeeded, or failed for
    another reason: throttled, a bad parameter), the context reduced to the condition keys the
    policies test, so that equal requests are asked once."""
    with open_store(db, read_only=True) as store:
        rows = store.con.execute(
            """
            SELECT DISTINCT event_type, event_name, service_name, service_code, acs_region,
                   coalesce(recipient_account_id, account_id), referenced_resources, resource_type,
                   resource_name, request_parameters::VARCHAR,
                   event_time, source_ip, ip_version, vpc_id, mfa_authenticated, access_key_id,
                   secure_transport, identity_type, account_id, user_name, role_name, user_agent
            FROM events WHERE agent = ? AND event_time >= ?
              AND (error_code IS NULL OR NOT regexp_matches(error_code, '^(NoPermission|Forbidden|AccessDenied)'))
            """, [agent, since]).fetchall()
    out: dict[tuple[str, str, str], Request] = {}
    for row in rows:
        if not is_authorized_call(row[0], row[2]):
            continue
        for req in requests(CallFacts(*row[:10]), CallerFacts(*row[10:]), frozenset(keys)):
            ctx = {k: v for k, v in req.context.items() if k.lower() in keys}
            out.setdefault((req.action, req.resource, json.dumps(ctx, sort_keys=True)),
                           Request(req.action, req.resource, ctx, req.unknown))
    return list(out.values())


def _instance(pattern: str) -> str:
    """A concrete string a policy pattern matches (``ecs:Describe*`` -> ``ecs:DescribeTwProbe``)."""
    return pattern.replace("*", "TwProbe").replace("?", "X")


def _probes(agent: Agent, docs: list[dict[str, Any]]) -> dict[str, list[Request]]:
    """Requests the suggestion must not allow, with the context of a call the agent made."""
    ctx = _usual_context(agent.result["agent"], agent.observed)
    result = agent.result
    unused = [Request(_instance(p), _instance(_resource_of(p, docs)), ctx) for p in result["unused_grants"]]
    not_granted = [Request(u["action"], req.resource, ctx) for u in result["used"] if not u["granted"]
                   for req in agent.observed if req.action == u["action"]]
    elsewhere = [Request(u["action"], f"acs:{u['action'].split(':')[0]}:cn-hangzhou:{account}:tw-probe/never-touched",
                         ctx) for u in result["used"] for account in {r.resource.split(":")[3] for r in agent.observed}]
    return {"unused": unused, "not_granted": not_granted, "elsewhere": elsewhere}


def _usual_context(name: str, observed: list[Request]) -> Any:
    """The context of a call from the agent's declared networks (any call if it declares none, or
    if its policies do not test the source address)."""
    declared = INVENTORY.agent(name)
    networks = declared.source_ips if declared and declared.source_ips else None
    for req in observed:
        ip = req.context.get("acs:SourceIp")
        if networks is None or ip is None or any(ip_address(ip) in net for net in networks):
            return req.context
    raise AssertionError(f"{name} never called from its declared networks")


def _resource_of(pattern: str, docs: list[dict[str, Any]]) -> str:
    for doc in docs:
        for st in _statements(doc):
            actions = st.get("Action") or []
            if st.get("Effect") == "Allow" and pattern in ([actions] if isinstance(actions, str) else actions):
                resource = st.get("Resource", "*")
                return resource if isinstance(resource, str) else resource[0]
    raise AssertionError(f"no Allow statement grants {pattern}")


def _batch_lines(name: str, agent: Agent, docs: list[dict[str, Any]]) -> Iterator[str]:
    groups = {"observed": agent.observed, **agent.probes}
    for which, policies in (("original", docs), ("suggested", [agent.result["suggested_policy"]])):
        for group, reqs in groups.items():
            for i, req in enumerate(reqs):
                yield json.dumps({"id": f"{name}|{which}|{group}|{i}", "policies": policies,
                                  "request": {"action": req.action, "resource": req.resource,
                                              "context": dict(req.context)}})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_checkout: Path) -> Demo:
    folder = tmp_path_factory.mktemp("least-privilege")
    db = demo_checkout / "data" / "trailwarden.duckdb"  # the demo's month: DAYS days
    since = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    agents: dict[str, Agent] = {}
    lines: list[str] = []
    for name in AGENTS:
        result = run_cli("least-privilege", name, "--since", since.isoformat(), "--format", "json", "--db", str(db))
        assert result.returncode == 0, result.stderr
        docs = _declared(name)
        agent = Agent(json.loads(result.stdout), _observed(db, name, since, _condition_keys(docs)))
        assert agent.observed, f"{name} made no call in the demo's month"
        agent.probes = _probes(agent, docs)
        agents[name] = agent
        lines.extend(_batch_lines(name, agent, docs))
    for line in _simulate(folder, db, lines):
        answer = json.loads(line)
        assert "decision" in answer, answer
        name, which, group, i = answer["id"].split("|")
        getattr(agents[name], which)[f"{group}|{i}"] = answer["decision"]
    return Demo(db, since, agents)


def _simulate(folder: Path, db: Path, lines: list[str]) -> list[str]:
    batch = folder / "requests.jsonl"
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli("policy", "simulate", "--batch", str(batch), "--db", str(db))
    assert result.returncode == 0, result.stderr
    answers = result.stdout.splitlines()
    assert len(answers) == len(lines)
    return answers


def _declared(name: str) -> list[dict[str, Any]]:
    agent = INVENTORY.agent(name)
    assert agent is not None
    return agent.policies


# -- granted vs used ---------------------------------------------------------------------------------
def test_granted_vs_used_for_the_ci_deployer(demo):
    ci = demo.agents["ci-deployer"]
    result = ci.result
    declared = [p for doc in _declared("ci-deployer") for st in _statements(doc) if st["Effect"] == "Allow"
                for p in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])]
    assert [g["pattern"] for g in result["granted"]] == declared
    used = {u["action"]: u for u in result["used"]}
    observed = {r.action for r in ci.observed}
    assert set(used) == observed, "every action it called and was not refused, and only those"
    for grant in result["granted"]:
        assert grant["unused"] == (not grant["used_actions"])
        assert set(grant["used_actions"]) <= observed
        assert grant["calls"] == sum(used[a]["calls"] for a in grant["used_actions"])
    assert result["unused_grants"] == [g["pattern"] for g in result["granted"] if g["unused"]]
    assert result["unused_grants"], "the demo's CI key never uses some of its grants"
    assert used["ram:CreateUser"]["granted"] is False  # the stolen key's admin user: never granted
    assert used["ecs:RunInstances"]["granted"] is True
    assert ci.probes["unused"] and ci.probes["not_granted"]  # the suggestion has something to refuse


def test_table_marks_unused_grants(demo):
    result = run_cli("least-privilege", "ci-deployer", "--since", demo.since.isoformat(), "--db", str(demo.db))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    for pattern in demo.agents["ci-deployer"].result["unused_grants"]:
        assert rows[pattern].rstrip().endswith("UNUSED")
    assert "ram:CreateUser" in result.stdout.split("Used but not granted")[1].splitlines()[0]
    assert json.loads(result.stdout[result.stdout.index("{", result.stdout.index("Suggested policy")):]) == \
        demo.agents["ci-deployer"].result["suggested_policy"]


# -- the suggested policy ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", AGENTS)
def test_suggested_policy_is_valid(demo, name):
    compile_policy(demo.agents[name].result["suggested_policy"], name)  # raises PolicyError if not


@pytest.mark.parametrize("name", AGENTS)
def test_suggested_policy_allows_every_call_the_agent_was_allowed_to_make(demo, name):
    agent = demo.agents[name]
    observed = [f"observed|{i}" for i in range(len(agent.observed))]
    allowed = [k for k in observed if agent.original[k] == Decision.ALLOW]
    assert allowed, f"{name}: none of its calls is within its declared policies"
    refused = [agent.observed[int(k.split("|")[1])] for k in allowed if agent.suggested[k] != Decision.ALLOW]
    assert not refused, f"{name}: the suggestion would break calls it made: {refused[:3]}"


@pytest.mark.parametrize("name", AGENTS)
def test_suggested_policy_allows_nothing_broader(demo, name):
    agent = demo.agents[name]
    asked = {f"{group}|{i}": req for group, reqs in {"observed": agent.observed, **agent.probes}.items()
             for i, req in enumerate(reqs)}
    broader = [(asked[key].action, asked[key].resource) for key, decision in agent.suggested.items()
               if decision == Decision.ALLOW and agent.original[key] != Decision.ALLOW]
    assert not broader, f"{name}: the suggestion allows what the original does not: {broader[:5]}"
    for i, req in enumerate(agent.probes["unused"]):
        assert agent.original[f"unused|{i}"] == Decision.ALLOW, req  # the probe is inside the old grant...
        assert agent.suggested[f"unused|{i}"] == Decision.IMPLICIT_DENY, req  # ...and outside the new one
    for i, req in enumerate(agent.probes["not_granted"]):
        assert agent.suggested[f"not_granted|{i}"] != Decision.ALLOW, req
    suggested_actions = {a for st in agent.result["suggested_policy"]["Statement"] if st["Effect"] == "Allow"
                         for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    assert suggested_actions == {u["action"] for u in agent.result["used"] if u["granted"]}


def test_allow_conditions_and_calls_without_a_resource_are_kept(store: Store, tmp_path, make_event):
    """Narrowing keeps what made a grant safe (its Condition) and what a call needed (no resource)."""
    inventory = Inventory.model_validate({"agents": [{
        "name": "rebooter", "purpose": "reboots", "owner": "sre", "environment": "prod",
        "identities": ["ram-user:ci-deploy"],
        "policies": [{"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": ["ecs:RebootInstance", "ecs:Describe*"], "Resource": "*",
             "Condition": {"IpAddress": {"acs:SourceIp": "203.0.113.0/24"}}}]}]}]})
    when = datetime.now(UTC) - timedelta(days=1)
    events = [make_event(1, eventName="RebootInstance", eventRW="Write", eventTime=f"{when:%Y-%m-%dT%H:%M:%SZ}",
                         referencedResources={"ACS::ECS::Instance": ["i-bp1one"]}),
              make_event(2, eventName="RebootInstance", eventRW="Write",
                         eventTime=f"{when + timedelta(minutes=1):%Y-%m-%dT%H:%M:%SZ}")]
    ingest_files(store, [write_ndjson(tmp_path / "e.jsonl", events)], Attributor(inventory))
    suggestion = least_privilege(store, inventory, "rebooter")["suggested_policy"]
    compile_policy(suggestion)
    account = events[0]["userIdentity"]["accountId"]

    def decide(resource: str, ip: str) -> Decision:
        return evaluate([suggestion], Request("ecs:RebootInstance", resource, {"acs:SourceIp": ip})).decision

    assert decide(f"acs:ecs:cn-hangzhou:{account}:instance/i-bp1one", "203.0.113.7") == Decision.ALLOW
    assert decide(f"acs:ecs:cn-hangzhou:{account}:*", "203.0.113.7") == Decision.ALLOW  # the unnamed call
    assert decide(f"acs:ecs:cn-hangzhou:{account}:instance/i-bp1one", "198.51.100.1") != Decision.ALLOW


def test_a_call_that_failed_for_another_reason_than_permission_is_still_used(store: Store, tmp_path, make_event):
    """Throttled or badly parameterised, the call still needed its permission; a call RAM refused
    did not show one, and stays out of the suggestion."""
    inventory = Inventory.model_validate({"agents": [{
        "name": "operator", "purpose": "operates", "owner": "sre", "environment": "prod",
        "identities": ["ram-user:ci-deploy"],
        "policies": [{"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": ["ecs:DescribeInstances", "ecs:StopInstance", "ecs:DescribeRegions",
                                           "ecs:RebootInstance"], "Resource": "*"}]}]}]})
    when = datetime.now(UTC) - timedelta(days=1)
    calls = [("DescribeInstances", ""), ("StopInstance", "Throttling.User"), ("DescribeRegions", "InvalidParameter"),
             ("RebootInstance", "NoPermission"), ("RebootInstance", "Forbidden.RAM")]
    events = [make_event(i, eventName=name, errorCode=code,
                         eventTime=f"{when + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ}")
              for i, (name, code) in enumerate(calls)]
    ingest_files(store, [write_ndjson(tmp_path / "e.jsonl", events)], Attributor(inventory))
    result = least_privilege(store, inventory, "operator")
    used = {u["action"]: u for u in result["used"]}
    assert set(used) == {"ecs:DescribeInstances", "ecs:StopInstance", "ecs:DescribeRegions"}
    assert (used["ecs:StopInstance"]["calls"], used["ecs:StopInstance"]["failed"]) == (1, 1)
    assert result["unused_grants"] == ["ecs:RebootInstance"]
    [statement] = result["suggested_policy"]["Statement"]
    assert sorted(statement["Action"]) == ["ecs:DescribeInstances", "ecs:DescribeRegions", "ecs:StopInstance"]


# -- who can be asked --------------------------------------------------------------------------------
def test_an_identity_of_an_inventory_agent_is_that_agent(demo):
    result = run_cli("least-privilege", "ram-user:ci-deploy", "--since", demo.since.isoformat(), "--format", "json",
                     "--db", str(demo.db))
    assert result.returncode == 0, result.stderr
    assert "ram-user:ci-deploy is an identity of agent ci-deployer" in result.stderr
    by_identity, by_name = json.loads(result.stdout), demo.agents["ci-deployer"].result
    assert by_identity["agent"] == "ci-deployer"
    assert by_identity["suggested_policy"] == by_name["suggested_policy"] and by_identity["used"] == by_name["used"]


@pytest.mark.parametrize("agent", ["no-such-agent", "ram-user:ops-debug"])
def test_an_agent_outside_the_inventory_exits_2_naming_it(demo, agent):
    result = run_cli("least-privilege", agent, "--db", str(demo.db))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and agent in lines[0]


def test_an_agent_with_no_allowed_call_gets_no_policy_but_advice(tmp_path, make_event):
    """Nothing to keep: no (invalid) empty policy, but the advice to detach or retire."""
    agents = [{"name": "idle-bot", "purpose": "unused", "owner": "sre", "environment": "prod",
               "identities": ["ram-user:idle-bot"],
               "policies": [{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "oss:GetObject",
                                                            "Resource": "*"}]}]}]
    (tmp_path / "agents.yaml").write_text(json.dumps({"agents": agents}))
    (tmp_path / "tw.yaml").write_text(json.dumps({"database": str(tmp_path / "s.duckdb"),
                                                  "inventory": str(tmp_path / "agents.yaml")}))
    when = datetime.now(UTC) - timedelta(days=3)
    refused = make_event(1, eventTime=f"{when:%Y-%m-%dT%H:%M:%SZ}", errorCode="Forbidden.RAM",
                         userIdentity={**make_event()["userIdentity"], "userName": "idle-bot", "accessKeyId": ""})
    ingest = run_cli("--config", str(tmp_path / "tw.yaml"), "ingest", "--file",
                     str(write_ndjson(tmp_path / "e.jsonl", [refused])))
    assert ingest.returncode == 0, ingest.stderr
    as_json = run_cli("--config", str(tmp_path / "tw.yaml"), "least-privilege", "idle-bot", "--days", "7",
                      "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["suggested_policy"] is None and result["unused_grants"] == ["oss:GetObject"]
    table = run_cli("--config", str(tmp_path / "tw.yaml"), "least-privilege", "idle-bot")
    assert "nothing to keep" in table.stdout and "Suggested policy" not in table.stdout
    short = run_cli("--config", str(tmp_path / "tw.yaml"), "least-privilege", "idle-bot", "--days", "1",
                    "--format", "json")
    window = json.loads(short.stdout)["window"]
    span = datetime.fromisoformat(window["until"].replace("Z", "+00:00")) - datetime.fromisoformat(
        window["since"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < span <= timedelta(days=1, seconds=5)
