"""Tests of pipeline.research.backtest's simulation options: next-open fills, limit orders, the short
switch and borrow cost, exposure limits, the pre-trade gate, and exact accounting under all of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import CostModel, RiskLimits
from pipeline.research.backtest import BacktestInputError, constrain_exposure, simulate

SESSIONS = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=5), name="session")  # Mon..Fri


def wide(values: list[float], name: str = "A", index: pd.DatetimeIndex = SESSIONS) -> pd.DataFrame:
    frame = pd.DataFrame({name: values}, index=index, dtype=float)
    frame.columns.name = "instrument"
    return frame


CLOSE = wide([100, 101, 103, 102, 105])
OPEN = wide([99, 100.5, 102, 103, 104])
HIGH = wide([101, 102, 104, 103.5, 106])
LOW = wide([99, 99.5, 101, 101.5, 103])
TARGET = wide([2, 2, -1, -1, 0])
ONE = pd.Series({"A": 1.0})
FREE = {"A": CostModel()}


def run(**options):
    positions = options.pop("positions", TARGET)
    return simulate(positions, CLOSE, ONE, options.pop("costs", FREE), 1000.0, **options)


# --- fills at the next open ------------------------------------------------------------------


def test_next_open_fills_at_the_open_and_earns_open_to_close():
    # Buy 2 at t1's open 100.5: t1 earns 2 * (101 - 100.5) = 1; t2 holds 2: 2 * (103 - 101) = 4;
    # t3 sells 3 at the open 103: 2 * (102 - 103) held before + (-3) * (102 - 103) = -2 + 3 = 1;
    # t4 short 1: -1 * (105 - 102) = -3.
    res = run(fill="next_open", opens=OPEN)
    assert res.fill_prices["A"].tolist()[1::2] == [100.5, 103.0]
    np.testing.assert_allclose(res.pnl_gross["A"], [0, 1, 4, 1, -3])


def test_next_open_falls_back_to_the_close_where_no_open():
    opens = wide([np.nan] * 5)
    np.testing.assert_allclose(run(fill="next_open", opens=opens).pnl_gross, run().pnl_gross)


def test_next_open_costs_use_the_fill_price():
    # 0.1 % of 2 * 100.5 = 0.201, then of 3 * 103 = 0.309.
    res = run(fill="next_open", opens=OPEN, costs={"A": CostModel(commission_pct=0.001)})
    np.testing.assert_allclose(res.costs["A"], [0, 0.201, 0, 0.309, 0])


def test_next_open_needs_opens():
    with pytest.raises(BacktestInputError, match="next_open"):
        run(fill="next_open")


# --- limit orders ----------------------------------------------------------------------------


def test_buy_limit_fills_only_when_the_low_reaches_it():
    # Target 1 from t0. Limit 1% under the decision close: t1 99.0 (low 99.5: no), t2 99.99
    # (low 101: no), t3 101.97 (low 101.5: fills at min(101.97, open 103) = 101.97).
    res = run(positions=wide([1, 1, 1, 1, 1]), limit_offset=0.01, opens=OPEN, highs=HIGH, lows=LOW)
    assert res.holdings["A"].tolist() == [0, 0, 0, 1, 1]
    assert res.fill_prices["A"].iloc[3] == pytest.approx(101.97)
    # P&L: t3 1 * (102 - 101.97) = 0.03; t4 1 * (105 - 102) = 3.
    np.testing.assert_allclose(res.pnl_gross["A"], [0, 0, 0, 0.03, 3])
    # 3 orders, 1 fill; improvement against the close of t3: (102 - 101.97) * 1.
    row = res.orders.loc["A"]
    assert (row["n_orders"], row["n_filled"], row["fill_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert row["price_improvement"] == pytest.approx(0.03)
    assert row["price_improvement_bps"] == pytest.approx(1e4 * 0.03 / 102)


def test_limit_gap_through_fills_at_the_open():
    # Sell 1 from t0's decision at limit 100 * 1.01 = 101; t1 opens at 102 (> limit): fill at 102.
    opens = wide([100, 102, 100, 100, 100])
    res = run(positions=wide([-1, -1, -1, -1, -1]), limit_offset=0.01, opens=opens, highs=HIGH, lows=LOW)
    assert res.fill_prices["A"].iloc[1] == 102.0
    assert res.orders.loc["A", "price_improvement"] == pytest.approx(-(101 - 102) * 1)


def test_limit_at_zero_offset_with_full_ranges_equals_market_at_close():
    # offset 0 and every bar's range holding the previous close: every order fills at that close;
    # P&L differs from a close fill only by (C_t - C_{t-1}) on traded units.
    highs, lows = CLOSE.rolling(2, min_periods=1).max() + 1, CLOSE.rolling(2, min_periods=1).min() - 1
    res = run(limit_offset=0.0, opens=None, highs=highs, lows=lows)
    market = run()
    pd.testing.assert_frame_equal(res.holdings, market.holdings)
    assert res.order_summary()["fill_rate"] == 1.0


def test_limit_orders_need_highs_and_lows():
    with pytest.raises(BacktestInputError, match="highs and lows"):
        run(limit_offset=0.01)


# --- short selling and borrow ----------------------------------------------------------------


def test_long_only_switch_turns_shorts_flat():
    res = run(allow_short=False)
    assert res.holdings["A"].tolist() == [0, 2, 2, 0, 0]


def test_short_switch_per_instrument():
    prices = pd.concat([CLOSE, CLOSE.rename(columns={"A": "B"})], axis=1)
    positions = pd.concat([TARGET, TARGET.rename(columns={"A": "B"})], axis=1)
    res = simulate(positions, prices, pd.Series({"A": 1.0, "B": 1.0}), {"A": CostModel(), "B": CostModel()},
                   1e3, allow_short=pd.Series({"A": True, "B": False}))
    assert res.holdings["A"].min() == -1 and res.holdings["B"].min() == 0


def test_borrow_accrues_per_calendar_day_on_short_notional():
    # Short 10 from t0 at 100 (held over t1): 10 * 100 * 0.0365 / 365 = 0.1 a day.
    # Mon..Fri then next Mon: the Monday charge covers 3 days at the Friday close.
    index = pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=6), name="session")
    prices = wide([100, 100, 200, 100, 100, 100], index=index)
    res = simulate(wide([-10] * 6, index=index), prices, ONE, FREE, 1e6, borrow_rate=0.0365)
    # t1 is the first session short at its open; charged from t2 on the previous close.
    np.testing.assert_allclose(res.borrow["A"], [0, 0, 0.1, 0.2, 0.1, 0.3])
    np.testing.assert_allclose(res.portfolio_pnl, res.pnl_gross.sum(axis=1) - res.borrow.sum(axis=1))


# --- exposure limits and the pre-trade gate --------------------------------------------------


def test_gross_exposure_limit_scales_every_target_by_one_factor():
    prices = pd.DataFrame({"A": [100.0], "B": [50.0]})
    targets = pd.DataFrame({"A": [4.0], "B": [-8.0]})  # gross 400 + 400 = 800, net 0
    out = constrain_exposure(targets, prices, pd.Series({"A": 1.0, "B": 1.0}), 1000.0, max_gross=0.4)
    np.testing.assert_allclose(out.to_numpy(), [[2.0, -4.0]])  # k = 400 / 800


def test_net_exposure_limit_and_whole_units():
    prices = pd.DataFrame({"A": [100.0], "B": [50.0]})
    targets = pd.DataFrame({"A": [5.0], "B": [3.0]})  # net 500 + 150 = 650
    out = constrain_exposure(targets, prices, pd.Series({"A": 1.0, "B": 1.0}), 1000.0,
                             max_net=0.3, whole_units=True)
    # k = 300 / 650 -> 2.307.., 1.384.. -> truncated to 2, 1 (net 250 <= 300)
    np.testing.assert_allclose(out.to_numpy(), [[2.0, 1.0]])


def test_gate_denies_an_order_past_max_position_and_keeps_the_holding():
    res = run(gate=RiskLimits(max_position=1.5))
    assert res.holdings["A"].tolist() == [0, 0, 0, -1, -1]
    assert res.denials["rule"].tolist() == ["max_position", "max_position"]
    assert res.denials["quantity"].tolist() == [2.0, 2.0]
    assert res.order_summary()["n_denied"] == 2


def test_gate_max_order_notional_is_valued_at_the_decision_close():
    # Buying 2 at a decision close of 100 is 200 > 150: denied; the sell of 1 (102) passes.
    res = run(gate=RiskLimits(max_order_notional=150))
    assert set(res.denials["rule"]) == {"max_order_notional"}
    assert res.holdings["A"].iloc[-1] == -1


def test_gate_with_loose_limits_changes_nothing():
    loose = RiskLimits(max_order_quantity=1e9, max_order_notional=1e12, max_position=1e9)
    pd.testing.assert_frame_equal(run(gate=loose).pnl_net, run().pnl_net)


# --- the daily-loss circuit breaker ----------------------------------------------------------

BREAKER_CLOSE = wide([100, 101, 98, 99, 103])


def breaker_run(targets: list[float], limit: float | None, **options):
    return simulate(wide(targets), BREAKER_CLOSE, ONE, options.pop("costs", FREE), 1000.0,
                    gate=RiskLimits(max_daily_loss=limit), **options)


def test_a_session_losing_beyond_the_limit_halts_the_next_sessions_orders():
    # Holdings without the breaker: 0, 1, 1, 3, 0. Session 2 loses 1 x (98 - 101) = -3 < -2: the
    # order of session 3 (buy 2, decided at session 2's close) is denied, the holding stays 1;
    # session 3 earns 1 x (99 - 98) = 1, within the limit, so session 4's sell of 1 goes through.
    res = breaker_run([1, 1, 3, 0, 0], limit=2.0)
    assert res.holdings["A"].tolist() == [0, 1, 1, 1, 0]
    np.testing.assert_allclose(res.portfolio_pnl, [0, 0, -3, 1, 4])
    assert res.denials[["session", "quantity", "rule"]].values.tolist() == [[SESSIONS[3], 2.0, "kill_switch"]]
    trips = res.circuit_breaker
    assert trips["session"].tolist() == [SESSIONS[2]] and trips["halted_session"].tolist() == [SESSIONS[3]]
    assert trips["pnl_net"].tolist() == [-3.0] and trips["limit"].tolist() == [2.0]
    # without a limit (or without the gate) the same targets trade: 3 x (103 - 99) = 12 on session 4
    np.testing.assert_allclose(breaker_run([1, 1, 3, 0, 0], limit=None).portfolio_pnl, [0, 0, -3, 1, 12])
    assert breaker_run([1, 1, 3, 0, 0], limit=None).circuit_breaker.empty


def test_halted_denies_reducing_orders_too_and_a_loss_at_the_limit_does_not_trip():
    # Production's HALTED denies every order (pipeline.execution.gate.pre_trade_check rule 1), so the sale
    # of 2 after the -6 session waits one session: holding 2 earns 2 x (99 - 98) = 2 on session 3.
    res = breaker_run([2, 2, 0, 0, 0], limit=5.0)
    assert res.holdings["A"].tolist() == [0, 2, 2, 2, 0]
    np.testing.assert_allclose(res.portfolio_pnl, [0, 0, -6, 2, 8])
    assert res.denials["rule"].tolist() == ["kill_switch"] and res.order_summary()["n_denied"] == 1
    at_limit = breaker_run([2, 2, 0, 0, 0], limit=6.0)  # -6 is not below -6: no trip
    assert at_limit.circuit_breaker.empty and at_limit.holdings["A"].tolist() == [0, 2, 2, 0, 0]


def test_the_daily_loss_is_measured_in_the_base_currency():
    # session 2 loses 1 x (98 - 101) = -3 in the instrument's currency, -6 at 2 base per unit
    fx = wide([2.0] * 5)
    assert breaker_run([1, 1, 3, 0, 0], limit=5.0).circuit_breaker.empty
    res = breaker_run([1, 1, 3, 0, 0], limit=5.0, fx=fx)
    assert res.circuit_breaker["session"].tolist() == [SESSIONS[2]] and res.circuit_breaker["pnl_net"].tolist() == [-6.0]
    assert res.holdings["A"].tolist() == [0, 1, 1, 1, 0]


def test_costs_count_towards_the_daily_loss_and_a_trip_on_the_last_session_halts_nothing():
    # Session 1 buys 1 at 101 with a commission of 2.5: net P&L -2.5 < -2 trips; session 2's
    # order (buy 1 more) is denied and session 2 loses 1 x (98 - 101) = -3: trips again, so
    # session 3's order is denied too; session 3 earns 1, and session 4 buys: 1 x 4 - 2.5.
    costs = {"A": CostModel(commission_per_unit=2.5)}
    res = breaker_run([1, 2, 2, 2, 2], limit=2.0, costs=costs)
    assert res.holdings["A"].tolist() == [0, 1, 1, 1, 2]
    np.testing.assert_allclose(res.portfolio_pnl, [0, -2.5, -3, 1, 1.5])
    assert res.circuit_breaker["session"].tolist() == [SESSIONS[1], SESSIONS[2]]
    assert res.denials["session"].tolist() == [SESSIONS[2], SESSIONS[3]]
    late = breaker_run([0, 0, 0, 3, 3], limit=1.0, costs=costs)  # only session 4 loses (the fee): -7.5
    assert late.circuit_breaker["session"].tolist() == [SESSIONS[4]]
    assert late.circuit_breaker["halted_session"].isna().all()


# --- exact accounting under every option (property test) -------------------------------------


def _independent_equity(res, capital, ps, borrow_rate):
    """Equity rebuilt cell by cell from holdings, fill prices, closes and costs (loops on purpose)."""
    closes = res.prices.ffill().to_numpy()
    h, f = res.holdings.to_numpy(), res.fill_prices.to_numpy()
    days = np.diff(res.prices.index.to_numpy()).astype("timedelta64[D]").astype(float)
    total = []
    for t in range(len(h)):
        day = 0.0
        for i in range(h.shape[1]):
            before = h[t - 1, i] if t else 0.0
            trade = h[t, i] - before
            if t and not np.isnan(closes[t - 1, i]):
                day += before * (closes[t, i] - closes[t - 1, i]) * ps[i]
                day -= max(-before, 0.0) * abs(closes[t - 1, i]) * ps[i] * borrow_rate * days[t - 1] / 365
            if trade:
                day += trade * (closes[t, i] - f[t, i]) * ps[i]
            day -= res.costs.iloc[t, i]
        total.append(day)
    return capital + np.cumsum(total)


@st.composite
def panels(draw):
    n, m = draw(st.integers(3, 25)), draw(st.integers(1, 4))
    floats = st.floats(-40, 40, allow_nan=False, allow_subnormal=False)
    moves = np.array(draw(st.lists(st.lists(floats, min_size=m, max_size=m), min_size=n, max_size=n)))
    close = 100.0 + np.cumsum(moves / 10.0, axis=0)
    gaps = np.array(draw(st.lists(st.lists(st.floats(0, 3), min_size=m, max_size=m), min_size=n, max_size=n)))
    targets = np.array(draw(st.lists(st.lists(st.integers(-5, 5), min_size=m, max_size=m), min_size=n, max_size=n)))
    holes = np.array(draw(st.lists(st.lists(st.booleans(), min_size=m, max_size=m), min_size=n, max_size=n)))
    index = pd.DatetimeIndex(pd.bdate_range("2020-01-01", periods=n), name="session")
    cols = [f"I{j}" for j in range(m)]
    close_f = pd.DataFrame(np.where(holes & (np.arange(n)[:, None] % 3 == 1), np.nan, close), index, cols)
    frame = lambda a: pd.DataFrame(a, index, cols)
    return {
        "positions": frame(targets.astype(float)),
        "prices": close_f,
        "opens": frame(close - gaps / 2),
        "highs": frame(close + gaps),
        "lows": frame(close - gaps),
        "ps": np.array(draw(st.lists(st.sampled_from([1.0, 2.5, 50.0]), min_size=m, max_size=m))),
        "options": draw(st.fixed_dictionaries({
            "fill": st.sampled_from(["next_close", "next_open"]),
            "limit_offset": st.sampled_from([None, 0.0, 0.005]),
            "allow_short": st.booleans(),
            "borrow_rate": st.sampled_from([0.0, 0.03]),
            "max_gross_exposure": st.sampled_from([None, 0.5]),
            "gate": st.sampled_from([None, RiskLimits(max_position=3, max_order_quantity=4),
                                     RiskLimits(max_position=3, max_daily_loss=40.0)]),
        })),
    }


@settings(max_examples=60, deadline=None)
@given(panels())
def test_positions_times_price_changes_minus_costs_reproduce_equity(p):
    cols = p["prices"].columns
    ps = pd.Series(p["ps"], index=cols)
    costs = {c: CostModel(slippage=0.01, commission_per_unit=0.5, commission_min=1.0) for c in cols}
    res = simulate(p["positions"], p["prices"], ps, costs, 1e4, opens=p["opens"], highs=p["highs"],
                   lows=p["lows"], whole_units=True, **p["options"])
    # per-instrument P&L sums to the portfolio's, and the equity curve is rebuilt to 1e-9
    np.testing.assert_allclose(res.pnl_net.sum(axis=1), res.portfolio_pnl, rtol=0, atol=1e-9)
    np.testing.assert_allclose(_independent_equity(res, 1e4, p["ps"], p["options"]["borrow_rate"]),
                               res.equity, rtol=0, atol=1e-9)
    if not p["options"]["allow_short"]:
        assert (res.holdings.to_numpy() >= 0).all()
    if p["options"]["gate"] is not None:
        assert (res.holdings.abs().to_numpy() <= 3).all()
    # the circuit breaker tripped exactly on the sessions whose net P&L is below -max_daily_loss
    limit = None if p["options"]["gate"] is None else p["options"]["gate"].max_daily_loss
    if limit is not None:
        pnl = res.portfolio_pnl.to_numpy()
        tripped = res.prices.index.isin(res.circuit_breaker["session"])
        assert (pnl[tripped] < -limit + 1e-9).all() and (pnl[~tripped] >= -limit - 1e-9).all()
        halted = res.denials["session"].isin(res.circuit_breaker["halted_session"])
        assert (res.denials.loc[halted, "rule"] == "kill_switch").all()
        assert set(res.denials.loc[~halted, "rule"]) <= {"max_order_quantity", "max_order_notional", "max_position"}


# --- options from the configuration ----------------------------------------------------------


def test_default_config_keeps_next_close_market_fills():
    from pipeline.config import load_config
    from pipeline.research.backtest import needs_bars, simulation_options

    cfg = load_config()
    options = simulation_options(cfg)
    assert (options["fill"], options["limit_offset"], options["gate"], options["borrow_rate"]) == (
        "next_close", None, None, 0.0)
    assert options["allow_short"].all() and needs_bars(cfg) == ()
    pd.testing.assert_frame_equal(run(**options).pnl_net, run().pnl_net)


def test_config_options_map_to_simulate():
    from pipeline.config import Instrument, PipelineConfig
    from pipeline.research.backtest import needs_bars, simulation_options

    cfg = PipelineConfig(
        instruments=[Instrument(symbol="A"), Instrument(symbol="B", long_only=True)],
        backtest={"order_type": "limit", "limit_offset": 0.02, "borrow_rate": 0.03, "pre_trade_gate": True,
                  "max_gross_exposure": 2.0},
    )
    options = simulation_options(cfg)
    assert options["limit_offset"] == 0.02 and options["gate"] == cfg.risk and options["max_gross_exposure"] == 2.0
    assert options["allow_short"].to_dict() == {"A": True, "B": False}
    assert needs_bars(cfg) == ("open", "high", "low")
    no_shorts = PipelineConfig(instruments=[Instrument(symbol="A")], backtest={"allow_short": False})
    assert not simulation_options(no_shorts)["allow_short"]["A"]
