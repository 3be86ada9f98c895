"""Safe defaults (issue 19): the stale guard and the speed limit on, an instrument with too short a
history or too costly a trade left out (combined forecast 0, listed with its reason), and the position
limit of the risk configuration applied in backtests as production applies it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import (
    DEFAULT_CONFIG_PATH,
    CombinationConfig,
    Instrument,
    PipelineConfig,
    StaleGuardConfig,
)
from pipeline.research.backtest import simulate, simulation_options
from pipeline.signals.combination import (
    combine_rules,
    excluded_instruments,
    tradeable_returns,
)
from pipeline.signals.costs import CostError, exclusion_table, instrument_exclusions


def test_the_defaults_are_on_and_the_bundled_yaml_says_the_same():
    # ST ch. 12 speed limit 0.13; AFTS 0.01 SR units per trade; a year of prices; the stale guard at 5
    comb, guard = CombinationConfig(), StaleGuardConfig()
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    assert (comb.apply_speed_limit, comb.speed_limit, comb.max_sr_cost_per_trade, comb.min_history_sessions) == (
        True, 0.13, 0.01, 256)
    assert guard.sessions == 5
    assert raw["combination"]["apply_speed_limit"] is True
    assert raw["combination"]["max_sr_cost_per_trade"] == 0.01
    assert raw["combination"]["min_history_sessions"] == 256
    assert raw["stale_guard"]["sessions"] == 5


def test_instrument_exclusions_by_hand():
    # A has prices from day 0, B from day 2 (and a hole on day 3); history needed: 3 prices.
    # SR cost per trade: A 0.02 on day 4 only (above 0.01), B never above.
    idx = pd.bdate_range("2020-01-01", periods=6, name="session")
    prices = pd.DataFrame({"A": [1.0, 1, 1, 1, 1, 1], "B": [np.nan, np.nan, 2, np.nan, 2, 2]}, index=idx)
    cost = pd.DataFrame({"A": [np.nan, 0.005, 0.005, 0.005, 0.02, 0.005], "B": 0.001}, index=idx)
    got = instrument_exclusions(prices, cost, 0.01, 3)
    assert got["A"].tolist() == ["short_history", "short_history", "", "", "cost_per_trade", ""]
    # B: 1 price on day 2, still 1 on day 3, 2 on day 4, 3 on day 5
    assert got["B"].tolist() == ["short_history"] * 5 + [""]
    assert (instrument_exclusions(prices, cost, None, None) == "").all().all()
    with pytest.raises(CostError, match="max_sr_cost_per_trade"):
        instrument_exclusions(prices, cost, 0.0, 3)

    table = exclusion_table(got, cost, prices.notna().cumsum(), max_sr_cost_per_trade=0.01, min_history_sessions=3)
    rows = {(r.instrument, r.reason): r for r in table.itertuples()}
    assert set(rows) == {("A", "cost_per_trade"), ("A", "short_history"), ("B", "short_history")}
    assert rows[("A", "cost_per_trade")].sessions == 1 and rows[("A", "cost_per_trade")].last == "2020-01-07"
    assert rows[("A", "cost_per_trade")].detail == "SR cost per trade 0.0200 > 0.01"
    # B's sessions before its first price are not decisions: days 2 and 4 (day 3 has no price)
    assert rows[("B", "short_history")].sessions == 2
    assert rows[("B", "short_history")].detail == "2 prices < 3 sessions"


def _panel(n: int = 600, seed: int = 3):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2015-01-01", periods=n, name="session")
    closes = pd.DataFrame(100 + np.cumsum(rng.normal(0, 1, (n, 2)), axis=0), index=idx, columns=["CHEAP", "DEAR"])
    vol = pd.DataFrame(1.0, index=idx, columns=closes.columns)
    capped = pd.DataFrame(np.clip(rng.normal(5, 5, (n, 2)), -20, 20), index=idx,
                          columns=pd.MultiIndex.from_tuples([("ewmac64_256", "CHEAP"), ("ewmac64_256", "DEAR")],
                                                            names=["rule", "instrument"]))
    return closes, vol, capped


def _config(**combination) -> PipelineConfig:
    # DEAR pays 0.5 price points of slippage a contract: 0.5 / (1.0 x 16) = 0.031 SR units per trade (> 0.01);
    # CHEAP 0.01 points: 0.000625
    return PipelineConfig(
        instruments=[Instrument(symbol="CHEAP", costs={"slippage": 0.01}), Instrument(symbol="DEAR", costs={"slippage": 0.5})],
        rules={"ewmac": [[64, 256]], "breakout": []},
        combination={"fdm": 1.0, "apply_speed_limit": False, **combination},
    )


def test_combined_forecast_is_zero_where_excluded_and_the_reasons_are_reported():
    closes, vol, capped = _panel()
    result = combine_rules(capped, closes, vol, _config(min_history_sessions=256))
    combined = result.combined
    assert (combined["DEAR"].iloc[256:] == 0).all()  # too costly from its first full year of costs on
    assert (combined.iloc[:255] == 0).all().all()  # nobody trades before a year of prices
    np.testing.assert_allclose(combined["CHEAP"].iloc[256:], capped[("ewmac64_256", "CHEAP")].iloc[256:])
    assert result.sr_cost_per_trade["DEAR"].iloc[-1] == pytest.approx(0.5 / 16)
    table = excluded_instruments(closes, vol, _config(min_history_sessions=256), start=closes.index[300])
    assert table[["instrument", "reason", "sessions"]].values.tolist() == [["DEAR", "cost_per_trade", 300]]

    off = combine_rules(capped, closes, vol, _config(max_sr_cost_per_trade=None, min_history_sessions=None))
    assert off.exclusions is None
    np.testing.assert_allclose(off.combined["DEAR"], capped[("ewmac64_256", "DEAR")])


def test_backtest_clips_targets_to_the_risk_position_limit():
    # production clips each trade to risk.max_position (pipeline.execution.intents.clip_plan); from flat,
    # the backtest's holdings are the targets clipped to +/-max_position, a session later
    idx = pd.bdate_range("2021-01-04", periods=5, name="session")
    targets = pd.DataFrame({"A": [0.0, 300, 150, -400, 0]}, index=idx)
    prices = pd.DataFrame({"A": [10.0, 11, 12, 11, 10]}, index=idx)
    cfg = PipelineConfig(instruments=[Instrument(symbol="A")], risk={"max_position": 200})
    options = simulation_options(cfg)
    assert options["max_position"] == 200
    res = simulate(targets, prices, pd.Series({"A": 1.0}), {"A": Instrument(symbol="A").costs}, 1e6, **options)
    assert res.holdings["A"].tolist() == [0.0, 0.0, 200.0, 150.0, -200.0]
    # P&L by hand: the holding before the session (filled at a close) earns the session's move:
    # day 3: 200 x (11 - 12); day 4: 150 x (10 - 11)
    assert res.pnl_gross["A"].tolist() == [0.0, 0.0, 0.0, -200.0, -150.0]


def test_untraded_sessions_leave_the_instrument_weight_estimate():
    # DEAR is too costly from its first full cost window, and both need 256 prices: their returns before that,
    # and all of DEAR's after, are NaN for the weights; a close unchanged for 5 sessions is stale too
    closes, vol, _ = _panel()
    closes.iloc[400:410, 0] = closes.iloc[399, 0]  # CHEAP flat for 11 sessions: stale from the 5th unchanged close
    returns = closes.diff() / vol
    cfg = _config(min_history_sessions=256).model_copy(update={"stale_guard": StaleGuardConfig(sessions=5)})
    got = tradeable_returns(returns, closes, vol, cfg)
    assert got["DEAR"].isna().all()
    assert got["CHEAP"].iloc[:255].isna().all() and got["CHEAP"].iloc[256:399].notna().all()
    assert got["CHEAP"].iloc[404:410].isna().all() and got["CHEAP"].iloc[400:404].notna().all()
    assert got["CHEAP"].iloc[411:].notna().all()
