-- What RAM grants (issue 17). Each `ram sync` (or the demo) adds one dated snapshot; a later one
-- never overwrites an earlier one. Policy and trust documents are stored once, by their SHA-256.
CREATE SEQUENCE ram_snapshot_ids START 1;
CREATE TABLE ram_snapshots (
    id           BIGINT PRIMARY KEY DEFAULT nextval('ram_snapshot_ids'),
    taken_at     TIMESTAMPTZ NOT NULL,
    account      VARCHAR,
    source       VARCHAR NOT NULL,            -- ram (read from the API) | demo
    users        INTEGER NOT NULL,
    groups       INTEGER NOT NULL,
    roles        INTEGER NOT NULL,
    policies     INTEGER NOT NULL,
    access_keys  INTEGER NOT NULL,
    errors       INTEGER NOT NULL,            -- calls that failed for good (ram_sync_errors)
    calls        INTEGER NOT NULL,            -- API requests made, retries included
    seconds      DOUBLE
);
CREATE TABLE ram_documents (                  -- policy and trust documents, each stored once
    sha256       VARCHAR PRIMARY KEY,
    document     VARCHAR NOT NULL
);
CREATE TABLE ram_principals (
    snapshot_id    BIGINT NOT NULL,
    kind           VARCHAR NOT NULL,          -- user | group | role
    name           VARCHAR NOT NULL,
    principal_id   VARCHAR,
    arn            VARCHAR,
    created_at     TIMESTAMPTZ,
    console        BOOLEAN,                   -- users: a console password; NULL unknown
    mfa            BOOLEAN,                   -- users: an MFA device; NULL unknown
    last_login     TIMESTAMPTZ,
    trust_sha256   VARCHAR,                   -- roles: the trust policy (ram_documents)
    service_linked BOOLEAN
);
CREATE TABLE ram_memberships (snapshot_id BIGINT NOT NULL, group_name VARCHAR NOT NULL, user_name VARCHAR NOT NULL);
CREATE TABLE ram_attachments (
    snapshot_id  BIGINT NOT NULL,
    principal    VARCHAR NOT NULL,            -- user/NAME | group/NAME | role/NAME
    policy_type  VARCHAR NOT NULL,            -- System | Custom
    policy_name  VARCHAR NOT NULL
);
CREATE TABLE ram_policies (                   -- every attached policy, with its default version
    snapshot_id     BIGINT NOT NULL,
    policy_type     VARCHAR NOT NULL,
    policy_name     VARCHAR NOT NULL,
    version         VARCHAR,
    updated_at      TIMESTAMPTZ,
    document_sha256 VARCHAR,                  -- NULL: not read (error says why)
    error           VARCHAR
);
CREATE TABLE ram_access_keys (
    snapshot_id    BIGINT NOT NULL,
    user_name      VARCHAR NOT NULL,
    access_key_id  VARCHAR NOT NULL,
    status         VARCHAR NOT NULL,          -- Active | Inactive
    created_at     TIMESTAMPTZ,
    last_used      TIMESTAMPTZ
);
CREATE TABLE ram_sync_errors (
    snapshot_id  BIGINT NOT NULL,
    principal    VARCHAR NOT NULL,
    call         VARCHAR NOT NULL,
    code         VARCHAR NOT NULL,
    message      VARCHAR NOT NULL
);

-- `trailwarden contain`: one row per containment of an agent, and one per call it made (or undid),
-- each written and committed before the call and completed after it.
CREATE TABLE containments (
    id               VARCHAR PRIMARY KEY,     -- ctn-<8 hex>
    agent            VARCHAR NOT NULL,
    reason           VARCHAR NOT NULL,
    created_by       VARCHAR NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ,
    status           VARCHAR NOT NULL,        -- running | failed | contained | undoing | undo_failed | undone
    forced           BOOLEAN NOT NULL,        -- a protected agent, contained with --force
    evidence_path    VARCHAR,
    evidence_sha256  VARCHAR,
    undo_reason      VARCHAR,
    undone_by        VARCHAR,
    undone_at        TIMESTAMPTZ
);
CREATE SEQUENCE containment_step_ids START 1;
CREATE TABLE containment_steps (
    id              BIGINT PRIMARY KEY DEFAULT nextval('containment_step_ids'),
    containment_id  VARCHAR NOT NULL,
    action          VARCHAR NOT NULL,         -- write_evidence | create_deny_policy | deactivate_key | attach_deny
                                              -- | reactivate_key | detach_deny
    target          VARCHAR NOT NULL,         -- user/NAME, role/NAME, key/<id>, a file
    user_name       VARCHAR,                  -- for a key: its RAM user
    status          VARCHAR NOT NULL,         -- calling | done | already | failed | gone
    result          VARCHAR,                  -- what the API said (or the error)
    undoes          BIGINT,                   -- for reactivate_key / detach_deny: the step reversed
    called_at       TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ
);
