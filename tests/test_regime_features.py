"""Tests of pipeline.ml.regime_features: the market features and the simple-rule returns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ml import regime_features
from pipeline.ml.regime import RegimeInputError
from pipeline.ml.regime_features import (
    MARKET_FEATURE_NAMES,
    average_correlation,
    market_features,
    simple_rule_returns,
)


def sessions(n: int) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.bdate_range("2000-01-03", periods=n), name="session")


def market(n: int = 600, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    idx = sessions(n)
    cols = pd.Index([f"I{i}" for i in range(k)], name="instrument")
    prices = pd.DataFrame(200 + rng.normal(size=(n, k)).cumsum(axis=0), idx, cols)
    vol = prices.diff().ewm(span=35, min_periods=10).std()
    combined = pd.DataFrame(rng.uniform(-20, 20, size=(n, k)), idx, cols)
    return prices, vol, combined


def test_features_have_the_documented_columns_and_volume_only_when_given():
    prices, vol, combined = market(300)
    assert tuple(market_features(prices, vol, combined).columns) == MARKET_FEATURE_NAMES
    volume = pd.DataFrame(1000.0, index=prices.index, columns=prices.columns)
    with_volume = market_features(prices, vol, combined, volume)
    assert tuple(with_volume.columns) == (*MARKET_FEATURE_NAMES, "volume_ratio")
    # Constant volume: log(V / mean V) = 0 once the 63-session window is full.
    assert with_volume["volume_ratio"].iloc[62:].abs().max() == pytest.approx(0.0, abs=1e-12)
    assert with_volume["volume_ratio"].iloc[:62].isna().all()


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # session 0 has no vol yet
def test_features_match_independent_computation_on_one_session():
    prices, vol, combined = market(400)
    vol = prices.diff().ewm(span=35, min_periods=10).std()  # positive from session 10
    feats = market_features(prices, vol, combined)
    t = 350
    p, s = prices.to_numpy(), vol.to_numpy()
    # q_u = mean_i (P_u - P_{u-1}) / sigma_{u-1}
    q = np.nanmean((p[1:] - p[:-1]) / s[:-1], axis=1)  # q[u - 1] is session u
    move21 = (p[t] - p[t - 21]) / (s[t] * math.sqrt(21))
    expected = {
        "vol_ratio": np.mean(s[t] / s[t - 255 : t + 1].mean(axis=0)),
        "ret5": np.mean((p[t] - p[t - 5]) / (s[t] * math.sqrt(5))),
        "ret21": np.mean(move21),
        "ret63": np.mean((p[t] - p[t - 63]) / (s[t] * math.sqrt(63))),
        "abs_forecast": np.mean(np.abs(combined.to_numpy()[t])),
        "dispersion21": np.std(move21, ddof=1),
        "port_vol21": np.std(q[t - 21 : t], ddof=1),  # sessions t-20..t
        "port_vol63": np.std(q[t - 63 : t], ddof=1),
    }
    got = feats.iloc[t]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-10), name


def test_simple_rule_return_hand_computed():
    idx = sessions(3)
    prices = pd.DataFrame({"A": [100.0, 102.0, 101.0], "B": [50.0, 49.0, 49.5]}, index=idx)
    vol = pd.DataFrame({"A": [2.0, 2.0, 2.0], "B": [1.0, 0.5, 0.5]}, index=idx)
    combined = pd.DataFrame({"A": [10.0, -20.0, 0.0], "B": [5.0, 10.0, 0.0]}, index=idx)
    r = simple_rule_returns(prices, vol, combined)
    # t=1: A 10/10 * (2/2) = 1.0; B 5/10 * (-1/1) = -0.5 -> mean 0.25
    # t=2: A -20/10 * (-1/2) = 1.0; B 10/10 * (0.5/0.5) = 1.0 -> mean 1.0
    assert np.isnan(r.iloc[0])
    assert r.iloc[1] == pytest.approx(0.25)
    assert r.iloc[2] == pytest.approx(1.0)


def test_strategy_drawdown_matches_cumulative_returns_below_their_peak():
    prices, vol, combined = market(400, seed=3)
    feats = market_features(prices, vol, combined)
    r = simple_rule_returns(prices, vol, combined).to_numpy()
    first = int(np.flatnonzero(np.isfinite(r))[0])
    equity = np.nancumsum(r[first:])
    expected = equity - np.maximum.accumulate(np.maximum(equity, 0.0))  # starting at 0, a peak
    np.testing.assert_allclose(feats["strategy_drawdown"].to_numpy()[first:], expected, atol=1e-10)
    assert feats["strategy_drawdown"].iloc[:first].isna().all()
    assert (feats["strategy_drawdown"].dropna() <= 0).all()


def test_average_correlation_matches_pandas_pairwise_rolling_correlation():
    rng = np.random.default_rng(1)
    n, window = 150, 30
    common = rng.normal(size=(n, 1))
    z = pd.DataFrame(common + rng.normal(size=(n, 4)), index=sessions(n), columns=list("ABCD"))
    z.iloc[:70, 3] = np.nan  # D starts late: it counts only once it has a full window
    ours = average_correlation(z, window)
    for t in (40, 80, 99, 149):
        block = z.iloc[t - window + 1 : t + 1]
        cols = [c for c in z.columns if block[c].notna().all()]
        c = block[cols].corr().to_numpy()
        expected = c[~np.eye(len(cols), dtype=bool)].mean()
        assert ours.iloc[t] == pytest.approx(expected, rel=1e-9), t
    assert ours.iloc[: window - 1].isna().all()


def _average_correlation_in_one_block(z: pd.DataFrame, window: int) -> pd.Series:
    """The former whole-panel computation (one (session, k, k) array), kept as the reference."""
    x = z.to_numpy(dtype=float)
    ok = np.isfinite(x)
    x0 = np.where(ok, x, 0.0)
    k = x.shape[1]

    def rolling(a):
        c = np.cumsum(a, axis=0)
        out = c.copy()
        out[window:] -= c[:-window]
        out[: window - 1] = np.nan
        return out

    full = rolling(ok.astype(float)) == window
    s, s2, sxy = rolling(x0), rolling(x0 * x0), rolling(x0[:, :, None] * x0[:, None, :])
    w = float(window)
    cov = sxy - s[:, :, None] * s[:, None, :] / w
    var = s2 - s * s / w
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.sqrt(var[:, :, None] * var[:, None, :])
    pair = full[:, :, None] & full[:, None, :] & ~np.eye(k, dtype=bool)[None]
    pair &= np.isfinite(corr)
    total, count = np.where(pair, corr, 0.0).sum(axis=(1, 2)), pair.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.Series(np.where(count > 0, total / np.maximum(count, 1), np.nan), index=z.index)


@pytest.mark.parametrize("n, k, window, sessions_per_block", [
    (300, 5, 30, 7), (300, 5, 30, 30), (300, 5, 30, 300), (500, 20, 21, 3), (200, 4, 63, 1), (160, 6, 63, 40)])
def test_average_correlation_in_blocks_of_sessions_is_bit_identical_to_one_block(monkeypatch, n, k, window,
                                                                                 sessions_per_block):
    rng = np.random.default_rng(n + k)
    z = pd.DataFrame(rng.normal(size=(n, 1)) + rng.normal(size=(n, k)), index=sessions(n))
    z.iloc[rng.integers(0, n, 3), rng.integers(0, k, 3)] = np.nan  # a few holes
    z.iloc[: n // 3, 0] = np.nan  # a late start
    monkeypatch.setattr(regime_features, "_CORRELATION_BLOCK_ELEMENTS", sessions_per_block * k * k)
    ours = average_correlation(z, window).to_numpy()
    assert np.isfinite(ours).sum() >= 10  # the comparison covers real correlations
    np.testing.assert_array_equal(ours, _average_correlation_in_one_block(z, window).to_numpy())


def test_a_steady_uptrend_has_full_ewmac_agreement_and_sits_at_its_breakout_high():
    n = 400
    idx = sessions(n)
    prices = pd.DataFrame({"A": 100 + 0.5 * np.arange(n), "B": 50 + 0.2 * np.arange(n)}, index=idx)
    prices = prices + np.random.default_rng(2).normal(scale=0.01, size=prices.shape)
    vol = pd.DataFrame(1.0, index=idx, columns=prices.columns)
    combined = pd.DataFrame(10.0, index=idx, columns=prices.columns)
    feats = market_features(prices, vol, combined).iloc[-1]
    assert feats["ewmac_agreement"] == pytest.approx(1.0)
    assert feats["breakout_position"] == pytest.approx(0.5, abs=0.02)
    assert feats["breakout_extremity"] == pytest.approx(1.0, abs=0.04)


@settings(max_examples=15, deadline=None)
@given(d=st.integers(min_value=260, max_value=560), factor=st.floats(min_value=0.5, max_value=3.0))
def test_features_up_to_d_ignore_data_after_d(d, factor):
    prices, vol, combined = market(600)
    before = market_features(prices, vol, combined)
    later = prices.index > prices.index[d]
    p2, v2, c2 = prices.copy(), vol.copy(), combined.copy()
    p2[later] = p2[later] * factor + 7.0
    v2[later] = v2[later] * factor
    c2[later] = -c2[later]
    after = market_features(p2, v2, c2)
    pd.testing.assert_frame_equal(before.iloc[: d + 1], after.iloc[: d + 1])


def test_misaligned_inputs_are_refused():
    prices, vol, combined = market(100)
    with pytest.raises(RegimeInputError, match="combined does not share"):
        market_features(prices, vol, combined.iloc[:-1])
    with pytest.raises(RegimeInputError, match="window must be >= 3"):
        average_correlation(prices, 2)
