"""``trading-pipeline backfill`` as a user runs it: one run on the default SQLite instance, whose
event log stores the materializations in batches; a holiday in the range is a no-op partition."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pandas as pd

from assets.event_storage import BatchedSqliteEventLogStorage
from pipeline.store.lake import Lake
from tests.conftest import write_config

PARTITIONED = ["raw_bars", "clean_bars", "volatility", "forecasts", "combined_forecast", "target_positions", "orders"]
#: 2022-12-20 .. 2022-12-28: seven weekdays, six NYSE sessions (Monday 26th: Christmas observed).
SESSIONS = ["2022-12-20", "2022-12-21", "2022-12-22", "2022-12-23", "2022-12-27", "2022-12-28"]


def test_a_cli_backfill_records_every_weekday_and_writes_rows_only_for_sessions(tmp_path):
    config = write_config(tmp_path, symbols=["AAPL", "KO"])
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "2022-12-20", "2022-12-28",
                           "--config", str(config)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 sessions" in done.stdout and "7 weekday partitions" in done.stdout
    assert "Backfills never send orders" in done.stdout

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for asset in PARTITIONED:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(SESSIONS) | {"2022-12-26"}, asset
        holiday = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("orders"), asset_partitions=["2022-12-26"]), limit=1).records
        assert len(holiday) == 1 and holiday[0].event_log_entry.run_id == run.run_id

    lake = Lake(tmp_path / "lake")
    targets = lake.read("target_positions", start=pd.Timestamp("2022-12-20"))
    assert sorted(targets["session"].dt.strftime("%Y-%m-%d").unique()) == SESSIONS  # no row on the holiday


def test_history_start_of_a_config_file_moves_the_partitions_of_a_cli_backfill(tmp_path):
    """``history_start`` read from ``--config`` (not the environment) sets where the partitions start:
    a backfill from 1988 runs with ``history_start: 1985-01-02`` (the default starts in 1990)."""
    config = write_config(tmp_path, symbols=["WTI"], history_start="1985-01-02")
    env = {k: v for k, v in os.environ.items() if k != "TRADING_PIPELINE_CONFIG"}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "1988-01-04", "1991-12-31",
                           "--config", str(config)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    clean = Lake(tmp_path / "lake").read("clean_bars")
    assert clean["session"].min() <= pd.Timestamp("1988-01-04")
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert "1988-01-04" in instance.get_materialized_partitions(dg.AssetKey("clean_bars"))
