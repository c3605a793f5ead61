"""What an isolation forest over per-agent-hour feature vectors would add to the learned-behaviour
detectors (issue 15, item 7), measured on an organisation scenario already run by
``benchmarks/org_eval.py`` (its ``data/trailwarden.duckdb`` and ``labels.json``).

    pip install scikit-learn   # not a dependency of trailwarden: see the README
    python benchmarks/isolation_forest_eval.py SCENARIO_DIR

Each (agent, clock hour) becomes a vector of what the plain statistics also look at, relative to
the agent's own history: log calls against its busiest hour, distinct APIs against its widest
hour, services, failure and write shares, networks, clients and APIs first seen in the last week,
and whether the local hour is one it rarely keeps. A forest is fitted on the history's hours and
scores the detect window's; the script prints the top-ranked hours with their labels and how many
incidents, traps and unlabelled hours the top 10/20/40/80 hold.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

FEATURES = ["rel_calls", "rel_apis", "svcs", "fail", "writes", "new_nets", "new_clients", "new_apis", "rare_hour"]
_HOURS = r"""
WITH e AS (SELECT agent, time_bucket(INTERVAL 1 HOUR, event_time) AS h, event_time,
                  service_name || ':' || event_name AS api, service_name AS svc,
                  regexp_replace(source_ip, '\.[0-9]+$', '.0/24') AS net, split_part(user_agent, '/', 1) AS ua,
                  error_code IS NOT NULL AS failed, event_rw = 'Write' AS w FROM events),
start AS (SELECT min(event_time) + INTERVAL 7 DAY AS s FROM events),
fn AS (SELECT agent, net, min(event_time) AS f FROM e GROUP BY ALL),
fu AS (SELECT agent, ua, min(event_time) AS f FROM e GROUP BY ALL),
fa AS (SELECT agent, api, min(event_time) AS f FROM e GROUP BY ALL)
SELECT e.agent, e.h, count(*) AS calls, count(DISTINCT e.api) AS apis, count(DISTINCT svc) AS svcs,
       avg(failed::INT) AS fail, avg(w::INT) AS writes,
       count(DISTINCT e.net) FILTER (WHERE fn.f >= e.h - INTERVAL 7 DAY AND fn.f > (SELECT s FROM start)) AS new_nets,
       count(DISTINCT e.ua) FILTER (WHERE fu.f >= e.h - INTERVAL 7 DAY AND fu.f > (SELECT s FROM start)) AS new_clients,
       count(DISTINCT e.api) FILTER (WHERE fa.f >= e.h - INTERVAL 7 DAY AND fa.f > (SELECT s FROM start)) AS new_apis,
       hour(timezone(?, e.h)) AS hod
FROM e JOIN fn USING (agent, net) JOIN fu USING (agent, ua) JOIN fa USING (agent, api)
GROUP BY ALL
"""


def main() -> None:
    from sklearn.ensemble import IsolationForest

    scenario = Path(sys.argv[1])
    doc = json.loads((scenario / "labels.json").read_text(encoding="utf-8"))
    labels, meta = doc["labels"], doc["scenario"]
    con = duckdb.connect(str(scenario / "data" / "trailwarden.duckdb"), read_only=True)
    started = time.monotonic()
    df = con.execute(_HOURS, [meta.get("time_zone", "UTC")]).df()
    df["h"] = pd.to_datetime(df["h"], utc=True)
    cut = pd.Timestamp(meta["detect_since"])
    history = df[df["h"] < cut]
    peaks = history.groupby("agent").agg(xc=("calls", "max"), xa=("apis", "max"))
    df = df.join(peaks, on="agent").join(history.groupby(["agent", "hod"]).size().rename("hod_n"), on=["agent", "hod"])
    df["rel_calls"] = np.log1p(df["calls"]) - np.log1p(df["xc"].fillna(1))
    df["rel_apis"] = df["apis"] - df["xa"].fillna(1)
    df["rare_hour"] = (df["hod_n"].fillna(0) < 3).astype(int)
    x = df[FEATURES].fillna(0).to_numpy(float)
    train = (df["h"] < cut).to_numpy()
    forest = IsolationForest(n_estimators=200, random_state=0).fit(x[train])
    df["score"] = -forest.score_samples(x)
    print(f"{len(df):,} agent-hours, features and forest in {time.monotonic() - started:.1f}s")
    test = df[~train].sort_values("score", ascending=False)
    test = test.assign(label=[_label(labels, r.agent, r.h) for r in test.itertuples()])
    for r in test.head(20).itertuples():
        print(f"{r.score:.3f} {r.agent:28} {r.h:%m-%d %H}h {r.label:34} "
              + " ".join(f"{f}={getattr(r, f):.2g}" for f in FEATURES))
    for k in (10, 20, 40, 80):
        top = test.head(k)["label"]
        incidents = sorted({x.split(":")[0] for x in top if x.startswith("incident")})
        traps = sorted({x.split(":")[0] for x in top if x.startswith("trap")})
        print(f"top {k}: incidents {len(incidents)} {incidents}; traps {len(traps)} {traps}; unlabelled {int((top == '-').sum())}")


def _label(labels: list[dict[str, str]], agent: str, hour: pd.Timestamp) -> str:
    for lab in labels:
        if lab["agent"] == agent and lab["start"] and pd.Timestamp(lab["start"]) < hour + pd.Timedelta(hours=1) \
                and pd.Timestamp(lab["end"]) >= hour:
            return f"{lab['id']}:{lab['kind']}"
    return "-"


if __name__ == "__main__":
    main()
