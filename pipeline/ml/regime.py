"""A market-regime classifier (scikit-learn), trained walk-forward with purging and an embargo.

The question it answers at the close of session t: "will the next ``horizon`` sessions be a
high-volatility regime?" The regime is measured on one series, the equal-weight portfolio of
vol-normalised daily returns

    z_{i,t} = (P_{i,t} - P_{i,t-1}) / sigma_{i,t-1},      q_t = mean_i z_{i,t}

where ``sigma`` is the daily price-unit volatility of ``pipeline.signals.volatility`` (carver.md §2.1)
known at the previous close, so each ``z`` has roughly unit daily vol and ``q``'s vol rises when
instruments move together or move more than their vol estimates expected.

Evidence a sceptic can check:

* features and labels use only data up to their session (labels: up to ``t + horizon``, and are
  used for training only once that session has closed);
* each fit at session T trains only on samples whose label window ended at least ``embargo``
  sessions before T (purging, López de Prado, *Advances in Financial Machine Learning*, ch. 7),
  and predicts only the sessions after T up to the next refit (out-of-sample);
* accuracy is reported next to a naive persistence baseline on the same sessions.

Hyper-parameters are fixed (no tuning), so there is no selection bias to correct for.

The features live in :mod:`pipeline.ml.regime_features`; this module holds the labels (volatility
state, trend vs range), the walk-forward classifier and the risk scale. ``docs/ml.md`` has the
evidence on the bundled sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "RegimeInputError",
    "RegimeResult",
    "default_model",
    "normalised_portfolio_returns",
    "risk_scale",
    "trend_regime_labels",
    "trend_regime_state",
    "vol_regime_labels",
    "vol_regime_state",
    "walk_forward_classifier",
]

class RegimeInputError(ValueError):
    """Inputs of the regime model are misaligned or its parameters are inconsistent."""


@dataclass(frozen=True)
class RegimeResult:
    """Out-of-sample output of :func:`walk_forward_classifier`.

    Attributes
    ----------
    probability : Series
        P(high-vol regime over the next ``horizon`` sessions), index ``session``; NaN before
        the first fit and where a session's features are incomplete.
    predicted : Series
        1.0 where ``probability > 0.5``, 0.0 otherwise, NaN where ``probability`` is NaN.
    baseline : Series
        The persistence baseline's 0/1 prediction for each session (NaN where unknown).
    oos_accuracy : float
        Share of scored sessions (prediction, baseline and label all known) predicted right.
    baseline_accuracy : float
        The baseline's share on the same sessions.
    n_scored : int
        Number of scored sessions.
    n_folds : int
        Number of fits.
    folds : DataFrame
        One row per fit: ``fit_session`` (T), ``train_start``, ``train_end`` (last training
        sample), ``train_label_end`` (session at which ``train_end``'s label became known),
        ``test_start``, ``test_end``, ``n_train``, ``n_test`` (sessions predicted),
        ``n_scored``, ``accuracy``, ``baseline_accuracy``.
    coefficients : Series or None
        Coefficients (of standardised features for the default model) or feature
        importances of the last model, indexed by feature; None if the model exposes neither.
    last_model : object or None
        The last fitted estimator (None if every fit was degenerate).
    """

    probability: pd.Series
    predicted: pd.Series
    baseline: pd.Series
    oos_accuracy: float
    baseline_accuracy: float
    n_scored: int
    n_folds: int
    folds: pd.DataFrame
    coefficients: pd.Series | None
    last_model: Any


def default_model() -> Pipeline:
    """The default classifier: ``StandardScaler`` then ``LogisticRegression(C=1.0)``.

    Fixed hyper-parameters (scikit-learn defaults, ``max_iter=1000`` for convergence); no tuning.
    """
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def _check_same_index(name: str, frame: pd.DataFrame | pd.Series, index: pd.Index) -> None:
    if not frame.index.equals(index):
        raise RegimeInputError(
            f"regime: {name} does not share the session index of prices "
            f"({len(frame.index)} vs {len(index)} sessions); reindex it on prices.index"
        )


def normalised_portfolio_returns(prices: pd.DataFrame, vol: pd.DataFrame) -> pd.Series:
    """Daily return of the equal-weight portfolio of vol-normalised returns.

    ``q_t = mean_i (P_{i,t} - P_{i,t-1}) / sigma_{i,t-1}`` over the instruments with both
    values; the divisor is the vol known at the previous close, so ``q_t`` is known at t.

    Parameters
    ----------
    prices : DataFrame
        Close prices (price points), index ``session``, columns instruments.
    vol : DataFrame
        Daily price-unit volatility, same index; columns matched by name (extra ignored).
        Non-positive vol is treated as missing.

    Returns
    -------
    Series
        ``q`` in vol units per session, index ``session``; NaN where no instrument has a
        return (e.g. the first session).

    Raises
    ------
    RegimeInputError
        ``vol`` does not share the index of ``prices``.
    """
    _check_same_index("vol", vol, prices.index)
    sigma = vol.reindex(columns=prices.columns)
    z = prices.diff() / sigma.where(sigma > 0).shift(1)
    q = z.mean(axis=1)
    q.name = "q"
    return q


def _realised_vol_and_median(
    prices: pd.DataFrame, vol: pd.DataFrame, horizon: int, min_windows: int
) -> tuple[pd.Series, pd.Series]:
    if horizon < 2:
        raise RegimeInputError(f"regime: horizon must be >= 2 sessions for a vol, got {horizon}")
    q = normalised_portfolio_returns(prices, vol)
    # realised[t] covers q_{t-h+1..t}: the window completed at t.
    realised = q.rolling(horizon, min_periods=horizon).std()
    median = realised.expanding(min_periods=min_windows).median()
    return realised, median


def vol_regime_labels(
    prices: pd.DataFrame, vol: pd.DataFrame, horizon: int, *, min_windows: int = 63
) -> pd.Series:
    """Label each session 1 if the next ``horizon`` sessions are a high-volatility regime.

    ``label_t = 1`` if ``std(q_{t+1..t+h}, ddof=1) > median_t``, else 0, where ``q`` is the
    equal-weight vol-normalised portfolio return (:func:`normalised_portfolio_returns`) and
    ``median_t`` is the expanding median of the realised vols of all windows completed by t
    (``std(q_{s-h+1..s})`` for s <= t), so the threshold uses no future data.

    **Label t is known only at the close of t + h.** A walk-forward fit at T may train on it
    only if ``t + h <= T`` (see :func:`walk_forward_classifier`).

    Parameters
    ----------
    prices, vol : DataFrame
        As in :func:`normalised_portfolio_returns`.
    horizon : int
        h, sessions ahead (>= 2).
    min_windows : int, keyword-only, default 63
        Completed windows needed before the median (and so any label) is defined.

    Returns
    -------
    Series
        Float 0.0/1.0 named ``high_vol``, index ``session``; NaN where the future window is
        incomplete (the last h sessions, or a window with a missing ``q``) or the median is
        not yet defined.

    Raises
    ------
    RegimeInputError
        ``horizon < 2`` or misaligned inputs.
    """
    realised, median = _realised_vol_and_median(prices, vol, horizon, min_windows)
    future = realised.shift(-horizon)
    label = (future > median).astype(float).where(future.notna() & median.notna())
    label.name = "high_vol"
    return label


def vol_regime_state(
    prices: pd.DataFrame, vol: pd.DataFrame, horizon: int, *, min_windows: int = 63
) -> pd.Series:
    """The regime of the last completed window: the naive persistence forecast.

    ``state_t = 1`` if ``std(q_{t-h+1..t}, ddof=1) > median_t`` (the same expanding median as
    :func:`vol_regime_labels`), else 0. Known at the close of t; predicting ``label_t =
    state_t`` ("the next h sessions look like the last h") is the baseline the classifier must
    beat.

    Parameters
    ----------
    prices, vol, horizon, min_windows
        As in :func:`vol_regime_labels`.

    Returns
    -------
    Series
        Float 0.0/1.0 named ``state``, index ``session``; NaN until the window and the median
        exist.
    """
    realised, median = _realised_vol_and_median(prices, vol, horizon, min_windows)
    state = (realised > median).astype(float).where(realised.notna() & median.notna())
    state.name = "state"
    return state


def trend_regime_labels(simple_returns: pd.Series, horizon: int) -> pd.Series:
    """Label each session 1 if the next ``horizon`` sessions are a trending regime, 0 if ranging.

    ``label_t = 1`` if ``sum(r_{t+1..t+h}) > 0``, else 0, where ``r`` is the daily return of the
    simple-rule trend-following system (:func:`pipeline.ml.regime_features.simple_rule_returns`):
    a regime is "trending" when trend following made money over it, "ranging" when it lost.
    **Label t is known only at the close of t + h** (purge as for :func:`vol_regime_labels`).

    Parameters
    ----------
    simple_returns : Series
        Daily simple-rule returns (daily vol units), index ``session``.
    horizon : int
        h, sessions ahead (>= 1).

    Returns
    -------
    Series
        Float 0.0/1.0 named ``trending``, same index; NaN where any of ``r_{t+1..t+h}`` is
        missing (including the last h sessions).

    Raises
    ------
    RegimeInputError
        ``horizon < 1``.
    """
    if horizon < 1:
        raise RegimeInputError(f"trend_regime_labels: horizon must be >= 1, got {horizon}")
    past = simple_returns.rolling(horizon, min_periods=horizon).sum()
    future = past.shift(-horizon)
    label = (future > 0).astype(float).where(future.notna())
    label.name = "trending"
    return label


def trend_regime_state(simple_returns: pd.Series, horizon: int) -> pd.Series:
    """Persistence baseline of :func:`trend_regime_labels`: 1 if ``sum(r_{t-h+1..t}) > 0``.

    Known at the close of t ("the next h sessions trend if the last h did").

    Parameters
    ----------
    simple_returns, horizon
        As in :func:`trend_regime_labels`.

    Returns
    -------
    Series
        Float 0.0/1.0 named ``state``; NaN until h returns exist.
    """
    if horizon < 1:
        raise RegimeInputError(f"trend_regime_state: horizon must be >= 1, got {horizon}")
    past = simple_returns.rolling(horizon, min_periods=horizon).sum()
    state = (past > 0).astype(float).where(past.notna())
    state.name = "state"
    return state


def walk_forward_classifier(
    features: pd.DataFrame,
    labels: pd.Series,
    horizon: int,
    retrain_every: int,
    min_train: int,
    model: Any = None,
    *,
    embargo: int | None = None,
    baseline: pd.Series | None = None,
) -> RegimeResult:
    """Fit a classifier walk-forward and predict P(high-vol regime) out-of-sample.

    Fits happen at the close of session positions ``T = min_train - 1 + k * retrain_every``
    (k = 0, 1, ...; the first after ``min_train`` sessions of history). The fit at T

    - trains on samples t with ``t + horizon + embargo <= T``, complete features and a label:
      purging keeps only labels known at T (``t + horizon <= T``, since label t looks at
      t+1..t+h), and the embargo drops a further ``embargo`` sessions so that serially
      correlated features next to the test period cannot leak into training;
    - predicts sessions ``T+1 .. T+retrain_every`` (the next fit takes over after that).

    Parameters
    ----------
    features : DataFrame
        Index ``session``, one column per feature (e.g.
        :func:`pipeline.ml.regime_features.market_features`); rows with a
        NaN are neither trained on nor predicted.
    labels : Series
        0/1 (float, NaN = unknown) aligned to ``features`` (e.g. :func:`vol_regime_labels`).
    horizon : int
        h, sessions the label looks ahead (>= 1).
    retrain_every : int
        Sessions between fits (>= 1).
    min_train : int
        Sessions of history before the first fit; must exceed ``horizon + embargo``.
    model : classifier, optional
        Any scikit-learn-style classifier with ``fit`` and ``predict_proba``; cloned afresh for
        every fit. Default :func:`default_model`.
    embargo : int, keyword-only, optional
        Extra sessions dropped between training and the fit session; default ``horizon``.
    baseline : Series, keyword-only, optional
        The 0/1 prediction of a baseline for each session, aligned to ``features``; default
        the last label known at t, ``labels.shift(horizon)`` (persistence). Pass
        :func:`vol_regime_state` for the persistence baseline on the same median.

    Returns
    -------
    RegimeResult
        A fit whose training labels hold a single class predicts that class's share
        (0 or 1) without a model; a fit with no training sample is skipped.

    Raises
    ------
    RegimeInputError
        Misaligned ``labels``/``baseline``, non-positive ``horizon``/``retrain_every``, or
        ``min_train <= horizon + embargo`` (the first fit would have no sample).
    """
    embargo = horizon if embargo is None else embargo
    if horizon < 1 or retrain_every < 1 or embargo < 0:
        raise RegimeInputError(
            f"regime: need horizon >= 1, retrain_every >= 1 and embargo >= 0, got "
            f"{horizon}, {retrain_every}, {embargo}"
        )
    if min_train <= horizon + embargo:
        raise RegimeInputError(
            f"regime: min_train ({min_train}) must exceed horizon + embargo "
            f"({horizon} + {embargo}) or the first fit has nothing to train on"
        )
    index = features.index
    if not labels.index.equals(index):
        raise RegimeInputError("regime: labels do not share the session index of features")
    if baseline is None:
        baseline = labels.shift(horizon)
    elif not baseline.index.equals(index):
        raise RegimeInputError("regime: baseline does not share the session index of features")
    model = default_model() if model is None else model

    n = len(index)
    x_ok = features.notna().all(axis=1).to_numpy()
    y = labels.to_numpy(dtype=float)
    y_ok = np.isfinite(y)
    prob = np.full(n, np.nan)
    rows: list[dict[str, Any]] = []
    test_starts: list[int] = []
    last_model = None

    # One fit per refit date: the loop is over folds, not rows.
    for fit_pos in range(min_train - 1, n - 1, retrain_every):
        last_train = fit_pos - horizon - embargo
        train = np.flatnonzero(x_ok[: last_train + 1] & y_ok[: last_train + 1])
        test_end = min(fit_pos + retrain_every, n - 1)
        test = fit_pos + 1 + np.flatnonzero(x_ok[fit_pos + 1 : test_end + 1])
        if len(train) == 0:
            continue
        y_train = y[train].astype(int)
        if len(test):
            if np.unique(y_train).size < 2:
                prob[test] = float(y_train[0])
            else:
                fitted = clone(model).fit(features.iloc[train], y_train)
                positive = list(fitted.classes_).index(1)
                prob[test] = fitted.predict_proba(features.iloc[test])[:, positive]
                last_model = fitted
        test_starts.append(fit_pos + 1)
        rows.append(
            {
                "fit_session": index[fit_pos],
                "train_start": index[train[0]],
                "train_end": index[train[-1]],
                "train_label_end": index[train[-1] + horizon],
                "test_start": index[fit_pos + 1],
                "test_end": index[test_end],
                "n_train": len(train),
                "n_test": len(test),
            }
        )

    probability = pd.Series(prob, index=index, name="p_high_vol")
    predicted = (probability > 0.5).astype(float).where(probability.notna())
    predicted.name = "predicted"
    base = baseline.astype(float)
    scored = probability.notna() & labels.notna() & base.notna()
    hit = predicted == labels
    base_hit = base == labels

    folds = pd.DataFrame(
        rows,
        columns=[
            "fit_session", "train_start", "train_end", "train_label_end",
            "test_start", "test_end", "n_train", "n_test",
        ],
    )
    # Per-fold scores: each scored session belongs to the fold whose test window holds it.
    fold_of = np.searchsorted(np.asarray(test_starts), np.arange(n), side="right") - 1
    per_fold = pd.DataFrame(
        {"fold": fold_of, "hit": hit, "base_hit": base_hit}, index=index
    )[scored.to_numpy()]
    grouped = per_fold.groupby("fold")
    folds["n_scored"] = grouped.size().reindex(folds.index, fill_value=0).astype(int)
    folds["accuracy"] = grouped["hit"].mean().reindex(folds.index)
    folds["baseline_accuracy"] = grouped["base_hit"].mean().reindex(folds.index)

    n_scored = int(scored.sum())
    return RegimeResult(
        probability=probability,
        predicted=predicted,
        baseline=base.rename("baseline"),
        oos_accuracy=float(hit[scored].mean()) if n_scored else math.nan,
        baseline_accuracy=float(base_hit[scored].mean()) if n_scored else math.nan,
        n_scored=n_scored,
        n_folds=len(folds),
        folds=folds,
        coefficients=_coefficients(last_model, list(features.columns)),
        last_model=last_model,
    )


def _coefficients(model: Any, names: list[str]) -> pd.Series | None:
    if model is None:
        return None
    final = model[-1] if isinstance(model, Pipeline) else model
    if hasattr(final, "coef_"):
        values = np.asarray(final.coef_, dtype=float).ravel()
    elif hasattr(final, "feature_importances_"):
        values = np.asarray(final.feature_importances_, dtype=float)
    else:
        return None
    if len(values) != len(names):
        return None
    return pd.Series(values, index=pd.Index(names, name="feature"), name="coefficient")


def risk_scale(probability: pd.Series, high_vol_scale: float = 0.5) -> pd.Series:
    """Position multiplier from the regime probability.

    ``scale_t = 1 - (1 - high_vol_scale) * p_t``: 1 when the high-vol regime is impossible,
    ``high_vol_scale`` when certain, linear in between; 1.0 where ``p`` is NaN (no model yet,
    so no change to Carver's positions).

    Parameters
    ----------
    probability : Series
        P(high-vol regime) in [0, 1], index ``session``.
    high_vol_scale : float, default 0.5
        Scale at p = 1, in (0, 1] (``RegimeConfig.high_vol_scale``).

    Returns
    -------
    Series
        Multipliers in ``[high_vol_scale, 1]``, same index, named ``risk_scale``.

    Raises
    ------
    RegimeInputError
        ``high_vol_scale`` outside (0, 1] or a probability outside [0, 1].
    """
    if not 0 < high_vol_scale <= 1:
        raise RegimeInputError(
            f"risk_scale: high_vol_scale must be in (0, 1], got {high_vol_scale}"
        )
    p = probability.astype(float)
    bad = p[(p < 0) | (p > 1)]
    if len(bad):
        raise RegimeInputError(
            f"risk_scale: probabilities must be in [0, 1]; {len(bad)} are not, "
            f"first {bad.iloc[0]} on {bad.index[0]}"
        )
    scale = (1.0 - (1.0 - high_vol_scale) * p).fillna(1.0)
    scale.name = "risk_scale"
    return scale
