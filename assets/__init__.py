"""Thin Dagster assets and checks: load inputs from the lake, call ``pipeline``, write, add metadata."""

import warnings

import dagster as dg

# ``backfill_policy`` is a beta parameter of ``@asset`` in Dagster 1.13; single-run backfills are
# a deliberate design choice here (DESIGN.md, "Partitions and backfills"), so say it once, not per asset.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
