"""The DuckDB store: schema and migrations, runs, snapshots, retention, attribution, status."""
