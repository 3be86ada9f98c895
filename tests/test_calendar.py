"""Sessions, partitions and the daily schedule follow the NYSE calendar (exchange_calendars)."""

import datetime as dt

import dagster as dg
import pandas as pd

from assets.partitions import daily_partitions, partition_sessions
from pipeline.calendar import is_session, sessions
from pipeline.config import load_config
from pipeline.definitions import build_definitions

defs = build_definitions(load_config())
daily_sessions = daily_partitions(load_config()).partitions_def


def test_holidays_and_closures_are_not_sessions():
    # NYSE: Christmas observed 2022-12-26; closed 2001-09-11..14; Hurricane Sandy 2012-10-29/30.
    assert not is_session("2022-12-26")
    assert not any(is_session(d) for d in ["2001-09-11", "2001-09-14", "2012-10-29", "2012-10-30"])
    assert is_session("2022-12-27")
    # December 2022: 22 weekdays less the observed Christmas holiday on the 26th = 21 sessions.
    assert len(pd.bdate_range("2022-12-01", "2022-12-31")) == 22
    assert len(sessions("2022-12-01", "2022-12-31")) == 21


def test_partitions_are_weekdays_and_runs_keep_only_the_sessions():
    keys = daily_sessions.get_partition_keys_in_range(dg.PartitionKeyRange("2022-12-01", "2022-12-30"))
    # December 1-30, 2022: 22 weekdays; the observed Christmas holiday is a partition, Saturday the 24th is not.
    assert keys == [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2022-12-01", "2022-12-30")] and len(keys) == 22
    assert "2022-12-26" in keys and "2022-12-24" not in keys
    # A run computes only the exchange sessions among its partitions: 21 here.
    run = partition_sessions(keys)
    assert list(run) == list(sessions("2022-12-01", "2022-12-30")) and len(run) == 21
    assert partition_sessions(["2022-12-26"]).empty  # a holiday-only run has nothing to compute
    # Hurricane Sandy: the two closed days are partitions with no session.
    assert list(partition_sessions(["2012-10-30", "2012-10-26", "2012-10-29", "2012-10-31"])) == [
        pd.Timestamp("2012-10-26"), pd.Timestamp("2012-10-31")]


def _evaluate(when: dt.datetime):
    schedule = defs.resolve_schedule_def("daily_after_close")
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def test_schedule_runs_a_no_op_of_the_daily_assets_on_a_holiday():
    when = pd.Timestamp("2022-12-26 17:00", tz="America/New_York").to_pydatetime()
    (request,) = _evaluate(when).run_requests
    assert request.partition_key == "2022-12-26" and not request.run_config  # no submit config
    assert {k.to_user_string() for k in request.asset_selection} == {
        "raw_bars", "clean_bars", "volatility", "forecasts", "combined_forecast", "target_positions", "orders"}


def test_schedule_targets_the_session_that_just_closed_across_dst():
    # 2022-03-11 is the Friday before US DST starts (2022-03-13), 2022-03-14 the Monday after: 17:00 local both.
    for local in ["2022-03-11 17:00", "2022-03-14 17:00"]:
        when = pd.Timestamp(local, tz="America/New_York").to_pydatetime()
        result = _evaluate(when)
        (request,) = result.run_requests
        assert request.partition_key == local[:10]
        assert request.run_config["ops"]["orders"]["config"]["submit"] is True
