-- The organisation's accounts as the Resource Directory lists them (issue 19). Each `accounts sync`
-- adds one dated sync with its accounts, written in one transaction; earlier syncs are kept.
CREATE SEQUENCE account_sync_ids START 1;
CREATE TABLE account_syncs (
    id                   BIGINT PRIMARY KEY DEFAULT nextval('account_sync_ids'),
    taken_at             TIMESTAMPTZ NOT NULL,
    directory_id         VARCHAR NOT NULL,    -- rd-...
    master_account_id    VARCHAR,             -- the management account
    master_account_name  VARCHAR,
    accounts             INTEGER NOT NULL,
    calls                INTEGER NOT NULL,    -- API requests made, retries included
    seconds              DOUBLE
);
CREATE TABLE directory_accounts (
    sync_id       BIGINT NOT NULL,
    account_id    VARCHAR NOT NULL,
    display_name  VARCHAR,
    type          VARCHAR,                    -- ResourceAccount | CloudAccount
    status        VARCHAR,                    -- CreateSuccess, PromoteSuccess...
    join_method   VARCHAR,                    -- created | invited
    join_time     TIMESTAMPTZ,
    folder_id     VARCHAR,
    path          VARCHAR,                    -- ResourceDirectoryPath
    PRIMARY KEY (sync_id, account_id)
);
