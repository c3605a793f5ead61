-- Baselines from daily aggregates (issue 18 item 3): once a UTC day has ended, the per-day rows every
-- learned part fits from are kept (one table per part and version, created by
-- pipeline.detection.features: features_<part>_<version>), and registered here. A refit reads the
-- registered days' rows instead of their events; a day whose rows were built with another version
-- of the part's SQL, another business time zone or another attribution (inventory), or whose
-- events (or the day before's: sliding windows look back across midnight) have changed in number
-- since (late events), is read from its events until it is built again.
CREATE TABLE feature_days (
    part VARCHAR NOT NULL,          -- 'shared', or the learned part's class name
    day DATE NOT NULL,              -- the UTC day
    version VARCHAR NOT NULL,       -- a digest of the part's daily SQL
    timezone VARCHAR NOT NULL,      -- the business time zone its local days are in
    attribution VARCHAR NOT NULL,   -- the inventory fingerprint the events were attributed with
    rows BIGINT NOT NULL,
    events BIGINT NOT NULL,         -- the day's events when built
    events_before BIGINT NOT NULL,  -- the day before's
    built_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (part, day)
);

-- The (UTC day, agent) cells of the events a finding lists ('YYYY-MM-DD|agent'): a refit reads
-- those cells from learnable events instead of their stored rows. A finding may list another
-- agent's events (an administrator who removed a user's MFA), so its own agent is not enough.
-- Recorded when findings are saved; here for the findings stored before.
ALTER TABLE findings ADD COLUMN event_cells VARCHAR[];
UPDATE findings SET event_cells = c.cells FROM (
    SELECT f.id, list(DISTINCT CAST(CAST(timezone('UTC', e.event_time) AS DATE) AS VARCHAR) || '|' || e.agent) AS cells
    FROM (SELECT id, unnest(event_ids) AS event_id FROM findings) f JOIN events e USING (event_id)
    GROUP BY f.id) c
WHERE findings.id = c.id;
