"""SR costs, forecast turnover and the speed limit (pipeline/signals/costs.py), with hand-computed numbers."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import CostModel
from pipeline.signals.combine import combine_forecasts
from pipeline.signals.costs import (
    CostError,
    annual_sr_cost,
    apply_speed_limit,
    average_position_units,
    cash_cost_per_trade,
    excluded_pairs,
    forecast_turnover,
    speed_limit_exclusions,
    sr_cost_per_trade,
    too_expensive,
)

SESSIONS = pd.bdate_range("2024-01-01", periods=6, name="session")
# An illustrative future priced in points of 50 currency units, slippage 0.25 points, 2.5 per contract.
CORN = CostModel(slippage=0.25, commission_per_unit=2.5)


def _multi(data: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame(data, index=SESSIONS)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["rule", "instrument"])
    return frame


def test_cash_cost_takes_the_largest_commission_plus_slippage():
    # 3 units: slippage 3*0.25*50 = 37.5; commission max(3*2.5, 0, 0) = 7.5
    assert cash_cost_per_trade(CORN, 400.0, 50.0, units=3) == pytest.approx(45.0)
    # percentage commission on |price| (negative back-adjusted price): 1bp of 2*100*10 = 0.2 < min 1
    pct = CostModel(commission_pct=0.0001, commission_min=1.0)
    assert cash_cost_per_trade(pct, -100.0, 10.0, units=2) == pytest.approx(1.0)
    assert cash_cost_per_trade(pct, 100_000.0, 10.0, units=2) == pytest.approx(200.0)


def test_sr_cost_per_trade_is_cash_cost_over_annual_cash_vol():
    prices = pd.DataFrame({"CORN": [100.0, 102.0, 104.0, 106.0, 108.0, 110.0]}, index=SESSIONS)
    vol = pd.DataFrame({"CORN": [1.0, 1.0, 3.0, 3.0, 3.0, 3.0]}, index=SESSIONS)
    sr = sr_cost_per_trade(prices, vol, pd.Series({"CORN": 50.0}), {"CORN": CORN}, window=2)
    # cost 0.25*50 + 2.5 = 15 (price-independent); mean vol over 2 sessions
    expected = 15.0 / (np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0]) * 16 * 50)
    np.testing.assert_allclose(sr["CORN"].to_numpy(), expected)
    assert sr["CORN"].iloc[0] == pytest.approx(0.01875)


def test_sr_cost_names_a_missing_cost_model():
    prices = pd.DataFrame({"CORN": [1.0] * 6, "GOLD": [1.0] * 6}, index=SESSIONS)
    with pytest.raises(CostError, match="GOLD"):
        sr_cost_per_trade(prices, prices, pd.Series({"CORN": 50.0, "GOLD": 10.0}), {"CORN": CORN})


def test_turnover_of_a_forecast_flipping_by_its_average_size_is_256():
    f = _multi({("fast", "A"): [0, 10, 0, 10, 0, 10], ("slow", "A"): [0, 1, 2, 3, 4, 5]})
    t = forecast_turnover(f, pooled=False)
    assert np.isnan(t.iloc[0]).all()
    assert t[("fast", "A")].iloc[-1] == pytest.approx(256.0)  # |change| 10 every day / 10 * 256
    assert t[("slow", "A")].iloc[-1] == pytest.approx(25.6)


def test_pooled_turnover_averages_every_instruments_changes_and_is_causal():
    f = _multi({("r", "A"): [0, 10, 0, 10, 0, 10], ("r", "B"): [0, 0, 0, 0, 0, 0]})
    t = forecast_turnover(f, pooled=True)
    # up to session 2: changes A = 10, 10; B = 0, 0 -> mean 5 -> 128
    assert t[("r", "A")].iloc[2] == pytest.approx(128.0)
    assert t[("r", "B")].iloc[2] == pytest.approx(128.0)
    changed = f.copy()
    changed.iloc[4:] = 99.0
    pd.testing.assert_frame_equal(forecast_turnover(changed).iloc[:4], t.iloc[:4])


def test_annual_cost_is_turnover_times_sr_per_trade_plus_two_trades_per_roll():
    turnover = _multi({("fast", "A"): [256.0] * 6, ("slow", "A"): [25.6] * 6})
    sr = pd.DataFrame({"A": [0.01875] * 6}, index=SESSIONS)
    cost = annual_sr_cost(turnover, sr, pd.Series({"A": 4.0}))
    assert cost[("fast", "A")].iloc[0] == pytest.approx(0.01875 * (256 + 8))  # 4.95
    assert cost[("slow", "A")].iloc[0] == pytest.approx(0.01875 * (25.6 + 8))  # 0.63


def test_speed_limit_excludes_the_expensive_rule_and_renormalises_the_rest():
    capped = _multi({
        ("fast", "A"): [10.0] * 6, ("slow", "A"): [4.0] * 6,
        ("fast", "B"): [10.0] * 6, ("slow", "B"): [4.0] * 6,
    })
    cost = _multi({
        ("fast", "A"): [0.20] * 6, ("slow", "A"): [0.05] * 6,   # A: fast too dear
        ("fast", "B"): [0.10] * 6, ("slow", "B"): [np.nan] * 6,  # B: both allowed (NaN = unknown)
    })
    excluded = speed_limit_exclusions(cost, 0.13)
    assert excluded[("fast", "A")].all() and not excluded[("slow", "B")].any()
    kept = apply_speed_limit(capped, excluded)
    weights = pd.Series({"fast": 0.5, "slow": 0.5})
    combined = combine_forecasts(kept, weights, fdm=1.0)
    assert combined["A"].iloc[0] == pytest.approx(4.0)  # slow only, weight renormalised to 1
    assert combined["B"].iloc[0] == pytest.approx(7.0)  # (10 + 4) / 2
    pairs = excluded_pairs(excluded, cost, SESSIONS[-1])
    assert pairs.to_dict("records") == [{"instrument": "A", "rule": "fast", "annual_sr_cost": 0.20}]


def test_an_instrument_with_every_rule_excluded_is_flagged():
    capped = _multi({("fast", "A"): [10.0] * 6, ("fast", "B"): [5.0] * 6})
    excluded = _multi({("fast", "A"): [True] * 6, ("fast", "B"): [False] * 6})
    flags = too_expensive(capped, excluded)
    assert flags["A"].all() and not flags["B"].any()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=3, max_size=40), st.floats(0.1, 100))
def test_turnover_scales_inversely_with_the_average_forecast(values, avg):
    index = pd.bdate_range("2024-01-01", periods=len(values), name="session")
    f = pd.DataFrame({("r", "A"): values}, index=index)
    f.columns = pd.MultiIndex.from_tuples(f.columns, names=["rule", "instrument"])
    expected = np.abs(np.diff(values)).mean() * 256 / avg
    assert forecast_turnover(f, average_abs=avg).iloc[-1, 0] == pytest.approx(expected, abs=1e-9)


def test_rule_sr_costs_use_each_instruments_cost_model_and_rolls():
    from pipeline.config import Instrument
    from pipeline.signals.costs import rule_sr_costs

    capped = _multi({("fast", "FUT"): [0, 10, 0, 10, 0, 10]})
    prices = pd.DataFrame({"FUT": [400.0] * 6}, index=SESSIONS)
    vol = pd.DataFrame({"FUT": [1.0] * 6}, index=SESSIONS)
    fut = Instrument(symbol="FUT", sec_type="FUT", point_size=50.0, costs=CORN, rolls_per_year=4)
    cost = rule_sr_costs(capped, prices, vol, [fut])
    # SR per trade 15 / (1 * 16 * 50) = 0.01875; turnover 256; rolls 4 x 2 trades
    assert cost[("fast", "FUT")].iloc[-1] == pytest.approx(0.01875 * (256 + 8))


def test_rule_sr_costs_are_causal():
    from pipeline.config import Instrument
    from pipeline.signals.costs import rule_sr_costs

    rng = np.random.default_rng(0)
    index = pd.bdate_range("2020-01-01", periods=300, name="session")
    prices = pd.DataFrame({"A": 100 + np.cumsum(rng.normal(0, 1, 300))}, index=index)
    vol = prices.diff().abs().rolling(20, min_periods=1).mean().bfill()
    capped = pd.concat({"r": (prices - prices.ewm(span=20).mean()).clip(-20, 20)}, axis=1, names=["rule", "instrument"])
    universe = [Instrument(symbol="A", costs=CostModel(slippage=0.01, commission_min=1.0))]
    base = rule_sr_costs(capped, prices, vol, universe)
    cut = index[150]
    shocked_prices, shocked_capped, shocked_vol = prices.copy(), capped.copy(), vol.copy()
    shocked_prices.loc[index > cut] *= 3
    shocked_capped.loc[index > cut] = -shocked_capped.loc[index > cut]
    shocked_vol.loc[index > cut] *= 5
    again = rule_sr_costs(shocked_capped, shocked_prices, shocked_vol, universe)
    pd.testing.assert_frame_equal(again.loc[:cut], base.loc[:cut])


# --- Carver's trade size: one average-position block (ST ch. 12, AFTS ch. 5) ---------------------

MIN_FEE = CostModel(slippage=0.01, commission_per_unit=0.5, commission_min=5.0)


def _flat(value: float) -> pd.DataFrame:
    return pd.DataFrame({"X": [value] * len(SESSIONS)}, index=SESSIONS)


def test_average_position_units_hand_computed():
    # 100,000 x 0.2 / 16 x 0.5 x 1.2 / (2 points x 10 per point) = 1250 x 0.6 / 20 = 37.5 units
    units = average_position_units(_flat(2.0), pd.Series({"X": 10.0}), 100_000.0, 0.2, pd.Series({"X": 0.5}), idm=1.2)
    np.testing.assert_allclose(units["X"].to_numpy(), 37.5, rtol=1e-15)
    # in a foreign currency worth 2 base units: half the units
    fx = _flat(2.0)
    half = average_position_units(_flat(2.0), pd.Series({"X": 10.0}), 100_000.0, 0.2, pd.Series({"X": 0.5}), 1.2, fx)
    np.testing.assert_allclose(half["X"].to_numpy(), 18.75, rtol=1e-15)
    # default weights: equal over the columns
    two = average_position_units(pd.DataFrame({"X": [2.0], "Y": [2.0]}, index=SESSIONS[:1]),
                                 pd.Series({"X": 10.0, "Y": 10.0}), 100_000.0, 0.2)
    np.testing.assert_allclose(two.to_numpy(), [[1250 * 0.5 / 20] * 2], rtol=1e-15)
    with pytest.raises(CostError, match="capital"):
        average_position_units(_flat(2.0), pd.Series({"X": 10.0}), 0.0, 0.2)


@pytest.mark.parametrize(
    "units, per_unit_cash",
    [
        (None, 0.1 + 5.0),  # one unit pays the whole 5.00 minimum
        (37.5, 0.1 + 0.5),  # 5 / 37.5 = 0.133 < 0.50 per unit: the minimum no longer binds
        (3.75, 0.1 + 5.0 / 3.75),  # a small account: the minimum shared by 3.75 units
        (0.375, 0.1 + 5.0),  # less than a unit: a trade is at least one whole unit
    ],
)
def test_sr_cost_of_an_average_position_trade_hand_computed(units, per_unit_cash):
    prices, vol = _flat(100.0), _flat(2.0)
    trade = None if units is None else _flat(units)
    sr = sr_cost_per_trade(prices, vol, pd.Series({"X": 10.0}), {"X": MIN_FEE}, window=3, trade_units=trade)
    # per unit traded: slippage 0.01 x 10 + commission; over the unit's annual vol 2 x 16 x 10 = 320
    np.testing.assert_allclose(sr["X"].to_numpy(), per_unit_cash / 320.0, rtol=1e-14)


def test_costs_that_scale_with_the_trade_give_the_same_sr_cost_at_any_size():
    prices, vol = _flat(100.0), _flat(2.0)
    one = sr_cost_per_trade(prices, vol, pd.Series({"X": 50.0}), {"X": CORN}, window=2)
    many = sr_cost_per_trade(prices, vol, pd.Series({"X": 50.0}), {"X": CORN}, window=2, trade_units=_flat(40.0))
    pd.testing.assert_frame_equal(one, many)
