"""A bar dated on a non-session fails the WARN check ``no_non_session_bars`` and reaches ``alerts`` once.

Unit tests pin the days a run covers by hand (NYSE, Christmas 2022: Friday 23 is a session, Saturday
24, Sunday 25 and Monday 26 (observed holiday) are not); the integration test materializes the real
assets with a files source that returns a Saturday bar during the run, and runs the alert sensor.
"""

import dagster as dg
import exchange_calendars as xcals
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.resources import Settings, default_resources
from pipeline.adapters.sources import SampleSource
from pipeline.config import load_config
from pipeline.definitions import build_definitions
from pipeline.quality.non_session import non_session_bars, run_window
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from pipeline.store.warehouse import WAREHOUSE_FILE
from sensors.alerts import asset_check_alerts
from tests.conftest import write_config

_ASSETS = {a.key.to_user_string(): a for a in build_definitions(load_config()).assets}
raw_bars, clean_bars, volatility = _ASSETS["raw_bars"], _ASSETS["clean_bars"], _ASSETS["volatility"]

D = pd.Timestamp
SATURDAY, SUNDAY, HOLIDAY, TUESDAY = D("2022-12-24"), D("2022-12-25"), D("2022-12-26"), D("2022-12-27")


def _quarantine(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"session": pd.to_datetime([r[0] for r in rows]), "instrument": [r[1] for r in rows],
                         "rule": [r[2] for r in rows], "value": 1.0, "detail": "x", "source": "test"})


def test_a_daily_run_covers_the_days_since_the_previous_session():
    assert run_window(pd.DatetimeIndex([TUESDAY]), "XNYS") == (D("2022-12-23"), TUESDAY)
    assert run_window(pd.DatetimeIndex([D("2022-12-28")]), "XNYS") == (TUESDAY, D("2022-12-28"))
    # a backfill (any order): from the session before its first session
    assert run_window(pd.DatetimeIndex([TUESDAY, D("2022-12-19")]), "XNYS") == (D("2022-12-16"), TUESDAY)
    with pytest.raises(ValueError, match="no session"):
        run_window(pd.DatetimeIndex([]), "XNYS")


def test_only_non_session_bars_of_the_run_days_are_reported():
    q = _quarantine([("2022-12-18", "KO", "non_session"),   # a Sunday of an earlier run
                     ("2022-12-24", "KO", "non_session"), ("2022-12-25", "EURUSD", "non_session"),
                     ("2022-12-26", "KO", "non_session"),
                     ("2022-12-27", "XOM", "ohlc_inconsistent")])  # another rule: not this check's
    got = non_session_bars(q, pd.DatetimeIndex([TUESDAY]), "XNYS")
    assert list(got["session"]) == [SATURDAY, SUNDAY, HOLIDAY]
    assert list(got["instrument"]) == ["KO", "EURUSD", "KO"]
    assert non_session_bars(q, pd.DatetimeIndex([D("2022-12-28")]), "XNYS").empty  # reported by the 27th's run
    assert len(non_session_bars(q, pd.DatetimeIndex([D("2022-12-19"), TUESDAY]), "XNYS")) == 4  # a backfill
    assert non_session_bars(q, pd.DatetimeIndex([]), "XNYS").empty


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 364), st.lists(st.integers(-20, 20), min_size=1, max_size=12))
def test_the_window_matches_exchange_calendars_previous_session(first, offsets):
    cal = xcals.get_calendar("XNYS")
    start = cal.date_to_session(D("2022-01-03") + pd.Timedelta(days=first), direction="next")
    run = pd.DatetimeIndex([start])
    days = pd.DatetimeIndex([start + pd.Timedelta(days=o) for o in offsets])
    q = _quarantine([(str(d.date()), "KO", "non_session") for d in days])
    previous = cal.previous_session(start)  # an independent implementation of "the session before"
    expected = sorted(d for d in days if previous < d <= start)
    assert list(non_session_bars(q, run, "XNYS")["session"]) == expected


@pytest.fixture
def saturday_source(tmp_path):
    """A files source of real sample bars (AAPL, KO) that also holds a KO bar dated Saturday 2022-12-24
    (Friday's bar re-stamped, as a vendor with a date-stamp bug sends it) and one dated Sunday 2022-11-06."""
    bars = SampleSource().fetch(["AAPL", "KO"], D("2022-06-01"), D("2022-12-28"))
    bars = bars[["session", "instrument", "open", "high", "low", "close", "volume"]]
    ko = bars[bars["instrument"] == "KO"].set_index("session")
    extra = pd.concat([ko.loc[[D("2022-12-23")]].assign(session=SATURDAY),
                       ko.loc[[D("2022-11-04")]].assign(session=D("2022-11-06"))]).reset_index(drop=True)
    data = tmp_path / "bars"
    data.mkdir()
    pd.concat([bars, extra], ignore_index=True).to_parquet(data / "bars.parquet", index=False)
    return write_config(tmp_path, symbols=["AAPL", "KO"], history_start="2022-06-01",
                        source={"kind": "files", "path": str(data)})


def test_a_saturday_bar_fails_the_warn_check_without_blocking_and_alerts_once(saturday_source):
    config = str(saturday_source)
    cfg = load_config(config)
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_bars, clean_bars, volatility], partition_key=str(TUESDAY.date()),
                                instance=instance, resources=default_resources(config))
        assert result.success  # WARN: downstream assets still run
        assert "volatility" in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        check = checks["no_non_session_bars"]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["non_session_bars"].value == 1  # the Saturday; the November Sunday is older
        assert "2022-12-24" in check.metadata["bars"].value and "2022-11-06" not in check.metadata["bars"].value
        assert checks["bars_complete"].passed and checks["no_quarantined_bars"].passed

        quarantine = Lake(cfg.lake_path).read("quarantine")
        assert sorted(quarantine.loc[quarantine["rule"] == "non_session", "session"]) == [D("2022-11-06"), SATURDAY]

        context = dg.build_run_status_sensor_context(
            sensor_name="asset_check_alerts", dagster_event=result.get_run_success_event(),
            dagster_instance=instance, dagster_run=result.dagster_run,
            resources={"settings": Settings(config_path=config)},
        )
        asset_check_alerts(context)
        ledger = Ledger(cfg.lake_path / WAREHOUSE_FILE)
        alerts = ledger.alerts()
        mine = alerts[alerts["subject"] == "clean_bars:no_non_session_bars"]
        assert len(mine) == 1 and mine["severity"].tolist() == ["WARN"] and mine["kind"].tolist() == ["asset_check"]
        assert result.run_id in mine["message"].iloc[0]
        asset_check_alerts(context)  # the same run seen again (a sensor retry): nothing new
        assert len(ledger.alerts()) == len(alerts)

        # The next session's run has no new non-session bar: the check passes, no further alert.
        nxt = dg.materialize([raw_bars, clean_bars], partition_key="2022-12-28", instance=instance,
                             resources=default_resources(config))
        assert nxt.success
        assert {c.check_name: c.passed for c in nxt.get_asset_check_evaluations()}["no_non_session_bars"]
