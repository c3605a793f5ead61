"""Moving ActionTrail events in: sources, parsing, normalizing, batching, the writer."""
