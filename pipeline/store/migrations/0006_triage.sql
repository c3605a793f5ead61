-- Triage. Every status change of a finding is a row here (never overwritten): who, when, why.
-- findings.status holds the current one.
CREATE SEQUENCE finding_status_change_ids START 1;
CREATE TABLE finding_status_changes (
    id           BIGINT PRIMARY KEY DEFAULT nextval('finding_status_change_ids'),
    finding_id   VARCHAR NOT NULL,
    old_status   VARCHAR NOT NULL,
    new_status   VARCHAR NOT NULL,            -- acknowledged | resolved | false_positive | suppressed
    changed_by   VARCHAR NOT NULL,
    reason       VARCHAR NOT NULL,
    changed_at   TIMESTAMPTZ NOT NULL
);

-- "This is expected": findings matching an active suppression are stored with status
-- 'suppressed' and its id, and not alerted. Removed and expired ones stay, for the record.
CREATE TABLE suppressions (
    id             VARCHAR PRIMARY KEY,       -- sup-<8 hex>, also the key in suppressions.yaml
    detector       VARCHAR NOT NULL,
    agent          VARCHAR,                   -- NULL: every agent
    action         VARCHAR,                   -- RAM action, '*' wildcards (ecs:Describe*)
    source_cidr    VARCHAR,                   -- every event's source IP inside it
    error_code     VARCHAR,
    reason         VARCHAR NOT NULL,
    created_by     VARCHAR NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,      -- 90 days unless said otherwise: no silent forever
    removed_by     VARCHAR,
    removed_at     TIMESTAMPTZ,
    removed_reason VARCHAR
);

ALTER TABLE findings ADD COLUMN suppression_id VARCHAR;  -- set when stored as 'suppressed'
ALTER TABLE findings ADD COLUMN previous_id VARCHAR;     -- a re-fire: the resolved finding before it
ALTER TABLE alerts ADD COLUMN change_id BIGINT;          -- kind 'status': the change it reports
