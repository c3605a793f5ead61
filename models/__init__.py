"""What trailwarden knows about an agent: its declared scope and its learned behaviour."""
