-- Incidents (issue 16): the findings of one agent that overlap or follow each other closely are one
-- incident, with one severity and one headline; findings point to it. Numbered after the issue so
-- it cannot collide with a migration written at the same time (the store applies every number it
-- has not recorded, in order).
CREATE TABLE incidents (
    id            VARCHAR PRIMARY KEY,        -- inc-<10 hex>, from its first finding's id: stable
    agent         VARCHAR NOT NULL,
    severity      VARCHAR NOT NULL,           -- the highest of its findings (suppressed ones aside)
    status        VARCHAR NOT NULL,           -- from its findings: open | acknowledged | resolved | false_positive | suppressed
    first_seen    TIMESTAMPTZ NOT NULL,
    last_seen     TIMESTAMPTZ NOT NULL,
    headline      VARCHAR NOT NULL,           -- what happened, most harmful first, then where from and when
    summary       JSON NOT NULL,              -- the parts of the headline, and the AccessKeys used
    finding_count INTEGER NOT NULL,
    event_count   BIGINT NOT NULL,
    detectors     VARCHAR[] NOT NULL,
    version       BIGINT NOT NULL,            -- +1 on every change its Slack message shows
    status_by     VARCHAR,                    -- who set the status last, and when
    status_at     TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
ALTER TABLE findings ADD COLUMN incident_id VARCHAR;

-- The top-level Slack message of an incident per destination: updated in place (chat.update)
-- until it shows the incident's current version.
CREATE TABLE incident_messages (
    incident_id   VARCHAR NOT NULL,
    destination   VARCHAR NOT NULL,
    channel_id    VARCHAR,
    message_ts    VARCHAR NOT NULL,
    shown_version BIGINT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (incident_id, destination)
);

-- Triage from Slack: every interaction applied, once. A retried or duplicated envelope has the same
-- key and changes nothing.
CREATE TABLE slack_interactions (
    key           VARCHAR PRIMARY KEY,
    kind          VARCHAR NOT NULL,           -- button | suppress
    user_id       VARCHAR NOT NULL,
    user_name     VARCHAR,
    action        VARCHAR,                    -- acknowledged | resolved | false_positive | suppress
    incident_id   VARCHAR,
    outcome       VARCHAR NOT NULL,           -- applied | unchanged | refused
    answer        VARCHAR,                    -- what the user was told (ephemeral)
    received_at   TIMESTAMPTZ NOT NULL,
    applied_at    TIMESTAMPTZ NOT NULL,
    answered_at   TIMESTAMPTZ
);
