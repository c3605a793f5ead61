"""The signin_hygiene detector: 28 days of console sign-ins learned, then a week scored.

The history (Asia/Shanghai), per agent, a sign-in each weekday at 09:00 from its office:

* ``alice``: always with MFA (a RAM user's ``additionalEventData.mfaChecked``, as ActionTrail
  records it: no session context);
* ``bob``: never with MFA; ``carol``: with MFA except on Mondays;
* ``admin``: an administrator (with MFA), who may unbind other users' devices;
* the root account (not an agent: its identity names it), always with MFA (``isMFAChecked``);
* ``newbie``: three sign-ins with MFA (too little history).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from detectors.base import Finding
from detectors.signin_hygiene import SigninHygiene, SigninProfile
from models.baselines import Baseline
from pipeline.ingest.events import normalize
from pipeline.store.store import Store, migrations
from tests.detectors import harness
from tests.detectors.harness import HISTORY_DAYS, SINCE, TZ, TZ_NAME, UNTIL, WEEK

MON, TUE, WED, THU, FRI, SAT, SUN = WEEK
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/130.0.0.0 Safari/537.36"
OFFICE, THIEF = "198.51.100.7", "185.220.101.34"
ACCOUNT = harness.ACCOUNT

INVENTORY = harness.inventory(
    harness.agent("alice"), harness.agent("bob"), harness.agent("carol"), harness.agent("admin"),
    harness.agent("newbie"))
ROOT = f"root-account:{ACCOUNT}"  # the root account is never an inventory agent: its identity names it


def at(day: date, hour: float, minute: float = 0) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=TZ) + timedelta(hours=hour, minutes=minute)


def signin(t: harness.Trail, who: str, when: datetime, mfa: bool | None, ip: str = OFFICE,
           error: str | None = None) -> dict[str, Any]:
    """A console sign-in shaped as ../shared/notes/actiontrail.md E1 (RAM user) or E2 (root)."""
    if who == "root":
        ident = {"type": "root-account", "accountId": ACCOUNT, "principalId": ACCOUNT, "userName": "root"}
        extra: dict[str, Any] = {"loginAccount": "root"}
        if mfa is not None:
            extra["isMFAChecked"] = "true" if mfa else "false"
        service = "AasCustomer"
    else:
        ident = {"type": "ram-user", "accountId": ACCOUNT, "principalId": f"2000{len(who)}", "userName": who}
        extra = {"callbackUrl": "https://home.console.aliyun.com/"}
        if mfa is not None:
            extra["mfaChecked"] = "true" if mfa else "false"
        service = "AasSub"
    return t.add("ram-user:root" if who == "root" else who, when, "ConsoleSignin", ip=ip, ua=BROWSER, userIdentity=ident, eventType="ConsoleSignin",
                 eventSource="signin.aliyun.com", serviceName=service, isGlobal=True, additionalEventData=extra,
                 requestParameters={}, error=error)


def unbind(t: harness.Trail, by: str, target: str, when: datetime, name: str = "UnbindMFADevice") -> dict[str, Any]:
    ident = {"type": "ram-user", "accountId": ACCOUNT, "principalId": f"2000{len(by)}", "userName": by}
    return t.add(by, when, name, ip=OFFICE, ua="AliyunConsole", userIdentity=ident, serviceName="Ims",
                 eventSource="ram.aliyuncs.com", isGlobal=True, rw="Write", requestParameters={"UserName": target})


def history_trail() -> harness.Trail:
    t = harness.Trail(INVENTORY, 1)
    for day in HISTORY_DAYS:
        if day.weekday() >= 5:
            continue
        signin(t, "alice", at(day, 9), mfa=True)
        signin(t, "bob", at(day, 9), mfa=False)
        signin(t, "carol", at(day, 9), mfa=day.weekday() != 0)
        signin(t, "admin", at(day, 9), mfa=True)
        signin(t, "root", at(day, 9, 30), mfa=True)
    for day in HISTORY_DAYS[-5:-2]:
        signin(t, "newbie", at(day, 9), mfa=True)
    return t


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Baseline]:
    return harness.learned(tmp_path_factory.mktemp("signin-history"), history_trail().events, INVENTORY,
                           SINCE, TZ_NAME)


Score = Callable[..., list[Finding]]


@pytest.fixture
def score(store: Store, baselines: dict[str, Baseline]) -> Score:
    def run(t: harness.Trail, **params: Any) -> list[Finding]:
        harness.ingest(store, t.events, INVENTORY)
        return harness.score(store, SigninHygiene(**params), INVENTORY, since=SINCE, until=UNTIL, timezone=TZ,
                             baselines=baselines)

    return run


# -- what is stored and learned -----------------------------------------------------------------
@pytest.mark.parametrize(("who", "mfa"), [("alice", True), ("alice", False), ("alice", None), ("root", True),
                                          ("root", False)])
def test_a_signins_mfa_is_read_from_its_additional_event_data(who: str, mfa: bool | None) -> None:
    t = harness.Trail(INVENTORY, 9)
    ev = signin(t, who, at(MON, 9), mfa=mfa)
    assert "sessionContext" not in ev["userIdentity"]  # as real sign-ins are recorded
    assert normalize(ev).mfa_authenticated is mfa


def test_the_signins_own_record_wins_over_a_session_context() -> None:
    t = harness.Trail(INVENTORY, 9)
    ev = signin(t, "alice", at(MON, 9), mfa=False)
    ev["userIdentity"]["sessionContext"] = {"attributes": {"mfaAuthenticated": "true"}}
    assert normalize(ev).mfa_authenticated is False
    ev["additionalEventData"]["mfaChecked"] = "maybe"  # says nothing: the session context's value stays
    assert normalize(ev).mfa_authenticated is True
    api = copy.deepcopy(ev) | {"eventName": "DescribeInstances"}  # only sign-ins read it
    assert normalize(api).mfa_authenticated is True


def test_the_migration_backfills_stored_signins(store: Store) -> None:
    t = harness.Trail(INVENTORY, 9)
    signin(t, "alice", at(MON, 9), mfa=False)
    signin(t, "root", at(MON, 10), mfa=True)
    harness.ingest(store, t.events, INVENTORY)
    store.con.execute("UPDATE events_hot SET mfa_authenticated = NULL")  # as stored before this version
    (backfill,) = [m for m in migrations() if m.name == "signin_mfa"]
    # 0019 always runs before 0020 renames the table `events` to `events_hot` (so before any day is sealed)
    store.con.execute(backfill.sql.replace("UPDATE events\n", "UPDATE events_hot\n"))
    rows = store.con.execute("SELECT user_name, mfa_authenticated FROM events ORDER BY event_time").fetchall()
    assert rows == [("alice", False), ("root", True)]


def test_the_history_learns_each_users_signins(baselines: dict[str, Baseline]) -> None:
    def part(agent: str) -> SigninProfile:
        found = baselines[agent].part(SigninProfile)
        assert found is not None
        return found
    assert part("alice").signins == {"alice": [20, 0, 20]}
    assert part("bob").signins == {"bob": [0, 20, 20]}
    assert part("carol").signins == {"carol": [16, 4, 20]}
    assert part(ROOT).signins == {"root": [20, 0, 20]}
    assert part("alice").always_mfa("alice", 5) == [20, 0, 20]
    assert part("carol").always_mfa("carol", 5) is None and part("bob").always_mfa("bob", 5) is None
    assert part("newbie").always_mfa("newbie", 5) is None


# -- firing ----------------------------------------------------------------------------------------
def test_a_signin_without_mfa_by_someone_who_always_used_it_is_medium(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    signin(t, "alice", at(MON, 9), mfa=True)
    ev = signin(t, "alice", at(TUE, 9), mfa=False, ip=THIEF)
    (f,) = score(t)
    assert (f.agent, f.severity, f.event_ids) == ("alice", "medium", [ev["eventId"]])
    assert f.summary == ("alice: alice signed in to the console without MFA from 185.220.101.34; in 28 days all 20 "
                         "of alice's sign-ins used MFA")
    assert f.evidence["history"] == {"with_mfa": 20, "without_mfa": 0, "days": 20}
    assert f.evidence["unbinds"] == []


def test_the_root_account_without_mfa_is_medium(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    signin(t, "root", at(WED, 9), mfa=False)
    (f,) = score(t)
    assert (f.agent, f.severity) == (ROOT, "medium")


def test_an_unbind_by_another_then_a_signin_without_mfa_is_high(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    signin(t, "admin", at(WED, 9), mfa=True)
    u = unbind(t, "admin", "alice", at(WED, 22))
    s = signin(t, "alice", at(WED, 22, 12), mfa=False, ip=THIEF)
    (f,) = score(t)
    assert (f.agent, f.severity) == ("alice", "high")
    assert f.event_ids == [u["eventId"], s["eventId"]]
    assert f.first_seen == at(WED, 22) and f.last_seen == at(WED, 22, 12)
    assert f.summary == ("alice: alice signed in to the console without MFA from 185.220.101.34; 12 min after admin "
                         "ran UnbindMFADevice on alice's MFA device; in 28 days all 20 of alice's sign-ins used MFA")
    (ub,) = f.evidence["unbinds"]
    assert (ub["by"], ub["agent"], ub["event"], ub["source_ip"]) == ("admin", "admin", "UnbindMFADevice", OFFICE)


def test_the_unbind_rule_needs_no_history(score: Score) -> None:
    """A user who never signed in before (or never with MFA) is still raised after an unbind."""
    t = harness.Trail(INVENTORY, 2)
    unbind(t, "admin", "newbie", at(THU, 10), name="DeactivateMFADevice")
    signin(t, "newbie", at(THU, 11), mfa=False)
    unbind(t, "admin", "bob", at(THU, 10))
    signin(t, "bob", at(THU, 12), mfa=None)  # the event says nothing about MFA: taken as without
    found = score(t)
    assert [(f.agent, f.severity) for f in found] == [("bob", "high"), ("newbie", "high")]


def test_an_unbind_then_a_signin_with_mfa_is_medium(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    unbind(t, "admin", "alice", at(WED, 10))
    signin(t, "alice", at(WED, 11), mfa=True)
    (f,) = score(t)
    assert (f.agent, f.severity, f.evidence["without_mfa"]) == ("alice", "medium", 0)


# -- quiet -----------------------------------------------------------------------------------------
def test_an_ordinary_week_is_quiet(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    for day in WEEK[:5]:
        signin(t, "alice", at(day, 9), mfa=True)
        signin(t, "bob", at(day, 9), mfa=False)  # never used MFA: nothing dropped
        signin(t, "carol", at(day, 9), mfa=day.weekday() != 0)  # sometimes without: not a habit
        signin(t, "root", at(day, 9, 30), mfa=True)
    signin(t, "newbie", at(MON, 9), mfa=False)  # too little history to know a habit
    signin(t, "alice", at(TUE, 10), mfa=False, error="InvalidPassword")  # a failed sign-in is no sign-in
    assert score(t) == []


def test_an_unbind_of_ones_own_device_or_long_before_is_not_followed(score: Score) -> None:
    t = harness.Trail(INVENTORY, 2)
    unbind(t, "bob", "bob", at(MON, 10))  # their own device
    signin(t, "bob", at(MON, 10, 5), mfa=False)
    unbind(t, "admin", "carol", at(MON, 10))
    signin(t, "carol", at(TUE, 11), mfa=False)  # 25 hours later
    unbind(t, "admin", "alice", at(WED, 10))  # refused: nothing was unbound
    t.events[-1]["errorCode"] = "NoPermission"
    signin(t, "alice", at(WED, 10, 5), mfa=True)
    assert score(t) == []
