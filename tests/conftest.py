"""Shared fixtures: a small configuration over the bundled sample, temporary lakes and instances.

The suite runs in parallel (pytest-xdist, ``addopts`` in pyproject.toml: one worker per core, each
test module on one worker): every test writes under its own ``tmp_path``, servers listen on free
ports, and each worker process has its own ``DAGSTER_HOME`` (below).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

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

#: Test modules with the longest wall time (``pytest --durations``, docs/benchmarks.md "Test suite"),
#: longest first. They are collected first, so that xdist's per-module distribution starts them at
#: once and the many short modules fill in at the end: the workers finish together. Order only.
SLOW_MODULES = (
    "test_backtest_cli.py", "test_cli.py", "test_daily_job.py", "test_pipeline_integrity.py", "test_ui_browser.py",
    "test_backfill_cli.py", "test_carver_system_config.py", "test_dead_run.py", "test_lake_s3_daily.py",
    "test_disk_full.py", "test_bad_print_property.py", "test_missing_bars.py", "test_status_command.py",
    "test_warehouse_examples.py", "test_instrument_weight_methods.py", "test_backtest_compounding.py",
    "test_ui_host.py", "test_ui.py", "test_order_pacing.py", "test_bad_source_files.py", "test_broken_lake_file.py",
    "test_combination_options.py", "test_lying_broker.py", "test_schedules.py", "test_pysystemtrade_source.py",
    "test_lake_killed_writer.py", "test_orders.py",
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "shared_data(*parts): the test reads SHARED_DATA/parts (see require_shared_data)")


def pytest_collection_modifyitems(config, items):
    """The modules of ``SLOW_MODULES`` first, in that order; every module keeps its own test order."""
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """``@pytest.mark.shared_data(*parts)``: check the data before any fixture reads it."""
    for mark in item.iter_markers("shared_data"):
        require_shared_data(*mark.args)


def require_shared_data(*parts: str | Path, pattern: str | None = None) -> Path:
    """``SHARED_DATA / parts`` (an absolute path is taken as it is), or with ``pattern`` its first
    entry matching that glob, for a test of the real market data in ``../shared/data``.

    When it is absent the test is skipped on a developer's machine and FAILS under ``CI`` (as the
    PostgreSQL and Chromium tests do): CI must check fidelity on the real data on every run, never
    pass by skipping. For a whole test, ``@pytest.mark.shared_data(*parts)`` calls this at setup.
    """
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        _shared_data_absent(f"shared data {path} is absent")
    if pattern is None:
        return path
    found = sorted(path.glob(pattern))
    if not found:
        _shared_data_absent(f"shared data {path / pattern} is absent")
    return found[0]


def _shared_data_absent(what: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI: {what}; CI runs the real-data tests (../shared/data, see its README.md)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session", autouse=True)
def dagster_home_per_worker(tmp_path_factory) -> Path:
    """A ``DAGSTER_HOME`` of this test process (tests that run Dagster set their own under ``tmp_path``
    or use ``dg.instance_for_test``): nothing reaches ``./.dagster_home`` or a developer's exported
    instance, and no two xdist workers share one."""
    home = tmp_path_factory.mktemp("dagster_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        yield home


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
