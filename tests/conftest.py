"""Shared fixtures: a small configuration over the bundled sample, temporary lakes and instances."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

# CI replays the same examples on every run (derandomize), so a red CI is reproducible and never
# a coin toss; locally hypothesis keeps exploring new examples.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

from pipeline.config import DEFAULT_CONFIG_PATH

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Five instruments of the bundled sample, one with a late start (USMV lists in 2014).
SMALL_UNIVERSE = ["AAPL", "JPM", "XOM", "KO", "USMV"]
LATEST_SAMPLE_SESSION = "2022-12-28"


def write_config(folder: Path, symbols=SMALL_UNIVERSE, **overrides) -> Path:
    """A config file: the bundled default restricted to ``symbols``, with ``overrides`` merged."""
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["instruments"] = [i for i in raw["instruments"] if i["symbol"] in symbols] or [
        {"symbol": s, "sec_type": "STK", "asset_class": "equity"} for s in symbols
    ]
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    raw["lake_root"] = str(folder / "lake")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def small_config(tmp_path) -> Path:
    return write_config(tmp_path)
