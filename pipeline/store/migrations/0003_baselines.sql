-- Learned behaviour per agent (models.baselines.Baseline as JSON), with the history it was fitted
-- on: a window is only ever scored against a baseline fitted on the days before it.
CREATE TABLE baselines (
    agent          VARCHAR NOT NULL,
    history_start  TIMESTAMPTZ NOT NULL,
    history_end    TIMESTAMPTZ NOT NULL,
    timezone       VARCHAR NOT NULL,
    fitted_at      TIMESTAMPTZ NOT NULL,
    model          JSON NOT NULL,
    PRIMARY KEY (agent, history_end, history_start, timezone)
);
