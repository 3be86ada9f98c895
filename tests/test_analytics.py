"""Tests of pipeline.research.analytics: round-trip trades, attribution, risk and rolling statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from pipeline.adapters.sources import SampleSource
from pipeline.config import CostModel
from pipeline.research.analytics import (
    STRESS_WINDOWS,
    TRADE_COLUMNS,
    AnalyticsError,
    attribution,
    marginal_risk_contributions,
    reconstruct_trades,
    rolling_sharpe,
    rolling_vol,
    rule_attribution,
    stress_test,
    trade_statistics,
    var_cvar,
)
from pipeline.research.backtest import simulate
from pipeline.research.metrics import performance_metrics

NAN = np.nan
SESSIONS = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=8), name="session")


def wide(data: dict[str, list[float]], index: pd.DatetimeIndex = SESSIONS) -> pd.DataFrame:
    frame = pd.DataFrame(data, index=index, dtype=float)
    frame.columns.name = "instrument"
    return frame


# Holdings are given directly (as BacktestResult.holdings would hold them).
# A: long 2, add 1, flip to short 1, flat, long 1 still open at the end.
# B: long 10, cut to 4, back to 10, flat: one trade with a partial reduction and an addition.
HOLDINGS = wide({"A": [0, 2, 3, -1, -1, 0, 0, 1], "B": [0, 10, 10, 4, 10, 10, 0, 0]})
PRICES = wide({"A": [100, 101, 103, 102, 105, 104, 106, 108], "B": [50, 52, 51, 53, 55, 56, 57, 58]})
POINT_SIZE = pd.Series({"A": 2.0, "B": 1.0})


def trades_of(instrument: str) -> pd.DataFrame:
    t = reconstruct_trades(HOLDINGS, PRICES, POINT_SIZE)
    return t[t["instrument"] == instrument].reset_index(drop=True)


# --- reconstruct_trades -----------------------------------------------------------------------


def test_trades_have_the_documented_columns_and_order():
    t = reconstruct_trades(HOLDINGS, PRICES, POINT_SIZE)
    assert list(t.columns) == TRADE_COLUMNS
    # sorted by entry session then instrument: A and B both open on 2024-01-02
    assert t["instrument"].tolist() == ["A", "B", "A", "A"]


def test_flip_closes_one_trade_and_opens_the_opposite_at_the_same_close():
    a = trades_of("A")
    assert a["direction"].tolist() == ["long", "short", "long"]
    assert a.loc[0, "exit_session"] == pd.Timestamp("2024-01-04")
    assert a.loc[1, "entry_session"] == pd.Timestamp("2024-01-04")
    assert a.loc[1, "exit_session"] == pd.Timestamp("2024-01-08")


def test_entry_price_is_unit_weighted_over_additions():
    a = trades_of("A")
    # bought 2 @ 101 then 1 @ 103: (202 + 103) / 3
    assert a.loc[0, "entry_price"] == pytest.approx(305 / 3, rel=1e-15)
    # flip: all 3 long units sold @ 102, the short's single unit sold @ 102
    assert a.loc[0, "exit_price"] == 102.0
    assert a.loc[1, "entry_price"] == 102.0
    assert a.loc[1, "exit_price"] == 104.0


def test_trade_pnl_by_hand():
    a = trades_of("A")
    # long: 2*(103-101)*2 + 3*(102-103)*2 = 8 - 6; short: -1*(105-102)*2 + -1*(104-105)*2 = -6 + 2
    assert a["pnl"].tolist() == [2.0, -4.0, 0.0]
    # B: 10*(51-52) + 10*(53-51) + 4*(55-53) + 10*(56-55) + 10*(57-56) = -10+20+8+10+10
    assert trades_of("B")["pnl"].tolist() == [38.0]


def test_partial_reduction_and_addition_stay_in_one_trade():
    b = trades_of("B").iloc[0]
    assert b["entry_session"] == pd.Timestamp("2024-01-02")
    assert b["exit_session"] == pd.Timestamp("2024-01-09")
    assert b["holding_sessions"] == 5  # 01-02 .. 01-08 hold non-zero units
    assert b["max_units"] == 10.0
    # opened 10 @ 52, re-added 6 @ 55: (520 + 330) / 16
    assert b["entry_price"] == pytest.approx(850 / 16, rel=1e-15)
    # cut 6 @ 53, closed 10 @ 57: (318 + 570) / 16
    assert b["exit_price"] == pytest.approx(888 / 16, rel=1e-15)


def test_open_trade_has_no_exit_session_or_price():
    last = trades_of("A").iloc[-1]
    assert pd.isna(last["exit_session"]) and math.isnan(last["exit_price"])
    assert last["holding_sessions"] == 1 and last["entry_price"] == 108.0


def test_flat_holdings_give_an_empty_trade_table():
    t = reconstruct_trades(HOLDINGS * 0.0, PRICES, POINT_SIZE)
    assert t.empty and list(t.columns) == TRADE_COLUMNS


def test_trades_require_matching_indexes():
    with pytest.raises(AnalyticsError, match="different session indexes"):
        reconstruct_trades(HOLDINGS, PRICES.iloc[:-1], POINT_SIZE)


def test_closed_trades_do_not_change_when_later_holdings_change():
    # no look-ahead: a trade closed by session d is fixed by data up to d
    d = pd.Timestamp("2024-01-05")
    later = HOLDINGS.copy()
    later.loc[later.index > d] = [[-7.0, 3.0]] * int((later.index > d).sum())
    before = reconstruct_trades(HOLDINGS, PRICES, POINT_SIZE)
    after = reconstruct_trades(later, PRICES, POINT_SIZE)
    done = before[before["exit_session"] <= d].reset_index(drop=True)
    pd.testing.assert_frame_equal(done, after[after["exit_session"] <= d].reset_index(drop=True))
    assert len(done) == 1  # the first A trade; guards against a vacuous comparison


@settings(max_examples=40, deadline=None)
@given(
    positions=arrays(np.int64, (30, 2), elements=st.integers(-3, 3)),
    moves=arrays(np.int64, (30, 2), elements=st.integers(-5, 5)),
)
def test_trade_pnl_sums_exactly_to_the_instruments_gross_pnl(positions, moves):
    # Integer prices and units make every float sum exact, so the invariant is tested with ==.
    index = pd.DatetimeIndex(pd.bdate_range("2020-01-01", periods=30), name="session")
    prices = wide({"X": 1000 + moves[:, 0].cumsum(), "Y": 500 + moves[:, 1].cumsum()}, index)
    pos = wide({"X": positions[:, 0], "Y": positions[:, 1]}, index)
    ps = pd.Series({"X": 3.0, "Y": 1.0})
    res = simulate(pos, prices, ps, {"X": CostModel(slippage=1.0), "Y": CostModel()}, 1e6)
    t = reconstruct_trades(res.holdings, res.prices, ps)
    by_instrument = t.groupby("instrument")["pnl"].sum().reindex(["X", "Y"], fill_value=0.0)
    assert (by_instrument.to_numpy() == res.pnl_gross.sum().to_numpy()).all()


@settings(max_examples=20, deadline=None)
@given(
    positions=arrays(np.float64, (25, 3), elements=st.floats(-5, 5).map(lambda x: round(x, 1))),
    rets=arrays(np.float64, (25, 3), elements=st.floats(-0.05, 0.05)),
)
def test_trade_pnl_sums_to_gross_pnl_with_fx_and_missing_prices(positions, rets):
    index = pd.DatetimeIndex(pd.bdate_range("2021-01-01", periods=25), name="session")
    prices = wide({c: 100 * np.cumprod(1 + rets[:, i]) for i, c in enumerate("XYZ")}, index)
    prices.iloc[[3, 4, 11], 1] = NAN  # holdings are carried over missing closes
    fx = wide({"X": np.linspace(1.0, 1.2, 25), "Y": [0.9] * 25, "Z": [1.0] * 25}, index)
    pos = wide({c: positions[:, i] for i, c in enumerate("XYZ")}, index)
    ps = pd.Series({"X": 50.0, "Y": 1.0, "Z": 10.0})
    res = simulate(pos, prices, ps, {c: CostModel() for c in "XYZ"}, 1e6, fx=fx)
    t = reconstruct_trades(res.holdings, res.prices, ps, pnl=res.pnl_gross)
    got = t.groupby("instrument")["pnl"].sum().reindex(list("XYZ"), fill_value=0.0)
    np.testing.assert_allclose(got.to_numpy(), res.pnl_gross.sum().to_numpy(), rtol=1e-12, atol=1e-9)


# --- trade_statistics ---------------------------------------------------------------------------


def _trades(pnls, directions, holding, open_last=False):
    n = len(pnls)
    entry = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=n))
    exits = pd.Series(entry + pd.Timedelta(days=1))
    if open_last:
        exits.iloc[-1] = pd.NaT
    return pd.DataFrame(
        {
            "instrument": ["A"] * n,
            "direction": directions,
            "entry_session": entry,
            "exit_session": exits.to_numpy(),
            "holding_sessions": holding,
            "entry_price": 1.0,
            "exit_price": 1.0,
            "max_units": 1.0,
            "pnl": [float(p) for p in pnls],
        }
    )


def test_trade_statistics_by_hand():
    t = _trades([5, 3, -2, 4, -1, -1, -6, 0, 10], ["long"] * 5 + ["short"] * 4, [1, 2, 3, 4, 5, 6, 7, 8, 9], open_last=True)
    s = trade_statistics(t)
    # the open +10 trade is left out: 8 trades, winners 5,3,4 losers -2,-1,-1,-6, one scratch
    assert s["n_trades"] == 8
    assert s["win_rate"] == 3 / 8
    assert s["profit_factor"] == 12 / 10
    assert s["avg_winner"] == 4.0 and s["avg_loser"] == -2.5
    assert s["largest_winner"] == 5.0 and s["largest_loser"] == -6.0
    assert s["longest_win_streak"] == 2 and s["longest_loss_streak"] == 3
    assert s["avg_holding_sessions"] == 4.5
    assert (s["n_long"], s["n_short"]) == (5, 3)
    assert (s["pnl_long"], s["pnl_short"]) == (9.0, -7.0)
    assert s["total_pnl"] == 2.0
    assert trade_statistics(t, include_open=True)["total_pnl"] == 12.0


def test_trade_statistics_of_no_trades_are_nan_not_errors():
    s = trade_statistics(_trades([], [], []))
    assert s["n_trades"] == 0 and math.isnan(s["win_rate"]) and math.isnan(s["profit_factor"])


# --- attribution --------------------------------------------------------------------------------


def _backtest():
    pos = wide({"A": [1, 1, 2, 2, 0, 0, 1, 1], "B": [5, 5, 5, 0, 0, -5, -5, -5], "C": [1] * 8})
    prices = PRICES.assign(C=[10, 11, 12, 11, 10, 9, 10, 11.0])
    prices.columns.name = "instrument"
    costs = {"A": CostModel(commission_per_unit=1.0), "B": CostModel(slippage=0.1), "C": CostModel()}
    return simulate(pos, prices, pd.Series({"A": 2.0, "B": 1.0, "C": 1.0}), costs, 1000.0)


def test_attribution_regroups_pnl_by_instrument_and_asset_class():
    res = _backtest()
    out = attribution(res, {"A": "rates", "B": "equity", "C": "equity"})
    by_i, by_c = out["by_instrument"], out["by_asset_class"]
    # independent: column sums of the backtest frames
    np.testing.assert_allclose(by_i["net"], res.pnl_net.sum().to_numpy())
    np.testing.assert_allclose(by_i["gross"] - by_i["costs"], by_i["net"])
    assert by_c.loc["equity", "net"] == pytest.approx(res.pnl_net[["B", "C"]].to_numpy().sum())
    assert by_c["net"].sum() == pytest.approx(res.portfolio_pnl.sum())
    assert by_c["net_share"].sum() == pytest.approx(1.0)
    pd.testing.assert_series_equal(
        out["daily_by_asset_class"]["equity"], res.pnl_net["B"] + res.pnl_net["C"], check_names=False
    )


def test_attribution_names_instruments_without_asset_class():
    with pytest.raises(AnalyticsError, match=r"\['C'\]"):
        attribution(_backtest(), {"A": "rates", "B": "equity"})


def test_rule_attribution_trades_each_rule_alone():
    prices = PRICES
    cols = pd.MultiIndex.from_product([["fast", "slow", "slow_copy"], ["A", "B"]], names=["rule", "instrument"])
    rng = np.random.default_rng(3)
    f = pd.DataFrame(rng.normal(0, 10, (8, 6)).round(), index=SESSIONS, columns=cols)
    f["slow_copy"] = f["slow"].to_numpy() * 2.0  # twice the forecast: same returns scaled by 2
    sizing = lambda fc: (fc / 10.0).round()  # noqa: E731 - the caller's sizing
    costs = {"A": CostModel(), "B": CostModel()}
    out = rule_attribution(f, sizing, prices, POINT_SIZE, costs, 1000.0)
    direct = simulate(sizing(f["fast"]), prices, POINT_SIZE, costs, 1000.0)
    pd.testing.assert_series_equal(out["returns"]["fast"], direct.returns, check_names=False)
    assert out["summary"].loc["fast", "net"] == pytest.approx(direct.portfolio_pnl.sum())
    assert out["summary"].loc["fast", "sharpe"] == pytest.approx(performance_metrics(direct.returns)["sharpe"])
    assert list(out["correlation"].index) == ["fast", "slow", "slow_copy"]
    corr = out["correlation"]
    # rounding makes slow_copy not exactly 2x slow, so only a strong positive correlation holds;
    # the diagonal is exactly 1
    assert np.diag(corr.to_numpy()).tolist() == [1.0, 1.0, 1.0]
    assert corr.loc["slow", "slow_copy"] > 0.5


def test_rule_attribution_accepts_a_dict_of_wide_frames():
    f = {"r1": wide({"A": [10] * 8, "B": [-10] * 8})}
    out = rule_attribution(f, lambda fc: fc / 10.0, PRICES, POINT_SIZE, {"A": CostModel(), "B": CostModel()}, 1000.0)
    # long 1 A from 01-02 (P&L from 01-03): (108-101)*2 = 14; short 1 B: -(58-52) = -6
    assert out["summary"].loc["r1", "gross"] == pytest.approx(8.0)


# --- var_cvar -----------------------------------------------------------------------------------


def test_historical_var_cvar_by_hand():
    r = pd.Series(np.arange(-10, 10) / 100.0)  # -0.10 .. 0.09
    out = var_cvar(r, levels=(0.95,))
    # numpy linear quantile at 0.05: position 19*0.05 = 0.95 -> -0.10 + 0.95*0.01 = -0.0905
    assert out.loc[0.95, "historical_var"] == pytest.approx(0.0905)
    assert out.loc[0.95, "historical_cvar"] == pytest.approx(0.10)  # only -0.10 is <= q


def test_parametric_var_cvar_match_scipy_normal():
    rng = np.random.default_rng(7)
    r = pd.Series(rng.normal(0.001, 0.02, 500))
    mu, sigma = r.mean(), r.std(ddof=1)
    out = var_cvar(r)
    for level in (0.95, 0.99):
        q = stats.norm.ppf(1 - level, mu, sigma)
        # CVaR as the conditional mean of the normal below q, integrated numerically by scipy
        tail_mean = stats.norm.expect(lambda x: x, loc=mu, scale=sigma, ub=q) / (1 - level)
        assert out.loc[level, "parametric_var"] == pytest.approx(-q, rel=1e-12)
        assert out.loc[level, "parametric_cvar"] == pytest.approx(-tail_mean, rel=1e-7)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(2, 200), elements=st.floats(-0.2, 0.2)))
def test_cvar_is_never_below_var(r):
    out = var_cvar(pd.Series(r))
    assert (out["historical_cvar"] >= out["historical_var"] - 1e-15).all()
    assert (out["parametric_cvar"] >= out["parametric_var"] - 1e-15).all()


def test_var_cvar_rejects_bad_levels():
    with pytest.raises(AnalyticsError, match="levels"):
        var_cvar(pd.Series([0.01, -0.02, 0.0]), levels=(95,))


# --- stress_test --------------------------------------------------------------------------------


def test_stress_test_replays_price_moves_by_hand():
    pos = pd.Series({"A": 1.0, "B": -2.0, "C": 0.0})
    out = stress_test(pos, PRICES, POINT_SIZE, {"w": ("2024-01-03", "2024-01-08")})
    # base = closes of 01-02 (A 101, B 52); A: 1*(P-101)*2, B: -2*(P-52)
    # 01-03: 4 + 2 = 6; 01-04: 2 - 2 = 0; 01-05: 8 - 6 = 2; 01-08: 6 - 8 = -2
    assert out.summary.loc["w", "pnl"] == -2.0
    assert out.summary.loc["w", "worst_pnl"] == -2.0
    assert out.by_instrument.loc["w", "A"] == 6.0 and out.by_instrument.loc["w", "B"] == -8.0
    assert out.summary.loc["w", "n_missing"] == 0
    assert out.by_instrument.loc["w", "C"] == 0.0  # no position, no loss


def test_stress_test_counts_instruments_without_history():
    prices = PRICES.assign(C=[NAN] * 6 + [10.0, 11.0])
    out = stress_test(pd.Series({"A": 1.0, "C": 1.0}), prices, pd.Series({"A": 2.0, "C": 1.0}), {"w": ("2024-01-03", "2024-01-04")})
    assert out.summary.loc["w", "n_missing"] == 1
    assert math.isnan(out.by_instrument.loc["w", "C"])
    assert out.summary.loc["w", "pnl"] == 2.0  # A only: (102-101)*2


def test_stress_test_rejects_a_window_outside_the_history():
    with pytest.raises(AnalyticsError, match="no session"):
        stress_test(pd.Series({"A": 1.0}), PRICES, POINT_SIZE, {"old": ("1990-01-01", "1990-02-01")})


def test_stress_test_default_windows_on_real_spx():
    bars = SampleSource().fetch(["SPX"], pd.Timestamp("2008-01-01"), pd.Timestamp("2020-12-31"))
    prices = bars.pivot(index="session", columns="instrument", values="close")
    out = stress_test(pd.Series({"SPX": 2.0}), prices, pd.Series({"SPX": 50.0}), STRESS_WINDOWS)
    close = prices["SPX"]
    for name, (start, end) in STRESS_WINDOWS.items():
        # independent: last close before the window and last close in it
        before = close[close.index < pd.Timestamp(start)].iloc[-1]
        last = close[close.index <= pd.Timestamp(end)].iloc[-1]
        assert out.summary.loc[name, "pnl"] == pytest.approx(2 * 50 * (last - before))
    assert (out.summary["pnl"] < 0).all()  # both windows were crashes


# --- marginal_risk_contributions ----------------------------------------------------------------


def test_risk_contributions_by_hand():
    cov = pd.DataFrame([[0.04, 0.0], [0.0, 0.01]], index=["X", "Y"], columns=["X", "Y"])
    out = marginal_risk_contributions(pd.Series({"X": 1.0, "Y": 1.0}), cov)
    sigma = math.sqrt(0.05)
    assert out["contribution"].tolist() == pytest.approx([0.04 / sigma, 0.01 / sigma])
    assert out["share"].tolist() == pytest.approx([0.8, 0.2])


def test_marginal_risk_is_the_gradient_of_portfolio_risk():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(4, 4))
    cov = pd.DataFrame(a @ a.T / 100, index=list("PQRS"), columns=list("PQRS"))
    w = pd.Series([1.0, -2.0, 0.5, 3.0], index=list("PQRS"))
    out = marginal_risk_contributions(w, cov)
    risk = lambda v: math.sqrt(v @ cov.to_numpy() @ v)  # noqa: E731
    h = 1e-6
    grad = [(risk(w.to_numpy() + h * e) - risk(w.to_numpy() - h * e)) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(out["marginal"], grad, rtol=1e-6)
    assert out["contribution"].sum() == pytest.approx(risk(w.to_numpy()), rel=1e-12)


def test_risk_contributions_need_every_instrument_in_cov():
    cov = pd.DataFrame([[0.04]], index=["X"], columns=["X"])
    with pytest.raises(AnalyticsError, match=r"\['Y'\]"):
        marginal_risk_contributions(pd.Series({"X": 1.0, "Y": 1.0}), cov)


# --- rolling ------------------------------------------------------------------------------------


def _returns(n=400, seed=5):
    index = pd.DatetimeIndex(pd.bdate_range("2015-01-01", periods=n), name="session")
    return pd.Series(np.random.default_rng(seed).normal(0.0004, 0.01, n), index=index)


def test_rolling_sharpe_and_vol_match_a_naive_window():
    r = _returns()
    rs, rv = rolling_sharpe(r, window=256), rolling_vol(r, window=64)
    assert rs.iloc[:255].isna().all() and rv.iloc[:63].isna().all()
    for t in (255, 300, 399):
        w = r.to_numpy()[t - 255 : t + 1]
        assert rs.iloc[t] == pytest.approx(w.mean() / w.std(ddof=1) * 16, rel=1e-9)
        v = r.to_numpy()[t - 63 : t + 1]
        assert rv.iloc[t] == pytest.approx(v.std(ddof=1) * 16, rel=1e-9)


def test_rolling_statistics_do_not_look_ahead():
    r = _returns()
    d = r.index[300]
    bumped = r.copy()
    bumped[bumped.index > d] += 0.05
    pd.testing.assert_series_equal(rolling_sharpe(r)[:d], rolling_sharpe(bumped)[:d])
    pd.testing.assert_series_equal(rolling_vol(r)[:d], rolling_vol(bumped)[:d])
    assert not rolling_vol(r).equals(rolling_vol(bumped))
