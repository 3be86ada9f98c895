"""Tests for pipeline.signals.window_stats: rolling extremes against a naive loop and pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.signals.window_stats import rolling_max_min, rolling_max_min_set


def _naive(values: np.ndarray, window: int, min_periods: int) -> tuple[np.ndarray, np.ndarray]:
    """Max and min of the non-NaN values of rows [t - window + 1, t], written out row by row."""
    hi, lo = np.full(values.shape, np.nan), np.full(values.shape, np.nan)
    for t in range(values.shape[0]):
        for j in range(values.shape[1]):
            seen = values[max(0, t - window + 1) : t + 1, j]
            seen = seen[~np.isnan(seen)]
            if seen.size >= min_periods:
                hi[t, j], lo[t, j] = seen.max(), seen.min()
    return hi, lo


def test_hand_computed_window_of_three_with_a_gap():
    # rows 0..5 of one column; NaN at row 2. window 3, at least 2 values:
    # row 1: {1, 4} -> 4, 1; row 2: {1, 4} -> 4, 1; row 3: {4, -2} -> 4, -2; row 4: {-2, 3} -> 3, -2;
    # row 5: {-2, 3, 0} -> 3, -2. Row 0 has one value only -> NaN.
    x = np.array([[1.0], [4.0], [np.nan], [-2.0], [3.0], [0.0]])
    hi, lo = rolling_max_min(x, 3, 2)
    np.testing.assert_array_equal(hi[:, 0], [np.nan, 4, 4, 4, 3, 3])
    np.testing.assert_array_equal(lo[:, 0], [np.nan, 1, 1, -2, -2, -2])


@settings(max_examples=60, deadline=None)
@given(
    values=arrays(
        np.float64, st.tuples(st.integers(1, 40), st.integers(1, 4)),
        elements=st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(np.nan)),
    ),
    window=st.integers(1, 12),
    data=st.data(),
)
def test_equals_naive_loop_and_pandas(values, window, data):
    min_periods = data.draw(st.integers(1, window))
    hi, lo = rolling_max_min(values, window, min_periods)
    naive_hi, naive_lo = _naive(values, window, min_periods)
    np.testing.assert_array_equal(hi, naive_hi)
    np.testing.assert_array_equal(lo, naive_lo)
    rolling = pd.DataFrame(values).rolling(window, min_periods=min_periods)
    np.testing.assert_array_equal(hi, rolling.max().to_numpy())
    np.testing.assert_array_equal(lo, rolling.min().to_numpy())


def test_no_look_ahead_changing_later_rows_changes_nothing_before():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3)).cumsum(axis=0)
    hi, lo = rolling_max_min(x, 20, 10)
    y = x.copy()
    y[120:] += 1000.0
    hi2, lo2 = rolling_max_min(y, 20, 10)
    np.testing.assert_array_equal(hi[:120], hi2[:120])
    np.testing.assert_array_equal(lo[:120], lo2[:120])


@pytest.mark.parametrize("window, min_periods", [(0, 1), (5, 0), (5, 6), (2.5, 1)])
def test_bad_window_is_rejected(window, min_periods):
    with pytest.raises(ValueError, match="rolling_max_min"):
        rolling_max_min(np.zeros((5, 2)), window, min_periods)


def test_several_windows_in_any_order_equal_one_at_a_time():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(700, 4)).cumsum(axis=0)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:90, 1] = np.nan
    windows = [(10, 5), (320, 160), (20, 10), (40, 20), (3, 1), (160, 80), (64, 64)]
    for (window, min_periods), (hi, lo) in zip(windows, rolling_max_min_set(x, windows)):
        rolling = pd.DataFrame(x).rolling(window, min_periods=min_periods)
        np.testing.assert_array_equal(hi, rolling.max().to_numpy())
        np.testing.assert_array_equal(lo, rolling.min().to_numpy())


def test_each_pair_is_fresh_so_overwriting_it_leaves_later_pairs_exact():
    # The breakout rule computes in place in the yielded arrays: they must not be the shared levels.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 3)).cumsum(axis=0)
    x[rng.random(x.shape) < 0.1] = np.nan
    windows = [(8, 4), (16, 8), (20, 10), (64, 32)]  # powers of two reuse a level as they are
    for (window, min_periods), (hi, lo) in zip(windows, rolling_max_min_set(x, windows)):
        rolling = pd.DataFrame(x).rolling(window, min_periods=min_periods)
        np.testing.assert_array_equal(hi, rolling.max().to_numpy())
        np.testing.assert_array_equal(lo, rolling.min().to_numpy())
        hi[...] = 1e300
        lo[...] = -1e300
