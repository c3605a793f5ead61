"""Role-session lineage (issue 19): every event of a role session traced to the agent that
started the chain, across accounts, without guessing."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from models.inventory import Attributor
from pipeline.ingest.run import ingest_files
from pipeline.store.sessions import link_sessions
from pipeline.store.store import Store
from tests.conftest import write_ndjson

STAGING, PROD, SECURITY = "1111222233334444", "5555666677778888", "9999000011112222"
T0 = datetime(2026, 11, 3, 22, 0, tzinfo=UTC)
_ids = itertools.count(1)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event(identity: dict[str, Any], when: datetime, name: str, **fields: Any) -> dict[str, Any]:
    return {"eventId": f"ev-{next(_ids):06d}", "eventVersion": "1", "eventType": "ApiCall", "eventRW": "Read",
            "eventName": name, "eventSource": "ecs.aliyuncs.com", "serviceName": "Ecs", "eventTime": _iso(when),
            "acsRegion": "cn-hangzhou", "sourceIpAddress": fields.pop("ip", "203.0.113.7"),
            "userAgent": "aliyun-cli/3.0.204", "requestId": f"req-{next(_ids)}", "apiVersion": "2014-05-26",
            "userIdentity": identity, **fields}


def user(name: str, account: str, key: str) -> dict[str, Any]:
    return {"type": "ram-user", "principalId": f"2000{abs(hash(name)) % 10**8}", "accountId": account,
            "accessKeyId": key, "userName": name}


def role(name: str, session: str, account: str, *, key: str | None = "STS.unknown",
         created: datetime | None = None) -> dict[str, Any]:
    ident: dict[str, Any] = {"type": "assumed-role", "principalId": f"3000111:{session}", "accountId": account,
                             "userName": f"{name}:{session}"}
    if key:
        ident["accessKeyId"] = key
    if created:
        ident["sessionContext"] = {"attributes": {"mfaAuthenticated": "false", "creationDate": _iso(created)}}
    return ident


def assume(caller: dict[str, Any], when: datetime, role_account: str, role_name: str, session: str | None, *,
           duration: int | None = None, sts_key: str | None = None, arn: str | None = None,
           ip: str = "203.0.113.7") -> dict[str, Any]:
    params: dict[str, Any] = {"RoleArn": arn or f"acs:ram::{role_account}:role/{role_name}"}
    if session is not None:
        params["RoleSessionName"] = session
    if duration is not None:
        params["DurationSeconds"] = str(duration)
    fields: dict[str, Any] = {"requestParameters": params, "serviceName": "Sts", "eventSource": "sts.aliyuncs.com",
                              "ip": ip}
    if sts_key:
        fields["responseElements"] = {"Credentials": {"AccessKeyId": sts_key, "AccessKeySecret": "s3cr3t",
                                                      "SecurityToken": "tok", "Expiration": _iso(when)}}
    return _event(caller, when, "AssumeRole", **fields)


def load(store: Store, tmp_path: Path, events: list[dict[str, Any]], name: str = "batch",
         attribute: Attributor | None = None) -> None:
    path = write_ndjson(tmp_path / f"{name}-{next(_ids)}.ndjson", events)
    ingest_files(store, [path], attribute or Attributor(None), workers=0, now=T0 + timedelta(days=1))


def links(store: Store) -> dict[str, tuple[str, str | None, str]]:
    """event_id -> (status, session_id, reason)."""
    rows = store.con.execute("SELECT event_id, status, session_id, reason FROM session_links").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def session(store: Store, session_id: str) -> dict[str, Any]:
    cur = store.con.execute("SELECT * FROM role_sessions WHERE session_id = ?", [session_id])
    names = [d[0] for d in cur.description]
    row = cur.fetchall()[0]
    return dict(zip(names, row, strict=True))


def test_a_staging_key_using_a_production_role_is_traced_to_the_staging_user(store: Store, tmp_path: Path) -> None:
    ci = user("ci-deploy", STAGING, "LTAI5tStagingCi")
    call = assume(ci, T0, PROD, "deployer", "ci-1234", sts_key="STS.Prod1")
    used = [_event(role("deployer", "ci-1234", PROD, key="STS.Prod1"), T0 + timedelta(minutes=m), "DeleteInstance")
            for m in (1, 5, 30)]
    load(store, tmp_path, [call, *used])

    report = link_sessions(store)

    assert report.sessions == 1 and report.linked == 3
    got = links(store)
    assert {got[e["eventId"]][:2] for e in used} == {("linked", call["eventId"])}
    assert got[used[0]["eventId"]][2] == "sts-key"
    s = session(store, call["eventId"])
    assert (s["origin_identity"], s["origin_account"], s["origin_status"]) == ("ram-user:ci-deploy", STAGING, "known")
    assert s["chain"] == [f"deployer@{PROD}"]
    assert s["role_account"] == PROD and s["expires"] - s["started"] == timedelta(hours=1)


def test_a_chain_of_two_assumptions_is_followed_to_the_first_agent(store: Store, tmp_path: Path) -> None:
    ci = user("ci-deploy", STAGING, "LTAI5tStagingCi")
    first = assume(ci, T0, STAGING, "hop", "h1", duration=900)
    hop_identity = role("hop", "h1", STAGING, key="STS.Hop", created=T0)
    second = assume(hop_identity, T0 + timedelta(minutes=2), PROD, "admin", "a1")
    act = _event(role("admin", "a1", PROD, key="STS.Admin", created=T0 + timedelta(minutes=2)),
                 T0 + timedelta(minutes=3), "CreateAccessKey")
    load(store, tmp_path, [first, second, act])

    link_sessions(store)

    assert links(store)[act["eventId"]][:2] == ("linked", second["eventId"])
    s = session(store, second["eventId"])
    assert s["caller_session"] == first["eventId"]
    assert (s["origin_identity"], s["origin_status"]) == ("ram-user:ci-deploy", "known")
    assert s["chain"] == [f"hop@{STAGING}", f"admin@{PROD}"]
    assert session(store, first["eventId"])["expires"] - T0 == timedelta(seconds=900)


def test_a_reused_session_name_is_linked_by_creation_time_or_network_and_otherwise_marked_ambiguous(
        store: Store, tmp_path: Path) -> None:
    alice, bob = user("alice", STAGING, "LTAI5tAlice"), user("bob", STAGING, "LTAI5tBob")
    a = assume(alice, T0, PROD, "ops", "ops", ip="198.51.100.1")
    b = assume(bob, T0 + timedelta(minutes=10), PROD, "ops", "ops", ip="192.0.2.9")
    by_created = _event(role("ops", "ops", PROD, key=None, created=T0 + timedelta(minutes=10)),
                        T0 + timedelta(minutes=20), "StopInstance", ip="203.0.113.50")
    by_net = _event(role("ops", "ops", PROD, key=None), T0 + timedelta(minutes=20), "StopInstance", ip="198.51.100.1")
    unknown = _event(role("ops", "ops", PROD, key=None), T0 + timedelta(minutes=21), "StopInstance", ip="203.0.113.50")
    only_a = _event(role("ops", "ops", PROD, key=None), T0 + timedelta(minutes=5), "StopInstance", ip="203.0.113.50")
    load(store, tmp_path, [a, b, by_created, by_net, unknown, only_a])

    link_sessions(store)

    got = links(store)
    assert got[by_created["eventId"]] == ("linked", b["eventId"], "created")
    assert got[by_net["eventId"]] == ("linked", a["eventId"], "window+network")
    assert got[unknown["eventId"]][0] == "ambiguous" and got[unknown["eventId"]][1] is None
    assert "2 sessions" in got[unknown["eventId"]][2]
    assert got[only_a["eventId"]][:2] == ("linked", a["eventId"])  # b had not started yet


def test_a_session_started_before_the_stored_history_says_so(store: Store, tmp_path: Path) -> None:
    ev = _event(role("etl", "nightly", PROD, key="STS.Old", created=T0 - timedelta(hours=3)), T0, "GetObject")
    load(store, tmp_path, [ev])

    report = link_sessions(store)

    status, sid, reason = links(store)[ev["eventId"]]
    assert (status, sid, report.no_session) == ("no-session", None, 1)
    assert "not in the store" in reason and _iso(T0 - timedelta(hours=3)) in reason


def test_an_assume_role_arriving_late_links_the_events_already_stored(store: Store, tmp_path: Path) -> None:
    ci = user("ci-deploy", STAGING, "LTAI5tStagingCi")
    call = assume(ci, T0, PROD, "deployer", "late")
    used = _event(role("deployer", "late", PROD, key=None), T0 + timedelta(minutes=4), "RunInstances")
    load(store, tmp_path, [used])
    link_sessions(store)
    assert links(store)[used["eventId"]][0] == "no-session"

    load(store, tmp_path, [call])
    link_sessions(store)

    assert links(store)[used["eventId"]][:2] == ("linked", call["eventId"])


def test_bad_assume_role_calls_are_kept_and_recorded_as_unlinkable(store: Store, tmp_path: Path) -> None:
    ci = user("ci-deploy", STAGING, "LTAI5tStagingCi")
    nameless = assume(ci, T0, PROD, "deployer", None)
    malformed = assume(ci, T0, PROD, "deployer", "x", arn="arn:aws:iam::123456789012:role/<b>evil</b>")
    load(store, tmp_path, [nameless, malformed])

    report = link_sessions(store)

    assert store.con.execute("SELECT count(*) FROM events WHERE event_name = 'AssumeRole'").fetchall()[0][0] == 2
    assert report.unlinkable == 2
    assert session(store, nameless["eventId"])["reason"] == "the call names no RoleSessionName"
    bad = session(store, malformed["eventId"])
    assert bad["status"] == "unlinkable" and bad["reason"].startswith("malformed role ARN: arn:aws:iam::")


def test_links_are_the_same_run_by_run_or_rebuilt_at_once(store: Store, tmp_path: Path) -> None:
    ci = user("ci-deploy", STAGING, "LTAI5tStagingCi")
    calls = [assume(ci, T0 + timedelta(hours=h), PROD, "deployer", f"run-{h}") for h in range(3)]
    uses = [_event(role("deployer", f"run-{h}", PROD, key=None), T0 + timedelta(hours=h, minutes=1), "RunInstances")
            for h in range(3)]
    for call, use in zip(calls, uses, strict=True):
        load(store, tmp_path, [use])
        load(store, tmp_path, [call])
        link_sessions(store)
    stepwise = links(store)
    assert link_sessions(store).linked == 0  # nothing new: nothing redone

    link_sessions(store, full=True)

    assert links(store) == stepwise
    assert {v[0] for v in stepwise.values()} == {"linked"}


def test_a_finding_on_a_role_session_names_the_agent_behind_it(tmp_path: Path) -> None:
    """End to end: ingest, detect, `findings`: the production role's unregistered activity is
    traced to the staging CI agent that assumed it, in JSON, the table and the Slack message."""
    from pipeline.service.alerting.messages import as_text, incident_message
    from tests.conftest import run_cli

    agents = [{"name": "ci-deployer", "purpose": "deploys", "owner": "platform", "environment": "staging",
               "identities": ["ram-user:ci-deploy"]}]
    (tmp_path / "agents.yaml").write_text(json.dumps({"agents": agents}), encoding="utf-8")
    (tmp_path / "trailwarden.yaml").write_text(
        f"database: {tmp_path / 'store.duckdb'}\ninventory: {tmp_path / 'agents.yaml'}\n", encoding="utf-8")
    night = datetime(2026, 11, 3, 19, 0, tzinfo=UTC)
    ci = user("ci-deploy", STAGING, "LTAI5tStagingCi")
    call = assume(ci, night, PROD, "deployer", "ci-77", sts_key="STS.Prod77")
    used = [_event(role("deployer", "ci-77", PROD, key="STS.Prod77"), night + timedelta(minutes=m), "CreateAccessKey",
                   eventRW="Write") for m in (2, 3)]
    write_ndjson(tmp_path / "events.ndjson", [call, *used])
    config = ["--config", str(tmp_path / "trailwarden.yaml")]

    assert run_cli(*config, "ingest", "--file", str(tmp_path / "events.ndjson"), cwd=tmp_path).returncode == 0
    assert run_cli(*config, "detect", "--since", "2026-11-03T00:00Z", "--until", "2026-11-04T00:00Z",
                   cwd=tmp_path).returncode == 0
    listed = json.loads(run_cli(*config, "findings", "--format", "json", cwd=tmp_path).stdout)
    table = run_cli(*config, "findings", cwd=tmp_path).stdout

    on_role = [f for f in listed if f["agent"] == "role:deployer"]
    assert on_role, listed
    assert {(f["origin_agent"], f["origin_account"]) for f in on_role} == {("ci-deployer", STAGING)}
    assert on_role[0]["chain"] == [f"deployer@{PROD}"]
    assert "role:deployer (via ci-deployer)" in table
    incident = {"id": "inc-1", "agent": "role:deployer", "severity": on_role[0]["severity"], "status": "open"}
    text = as_text(incident_message(incident, on_role, None, "trailwarden replay role:deployer"))
    assert "started by `ci-deployer` in account `1111222233334444`" in text


def test_replay_of_an_agent_shows_what_it_did_through_the_roles_it_assumed(store: Store, tmp_path: Path) -> None:
    """A chain: ci-deploy (staging) assumes hop (staging), hop's session assumes admin (prod), which
    creates a key in prod. ci-deployer's replay has those role events, marked with the roles they
    went through, and its blast radius reaches the production account."""
    from models.accounts import Accounts
    from models.inventory import Inventory
    from pipeline.core.config import Account
    from pipeline.investigate.replay import build_replay, write_replay
    from pipeline.investigate.replay_views import as_text

    ci = user("ci-deploy", STAGING, "LTAI5tStagingCi")
    own = _event(ci, T0 - timedelta(minutes=5), "DescribeInstances")
    first = assume(ci, T0, STAGING, "hop", "h9", duration=900)
    second = assume(role("hop", "h9", STAGING, key="STS.Hop9", created=T0), T0 + timedelta(minutes=2), PROD, "admin", "a9")
    act = _event(role("admin", "a9", PROD, key="STS.Admin9", created=T0 + timedelta(minutes=2)),
                 T0 + timedelta(minutes=3), "CreateAccessKey", eventRW="Write", recipientAccountId=PROD)
    other = _event(role("admin", "someone-else", PROD, key="STS.Other"), T0 + timedelta(minutes=4), "DeleteUser")
    inventory = Inventory.model_validate({"agents": [
        {"name": "ci-deployer", "purpose": "deploys", "owner": "platform", "environment": "staging",
         "identities": ["ram-user:ci-deploy"]}]})
    load(store, tmp_path, [own, first, second, act, other], attribute=Attributor(inventory))
    link_sessions(store)

    window = {"since": T0 - timedelta(hours=1), "until": T0 + timedelta(hours=1)}
    report = build_replay(store, "ci-deployer", inventory, **window)

    timeline = [t for t in report["timeline"] if t["kind"] == "event"]
    assert [t["event_id"] for t in timeline] == [own["eventId"], first["eventId"], second["eventId"], act["eventId"]]
    assert "via" not in timeline[0] and "via" not in timeline[1]
    assert timeline[2]["via"] == [f"hop@{STAGING}"]
    assert timeline[3]["via"] == [f"hop@{STAGING}", f"admin@{PROD}"] and timeline[3]["account"] == PROD
    assert report["summary"]["through_roles"] == 2
    assert {a["value"] for a in report["blast_radius"]["accounts"]} == {STAGING, PROD}
    shown = write_replay(store, "ci-deployer", inventory, None, **window)
    assert f"via hop@{STAGING} > admin@{PROD}: " in as_text(shown)
    accounts = Accounts([Account(id=STAGING, alias="staging"), Account(id=PROD, alias="prod")])
    text = as_text(shown, accounts=accounts)
    assert "via hop@staging > admin@prod: " in text and f"prod ({PROD})" in text
