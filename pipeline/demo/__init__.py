"""The demo: synthetic traffic for the sample inventory, built into a store."""
