"""Specification of pipeline.portfolio.sizing: vol scalar, optimal positions, buffer, buffered target positions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.config import PortfolioConfig
from pipeline.portfolio.sizing import (
    SizingError,
    TargetPositions,
    buffer_width,
    buffered_positions,
    optimal_positions,
    target_positions,
    volatility_scalar,
)


def _frame(values, columns=("A",), start="2024-01-02") -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    index = pd.bdate_range(start, periods=len(values), name="session")
    return pd.DataFrame(values, index=index, columns=list(columns))


def _one_session(value: float) -> pd.DataFrame:
    return _frame([value])


# ----------------------------------------------------------------------------------- sizing


def test_hand_computed_sizing_example():
    # capital 1,000,000, vol target 25%, price 100, daily vol 2 points, point size 1,
    # forecast 10, weight 0.5, IDM 1.2.
    prices, vol = _one_session(100.0), _one_session(2.0)
    scalar = volatility_scalar(prices, vol, 1_000_000, 0.25, pd.Series({"A": 1.0}))
    # daily cash target = 1,000,000 × 0.25 / 16 = 15,625; instrument value vol = 2 × 1 × 1 = 2
    # → vol scalar = 15,625 / 2 = 7,812.5 shares per forecast 10.
    assert scalar.iloc[0, 0] == pytest.approx(7_812.5, abs=1e-9)
    weights, idm = _one_session(0.5), pd.Series([1.2], index=prices.index)
    unit_idm = pd.Series([1.0], index=prices.index)
    subsystem = optimal_positions(scalar, _one_session(10.0), _one_session(1.0), unit_idm)
    # subsystem = 7,812.5 × 10 / 10 = 7,812.5 (weight 1, IDM 1 isolates the subsystem position).
    assert subsystem.iloc[0, 0] == pytest.approx(7_812.5, abs=1e-9)
    notional = optimal_positions(scalar, _one_session(10.0), weights, idm)
    # notional = 7,812.5 × 0.5 × 1.2 = 4,687.5.
    assert notional.iloc[0, 0] == pytest.approx(4_687.5, abs=1e-9)


@pytest.mark.parametrize(
    ("capital", "tau", "price", "vol_points", "multiplier", "fx", "forecast", "weight", "dm"),
    [
        (1_000_000, 0.25, 100.0, 2.0, 1.0, 1.0, 10.0, 0.5, 1.2),  # the hand example: 4,687.5
        (500_000, 0.20, 4_000.0, 40.0, 50.0, 0.8, 15.0, 0.2, 1.5),  # an index future in a foreign currency
        (250_000, 0.16, 1.10, 0.006, 125_000.0, 1.0, -7.0, 0.1, 2.0),  # an FX future, short
    ],
)
def test_sizing_matches_the_afts_position_formula(
    capital, tau, price, vol_points, multiplier, fx, forecast, weight, dm
):
    prices, vol = _one_session(price), _one_session(vol_points)
    fx_frame = _one_session(fx)
    scalar = volatility_scalar(prices, vol, capital, tau, pd.Series({"A": multiplier}), fx_frame)
    dm_series = pd.Series([dm], index=prices.index)
    got = optimal_positions(scalar, _one_session(forecast), _one_session(weight), dm_series)
    # AFTS ch. 4: N = capital·IDM·w·τ / (multiplier·price·fx·σ%) × forecast/10,
    # with σ% the annualised % vol = 16 × vol / price.
    sigma_pct = 16.0 * vol_points / price
    afts = capital * dm * weight * tau / (multiplier * price * fx * sigma_pct) * forecast / 10.0
    assert got.iloc[0, 0] == pytest.approx(afts, rel=1e-12)


def test_volatility_scalar_is_nan_without_a_price_or_positive_vol():
    prices = _frame([100.0, np.nan, 100.0, 100.0])
    vol = _frame([2.0, 2.0, 0.0, np.nan])
    scalar = volatility_scalar(prices, vol, 1_000_000, 0.25, pd.Series({"A": 1.0}))
    np.testing.assert_allclose(scalar["A"].to_numpy(), [7_812.5, np.nan, np.nan, np.nan])


def test_volatility_scalar_rejects_a_missing_point_size():
    prices = _frame([[100.0, 50.0]], columns=("A", "B"))
    with pytest.raises(SizingError, match="point size.*B"):
        volatility_scalar(prices, prices, 1_000_000, 0.25, pd.Series({"A": 1.0}))


def test_volatility_scalar_rejects_vol_without_every_session():
    prices = _frame([100.0, 101.0])
    with pytest.raises(SizingError, match="lacks 1 sessions"):
        volatility_scalar(prices, prices.iloc[:1], 1_000_000, 0.25, pd.Series({"A": 1.0}))


def test_optimal_positions_apply_a_risk_scale_per_session_or_per_instrument():
    index = pd.bdate_range("2024-01-02", periods=2, name="session")
    scalar = pd.DataFrame({"A": [100.0, 100.0], "B": [10.0, 10.0]}, index=index)
    ones = scalar * 0 + 1.0
    forecast = ones * 10.0
    dm = pd.Series(1.0, index=index)
    by_session = optimal_positions(scalar, forecast, ones, dm, risk_scale=pd.Series([1.0, 0.5], index=index))
    np.testing.assert_allclose(by_session.to_numpy(), [[100.0, 10.0], [50.0, 5.0]])
    per_instrument = pd.DataFrame({"A": [0.5, 0.5], "B": [1.0, 0.25]}, index=index)
    by_frame = optimal_positions(scalar, forecast, ones, dm, risk_scale=per_instrument)
    np.testing.assert_allclose(by_frame.to_numpy(), [[50.0, 10.0], [50.0, 2.5]])


def test_optimal_positions_align_inputs_by_label():
    index = pd.bdate_range("2024-01-02", periods=2, name="session")
    scalar = pd.DataFrame({"A": [100.0, 100.0], "B": [10.0, 10.0]}, index=index)
    # Columns in another order plus an extra instrument: picked by name, extra ignored.
    forecast = pd.DataFrame({"C": [1.0, 1.0], "B": [20.0, -20.0], "A": [5.0, 10.0]}, index=index)
    weights = pd.DataFrame({"B": [0.5, 0.5], "A": [0.5, 0.5]}, index=index)
    got = optimal_positions(scalar, forecast, weights, pd.Series(1.0, index=index))
    np.testing.assert_allclose(got.to_numpy(), [[25.0, 10.0], [50.0, -10.0]])


def test_optimal_positions_reject_weights_without_every_instrument():
    scalar = _frame([[1.0, 1.0]], columns=("A", "B"))
    with pytest.raises(SizingError, match="weights_daily.*B"):
        optimal_positions(scalar, scalar, scalar[["A"]], pd.Series(1.0, index=scalar.index))


def test_buffer_width_is_a_tenth_of_the_average_position():
    scalar = _one_session(7_812.5)
    width = buffer_width(scalar, _one_session(0.5), pd.Series([1.2], index=scalar.index), buffer=0.10)
    # Average position (forecast 10) = 7,812.5 × 0.5 × 1.2 = 4,687.5; 10% of it = 468.75.
    assert width.iloc[0, 0] == pytest.approx(468.75, abs=1e-9)


def test_buffer_width_does_not_depend_on_the_forecast_sign():
    scalar = _frame([-100.0])  # a negative scalar cannot arise, but the width is |.| regardless
    width = buffer_width(scalar, _frame([0.5]), pd.Series([2.0], index=scalar.index))
    assert width.iloc[0, 0] == pytest.approx(10.0)  # 0.1 × |-100 × 0.5 × 2|


# ----------------------------------------------------------------------------------- buffering


def test_buffered_positions_follow_a_hand_computed_path():
    optimal = _frame([100.0, 105.0, 120.0, 90.0, 90.0, 50.0])
    width = optimal * 0 + 10.0
    got = buffered_positions(optimal, width, round_positions=False)
    # 0 → [90,110]: 90 (edge); [95,115]: 95; [110,130]: 110; [80,100]: 100; [80,100]: stay 100;
    # [40,60]: 60.
    np.testing.assert_allclose(got["A"].to_numpy(), [90.0, 95.0, 110.0, 100.0, 100.0, 60.0])


def test_buffered_positions_round_both_bounds():
    optimal = _frame([100.3, 100.3, 3.0])
    width = _frame([10.4, 10.4, 0.5])
    got = buffered_positions(optimal, width, round_positions=True, initial=pd.Series({"A": 200.0}))
    # Bounds [89.9, 110.7] round to [90, 111]: from 200 trade down to 111, then stay.
    # Then [2.5, 3.5] rounds half-to-even to [2, 4] (pandas/numpy round, as pst): 111 → 4.
    np.testing.assert_allclose(got["A"].to_numpy(), [111.0, 111.0, 4.0])


def test_buffered_positions_hold_through_missing_optimal_and_are_zero_before_it_exists():
    optimal = _frame([np.nan, 50.0, np.nan, 80.0])
    width = _frame([5.0, 5.0, 5.0, 5.0])
    got = buffered_positions(optimal, width, round_positions=False)
    # Not tradable yet → 0; then 45 (lower edge); missing bar → hold 45; then 75.
    np.testing.assert_allclose(got["A"].to_numpy(), [0.0, 45.0, 45.0, 75.0])


def test_buffered_positions_start_from_the_initial_position():
    optimal = _frame([[100.0, 100.0]], columns=("A", "B"))
    width = optimal * 0 + 10.0
    got = buffered_positions(optimal, width, round_positions=False, initial=pd.Series({"A": 95.0}))
    # A starts inside [90, 110] and does not trade; B (absent from initial = 0) trades to 90.
    np.testing.assert_allclose(got.iloc[0].to_numpy(), [95.0, 90.0])


def test_buffered_positions_reject_negative_widths():
    with pytest.raises(SizingError, match=">= 0"):
        buffered_positions(_frame([1.0]), _frame([-1.0]))


def test_buffered_positions_up_to_a_date_ignore_later_optimal_positions():
    rng = np.random.default_rng(0)
    optimal = _frame(rng.normal(0, 100, size=(60, 3)).cumsum(axis=0), columns=("A", "B", "C"))
    width = optimal.abs() * 0 + 15.0
    base = buffered_positions(optimal, width)
    d = optimal.index[39]
    changed = optimal.copy()
    changed.loc[changed.index > d] = -changed.loc[changed.index > d] * 7
    pd.testing.assert_frame_equal(buffered_positions(changed, width).loc[:d], base.loc[:d])


@st.composite
def buffer_cases(draw):
    t = draw(st.integers(1, 40))
    k = draw(st.integers(1, 4))
    optimal = draw(arrays(np.float64, (t, k), elements=st.floats(-1e4, 1e4, allow_nan=False)))
    width = draw(arrays(np.float64, (t, k), elements=st.floats(0, 500, allow_nan=False)))
    initial = draw(arrays(np.float64, k, elements=st.floats(-1e4, 1e4, allow_nan=False)))
    rounded = draw(st.booleans())
    if rounded:
        initial = np.round(initial)
    return optimal, width, initial, rounded


@settings(max_examples=150, deadline=None)
@given(buffer_cases())
def test_buffering_invariants(case):
    optimal, width, initial, rounded = case
    cols = [f"I{i}" for i in range(optimal.shape[1])]
    got = buffered_positions(
        _frame(optimal, columns=cols), _frame(width, columns=cols), round_positions=rounded,
        initial=pd.Series(initial, index=cols),
    ).to_numpy()
    lower, upper = optimal - width, optimal + width
    if rounded:
        lower, upper = np.round(lower), np.round(upper)
    previous = initial
    for t in range(len(optimal)):
        inside = (previous >= lower[t]) & (previous <= upper[t])
        # 1. Never trade while the previous position is inside the (rounded) bounds.
        np.testing.assert_array_equal(got[t][inside], previous[inside])
        # 2. After a trade the position sits exactly on the nearest edge.
        nearest = np.where(previous < lower[t], lower[t], upper[t])
        np.testing.assert_array_equal(got[t][~inside], nearest[~inside])
        # 3. Never further from the optimum than the width (+0.5 when the bounds are rounded).
        slack = width[t] + (0.5 if rounded else 0.0) + 1e-9 * (1 + np.abs(optimal[t]))
        assert np.all(np.abs(got[t] - optimal[t]) <= slack)
        if rounded:
            assert np.all(got[t] == np.round(got[t]))
        previous = got[t]


# ----------------------------------------------------------------------------------- the chain


def _chain_inputs(seed: int = 0, n: int = 80):
    rng = np.random.default_rng(seed)
    cols = ["A", "B"]
    index = pd.bdate_range("2024-01-02", periods=n, name="session")
    prices = pd.DataFrame(100 + rng.normal(0, 1, size=(n, 2)).cumsum(axis=0), index=index, columns=cols)
    vol = prices.diff().abs().ewm(span=10).mean().bfill()
    forecast = np.clip(rng.normal(0, 10, size=(n, 2)).cumsum(axis=0) / 4, -20, 20)
    combined = pd.DataFrame(forecast, index=index, columns=cols)
    weights = pd.DataFrame({"A": 0.6, "B": 0.4}, index=index)
    weights.iloc[:5] = np.nan  # no estimate yet
    dm = pd.Series(1.3, index=index)
    dm.iloc[:5] = np.nan
    return prices, vol, combined, weights, dm, pd.Series({"A": 1.0, "B": 10.0})


def test_target_positions_chain_the_steps():
    prices, vol, combined, weights, dm, ps = _chain_inputs()
    config = PortfolioConfig(capital=200_000, vol_target=0.2, buffer=0.1, round_positions=True)
    got = target_positions(prices, vol, combined, weights, dm, ps, config)
    assert isinstance(got, TargetPositions)
    scalar = volatility_scalar(prices, vol, 200_000, 0.2, ps)
    optimal = optimal_positions(scalar, combined, weights, dm)
    width = buffer_width(scalar, weights, dm, 0.1)
    pd.testing.assert_frame_equal(got.optimal, optimal)
    pd.testing.assert_frame_equal(got.target, buffered_positions(optimal, width, round_positions=True))
    pd.testing.assert_frame_equal(got.lower, np.round(optimal - width))
    assert (got.target.iloc[:5] == 0).all().all() and got.target.iloc[5:].ne(0).any().any()
    long = got.to_long()
    expected = ["session", "instrument", "vol_scalar", "optimal", "lower", "upper", "target"]
    assert list(long.columns) == expected
    assert len(long) == 2 * (80 - 5)  # the five sessions without weights and a zero target are left out


def test_target_positions_up_to_a_date_ignore_later_data():
    prices, vol, combined, weights, dm, ps = _chain_inputs(seed=1)
    config = PortfolioConfig()
    base = target_positions(prices, vol, combined, weights, dm, ps, config)
    d = prices.index[49]
    later = prices.index > d
    prices2, vol2, combined2 = prices.copy(), vol.copy(), combined.copy()
    prices2.loc[later] *= 2
    vol2.loc[later] *= 0.1
    combined2.loc[later] = -combined2.loc[later]
    after = target_positions(prices2, vol2, combined2, weights, dm, ps, config)
    for name in ("vol_scalar", "optimal", "lower", "upper", "target"):
        pd.testing.assert_frame_equal(getattr(after, name).loc[:d], getattr(base, name).loc[:d])
