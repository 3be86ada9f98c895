"""Signals that do not depend on their company: an instrument's vol and forecasts are the same
whether its prices are read alone or in a panel with other instruments.

pysystemtrade's prices are read onto the business-day grid (``read_adjusted_prices``: weekend rows
to the Friday before, every business day a row, NaN where there is no price), so the EWMAs of the
rules, which count sessions of the index, see the same sessions alone and in any panel. Returns
across a missing session follow one convention (``pipeline.signals.volatility.daily_returns``: one
return for the whole move, so no move is lost), tested here as properties on random panels with gaps.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.adapters.pysystemtrade import read_adjusted_prices
from pipeline.signals.rules import breakout, ewmac
from pipeline.signals.volatility import daily_returns, robust_vol
from tests.conftest import SHARED_DATA

CARVER_2016 = SHARED_DATA / "futures_carver_2016"
FIRST_DAY = pd.Timestamp("2020-01-01")


@st.composite
def panels(draw) -> pd.DataFrame:
    """Long ``instrument, date, price`` rows of 2-4 instruments: random starts and lengths (calendar
    days, weekends included, as pysystemtrade's files have a few), random blank prices and dropped
    days (gaps), and a random walk for the prices (some negative, as back-adjusted series can be)."""
    n = draw(st.integers(2, 4))
    frames = []
    for k in range(n):
        start = draw(st.integers(0, 60))
        length = draw(st.integers(30, 160))
        days = pd.date_range(FIRST_DAY + pd.Timedelta(days=start), periods=length, freq="D")
        keep = np.array(draw(st.lists(st.booleans(), min_size=length, max_size=length)))
        keep |= days.day_of_week < 5  # weekdays kept, a weekend day only when drawn
        drop = np.array(draw(st.lists(st.floats(0, 1), min_size=length, max_size=length))) < 0.15  # gaps
        steps = draw(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=length, max_size=length))
        prices = 5.0 + np.cumsum(steps)
        blank = np.array(draw(st.lists(st.floats(0, 1), min_size=length, max_size=length))) < 0.1
        prices[blank] = np.nan
        rows = keep & ~drop
        frames.append(pd.DataFrame({"instrument": f"I{k}", "date": days[rows], "price": prices[rows]}))
    return pd.concat(frames, ignore_index=True)


def _signals(prices: pd.DataFrame) -> dict[str, pd.DataFrame]:
    vol = robust_vol(prices, min_periods=5, floor_min_periods=20, floor_days=60)
    return {
        "returns": daily_returns(prices),
        "vol": vol,
        "ewmac4_16": ewmac(prices, vol, 4, 16),
        "ewmac8_32": ewmac(prices, vol, 8, 32),
        "breakout10": breakout(prices, 10),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(panels())
def test_vol_and_forecasts_of_an_instrument_are_the_same_alone_and_in_a_panel(long):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "adjusted.parquet"
        long.to_parquet(path)
        panel = read_adjusted_prices(path).prices
        together = _signals(panel)
        for instrument in panel.columns:
            alone_prices = read_adjusted_prices(path, [instrument]).prices
            if alone_prices.empty:
                continue  # every price of it blank: no column alone
            alone = _signals(alone_prices)
            for name, frame in alone.items():
                # the same values on every session of the instrument's own grid, bit for bit
                in_panel = together[name].loc[frame.index, instrument].to_numpy()
                np.testing.assert_array_equal(in_panel, frame[instrument].to_numpy(), err_msg=f"{instrument} {name}")


@settings(max_examples=60, deadline=None)
@given(panels())
def test_returns_across_a_missing_session_are_one_return_for_the_whole_move(long):
    """The documented convention: no move is lost across a gap (pysystemtrade's diff on the
    business-day grid leaves those moves out; daily_returns keeps them as one return)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "adjusted.parquet"
        long.to_parquet(path)
        prices = read_adjusted_prices(path).prices
    returns = daily_returns(prices)
    for instrument in prices.columns:
        observed = prices[instrument].dropna()
        if len(observed) < 2:
            continue
        # the returns add up to the last price minus the first: nothing is dropped at a gap
        assert returns[instrument].sum() == pytest.approx(observed.iloc[-1] - observed.iloc[0], abs=1e-9)
        # a return exactly where there is a price (bar the first), each the change since the last price
        got = returns[instrument].dropna()
        assert list(got.index) == list(observed.index[1:])
        np.testing.assert_allclose(got.to_numpy(), np.diff(observed.to_numpy()), rtol=0, atol=1e-12)


def test_weekend_rows_move_to_friday_and_blank_rows_stay_on_the_grid(tmp_path):
    # 2020-01-03 is a Friday; A's Sunday row (5th) replaces its Friday row, B's blank Monday stays NaN
    long = pd.DataFrame({
        "instrument": ["A", "A", "A", "A", "B", "B", "B"],
        "date": pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-05", "2020-01-07",
                                "2020-01-03", "2020-01-06", "2020-01-07"]),
        "price": [1.0, 2.0, 3.0, 4.0, 10.0, np.nan, 11.0],
    })
    path = tmp_path / "adjusted.parquet"
    long.to_parquet(path)
    table = read_adjusted_prices(path)
    prices = table.prices
    assert list(prices.index.strftime("%m-%d")) == ["01-02", "01-03", "01-06", "01-07"]  # every business day
    assert prices["A"].tolist() == pytest.approx([1.0, 3.0, np.nan, 4.0], nan_ok=True)
    assert prices["B"].tolist() == pytest.approx([np.nan, 10.0, np.nan, 11.0], nan_ok=True)
    moved = table.issues[table.issues["kept"]]
    assert moved[["instrument", "row"]].values.tolist() == [["A", 3]]  # the Sunday row, kept on Friday
    alone = read_adjusted_prices(path, ["B"]).prices
    assert list(alone.index.strftime("%m-%d")) == ["01-03", "01-06", "01-07"]  # its blank Monday stays a row


@pytest.mark.shared_data(CARVER_2016)
def test_edollar_ewmac_8_32_on_2015_12_11_is_the_same_alone_and_with_the_other_37_futures():
    session = pd.Timestamp("2015-12-11")
    alone = read_adjusted_prices(CARVER_2016, ["EDOLLAR"]).prices
    panel = read_adjusted_prices(CARVER_2016).prices

    def forecast(prices: pd.DataFrame) -> float:
        return float(ewmac(prices, robust_vol(prices), 8, 32).at[session, "EDOLLAR"])

    assert forecast(alone) == forecast(panel)
    assert forecast(alone) == pytest.approx(0.2045, abs=5e-5)  # measured: 0.204541
    # Before the grid: the file's own dates, blank rows dropped. Alone the EWMAs skip the missing
    # sessions and the forecast is 0.1823; in the panel the other futures' dates put some of them back.
    old_alone = read_adjusted_prices(CARVER_2016, ["EDOLLAR"], business_days=False).prices
    old_panel = read_adjusted_prices(CARVER_2016, business_days=False).prices
    assert forecast(old_alone) == pytest.approx(0.1823, abs=5e-5)
    assert forecast(old_panel) == pytest.approx(0.1920, abs=5e-5)
    # the vol does not depend on the grid at all (it runs on the instrument's own prices)
    assert float(robust_vol(alone).at[session, "EDOLLAR"]) == float(robust_vol(old_alone).at[session, "EDOLLAR"])
