"""Schedules as Dagster evaluates them: holidays are a no-op, research runs after the daily, the regime
model retrains weekly."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import duckdb
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.definitions import build_definitions, execute_daily, execute_research
from pipeline.store.lake import Lake
from pipeline.store.warehouse import query
from tests.conftest import LATEST_SAMPLE_SESSION, write_config

defs = build_definitions(load_config())

NY = "America/New_York"
PARTITIONED = ["raw_bars", "clean_bars", "volatility", "forecasts", "combined_forecast", "target_positions", "orders"]


def _tick(schedule_name: str, local_time: str) -> dg.ScheduleExecutionData:
    when = pd.Timestamp(local_time, tz=NY).to_pydatetime()
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    return defs.resolve_schedule_def(schedule_name).evaluate_tick(context)


# -- holidays and weekends: the daily schedule runs a no-op, a manual run is a no-op --------------


@pytest.mark.parametrize("local_time, why", [
    ("2023-04-07 17:00", "Good Friday, an NYSE holiday on a weekday"),
    ("2022-07-04 17:00", "Independence Day"),
    ("2012-10-29 17:00", "Hurricane Sandy closure"),
])
def test_daily_schedule_runs_only_the_daily_assets_without_submit_on_a_holiday(local_time, why):
    (request,) = _tick("daily_after_close", local_time).run_requests
    day = local_time[:10]
    assert request.partition_key == day and request.run_key == f"daily-{day}", why
    assert not request.run_config, why  # never the config that lets orders submit
    assert request.tags["trading/no_session"] == "true"
    assert {k.to_user_string() for k in request.asset_selection} == set(PARTITIONED), why


def test_daily_schedule_skips_a_weekend_tick():
    result = _tick("daily_after_close", "2022-12-31 17:00")  # a Saturday: the cron never ticks then; evaluated anyway
    assert not result.run_requests
    assert result.skip_message == "2022-12-31 is a weekend: no partition, no run"


def test_the_holiday_run_of_the_schedule_succeeds_with_no_rows_and_no_orders(tmp_path):
    config = write_config(tmp_path)
    lake = Lake(tmp_path / "lake")
    (request,) = _tick("daily_after_close", "2022-12-26 17:00").run_requests
    job = build_definitions(load_config(config), config_path=str(config)).resolve_job_def("daily_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                        asset_selection=list(request.asset_selection), tags=request.tags)
    assert result.success
    events = result.get_asset_materialization_events()
    assert sorted(e.asset_key.to_user_string() for e in events) == sorted(PARTITIONED)
    assert {e.partition for e in events} == {"2022-12-26"}
    assert all(e.materialization.metadata["rows_written"].value == 0 for e in events)
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert not lake.path("raw_bars").exists() and not lake.path("orders").exists()
    assert not (tmp_path / "lake" / "warehouse.duckdb").exists() or query(
        lake.root, "select count(*) as n from order_intents")["n"].item() == 0


def test_daily_schedule_ticks_on_weekdays_after_the_close_in_new_york():
    schedule = defs.resolve_schedule_def("daily_after_close")
    assert schedule.cron_schedule == "0 17 * * 1-5" and schedule.execution_timezone == NY
    (request,) = _tick("daily_after_close", "2023-04-06 17:00").run_requests  # the Thursday before Good Friday
    assert request.partition_key == "2023-04-06" and request.run_key == "daily-2023-04-06"


def test_a_manual_daily_run_on_a_holiday_is_a_successful_no_op_without_orders(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for day in ["2022-12-26", "2022-12-24"]:  # Christmas observed (Monday), a Saturday
        assert main(["daily", "--session", day, "--config", str(config)]) == 0
        assert f"{day} is not a XNYS session (weekend, holiday or closure): no run, no orders" in capsys.readouterr().out
    # Nothing ran: no lake was written, no order intent exists, and the instance recorded no run.
    assert not (tmp_path / "lake").exists()
    if home.exists():
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_runs() == []


def test_a_manual_daily_run_on_a_holiday_leaves_an_existing_ledger_untouched(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    ledger = tmp_path / "lake" / "warehouse.duckdb"
    assert main(["kill-switch", "--config", str(config)]) == 0  # creates the ledger
    before = duckdb.connect(str(ledger), read_only=True)
    n_before = before.execute("select count(*) from order_intents").fetchone()[0]
    before.close()
    assert main(["daily", "--session", "2022-07-04", "--config", str(config)]) == 0
    after = duckdb.connect(str(ledger), read_only=True)
    assert after.execute("select count(*) from order_intents").fetchone()[0] == n_before == 0
    after.close()


# -- research after the daily run -------------------------------------------------------------------


def test_research_runs_on_weekday_evenings_after_the_daily_deadline_and_starts_stopped():
    schedule = defs.resolve_schedule_def("research_after_close")
    assert schedule.cron_schedule == "0 19 * * 1-5" and schedule.execution_timezone == NY
    assert schedule.job_name == "research_job" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    (request,) = _tick("research_after_close", "2022-12-28 19:00").run_requests
    assert request.run_key == "research-2022-12-28" and request.partition_key is None  # all history, one run a day
    assert not request.run_config  # never the config that lets orders submit
    job = defs.resolve_job_def("research_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"backtest", "regime_model",
                                                                                    "vol_forecast"}


# -- weekly regime-model retraining ---------------------------------------------------------------


def test_regime_model_retrains_every_saturday_morning_in_new_york():
    schedule = defs.resolve_schedule_def("weekly_regime_retrain")
    assert schedule.cron_schedule == "0 6 * * 6" and schedule.execution_timezone == NY
    assert schedule.job_name == "regime_retrain_job"
    (request,) = _tick("weekly_regime_retrain", "2022-12-31 06:00").run_requests
    assert request.run_key == "regime-retrain-2022-12-31"
    assert request.partition_key is None  # the regime model is unpartitioned: one model over all history


def test_retraining_tick_keys_by_the_new_york_date_across_dst():
    # US DST started 2022-03-13: 06:00 New York is 11:00 UTC on 2022-03-12 and 10:00 UTC on 2022-03-19.
    for utc, day in [("2022-03-12 11:00", "2022-03-12"), ("2022-03-19 10:00", "2022-03-19")]:
        when = pd.Timestamp(utc, tz="UTC").to_pydatetime()
        assert when.astimezone(dt.UTC).hour in (10, 11)
        context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
        (request,) = defs.resolve_schedule_def("weekly_regime_retrain").evaluate_tick(context).run_requests
        assert request.run_key == f"regime-retrain-{day}"


def test_retraining_job_selects_only_the_regime_model_and_is_not_the_order_path():
    job = defs.resolve_job_def("regime_retrain_job")
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("regime_model")}
    assert job.tags["trading/job"] == "regime_retrain"  # not "daily": never queued behind, or counted as, a daily run


def test_the_retraining_job_refits_the_model_from_the_lake_without_touching_orders(tmp_path):
    # Two instruments from 2012 keep the run short; the model needs three years before its first fit.
    config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="2012-01-03")
    lake = Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        assert execute_daily(LATEST_SAMPLE_SESSION, submit=False, config_path=str(config), instance=instance).success
        assert "regime_model" not in lake.tables()  # the daily run fits no model
        assert execute_research(config_path=str(config), instance=instance).success
        before = lake.read_table("regime_model")
        intents = query(lake.root, "select count(*) as n from order_intents")["n"].item()
        job = build_definitions(load_config(config), config_path=str(config)).resolve_job_def("regime_retrain_job")
        result = job.execute_in_process(instance=instance)
    assert result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [dg.AssetKey("regime_model")]
    after = lake.read_table("regime_model")
    assert after["p_high_vol"].notna().sum() > 250  # years of out-of-sample probabilities, not an empty shell
    # The same data gives the same walk-forward probabilities: a refit, not a different model.
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))
    assert query(lake.root, "select count(*) as n from order_intents")["n"].item() == intents
