"""``python -m pipeline`` is ``trailwarden``."""

from pipeline.cli import main

main()
