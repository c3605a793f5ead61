-- Role-session lineage (issue 19): every AssumeRole call the store holds becomes a session, and
-- every event made by an assumed-role session is linked to the session it was made in, so the
-- agent that started a chain of role assumptions (its origin) is known for what the roles did.
-- Both tables are derived from events (pipeline/store/sessions.py) and can be rebuilt from them.

CREATE TABLE role_sessions (
    session_id       VARCHAR NOT NULL,      -- the eventId of the AssumeRole call
    started          TIMESTAMPTZ NOT NULL,  -- its eventTime
    expires          TIMESTAMPTZ,           -- started + DurationSeconds (default 3,600 s)
    role_account     VARCHAR,               -- from the role ARN: acs:ram::<account>:role/<name>
    role_name        VARCHAR,
    session_name     VARCHAR,               -- RoleSessionName
    sts_key          VARCHAR,               -- responseElements.Credentials.AccessKeyId, when recorded
    caller_identity  VARCHAR NOT NULL,      -- who called AssumeRole (ram-user:x, role:y, system:...)
    caller_key       VARCHAR,               -- the AccessKey of the call (LTAI... or STS....)
    caller_account   VARCHAR,               -- the caller's home account (userIdentity.accountId)
    caller_session   VARCHAR,               -- when the caller is itself a role session: that session
    source_ip        VARCHAR,
    status           VARCHAR NOT NULL,      -- 'ok', or 'unlinkable' (reason says why)
    reason           VARCHAR,
    -- the first caller of the chain that is not a role session (the origin), once resolved
    origin_identity  VARCHAR,
    origin_key       VARCHAR,
    origin_account   VARCHAR,
    origin_status    VARCHAR,               -- 'known', or why it is not (a session started before the store)
    origin_session   VARCHAR,               -- the first session of the chain (its AssumeRole's caller is the origin)
    chain            VARCHAR[]              -- the roles from the origin to this one, as role@account
);

CREATE TABLE session_links (
    event_id    VARCHAR NOT NULL,
    event_time  TIMESTAMPTZ NOT NULL,
    session_id  VARCHAR,                    -- NULL unless status = 'linked'
    status      VARCHAR NOT NULL,           -- 'linked', 'ambiguous' or 'no-session'
    reason      VARCHAR                     -- linked: how ('sts-key', 'created', 'window',
                                            -- 'window+network'); otherwise why not
);
