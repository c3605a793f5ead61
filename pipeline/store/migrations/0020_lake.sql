-- The tiered store (pipeline/store/lake.py). Recent events stay in the DuckDB file (events_hot);
-- sealed UTC days become immutable zstd Parquet files under the lake directory beside the store,
-- registered in lake_files. `events` becomes a view over both, built from the registered files
-- (never a glob), with each event's agent derived at read time from the identity->agent mapping
-- (attribution_keys, attribution_identities), so an inventory change writes O(agents) rows.
ALTER TABLE events RENAME TO events_hot;

-- One row per sealed Parquet file: path relative to the lake directory.
CREATE TABLE lake_files (
    path       VARCHAR PRIMARY KEY,
    day        DATE NOT NULL,                 -- the UTC day its events belong to
    rows       BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    sha256     VARCHAR NOT NULL,
    sealed_at  TIMESTAMPTZ NOT NULL,
    raw_dropped BOOLEAN NOT NULL DEFAULT false  -- retention dropped its raw JSON (evidence excepted)
);

-- Per sealed file: events per identity, AccessKey and agent stored at ingest, so the inventory
-- safety check and the count of re-attributed events never scan sealed events.
CREATE TABLE lake_identities (
    path           VARCHAR NOT NULL,
    identity       VARCHAR NOT NULL,
    access_key_id  VARCHAR,
    agent          VARCHAR NOT NULL,
    events         BIGINT NOT NULL
);

-- Files no longer registered (compacted, pruned): deleted once no reader's snapshot can name them.
CREATE TABLE lake_retired (
    path        VARCHAR PRIMARY KEY,
    retired_at  TIMESTAMPTZ NOT NULL
);

-- The inventory's identity map, versioned with its fingerprint: AccessKey ids first, then user
-- or role identities. Until a version is written, the agent stored at ingest is read.
CREATE TABLE attribution_keys (key VARCHAR PRIMARY KEY, agent VARCHAR NOT NULL);
CREATE TABLE attribution_identities (identity VARCHAR PRIMARY KEY, agent VARCHAR NOT NULL);
CREATE TABLE attribution_version (fingerprint VARCHAR NOT NULL, written_at TIMESTAMPTZ NOT NULL);

CREATE VIEW events AS
SELECT e.event_id, e.event_time, e.event_name, e.event_type, e.event_rw, e.event_source, e.event_version,
       e.service_name, e.service_code, e.acs_region, e.is_global, e.source_ip, e.ip_version,
       e.secure_transport, e.user_agent, e.request_id, e.api_version, e.error_code, e.error_message,
       e.identity_type, e.identity, e.account_id, e.principal_id, e.user_name, e.role_name, e.role_id,
       e.session_name, e.access_key_id, e.mfa_authenticated, e.session_created, e.recipient_account_id,
       e.vpc_id, e.resource_type, e.resource_name, e.referenced_resources, e.raw,
       CASE WHEN v.ready THEN coalesce(k.agent, n.agent, e.identity) ELSE e.agent END AS agent,
       e.source, e.ingested_at,
       json_extract(e.raw, '$.requestParameters') AS request_parameters,
       json_extract(e.raw, '$.responseElements') AS response_elements,
       json_extract(e.raw, '$.additionalEventData') AS additional_event_data
FROM (SELECT event_id, event_time, event_name, event_type, event_rw, event_source, event_version,
       service_name, service_code, acs_region, is_global, source_ip, ip_version,
       secure_transport, user_agent, request_id, api_version, error_code, error_message,
       identity_type, identity, account_id, principal_id, user_name, role_name, role_id,
       session_name, access_key_id, mfa_authenticated, session_created, recipient_account_id,
       vpc_id, resource_type, resource_name, referenced_resources, raw, agent, source, ingested_at
      FROM events_hot) AS e
CROSS JOIN (SELECT count(*) > 0 AS ready FROM attribution_version) AS v
LEFT JOIN attribution_keys k ON k.key = e.access_key_id
LEFT JOIN attribution_identities n ON n.identity = e.identity;
