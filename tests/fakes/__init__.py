"""In-process fakes of the services trailwarden talks to, speaking their real wire protocols."""
