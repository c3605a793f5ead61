-- A finding on events made through role sessions names who is behind them (issue 19): the agent
-- that started the chain of role assumptions (as attributed when the finding was raised), its
-- home account, and the chain of roles (role@account) from it to the acting role.
ALTER TABLE findings ADD COLUMN origin_agent VARCHAR;
ALTER TABLE findings ADD COLUMN origin_account VARCHAR;
ALTER TABLE findings ADD COLUMN chain VARCHAR[];
