"""The small core everything may import: errors, time, config, output, inert text, redaction."""
