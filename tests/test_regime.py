"""Tests of pipeline.ml.regime: features, labels, the purged walk-forward and the risk scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from pipeline.ml.regime import (
    RegimeInputError,
    risk_scale,
    vol_regime_labels,
    vol_regime_state,
    walk_forward_classifier,
)
from pipeline.ml.regime_features import market_features


def sessions(n: int) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.bdate_range("2000-01-03", periods=n), name="session")


def market(n: int = 700, k: int = 4, seed: int = 0):
    """Random-walk prices with a causal EWMA vol (span 35) and random combined forecasts."""
    rng = np.random.default_rng(seed)
    idx = sessions(n)
    cols = pd.Index([f"I{i}" for i in range(k)], name="instrument")
    scale = np.array([1.0, 2.0, 0.5, 5.0][:k] + [1.0] * max(0, k - 4))
    prices = pd.DataFrame(100 + (rng.normal(size=(n, k)) * scale).cumsum(axis=0), idx, cols)
    vol = prices.diff().ewm(span=35, min_periods=10).std()
    combined = pd.DataFrame(rng.uniform(-20, 20, size=(n, k)), idx, cols)
    return prices, vol, combined


def perturbed_after(frame: pd.DataFrame, d: int, factor: float = 3.0) -> pd.DataFrame:
    out = frame.copy()
    out.iloc[d + 1 :] = out.iloc[d + 1 :] * factor + 1.0
    return out


# --- features -----------------------------------------------------------------------------


# --- labels -------------------------------------------------------------------------------


def _naive_q(prices: pd.DataFrame, vol: pd.DataFrame) -> np.ndarray:
    p, s = prices.to_numpy(), vol.to_numpy()
    q = np.full(len(p), np.nan)
    for u in range(1, len(p)):
        z = (p[u] - p[u - 1]) / s[u - 1]
        if np.isfinite(z).any():
            q[u] = np.nanmean(z)
    return q


def _naive_window_vol(q: np.ndarray, end: int, h: int) -> float:
    window = q[end - h + 1 : end + 1]
    complete = end - h + 1 >= 0 and np.isfinite(window).all()
    return float(np.std(window, ddof=1)) if complete else np.nan


def test_labels_match_a_naive_loop():
    # label_t = 1 if vol(q_{t+1..t+h}) > median of vol(q_{s-h+1..s}) over all s <= t.
    prices, vol, _ = market(160, seed=1)
    h, min_windows = 5, 10
    got = vol_regime_labels(prices, vol, h, min_windows=min_windows)
    q = _naive_q(prices, vol)
    n = len(q)
    done = [_naive_window_vol(q, s, h) for s in range(n)]
    for t in range(n):
        past = [v for v in done[: t + 1] if np.isfinite(v)]
        future = _naive_window_vol(q, t + h, h) if t + h < n else np.nan
        if len(past) < min_windows or not np.isfinite(future):
            assert np.isnan(got.iloc[t]), t
        else:
            assert got.iloc[t] == float(future > np.median(past)), t


def test_state_matches_a_naive_loop():
    # state_t = 1 if vol(q_{t-h+1..t}) > the same median at t.
    prices, vol, _ = market(160, seed=2)
    h, min_windows = 5, 10
    got = vol_regime_state(prices, vol, h, min_windows=min_windows)
    q = _naive_q(prices, vol)
    done = [_naive_window_vol(q, s, h) for s in range(len(q))]
    for t in range(len(q)):
        past = [v for v in done[: t + 1] if np.isfinite(v)]
        if len(past) < min_windows or not np.isfinite(done[t]):
            assert np.isnan(got.iloc[t]), t
        else:
            assert got.iloc[t] == float(done[t] > np.median(past)), t


def test_label_t_depends_on_data_up_to_t_plus_horizon_only():
    prices, vol, _ = market(400, seed=3)
    h, d = 21, 300
    a = vol_regime_labels(prices, vol, h)
    b = vol_regime_labels(perturbed_after(prices, d), perturbed_after(vol, d), h)
    pd.testing.assert_series_equal(a.iloc[: d - h + 1], b.iloc[: d - h + 1])


def test_last_horizon_labels_are_unknown():
    prices, vol, _ = market(300)
    labels = vol_regime_labels(prices, vol, 21)
    assert labels.iloc[-21:].isna().all()
    assert labels.iloc[-22] in (0.0, 1.0)


# --- walk-forward: purge, embargo, out-of-sample ------------------------------------------

FIT_LOG: list[np.ndarray] = []  # module-level: survives sklearn.clone of the recorder


class TrainingRecorder(ClassifierMixin, BaseEstimator):
    """Records the first feature column of every training set; predicts 0.5."""

    def fit(self, X, y):
        FIT_LOG.append(np.asarray(X, dtype=float)[:, 0].copy())
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


def test_no_training_label_window_overlaps_its_test_period():
    # Feature 0 is the session's position, so the recorder sees exactly which samples trained.
    n, h, every, min_train = 400, 7, 50, 100
    rng = np.random.default_rng(4)
    idx = sessions(n)
    features = pd.DataFrame({"position": np.arange(n, dtype=float), "x": rng.normal(size=n)}, idx)
    labels = pd.Series(rng.integers(0, 2, n).astype(float), idx)
    FIT_LOG.clear()
    res = walk_forward_classifier(features, labels, h, every, min_train, TrainingRecorder())
    assert len(FIT_LOG) == res.n_folds == 6  # fits at 99, 149, ..., 349
    for trained, fold in zip(FIT_LOG, res.folds.itertuples(), strict=True):
        fit_pos = idx.get_loc(fold.fit_session)
        test_start = idx.get_loc(fold.test_start)
        assert test_start == fit_pos + 1
        # Label window of sample t is t+1..t+h: it must end before the test period starts,
        # and (purge + embargo of h) end at least h sessions before the fit.
        assert trained.max() + h < test_start
        assert trained.max() + h + h <= fit_pos
        # ... and nothing more is dropped: the last usable sample is exactly fit - 2h.
        assert trained.max() == fit_pos - 2 * h
        assert idx.get_loc(fold.train_label_end) == trained.max() + h


def test_folds_tile_the_out_of_sample_period():
    n, h, every, min_train = 400, 5, 60, 100
    rng = np.random.default_rng(5)
    idx = sessions(n)
    features = pd.DataFrame({"x": rng.normal(size=n)}, idx)
    labels = pd.Series(rng.integers(0, 2, n).astype(float), idx)
    res = walk_forward_classifier(features, labels, h, every, min_train)
    starts = [idx.get_loc(s) for s in res.folds.test_start]
    ends = [idx.get_loc(s) for s in res.folds.test_end]
    assert starts[0] == min_train
    assert all(s == e + 1 for s, e in zip(starts[1:], ends[:-1], strict=True))
    assert ends[-1] == n - 1
    # NaN exactly before the first out-of-sample session, known from then on.
    assert res.probability.iloc[:min_train].isna().all()
    assert res.probability.iloc[min_train:].notna().all()


def test_probabilities_up_to_d_ignore_prices_after_d():
    # End to end: features, labels and fits recomputed on a market changed after d. d = 693
    # falls 4 sessions after the fit at 689 (= 449 + 4 * 60), so that fit would see changed
    # labels (689 - 9 .. 689 look past d) if it were not purged.
    prices, vol, combined = market(900, seed=6)
    h, d = 10, 693

    def probabilities(p, v, c):
        feats = market_features(p, v, c)
        labels = vol_regime_labels(p, v, h)
        return walk_forward_classifier(feats, labels, h, 60, 450).probability

    # Prices frozen after d: the regime labels whose windows cross d flip from 1 to 0 here.
    frozen = prices.copy()
    frozen.iloc[d + 1 :] = prices.iloc[d].to_numpy()
    a = probabilities(prices, vol, combined)
    b = probabilities(frozen, perturbed_after(vol, d), perturbed_after(combined, d))
    assert a.iloc[450 : d + 1].notna().all()  # first fit at 449 predicts from 450
    pd.testing.assert_series_equal(a.iloc[: d + 1], b.iloc[: d + 1])
    assert not np.allclose(a.iloc[d + 1 :], b.iloc[d + 1 :])


def test_regime_predictable_from_a_feature_beats_persistence():
    # label_t = 1{x_t + 0.3 e_t > 0} with x, e iid N(0, 1): no persistence, so the baseline
    # (label_{t-h}) scores ~0.5, while a logistic model of x can reach
    # P(sign x = sign(x + 0.3 e)) = 1 - arctan(0.3) / pi = 0.907.
    n, h = 2000, 10
    rng = np.random.default_rng(8)
    idx = sessions(n)
    x = rng.normal(size=n)
    noise = rng.normal(size=(2, n))
    features = pd.DataFrame({"x": x, "noise1": noise[0], "noise2": noise[1]}, idx)
    labels = pd.Series((x + 0.3 * rng.normal(size=n) > 0).astype(float), idx)
    res = walk_forward_classifier(features, labels, h, 250, 300)
    assert res.oos_accuracy > 0.85
    assert res.oos_accuracy - res.baseline_accuracy > 0.25
    assert res.coefficients.abs().idxmax() == "x"


def test_regime_predictable_end_to_end_beats_persistence():
    # Through the whole chain (market_features -> vol_regime_labels -> walk-forward): a
    # switching-vol market (daily vol 1 or 3, switch probability 1/15 per session) whose
    # combined forecasts leak the quantity the label thresholds, |forecast| = 10 x the realised
    # vol of q over t+1..t+h (computed here with numpy). Vol is passed as the constant 1, so q is
    # the plain mean of the moves. Any misalignment of features, labels or folds would destroy
    # the signal; with it, the model must clearly beat persistence on the same median
    # (vol_regime_state), which profits from the regimes' persistence (~0.6 here).
    n, k, h = 1600, 4, 10
    rng = np.random.default_rng(9)
    idx = sessions(n)
    cols = pd.Index([f"I{i}" for i in range(k)], name="instrument")
    regime = np.cumsum(rng.random(n) < 1 / 15) % 2
    moves = rng.normal(size=(n, k)) * np.where(regime == 1, 3.0, 1.0)[:, None]
    prices = pd.DataFrame(100 + moves.cumsum(axis=0), idx, cols)
    vol = pd.DataFrame(1.0, idx, cols)
    q = moves.mean(axis=1)
    future_vol = np.full(n, np.nan)
    for t in range(n - h):
        future_vol[t] = np.std(q[t + 1 : t + h + 1], ddof=1)
    leak = np.minimum(10 * future_vol, 20)
    combined = pd.DataFrame(np.repeat(leak[:, None], k, axis=1), idx, cols)
    feats = market_features(prices, vol, combined)
    labels = vol_regime_labels(prices, vol, h)
    state = vol_regime_state(prices, vol, h)
    res = walk_forward_classifier(feats, labels, h, 200, 500, baseline=state)
    assert res.n_scored > 1000
    assert res.oos_accuracy > 0.9
    assert res.oos_accuracy - res.baseline_accuracy > 0.2
    assert res.coefficients.abs().idxmax() == "abs_forecast"


def test_noise_features_score_about_one_half():
    # Labels iid Bernoulli(0.5) independent of iid N(0,1) features: every out-of-sample hit is
    # an independent fair coin, so accuracy ~ Binomial(N, 0.5) / N with sd 0.5 / sqrt(N).
    # N ~ 2500 gives sd 0.010; a tolerance of 0.05 is 5 sd (false alarm ~ 6e-7).
    n, h = 3000, 5
    rng = np.random.default_rng(10)
    idx = sessions(n)
    features = pd.DataFrame(rng.normal(size=(n, 5)), idx, columns=[f"f{i}" for i in range(5)])
    labels = pd.Series(rng.integers(0, 2, n).astype(float), idx)
    res = walk_forward_classifier(features, labels, h, 250, 500)
    assert res.n_scored > 2400
    assert abs(res.oos_accuracy - 0.5) < 0.05


def test_accuracies_match_an_independent_count():
    n, h = 600, 5
    rng = np.random.default_rng(11)
    idx = sessions(n)
    x = rng.normal(size=n)
    features = pd.DataFrame({"x": x}, idx)
    labels = pd.Series((x + rng.normal(size=n) > 0).astype(float), idx)
    labels.iloc[-h:] = np.nan
    res = walk_forward_classifier(features, labels, h, 100, 200)
    p, y = res.probability.to_numpy(), labels.to_numpy()
    base = labels.shift(h).to_numpy()
    scored = np.isfinite(p) & np.isfinite(y) & np.isfinite(base)
    assert res.n_scored == scored.sum()
    assert res.oos_accuracy == pytest.approx(np.mean((p[scored] > 0.5) == y[scored]))
    assert res.baseline_accuracy == pytest.approx(np.mean(base[scored] == y[scored]))
    assert res.folds["n_scored"].sum() == res.n_scored


def test_single_class_training_predicts_that_class():
    n = 300
    idx = sessions(n)
    features = pd.DataFrame({"x": np.linspace(0, 1, n)}, idx)
    labels = pd.Series(1.0, idx)
    res = walk_forward_classifier(features, labels, 5, 100, 150)
    assert (res.probability.iloc[150:] == 1.0).all()
    assert res.last_model is None and res.coefficients is None


def test_rows_with_missing_features_are_not_predicted():
    n = 300
    rng = np.random.default_rng(12)
    idx = sessions(n)
    features = pd.DataFrame({"x": rng.normal(size=n)}, idx)
    features.iloc[200, 0] = np.nan
    labels = pd.Series(rng.integers(0, 2, n).astype(float), idx)
    res = walk_forward_classifier(features, labels, 5, 100, 150)
    assert np.isnan(res.probability.iloc[200])
    assert res.probability.iloc[150:200].notna().all()


def test_min_train_must_leave_room_for_purge_and_embargo():
    idx = sessions(50)
    with pytest.raises(RegimeInputError, match="min_train"):
        walk_forward_classifier(
            pd.DataFrame({"x": np.zeros(50)}, idx), pd.Series(0.0, idx), 10, 5, 20
        )


# --- risk scale ---------------------------------------------------------------------------


def test_risk_scale_arithmetic():
    # 1 - (1 - 0.5) * p: p = 0 -> 1, 0.5 -> 0.75, 1 -> 0.5, NaN -> 1 (no model: no change).
    p = pd.Series([0.0, 0.5, 1.0, np.nan])
    assert risk_scale(p, 0.5).tolist() == [1.0, 0.75, 0.5, 1.0]


def test_risk_scale_other_floor():
    # 1 - (1 - 0.2) * 0.25 = 0.8
    assert risk_scale(pd.Series([0.25]), 0.2).iloc[0] == pytest.approx(0.8)


@pytest.mark.parametrize(("p", "scale"), [([1.2], 0.5), ([-0.1], 0.5), ([0.5], 0.0), ([0.5], 1.5)])
def test_risk_scale_rejects_invalid_input(p, scale):
    with pytest.raises(RegimeInputError):
        risk_scale(pd.Series(p), scale)


# --- trend vs range labels -------------------------------------------------------------------


def test_trend_labels_and_state_match_a_naive_loop():
    from pipeline.ml.regime import trend_regime_labels, trend_regime_state

    rng = np.random.default_rng(5)
    r = pd.Series(rng.normal(size=120), index=sessions(120))
    r.iloc[40] = np.nan
    h = 5
    labels, state = trend_regime_labels(r, h), trend_regime_state(r, h)
    x = r.to_numpy()
    for t in range(len(x)):
        future = x[t + 1 : t + 1 + h]
        want = float(future.sum() > 0) if len(future) == h and np.isfinite(future).all() else np.nan
        past = x[max(t - h + 1, 0) : t + 1]
        have = float(past.sum() > 0) if t >= h - 1 and np.isfinite(past).all() else np.nan
        assert (labels.iloc[t] == want) or (np.isnan(labels.iloc[t]) and np.isnan(want)), t
        assert (state.iloc[t] == have) or (np.isnan(state.iloc[t]) and np.isnan(have)), t
    assert labels.iloc[-h:].isna().all()


def test_trend_labels_reject_a_zero_horizon():
    from pipeline.ml.regime import trend_regime_labels

    with pytest.raises(RegimeInputError, match="horizon must be >= 1"):
        trend_regime_labels(pd.Series([1.0, 2.0], index=sessions(2)), 0)
