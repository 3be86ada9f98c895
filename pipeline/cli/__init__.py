"""``trading-pipeline``, the pipeline's command line: ``main`` here, the commands in this package's modules."""

from pipeline.cli.app import main

__all__ = ["main"]
