-- Retention may drop the raw JSON of old events while their typed columns stay.
ALTER TABLE events ALTER COLUMN raw DROP NOT NULL;
