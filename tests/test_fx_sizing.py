"""Positions sized in the base currency with FX rates (pipeline/instruments.py, pipeline/portfolio/sizing.py)."""

import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.pysystemtrade import universe_fx
from pipeline.config import Instrument, PortfolioConfig
from pipeline.instruments import FXError, fx_to_base
from pipeline.portfolio import target_positions

SESSIONS = pd.bdate_range("2024-01-01", periods=3, name="session")


def _write_fx(folder, pair, dates, prices):
    lines = ["DATETIME,PRICE"] + [f"{d} 23:00:00,{p}" for d, p in zip(dates, prices)]
    (folder / f"{pair}.csv").write_text("\n".join(lines) + "\n")


def test_a_eur_future_is_sized_with_the_eurusd_rate(tmp_path):
    # pysystemtrade FX file: USD per EUR. The 2023-12-29 rate applies on 2024-01-01 (forward fill).
    _write_fx(tmp_path, "EURUSD", ["2023-12-29", "2024-01-02", "2024-01-03"], [1.10, 1.25, 1.00])
    instruments = [Instrument(symbol="ESTX", sec_type="FUT", currency="EUR", point_size=10.0),
                   Instrument(symbol="SPY", currency="USD")]
    fx = universe_fx(instruments, "USD", tmp_path, SESSIONS)
    np.testing.assert_allclose(fx["ESTX"], [1.10, 1.25, 1.00])
    np.testing.assert_allclose(fx["SPY"], [1.0, 1.0, 1.0])

    prices = pd.DataFrame({"ESTX": [4000.0] * 3}, index=SESSIONS)
    vol = pd.DataFrame({"ESTX": [20.0] * 3}, index=SESSIONS)  # daily vol, EUR price points
    combined = pd.DataFrame({"ESTX": [10.0] * 3}, index=SESSIONS)
    weights = pd.DataFrame({"ESTX": [1.0] * 3}, index=SESSIONS)
    idm = pd.Series(1.0, index=SESSIONS)
    cfg = PortfolioConfig(capital=1_000_000, vol_target=0.25, buffer=0.10, round_positions=True)
    sized = target_positions(prices, vol, combined, weights, idm, pd.Series({"ESTX": 10.0}), cfg,
                             fx=fx[["ESTX"]])
    # daily cash target 1e6 * 0.25 / 16 = 15625 USD; one contract's daily vol 20 * 10 EUR * 1.10 = 220 USD
    assert sized.vol_scalar["ESTX"].iloc[0] == pytest.approx(15625 / 220)  # 71.02 contracts
    # at forecast 10, weight 1, IDM 1 the optimal position is the vol scalar; the buffer is 10% of
    # it, so from 0 the first trade goes to the lower edge round(71.02 - 7.10) = 64
    assert sized.target["ESTX"].iloc[0] == 64.0
    # EUR strengthens to 1.25: 15625 / 250 = 62.5 contracts, buffer [56.25, 68.75] -> 64 held
    assert sized.optimal["ESTX"].iloc[1] == pytest.approx(62.5)
    assert sized.target["ESTX"].iloc[1] == 64.0
    # EUR at 1.00: 78.125 contracts, lower edge round(70.3125) = 70 -> buy 6
    assert sized.target["ESTX"].iloc[2] == 70.0


def test_a_non_usd_base_crosses_through_usd():
    rates = pd.DataFrame({"EURUSD": [1.25], "GBPUSD": [1.50]}, index=SESSIONS[:1])
    currencies = pd.Series({"FTSE": "GBP", "SPY": "USD", "DAX": "EUR"})
    fx = fx_to_base(currencies, "EUR", rates, SESSIONS[:1])
    # EUR per GBP = 1.50 / 1.25; EUR per USD = 1 / 1.25; EUR per EUR = 1
    np.testing.assert_allclose(fx.iloc[0].to_numpy(), [1.2, 0.8, 1.0])


def test_no_rate_before_the_first_quote_means_no_position():
    rates = pd.DataFrame({"EURUSD": [1.1]}, index=SESSIONS[1:2])
    fx = fx_to_base(pd.Series({"ESTX": "EUR"}), "USD", rates, SESSIONS)
    assert np.isnan(fx["ESTX"].iloc[0]) and fx["ESTX"].iloc[2] == pytest.approx(1.1)


def test_missing_pair_and_missing_source_are_named():
    with pytest.raises(FXError, match="JPYUSD"):
        fx_to_base(pd.Series({"NIKKEI": "JPY"}), "USD", pd.DataFrame({"EURUSD": [1.1]}, index=SESSIONS[:1]), SESSIONS)
    with pytest.raises(FXError, match="portfolio.fx_path"):
        universe_fx([Instrument(symbol="ESTX", currency="EUR")], "USD", None, SESSIONS)
    assert universe_fx([Instrument(symbol="SPY")], "USD", None, SESSIONS) is None
