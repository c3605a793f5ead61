-- events_hot's JSON payload columns (request_parameters, response_elements, additional_event_data)
-- were VIRTUAL columns over raw. DuckDB evaluates a table's generated columns on every INSERT (to
-- check that they can be computed), so each ingested event's raw JSON was parsed three more times
-- for values nothing stores: ~6.5 us per event, a tenth of ingest's CPU (issue 18, README
-- Performance). The `events` view computes the same three columns from raw, for hot and sealed
-- events alike; readers of `events` see no change. Nothing is rewritten: virtual columns have no
-- storage.
ALTER TABLE events_hot DROP COLUMN request_parameters;
ALTER TABLE events_hot DROP COLUMN response_elements;
ALTER TABLE events_hot DROP COLUMN additional_event_data;
