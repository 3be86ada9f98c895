"""Rules that are never broken, checked through the real Dagster job on real bars:
no look-ahead, blocking checks stop bad data before any order, failed checks raise alerts."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.resources import Settings
from pipeline.adapters.sources import SampleSource
from pipeline.config import load_config
from pipeline.definitions import execute_daily
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from sensors.alerts import run_failure_alerts
from tests.conftest import LATEST_SAMPLE_SESSION, write_config

UNIVERSE = ["AAPL", "KO", "XOM"]
CUTOFF = pd.Timestamp("2020-06-30")  # a month end: weights estimated there use data up to it


def _bars() -> pd.DataFrame:
    bars = SampleSource().fetch(UNIVERSE, pd.Timestamp("1990-01-02"), pd.Timestamp(LATEST_SAMPLE_SESSION))
    return bars[["session", "instrument", "open", "high", "low", "close", "volume"]]


def _run_on(folder, bars: pd.DataFrame, research: bool = False):
    data = folder / "bars"
    data.mkdir(parents=True)
    bars.to_parquet(data / "bars.parquet", index=False)
    config = write_config(folder, symbols=UNIVERSE, source={"kind": "files", "path": str(data)})
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance,
                               research=research)
    return result, load_config(config)


@pytest.fixture(scope="module")
def original_and_perturbed(tmp_path_factory):
    bars = _bars()
    rng = np.random.default_rng(7)
    perturbed = bars.copy()
    after = perturbed["session"] > CUTOFF
    # Scramble every price after the cutoff (a different future), keep everything up to it.
    perturbed.loc[after, "close"] *= np.exp(rng.normal(0, 0.03, after.sum()).cumsum() / 10)
    # with the research assets in the same run: the regime model's estimates are checked too
    a = _run_on(tmp_path_factory.mktemp("original"), bars, research=True)
    b = _run_on(tmp_path_factory.mktemp("perturbed"), perturbed, research=True)
    return a, b


SESSION_TABLES = {
    "volatility": ["vol_price", "vol_pct_annual"],
    "forecasts": ["raw", "scaled", "capped"],
    "combined_forecast": ["combined", "fdm"],
    "target_positions": ["weight", "idm", "optimal", "target"],
}


@pytest.mark.parametrize("table", sorted(SESSION_TABLES))
def test_changing_prices_after_d_changes_nothing_up_to_d(original_and_perturbed, table):
    (ra, cfg_a), (rb, cfg_b) = original_and_perturbed
    assert ra.success and rb.success
    keys = ["session", "instrument"] + (["rule"] if table == "forecasts" else [])
    a = Lake(cfg_a.lake_path).read(table, end=CUTOFF).sort_values(keys).reset_index(drop=True)
    b = Lake(cfg_b.lake_path).read(table, end=CUTOFF).sort_values(keys).reset_index(drop=True)
    assert len(a) > 1000
    pd.testing.assert_frame_equal(a[keys + SESSION_TABLES[table]], b[keys + SESSION_TABLES[table]], rtol=0, atol=1e-9)
    # ... and the perturbation did reach the future: the tables differ after the cutoff.
    later_a = Lake(cfg_a.lake_path).read(table, start=CUTOFF + pd.Timedelta(days=60))
    later_b = Lake(cfg_b.lake_path).read(table, start=CUTOFF + pd.Timedelta(days=60))
    col = SESSION_TABLES[table][0]
    assert not np.allclose(later_a[col].to_numpy(), later_b[col].to_numpy())


@pytest.mark.parametrize("table,date_col,cols", [
    ("instrument_weights", "estimated_at", ["weight", "risk_contribution"]),
    ("idm", "estimated_at", ["idm"]),
    ("regime_model", "session", ["p_high_vol"]),
])
def test_estimates_dated_up_to_d_do_not_see_later_prices(original_and_perturbed, table, date_col, cols):
    (_, cfg_a), (_, cfg_b) = original_and_perturbed
    a = Lake(cfg_a.lake_path).read_table(table)
    b = Lake(cfg_b.lake_path).read_table(table)
    a, b = (x[pd.to_datetime(x[date_col]) <= CUTOFF].reset_index(drop=True) for x in (a, b))
    assert len(a) > 10
    pd.testing.assert_frame_equal(a[cols], b[cols], rtol=0, atol=1e-9)


def test_a_bad_bar_blocks_everything_downstream_and_raises_an_alert(tmp_path):
    bars = _bars()
    bad = (bars["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)) & (bars["instrument"] == "KO")
    close = bars.loc[bad, "close"].to_numpy()
    bars.loc[bad, ["open", "high", "low"]] = np.c_[close, close * 0.9, close * 1.1]  # high < low
    result, cfg = _run_on(tmp_path, bars)

    assert not result.success
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert {"no_quarantined_bars", "bars_complete"} <= failed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "clean_bars" in materialized
    assert not materialized & {"volatility", "forecasts", "target_positions", "orders"}
    quarantine = Lake(cfg.lake_path).read("quarantine", start=pd.Timestamp(LATEST_SAMPLE_SESSION))
    assert list(quarantine["instrument"]) == ["KO"] and list(quarantine["rule"]) == ["ohlc_inconsistent"]
    ledger = Ledger(cfg.lake_path / "warehouse.duckdb")
    assert ledger.intents().empty

    # A person checks the bar and releases it: the next run takes it into the clean set and trades.
    ledger.release_quarantined(LATEST_SAMPLE_SESSION, "KO", "ohlc_inconsistent", reason="test: checked", released_by="test")
    with dg.instance_for_test() as instance:
        again = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(tmp_path / "config.yaml"), instance=instance)
    assert again.success
    clean = Lake(cfg.lake_path).read("clean_bars", start=pd.Timestamp(LATEST_SAMPLE_SESSION))
    assert "KO" in set(clean["instrument"])
    warned = Lake(cfg.lake_path).read("quality_warnings", start=pd.Timestamp(LATEST_SAMPLE_SESSION))
    assert warned["detail"].str.startswith("released after a manual check").any()
    assert not ledger.intents(session=LATEST_SAMPLE_SESSION).empty


def test_failed_checks_become_deduplicated_alerts(tmp_path):
    bars = _bars()
    bad = (bars["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)) & (bars["instrument"] == "XOM")
    bars.loc[bad, "close"] = np.nan
    data = tmp_path / "bars"
    data.mkdir()
    bars.to_parquet(data / "bars.parquet", index=False)
    config = write_config(tmp_path, symbols=UNIVERSE, source={"kind": "files", "path": str(data)})
    settings = Settings(config_path=str(config))
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, config_path=str(config), instance=instance)
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alerts", dagster_event=result.get_run_failure_event(),
            dagster_instance=instance, dagster_run=result.dagster_run, resources={"settings": settings},
        ).for_run_failure()
        run_failure_alerts(context)
        ledger = Ledger(load_config(config).lake_path / "warehouse.duckdb")
        alerts = ledger.alerts()
        assert {"clean_bars:no_quarantined_bars", "clean_bars:bars_complete"} <= set(alerts["subject"])
        assert set(alerts.loc[alerts["subject"] == "clean_bars:no_quarantined_bars", "severity"]) == {"ERROR"}
        assert (alerts["kind"] == "run_failure").sum() == 1
        # The same run seen again (a sensor retry) raises nothing new.
        run_failure_alerts(context)
        assert len(ledger.alerts()) == len(alerts)


def test_a_x3_close_is_not_traded_on_the_clean_set_is_unchanged_and_the_others_trade(tmp_path):
    # reliability promise 15: a x3 close on the traded session. With the default spike_severity WARN it is
    # flagged: the no_price_spikes check fails and alerts, the bar stays out of clean_bars, KO keeps its
    # position (no intent), AAPL and XOM trade. With ERROR it is quarantined and the run is blocked.
    bars = _bars()
    bad = (bars["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)) & (bars["instrument"] == "KO")
    bars.loc[bad, ["open", "high", "low", "close"]] *= 3.0
    result, cfg = _run_on(tmp_path, bars)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["no_price_spikes"].passed
    assert "KO 2022-12-28" in checks["no_price_spikes"].description
    assert "trading-pipeline release 2022-12-28 KO price_spike" in checks["no_price_spikes"].description
    assert checks["bars_complete"].passed and "1 flagged (left_out)" in checks["bars_complete"].description
    clean = Lake(cfg.lake_path).read("clean_bars", start=pd.Timestamp(LATEST_SAMPLE_SESSION))
    assert sorted(clean["instrument"]) == ["AAPL", "XOM"]
    ledger = Ledger(cfg.lake_path / "warehouse.duckdb")
    traded = set(ledger.intents(session=LATEST_SAMPLE_SESSION)["instrument"])
    assert "KO" not in traded and traded <= {"AAPL", "XOM"}
    targets = Lake(cfg.lake_path).read("target_positions", start=pd.Timestamp(LATEST_SAMPLE_SESSION))
    assert "KO" not in set(targets["instrument"])


def test_a_x3_close_with_spike_severity_error_blocks_the_run(tmp_path):
    bars = _bars()
    bad = (bars["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)) & (bars["instrument"] == "KO")
    bars.loc[bad, ["open", "high", "low", "close"]] *= 3.0
    data = tmp_path / "bars"
    data.mkdir()
    bars.to_parquet(data / "bars.parquet", index=False)
    config = write_config(tmp_path, symbols=UNIVERSE, source={"kind": "files", "path": str(data)},
                          quality={"spike_severity": "ERROR"})
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
    assert not result.success
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert "no_quarantined_bars" in failed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert not materialized & {"volatility", "target_positions", "orders"}
    assert Ledger(load_config(config).lake_path / "warehouse.duckdb").intents().empty
