"""``python -m pipeline`` is ``trailwarden``."""

from pipeline.cli.main import main

main()
