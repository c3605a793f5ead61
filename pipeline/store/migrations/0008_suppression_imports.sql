-- `suppress import` never overwrites a suppression: a changed entry ends the current row (removed
-- by the importer, "replaced by import") and is inserted as a new row that names it. Rows loaded
-- from a file record who imported them and when (created_by is what the file says).
ALTER TABLE suppressions ADD COLUMN imported_by VARCHAR;     -- NULL: added with `suppress add`
ALTER TABLE suppressions ADD COLUMN imported_at TIMESTAMPTZ;
ALTER TABLE suppressions ADD COLUMN replaces VARCHAR;        -- the id of the version this one replaced
