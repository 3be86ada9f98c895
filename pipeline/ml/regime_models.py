"""Regime classifiers judged against simple rules: purged splits, in-train tuning, comparison.

The regime model of :mod:`pipeline.ml.regime` is only worth using if it beats a rule a trader would
write on a napkin. This module supplies the evidence, with the leakage guards of López de Prado,
*Advances in Financial Machine Learning* (AFML), ch. 7:

* :func:`purged_time_series_splits`: walk-forward folds whose training samples never have a
  label window reaching into the test fold (purge) and skip the sessions just after earlier test
  folds (embargo);
* :func:`tune_in_train`: hyper-parameters chosen by an inner purged split of the training data
  alone (:class:`TunedClassifier` wraps it so that every walk-forward fit tunes afresh);
* :func:`compare_models`: several candidates through
  :func:`pipeline.ml.regime.walk_forward_classifier`, scored on the same out-of-sample sessions
  against the persistence rule, with McNemar's paired test;
* :func:`feature_importance_stability`: permutation importance on each fold's test window and
  how stable its ranking is from fold to fold.

Labels follow :func:`pipeline.ml.regime.vol_regime_labels`: the label of session t looks forward at
sessions t+1..t+h and is known only at the close of t+h.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, log_loss
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import ParameterGrid
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pipeline.ml.regime import (
    RegimeInputError,
    RegimeResult,
    default_model,
    risk_scale,
    walk_forward_classifier,
)
from pipeline.research.validation import annualised_sharpe, block_bootstrap_indices

__all__ = [
    "BASELINE_NAME",
    "GaussianMixtureClassifier",
    "ImportanceStability",
    "ModelComparison",
    "OverlayEvidence",
    "TunedClassifier",
    "TuningResult",
    "compare_models",
    "default_candidates",
    "feature_importance_stability",
    "gate_in_force",
    "gaussian_mixture_states",
    "overlay_evidence",
    "overlay_gate",
    "purged_time_series_splits",
    "tune_in_train",
]

#: Row name of the persistence rule in :func:`compare_models` (reserved).
BASELINE_NAME = "persistence"

ModelFactory = Callable[[], Any]


# --- splits -------------------------------------------------------------------------------


def purged_time_series_splits(
    n: int,
    n_splits: int,
    horizon: int,
    embargo: int,
    expanding: bool = True,
    train_len: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Time-ordered walk-forward folds with purging and an embargo (AFML §7.4).

    The ``n`` positions are cut as in ``sklearn.model_selection.TimeSeriesSplit``: test folds of
    ``m = n // (n_splits + 1)`` positions each, the k-th covering ``[s_k, s_k + m)`` with
    ``s_k = n - (n_splits - k) * m`` (k = 0..n_splits-1); the first ``s_0`` positions (which
    absorb the remainder) only ever train. Fold k trains on positions before ``s_k`` only, and

    - **purge (before the fold)**: drops every t whose label window ``[t+1, t+horizon]``
      overlaps the test fold, i.e. keeps ``t <= s_k - horizon - 1``; a forward-looking label
      leaks from training into testing through the sessions *before* the fold;
    - **embargo (after a fold)**: drops the ``embargo`` positions right after each earlier test
      fold ``j < k`` (``[e_j + 1, e_j + embargo]``, ``e_j`` its last position) from fold k's
      training. Features built on trailing windows leak the other way, from a test fold into the
      samples just after it; AFML embargoes those. Walk-forward training never follows its
      own test fold, so here the embargo is a conservative extra that costs ``embargo``
      samples per earlier fold; ``embargo=0`` turns it off;
    - **rolling window** (``expanding=False``): keeps only the ``train_len`` positions ending
      at the purge boundary, ``[s_k - horizon - train_len, s_k - horizon - 1]`` (before the
      embargo drops any).

    Parameters
    ----------
    n : int
        Number of samples (sessions, in time order, one position per session).
    n_splits : int
        Number of test folds (>= 1).
    horizon : int
        Sessions the label looks ahead (>= 0; 0 = a label known at its own session).
    embargo : int
        Positions dropped after each earlier test fold (>= 0).
    expanding : bool, default True
        True: train on all of the past; False: rolling window of ``train_len`` (required).
    train_len : int, optional
        Rolling window length (>= 1); only with ``expanding=False``.

    Returns
    -------
    list of (train_idx, test_idx)
        ``n_splits`` pairs of sorted int64 position arrays, in time order. A train array may be
        empty when the purge leaves nothing (e.g. ``horizon >= s_0``).

    Raises
    ------
    RegimeInputError
        Negative ``horizon``/``embargo``, ``n_splits < 1``, fewer than ``n_splits + 1``
        samples, or ``expanding``/``train_len`` contradicting each other.
    """
    if n_splits < 1 or horizon < 0 or embargo < 0:
        raise RegimeInputError(
            f"purged_time_series_splits: need n_splits >= 1, horizon >= 0, embargo >= 0; got "
            f"{n_splits}, {horizon}, {embargo}"
        )
    if expanding and train_len is not None:
        raise RegimeInputError(
            "purged_time_series_splits: train_len sets a rolling window; pass expanding=False"
        )
    if not expanding and (train_len is None or train_len < 1):
        raise RegimeInputError(
            f"purged_time_series_splits: a rolling window needs train_len >= 1, got {train_len}"
        )
    m = n // (n_splits + 1)
    if m < 1:
        raise RegimeInputError(
            f"purged_time_series_splits: {n} samples cannot make {n_splits} test folds "
            f"(need at least n_splits + 1 = {n_splits + 1}); use fewer splits"
        )
    starts = n - (n_splits - np.arange(n_splits)) * m
    positions = np.arange(n)
    embargoed = np.zeros(n, dtype=bool)
    splits: list[tuple[np.ndarray, np.ndarray]] = []
    for start in starts:  # one iteration per fold, not per sample
        last = start - horizon - 1  # purge: label window t+1..t+h ends before the fold
        first = 0 if expanding else max(0, last - train_len + 1)  # type: ignore[operator]
        keep = (positions >= first) & (positions <= last) & ~embargoed
        splits.append((positions[keep].astype(np.int64), np.arange(start, start + m)))
        embargoed[start + m : start + m + embargo] = True
    return splits


# --- tuning inside the training data --------------------------------------------------------


@dataclass(frozen=True)
class TuningResult:
    """Output of :func:`tune_in_train`.

    Attributes
    ----------
    best_params : dict
        The parameter set with the lowest mean inner score (first in grid order on ties).
    scores : DataFrame
        One row per parameter set (grid order): ``params`` (dict), ``fold_0`` .. ``fold_{k-1}``
        (inner test-fold score; NaN where the inner training fold held one class), ``mean``
        (mean over the scored folds).
    scoring : str
        The score used (lower is better).
    """

    best_params: dict[str, Any]
    scores: pd.DataFrame
    scoring: str


def _score(scoring: str, y: np.ndarray, p: np.ndarray) -> float:
    if scoring == "log_loss":
        # sklearn clips p to float eps, so a hard 0/1 miss costs ~36 nats rather than infinity.
        return float(log_loss(y, p, labels=[0, 1]))
    return float(brier_score_loss(y, p, pos_label=1))


def _positive_proba(model: Any, X: Any) -> np.ndarray:
    classes = list(model.classes_)
    return model.predict_proba(X)[:, classes.index(1)]


def tune_in_train(
    model_factory: Callable[..., Any],
    param_grid: Mapping[str, Any] | list[Mapping[str, Any]],
    X_train: pd.DataFrame | np.ndarray,
    y_train: pd.Series | np.ndarray,
    horizon: int,
    n_inner: int = 3,
    *,
    embargo: int | None = None,
    scoring: str = "log_loss",
) -> TuningResult:
    """Choose hyper-parameters by an inner purged walk-forward split of the training data only.

    Every parameter set of ``param_grid`` (``sklearn.model_selection.ParameterGrid``) is fitted
    as ``model_factory(**params)`` on each inner training fold of
    ``purged_time_series_splits(len(X_train), n_inner, horizon, embargo)`` and scored on its
    inner test fold; the lowest mean score wins. Nothing outside ``X_train``/``y_train`` is
    seen, so a model tuned this way and then tested on later sessions carries no selection
    bias from the test data (AFML §7.4; nested cross-validation).

    Rows are taken as consecutive sessions. If the outer split left holes in them (purge or
    embargo), purging ``horizon`` rows still purges at least ``horizon`` sessions, so the inner
    split stays leak-free.

    Parameters
    ----------
    model_factory : callable
        ``model_factory(**params)`` returns an unfitted classifier with ``fit`` and
        ``predict_proba`` and labels 0/1.
    param_grid : dict of lists, or list of such dicts
        Candidate parameters, as for ``ParameterGrid``.
    X_train : DataFrame or ndarray of shape (n_samples, n_features)
        Training features in time order; no NaN.
    y_train : Series or ndarray of shape (n_samples,)
        0/1 labels, aligned with ``X_train``; no NaN.
    horizon : int
        Sessions the label looks ahead (purge length).
    n_inner : int, default 3
        Inner test folds.
    embargo : int, keyword-only, optional
        Inner embargo; default ``horizon``.
    scoring : {"log_loss", "brier"}, keyword-only
        Probability score, lower is better.

    Returns
    -------
    TuningResult

    Raises
    ------
    RegimeInputError
        Unknown ``scoring``, misaligned or NaN inputs, or no parameter set could be scored
        (every inner training fold held a single class).
    """
    if scoring not in ("log_loss", "brier"):
        raise RegimeInputError(
            f"tune_in_train: scoring must be 'log_loss' or 'brier', got {scoring!r}"
        )
    X = X_train.to_numpy(dtype=float) if isinstance(X_train, pd.DataFrame) else np.asarray(
        X_train, dtype=float
    )
    y = np.asarray(y_train, dtype=float)
    if len(X) != len(y) or not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise RegimeInputError(
            f"tune_in_train: X_train ({len(X)} rows) and y_train ({len(y)}) must align and hold "
            "no NaN; drop incomplete rows first"
        )
    y = y.astype(int)
    # Keep the caller's DataFrame (column names) for the fits: some estimators check them.
    frame = X_train if isinstance(X_train, pd.DataFrame) else None
    embargo = horizon if embargo is None else embargo
    splits = purged_time_series_splits(len(X), n_inner, horizon, embargo)
    grid = list(ParameterGrid(param_grid))
    table = np.full((len(grid), n_inner), np.nan)
    for g, params in enumerate(grid):  # loops over parameter sets and folds, never rows
        for f, (train, test) in enumerate(splits):
            if len(train) == 0 or np.unique(y[train]).size < 2:
                continue
            x_tr = frame.iloc[train] if frame is not None else X[train]
            x_te = frame.iloc[test] if frame is not None else X[test]
            fitted = model_factory(**params).fit(x_tr, y[train])
            table[g, f] = _score(scoring, y[test], _positive_proba(fitted, x_te))
    scored = np.isfinite(table).any(axis=1)
    if not scored.any():
        raise RegimeInputError(
            "tune_in_train: no inner training fold holds both classes; use more training data "
            "or fewer inner folds"
        )
    means = np.full(len(grid), np.nan)
    means[scored] = np.nanmean(table[scored], axis=1)
    best = int(np.nanargmin(means))
    scores = pd.DataFrame(table, columns=[f"fold_{f}" for f in range(n_inner)])
    scores.insert(0, "params", grid)
    scores["mean"] = means
    return TuningResult(best_params=dict(grid[best]), scores=scores, scoring=scoring)


class TunedClassifier(ClassifierMixin, BaseEstimator):
    """A classifier that tunes itself with :func:`tune_in_train` on whatever it is fitted on.

    Passed to :func:`pipeline.ml.regime.walk_forward_classifier` (or :func:`compare_models`), each
    walk-forward fit re-tunes on its own purged training window, so hyper-parameter selection
    never sees the sessions it is then scored on.

    Parameters
    ----------
    model_factory, param_grid, horizon, n_inner, embargo, scoring
        As in :func:`tune_in_train`.

    Attributes
    ----------
    best_params_ : dict
    tuning_ : TuningResult
    estimator_ : the classifier refitted on all the training data with ``best_params_``
    classes_ : ndarray
    """

    def __init__(
        self,
        model_factory: Callable[..., Any],
        param_grid: Any,
        horizon: int,
        n_inner: int = 3,
        embargo: int | None = None,
        scoring: str = "log_loss",
    ) -> None:
        self.model_factory = model_factory
        self.param_grid = param_grid
        self.horizon = horizon
        self.n_inner = n_inner
        self.embargo = embargo
        self.scoring = scoring

    def fit(self, X: Any, y: Any) -> TunedClassifier:
        self.tuning_ = tune_in_train(
            self.model_factory, self.param_grid, X, y, self.horizon, self.n_inner,
            embargo=self.embargo, scoring=self.scoring,
        )
        self.best_params_ = self.tuning_.best_params
        self.estimator_ = self.model_factory(**self.best_params_).fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.estimator_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)


# --- model comparison ---------------------------------------------------------------------


def default_candidates() -> dict[str, ModelFactory]:
    """The default candidates of :func:`compare_models` (name -> zero-argument factory).

    - ``majority``: ``DummyClassifier(strategy="prior")``, the training class share;
    - ``logistic``: :func:`pipeline.ml.regime.default_model` (scaler + logistic regression);
    - ``random_forest``: 50 trees of depth <= 4, leaves of >= 20 sessions, each tree on a half
      sample, ``n_jobs=1`` (shared 2-core machines), ``random_state=0``;
    - ``gradient_boosting``: ``HistGradientBoostingClassifier(max_iter=50, max_depth=3,
      learning_rate=0.1, min_samples_leaf=50, random_state=0)``;
    - ``gaussian_mixture``: :class:`GaussianMixtureClassifier` with 3 states (unsupervised
      states, then each state's training label rate).

    Fixed hyper-parameters: small, regularised models that cannot overfit much on a few
    thousand sessions; tune with :class:`TunedClassifier` if needed.
    """
    return {
        "majority": lambda: DummyClassifier(strategy="prior"),
        "logistic": default_model,
        "random_forest": lambda: RandomForestClassifier(
            n_estimators=50, max_depth=4, min_samples_leaf=20, max_samples=0.5, n_jobs=1,
            random_state=0,
        ),
        "gradient_boosting": lambda: HistGradientBoostingClassifier(
            max_iter=50, max_depth=3, learning_rate=0.1, min_samples_leaf=50, random_state=0
        ),
        "gaussian_mixture": lambda: GaussianMixtureClassifier(n_components=3, random_state=0),
    }


@dataclass(frozen=True)
class ModelComparison:
    """Output of :func:`compare_models`.

    Attributes
    ----------
    table : DataFrame
        Index ``model`` (``persistence`` first, then the candidates in the given order); columns
        ``n_scored``, ``accuracy``, ``balanced_accuracy``, ``log_loss`` (nats), ``brier``, and
        against persistence: ``only_model_right``, ``only_baseline_right`` (discordant pairs on
        all scored sessions), ``n_pairs_tested`` (discordant pairs on the thinned sessions),
        ``mcnemar_p`` (two-sided), ``mcnemar_p_holm`` (Holm-adjusted over the candidates),
        ``beats_baseline`` (higher accuracy and ``mcnemar_p_holm < alpha``).
    probabilities : DataFrame
        Index ``session``, one column per row of ``table``: P(label = 1); persistence's is its
        0/1 prediction. NaN where a model made no prediction.
    scored : Series
        Bool, index ``session``: sessions every row is scored on.
    results : dict
        Candidate name -> its :class:`pipeline.ml.regime.RegimeResult`.
    """

    table: pd.DataFrame
    probabilities: pd.DataFrame
    scored: pd.Series
    results: dict[str, RegimeResult]


def _holm(p: np.ndarray) -> np.ndarray:
    # Holm (1979) step-down: sort ascending, multiply the i-th by (m - i), keep monotone.
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok])]
    m = len(order)
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def compare_models(
    features: pd.DataFrame,
    labels: pd.Series,
    horizon: int,
    retrain_every: int,
    min_train: int,
    models: Mapping[str, ModelFactory] | None = None,
    *,
    embargo: int | None = None,
    baseline: pd.Series | None = None,
    alpha: float = 0.05,
    pair_stride: int | None = None,
    n_threads: int = 1,
) -> ModelComparison:
    """Does machine learning beat the persistence rule? A walk-forward comparison.

    Each candidate runs through :func:`pipeline.ml.regime.walk_forward_classifier` with the same
    schedule (same folds, purge and embargo), and every row is scored on the same sessions:
    those where every candidate predicted and the label and the baseline are known.

    The paired test is McNemar's (exact form): on the sessions where exactly one of candidate
    and baseline is right, under "equally good" the candidate's share of them is
    Binomial(n, 1/2) (``scipy.stats.binomtest``). Labels of neighbouring sessions share most of
    their window, so neighbouring pairs are far from independent; the test therefore uses
    every ``pair_stride``-th scored session (default ``horizon``: non-overlapping label
    windows). Features are still serially correlated, so read p as approximate. p-values are
    Holm-adjusted across the candidates; ``beats_baseline`` is False whenever the evidence is
    not there, which is a result, not a failure.

    Parameters
    ----------
    features : DataFrame
        Index ``session``, one column per feature (e.g. :func:`pipeline.ml.regime_features.market_features`).
    labels : Series
        0/1 float labels (NaN = unknown), same index (e.g. ``vol_regime_labels``).
    horizon, retrain_every, min_train, embargo, baseline
        As in :func:`pipeline.ml.regime.walk_forward_classifier`; ``baseline`` defaults to
        persistence ``labels.shift(horizon)``; pass ``vol_regime_state`` for the state rule.
    models : dict name -> zero-argument factory, optional
        Candidates; default :func:`default_candidates`. The name ``persistence`` is reserved.
    alpha : float, keyword-only, default 0.05
        Significance level of ``beats_baseline``.
    pair_stride : int, keyword-only, optional
        Spacing (sessions) of the pairs in McNemar's test; default ``horizon``.
    n_threads : int, keyword-only, default 1
        OpenMP/BLAS threads for the fits (``threadpoolctl``). One by default: the models are
        small, and gradient boosting's OpenMP threads slowed down ~30-fold (1 s -> 32 s) on
        a 2-core machine whose cores were busy with other work.

    Returns
    -------
    ModelComparison

    Raises
    ------
    RegimeInputError
        As ``walk_forward_classifier``; a candidate named ``persistence``; no candidates;
        ``pair_stride < 1``.
    """
    models = default_candidates() if models is None else dict(models)
    if not models or BASELINE_NAME in models:
        raise RegimeInputError(
            f"compare_models: give at least one candidate, none named {BASELINE_NAME!r} "
            "(that row is the baseline)"
        )
    stride = horizon if pair_stride is None else pair_stride
    if stride < 1:
        raise RegimeInputError(f"compare_models: pair_stride must be >= 1, got {stride}")

    with threadpool_limits(limits=n_threads):
        results = {
            name: walk_forward_classifier(
                features, labels, horizon, retrain_every, min_train, factory(),
                embargo=embargo, baseline=baseline,
            )
            for name, factory in models.items()
        }
    base = next(iter(results.values())).baseline
    probs = pd.DataFrame({BASELINE_NAME: base, **{k: r.probability for k, r in results.items()}})
    probs.index = features.index
    probs.columns.name = "model"
    scored = probs.notna().all(axis=1) & labels.notna()
    scored.name = "scored"

    mask = scored.to_numpy()
    y = labels.to_numpy(dtype=float)[mask].astype(int)
    positions = np.flatnonzero(mask)
    thin = ((positions - positions[0]) % stride == 0) if len(positions) else positions.astype(bool)
    base_hit = (probs[BASELINE_NAME].to_numpy()[mask] > 0.5).astype(int) == y

    rows = []
    for name in probs.columns:  # loop over models; the metrics are vectorised over sessions
        p = probs[name].to_numpy()[mask]
        hit = (p > 0.5).astype(int) == y
        row: dict[str, Any] = {
            "model": name,
            "n_scored": int(mask.sum()),
            "accuracy": float(hit.mean()) if len(y) else math.nan,
            "balanced_accuracy": float(balanced_accuracy_score(y, (p > 0.5).astype(int)))
            if len(np.unique(y)) == 2 else math.nan,
            "log_loss": _score("log_loss", y, p) if len(y) else math.nan,
            "brier": _score("brier", y, p) if len(y) else math.nan,
        }
        if name == BASELINE_NAME:
            row.update(only_model_right=0, only_baseline_right=0, n_pairs_tested=0,
                       mcnemar_p=math.nan)
        else:
            wins, losses = hit & ~base_hit, ~hit & base_hit
            b, c = int(wins[thin].sum()), int(losses[thin].sum())
            row.update(
                only_model_right=int(wins.sum()),
                only_baseline_right=int(losses.sum()),
                n_pairs_tested=b + c,
                mcnemar_p=float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0,
            )
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model")
    table["mcnemar_p_holm"] = _holm(table["mcnemar_p"].to_numpy(dtype=float))
    acc = table["accuracy"]
    table["beats_baseline"] = (
        (acc > acc[BASELINE_NAME]) & (table["mcnemar_p_holm"] < alpha)
    ).astype(bool)
    return ModelComparison(table=table, probabilities=probs, scored=scored, results=results)


# --- feature importance stability ----------------------------------------------------------


@dataclass(frozen=True)
class ImportanceStability:
    """Output of :func:`feature_importance_stability`.

    Attributes
    ----------
    importances : DataFrame
        Index ``fold`` (0..n_splits-1), columns features: mean drop in the score when the
        feature is permuted on that fold's test window (score units, e.g. accuracy); a row of
        NaN where the fold could not be fitted or scored.
    ranks : DataFrame
        Same shape: 1 = most important in the fold (ties averaged).
    rank_correlations : Series
        Index = the later fold of each consecutive pair (1..): Spearman correlation of the two
        folds' importances (NaN if either is missing or constant).
    mean_rank_correlation : float
        Mean of the finite ``rank_correlations`` (NaN if none): near 1 = a stable ranking,
        near 0 = the ranking is noise.
    """

    importances: pd.DataFrame
    ranks: pd.DataFrame
    rank_correlations: pd.Series
    mean_rank_correlation: float


def feature_importance_stability(
    features: pd.DataFrame,
    labels: pd.Series,
    horizon: int,
    n_splits: int = 5,
    model: Any = None,
    *,
    embargo: int | None = None,
    n_repeats: int = 5,
    scoring: str = "accuracy",
    random_state: int = 0,
    n_threads: int = 1,
) -> ImportanceStability:
    """Permutation importance per walk-forward fold and its rank stability across folds.

    Folds come from ``purged_time_series_splits(len(features), n_splits, horizon, embargo)``;
    each fold fits a clone of ``model`` on its training sessions with complete features and a
    label and runs ``sklearn.inspection.permutation_importance`` on its test window (out of
    sample: an importance measured in-sample rewards overfitting, AFML §8.3). A feature that
    matters should rank near the top in every fold; the mean Spearman correlation of
    consecutive folds' importances says how reproducible the whole ranking is.

    Parameters
    ----------
    features : DataFrame
        Index ``session``, columns features; rows with a NaN are skipped.
    labels : Series
        0/1 labels (NaN = unknown), same index.
    horizon : int
        Sessions the label looks ahead (purge).
    n_splits : int, default 5
        Test folds.
    model : classifier, optional
        Default :func:`pipeline.ml.regime.default_model`.
    embargo : int, keyword-only, optional
        Default ``horizon``.
    n_repeats, scoring, random_state : keyword-only
        Passed to ``permutation_importance``.
    n_threads : int, keyword-only, default 1
        OpenMP/BLAS threads for the fits, as in :func:`compare_models`.

    Returns
    -------
    ImportanceStability

    Raises
    ------
    RegimeInputError
        ``labels`` not on the index of ``features``, or invalid split parameters.
    """
    if not labels.index.equals(features.index):
        raise RegimeInputError(
            "feature_importance_stability: labels do not share the session index of features"
        )
    model = default_model() if model is None else model
    embargo = horizon if embargo is None else embargo
    ok = (features.notna().all(axis=1) & labels.notna()).to_numpy()
    y = labels.to_numpy(dtype=float)
    names = list(features.columns)
    table = np.full((n_splits, len(names)), np.nan)
    for f, (train, test) in enumerate(
        purged_time_series_splits(len(features), n_splits, horizon, embargo)
    ):
        train, test = train[ok[train]], test[ok[test]]
        if len(test) == 0 or len(train) == 0 or np.unique(y[train]).size < 2:
            continue
        with threadpool_limits(limits=n_threads):
            fitted = clone(model).fit(features.iloc[train], y[train].astype(int))
            result = permutation_importance(
                fitted, features.iloc[test], y[test].astype(int),
                scoring=scoring, n_repeats=n_repeats, random_state=random_state, n_jobs=1,
            )
        table[f] = result.importances_mean
    importances = pd.DataFrame(
        table, index=pd.RangeIndex(n_splits, name="fold"), columns=pd.Index(names, name="feature")
    )
    ranks = importances.rank(axis=1, ascending=False, method="average")
    corr = np.full(max(n_splits - 1, 0), np.nan)
    for f in range(1, n_splits):
        a, b = table[f - 1], table[f]
        if np.isfinite(a).all() and np.isfinite(b).all() and np.ptp(a) > 0 and np.ptp(b) > 0:
            corr[f - 1] = spearmanr(a, b).statistic
    rank_correlations = pd.Series(
        corr, index=pd.RangeIndex(1, n_splits, name="fold"), name="spearman"
    )
    finite = corr[np.isfinite(corr)]
    return ImportanceStability(
        importances=importances,
        ranks=ranks,
        rank_correlations=rank_correlations,
        mean_rank_correlation=float(finite.mean()) if len(finite) else math.nan,
    )


# --- unsupervised states (Gaussian mixture) ---------------------------------------------------


class GaussianMixtureClassifier(ClassifierMixin, BaseEstimator):
    """A regime classifier through unsupervised states: Gaussian mixture, then label rates.

    ``fit`` standardises the training features, fits ``sklearn.mixture.GaussianMixture`` on them
    (labels unused), and estimates each state's label rate from the training posteriors
    ``w_{t,k}``: ``rate_k = (sum_t w_{t,k} y_t + 1) / (sum_t w_{t,k} + 2)`` (Laplace smoothing,
    so an empty state predicts 1/2). ``predict_proba`` is ``sum_k w_{x,k} rate_k``. Fitted on a
    training fold only, like every candidate of :func:`compare_models`.

    Parameters
    ----------
    n_components : int, default 3
        Number of states.
    covariance_type : str, default "full"
    random_state : int, default 0
    """

    def __init__(self, n_components: int = 3, covariance_type: str = "full", random_state: int = 0) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> GaussianMixtureClassifier:
        y = np.asarray(y, dtype=float)
        self.scaler_ = StandardScaler().fit(X)
        self.mixture_ = GaussianMixture(
            n_components=self.n_components, covariance_type=self.covariance_type,
            random_state=self.random_state, reg_covar=1e-4,
        ).fit(self.scaler_.transform(X))
        post = self.mixture_.predict_proba(self.scaler_.transform(X))
        self.rate_ = (post.T @ y + 1.0) / (post.sum(axis=0) + 2.0)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.mixture_.predict_proba(self.scaler_.transform(X)) @ self.rate_
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


def gaussian_mixture_states(
    features: pd.DataFrame,
    n_components: int,
    retrain_every: int,
    min_train: int,
    order_by: str,
    *,
    random_state: int = 0,
) -> pd.DataFrame:
    """Unsupervised regime labels: walk-forward Gaussian-mixture states, ordered calm to turbulent.

    A fit at session position ``T = min_train - 1 + k * retrain_every`` standardises and fits
    ``GaussianMixture(n_components)`` on the complete feature rows of sessions ``<= T`` (features
    are known at their close, and no label is used, so nothing needs purging) and labels sessions
    ``T+1 .. T+retrain_every`` with their most probable state. States are renumbered by the
    training mean of ``order_by`` (ascending; e.g. ``port_vol21``: state 0 is the calmest), so
    that state numbers mean the same thing from one refit to the next.

    Parameters
    ----------
    features : DataFrame
        Index ``session``, columns features; rows with a NaN get no state.
    n_components : int
        Number of states (>= 2).
    retrain_every, min_train : int
        Walk-forward schedule in sessions (``min_train >= n_components * 10``).
    order_by : str
        The feature that orders the states.
    random_state : int, keyword-only, default 0

    Returns
    -------
    DataFrame
        Index ``session``; ``state`` (float 0..K-1, NaN before the first fit or with missing
        features) and ``p_state_0`` .. ``p_state_{K-1}`` (posterior probabilities).

    Raises
    ------
    RegimeInputError
        ``order_by`` not a feature, ``n_components < 2`` or an invalid schedule.
    """
    if order_by not in features.columns:
        raise RegimeInputError(f"gaussian_mixture_states: order_by {order_by!r} is not a feature column")
    if n_components < 2 or retrain_every < 1 or min_train < n_components * 10:
        raise RegimeInputError(
            "gaussian_mixture_states: need n_components >= 2, retrain_every >= 1 and "
            f"min_train >= 10 * n_components; got {n_components}, {retrain_every}, {min_train}"
        )
    x = features.to_numpy(dtype=float)
    ok = np.isfinite(x).all(axis=1)
    n = len(x)
    post = np.full((n, n_components), np.nan)
    col = list(features.columns).index(order_by)
    for fit_pos in range(min_train - 1, n - 1, retrain_every):  # one iteration per fit
        train = np.flatnonzero(ok[: fit_pos + 1])
        test = fit_pos + 1 + np.flatnonzero(ok[fit_pos + 1 : fit_pos + 1 + retrain_every])
        if len(train) < n_components * 10 or len(test) == 0:
            continue
        scaler = StandardScaler().fit(x[train])
        gm = GaussianMixture(n_components=n_components, random_state=random_state, reg_covar=1e-4)
        gm.fit(scaler.transform(x[train]))
        w = gm.predict_proba(scaler.transform(x[train]))
        order = np.argsort(w.T @ x[train, col] / np.maximum(w.sum(axis=0), 1e-12))
        post[test] = gm.predict_proba(scaler.transform(x[test]))[:, order]
    has = np.isfinite(post).all(axis=1)
    state = np.where(has, np.argmax(np.where(has[:, None], post, 0.0), axis=1), np.nan)
    out = pd.DataFrame(post, index=features.index, columns=[f"p_state_{k}" for k in range(n_components)])
    out.insert(0, "state", state)
    return out


# --- trading use: the regime risk scale against the simple rule --------------------------------


@dataclass(frozen=True)
class OverlayEvidence:
    """Output of :func:`overlay_evidence`.

    Attributes
    ----------
    n_sessions : int
        Out-of-sample sessions compared (a scale from a walk-forward prediction and a return).
    sharpe_simple, sharpe_scaled : float
        Annualised Sharpe ratios (sqrt 256) of the simple-rule and the regime-scaled returns.
    difference : float
        ``sharpe_scaled - sharpe_simple``.
    ci_lower, ci_upper : float
        Percentile interval of the difference from a paired stationary block bootstrap (the
        same resampled sessions for both series).
    improves : bool
        ``ci_lower > 0``: the scaled system's Sharpe is higher with the stated confidence.
    """

    n_sessions: int
    sharpe_simple: float
    sharpe_scaled: float
    difference: float
    ci_lower: float
    ci_upper: float
    improves: bool


def _scaled_pairs(simple_returns: pd.Series, probability: pd.Series, high_vol_scale: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    # Scale known at the close of t-1 is applied to the position that earns r_t.
    scale_prev = risk_scale(probability, high_vol_scale).shift(1).where(probability.shift(1).notna())
    ok = (scale_prev.notna() & simple_returns.notna()).to_numpy()
    r = simple_returns.to_numpy(dtype=float)[ok]
    return r, r * scale_prev.to_numpy(dtype=float)[ok]


def overlay_evidence(
    simple_returns: pd.Series,
    probability: pd.Series,
    high_vol_scale: float,
    *,
    n_boot: int = 1000,
    block: int = 20,
    ci: float = 0.90,
    seed: int = 0,
) -> OverlayEvidence:
    """Out-of-sample Sharpe difference of the regime-scaled system against the simple rule.

    The simple rule earns ``r_t`` (:func:`pipeline.ml.regime_features.simple_rule_returns`); the
    regime-scaled system earns ``scale_{t-1} r_t`` with ``scale = risk_scale(p, high_vol_scale)``
    from the walk-forward (out-of-sample) probability known at the close of t-1. Only sessions
    with such a probability are compared. The interval resamples sessions with
    ``pipeline.research.validation.block_bootstrap_indices`` (stationary, mean block ``block``), the same
    indices for both series, so their correlation is kept.

    Parameters
    ----------
    simple_returns : Series
        Daily simple-rule returns, index ``session``.
    probability : Series
        Out-of-sample P(high-vol regime), same index; NaN = no prediction.
    high_vol_scale : float
        Scale at p = 1 (``RegimeConfig.high_vol_scale``).
    n_boot, block, ci, seed : keyword-only
        Bootstrap resamples, mean block length (sessions), interval coverage, seed.

    Returns
    -------
    OverlayEvidence
        All NaN and ``improves=False`` with fewer than ``2 * block`` sessions.

    Raises
    ------
    RegimeInputError
        ``probability`` not on the index of ``simple_returns``.
    """
    if not probability.index.equals(simple_returns.index):
        raise RegimeInputError("overlay_evidence: probability does not share the session index of the returns")
    r, scaled = _scaled_pairs(simple_returns, probability, high_vol_scale)
    n = len(r)
    if n < 2 * block:
        return OverlayEvidence(n, math.nan, math.nan, math.nan, math.nan, math.nan, False)
    s_simple, s_scaled = float(annualised_sharpe(r)), float(annualised_sharpe(scaled))
    idx = block_bootstrap_indices(n, n_boot, block, np.random.default_rng(seed))
    diffs = annualised_sharpe(scaled[idx]) - annualised_sharpe(r[idx])
    lower, upper = np.nanquantile(diffs, [(1 - ci) / 2, (1 + ci) / 2])
    return OverlayEvidence(n, s_simple, s_scaled, s_scaled - s_simple, float(lower), float(upper),
                           bool(lower > 0))


def overlay_gate(
    simple_returns: pd.Series,
    probability: pd.Series,
    high_vol_scale: float,
    decision_sessions: pd.DatetimeIndex,
    *,
    min_sessions: int = 252,
    **bootstrap: Any,
) -> pd.DataFrame:
    """Point-in-time on/off switch of the risk scale: on only while the evidence so far says so.

    At each decision session D (e.g. the walk-forward refit sessions) :func:`overlay_evidence`
    is computed on the sessions ``<= D`` only; the switch is on from the session after D until
    the next decision if the evidence had at least ``min_sessions`` sessions and ``improves``.
    A backtest of the gated system therefore never uses evidence from its future.

    Parameters
    ----------
    simple_returns, probability, high_vol_scale
        As in :func:`overlay_evidence`.
    decision_sessions : DatetimeIndex
        Sessions at which the switch is re-decided (ascending, in the index).
    min_sessions : int, keyword-only, default 252
        Out-of-sample sessions needed before the switch can turn on.
    **bootstrap
        ``n_boot``, ``block``, ``ci``, ``seed`` for :func:`overlay_evidence`.

    Returns
    -------
    DataFrame
        Index = ``decision_sessions``; columns ``n_sessions``, ``difference``, ``ci_lower``,
        ``ci_upper``, ``on`` (bool).
    """
    rows = []
    for d in decision_sessions:  # one bootstrap per decision (yearly), never per session
        ev = overlay_evidence(simple_returns.loc[:d], probability.loc[:d], high_vol_scale, **bootstrap)
        rows.append({"n_sessions": ev.n_sessions, "difference": ev.difference, "ci_lower": ev.ci_lower,
                     "ci_upper": ev.ci_upper, "on": bool(ev.improves and ev.n_sessions >= min_sessions)})
    return pd.DataFrame(rows, index=pd.DatetimeIndex(decision_sessions, name="decided_at"),
                        columns=["n_sessions", "difference", "ci_lower", "ci_upper", "on"])


def gate_in_force(gate: pd.DataFrame, index: pd.DatetimeIndex) -> pd.Series:
    """The switch in force at each session: the last decision made strictly before it.

    Parameters
    ----------
    gate : DataFrame
        Output of :func:`overlay_gate`.
    index : DatetimeIndex
        Sessions.

    Returns
    -------
    Series
        Bool ``gate_on``, index ``index``; False before the first decision.
    """
    on = gate["on"].astype(float)
    on.index = on.index + pd.Timedelta(microseconds=1)  # a decision at D applies from after D
    out = on.reindex(on.index.union(index)).ffill().reindex(index).fillna(0.0).astype(bool)
    out.name = "gate_on"
    return out
