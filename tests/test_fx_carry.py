"""Carry of spot FX pairs from a configured interest-rate differential (``rate_differential``):
the differential x price over annualised vol, smoothed as the futures carry rule, scaled by the
carry scalar; through the domain functions and the ``forecasts`` asset."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from assets import ingest, quality, signals
from assets.partitions import daily_partitions
from assets.resources import default_resources
from pipeline.config import RulesConfig, load_config
from pipeline.signals.carry import CarryError, fx_carry_variations, rate_differentials
from pipeline.store.lake import Lake
from tests.conftest import write_config

DEFAULT_SCALARS = RulesConfig().forecast_scalars
INDEX = pd.bdate_range("2021-01-04", periods=6, name="session")


def test_a_constant_and_a_csv_series_on_the_sessions(tmp_path):
    csv = tmp_path / "audjpy.csv"
    csv.write_text("DATETIME,differential\n2021-01-05,0.02\n2021-01-08,0.025\n")
    got = rate_differentials({"EURUSD": -0.005, "AUDJPY": str(csv)}, INDEX)
    assert got["EURUSD"].tolist() == [-0.005] * 6
    # NaN before the file's first date; the last value up to a session applies to it
    assert got["AUDJPY"].tolist()[1:] == [0.02, 0.02, 0.02, 0.025, 0.025] and np.isnan(got["AUDJPY"].iloc[0])


def test_a_bad_row_names_the_file_and_row(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("DATETIME,differential\n2021-01-05,0.02\n2021-01-06,two percent\n")
    with pytest.raises(CarryError, match=r"bad.csv row 3 has a bad date or differential"):
        rate_differentials({"X": str(csv)}, INDEX)
    (tmp_path / "cols.csv").write_text("date,rate\n2021-01-05,0.02\n")
    with pytest.raises(CarryError, match="needs the columns DATETIME,differential"):
        rate_differentials({"X": str(tmp_path / "cols.csv")}, INDEX)


def test_the_forecast_is_differential_times_price_over_annual_vol_smoothed():
    price = pd.DataFrame({"EURUSD": [1.10, 1.11, 1.12, 1.10, 1.09, 1.10]}, index=INDEX)
    vol = pd.DataFrame({"EURUSD": [0.006, 0.0062, 0.0061, 0.0065, 0.0066, 0.0064]}, index=INDEX)
    diff = pd.DataFrame({"EURUSD": 0.02}, index=INDEX)
    got = fx_carry_variations(diff, price, vol, {"carry": 90, "carry10": 10})
    raw = 0.02 * price["EURUSD"] / (vol["EURUSD"] * 16)  # first value: 0.02 x 1.10 / 0.096 = 0.229167
    assert raw.iloc[0] == pytest.approx(0.2291666667)
    pd.testing.assert_series_equal(got["carry"]["EURUSD"], raw.ewm(com=90).mean(), check_names=False)
    pd.testing.assert_series_equal(got["carry10"]["EURUSD"], raw.ewm(com=10).mean(), check_names=False)


def test_the_forecasts_asset_gives_an_fx_pair_its_carry(tmp_path):
    # EURUSD as a files-source pair beside two sample stocks; a 2% differential (long EUR earns it)
    rng = np.random.default_rng(5)
    sessions = pd.bdate_range("2019-01-02", "2022-12-28")
    close = 1.15 * np.exp(rng.normal(0, 0.005, len(sessions)).cumsum())
    data = tmp_path / "bars"
    data.mkdir()
    pd.DataFrame({"date": sessions.strftime("%Y-%m-%d"), "close": close}).to_csv(data / "EURUSD.csv", index=False)
    config = write_config(tmp_path, symbols=["EURUSD"], source={"kind": "files", "path": str(data)},
                          history_start="2019-01-02",
                          rules={"carry": {"carry": {"smooth_days": 90}},
                                 "forecast_scalars": {**DEFAULT_SCALARS, "carry": 30.0}})
    raw = yaml.safe_load(config.read_text())
    raw["instruments"] = [{"symbol": "EURUSD", "sec_type": "CASH", "asset_class": "fx", "calendar": "XNYS",
                           "rate_differential": 0.02}]
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config)
    daily = daily_partitions(cfg)
    assets = [*ingest.build(daily), *quality.build(daily), *signals.build(daily)]
    wanted = {dg.AssetKey(k) for k in ("raw_bars", "clean_bars", "volatility", "forecast_scalars", "forecasts")}
    with dg.instance_for_test() as instance:
        result = dg.materialize([a for a in assets if a.keys & wanted], partition_key="2022-12-28", instance=instance,
                                resources=default_resources(str(config), config=cfg), raise_on_error=False)
    assert result.success
    lake = Lake(tmp_path / "lake")
    forecasts = lake.read("forecasts")
    carry = forecasts[(forecasts["rule"] == "carry") & (forecasts["instrument"] == "EURUSD")].set_index("session")
    vol = lake.read_wide("volatility", "vol_price", ["EURUSD"])
    closes = lake.read_wide("volatility", "close", ["EURUSD"])
    expected = (0.02 * closes["EURUSD"] / (vol["EURUSD"] * 16)).ewm(com=90).mean() * 30
    last = pd.Timestamp("2022-12-28")
    assert carry.loc[last, "scaled"] == pytest.approx(expected.loc[last], rel=1e-9)
    assert carry.loc[last, "capped"] == pytest.approx(min(expected.loc[last], 20.0), rel=1e-9)
    assert carry.loc[last, "capped"] > 0  # long EUR earns the positive differential
