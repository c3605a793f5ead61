"""The `trailwarden` command: thin commands over the library."""
