"""Rendering of command results, one module per feature (the commands stay thin)."""
