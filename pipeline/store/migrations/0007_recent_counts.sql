-- Events each source partition committed, per minute over the last hour (JSON {"<unix minute>": n}),
-- written with the partition's cursor: `status` shows events in the last hour per shard.
ALTER TABLE ingest_state ADD COLUMN recent VARCHAR;
