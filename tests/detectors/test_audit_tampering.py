"""audit_tampering: stopping, deleting or weakening the trail fires, whatever the scope says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from detectors.audit_tampering import AuditTampering
from detectors.base import Models
from models.inventory import Attributor, Inventory
from models.scope import compile_scopes
from pipeline.core.config import Config
from pipeline.detection.detect import load_events
from pipeline.ingest.run import ingest_files
from tests.conftest import REAL_ATTACKS, write_ndjson

ADMIN = Inventory.model_validate({"agents": [{
    "name": "admin", "purpose": "p", "owner": "o", "environment": "prod", "identities": ["ram-user:ci-deploy"],
    "policies": [{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}]}]})
T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)


def _score(store, tmp_path, events, detector=None, inventory=ADMIN):
    write_ndjson(tmp_path / "e.jsonl", events)
    ingest_files(store, [tmp_path / "e.jsonl"], Attributor(inventory))
    det = detector or AuditTampering()
    cols = list(dict.fromkeys(("event_id", "event_time", "agent", *det.columns)))
    frame = load_events(store, cols, T0 - timedelta(days=3650), T0 + timedelta(days=3650), det.parameter_events)
    models = Models(inventory=inventory, scopes=compile_scopes(inventory), timezone=ZoneInfo("UTC"))
    return det.score(frame, models, T0)


def _call(make_event, n, name, service="Actiontrail", minutes=0, **extra):
    return make_event(n, eventName=name, serviceName=service,
                      eventTime=(T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra)


def test_stop_logging_fires_critical_even_when_the_scope_allows_it(store, tmp_path, make_event):
    envelope = {"AcsHost": "actiontrail.cn-hangzhou.aliyuncs.com", "SignatureMethod": "HMAC-SHA1",
                "Timestamp": "2026-11-02T03:00:00Z", "RequestId": "2DE2", "Format": "JSON"}
    found = _score(store, tmp_path, [_call(make_event, 1, "StopLogging",
                                           requestParameters={"Name": "prod-trail", **envelope})])
    [f] = found
    assert (f.detector, f.agent, f.severity) == ("audit_tampering", "admin", "critical")
    assert "stopped the audit trail" in f.summary and "prod-trail" in f.summary
    assert f.evidence["request_parameters"] == [{"Name": "prod-trail"}]  # the RPC envelope is noise in an alert


def test_a_refused_attempt_is_high_and_ordinary_trail_reads_are_quiet(store, tmp_path, make_event):
    events = [_call(make_event, 1, "DeleteTrail", errorCode="NoPermission", errorMessage="denied"),
              _call(make_event, 2, "DescribeTrails"), _call(make_event, 3, "LookupEvents")]
    [f] = _score(store, tmp_path, events)
    assert f.severity == "high" and "refused" in f.summary


def test_logstore_and_bucket_deletions_fire_only_for_the_trails_destinations(store, tmp_path, make_event):
    events = [
        _call(make_event, 1, "UpdateTrail", requestParameters={"Name": "t", "OssBucketName": "trail-archive"}),
        _call(make_event, 2, "DeleteBucket", service="Oss", minutes=5, requestParameters={"BucketName": "trail-archive"}),
        _call(make_event, 3, "DeleteBucket", service="Oss", minutes=6, requestParameters={"BucketName": "scratch"}),
        _call(make_event, 4, "DeleteLogStore", service="Sls", minutes=7,
              requestParameters={"ProjectName": "audit", "LogstoreName": "actiontrail_prod"}),
        _call(make_event, 5, "DeleteLogStore", service="Sls", minutes=8,
              requestParameters={"ProjectName": "app", "LogstoreName": "nginx"}),
    ]
    found = {f.evidence["action"]: f for f in _score(store, tmp_path, events)}
    assert set(found) == {"UpdateTrail", "DeleteBucket", "DeleteLogStore"}
    assert found["DeleteBucket"].evidence["targets"] == ["trail-archive"]
    assert "actiontrail_prod" in found["DeleteLogStore"].evidence["targets"]


def test_configured_sls_sources_are_watched(store, tmp_path, make_event):
    det = AuditTampering()
    det.bind(Config.model_validate({"sources": [
        {"name": "prod", "type": "sls", "endpoint": "e", "project": "audit", "logstore": "trail-store"}]}))
    events = [_call(make_event, 1, "DeleteLogStore", service="Sls",
                    requestParameters={"ProjectName": "audit", "LogstoreName": "trail-store"})]
    assert len(_score(store, tmp_path, events, det)) == 1


def test_the_real_attack_traffic_has_its_tampering_found(store, tmp_path):
    events = [json.loads(line) for f in ("invictus", "stratus") for line in
              (REAL_ATTACKS / f"{f}.jsonl").read_text().splitlines()]
    found = _score(store, tmp_path, events, inventory=Inventory())
    actions = {f.evidence["action"] for f in found}
    assert {"StopLogging", "UpdateTrail", "DeleteTrail"} <= actions
    assert all(f.severity in ("critical", "high") for f in found)
