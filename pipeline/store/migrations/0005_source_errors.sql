-- The last error each source partition hit (NULL once it succeeds again), for `status`.
ALTER TABLE ingest_state ADD COLUMN last_error VARCHAR;
ALTER TABLE ingest_state ADD COLUMN last_error_at TIMESTAMPTZ;
