-- The alert outbox: one row per message a finding owes a destination (its first alert, then one
-- thread reply each time it grows). Rows move pending -> sending -> sent; a row left in 'sending'
-- by a crash is checked against the channel's history before it is ever posted again.
CREATE TABLE alerts (
    id           VARCHAR PRIMARY KEY,          -- stable: finding, destination, kind, event count
    finding_id   VARCHAR NOT NULL,
    destination  VARCHAR NOT NULL,             -- a Slack channel, or 'console'
    kind         VARCHAR NOT NULL,             -- alert | update
    event_count  BIGINT NOT NULL,              -- the finding's event count this row reports
    status       VARCHAR NOT NULL,             -- pending | sending | sent
    message_key  VARCHAR,                      -- carried in the message metadata while sending
    message_ts   VARCHAR,                      -- Slack's ts of the message that carried it
    thread_ts    VARCHAR,                      -- updates: the ts of the finding's alert
    attempts     INTEGER NOT NULL,
    last_error   VARCHAR,
    created_at   TIMESTAMPTZ NOT NULL,
    sent_at      TIMESTAMPTZ
);
