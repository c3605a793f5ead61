"""Alerting: findings to Slack (or the console) exactly once, readable and inert."""
