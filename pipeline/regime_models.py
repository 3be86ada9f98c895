"""Regime classifiers judged against simple rules: purged splits, in-train tuning, comparison.

The regime model of :mod:`pipeline.regime` is only worth using if it beats a rule a trader would
write on a napkin. This module supplies the evidence, with the leakage guards of López de Prado,
*Advances in Financial Machine Learning* (AFML), ch. 7:

* :func:`purged_time_series_splits`: walk-forward folds whose training samples never have a
  label window reaching into the test fold (purge) and skip the sessions just after earlier test
  folds (embargo);
* :func:`tune_in_train`: hyper-parameters chosen by an inner purged split of the training data
  alone (:class:`TunedClassifier` wraps it so that every walk-forward fit tunes afresh);
* :func:`compare_models`: several candidates through
  :func:`pipeline.regime.walk_forward_classifier`, scored on the same out-of-sample sessions
  against the persistence rule, with McNemar's paired test;
* :func:`feature_importance_stability`: permutation importance on each fold's test window and
  how stable its ranking is from fold to fold.

Labels follow :func:`pipeline.regime.vol_regime_labels`: the label of session t looks forward at
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
from sklearn.model_selection import ParameterGrid
from threadpoolctl import threadpool_limits

from pipeline.regime import (
    RegimeInputError,
    RegimeResult,
    default_model,
    walk_forward_classifier,
)

__all__ = [
    "BASELINE_NAME",
    "ImportanceStability",
    "ModelComparison",
    "TunedClassifier",
    "TuningResult",
    "compare_models",
    "default_candidates",
    "feature_importance_stability",
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

    Passed to :func:`pipeline.regime.walk_forward_classifier` (or :func:`compare_models`), each
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
    - ``logistic``: :func:`pipeline.regime.default_model` (scaler + logistic regression);
    - ``random_forest``: 100 trees of depth <= 4, ``n_jobs=1`` (shared 2-core machines),
      ``random_state=0``;
    - ``gradient_boosting``: ``HistGradientBoostingClassifier(max_iter=100, random_state=0)``.

    Fixed hyper-parameters: small, regularised models that cannot overfit much on a few
    thousand sessions; tune with :class:`TunedClassifier` if needed.
    """
    return {
        "majority": lambda: DummyClassifier(strategy="prior"),
        "logistic": default_model,
        "random_forest": lambda: RandomForestClassifier(
            n_estimators=100, max_depth=4, n_jobs=1, random_state=0
        ),
        "gradient_boosting": lambda: HistGradientBoostingClassifier(
            max_iter=100, random_state=0
        ),
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
        Candidate name -> its :class:`pipeline.regime.RegimeResult`.
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

    Each candidate runs through :func:`pipeline.regime.walk_forward_classifier` with the same
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
        Index ``session``, one column per feature (e.g. :func:`pipeline.regime.regime_features`).
    labels : Series
        0/1 float labels (NaN = unknown), same index (e.g. ``vol_regime_labels``).
    horizon, retrain_every, min_train, embargo, baseline
        As in :func:`pipeline.regime.walk_forward_classifier`; ``baseline`` defaults to
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
        Default :func:`pipeline.regime.default_model`.
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
