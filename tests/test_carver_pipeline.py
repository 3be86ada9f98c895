"""Preparing pysystemtrade's futures set for the pipeline (scripts/carver_pipeline.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.pysystemtrade import read_adjusted_prices
from pipeline.config import load_config
from pipeline.ml.vol_forecast import nonpositive_instruments, vol_forecast_panel
from scripts.carver_pipeline import prepare, session_bars
from tests.conftest import SHARED_DATA

CARVER = SHARED_DATA / "futures_carver_2023"


def test_session_bars_move_weekends_to_friday_and_carry_prices_over_other_exchanges_holidays():
    prices = pd.DataFrame(
        {"A": [10.0, 11.0, np.nan, 12.5, 13.0], "B": [np.nan, np.nan, 5.0, np.nan, 6.0]},
        index=pd.DatetimeIndex(["2022-12-22", "2022-12-23", "2022-12-25", "2022-12-27", "2022-12-28"]),
    )
    bars = session_bars(prices, "2022-12-21")
    wide = bars.pivot(index="session", columns="instrument", values="close")
    # NYSE sessions from the 21st: 21, 22, 23, 27, 28 December (24-26: weekend, Christmas observed);
    # the 21st has no row, no instrument has a price yet.
    assert list(wide.index.strftime("%m-%d")) == ["12-22", "12-23", "12-27", "12-28"]
    # B's Sunday price 5.0 lands on Friday the 23rd and is carried to the 27th (no price that day).
    assert wide["A"].tolist() == [10.0, 11.0, 12.5, 13.0] and np.isnan(wide["B"].iloc[0])
    assert wide["B"].dropna().tolist() == [5.0, 5.0, 6.0]
    assert len(bars) == 4 + 3 and bars["close"].notna().all()  # no row before an instrument's first price
    assert list(bars.columns) == ["instrument", "session", "close"]


@pytest.mark.shared_data(CARVER)
def test_prepare_writes_a_valid_config_of_all_238_futures(tmp_path):
    cfg = load_config(prepare(tmp_path, CARVER, history_start="2023-06-01"))
    assert len(cfg.instruments) == 238 and cfg.source.kind == "files"
    assert all(i.sec_type == "FUT" and i.back_adjusted for i in cfg.instruments)
    assert cfg.history_start == "2023-06-01" and cfg.quality.spike_severity == "WARN"
    bars = pd.read_parquet(tmp_path / "bars" / "carver_adjusted.parquet")
    assert bars["instrument"].nunique() == 238
    assert bars["session"].max() == pd.Timestamp("2023-08-31")
    # pysystemtrade's prices as they are (no shift): the last session's close of every instrument
    # is its last adjusted price.
    raw = read_adjusted_prices(CARVER / "adjusted_prices_daily.parquet").prices.loc[:"2023-08-31"].ffill().iloc[-1]
    last = bars[bars["session"] == bars["session"].max()].set_index("instrument")["close"]
    pd.testing.assert_series_equal(last, raw.reindex(last.index), check_names=False)


@pytest.mark.shared_data(CARVER)
def test_the_vol_forecast_leaves_out_the_18_series_that_go_to_zero_or_below_since_2010(tmp_path):
    cfg = load_config(prepare(tmp_path, CARVER))
    wide = pd.read_parquet(tmp_path / "bars" / "carver_adjusted.parquet").pivot(
        index="session", columns="instrument", values="close")
    back_adjusted = [i.symbol for i in cfg.instruments if i.back_adjusted]
    left_out = nonpositive_instruments(wide, back_adjusted)
    assert left_out == sorted(wide.columns[(wide <= 0).any()]) and len(left_out) == 18
    assert {"GASOIL", "HEATOIL", "BRENT_W"} <= set(left_out)
    panel = vol_forecast_panel(wide, wide.diff().abs().ewm(span=35).mean(), back_adjusted=back_adjusted)
    assert set(panel.index.get_level_values("instrument")) == set(wide.columns) - set(left_out)
