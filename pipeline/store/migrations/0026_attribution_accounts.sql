-- Attribution by account (issue 19): an agent that declares `accounts:` claims its identities
-- and AccessKeys only in those home accounts (userIdentity.accountId). Its claims are kept apart
-- from those of agents without `accounts:`; the `events` view prefers, for the AccessKey and then
-- for the identity, the agent bound to the event's home account over the one bound to none
-- (models.inventory.Inventory.agent_for). The view is rebuilt after migrating.
CREATE TABLE attribution_keys_bound (key VARCHAR NOT NULL, account VARCHAR NOT NULL, agent VARCHAR NOT NULL,
                                     PRIMARY KEY (key, account));
CREATE TABLE attribution_identities_bound (identity VARCHAR NOT NULL, account VARCHAR NOT NULL,
                                           agent VARCHAR NOT NULL, PRIMARY KEY (identity, account));
-- sealed files' per-identity counts by home account too (NULL for files sealed before this)
ALTER TABLE lake_identities ADD COLUMN account_id VARCHAR;
