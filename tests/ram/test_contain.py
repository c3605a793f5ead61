"""``trailwarden contain``: a plan that changes nothing, evidence first, every call recorded before
the next, a re-run after a scripted failure or a kill -9 that finishes the same containment, and
an undo that reverses exactly what was done, all through the real SDK against the fake RAM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from detectors.base import Finding
from models.inventory import load_inventory
from pipeline.core.errors import TerminalError
from pipeline.detection.findings import save_findings
from pipeline.investigate.replay import export_digest
from pipeline.ram import contain as playbook
from pipeline.ram.snapshots import save_snapshot
from pipeline.store.store import Store, open_store
from pipeline.triage.lifecycle import status_history
from tests.conftest import ROOT, assert_one_line_error, run_cli
from tests.fakes.ram import FakeRam, RamFakeProcess, credentials_env
from tests.ram.conftest import DEMO_SEED, demo_snapshot, write_config

INVENTORY = load_inventory(ROOT / "config" / "agents.yaml")
DENY = f"Custom/{playbook.DENY_POLICY}"
WRITES = {"CreatePolicy", "UpdateAccessKey", "AttachPolicyToUser", "AttachPolicyToRole", "DetachPolicyFromUser",
          "DetachPolicyFromRole"}


def _plan(store: Store, api: Any, agent: str, tmp_path: Path) -> playbook.Containment:
    return playbook.plan(store, api, INVENTORY, agent, None, evidence_dir=tmp_path / "evidence")


def _contain(store: Store, api: Any, agent: str, tmp_path: Path) -> playbook.Containment:
    return playbook.carry_out(store, api, INVENTORY, _plan(store, api, agent, tmp_path), by="bob", reason="INC-1")


def _steps(store: Store) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in store.con.execute(  # type: ignore[misc]
        "SELECT action, target, status FROM containment_steps ORDER BY id").fetchall()]


def _open_finding(store: Store, agent: str) -> str:
    now = datetime.now(UTC)
    finding = Finding(detector="new_source", agent=agent, severity="high", score=0.8, first_seen=now - timedelta(hours=1),
                      last_seen=now, summary=f"{agent}: a new network", event_ids=["e1"], evidence={}, dedup_key="k")
    save_findings(store, [finding], {"new_source": timedelta(hours=24)}, None)
    return finding.id


def test_the_plan_changes_nothing(store: Store, fake_ram: FakeRam, api_for: Callable[..., Any], tmp_path: Path):
    before = fake_ram.state()
    planned = _plan(store, api_for(fake_ram), "ci-deployer", tmp_path)
    assert [(s.action, s.target, s.status) for s in planned.steps] == [
        ("write_evidence", str(tmp_path / "evidence" / "ci-deployer-{containment}.json"), "planned"),
        ("create_deny_policy", f"policy/{playbook.DENY_POLICY}", "planned"),
        ("deactivate_key", "key/LTAI5tCiDeploy7Qx2mK", "planned"),
        ("attach_deny", "user/ci-deploy", "planned"),
    ]
    assert planned.notes == []  # the agent's access-key: identity is a key of its user
    assert fake_ram.state() == before and not WRITES & set(fake_ram.actions())
    assert not (tmp_path / "evidence").exists()


def test_execute_writes_the_evidence_first_and_undo_reverses_exactly_that(
        store: Store, fake_ram: FakeRam, api_for: Callable[..., Any], tmp_path: Path):
    fake_ram.keys["LTAI5tCiDeployOld0000"] = {"AccessKeyId": "LTAI5tCiDeployOld0000", "user": "ci-deploy",
                                              "Status": "Inactive", "CreateDate": "2025-01-01T00:00:00Z",
                                              "last_used": None}
    before = fake_ram.state()
    finding = _open_finding(store, "ci-deployer")
    done = _contain(store, api_for(fake_ram), "ci-deployer", tmp_path)
    assert done.status == "contained" and done.id is not None and done.id.startswith("ctn-")
    after = fake_ram.state()
    assert after["keys"] == {**before["keys"], "LTAI5tCiDeploy7Qx2mK": "Inactive"}
    assert after["user_policies"]["ci-deploy"] == sorted([*before["user_policies"]["ci-deploy"], DENY])
    assert json.loads(after["policies"][DENY]) == playbook.DENY_DOCUMENT
    # the evidence: the replay export, whose own SHA-256 checks out, written before any RAM write
    evidence = json.loads(Path(str(done.evidence)).read_text(encoding="utf-8"))
    assert evidence["agent"] == "ci-deployer" and export_digest(evidence) == evidence["sha256"] == done.evidence_sha256
    assert [a for a, _, _ in _steps(store)] == ["write_evidence", "create_deny_policy", "deactivate_key", "attach_deny"]
    assert [s for _, _, s in _steps(store)] == ["done"] * 4
    assert [a for a in fake_ram.actions() if a in WRITES] == ["CreatePolicy", "UpdateAccessKey", "AttachPolicyToUser"]
    [note] = [h for h in status_history(store, finding) if h["new_status"] == "contained"]
    assert note["changed_by"] == "bob" and done.id in note["reason"] and "INC-1" in note["reason"]

    undone = playbook.undo(store, api_for(fake_ram), INVENTORY, "ci-deployer", by="bob", reason="rotated")
    assert undone.status == "undone"
    assert [(s.action, s.target, s.status) for s in undone.steps] == [
        ("detach_deny", "user/ci-deploy", "done"), ("reactivate_key", "key/LTAI5tCiDeploy7Qx2mK", "done")]
    restored = fake_ram.state()
    assert restored["keys"] == before["keys"]  # the key that was already inactive stays so
    assert {k: v for k, v in restored.items() if k != "policies"} == {k: v for k, v in before.items() if k != "policies"}
    assert set(restored["policies"]) == {*before["policies"], DENY}  # kept, detached, for the next time
    assert [h["new_status"] for h in status_history(store, finding)] == ["contained", "uncontained"]
    again = playbook.undo(store, api_for(fake_ram), INVENTORY, "ci-deployer", by="bob", reason="twice")
    assert again.status == "nothing" and fake_ram.state() == restored


def test_a_failed_call_is_recorded_the_rest_runs_and_a_rerun_finishes(
        store: Store, fake_ram: FakeRam, api_for: Callable[..., Any], tmp_path: Path):
    fake_ram.fail_next("NoPermission", action="AttachPolicyToUser")
    fake_ram.fail_next("Throttling.User", action="UpdateAccessKey", times=2)  # retried, then fine
    api = api_for(fake_ram)
    first = _contain(store, api, "ci-deployer", tmp_path)
    assert first.status == "failed" and [s.target for s in first.failed] == ["user/ci-deploy"]
    assert "NoPermission" in str(first.failed[0].result)
    assert len(api.waits) == 2 and fake_ram.state()["keys"]["LTAI5tCiDeploy7Qx2mK"] == "Inactive"
    assert "ctn-" in str(first.id) and _steps(store)[-1] == ("attach_deny", "user/ci-deploy", "failed")

    second = _contain(store, api, "ci-deployer", tmp_path)
    assert (second.id, second.status, second.evidence) == (first.id, "contained", first.evidence)
    assert [(s.action, s.status) for s in second.steps] == [
        ("write_evidence", "skipped"), ("create_deny_policy", "skipped"), ("deactivate_key", "skipped"),
        ("attach_deny", "done")]
    assert DENY in fake_ram.state()["user_policies"]["ci-deploy"]
    assert [a for a in fake_ram.actions(ok_only=True) if a in WRITES] == [
        "CreatePolicy", "UpdateAccessKey", "AttachPolicyToUser"]  # nothing done twice


def test_a_deny_policy_someone_else_attached_is_left_by_undo(store: Store, fake_ram: FakeRam,
                                                              api_for: Callable[..., Any], tmp_path: Path):
    _contain(store, api_for(fake_ram), "etl-pipeline", tmp_path)
    playbook.undo(store, api_for(fake_ram), INVENTORY, "etl-pipeline", by="bob", reason="drill over")
    fake_ram.roles["EtlRole"]["policies"].append(["Custom", playbook.DENY_POLICY])  # an admin did it by hand
    planned = _plan(store, api_for(fake_ram), "etl-pipeline", tmp_path)
    assert [(s.action, s.status) for s in planned.steps][1:] == [("create_deny_policy", "already"),
                                                                 ("attach_deny", "already")]
    playbook.carry_out(store, api_for(fake_ram), INVENTORY, planned, by="bob", reason="again")
    undone = playbook.undo(store, api_for(fake_ram), INVENTORY, "etl-pipeline", by="bob", reason="over")
    assert undone.steps == [] and DENY in fake_ram.state()["role_policies"]["EtlRole"]


def test_a_policy_named_like_the_deny_policy_that_allows_is_refused(store: Store, fake_ram: FakeRam,
                                                                     api_for: Callable[..., Any], tmp_path: Path):
    fake_ram.policies[DENY] = {"PolicyName": playbook.DENY_POLICY, "PolicyType": "Custom", "DefaultVersion": "v1",
                               "document": json.dumps({"Version": "1", "Statement": [
                                   {"Effect": "Allow", "Action": "*", "Resource": "*"}]})}
    with pytest.raises(TerminalError, match="not deny-all"):
        _plan(store, api_for(fake_ram), "ci-deployer", tmp_path)


def test_an_access_key_whose_user_is_unknown_is_said_and_fails_the_run(
        store: Store, fake_ram: FakeRam, api_for: Callable[..., Any], tmp_path: Path):
    del fake_ram.keys["LTAI5tCiDeploy7Qx2mK"]  # the inventory's key is no key of ci-deploy's any more
    done = _contain(store, api_for(fake_ram), "ci-deployer", tmp_path)
    assert done.status == "failed" and "access-key:LTAI5tCiDeploy7Qx2mK" in done.notes[0]
    # with a snapshot that knows the key's user, that user is contained too
    save_snapshot(store, demo_snapshot(), source="demo")
    users, _, loose = playbook.principals(INVENTORY.agent("ci-deployer"), demo_snapshot())  # type: ignore[arg-type]
    assert (users, loose) == (["ci-deploy"], [])


# -- through the CLI, the fake in its own process -----------------------------------------------------------
def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", str(config), *args, env=credentials_env())


@pytest.mark.slow
def test_the_command_refuses_what_it_must_and_says_why(tmp_path: Path):
    with RamFakeProcess(DEMO_SEED) as fake:
        config = write_config(tmp_path, fake.endpoint)
        assert_one_line_error(_cli(config, "contain", "nobody"), 2, "not an inventory agent: nobody")
        line = assert_one_line_error(_cli(config, "contain", "monitor-readonly", "--execute", "--reason", "x"), 2,
                                     "protected", "--force")
        assert "so you don't disable the monitoring that would see the next incident" in line
        assert_one_line_error(_cli(config, "contain", "ci-deployer", "--execute"), 2, "--reason")
        nothing = _cli(config, "contain", "ci-deployer", "--undo", "--reason", "x")
        assert nothing.returncode == 0 and "nothing to undo for ci-deployer" in nothing.stdout
        forced = _cli(config, "contain", "monitor-readonly", "--force")
        assert forced.returncode == 0 and "containment plan for monitor-readonly" in forced.stdout
        assert not WRITES & {c["action"] for c in fake.calls()}


@pytest.mark.slow
def test_a_kill_mid_containment_then_a_rerun_then_undo(tmp_path: Path):
    with RamFakeProcess(DEMO_SEED) as fake:
        config = write_config(tmp_path, fake.endpoint)
        before = fake.state()
        plan = _cli(config, "contain", "ci-deployer")
        assert plan.returncode == 0 and "nothing was changed" in plan.stdout, plan.stderr
        assert "set AccessKey LTAI5tCiDeploy7Qx2mK of user/ci-deploy to Inactive" in plan.stdout
        fake.hang_next("AttachPolicyToUser")  # applied, then no answer: the client dies not knowing
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config), "contain", "ci-deployer",
                                 "--execute", "--reason", "INC-7"], cwd=ROOT, env={**_env(), **credentials_env()},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        try:
            while "AttachPolicyToUser" not in {c["action"] for c in fake.calls()}:
                assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        with open_store(tmp_path / "tw.duckdb", read_only=True) as store:
            assert _steps(store)[-1] == ("attach_deny", "user/ci-deploy", "calling")  # recorded before the call
        rerun = _cli(config, "contain", "ci-deployer", "--execute", "--reason", "INC-7")
        assert rerun.returncode == 0, rerun.stderr
        assert "ci-deployer contained" in rerun.stdout and "[done before]" in rerun.stdout
        contained = fake.state()
        assert contained["keys"]["LTAI5tCiDeploy7Qx2mK"] == "Inactive"
        assert contained["user_policies"]["ci-deploy"].count(DENY) == 1
        undo = _cli(config, "contain", "ci-deployer", "--undo", "--reason", "INC-7 closed")
        assert undo.returncode == 0 and "undone" in undo.stdout, undo.stderr
        restored = fake.state()
        assert {k: v for k, v in restored.items() if k != "policies"} == {k: v for k, v in before.items() if k != "policies"}


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("TRAILWARDEN_CONFIG", "COLUMNS")}


def test_the_containment_is_said_in_the_findings_slack_thread(store: Store, fake_ram: FakeRam,
                                                               api_for: Callable[..., Any], tmp_path: Path):
    from pipeline.service.alerting.outbox import deliver, enqueue
    from pipeline.service.alerting.slack import SlackSender
    from tests.fakes.slack import FakeSlack

    finding = _open_finding(store, "ci-deployer")
    with FakeSlack() as slack:
        sender = SlackSender("xoxb-test", "#sec-alerts", slack.base_url, pace=0)
        enqueue(store, "#sec-alerts", "medium")
        deliver(store, sender, INVENTORY, sleep=lambda _s: None)
        [alert] = slack.top_level()
        done = _contain(store, api_for(fake_ram), "ci-deployer", tmp_path)
        enqueue(store, "#sec-alerts", "medium")
        deliver(store, sender, INVENTORY, sleep=lambda _s: None)
        [reply] = slack.replies(alert.ts)
    assert "contained by bob" in str(reply.text).lower() and finding in json.dumps(reply.blocks)
    assert done.id is not None and done.id in json.dumps(reply.blocks)
