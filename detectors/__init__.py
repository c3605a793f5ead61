"""Detectors: one module per detector, each comparing events with the agent models and returning
findings. Detectors never talk to Slack, SLS or the scheduler.

The first detectors arrive with the declared-scope and learned-behaviour work (issues 3 and 4);
until then the pipeline ingests and stores, and ``trailwarden demo`` reports activity only.
"""
