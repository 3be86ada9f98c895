"""Tests of pipeline.research.backtest: delayed fills, costs, P&L accounting and its invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.config import CostModel
from pipeline.research.backtest import BacktestInputError, simulate, trading_costs
from pipeline.research.plots import bar_png, equity_drawdown_png

SESSIONS = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=5), name="session")
NAN = np.nan


def wide(data: dict[str, list[float]], index: pd.DatetimeIndex = SESSIONS) -> pd.DataFrame:
    frame = pd.DataFrame(data, index=index, dtype=float)
    frame.columns.name = "instrument"
    return frame


# Instrument A: point size 2, slippage 0.5 points, 1 per unit with a minimum of 3 per trade.
# Instrument B: point size 1, commission 0.1 % of notional only, and a missing price on day 3.
PRICES = wide({"A": [100, 101, 103, 102, 105], "B": [50, 52, 51, NAN, 55]})
POSITIONS = wide({"A": [2, 2, -1, -1, 0], "B": [10, 10, 10, 10, 10]})
POINT_SIZE = pd.Series({"A": 2.0, "B": 1.0})
COSTS = {
    "A": CostModel(slippage=0.5, commission_per_unit=1.0, commission_min=3.0),
    "B": CostModel(commission_pct=0.001),
}
CAPITAL = 1000.0


def run(**overrides):
    kwargs = dict(
        positions=POSITIONS, prices=PRICES, point_size=POINT_SIZE, costs=COSTS, capital=CAPITAL
    )
    kwargs.update(overrides)
    return simulate(**kwargs)


def test_holdings_are_the_previous_sessions_targets():
    # delayfill: h_t = positions_{t-1}, 0 on the first session.
    res = run()
    assert res.holdings["A"].tolist() == [0, 2, 2, -1, -1]


def test_trades_are_changes_in_holdings():
    res = run()
    assert res.trades["A"].tolist() == [0, 2, 0, -3, 0]


def test_gross_pnl_by_hand():
    # A: t2 = 2 * (103 - 101) * 2 = 8; t3 = 2 * (102 - 103) * 2 = -4;
    #    t4 = -1 * (105 - 102) * 2 = -6.
    # B: t2 = 10 * (51 - 52) = -10; t3 price missing -> 0; t4 = 10 * (55 - 51) = 40 (move since
    # the last valid close).
    res = run()
    assert res.pnl_gross["A"].tolist() == [0, 0, 8, -4, -6]
    assert res.pnl_gross["B"].tolist() == [0, 0, -10, 0, 40]


def test_costs_by_hand():
    # A t1: 2 units: 2*0.5*2 + max(2*1, 3) = 2 + 3 = 5; t3: 3 units: 3*0.5*2 + max(3, 3) = 6.
    # B t1: 10 units at 52: max(0, 0, 0.001*10*52*1) = 0.52.
    res = run()
    np.testing.assert_allclose(res.costs["A"], [0, 5, 0, 6, 0])
    np.testing.assert_allclose(res.costs["B"], [0, 0.52, 0, 0, 0])


def test_portfolio_equity_and_drawdown_by_hand():
    # Net per session: A [0, -5, 8, -10, -6], B [0, -0.52, -10, 0, 40].
    # Portfolio [0, -5.52, -2, -10, 34];
    # equity 1000 + cumsum = [1000, 994.48, 992.48, 982.48, 1016.48].
    res = run()
    np.testing.assert_allclose(res.portfolio_pnl, [0, -5.52, -2, -10, 34])
    np.testing.assert_allclose(res.equity, [1000, 994.48, 992.48, 982.48, 1016.48])
    np.testing.assert_allclose(res.returns, [0, -0.00552, -0.002, -0.010, 0.034])
    # Peak starts at capital (1000): drawdowns 0, -0.00552, -0.00752, -0.01752, then a new high.
    np.testing.assert_allclose(res.drawdown, [0, -0.00552, -0.00752, -0.01752, 0], atol=1e-12)


def test_drawdown_peak_includes_starting_capital():
    # A loss on the very first traded session is a drawdown from capital, not from itself.
    prices = wide({"A": [100, 100, 90, 90, 90]})
    positions = wide({"A": [1, 1, 1, 1, 1]})
    res = simulate(positions, prices, pd.Series({"A": 1.0}), {"A": CostModel()}, 100.0)
    # holding 1 from t1; t2 loses 10 of 100 capital.
    np.testing.assert_allclose(res.drawdown, [0, 0, -0.1, -0.1, -0.1])


def test_position_decided_at_d_earns_nothing_from_the_move_into_d_plus_1():
    # A target set at the close of session 1 is bought at the close of session 2, so the move
    # 1 -> 2 (+50) is not earned and the move 2 -> 3 (+7) is.
    prices = wide({"A": [10, 10, 60, 67, 67]})
    positions = wide({"A": [0, 1, 1, 1, 1]})
    res = simulate(positions, prices, pd.Series({"A": 1.0}), {"A": CostModel()}, 1e6)
    assert res.pnl_gross["A"].tolist() == [0, 0, 0, 7, 0]


def test_no_trade_while_price_is_missing_and_holding_carried():
    # Target 5 decided at session 1 would trade at session 2, whose price is missing: it trades
    # at session 3 instead (at 55), and nothing is costed at session 2.
    prices = wide({"B": [50, 52, NAN, 55, 56]})
    positions = wide({"B": [0, 5, 5, 5, 5]})
    res = simulate(
        positions, prices, pd.Series({"B": 1.0}), {"B": CostModel(commission_min=1.0)}, 1e6
    )
    assert res.holdings["B"].tolist() == [0, 0, 0, 5, 5]
    assert res.trades["B"].tolist() == [0, 0, 0, 5, 0]
    assert res.costs["B"].tolist() == [0, 0, 0, 1, 0]
    assert res.pnl_gross["B"].tolist() == [0, 0, 0, 0, 5]


def test_nan_target_is_flat():
    prices = wide({"A": [10, 11, 12, 13, 14]})
    positions = wide({"A": [NAN, 1, NAN, NAN, NAN]})
    res = simulate(positions, prices, pd.Series({"A": 1.0}), {"A": CostModel()}, 1e6)
    assert res.holdings["A"].tolist() == [0, 0, 1, 0, 0]


def test_zero_positions_give_zero_pnl_and_costs():
    res = run(positions=POSITIONS * 0.0)
    assert (res.pnl_net.to_numpy() == 0).all()
    assert (res.costs.to_numpy() == 0).all()
    assert (res.equity == CAPITAL).all()


def test_fx_converts_pnl_and_costs_to_base_currency():
    # A's currency is worth 2 base units: every A number doubles; B (rate 1) is unchanged.
    fx = wide({"A": [2.0] * 5, "B": [1.0] * 5})
    base, converted = run(), run(fx=fx)
    pd.testing.assert_frame_equal(converted.pnl_gross, base.pnl_gross * [2.0, 1.0])
    pd.testing.assert_frame_equal(converted.costs, base.costs * [2.0, 1.0])


def test_missing_fx_where_needed_raises():
    fx = wide({"A": [NAN] * 5, "B": [1.0] * 5})
    with pytest.raises(BacktestInputError, match="no FX rate for A"):
        run(fx=fx)


def test_trading_costs_ib_stock_example():
    # IB fixed pricing (default config): 0.005/share, min 1, slippage 0.005.
    # 100 shares at 50: 100*0.005 + max(0.5, 1) = 1.5; 1000 shares: 5 + max(5, 1) = 10;
    # -1 share: 0.005 + 1 = 1.005.
    ib = CostModel(slippage=0.005, commission_per_unit=0.005, commission_min=1.0)
    idx = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=4), name="session")
    trades = wide({"X": [100, 1000, -1, 0]}, idx)
    prices = wide({"X": [50, 50, 50, 50]}, idx)
    cost = trading_costs(trades, prices, pd.Series({"X": 1.0}), {"X": ib})
    np.testing.assert_allclose(cost["X"], [1.5, 10.0, 1.005, 0.0])


def test_trading_costs_percentage_uses_absolute_price():
    # Back-adjusted futures can have negative prices: notional uses |price|.
    # 2 units at -40, point size 10, 1 bp: 0.0001 * 2 * 40 * 10 = 0.08.
    idx = SESSIONS[:1]
    cost = trading_costs(
        wide({"F": [2]}, idx), wide({"F": [-40]}, idx), pd.Series({"F": 10.0}),
        {"F": CostModel(commission_pct=0.0001)},
    )
    assert cost.iloc[0, 0] == pytest.approx(0.08)


def test_targets_from_d_onwards_do_not_change_results_up_to_d():
    # A target decided at d trades at d+1, so changing targets at and after d and prices after
    # d must leave every result up to d unchanged.
    rng = np.random.default_rng(7)
    idx = pd.DatetimeIndex(pd.bdate_range("2020-01-01", periods=60), name="session")
    prices = wide(
        {"A": 100 + rng.normal(size=60).cumsum(), "B": 50 + rng.normal(size=60).cumsum()}, idx
    )
    positions = wide({"A": rng.integers(-5, 6, 60), "B": rng.integers(-5, 6, 60)}, idx)
    costs = {"A": CostModel(slippage=0.1, commission_min=1.0), "B": CostModel(commission_pct=1e-3)}
    ps = pd.Series({"A": 1.0, "B": 5.0})
    d = 30
    later_positions = positions.copy()
    later_positions.iloc[d:] = rng.integers(-9, 10, size=(60 - d, 2))
    later_prices = prices.copy()
    later_prices.iloc[d + 1 :] *= 1.5
    a = simulate(positions, prices, ps, costs, 1e5)
    b = simulate(later_positions, later_prices, ps, costs, 1e5)
    pd.testing.assert_frame_equal(a.pnl_net.iloc[: d + 1], b.pnl_net.iloc[: d + 1])
    pd.testing.assert_series_equal(a.equity.iloc[: d + 1], b.equity.iloc[: d + 1])
    assert not a.pnl_net.iloc[d + 1 :].equals(b.pnl_net.iloc[d + 1 :])


def test_index_mismatch_raises():
    with pytest.raises(BacktestInputError, match="different session indexes"):
        run(positions=POSITIONS.iloc[1:])


def test_missing_cost_model_raises():
    with pytest.raises(BacktestInputError, match=r"\['B'\] have no a cost model"):
        run(costs={"A": COSTS["A"]})


def test_missing_point_size_raises():
    with pytest.raises(BacktestInputError, match="point size"):
        run(point_size=pd.Series({"A": 2.0}))


def test_long_instrument_rows():
    long = run().to_long_instruments()
    assert list(long.columns) == [
        "session", "instrument", "holding", "trade", "price", "pnl_gross", "cost", "pnl_net",
    ]
    # 10 cells; B on session 3 has no price but a holding of 10, so it is kept.
    assert len(long) == 10
    row = long[(long.session == SESSIONS[3]) & (long.instrument == "B")].iloc[0]
    assert row.holding == 10 and np.isnan(row.price) and row.pnl_net == 0


def test_long_instrument_rows_skip_unlisted_sessions():
    prices = wide({"A": [NAN, NAN, 10, 11, 12]})
    positions = wide({"A": [0, 0, 1, 1, 1]})
    res = simulate(positions, prices, pd.Series({"A": 1.0}), {"A": CostModel()}, 1e6)
    assert res.to_long_instruments()["session"].tolist() == list(SESSIONS[2:])


def test_to_long_returns_both_tables():
    res = run()
    per_instrument, portfolio = res.to_long()
    pd.testing.assert_frame_equal(per_instrument, res.to_long_instruments())
    pd.testing.assert_frame_equal(portfolio, res.to_long_portfolio())


def test_long_portfolio_rows():
    res = run()
    long = res.to_long_portfolio()
    assert list(long.columns) == ["session", "pnl_net", "returns", "equity", "drawdown"]
    np.testing.assert_allclose(long["equity"], res.equity)
    assert long["session"].tolist() == list(SESSIONS)


# --- accounting invariants, property-tested against a naive loop --------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    pos=arrays(np.float64, (12, 3), elements=st.integers(-20, 20).map(float)),
    moves=arrays(np.float64, (12, 3), elements=st.floats(-5, 5, allow_nan=False)),
    holes=arrays(np.bool_, (12, 3)),
    slip=st.floats(0, 1),
    minimum=st.floats(0, 5),
)
def test_accounting_identities_hold(pos, moves, holes, slip, minimum):
    idx = pd.DatetimeIndex(pd.bdate_range("2021-01-01", periods=12), name="session")
    cols = ["X", "Y", "Z"]
    price_values = 100 + moves.cumsum(axis=0)
    price_values[holes] = np.nan
    prices = pd.DataFrame(price_values, index=idx, columns=cols)
    positions = pd.DataFrame(pos, index=idx, columns=cols)
    ps = pd.Series({"X": 1.0, "Y": 2.5, "Z": 50.0})
    costs = {
        c: CostModel(slippage=slip, commission_per_unit=0.01, commission_min=minimum)
        for c in cols
    }
    capital = 1e5
    res = simulate(positions, prices, ps, costs, capital)

    # Sum of instrument P&L == portfolio P&L.
    np.testing.assert_allclose(res.pnl_net.sum(axis=1), res.portfolio_pnl, rtol=0, atol=1e-9)

    # Naive loop: carry the holding through missing prices, fill the previous target otherwise.
    pnl = 0.0
    for j, c in enumerate(cols):
        held, last_price = 0.0, np.nan
        for t in range(12):
            p = price_values[t, j]
            if np.isnan(p):
                continue
            if not np.isnan(last_price):
                pnl += held * (p - last_price) * ps[c]
            new = pos[t - 1, j] if t > 0 else 0.0
            n = abs(new - held)
            if n > 0:
                pnl -= n * slip * ps[c] + max(n * 0.01, minimum)
            held, last_price = new, p
    # Equity == capital + sum(h_{t-1} dP ps) - sum(costs).
    assert res.equity.iloc[-1] - capital == pytest.approx(pnl, abs=1e-9)


# --- the report of a backtest (pipeline.research.plots) --------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _long_backtest():
    rng = np.random.default_rng(3)
    idx = pd.DatetimeIndex(pd.bdate_range("2010-01-01", periods=2000), name="session")
    prices = wide({"A": 100 + rng.normal(0.02, 1, 2000).cumsum()}, idx)
    positions = wide({"A": np.sign(prices["A"].diff(20).fillna(0)) * 100}, idx)
    return simulate(positions, prices, pd.Series({"A": 1.0}), {"A": CostModel(slippage=0.01)}, 1e5)


def test_report_png_has_signature_and_is_small():
    res = _long_backtest()
    png = equity_drawdown_png(res.equity, res.drawdown, title="backtest")
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) < 150_000


def test_report_png_is_640_by_400_pixels():
    # 8 x 5 inches at 80 dpi; width and height are big-endian ints at bytes 16-24 (IHDR chunk).
    res = run()
    png = equity_drawdown_png(res.equity, res.drawdown, title="t")
    assert int.from_bytes(png[16:20], "big") == 640
    assert int.from_bytes(png[20:24], "big") == 400


def test_bar_png_has_a_bar_height_per_label():
    # 6 inches wide at 80 dpi = 480 px; 12 labels -> 0.25 * 12 + 1 = 4 inches = 320 px high.
    png = bar_png(pd.Series(np.arange(12.0) - 6, index=[f"r{i}" for i in range(12)]), title="t")
    assert int.from_bytes(png[16:20], "big") == 480
    assert int.from_bytes(png[20:24], "big") == 320
