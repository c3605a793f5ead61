-- The event store: one row per ActionTrail eventId, typed columns + the raw JSON.
-- eventId is unique by construction (pipeline.store.Store.insert_events deduplicates); there is
-- deliberately no index: see that method for the measured reasons.
-- Times are TIMESTAMPTZ in UTC. Column order matches pipeline.events.Event, then store columns.
CREATE TABLE events (
    event_id              VARCHAR NOT NULL,
    event_time            TIMESTAMPTZ NOT NULL,
    event_name            VARCHAR,
    event_type            VARCHAR,
    event_rw              VARCHAR,
    event_source          VARCHAR,
    event_version         VARCHAR,
    service_name          VARCHAR,
    service_code          VARCHAR,            -- requestParameters.ServiceCode (the RAM code)
    acs_region            VARCHAR,
    is_global             BOOLEAN,
    source_ip             VARCHAR,
    ip_version            TINYINT,
    secure_transport      BOOLEAN,            -- additionalEventData.Scheme https/http
    user_agent            VARCHAR,
    request_id            VARCHAR,
    api_version           VARCHAR,
    error_code            VARCHAR,
    error_message         VARCHAR,
    identity_type         VARCHAR,
    identity              VARCHAR NOT NULL,
    account_id            VARCHAR,
    principal_id          VARCHAR,
    user_name             VARCHAR,
    role_name             VARCHAR,
    role_id               VARCHAR,
    session_name          VARCHAR,
    access_key_id         VARCHAR,
    mfa_authenticated     BOOLEAN,
    session_created       TIMESTAMPTZ,
    recipient_account_id  VARCHAR,
    vpc_id                VARCHAR,
    resource_type         VARCHAR,
    resource_name         VARCHAR,
    referenced_resources  JSON,               -- normalized: {"<type>": ["<name>", ...]}
    raw                   JSON USING COMPRESSION zstd,   -- the event as received (NULL once retention drops it)
    agent                 VARCHAR NOT NULL,   -- inventory name, or the raw identity when unregistered
    source                VARCHAR NOT NULL,   -- the configured source name that delivered it first
    ingested_at           TIMESTAMPTZ NOT NULL,
    -- Variable payloads, read from raw on demand (storing copies would double ingest cost).
    request_parameters    JSON AS (json_extract(raw, '$.requestParameters')) VIRTUAL,
    response_elements     JSON AS (json_extract(raw, '$.responseElements')) VIRTUAL,
    additional_event_data JSON AS (json_extract(raw, '$.additionalEventData')) VIRTUAL
);

-- Input that could not become an event, with the reason. Keyed by a hash of where it came from
-- and what it was, so re-reading the same bad input never makes a second row.
CREATE TABLE quarantine (
    id           VARCHAR PRIMARY KEY,
    source       VARCHAR NOT NULL,
    location     VARCHAR NOT NULL,            -- file:line, shard/cursor, page ...
    reason       VARCHAR NOT NULL,
    raw          VARCHAR NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL
);

-- Per source partition (SLS shard, LookupEvents region, ...): where to resume. Written in the
-- same transaction as the events it covers.
CREATE TABLE ingest_state (
    source       VARCHAR NOT NULL,
    partition    VARCHAR NOT NULL,
    cursor       VARCHAR,
    watermark    TIMESTAMPTZ,                 -- newest eventTime ingested from this partition
    events       BIGINT NOT NULL DEFAULT 0,   -- new events stored from this partition, all time
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, partition)
);

-- Files already ingested, by content hash: the files source's cursor.
CREATE TABLE ingested_files (
    sha256       VARCHAR PRIMARY KEY,
    source       VARCHAR NOT NULL,
    path         VARCHAR NOT NULL,
    bytes        BIGINT NOT NULL,
    events       BIGINT NOT NULL,
    new          BIGINT NOT NULL,
    duplicates   BIGINT NOT NULL,
    quarantined  BIGINT NOT NULL,
    ingested_at  TIMESTAMPTZ NOT NULL
);

CREATE SEQUENCE runs_id_seq;

-- Every command that writes to the store, with its counts and error.
CREATE TABLE runs (
    id           BIGINT PRIMARY KEY DEFAULT nextval('runs_id_seq'),
    command      VARCHAR NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    status       VARCHAR NOT NULL,            -- running | ok | failed
    counts       JSON,
    error        VARCHAR,
    pid          INTEGER
);
