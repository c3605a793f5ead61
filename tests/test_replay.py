"""``trailwarden replay`` as a responder drives it, on a store with a planted incident.

ci-deployer works normally for two weeks (weekday mornings, from its CI network, in cn-hangzhou),
then in the replayed window its AccessKey is used at 03:00 local time from an unknown address to
create a RAM user, stop an instance, and read from a new region, with attacker-controlled user
agents. ``trailwarden detect`` scores the window. The replay must show all of it - in order, with
the findings where they fired - and its evidence must be checkable and safe to open.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from models.inventory import load_inventory
from pipeline.investigate.replay import export_digest
from tests.conftest import BASE_EVENT, ROOT, run_cli, write_ndjson

ACCOUNT = BASE_EVENT["userIdentity"]["accountId"]
END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
SINCE, UNTIL = END - timedelta(days=5), END
INCIDENT = END - timedelta(days=3, hours=5)  # 19:00 UTC: 03:00 in the business time zone
ATTACKER_IP = "185.220.101.34"
HOSTILE_AGENTS = ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "<!--<script>")
OPS_DEBUG = {"type": "ram-user", "principalId": "276543210987654321", "accountId": ACCOUNT,
             "userName": "ops-debug"}


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _arn(code: str, region: str, relative: str) -> str:
    return f"acs:{code}:{region}:{ACCOUNT}:{relative}"


@dataclass
class Case:
    db: Path
    events: list[dict[str, Any]]

    def of(self, user: str, since: datetime = SINCE, until: datetime = UNTIL) -> list[dict[str, Any]]:
        """The input events of one RAM user in [since, until), oldest first."""
        return sorted((e for e in self.events if e["userIdentity"]["userName"] == user
                       and _ts(since) <= e["eventTime"] < _ts(until)), key=lambda e: e["eventTime"])

    def replay(self, agent: str, *args: str, since: datetime = SINCE, until: datetime = UNTIL,
               ) -> subprocess.CompletedProcess[str]:
        return run_cli("replay", agent, "--since", _ts(since), "--until", _ts(until), "--db", str(self.db), *args)

    def export(self, agent: str = "ci-deployer", **window: datetime) -> dict[str, Any]:
        result = self.replay(agent, "--format", "json", **window)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(when: datetime, name: str, **fields: Any) -> None:
        ev = copy.deepcopy(BASE_EVENT)
        ev.update(eventId=f"00000000-0000-4000-8000-{len(out):012d}", eventTime=_ts(when), eventName=name, **fields)
        out.append(ev)

    def run_instances(when: datetime, instance: str) -> None:
        add(when, "RunInstances", eventRW="Write", referencedResources={"ACS::ECS::Instance": [instance]})

    for d in range(21, 5, -1):  # history: weekday-morning deploys, from the CI network
        add(END - timedelta(days=d, hours=-2), "DescribeInstances")
        run_instances(END - timedelta(days=d, hours=-2, minutes=-5), f"i-bp1app{d:04d}")
    add(END - timedelta(days=4, hours=-2), "DescribeInstances")  # in the window, nothing new
    run_instances(END - timedelta(days=4, hours=-2, minutes=-5), "i-bp1app0004")
    attacker = {"sourceIpAddress": ATTACKER_IP}
    add(INCIDENT, "DescribeInstances", userAgent=HOSTILE_AGENTS[0], **attacker)
    add(INCIDENT + timedelta(minutes=1), "DescribeInstances", userAgent=HOSTILE_AGENTS[1], acsRegion="cn-beijing",
        eventSource="ecs.cn-beijing.aliyuncs.com", requestParameters={"RegionId": "cn-beijing"}, **attacker)
    # as ActionTrail writes RAM user management: the user is named only in the request parameters
    add(INCIDENT + timedelta(minutes=2), "CreateUser", eventRW="Write", serviceName="Ims",
        eventSource="ims.aliyuncs.com", apiVersion="2019-08-15", userAgent=HOSTILE_AGENTS[2],
        requestParameters={"path": "/", "userName": "backdoor-admin"}, **attacker)
    add(INCIDENT + timedelta(minutes=3), "StopInstance", eventRW="Write", userAgent=HOSTILE_AGENTS[0],
        referencedResources={"ACS::ECS::Instance": ["i-bp1prod0001"]}, errorCode="NoPermission",
        errorMessage="You are not authorized to do this action.", **attacker)
    add(INCIDENT + timedelta(minutes=4), "DescribeInstanceAttribute", userAgent=HOSTILE_AGENTS[0],
        referencedResources={"ACS::ECS::Instance": ["i-bp1prod0001"]}, **attacker)
    add(INCIDENT + timedelta(minutes=5), "DescribeInstanceAttribute", userAgent=HOSTILE_AGENTS[0],
        referencedResources={"ACS::ECS::Instance": ["i-bp1prod0002"]}, errorCode="InvalidInstanceId.NotFound",
        errorMessage="The specified instance does not exist.", **attacker)
    add(END - timedelta(days=1, hours=-2), "DescribeInstances")  # back to normal
    add(END - timedelta(days=2, hours=-8), "DescribeSecurityGroups", userIdentity=OPS_DEBUG,
        sourceIpAddress="198.18.7.99")  # an identity in no inventory
    return out


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    folder = tmp_path_factory.mktemp("replay")
    events = _events()
    db = folder / "store.duckdb"
    ingested = run_cli("ingest", "--file", str(write_ndjson(folder / "events.jsonl", events)), "--db", str(db))
    assert ingested.returncode == 0, ingested.stderr
    detected = run_cli("detect", "--since", _ts(SINCE), "--until", _ts(UNTIL), "--db", str(db))
    assert detected.returncode == 0, detected.stderr
    return Case(db, events)


@pytest.fixture(scope="module")
def report(case: Case) -> dict[str, Any]:
    """ci-deployer's replay of the window, as JSON (read only by the tests)."""
    return case.export()


def _timeline_events(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in report["timeline"] if t["kind"] == "event"]


# -- the JSON export ------------------------------------------------------------------------------
def test_timeline_holds_the_incident_oldest_first_with_its_raw_json(case, report):
    expected = case.of("ci-deploy")
    events = _timeline_events(report)
    assert [e["event_id"] for e in events] == [e["eventId"] for e in expected]
    assert [e["event_time"] for e in events] == [e["eventTime"] for e in expected]
    by_id = {e["eventId"]: e for e in expected}
    for e in events:
        assert e["raw"] == by_id[e["event_id"]], "the evidence must be the event as delivered"
    inventory = load_inventory(ROOT / "config" / "agents.yaml").agent("ci-deployer")
    assert inventory is not None
    assert report["registered"] is True and report["owner"] == inventory.owner
    assert report["summary"]["events"] == len(expected)
    assert report["summary"]["failed"] == sum(1 for e in expected if e["errorCode"])


def test_findings_are_interleaved_where_they_fired(case, report):
    timeline = report["timeline"]
    findings = [t for t in timeline if t["kind"] == "finding"]
    assert findings, "detect found nothing in the planted incident"
    assert {f["id"] for f in findings} == {f["id"] for f in report["findings"]}
    assert any(f["detector"] == "out_of_scope" for f in findings)
    times = [t["event_time"] for t in timeline]
    assert times == sorted(times)
    first_seen = {f["id"]: f["first_seen"] for f in report["findings"]}
    incident = [e["eventTime"] for e in case.of("ci-deploy", INCIDENT, INCIDENT + timedelta(hours=1))]
    for f in findings:
        assert f["event_time"] == first_seen[f["id"]]
    fired = [f for f in findings if incident[0] <= f["event_time"] <= incident[-1]]
    assert {f["detector"] for f in fired} >= {"out_of_scope"}, "the incident's findings are at the incident"
    assert timeline[0]["kind"] == "event" and timeline[-1]["kind"] == "event", "between events, not at one end"


def test_blast_radius_splits_resources_by_access_and_outcome(report):
    radius = report["blast_radius"]
    touched = {(r["resource"], r["access"], r["outcome"]): r for r in radius["resources"]}
    prod1 = _arn("ecs", "cn-hangzhou", "instance/i-bp1prod0001")
    expected = {
        (_arn("ram", "", "user/backdoor-admin"), "write", "succeeded"): "ram:CreateUser",
        (prod1, "write", "failed"): "ecs:StopInstance",
        (prod1, "read", "succeeded"): "ecs:DescribeInstanceAttribute",
        (_arn("ecs", "cn-hangzhou", "instance/i-bp1prod0002"), "read", "failed"): "ecs:DescribeInstanceAttribute",
        (_arn("ecs", "cn-hangzhou", "instance/i-bp1app0004"), "write", "succeeded"): "ecs:RunInstances",
    }
    assert set(touched) == set(expected), "only what was touched in the window, each split read/write, ok/failed"
    for key, act in expected.items():
        assert touched[key]["actions"] == [act] and touched[key]["calls"] == 1
    created = touched[(_arn("ram", "", "user/backdoor-admin"), "write", "succeeded")]
    assert created["first_seen"] == created["last_seen"] == _ts(INCIDENT + timedelta(minutes=2))


def test_blast_radius_lists_where_from_with_first_and_last_seen(case, report):
    radius = report["blast_radius"]
    window = case.of("ci-deploy")
    for key, field in (("source_ips", "sourceIpAddress"), ("user_agents", "userAgent"),
                       ("regions", "acsRegion"), ("access_keys", None)):
        items = {i["value"]: i for i in radius[key]}
        values = [(e["userIdentity"]["accessKeyId"] if field is None else e[field]) for e in window]
        assert set(items) == set(values), key
        for value, item in items.items():
            times = [e["eventTime"] for e, v in zip(window, values, strict=True) if v == value]
            assert (item["calls"], item["first_seen"], item["last_seen"]) == (len(times), times[0], times[-1]), value


def test_changes_are_what_was_never_seen_before_the_window(case, report):
    changes = report["changes"]
    window, history = case.of("ci-deploy"), case.of("ci-deploy", SINCE - timedelta(days=60), SINCE)
    assert history and changes["history_was_empty"] is False
    for kind, field in (("new_apis", "eventName"), ("new_source_ips", "sourceIpAddress"),
                        ("new_regions", "acsRegion")):
        known = {e[field] for e in history}
        firsts: dict[str, str] = {}
        for e in window:
            if e[field] not in known:
                firsts.setdefault(e[field], e["eventTime"])
        assert {c["value"]: c["first_seen"] for c in changes[kind]} == firsts, kind
    assert {c["value"] for c in changes["new_source_ips"]} == {ATTACKER_IP}
    assert {c["value"] for c in changes["new_regions"]} == {"cn-beijing"}
    assert "DescribeInstances" not in {c["value"] for c in changes["new_apis"]}


def test_sha256_covers_every_byte_of_the_evidence(case, tmp_path):
    out = tmp_path / "evidence.json"
    result = case.replay("ci-deployer", "--format", "json", "-o", str(out))
    assert result.returncode == 0 and result.stdout == "", result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert re.fullmatch(r"[0-9a-f]{64}", report["sha256"])
    assert report["sha256"][:16] in result.stderr
    assert export_digest(report) == report["sha256"]
    for n, event in enumerate(_timeline_events(report)):
        for path in _string_leaves(event["raw"]):
            tampered = copy.deepcopy(report)
            raw = _timeline_events(tampered)[n]["raw"]
            *parents, last = path
            for key in parents:
                raw = raw[key]
            raw[last] = raw[last][:-1] + ("X" if raw[last][-1:] != "X" else "Y")  # one byte
            assert export_digest(tampered) != report["sha256"], (event["event_id"], path)


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _string_leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _string_leaves(v, (*path, i))
    elif isinstance(value, str) and value:
        yield path


def test_since_and_until_bound_the_window(case):
    since, until = INCIDENT + timedelta(minutes=1), INCIDENT + timedelta(minutes=4)
    report = case.export(since=since, until=until)
    expected = case.of("ci-deploy", since, until)
    assert 0 < len(expected) < len(case.of("ci-deploy"))
    assert [e["event_id"] for e in _timeline_events(report)] == [e["eventId"] for e in expected]
    assert (report["window"]["since"], report["window"]["until"]) == (_ts(since), _ts(until))
    for f in report["findings"]:
        assert f["last_seen"] >= _ts(since) and f["first_seen"] < _ts(until)
    resources = {r["resource"] for r in report["blast_radius"]["resources"]}
    assert _arn("ecs", "cn-hangzhou", "instance/i-bp1app0004") not in resources  # a day before `since`
    assert _arn("ecs", "cn-hangzhou", "instance/i-bp1prod0002") not in resources  # at `until`: excluded
    late = case.export(since=INCIDENT + timedelta(hours=1))
    assert ATTACKER_IP not in {i["value"] for i in late["blast_radius"]["source_ips"]}


# -- the terminal view ------------------------------------------------------------------------------
def test_table_shows_findings_summary_and_timeline(case, report):
    result = case.replay("ci-deployer")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert report["findings"]
    for f in report["findings"]:
        assert f["id"][:12] in out
        assert f["summary"][:40] in out
        assert f"FINDING {f['severity']} {f['detector']}" in out
    timeline = out[out.index("Timeline"):]
    for e in _timeline_events(report):
        assert re.search(rf"{re.escape(e['event_time'])}\s+{re.escape(e['action'])}\s", timeline), e
    assert f"{report['summary']['events']} events" in out


# -- the HTML file ---------------------------------------------------------------------------------
class Page(HTMLParser):
    """Elements, text and script contents of an HTML document, as a browser would tokenize them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]


LOADING_TAGS = {"img", "iframe", "frame", "object", "embed", "link", "base", "form", "video", "audio", "source"}
LOADING_ATTRIBUTES = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data",
                      "background", "manifest"}


def _assert_inert_and_offline(page: Page) -> None:
    """Nothing fetched from anywhere (no network needed), nothing executable but the JSON data."""
    for tag, attrs in page.elements:
        assert tag not in LOADING_TAGS, (tag, attrs)
        assert (attrs.get("http-equiv") or "").lower() != "refresh"
        assert not LOADING_ATTRIBUTES & set(attrs), (tag, attrs)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    scripts = page.tags("script")
    assert scripts == [{"type": "application/json", "id": "trailwarden-export"}], scripts
    styles = "".join(page.text)
    assert "@import" not in styles and "url(" not in styles


@pytest.fixture(scope="module")
def html_file(case, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "ci-deployer.html"
    result = case.replay("ci-deployer", "--format", "html", "-o", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_html_is_one_self_contained_file_with_escaped_event_text(case, html_file):
    html = html_file.read_text(encoding="utf-8")
    page = Page(html)
    _assert_inert_and_offline(page)
    for ua in HOSTILE_AGENTS:
        assert escape(ua, quote=True) in html, "shown, escaped"
        assert ua in "".join(page.text)
    assert not page.tags("img")
    export = json.loads(page.scripts[0])
    assert export_digest(export) == export["sha256"]
    assert export["sha256"] in "".join(page.text), "the page states the digest of what it embeds"
    expected = case.of("ci-deploy")
    assert [e["raw"] for e in _timeline_events(export)] == expected
    assert page.tags("svg"), "the activity chart"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # a browser process
def test_html_renders_in_a_headless_browser(case, html_file):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             html_file.as_uri()], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    page = Page(dom)
    _assert_inert_and_offline(page)
    text = " ".join(page.text)
    report = json.loads(page.scripts[0])
    for f in report["findings"]:
        assert f["id"] in text and f["summary"] in text
    for ua in HOSTILE_AGENTS:
        assert ua in text, "the hostile user agent is shown as text"
    # the chart: one bar per active hour (its tooltip says how many calls, how many failed), and a
    # marker per finding
    assert len(page.tags("svg")) == 1
    bars = [tuple(map(int, m)) for m in re.findall(r": (\d+) calls, (\d+) failed", text)]
    events = _timeline_events(report)
    assert len(bars) == len({e["event_time"][:13] for e in events})
    assert sum(b[0] for b in bars) == len(events)
    assert sum(b[1] for b in bars) == sum(1 for e in events if e["error_code"])
    assert len(page.tags("polygon")) == len(report["findings"])
    assert len(page.tags("table")) >= 3  # findings, blast radius..., timeline
    # the embedded export, as the browser parsed it: the whole element's text is the JSON (a
    # "<!--<script>" in an event must not make the parser swallow the rest of the page into it)
    start = dom.index(">", dom.index('id="trailwarden-export"')) + 1
    embedded = json.loads(dom[start:dom.rindex("</script>")])
    assert export_digest(embedded) == embedded["sha256"] == report["sha256"]


# -- who can be replayed ----------------------------------------------------------------------------
def test_unknown_agent_exits_2_naming_it(case):
    result = case.replay("no-such-agent")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-agent" in lines[0]


def test_an_unregistered_identity_is_replayed_and_marked(case):
    report = case.export("ram-user:ops-debug")
    assert report["registered"] is False and report["owner"] is None
    assert [e["raw"] for e in _timeline_events(report)] == case.of("ops-debug")
    assert any(f["detector"] == "unregistered_identity" for f in report["findings"])
    table = case.replay("ram-user:ops-debug")
    assert table.returncode == 0, table.stderr
    assert "not in the inventory" in table.stdout


@pytest.mark.parametrize("identity", ["ram-user:ci-deploy", "access-key:LTAI5tCiDeploy7Qx2mK"])
def test_an_identity_of_an_inventory_agent_replays_that_agent(case, report, identity):
    """Both are identities of ci-deployer in config/agents.yaml: a responder holding either from an
    alert gets the agent's replay, and is told so."""
    result = case.replay(identity, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert f"{identity} is an identity of agent ci-deployer: replaying ci-deployer" in result.stderr
    replayed = json.loads(result.stdout)
    assert replayed["agent"] == "ci-deployer" and replayed["registered"] is True
    assert replayed["timeline"] == report["timeline"]


# -- secrets in the evidence ----------------------------------------------------------------------
SECRETS_PLANTED = ("Console-Pw-1", "nested-pw-2", "body-pw-3", "new-ak-secret-4", "CAISsts-token-5")


@pytest.fixture(scope="module")
def secrets_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ci-deploy gives bob a console password and an AccessKey, as ActionTrail records it."""
    folder = tmp_path_factory.mktemp("replay-secrets")
    ims = {"eventRW": "Write", "serviceName": "Ims", "eventSource": "ims.aliyuncs.com", "apiVersion": "2019-08-15"}
    login = {**copy.deepcopy(BASE_EVENT), **ims, "eventId": "00000000-0000-4000-8000-00000000a001",
             "eventTime": _ts(INCIDENT), "eventName": "CreateLoginProfile",
             "requestParameters": {"UserName": "bob", "Password": "Console-Pw-1",
                                   "LoginProfile": {"Password": "nested-pw-2", "PasswordResetRequired": True},
                                   "Body": "UserName=bob&password=body-pw-3"}}
    key = {**copy.deepcopy(BASE_EVENT), **ims, "eventId": "00000000-0000-4000-8000-00000000a002",
           "eventTime": _ts(INCIDENT + timedelta(minutes=1)), "eventName": "CreateAccessKey",
           "requestParameters": {"UserName": "bob"},
           "responseElements": {"AccessKey": {"AccessKeyId": "LTAI5tBobNewKey000001",
                                              "AccessKeySecret": "new-ak-secret-4"},
                                "SecurityToken": "CAISsts-token-5"}}
    db = folder / "store.duckdb"
    result = run_cli("ingest", "--file", str(write_ndjson(folder / "e.jsonl", [login, key])), "--db", str(db))
    assert result.returncode == 0, result.stderr
    return db


def _replay(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("replay", "ci-deployer", "--since", _ts(SINCE), "--until", _ts(UNTIL), "--db", str(db), *args)
    assert result.returncode == 0, result.stderr
    return result


def test_exports_are_redacted_by_default_say_so_and_hash_what_is_written(secrets_db, tmp_path):
    out = tmp_path / "evidence.json"
    _replay(secrets_db, "--format", "json", "-o", str(out))
    written = out.read_text(encoding="utf-8")
    assert [s for s in SECRETS_PLANTED if s in written] == []
    export = json.loads(written)
    assert export["redaction"]["applied"] is True
    assert export["redaction"]["values_redacted"] == len(SECRETS_PLANTED)
    assert export_digest(export) == export["sha256"]  # over the redacted export, as written
    (login, key) = _timeline_events(export)
    assert login["raw"]["requestParameters"]["UserName"] == "bob"
    assert key["raw"]["responseElements"]["AccessKey"]["AccessKeyId"] == "LTAI5tBobNewKey000001"  # an identifier
    html = _replay(secrets_db, "--format", "html").stdout
    assert [s for s in SECRETS_PLANTED if s in html] == []
    embedded = json.loads(Page(html).scripts[0])
    assert embedded["redaction"]["values_redacted"] == len(SECRETS_PLANTED) and "Redacted: 5" in html
    assert export_digest(embedded) == embedded["sha256"]


def test_unredacted_exports_the_evidence_as_received_and_says_so(secrets_db):
    export = json.loads(_replay(secrets_db, "--format", "json", "--unredacted").stdout)
    text = json.dumps(export)
    assert [s for s in SECRETS_PLANTED if s not in text] == []
    assert export["redaction"]["applied"] is False and export_digest(export) == export["sha256"]
