"""The process's own secrets never reach stderr, logs, the store or Slack - even when an endpoint
echoes the request (URL and headers, credentials included) in its error.

The real SDKs (aliyun-log-python-sdk, the ActionTrail client, slack_sdk) talk to the local fakes of
``tests/fakes``, scripted to fail once with the request quoted in the error message; ``trailwarden
ingest`` and ``trailwarden alert`` run in-process (``cli.main``), and every place error text goes is
then searched for the credential values.
"""

from __future__ import annotations

import io
import json
import logging
import types
from urllib.parse import quote

import duckdb
import pytest
import yaml

import pipeline.cli.main as cli
import pipeline.service.alerting.slack as slack_module
from detectors.base import Finding
from pipeline.core.config import Config
from pipeline.core.errors import ScrubFilter, TerminalError, scrub
from pipeline.detection.findings import save_findings
from pipeline.service.cycle import _notify
from pipeline.store.store import open_store
from tests.alerting.test_slack_delivery import T0
from tests.fakes.lookup_events import FakeLookupEvents
from tests.fakes.slack import FakeSlack
from tests.fakes.sls import FakeSLS

KEY_ID = "LTAI5tOwnKeyId7Qx2mK"
KEY_SECRET = "own-Secret-Value-0123456789"
STS_TOKEN = "STS+own/Token=Value-0123456789abcdef"  # '+', '/', '=' differ once URL-encoded
SLACK_TOKEN = "xoxb-own-bot-token-1234567890"
SECRETS = (KEY_ID, KEY_SECRET, STS_TOKEN, SLACK_TOKEN)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET)
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", STS_TOKEN)
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "TRAILWARDEN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def leaks(text: str) -> list[str]:
    """The credential values (as given or URL-encoded) found in ``text``."""
    return [s for s in SECRETS if s in text or quote(s, safe="") in text]


def main(*args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    return int(exited.value.code or 0)


def test_endpoints_that_echo_the_request_leak_no_credential_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(slack_module, "time", types.SimpleNamespace(sleep=lambda _s: None))  # post retries
    db = tmp_path / "store.duckdb"
    with open_store(db) as store:
        save_findings(store, [Finding(detector="out_of_scope", agent="ci", severity="critical", score=1,
                                      first_seen=T0, last_seen=T0, summary="ci stopped an instance",
                                      event_ids=["e1"], evidence={"kind": "out_of_scope"}, dedup_key="k")], {})
    with FakeSLS("audit", "trail", shards=1) as sls, FakeLookupEvents() as trail, FakeSlack() as slack:
        sls.fail_next("list_shards", 400, "ParameterInvalid", echo=True)
        trail.fail_next(400, "InvalidParameter", echo=True)
        slack.fail_next("chat.postMessage", error="fatal_error", echo=True, times=10)
        config = tmp_path / "trailwarden.yaml"
        config.write_text(yaml.safe_dump({
            "database": str(db),
            "sources": [{"name": "prod", "type": "sls", "endpoint": sls.endpoint, "project": "audit",
                         "logstore": "trail"},
                        {"name": "history", "type": "lookup_events", "region": "cn-hangzhou",
                         "endpoint": trail.endpoint}],
            "slack": {"channel": "#sec-alerts", "base_url": slack.base_url}}), encoding="utf-8")
        assert main("--config", str(config), "ingest") == 1
        assert main("--config", str(config), "alert") == 1
        # the endpoints did receive the credentials, and quoted them back
        sent = [str(r.headers) for r in (*sls.requests, *trail.requests, *slack.requests)]
        assert {KEY_ID, STS_TOKEN, SLACK_TOKEN} <= {s for s in SECRETS if any(s in h for h in sent)}
    out = capsys.readouterr()
    assert leaks(out.out + out.err) == [], out.err
    assert "ParameterInvalid" in out.err and "InvalidParameter" in out.err  # still says what went wrong
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = {
            "runs.error": [r[0] for r in con.execute("SELECT error FROM runs").fetchall()],
            "ingest_state.last_error": [r[0] for r in con.execute("SELECT last_error FROM ingest_state").fetchall()],
            "alerts.last_error": [r[0] for r in con.execute("SELECT last_error FROM alerts").fetchall()],
        }
    finally:
        con.close()
    assert all(stored.values()), stored  # each failure was recorded...
    for where, texts in stored.items():  # ...without a credential
        assert leaks(json.dumps(texts)) == [], (where, texts)
    assert any("request:" in t for t in stored["ingest_state.last_error"])  # the echo itself was kept


def test_scrub_replaces_each_credential_as_given_and_url_encoded():
    text = (f"GET /?AccessKeyId={KEY_ID}&SecurityToken={quote(STS_TOKEN, safe='')} "
            f"x-acs-security-token: {STS_TOKEN} secret {KEY_SECRET} Bearer {SLACK_TOKEN}")
    clean = scrub(text)
    assert leaks(clean) == []
    assert "<ALIBABA_CLOUD_ACCESS_KEY_ID>" in clean and "GET /?AccessKeyId=" in clean
    # ordinary text is left alone: `key: message` is how every usage error reads
    assert scrub("bad.yaml: slack.token: unknown key") == "bad.yaml: slack.token: unknown key"


def test_an_error_made_with_a_credential_in_it_is_scrubbed_when_it_is_made():
    exc = TerminalError(f"SLS refused the request (Denied: token {STS_TOKEN} is not valid)")
    assert leaks(str(exc)) == [] and "<ALIBABA_CLOUD_SECURITY_TOKEN>" in str(exc)


def test_log_lines_and_tracebacks_through_the_cli_handler_are_scrubbed():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubFilter())
    logger = logging.getLogger("trailwarden.test-secrets")
    logger.addHandler(handler)
    try:
        logger.error("request failed: %s", {"Authorization": f"Bearer {SLACK_TOKEN}", "token": STS_TOKEN})
        try:
            raise RuntimeError(f"signature {KEY_ID}:{KEY_SECRET}")
        except RuntimeError:
            logger.exception("step failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "request failed" in text and "RuntimeError" in text
    assert leaks(text) == [], text


def test_the_service_health_warning_posted_to_slack_is_scrubbed():
    with FakeSlack() as slack:
        config = Config.model_validate({"slack": {"channel": "#sec-alerts", "base_url": slack.base_url}})
        _notify(config, f"step ingest failed 3 cycles: SLS said x-acs-security-token={STS_TOKEN} KeyId {KEY_ID}")
        posted = [r.raw.decode() for r in slack.posts]
    assert posted and "step ingest failed" in posted[0]
    assert leaks(" ".join(posted)) == []



def test_a_finding_stored_with_secrets_before_redaction_shows_none_in_findings_or_slack(tmp_path, capsys):
    """Stores written by earlier versions hold evidence as detected; what leaves is redacted."""
    from pipeline.service.alerting.outbox import deliver, enqueue
    from pipeline.service.alerting.slack import SlackSender
    from tests.alerting.test_slack_delivery import INVENTORY

    db = tmp_path / "store.duckdb"
    raw = {"kind": "escalation", "request_parameters": [
        {"UserName": "bob", "LoginProfile": {"Password": "old-nested-pw"}, "Body": "password=old-body-pw"}]}
    with open_store(db) as store:
        save_findings(store, [Finding(detector="privilege_escalation", agent="ci-deployer", severity="critical",
                                      score=1, first_seen=T0, last_seen=T0, summary="ci gave bob a console login",
                                      event_ids=["e1"], evidence={"kind": "escalation"}, dedup_key="k")], {})
        store.con.execute("UPDATE findings SET evidence = ?", [json.dumps(raw)])  # as an older version stored it
    assert main("--db", str(db), "findings", "--format", "json") == 0
    listed = capsys.readouterr().out
    assert "bob" in listed and "old-nested-pw" not in listed and "old-body-pw" not in listed
    with FakeSlack() as slack, open_store(db) as store:
        enqueue(store, "#sec-alerts", "medium")
        report = deliver(store, SlackSender(SLACK_TOKEN, "#sec-alerts", slack.base_url, sleep=lambda _s: None),
                         INVENTORY, lambda agent, since: f"trailwarden replay {agent}", sleep=lambda _s: None)
        posted = " ".join(r.raw.decode() for r in slack.posts)
    assert report.alerts_sent == 1 and "bob" in posted
    assert "old-nested-pw" not in posted and "old-body-pw" not in posted
