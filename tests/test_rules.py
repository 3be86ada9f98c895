"""Tests for pipeline.signals.rules: EWMAC and breakout raw forecasts against naive re-computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.signals.rules import RuleError, breakout, ewmac


def _wide(values, columns=None) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    columns = columns or [f"I{i}" for i in range(values.shape[1])]
    index = pd.bdate_range("2001-01-01", periods=len(values), name="session")
    return pd.DataFrame(values, index=index, columns=pd.Index(columns, name="instrument"))


def _naive_ewma(x: np.ndarray, span: int, min_periods: int = 1) -> np.ndarray:
    """EWMA with pandas' adjust=True weights written out: sum (1-a)^(t-i) x_i / sum (1-a)^(t-i),
    a = 2/(span+1), starting at the first non-NaN value (input has no NaN after it)."""
    alpha = 2.0 / (span + 1.0)
    out = np.full(len(x), np.nan)
    start = int(np.argmax(~np.isnan(x)))
    for t in range(start, len(x)):
        obs = x[start : t + 1]
        if len(obs) >= min_periods:
            w = (1 - alpha) ** np.arange(len(obs) - 1, -1, -1)
            out[t] = np.sum(w * obs) / np.sum(w)
    return out


def _naive_breakout_unsmoothed(p: np.ndarray, lookback: int) -> np.ndarray:
    out = np.full(len(p), np.nan)
    for t in range(len(p)):
        window = p[max(0, t - lookback + 1) : t + 1]
        window = window[~np.isnan(window)]
        if len(window) >= math.ceil(lookback / 2) and not np.isnan(p[t]):
            hi, lo = window.max(), window.min()
            out[t] = 0.0 if hi == lo else 40 * (p[t] - (hi + lo) / 2) / (hi - lo)
    return out


def test_ewmac_matches_naive_ewma_difference_over_vol():
    rng = np.random.default_rng(10)
    price = 100 + rng.standard_normal(60).cumsum()
    vol_values = 0.5 + rng.random(60)
    raw = ewmac(_wide(price), _wide(vol_values), 4, 16)["I0"].to_numpy()
    expected = (_naive_ewma(price, 4) - _naive_ewma(price, 16)) / vol_values
    np.testing.assert_allclose(raw, expected, rtol=1e-12)


def test_ewmac_hand_computed_second_value():
    # prices 10, 12, vol 1, spans 2 and 8: a_fast = 2/3, a_slow = 2/9;
    # fast = (12 + 10/3) / (1 + 1/3) = 11.5, slow = (12 + 10*7/9) / (1 + 7/9) = 11.125 -> raw 0.375
    raw = ewmac(_wide([10.0, 12.0]), _wide([1.0, 1.0]), 2, 8)["I0"]
    assert raw.iloc[0] == 0.0 and raw.iloc[1] == pytest.approx(0.375)


def test_ewmac_forward_fills_missing_vol():
    # vol NaN at the last session: the previous vol (2.0) is used, so raw = (fast - slow) / 2
    price = np.array([10.0, 11.0, 13.0, 12.0])
    raw = ewmac(_wide(price), _wide([1.0, 1.0, 2.0, np.nan]), 2, 8)["I0"].to_numpy()
    expected = (_naive_ewma(price, 2) - _naive_ewma(price, 8))[3] / 2.0
    assert raw[3] == pytest.approx(expected)


def test_ewmac_is_nan_before_listing():
    prices = _wide([np.nan, np.nan, 10.0, 11.0])
    raw = ewmac(prices, _wide([1.0] * 4), 2, 8)["I0"]
    assert raw.iloc[:2].isna().all() and raw.iloc[2:].notna().all()


def test_ewmac_rejects_fast_not_below_slow():
    with pytest.raises(RuleError, match="fast < slow"):
        ewmac(_wide([1.0, 2.0]), _wide([1.0, 1.0]), 8, 8)


def test_ewmac_rejects_missing_vol_column():
    with pytest.raises(RuleError, match="no vol"):
        ewmac(_wide([1.0, 2.0], ["A"]), _wide([1.0, 1.0], ["B"]), 2, 8)


def test_ewmac_has_no_look_ahead():
    rng = np.random.default_rng(11)
    prices = _wide(100 + rng.standard_normal((300, 2)).cumsum(axis=0))
    vol = _wide(1 + rng.random((300, 2)))
    before = ewmac(prices, vol, 8, 32)
    p2, v2 = prices.copy(), vol.copy()
    p2.iloc[200:] += 50
    v2.iloc[200:] *= 4
    pd.testing.assert_frame_equal(before.iloc[:200], ewmac(p2, v2, 8, 32).iloc[:200])


def test_breakout_matches_naive_rolling_window_and_ewma():
    rng = np.random.default_rng(12)
    price = 100 + rng.standard_normal(80).cumsum()
    lookback, smooth = 20, 5  # default smooth = max(int(20/4), 1) = 5
    out = breakout(_wide(price), lookback)["I0"].to_numpy()
    expected = _naive_ewma(_naive_breakout_unsmoothed(price, lookback), smooth, min_periods=math.ceil(smooth / 2))
    np.testing.assert_allclose(out, expected, rtol=1e-12, equal_nan=True)


def test_breakout_starts_after_half_the_lookback():
    # lookback 10: rolling max/min need ceil(10/2) = 5 prices, smooth 2 needs 1 value -> first at row 4
    out = breakout(_wide(np.arange(30.0)), 10)["I0"]
    assert out.iloc[:4].isna().all() and out.iloc[4:].notna().all()


def test_breakout_of_a_rising_price_is_plus_twenty():
    # a price at its rolling high: 40 * (max - mid) / (max - min) = +20, and so is its EWMA
    out = breakout(_wide(np.arange(50.0)), 10)["I0"].dropna()
    np.testing.assert_allclose(out.to_numpy(), 20.0)


def test_breakout_of_a_flat_price_is_zero_not_inf():
    out = breakout(_wide(np.full(30, 7.0)), 10)["I0"].dropna()
    assert len(out) > 0 and (out == 0.0).all()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=2, max_size=60),
    st.integers(2, 40),
)
def test_breakout_stays_within_plus_minus_twenty(values, lookback):
    out = breakout(_wide(values), lookback)["I0"].dropna()
    assert (out.abs() <= 20.0 + 1e-9).all()


def test_breakout_has_no_look_ahead():
    rng = np.random.default_rng(13)
    prices = _wide(100 + rng.standard_normal((400, 2)).cumsum(axis=0))
    before = breakout(prices, 80)
    p2 = prices.copy()
    p2.iloc[250:] = p2.iloc[250:] * -2
    pd.testing.assert_frame_equal(before.iloc[:250], breakout(p2, 80).iloc[:250])


def test_breakout_rejects_smooth_not_below_lookback():
    with pytest.raises(RuleError, match="smooth"):
        breakout(_wide(np.arange(5.0)), 10, smooth=10)
