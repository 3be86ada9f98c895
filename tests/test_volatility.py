"""Tests for pipeline.signals.volatility: robust_vol (pst robust_vol_calc), percentage_vol, daily_returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.signals.volatility import (
    VolatilityError,
    daily_returns,
    percentage_vol,
    robust_vol,
)


def _sessions(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2000-01-03", periods=n, name="session")


def _wide(values: np.ndarray | list, columns: list[str] | None = None) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    columns = columns or [f"I{i}" for i in range(values.shape[1])]
    return pd.DataFrame(values, index=_sessions(len(values)), columns=pd.Index(columns, name="instrument"))


def _naive_ewm_std(x: np.ndarray, span: int, min_periods: int) -> np.ndarray:
    """pandas' ewm(span, adjust=True).std() written out: weights (1-a)^(t-i), a = 2/(span+1),
    weighted mean and variance, times the bias correction (sum w)^2 / ((sum w)^2 - sum w^2).
    Input has no NaN except a leading one (the first difference)."""
    alpha = 2.0 / (span + 1.0)
    out = np.full(len(x), np.nan)
    start = int(np.argmax(~np.isnan(x)))
    for t in range(start, len(x)):
        obs = x[start : t + 1]
        if len(obs) < min_periods or len(obs) < 2:
            continue
        w = (1 - alpha) ** np.arange(len(obs) - 1, -1, -1)
        mean = np.sum(w * obs) / np.sum(w)
        biased = np.sum(w * (obs - mean) ** 2) / np.sum(w)
        out[t] = np.sqrt(biased * np.sum(w) ** 2 / (np.sum(w) ** 2 - np.sum(w**2)))
    return out


def test_daily_returns_are_price_differences_over_a_gap():
    # hand computed: 100 -> 103 (+3), gap, 103 -> 101 (-2): the gap yields one change, not two NaN
    prices = _wide([100.0, 103.0, np.nan, 101.0])
    out = daily_returns(prices)["I0"].tolist()
    assert np.isnan(out[0]) and out[1] == 3.0 and np.isnan(out[2]) and out[3] == -2.0


def test_robust_vol_without_floor_matches_naive_ewm_std_of_price_differences():
    rng = np.random.default_rng(1)
    prices = _wide(100 + rng.standard_normal(80).cumsum())
    vol = robust_vol(prices, span=35, min_periods=10, floor=False)["I0"].to_numpy()
    expected = _naive_ewm_std(np.r_[np.nan, np.diff(prices["I0"].to_numpy())], span=35, min_periods=10)
    np.testing.assert_allclose(vol, expected, rtol=1e-10, equal_nan=True)


def test_robust_vol_is_nan_until_min_periods_price_changes():
    rng = np.random.default_rng(2)
    vol = robust_vol(_wide(100 + rng.standard_normal(30).cumsum()), min_periods=10)["I0"]
    # 10 changes need 11 prices: positions 0..9 NaN, position 10 the first value
    assert vol.iloc[:10].isna().all() and vol.iloc[10:].notna().all()


def test_robust_vol_floor_equals_rolling_five_percent_quantile_after_vol_collapses():
    # 400 sessions of +/-1 changes then 120 of +/-0.01: the EWMA std decays (roughly by
    # (1 - 2/36)^k in variance) and the floor, the 5% quantile of the last 500 unfloored vols
    # (about the vol 25 sessions ago, as vol falls monotonically), holds it up.
    changes = np.r_[np.tile([1.0, -1.0], 200), np.tile([0.01, -0.01], 60)]
    prices = _wide(np.r_[100.0, 100.0 + changes.cumsum()])
    floored = robust_vol(prices)["I0"].to_numpy()
    unfloored = robust_vol(prices, floor=False)["I0"].to_numpy()
    t = len(prices) - 1
    assert floored[t] > unfloored[t] * 1.5  # the floor binds
    window = unfloored[t - 499 : t + 1]
    expected = np.quantile(window[~np.isnan(window)], 0.05)  # numpy's linear interpolation = pandas'
    assert floored[t] == pytest.approx(expected, rel=1e-12)


def test_robust_vol_floor_is_zero_before_floor_min_periods():
    # with fewer than 100 vols the floor is 0, so floored == unfloored
    rng = np.random.default_rng(3)
    prices = _wide(np.r_[100 + rng.standard_normal(50).cumsum(), np.full(50, 120.0)])
    pd.testing.assert_frame_equal(robust_vol(prices), robust_vol(prices, floor=False))


def test_robust_vol_absolute_minimum_applies_to_a_flat_price():
    # flat price: EWMA std is 0, raised to vol_abs_min (1e-10, carver.md §2.1)
    vol = robust_vol(_wide(np.full(40, 50.0)))["I0"]
    assert vol.iloc[20:].eq(1e-10).all()


def test_robust_vol_skips_a_missing_session_and_forward_fills_it():
    rng = np.random.default_rng(4)
    full = _wide(100 + rng.standard_normal(60).cumsum())
    gappy = full.copy()
    gappy.iloc[30, 0] = np.nan
    vol_gappy = robust_vol(gappy)["I0"]
    # the same instrument with the missing session simply absent
    vol_dropped = robust_vol(full.drop(full.index[30]))["I0"]
    pd.testing.assert_series_equal(vol_gappy.drop(full.index[30]), vol_dropped)
    assert vol_gappy.iloc[30] == vol_gappy.iloc[29]


def test_robust_vol_keeps_leading_nan_before_listing_and_columns_independent():
    rng = np.random.default_rng(5)
    a = 100 + rng.standard_normal(60).cumsum()
    b = np.r_[np.full(20, np.nan), 50 + rng.standard_normal(40).cumsum()]
    vol = robust_vol(_wide(np.c_[a, b], ["A", "B"]))
    assert vol["B"].iloc[:20].isna().all()
    # B alone, starting at its listing, gives the same vol
    alone = robust_vol(_wide(b[20:], ["B"]))["B"].to_numpy()
    np.testing.assert_allclose(vol["B"].iloc[20:].to_numpy(), alone, equal_nan=True)
    np.testing.assert_allclose(vol["A"].to_numpy(), robust_vol(_wide(a, ["A"]))["A"].to_numpy(), equal_nan=True)


def test_robust_vol_has_no_look_ahead():
    rng = np.random.default_rng(6)
    prices = _wide(100 + rng.standard_normal((700, 3)).cumsum(axis=0))
    before = robust_vol(prices)
    perturbed = prices.copy()
    perturbed.iloc[400:] = perturbed.iloc[400:] * 3 + 7
    perturbed.iloc[450, 1] = np.nan
    after = robust_vol(perturbed)
    pd.testing.assert_frame_equal(before.iloc[:400], after.iloc[:400])


def test_robust_vol_rejects_unsorted_sessions():
    prices = _wide([1.0, 2.0, 3.0]).iloc[::-1]
    with pytest.raises(VolatilityError, match="ascending"):
        robust_vol(prices)


def test_percentage_vol_hand_computed_daily_and_annualised():
    # vol 2 points on price 100 -> 2% daily -> 2 * 16 = 32% annualised; |price| for a negative
    # back-adjusted price; a zero price gives NaN, not inf.
    vol = _wide([[2.0, 1.0, 3.0]], ["A", "B", "C"])
    prices = _wide([[100.0, -50.0, 0.0]], ["A", "B", "C"])
    daily = percentage_vol(vol, prices, annualise=False).iloc[0]
    annual = percentage_vol(vol, prices).iloc[0]
    assert daily["A"] == pytest.approx(2.0) and daily["B"] == pytest.approx(2.0) and np.isnan(daily["C"])
    assert annual["A"] == pytest.approx(32.0)


def test_percentage_vol_uses_last_known_price_over_a_gap():
    # price 200 then missing: 4 / 200 * 100 = 2% at the gap session
    vol = _wide([4.0, 4.0])
    prices = _wide([200.0, np.nan])
    assert percentage_vol(vol, prices, annualise=False)["I0"].tolist() == pytest.approx([2.0, 2.0])


def test_percentage_vol_rejects_missing_price_columns():
    with pytest.raises(VolatilityError, match="no prices"):
        percentage_vol(_wide([1.0], ["A"]), _wide([1.0], ["B"]))
