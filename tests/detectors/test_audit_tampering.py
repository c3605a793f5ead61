"""audit_tampering: stopping, deleting or weakening the trail fires, whatever the scope says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from detectors.audit_tampering import AuditTampering
from models.inventory import Inventory
from pipeline.core.config import Config
from tests.conftest import REAL_ATTACKS
from tests.detectors import harness

ADMIN = harness.inventory(harness.agent("admin", "ram-user:ci-deploy", policies=[
    {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}]))
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)


def _score(store, events, detector=None, inventory=ADMIN):
    harness.ingest(store, events, inventory)
    return harness.score(store, detector or AuditTampering(), inventory, now=T0)


def _call(make_event, n, name, service="Actiontrail", minutes=0, **extra):
    return make_event(n, eventName=name, serviceName=service,
                      eventTime=(T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra)


def test_stop_logging_fires_critical_even_when_the_scope_allows_it(store, make_event):
    envelope = {"AcsHost": "actiontrail.cn-hangzhou.aliyuncs.com", "SignatureMethod": "HMAC-SHA1",
                "Timestamp": "2026-11-02T03:00:00Z", "RequestId": "2DE2", "Format": "JSON"}
    found = _score(store, [_call(make_event, 1, "StopLogging",
                                           requestParameters={"Name": "prod-trail", **envelope})])
    [f] = found
    assert (f.detector, f.agent, f.severity) == ("audit_tampering", "admin", "critical")
    assert "stopped the audit trail" in f.summary and "prod-trail" in f.summary
    assert f.evidence["request_parameters"] == [{"Name": "prod-trail"}]  # the RPC envelope is noise in an alert


def test_a_refused_attempt_is_high_and_ordinary_trail_reads_are_quiet(store, make_event):
    events = [_call(make_event, 1, "DeleteTrail", errorCode="NoPermission", errorMessage="denied"),
              _call(make_event, 2, "DescribeTrails"), _call(make_event, 3, "LookupEvents")]
    [f] = _score(store, events)
    assert f.severity == "high" and "refused" in f.summary


def test_logstore_and_bucket_deletions_fire_only_for_the_trails_destinations(store, make_event):
    events = [
        _call(make_event, 1, "UpdateTrail", requestParameters={"Name": "t", "OssBucketName": "trail-archive"}),
        _call(make_event, 2, "DeleteBucket", service="Oss", minutes=5, requestParameters={"BucketName": "trail-archive"}),
        _call(make_event, 3, "DeleteBucket", service="Oss", minutes=6, requestParameters={"BucketName": "scratch"}),
        _call(make_event, 4, "DeleteLogStore", service="Sls", minutes=7,
              requestParameters={"ProjectName": "audit", "LogstoreName": "actiontrail_prod"}),
        _call(make_event, 5, "DeleteLogStore", service="Sls", minutes=8,
              requestParameters={"ProjectName": "app", "LogstoreName": "nginx"}),
    ]
    found = {f.evidence["action"]: f for f in _score(store, events)}
    assert set(found) == {"UpdateTrail", "DeleteBucket", "DeleteLogStore"}
    assert found["DeleteBucket"].evidence["targets"] == ["trail-archive"]
    assert "actiontrail_prod" in found["DeleteLogStore"].evidence["targets"]


def test_configured_sls_sources_are_watched(store, make_event):
    det = AuditTampering()
    det.bind(Config.model_validate({"sources": [
        {"name": "prod", "type": "sls", "endpoint": "e", "project": "audit", "logstore": "trail-store"}]}))
    events = [_call(make_event, 1, "DeleteLogStore", service="Sls",
                    requestParameters={"ProjectName": "audit", "LogstoreName": "trail-store"})]
    assert len(_score(store, events, det)) == 1


def test_the_real_attack_traffic_has_its_tampering_found(store):
    events = [json.loads(line) for f in ("invictus", "stratus") for line in
              (REAL_ATTACKS / f"{f}.jsonl").read_text().splitlines()]
    found = _score(store, events, inventory=Inventory())
    actions = {f.evidence["action"] for f in found}
    assert {"StopLogging", "UpdateTrail", "DeleteTrail"} <= actions
    assert all(f.severity in ("critical", "high") for f in found)
