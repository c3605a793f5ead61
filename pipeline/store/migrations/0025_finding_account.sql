-- The account a finding's events happened in (issue 19: `findings --account`): the account most
-- of them were recorded in (recipientAccountId, else the caller's home account), and the home
-- account of most of them (whose credentials made the calls: a raw identity is shown with it).
-- Findings stored before this migration get both from their first 100 events, once.
ALTER TABLE findings ADD COLUMN account VARCHAR;
ALTER TABLE findings ADD COLUMN home_account VARCHAR;
UPDATE findings SET account = b.account, home_account = b.home_account
FROM (
    WITH ids AS (SELECT id, unnest(event_ids[1:100]) AS event_id FROM findings),
    seen AS (SELECT ids.id, coalesce(e.recipient_account_id, e.account_id) AS acted, e.account_id AS home
             FROM ids JOIN events e ON e.event_id = ids.event_id),
    acted AS (SELECT id, acted, count(*) AS n FROM seen WHERE acted IS NOT NULL GROUP BY id, acted
              QUALIFY row_number() OVER (PARTITION BY id ORDER BY n DESC, acted) = 1),
    home AS (SELECT id, home, count(*) AS n FROM seen WHERE home IS NOT NULL GROUP BY id, home
             QUALIFY row_number() OVER (PARTITION BY id ORDER BY n DESC, home) = 1)
    SELECT id, acted.acted AS account, home.home AS home_account FROM acted FULL JOIN home USING (id)
) b
WHERE findings.id = b.id;
