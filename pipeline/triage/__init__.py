"""The finding lifecycle and suppressions."""
