"""Scoring: detect, backtest, findings and what the detectors learn."""
