"""Tests of pipeline.ml.regime_models: purged splits, in-train tuning, model comparison, importance."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, spearmanr
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from pipeline.ml.regime import RegimeInputError, default_model
from pipeline.ml.regime_models import (
    TunedClassifier,
    _holm,
    compare_models,
    default_candidates,
    feature_importance_stability,
    purged_time_series_splits,
    tune_in_train,
)


def sessions(n: int) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.bdate_range("2000-01-03", periods=n), name="session")


def predictable(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """label_t = 1{x_t + 0.3 e_t > 0}, x and e iid N(0,1), plus two pure-noise features.

    No persistence (labels are iid), so the baseline label_{t-h} scores ~0.5, while a model of x
    can reach P(sign x = sign(x + 0.3 e)) = 1 - arctan(0.3) / pi = 0.907.
    """
    rng = np.random.default_rng(seed)
    idx = sessions(n)
    x = rng.normal(size=n)
    noise = rng.normal(size=(2, n))
    features = pd.DataFrame({"x": x, "noise1": noise[0], "noise2": noise[1]}, idx)
    labels = pd.Series((x + 0.3 * rng.normal(size=n) > 0).astype(float), idx)
    return features, labels


def as_lists(splits):
    return [(train.tolist(), test.tolist()) for train, test in splits]


# --- purged splits ------------------------------------------------------------------------


def test_splits_purge_and_embargo_hand_checked():
    # n = 20, 3 folds: m = 20 // 4 = 5, tests [5..9], [10..14], [15..19].
    # Purge (h = 2): fold k keeps t <= s_k - 3: 2, 7, 12.
    # Embargo 1 after fold 0 drops session 10 (fold 1's own test, so it matters for fold 2);
    # after fold 1 it drops 15 (fold 2's test).
    got = as_lists(purged_time_series_splits(20, 3, horizon=2, embargo=1))
    assert got == [
        ([0, 1, 2], [5, 6, 7, 8, 9]),
        ([0, 1, 2, 3, 4, 5, 6, 7], [10, 11, 12, 13, 14]),
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12], [15, 16, 17, 18, 19]),
    ]


def test_splits_embargo_after_each_earlier_fold_hand_checked():
    # n = 22, 2 folds: m = 22 // 3 = 7, remainder to the first training block: tests
    # [8..14], [15..21]. h = 0: no purge. Embargo 3 after fold 0 drops 15, 16, 17 (fold 1's
    # test) -- so fold 1 trains on 0..14 whole; nothing else is dropped.
    got = as_lists(purged_time_series_splits(22, 2, horizon=0, embargo=3))
    assert got == [(list(range(8)), list(range(8, 15))), (list(range(15)), list(range(15, 22)))]
    # 3 folds of m = 5 (tests 7..11, 12..16, 17..21), h = 1, embargo 2: fold 2 trains on
    # t <= 17 - 2 = 15 minus 12, 13 (after fold 0).
    got = as_lists(purged_time_series_splits(22, 3, horizon=1, embargo=2))
    assert got[2][0] == [*range(12), 14, 15]


def test_rolling_splits_hand_checked():
    # Same cut as the first test, h = 2, no embargo, train_len = 4: the window is the 4
    # sessions ending at the purge boundary s_k - 3 = 2, 7, 12 (clipped at 0 for fold 0).
    got = as_lists(
        purged_time_series_splits(20, 3, horizon=2, embargo=0, expanding=False, train_len=4)
    )
    assert [train for train, _ in got] == [[0, 1, 2], [4, 5, 6, 7], [9, 10, 11, 12]]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 120),
    n_splits=st.integers(1, 6),
    horizon=st.integers(0, 8),
    embargo=st.integers(0, 8),
    train_len=st.one_of(st.none(), st.integers(1, 40)),
)
def test_splits_match_a_naive_definition(n, n_splits, horizon, embargo, train_len):
    # Independent definition, one sample at a time: t trains fold k iff t's label window
    # t+1..t+h ends before the fold, t is not within `embargo` after an earlier test fold, and
    # (rolling) t is within train_len of the purge boundary.
    if n < n_splits + 1:
        with pytest.raises(RegimeInputError):
            purged_time_series_splits(n, n_splits, horizon, embargo)
        return
    expanding = train_len is None
    splits = purged_time_series_splits(n, n_splits, horizon, embargo, expanding, train_len)
    m = n // (n_splits + 1)
    ends: list[int] = []
    assert len(splits) == n_splits
    for k, (train, test) in enumerate(splits):
        start = n - (n_splits - k) * m
        assert test.tolist() == list(range(start, start + m))
        expected = [
            t for t in range(n)
            if t + horizon < start
            and not any(e < t <= e + embargo for e in ends)
            and (expanding or t >= start - horizon - train_len)
        ]
        assert train.tolist() == expected
        assert not set(train.tolist()) & set(test.tolist())
        ends.append(start + m - 1)


def test_splits_reject_train_len_with_expanding_window():
    with pytest.raises(RegimeInputError, match="expanding=False"):
        purged_time_series_splits(100, 3, 5, 5, expanding=True, train_len=20)
    with pytest.raises(RegimeInputError, match="train_len"):
        purged_time_series_splits(100, 3, 5, 5, expanding=False)


# --- tuning inside the training data -------------------------------------------------------

CALLS: list[tuple[str, float, np.ndarray]] = []  # module-level: the factory builds new objects


class ConstantRecorder(ClassifierMixin, BaseEstimator):
    """Predicts P(1) = p everywhere; records the position column of every fit and prediction."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def fit(self, X, y):
        CALLS.append(("fit", self.p, np.asarray(X, dtype=float)[:, 0].copy()))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        CALLS.append(("predict", self.p, np.asarray(X, dtype=float)[:, 0].copy()))
        return np.tile([1 - self.p, self.p], (len(X), 1))


def test_tuning_sees_only_training_rows_and_purges_inside_them():
    # Outer purged split of 600 sessions; tuning on the outer training rows of the last fold
    # must never fit or predict an outer test row, and each inner fit must end h sessions
    # before the rows it is scored on.
    n, h = 600, 5
    idx = sessions(n)
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"position": np.arange(n, dtype=float), "z": rng.normal(size=n)}, idx)
    y = pd.Series(rng.integers(0, 2, n), idx)
    train, test = purged_time_series_splits(n, 3, h, h)[-1]
    CALLS.clear()
    tune_in_train(ConstantRecorder, {"p": [0.4, 0.6]}, X.iloc[train], y.iloc[train], h, n_inner=3)
    seen = np.concatenate([positions for _, _, positions in CALLS])
    assert len(CALLS) == 2 * 3 * 2  # 2 parameter sets x 3 inner folds x (fit + predict)
    assert set(seen.tolist()) <= set(train.tolist())
    assert not set(seen.tolist()) & set(test.tolist())
    for (kind_fit, _, fitted), (kind_pred, _, scored) in zip(CALLS[::2], CALLS[1::2], strict=True):
        assert (kind_fit, kind_pred) == ("fit", "predict")
        assert fitted.max() + h < scored.min()


def test_tuning_picks_the_parameter_with_the_lowest_inner_log_loss():
    # Labels repeat 1111111000: every inner test fold of 100 rows holds exactly 70% ones, so a
    # constant P(1) = p scores -(0.7 ln p + 0.3 ln(1 - p)) in every fold; p = 0.7 is best with
    # -(0.7 ln 0.7 + 0.3 ln 0.3) = 0.61086, and p = 0.5 scores ln 2 = 0.69315.
    n = 400  # 3 inner folds of 400 // 4 = 100
    X = np.column_stack([np.arange(n, dtype=float), np.zeros(n)])
    y = np.tile([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], n // 10)
    result = tune_in_train(ConstantRecorder, {"p": [0.3, 0.5, 0.7]}, X, y, horizon=3)
    assert result.best_params == {"p": 0.7}
    means = dict(zip([params["p"] for params in result.scores["params"]], result.scores["mean"]))
    assert means[0.7] == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)))
    assert means[0.5] == pytest.approx(math.log(2))
    assert means[0.3] == pytest.approx(-(0.7 * math.log(0.3) + 0.3 * math.log(0.7)))


def test_tuned_classifier_retunes_inside_each_walk_forward_fit():
    # On predictable data a nearly unregularised logistic model (C = 1) beats one shrunk to
    # P ~ 0.5 (C = 1e-6) in log loss, so every walk-forward fit should choose C = 1.
    features, labels = predictable(900, seed=2)
    tuned = TunedClassifier(
        lambda C: LogisticRegression(C=C, max_iter=1000), {"C": [1e-6, 1.0]}, horizon=5
    )
    comparison = compare_models(features, labels, 5, 300, 300, {"tuned": lambda: tuned})
    assert comparison.results["tuned"].last_model.best_params_ == {"C": 1.0}
    assert comparison.table.loc["tuned", "accuracy"] > 0.85


# --- model comparison ---------------------------------------------------------------------


def test_ml_beats_persistence_when_the_regime_is_predictable():
    features, labels = predictable(1500, seed=8)
    h = 5
    comparison = compare_models(features, labels, h, 250, 300)
    table = comparison.table
    assert list(table.index) == ["persistence", *default_candidates()]
    assert table.loc["persistence", "accuracy"] == pytest.approx(0.5, abs=0.06)
    for name in ("logistic", "random_forest", "gradient_boosting"):
        assert table.loc[name, "accuracy"] > 0.85
        assert table.loc[name, "mcnemar_p"] < 1e-10
        assert table.loc[name, "beats_baseline"]
    # The majority-class rule knows nothing more than persistence.
    assert not table.loc["majority", "beats_baseline"]


def test_mcnemar_p_matches_an_independent_count_on_non_overlapping_sessions():
    features, labels = predictable(1000, seed=3)
    h = 4
    comparison = compare_models(
        features, labels, h, 200, 200, {"logistic": default_model}, pair_stride=h
    )
    # Independent: scored sessions = all of prediction, baseline (label_{t-h}) and label known;
    # every h-th of them from the first; exact binomial test on the discordant pairs.
    p = comparison.results["logistic"].probability.to_numpy()
    y = labels.to_numpy()
    base = labels.shift(h).to_numpy()
    pos = np.flatnonzero(np.isfinite(p) & np.isfinite(y) & np.isfinite(base))[::h]
    hit, base_hit = (p[pos] > 0.5) == y[pos], base[pos] == y[pos]
    b, c = int(np.sum(hit & ~base_hit)), int(np.sum(~hit & base_hit))
    row = comparison.table.loc["logistic"]
    assert row["n_pairs_tested"] == b + c
    assert row["mcnemar_p"] == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
    # One candidate: Holm leaves its p unchanged.
    assert row["mcnemar_p_holm"] == pytest.approx(row["mcnemar_p"])


def test_no_significant_win_when_the_regime_is_noise():
    # Labels iid Bernoulli(1/2) independent of iid N(0,1) features: every model's accuracy is
    # ~ Binomial(1200, 1/2) / 1200 (sd 0.014); 0.06 is > 4 sd.
    n = 1500
    rng = np.random.default_rng(10)
    idx = sessions(n)
    features = pd.DataFrame(rng.normal(size=(n, 3)), idx, columns=["f0", "f1", "f2"])
    labels = pd.Series(rng.integers(0, 2, n).astype(float), idx)
    table = compare_models(features, labels, 5, 250, 300).table
    assert table["n_scored"].eq(1200).all()  # sessions 300..1499, baseline known from 5
    assert (table["accuracy"] - 0.5).abs().max() < 0.06
    assert not table["beats_baseline"].any()
    assert (table["mcnemar_p_holm"].dropna() > 0.05).all()


def test_all_rows_are_scored_on_the_same_sessions():
    features, labels = predictable(700, seed=4)
    features.iloc[400, 1] = np.nan  # one session no model can predict
    comparison = compare_models(features, labels, 5, 200, 200, {"logistic": default_model})
    scored = comparison.scored.to_numpy()
    assert not scored[400] and not scored[:200].any()
    y = labels.to_numpy()[scored]
    for name in ("persistence", "logistic"):
        p = comparison.probabilities[name].to_numpy()[scored]
        # accuracy and Brier recomputed with numpy on the common sessions
        assert comparison.table.loc[name, "accuracy"] == pytest.approx(np.mean((p > 0.5) == y))
        assert comparison.table.loc[name, "brier"] == pytest.approx(np.mean((p - y) ** 2))
        assert comparison.table.loc[name, "n_scored"] == scored.sum()


def test_comparison_up_to_d_ignores_data_after_d():
    # Features after d and labels not yet known at d (t > d - h) are changed: every model's
    # probabilities up to d must not move.
    features, labels = predictable(800, seed=5)
    h, d = 5, 560
    models = {"logistic": default_model, "random_forest": default_candidates()["random_forest"]}
    a = compare_models(features, labels, h, 100, 300, models)
    features2, labels2 = features.copy(), labels.copy()
    features2.iloc[d + 1 :] = features2.iloc[d + 1 :] * -3.0 + 1.0
    labels2.iloc[d - h + 1 :] = 1.0 - labels2.iloc[d - h + 1 :]
    b = compare_models(features2, labels2, h, 100, 300, models)
    pd.testing.assert_frame_equal(a.probabilities.iloc[: d + 1], b.probabilities.iloc[: d + 1])
    assert not a.probabilities.iloc[d + 1 :].equals(b.probabilities.iloc[d + 1 :])


def test_comparison_rejects_a_candidate_named_persistence():
    features, labels = predictable(300, seed=6)
    with pytest.raises(RegimeInputError, match="persistence"):
        compare_models(features, labels, 5, 50, 100, {"persistence": default_model})


def test_holm_adjustment_hand_checked():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; running max -> 0.03, 0.06,
    # 0.06; back in the input order (0.01, 0.04, 0.03); NaN stays NaN and is not counted.
    got = _holm(np.array([0.01, 0.04, np.nan, 0.03]))
    np.testing.assert_allclose(got, [0.03, 0.06, np.nan, 0.06])


# --- feature importance stability ----------------------------------------------------------


def test_strong_feature_ranks_first_in_every_fold():
    features, labels = predictable(1200, seed=7)
    result = feature_importance_stability(features, labels, horizon=5, n_splits=4)
    assert (result.ranks["x"] == 1.0).all()
    # Permuting x turns ~0.9 accuracy into ~0.5: an importance of about 0.4 in every fold.
    assert (result.importances["x"] > 0.3).all()
    assert (result.importances[["noise1", "noise2"]].abs() < 0.05).all().all()
    # Independent: Spearman correlation of consecutive folds' importances with scipy.
    imp = result.importances.to_numpy()
    expected = [spearmanr(imp[k - 1], imp[k]).statistic for k in range(1, 4)]
    np.testing.assert_allclose(result.rank_correlations.to_numpy(), expected)
    assert result.mean_rank_correlation == pytest.approx(np.mean(expected))


def test_stable_ranking_has_rank_correlation_one():
    # Three features of decreasing strength (3, 1, 0.3 on the logit scale) and no noise
    # feature: the ranking x_strong > x_mid > x_weak should repeat in every fold (rho = 1).
    n = 1600
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, 3))
    logit = X @ np.array([3.0, 1.0, 0.3])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    idx = sessions(n)
    features = pd.DataFrame(X, idx, columns=["x_strong", "x_mid", "x_weak"])
    result = feature_importance_stability(features, pd.Series(y, idx), horizon=3, n_splits=3)
    assert (result.ranks["x_strong"] == 1).all() and (result.ranks["x_mid"] == 2).all()
    assert result.mean_rank_correlation == pytest.approx(1.0)


def test_importance_of_early_folds_ignores_data_after_their_test_window():
    # 4 folds of 1000 // 5 = 200: fold 1 tests 400..599. Changing features and labels after
    # session 599 cannot change folds 0 and 1.
    features, labels = predictable(1000, seed=9)
    a = feature_importance_stability(features, labels, horizon=5, n_splits=4)
    features2, labels2 = features.copy(), labels.copy()
    features2.iloc[600:] = features2.iloc[600:] * -2.0
    labels2.iloc[600:] = 1.0 - labels2.iloc[600:]
    b = feature_importance_stability(features2, labels2, horizon=5, n_splits=4)
    pd.testing.assert_frame_equal(a.importances.iloc[:2], b.importances.iloc[:2])
    assert not a.importances.iloc[2:].equals(b.importances.iloc[2:])


# --- Gaussian-mixture states -----------------------------------------------------------------


def two_regimes(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Blocks of 50 sessions alternate between a calm (vol 1) and a turbulent (vol 4) state."""
    rng = np.random.default_rng(seed)
    regime = (np.arange(n) // 50) % 2
    level = np.where(regime == 1, 4.0, 1.0)
    features = pd.DataFrame({"vol": level * np.exp(0.1 * rng.normal(size=n)),
                             "other": rng.normal(size=n)}, index=sessions(n))
    return features, pd.Series(regime.astype(float), index=features.index)


def test_mixture_states_are_ordered_calm_to_turbulent():
    from pipeline.ml.regime_models import gaussian_mixture_states

    features, regime = two_regimes(600)
    states = gaussian_mixture_states(features, 2, 100, 200, "vol")
    scored = states["state"].notna()
    assert scored.sum() == 400 and not scored.iloc[:200].any()
    assert (states.loc[scored, "state"] == regime[scored]).mean() > 0.97
    np.testing.assert_allclose(states.loc[scored, ["p_state_0", "p_state_1"]].sum(axis=1), 1.0)


def test_mixture_states_up_to_d_ignore_data_after_d():
    from pipeline.ml.regime_models import gaussian_mixture_states

    features, _ = two_regimes(600)
    before = gaussian_mixture_states(features, 2, 100, 200, "vol")
    changed = features.copy()
    changed.iloc[351:] = changed.iloc[351:] * 5 + 1
    after = gaussian_mixture_states(changed, 2, 100, 200, "vol")
    pd.testing.assert_frame_equal(before.iloc[:351], after.iloc[:351])


def test_mixture_classifier_learns_each_state_s_label_rate():
    from pipeline.ml.regime_models import GaussianMixtureClassifier

    features, regime = two_regimes(400, seed=1)
    model = GaussianMixtureClassifier(n_components=2).fit(features, regime)
    p = model.predict_proba(features)[:, 1]
    # 200 sessions per state, all labelled alike: rate = (200 + 1) / (200 + 2) with Laplace.
    assert p[regime.to_numpy() == 1].mean() == pytest.approx(201 / 202, abs=0.01)
    assert p[regime.to_numpy() == 0].mean() == pytest.approx(1 / 202, abs=0.01)


# --- leakage guards ----------------------------------------------------------------------------


def test_shuffling_the_labels_destroys_the_out_of_sample_edge():
    features, labels = predictable(1500, seed=11)
    h = 5
    real = compare_models(features, labels, h, 250, 300, {"logistic": default_candidates()["logistic"]})
    rng = np.random.default_rng(0)
    shuffled = pd.Series(rng.permutation(labels.to_numpy()), index=labels.index)
    fake = compare_models(features, shuffled, h, 250, 300, {"logistic": default_candidates()["logistic"]})
    assert real.table.loc["logistic", "accuracy"] > 0.85
    # With labels unrelated to the features nothing is left to learn: about a coin toss.
    assert fake.table.loc["logistic", "accuracy"] == pytest.approx(0.5, abs=0.05)
    assert not fake.table.loc["logistic", "beats_baseline"]


# --- trading use --------------------------------------------------------------------------------


def overlay_case(n: int = 2000, seed: int = 0):
    """Returns with vol 3 in "high" sessions and 1 otherwise, same mean 0.3 in both.

    Scaling the high sessions by 0.25 lifts the daily Sharpe from 0.3 / sqrt(5) = 0.134 to
    0.1875 / sqrt(0.78) = 0.212, about +1.25 annualised (x 16).
    """
    rng = np.random.default_rng(seed)
    high = (np.arange(n) // 40) % 2 == 1
    r = pd.Series(0.3 + rng.normal(size=n) * np.where(high, 3.0, 1.0), index=sessions(n))
    return r, high


def test_a_scale_that_sees_the_high_vol_regime_improves_the_sharpe():
    from pipeline.ml.regime_models import overlay_evidence

    r, high = overlay_case()
    # P(high) known at t-1 for session t: the regime of t (it persists within blocks).
    p = pd.Series(np.r_[high[1:], False].astype(float), index=r.index)
    ev = overlay_evidence(r, p, 0.25)
    x = r.to_numpy()[1:]
    scaled = x * np.where(high[1:], 0.25, 1.0)
    assert ev.n_sessions == len(x)
    assert ev.sharpe_simple == pytest.approx(x.mean() / x.std(ddof=1) * 16)
    assert ev.sharpe_scaled == pytest.approx(scaled.mean() / scaled.std(ddof=1) * 16)
    assert ev.difference > 0.5 and ev.ci_lower > 0 and ev.improves


def test_a_constant_scale_changes_nothing():
    from pipeline.ml.regime_models import overlay_evidence

    r, _ = overlay_case()
    ev = overlay_evidence(r, pd.Series(0.4, index=r.index), 0.5)
    assert ev.difference == pytest.approx(0.0, abs=1e-12)
    assert not ev.improves


def test_the_gate_decides_from_past_evidence_only_and_applies_after_the_decision():
    from pipeline.ml.regime_models import gate_in_force, overlay_gate

    r, high = overlay_case()
    p = pd.Series(np.r_[high[1:], False].astype(float), index=r.index)
    decisions = r.index[[100, 500, 1000]]
    gate = overlay_gate(r, p, 0.25, decisions, min_sessions=300)
    assert list(gate["on"]) == [False, True, True]  # too few sessions at the first decision
    assert gate["n_sessions"].iloc[0] == 100
    changed = r.copy()
    changed.iloc[501:] = -changed.iloc[501:] * 10
    again = overlay_gate(changed, p, 0.25, decisions, min_sessions=300)
    pd.testing.assert_frame_equal(gate.iloc[:2], again.iloc[:2])
    on = gate_in_force(gate, r.index)
    assert not on.iloc[: 501].any() and on.iloc[501:].all()
