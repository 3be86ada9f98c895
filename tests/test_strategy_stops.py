"""Stops, targets, time stops and entries of the stop-and-target backtest, computed by hand.

Every case: one instrument, point size 1, ATR fixed at 1.0, fixed-fraction sizing with 1,000 of equity
and 2% at risk; with a 2-ATR stop that is 20 / 2 = 10 contracts. The entry state is +1 from the first
close, so the position opens at the second bar's open (100).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import CostModel
from pipeline.strategies.backtest import (
    EXIT_REASONS,
    TRADE_COLUMNS,
    simulate_stop_target,
    summarise_stop_target,
)
from pipeline.strategies.config import StopTargetStrategy

FLAT = (100.0, 100.5, 99.5, 100.0)


def _strategy(exits, sizing=None, **extra) -> StopTargetStrategy:
    return StopTargetStrategy.model_validate({
        "kind": "stop_target", "order_ref_prefix": "t", "entry": {"kind": "ema_crossover"},
        "sizing": sizing or {"kind": "fixed_fraction", "risk_fraction": 0.02}, "exits": exits,
        "max_contracts": extra.pop("max_contracts", 20), **extra})


NO_COSTS = CostModel()


def _run(bars, states, exits, costs=NO_COSTS, atr=1.0, **extra):
    idx = pd.bdate_range("2024-01-01", periods=len(bars), name="session")
    o, h, lo, c = (pd.DataFrame({"CL": [b[k] for b in bars]}, index=idx) for k in range(4))
    state = pd.DataFrame({"CL": states}, index=idx, dtype=float)
    atr_frame = pd.DataFrame({"CL": atr}, index=idx, dtype=float)
    return simulate_stop_target(o, h, lo, c, state, atr_frame, _strategy(exits, **extra), pd.Series({"CL": 1.0}),
                                {"CL": costs}, capital=1000.0)


def _only_trade(result) -> dict:
    assert len(result.trades) == 1, result.trades
    return result.trades.iloc[0].to_dict()


STOP2 = {"stop": {"kind": "atr", "value": 2.0}}


def test_a_stop_inside_the_bar_fills_at_the_stop():
    bars = [FLAT, FLAT, (100.0, 101.0, 99.0, 100.5), (100.0, 100.5, 97.5, 98.0), FLAT]
    r = _run(bars, [1, 1, 1, 1, 1], STOP2)
    t = _only_trade(r)
    assert (t["direction"], t["entry_price"], t["exit_price"], t["contracts"]) == ("long", 100.0, 98.0, 10)
    assert (t["exit_reason"], t["pnl"], t["holding_sessions"]) == ("stop", -20.0, 2)
    assert t["entry_session"] == r.account.index[1] and t["exit_session"] == r.account.index[3]
    # the state stays long after the stop-out: no re-entry on the same signal
    assert r.positions["CL"].tolist() == [0, 10, 10, 0, 0]


def test_a_gap_through_the_stop_fills_at_the_open():
    bars = [FLAT, FLAT, (100.0, 101.0, 99.0, 100.5), (97.0, 97.5, 96.0, 97.0)]
    t = _only_trade(_run(bars, [1, 1, 1, 1], STOP2))
    assert (t["exit_price"], t["exit_reason"], t["pnl"]) == (97.0, "stop", -30.0)


def test_a_short_stop_gapped_through_upwards_fills_at_the_open():
    bars = [FLAT, FLAT, (103.0, 104.0, 102.5, 103.5)]
    t = _only_trade(_run(bars, [-1, -1, -1], STOP2))
    assert (t["direction"], t["exit_price"], t["exit_reason"], t["pnl"]) == ("short", 103.0, "stop", -30.0)


def test_the_trailing_stop_only_moves_in_the_positions_favour():
    """Trail 2 ATR: 98 at the entry, 103 - 2 = 101 after the close of 103; the close of 102 would put it at
    100, but it stays at 101; the next bar's low 100.8 fills it at 101."""
    bars = [FLAT, (100.0, 103.5, 99.5, 103.0), (102.5, 102.8, 101.5, 102.0), (101.8, 102.0, 100.8, 101.2)]
    t = _only_trade(_run(bars, [1, 1, 1, 1], {"trailing": {"kind": "atr", "value": 2.0}}))
    assert (t["exit_price"], t["exit_reason"], t["pnl"]) == (101.0, "trailing_stop", 10.0)


def test_a_fixed_stop_below_the_trail_reports_the_trail():
    bars = [FLAT, (100.0, 103.5, 99.5, 103.0), (102.5, 102.8, 100.5, 101.0)]
    exits = {"stop": {"kind": "atr", "value": 2.0}, "trailing": {"kind": "atr", "value": 2.0}}
    t = _only_trade(_run(bars, [1, 1, 1], exits))
    assert (t["exit_price"], t["exit_reason"]) == (101.0, "trailing_stop")


def test_take_profit_fills_at_the_target_and_at_the_open_on_a_gap():
    exits = {**STOP2, "take_profit": {"kind": "atr", "value": 3.0}}
    bars = [FLAT, FLAT, (101.0, 103.5, 100.5, 102.0)]
    t = _only_trade(_run(bars, [1, 1, 1], exits))
    assert (t["exit_price"], t["exit_reason"], t["pnl"]) == (103.0, "take_profit", 30.0)
    gap = [FLAT, FLAT, (104.0, 105.0, 103.5, 104.5)]
    t = _only_trade(_run(gap, [1, 1, 1], exits))
    assert (t["exit_price"], t["exit_reason"], t["pnl"]) == (104.0, "take_profit", 40.0)


def test_stop_and_target_in_one_bar_fill_the_stop_first():
    exits = {**STOP2, "take_profit": {"kind": "atr", "value": 3.0}}
    bars = [FLAT, FLAT, (100.0, 103.5, 97.5, 102.0)]
    t = _only_trade(_run(bars, [1, 1, 1], exits))
    assert (t["exit_price"], t["exit_reason"], t["pnl"]) == (98.0, "stop", -20.0)


def test_time_stop_closes_at_the_open_after_the_last_session_held():
    bars = [FLAT, FLAT, FLAT, (101.5, 102.0, 101.0, 101.5), FLAT]
    r = _run(bars, [1, 1, 1, 1, 1], {**STOP2, "time_stop": 2})
    t = _only_trade(r)
    assert (t["exit_price"], t["exit_reason"], t["holding_sessions"], t["pnl"]) == (101.5, "time_stop", 2, 15.0)
    assert r.positions["CL"].tolist() == [0, 10, 10, 0, 0]  # no re-entry on the same signal


def test_a_signal_reversal_closes_and_opens_at_the_same_open_with_costs():
    """Commission 1 a contract: 10 + 10 on the long, 10 on the short's entry (open at the end, no exit cost)."""
    bars = [FLAT, FLAT, (100.0, 101.0, 99.5, 100.8), (101.0, 101.5, 100.5, 101.0), FLAT]
    r = _run(bars, [1, 1, -1, -1, -1], STOP2, costs=CostModel(commission_per_unit=1.0))
    long, short = r.trades.iloc[0], r.trades.iloc[1]
    assert (long["exit_reason"], long["exit_price"], long["pnl"]) == ("signal", 101.0, 10 * 1.0 - 20.0)
    assert (short["direction"], short["entry_price"], short["exit_reason"]) == ("short", 101.0, "end_of_data")
    # short 10 from 101, marked at the last close 100: +10, less its entry commission 10
    assert (short["exit_price"], short["pnl"]) == (100.0, pytest.approx(0.0))
    assert r.trades["pnl"].sum() == pytest.approx(r.account["pnl"].sum())


def test_after_a_stop_the_next_entry_waits_for_the_signal_to_change():
    bars = [FLAT, FLAT, (100.0, 100.5, 97.5, 98.0), FLAT, FLAT, FLAT, FLAT]
    r = _run(bars, [1, 1, 1, 1, 0, 1, 1], STOP2)
    assert r.trades["entry_session"].tolist() == [r.account.index[1], r.account.index[6]]


def test_the_daily_loss_limit_blocks_the_next_entry():
    """The gap-through loss of 30 is 3% of 1,000 > the 2% limit: the short decided at that close is not
    entered at the next open; without the limit it is."""
    bars = [FLAT, FLAT, (97.0, 97.5, 96.0, 97.0), FLAT, FLAT]
    states = [1, 1, -1, -1, -1]
    limited = _run(bars, states, STOP2, daily_loss_limit=0.02)
    assert limited.account["entries_blocked"].tolist() == [0, 0, 1, 0, 0]
    assert limited.account["loss_limit_hit"].tolist() == [False, False, True, False, False]
    # the next session decides again: the short enters one session later (still open at the end)
    assert limited.trades["exit_reason"].tolist() == ["stop", "end_of_data"]
    assert limited.trades["entry_session"].iloc[1] == limited.account.index[4]
    # sized on the equity left: 970 x 2% / 2 = 9.7 -> 9 contracts
    assert limited.positions["CL"].tolist() == [0, 10, 0, 0, -9]
    free = _run(bars, states, STOP2)
    assert free.positions["CL"].tolist() == [0, 10, 0, -9, -9]


def test_a_missing_bar_holds_the_position_and_fires_no_stop():
    nan = (np.nan, np.nan, np.nan, np.nan)
    bars = [FLAT, FLAT, nan, (97.0, 97.5, 96.0, 97.0)]
    r = _run(bars, [1, 1, np.nan, 1], STOP2)
    assert r.positions["CL"].tolist() == [0, 10, 10, 0]
    assert _only_trade(r)["exit_price"] == 97.0


def test_summary_statistics_by_hand():
    """Trades +30 (target), -20 (stop), -20 (stop): win rate 1/3, profit factor 30/40, expectancy -10/3."""
    exits = {**STOP2, "take_profit": {"kind": "atr", "value": 3.0}}
    up, down = (101.0, 103.5, 100.5, 102.0), (100.0, 100.5, 97.5, 98.0)
    bars = [FLAT, FLAT, up, FLAT, FLAT, down, FLAT, FLAT, down]
    states = [1, 1, 1, -1, 1, 1, -1, 1, 1]
    r = _run(bars, states, exits, allow_short=False)
    s = summarise_stop_target(r)["trades"]
    assert r.trades["pnl"].tolist() == [30.0, -20.0, -20.0]
    assert s["count"] == 3 and s["win_rate"] == pytest.approx(1 / 3)
    assert (s["average_win"], s["average_loss"], s["max_consecutive_losses"]) == (30.0, -20.0, 2)
    assert s["profit_factor"] == pytest.approx(0.75) and s["expectancy"] == pytest.approx(-10 / 3)


# -- property: the trades' P&L adds up to the account's ---------------------------------------------------


@st.composite
def _market(draw):
    n_rows = draw(st.integers(20, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1.0, (n_rows, 2)), axis=0)
    open_ = close + rng.normal(0, 0.8, close.shape)
    high = np.maximum(open_, close) + rng.exponential(0.5, close.shape)
    low = np.minimum(open_, close) - rng.exponential(0.5, close.shape)
    missing = rng.random(close.shape) < draw(st.sampled_from([0.0, 0.05]))
    state = np.sign(rng.normal(0, 1, close.shape)).cumsum(axis=0).clip(-1, 1)
    frames = [np.where(missing, np.nan, a) for a in (open_, high, low, close)]
    exits = {
        "stop": draw(st.sampled_from([None, {"kind": "atr", "value": 1.5}, {"kind": "percent", "value": 0.02},
                                      {"kind": "amount", "value": 1.0}])),
        "trailing": draw(st.sampled_from([None, {"kind": "atr", "value": 2.0}, {"kind": "percent", "value": 0.03}])),
        "take_profit": draw(st.sampled_from([None, {"kind": "atr", "value": 3.0}, {"kind": "percent", "value": 0.04}])),
        "time_stop": draw(st.sampled_from([None, 3, 10])),
    }
    if exits["stop"] is None and exits["trailing"] is None:
        exits["stop"] = {"kind": "atr", "value": 2.0}
    sizing = draw(st.sampled_from([{"kind": "fixed_fraction", "risk_fraction": 0.02},
                                   {"kind": "kelly", "min_trades": 3, "cap": 3.0}]))
    return frames, state, exits, sizing, draw(st.sampled_from([None, 0.01]))


@settings(max_examples=60, deadline=None)
@given(_market())
def test_trade_pnl_sums_to_the_total_pnl_net_of_costs(market):
    (o, h, lo, c), state, exits, sizing, limit = market
    idx = pd.bdate_range("2020-01-01", periods=len(c), name="session")
    cols = ["A", "B"]
    f = [pd.DataFrame(a, index=idx, columns=cols) for a in (o, h, lo, c, state)]
    atr = pd.DataFrame(1.2, index=idx, columns=cols)
    costs = {"A": CostModel(commission_per_unit=2.0, slippage=0.05), "B": CostModel(commission_min=3.0)}
    strategy = _strategy({k: v for k, v in exits.items() if v is not None}, sizing=sizing, max_contracts=7,
                         daily_loss_limit=limit)
    r = simulate_stop_target(*f, atr, strategy, pd.Series({"A": 10.0, "B": 50.0}), costs, capital=100_000.0)
    total = r.account["pnl"].sum()
    assert r.trades["pnl"].sum() == pytest.approx(total, abs=1e-6)
    assert r.pnl.to_numpy().sum() == pytest.approx(total, abs=1e-6)
    assert r.trades["costs"].sum() == pytest.approx(r.costs.to_numpy().sum(), abs=1e-9)
    assert r.account["equity"].iloc[-1] == pytest.approx(100_000.0 + total)
    assert r.positions.abs().to_numpy().max(initial=0) <= 7
    assert list(r.trades.columns) == TRADE_COLUMNS and set(r.trades["exit_reason"]) <= set(EXIT_REASONS)
