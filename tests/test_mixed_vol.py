"""Tests for pipeline.signals.volatility.mixed_vol (pst ``mixed_vol_calc``, carver.md §2.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.signals.volatility import VolatilityError, mixed_vol, robust_vol


def _wide(values, columns=None) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    columns = columns or [f"I{i}" for i in range(values.shape[1])]
    index = pd.bdate_range("2000-01-03", periods=len(values), name="session")
    return pd.DataFrame(values, index=index, columns=pd.Index(columns, name="instrument"))


def _naive_mixed_vol(prices: np.ndarray, span, min_periods, slow_span, proportion, vol_min) -> np.ndarray:
    """mixed_vol_calc written out with loops over a gap-free price series.

    fast: weights (1-a)^(t-i), a = 2/(span+1), weighted variance times the bias correction
    (sum w)^2 / ((sum w)^2 - sum w^2) (pandas' ewm std, adjust=True); slow: adjusted EWMA of
    the defined fast vols with a = 2/(slow_span+1); mix; floor.
    """
    changes = np.diff(prices)
    n = len(prices)
    fast = np.full(n, np.nan)
    alpha = 2.0 / (span + 1.0)
    for t in range(1, n):
        obs = changes[:t]
        if len(obs) < max(min_periods, 2):
            continue
        w = (1 - alpha) ** np.arange(len(obs) - 1, -1, -1)
        mean = np.sum(w * obs) / np.sum(w)
        biased = np.sum(w * (obs - mean) ** 2) / np.sum(w)
        fast[t] = np.sqrt(biased * np.sum(w) ** 2 / (np.sum(w) ** 2 - np.sum(w**2)))
    slow = np.full(n, np.nan)
    beta = 2.0 / (slow_span + 1.0)
    first = int(np.argmax(~np.isnan(fast)))
    for t in range(first, n):
        v = fast[first : t + 1]
        w = (1 - beta) ** np.arange(len(v) - 1, -1, -1)
        slow[t] = np.sum(w * v) / np.sum(w)
    mixed = proportion * slow + (1 - proportion) * fast
    return np.where(np.isnan(mixed), np.nan, np.maximum(mixed, vol_min))


def _random_walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # a vol regime change halfway, so the slow vol visibly differs from the fast one
    steps = np.concatenate([rng.normal(0, 1.0, n // 2), rng.normal(0, 3.0, n - n // 2)])
    return -20.0 + np.cumsum(steps)  # negative levels, as back-adjusted prices can be


def test_mixed_vol_matches_a_naive_loop_with_a_short_slow_span():
    prices = _random_walk(300, 1)
    # slow_vol_years=0.25 -> slow span 64 observations, so the slow EWMA matters in 300 rows
    got = mixed_vol(_wide(prices), slow_vol_years=0.25)["I0"].to_numpy()
    expected = _naive_mixed_vol(prices, 35, 10, 64, 0.3, 1e-10)
    np.testing.assert_allclose(got, expected, rtol=1e-10, equal_nan=True)
    assert np.isnan(got[:10]).all() and not np.isnan(got[10])  # 10 changes need 11 prices


def test_mixed_vol_defaults_match_pst_defaults_yaml():
    prices = _random_walk(400, 2)
    got = mixed_vol(_wide(prices))["I0"].to_numpy()
    # defaults.yaml: days 35, min_periods 10, slow_vol_years 10 (span 2560), proportion 0.3
    expected = _naive_mixed_vol(prices, 35, 10, 2560, 0.3, 1e-10)
    np.testing.assert_allclose(got, expected, rtol=1e-10, equal_nan=True)


def test_mixed_vol_without_slow_part_is_the_unfloored_ewm_std():
    prices = _wide(_random_walk(300, 3))
    pd.testing.assert_frame_equal(mixed_vol(prices, proportion_of_slow_vol=0.0), robust_vol(prices, floor=False))


def test_mixed_vol_lies_between_fast_and_slow_after_a_vol_jump():
    prices = _wide(_random_walk(400, 4))
    fast = robust_vol(prices, floor=False)["I0"]
    mixed = mixed_vol(prices)["I0"]
    # the vol triples at row 200: the slow EWMA lags, so the mixed vol sits below the fast one
    assert (mixed.iloc[260:] < fast.iloc[260:]).all()
    assert (mixed.iloc[260:] > 0.7 * fast.iloc[260:]).all()  # 0.7 fast + 0.3 slow, slow > 0


def test_mixed_vol_skips_gaps_per_instrument():
    prices = _random_walk(120, 5)
    with_gaps = prices.copy()
    with_gaps[[30, 31, 70]] = np.nan
    frame = _wide(np.column_stack([prices, with_gaps]), columns=["FULL", "GAPPY"])
    got = mixed_vol(frame, slow_vol_years=0.25)["GAPPY"]
    # independent: the same calculation on the observed prices only, then forward-filled
    observed = frame["GAPPY"].dropna()
    alone = _naive_mixed_vol(observed.to_numpy(), 35, 10, 64, 0.3, 1e-10)
    expected = pd.Series(alone, index=observed.index).reindex(frame.index).ffill()
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-10, equal_nan=True)


def test_mixed_vol_floors_a_flat_price_at_vol_abs_min():
    vol = mixed_vol(_wide(np.full(50, 7.0)))["I0"]
    assert vol.iloc[10:].tolist() == [1e-10] * 40  # zero std floored at pst's 1e-10


def test_mixed_vol_has_no_look_ahead():
    prices = _wide(np.column_stack([_random_walk(300, 6), _random_walk(300, 7)]))
    base = mixed_vol(prices, slow_vol_years=0.25)
    d = 180
    perturbed = prices.copy()
    perturbed.iloc[d + 1 :] *= 50.0
    pd.testing.assert_frame_equal(base.iloc[: d + 1], mixed_vol(perturbed, slow_vol_years=0.25).iloc[: d + 1])


def test_mixed_vol_rejects_a_proportion_outside_0_1():
    with pytest.raises(VolatilityError, match="proportion_of_slow_vol=1.5"):
        mixed_vol(_wide(_random_walk(30, 8)), proportion_of_slow_vol=1.5)
