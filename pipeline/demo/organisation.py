"""An organisation-scale scenario for learned-behaviour detectors (issue 15): 50-500 agents of the
kinds a real account has, eight weeks of their traffic with benign churn, and in its last two weeks
ten in-scope incidents and nine benign traps, labelled.

``generate(out_dir, agents=60, weeks=8, seed=1)`` writes a self-contained directory::

    config/trailwarden.yaml      the database under the directory, the inventory, Asia/Shanghai
    config/agents.yaml           every agent: purpose, owner, identities, policies, regions...
    config/policies/<agent>.json each agent's least-privilege RAM policy
    events/YYYY/MM/DD/part-NNN.ndjson.gz   ActionTrail events, a local day per folder
    labels.json                  the scenario and its labels (``org_labels.Label``)

Run trailwarden from that directory (its paths are relative): ``trailwarden --config
config/trailwarden.yaml ingest --file events/``, then ``detect --since <detect_since> --until
<end>`` (both in ``labels.json``), and score ``findings --status all --format json`` with
:func:`pipeline.demo.score.score` (``benchmarks/org_eval.py`` does all of it).

``labels.json`` is written last (an earlier one is removed first): a directory without it is a
generation that was interrupted, and nothing scores it against another scenario's labels.

The output depends only on the arguments: the same seed (and ``end``) writes the same bytes. The
events end before ``end`` (default: today's local midnight; later than a day from now, ingest
would refuse them as "in the future"). Memory holds one file (a day of at most
:data:`AGENTS_PER_FILE` agents) at a time, whatever the organisation's size.

``python -m pipeline.demo.organisation OUT [--agents 60] [--weeks 8] [--seed 1] [--volume 1.0]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from pipeline.demo import org_agents as kinds
from pipeline.demo.org_agents import Org, OrgAgent
from pipeline.demo.org_calls import BUSINESS_TZ, Event, at, host_in, local_day, subnet_in
from pipeline.demo.org_labels import Extra, Label, Planner, plan_incidents, plan_traps

AGENTS_PER_FILE = 12
SCORED_DAYS = 14  # every label lies in the last two weeks; the weeks before are history
MIN_AGENTS = 24  # ten incidents and nine traps need agents of their own
# of sixty agents: the mix of an organisation (one more is the newest agent, a trap)
SHARES = {"human": 14, "oncall": 4, "admin": 2, "ci": 8, "terraform": 3, "monitor": 5, "backup": 4, "etl": 8,
          "service": 8, "vendor": 3}
MINIMUM = {"human": 4, "oncall": 1, "admin": 1, "ci": 4, "terraform": 1, "monitor": 2, "backup": 2, "etl": 2,
           "service": 3, "vendor": 1}
APPS = ("payments", "orders", "checkout", "search", "catalog", "inventory", "shipping", "billing", "accounts",
        "notifications", "recommendations", "pricing", "reviews", "loyalty", "gateway", "identity", "media",
        "analytics-api", "mobile-bff", "partner-api")
STACKS = ("network", "platform", "data", "edge", "security", "k8s", "databases", "observability")
TOOLS = ("prometheus-exporter", "grafana", "zabbix", "datadog", "cms-dashboards", "capacity-report", "cost-watch",
         "uptime-probe")
TARGETS = ("orders-db", "k8s-volumes", "file-shares", "analytics-disks", "mysql-fleet", "redis-aof", "media-store",
           "ledger-db")
DOMAINS = ("orders", "clickstream", "inventory", "finance", "marketing", "logistics", "crm", "search-index",
           "payments", "reviews")
VENDORS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka")
GIVEN = ("wei", "fang", "na", "min", "jing", "lei", "yang", "jun", "yan", "tao", "ming", "chao", "xiu", "hui",
         "qiang", "ping", "gang", "li", "hong", "yu")
FAMILY = ("wang", "li", "zhang", "liu", "chen", "yang", "zhao", "huang", "zhou", "wu", "xu", "sun", "hu", "zhu",
          "gao", "lin", "he", "guo", "ma", "luo")


@dataclass(frozen=True)
class Scenario:
    """What :func:`generate` wrote, and how to run it."""

    root: Path
    seed: int
    agents: int
    weeks: int
    volume: float
    start: datetime  # the first event's local midnight, UTC
    end: datetime  # exclusive, a local midnight, UTC
    detect_since: datetime  # the start of the last two weeks: score [detect_since, end)
    events: int
    files: int
    labels: list[dict[str, Any]]
    seconds: float

    @property
    def config(self) -> Path:
        return self.root / "config" / "trailwarden.yaml"

    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def days(self) -> float:
        """Days scored by the detect window (the rate of other findings is per day of it)."""
        return (self.end - self.detect_since).total_seconds() / 86400


# -- planning ------------------------------------------------------------------------------------------
def counts(agents: int) -> dict[str, int]:
    """How many agents of each kind (besides the newest one), in the ratio of :data:`SHARES`."""
    total = agents - 1
    weight = sum(SHARES.values())
    out = {k: max(MINIMUM[k], int(SHARES[k] * total / weight)) for k in SHARES}
    order = sorted(SHARES, key=lambda k: SHARES[k] * total / weight - int(SHARES[k] * total / weight), reverse=True)
    while sum(out.values()) < total:
        for k in order:
            if sum(out.values()) < total:
                out[k] += 1
    while sum(out.values()) > total:
        k = max((k for k in out if out[k] > MINIMUM[k]), key=lambda k: out[k] - SHARES[k] * total / weight)
        out[k] -= 1
    return out


class _Names:
    """Unique names from a pool: ``payments``, then ``payments-2``..."""

    def __init__(self, rng: random.Random, pool: tuple[str, ...]):
        self.rng, self.pool, self.used = rng, list(pool), set[str]()
        rng.shuffle(self.pool)
        self.n = 0

    def next(self) -> str:
        base = self.pool[self.n % len(self.pool)]
        lap = self.n // len(self.pool)
        self.n += 1
        return base if lap == 0 else f"{base}-{lap + 1}"


def _people(rng: random.Random, count: int) -> Iterator[tuple[str, str]]:
    """``(agent name, RAM user name)`` of ``count`` people: ``wang-lei`` and ``wang.lei``."""
    seen: set[str] = set()
    while len(seen) < count:
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        name = f"{given}-{family}"
        lap = 2
        while name in seen:
            name, lap = f"{given}-{family}-{lap}", lap + 1
        seen.add(name)
        yield name, name.replace("-", ".", 1)


def _offices(org: Org, rng: random.Random) -> None:
    for office, pool, prefix in (("hangzhou", "60.191.0.0/16", 22), ("shanghai", "101.230.0.0/16", 23),
                                 ("shenzhen", "119.123.0.0/16", 24)):
        cidr = subnet_in(rng, pool, prefix)
        org.offices[office] = {"cidr": cidr, "egress": host_in(rng, subnet_in(rng, cidr, 24))}
    org.offices["vpn"] = {"cidr": subnet_in(rng, "47.96.0.0/13", 27), "egress": None}
    org.ci_pool = subnet_in(rng, "47.96.0.0/13", 26)
    org.vpc = "vpc-bp1" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(17))


def build_org(agents: int, weeks: int, seed: int, end: date, volume: float) -> tuple[Org, list[Label], list[Extra]]:
    """The organisation, its labels and their events' makers."""
    if agents < MIN_AGENTS:
        raise ValueError(f"at least {MIN_AGENTS} agents: the ten incidents and nine traps need their own")
    if weeks < 3:
        raise ValueError("at least 3 weeks: two scored weeks and one of history")
    rng = random.Random(f"{seed}/organisation")
    org = Org(seed, volume, end - timedelta(weeks=weeks), end, end - timedelta(days=SCORED_DAYS))
    _offices(org, rng)
    _populate(org, rng, counts(agents))
    plan = Planner(org, random.Random(f"{seed}/labels"))
    plan_traps(plan)
    plan_incidents(plan)
    return org, plan.labels, plan.extras


def _populate(org: Org, rng: random.Random, n: dict[str, int]) -> None:
    apps, people = _Names(rng, APPS), _people(rng, n["human"] + n["oncall"] + n["admin"])
    teams = [f"{a}-team" for a in APPS[:8]]
    made: list[OrgAgent] = []
    for _ in range(n["human"]):
        name, user = next(people)
        team = rng.choice(teams)
        made.append(kinds.build_human(org, rng, name, user, team, [f"{team.removesuffix('-team')}-shared",
                                                                   f"{rng.choice(APPS)}-logs"]))
    for _ in range(n["oncall"]):
        name, user = next(people)
        made.append(kinds.build_human(org, rng, name, user, "sre-team", ["sre-runbooks", f"{rng.choice(APPS)}-logs"],
                                      kind="oncall"))
    for _ in range(n["admin"]):
        name, user = next(people)
        made.append(kinds.build_admin(org, rng, name, user))
    made += [kinds.build_ci(org, rng, f"ci-{app}", app) for app in (apps.next() for _ in range(n["ci"]))]
    made += _named(org, rng, n, "terraform", STACKS, lambda s: kinds.build_terraform(org, rng, f"terraform-{s}", s))
    made += _named(org, rng, n, "monitor", TOOLS, lambda t: kinds.build_monitor(org, rng, f"monitor-{t}", t))
    made += _named(org, rng, n, "backup", TARGETS, lambda t: kinds.build_backup(org, rng, f"backup-{t}", t))
    made += _named(org, rng, n, "etl", DOMAINS, lambda d: kinds.build_etl(
        org, rng, f"etl-{d}", d, [f"{a}-exports" for a in rng.sample(APPS, rng.randint(1, 2))]))
    made += [kinds.build_service(org, rng, f"svc-{app}", app) for app in (apps.next() for _ in range(n["service"]))]
    made += _named(org, rng, n, "vendor", VENDORS, lambda c: kinds.build_vendor(org, rng, f"vendor-{c}", c, rng.choice(APPS)))
    made.append(_newest(org, rng, apps))
    names = [a.name for a in made]
    assert len(set(names)) == len(names), "agent names must be unique"
    org.agents = made
    org.oncall = [a.name for a in made if a.kind == "oncall"]


def _named(org: Org, rng: random.Random, n: dict[str, int], kind: str, pool: tuple[str, ...], build: Any) -> list[OrgAgent]:
    names = _Names(rng, pool)
    return [build(names.next()) for _ in range(n[kind])]


def _newest(org: Org, rng: random.Random, apps: _Names) -> OrgAgent:
    """The agent registered a few days before the end (a trap: a new agent with little history)."""
    kind = rng.choice(("ci", "etl", "service"))
    app = apps.next()
    if kind == "ci":
        agent = kinds.build_ci(org, rng, f"ci-{app}", app)
    elif kind == "etl":
        agent = kinds.build_etl(org, rng, f"etl-{app}-feed", f"{app}-feed", [f"{app}-exports"])
    else:
        agent = kinds.build_service(org, rng, f"svc-{app}", app)
    agent.active_from = org.end - timedelta(days=rng.randint(3, 5))
    return agent


# -- writing -------------------------------------------------------------------------------------------
def generate(out_dir: Path | str, *, agents: int = 60, weeks: int = 8, seed: int = 1, end: datetime | None = None,
             volume: float = 1.0, jobs: int = 1) -> Scenario:
    """Write the scenario to ``out_dir`` (created; files of an earlier scenario there are replaced)
    with ``jobs`` processes (the output does not depend on how many)."""
    started = time.monotonic()
    root = Path(out_dir)
    (root / "labels.json").unlink(missing_ok=True)  # written last: without it, the scenario is incomplete
    shutil.rmtree(root / "events", ignore_errors=True)
    last = local_day(end or datetime.now(UTC))  # the events end at this local day's midnight
    args = (agents, weeks, seed, last, volume)
    org, labels, extras = build_org(*args)
    _write_config(root, org)
    events, files, spans = _write_events(root / "events", org, extras, args, jobs)
    for label in labels:
        if label.start is None:
            label.start, label.end = spans[label.id]
    scenario = Scenario(root, seed, agents, weeks, volume, at(org.start, 0), at(org.end, 0), at(org.scored_from, 0),
                        events, files, [lb.as_dict() for lb in labels], time.monotonic() - started)
    _write_labels(root / "labels.json", scenario)
    return scenario


def _write_config(root: Path, org: Org) -> None:
    policies = root / "config" / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    for old in policies.glob("*.json"):
        old.unlink()
    entries = []
    for agent in org.agents:
        if agent.statements:
            (policies / f"{agent.name}.json").write_text(json.dumps(agent.policy(), indent=2) + "\n", encoding="utf-8")
        entries.append(agent.entry(f"policies/{agent.name}.json"))
    header = (f"# A generated organisation (pipeline/demo/organisation.py, seed {org.seed}): {len(org.agents)} agents.\n"
              "# Each agent's policy allows what it really does; some allow more than it ever uses.\n")
    (root / "config" / "agents.yaml").write_text(
        header + yaml.safe_dump({"agents": entries}, sort_keys=False, width=120), encoding="utf-8")
    (root / "config" / "trailwarden.yaml").write_text(
        "# Run trailwarden from the scenario's directory: these paths are relative to it.\n"
        "database: data/trailwarden.duckdb\n"
        f"timezone: {BUSINESS_TZ.key}\n"
        "inventory: config/agents.yaml\n"
        "memory_limit: 1GB\n", encoding="utf-8")


def _write_events(folder: Path, org: Org, extras: list[Extra], args: tuple[Any, ...],
                  jobs: int) -> tuple[int, int, dict[str, tuple[datetime, datetime]]]:
    """Every day's events, in files of :data:`AGENTS_PER_FILE` agents, each sorted by time, by
    ``jobs`` processes (each rebuilds the organisation from ``args``: planning is cheap and
    deterministic). Returns the event count, the file count and each label's first and last
    event time."""
    days = [org.start + timedelta(days=d) for d in range((org.end - org.start).days)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_write_day_of, [(args, folder, day) for day in days]))
    else:
        by_day = _extras_by_day(extras)
        results = [_write_day(folder, org, by_day, day) for day in days]
    spans: dict[str, tuple[str, str]] = {}
    for _, _, day_spans in results:
        for label, (first, last) in day_spans.items():
            old = spans.get(label, (first, last))
            spans[label] = (min(old[0], first), max(old[1], last))
    return (sum(r[0] for r in results), sum(r[1] for r in results),
            {k: (_parse(a), _parse(b)) for k, (a, b) in spans.items()})


_BUILT: dict[tuple[Any, ...], tuple[Org, dict[tuple[str, date], list[Extra]]]] = {}


def _write_day_of(job: tuple[tuple[Any, ...], Path, date]) -> tuple[int, int, dict[str, tuple[str, str]]]:
    """:func:`_write_day` in a worker process, with the organisation built once per process."""
    args, folder, day = job
    if args not in _BUILT:
        org, _, extras = build_org(*args)
        _BUILT.clear()
        _BUILT[args] = (org, _extras_by_day(extras))
    org, by_day = _BUILT[args]
    return _write_day(folder, org, by_day, day)


def _extras_by_day(extras: list[Extra]) -> dict[tuple[str, date], list[Extra]]:
    by_day: dict[tuple[str, date], list[Extra]] = defaultdict(list)
    for extra in extras:
        by_day[(extra.agent, extra.day)].append(extra)
    return by_day


def _write_day(folder: Path, org: Org, by_day: dict[tuple[str, date], list[Extra]],
               day: date) -> tuple[int, int, dict[str, tuple[str, str]]]:
    """One local day's files; the event count, file count and the labels' spans that day."""
    cutoff = at(org.end, 0).strftime("%Y-%m-%dT%H:%M:%SZ")
    spans: dict[str, list[str]] = {}
    total = files = 0
    for n in range(0, len(org.agents), AGENTS_PER_FILE):
        chunk = org.agents[n:n + AGENTS_PER_FILE]
        lines = list(_chunk_lines(org, chunk, day, by_day, spans, cutoff, system=n == 0))
        total += _write_file(folder / f"{day:%Y/%m/%d}" / f"part-{n // AGENTS_PER_FILE:03d}.ndjson.gz", lines)
        files += 1
    return total, files, {k: (a, b) for k, (a, b) in spans.items()}


def _chunk_lines(org: Org, chunk: list[OrgAgent], day: date, by_day: dict[tuple[str, date], list[Extra]],
                 spans: dict[str, list[str]], cutoff: str, system: bool) -> Iterator[tuple[str, str]]:
    """(eventTime, JSON line) of the chunk's agents on ``day``; extras widen their label's span."""
    for agent in chunk:
        yield from _lines(kinds.day_events(org, agent, day), cutoff)
        for extra in by_day.get((agent.name, day), []):
            for when, line in _lines(extra.make(org.rng("extra", extra.label, day)), cutoff):
                if extra.label:
                    span = spans.setdefault(extra.label, [when, when])
                    span[0], span[1] = min(span[0], when), max(span[1], when)
                yield when, line
    if system:
        yield from _lines(kinds.system_day(org, day, org.rng("system", day)), cutoff)


def _lines(events: Iterator[Event], cutoff: str) -> Iterator[tuple[str, str]]:
    """(eventTime, JSON) of the events before the scenario's end (an on-call page on the last
    night would run past it)."""
    for ev in events:
        if ev["eventTime"] < cutoff:
            yield ev["eventTime"], json.dumps(ev)


def _write_file(path: Path, lines: list[tuple[str, str]]) -> int:
    """Write the lines in time order as gzipped NDJSON (no name or time in the gzip header, so the
    same lines make the same bytes); returns how many."""
    lines.sort()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as out:
        for _, line in lines:
            out.write(line.encode() + b"\n")
    return len(lines)


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _write_labels(path: Path, scenario: Scenario) -> None:
    """Write ``labels.json`` whole or not at all (it marks a finished scenario)."""
    doc = {"scenario": {"seed": scenario.seed, "agents": scenario.agents, "weeks": scenario.weeks,
                        "volume": scenario.volume, "start": _iso(scenario.start), "end": _iso(scenario.end),
                        "detect_since": _iso(scenario.detect_since), "events": scenario.events,
                        "time_zone": BUSINESS_TZ.key},
           "labels": scenario.labels}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo.organisation", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--volume", type=float, default=1.0)
    parser.add_argument("--end", help="the scenario's end (a date, ISO); default today")
    parser.add_argument("--jobs", type=int, default=1, help="processes writing days in parallel")
    args = parser.parse_args(argv)
    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC) if args.end else None
    try:
        sc = generate(args.out, agents=args.agents, weeks=args.weeks, seed=args.seed, end=end, volume=args.volume,
                      jobs=args.jobs)
    except ValueError as exc:
        print(f"organisation: error: {exc}", file=sys.stderr)
        return 2
    print(f"{sc.events:,} events of {sc.agents} agents over {sc.weeks} weeks ({_iso(sc.start)} .. {_iso(sc.end)}) "
          f"in {sc.files} files, {len(sc.labels)} labels, in {sc.seconds:.1f}s: {sc.root}")
    print(f"score with: detect --since {_iso(sc.detect_since)} --until {_iso(sc.end)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
