"""``python -m pipeline`` is ``trailwarden``."""

from pipeline.cli.app import main

main()
