-- What the detectors found. A finding is one thing worth a human's attention: one agent, one
-- detector, one dedup key (an action, a burst, an identity...), with the events behind it.
CREATE TABLE findings (
    id           VARCHAR PRIMARY KEY,         -- stable across re-runs (detectors.base.finding_id)
    detector     VARCHAR NOT NULL,
    agent        VARCHAR NOT NULL,
    severity     VARCHAR NOT NULL,            -- low | medium | high | critical
    score        DOUBLE NOT NULL,             -- 0..1
    first_seen   TIMESTAMPTZ NOT NULL,
    last_seen    TIMESTAMPTZ NOT NULL,
    summary      VARCHAR NOT NULL,
    event_ids    VARCHAR[] NOT NULL,          -- up to 1,000; event_count has the total
    event_count  BIGINT NOT NULL,
    evidence     JSON NOT NULL,
    status       VARCHAR NOT NULL,            -- open | acknowledged | resolved | false_positive | suppressed
    dedup_key    VARCHAR NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    run_id       BIGINT
);

-- Small named state values, e.g. how far `detect` without flags has scored.
CREATE TABLE pipeline_state (
    name         VARCHAR PRIMARY KEY,
    value        VARCHAR,
    updated_at   TIMESTAMPTZ NOT NULL
);
