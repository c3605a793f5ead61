"""trailwarden's data plumbing: config, sources, normalizing, the DuckDB store and the CLI."""

__version__ = "0.1.0"
