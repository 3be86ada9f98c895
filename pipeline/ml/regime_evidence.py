"""The regime model's evidence, computed once per walk-forward refit and reproducible from its key.

:func:`regime_evidence` puts together, on the data known at the last refit session ``T``:

* the features (:func:`pipeline.ml.regime_features.market_features`) and the two supervised labels,
  volatility state (:func:`pipeline.ml.regime.vol_regime_labels`) and trend vs range
  (:func:`pipeline.ml.regime.trend_regime_labels`), both with horizon h;
* the walk-forward comparison of the candidates against persistence
  (:func:`pipeline.ml.regime_models.compare_models`) for the vol label (which drives the risk
  scale) and, with the cheap candidates, for the trend label;
* the calibration of the production model (logistic regression; fixed in advance, not picked as
  the best of the comparison, so its scores carry no selection bias);
* permutation-importance stability across five purged folds;
* the point-in-time gate of the risk scale (:func:`pipeline.ml.regime_models.overlay_gate`),
  decided at every refit from the out-of-sample Sharpe difference against the simple rule;
* the production model refitted at ``T`` on every sample whose label is known, purged and
  embargoed, to be stored as a registry version with ``data_end = T``.

Between two refits nothing of this changes, so a daily run reuses the version whose
``evaluation_key`` (:func:`evaluation_key`) matches and only predicts its own session.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from pipeline.ml.model_registry import data_hash
from pipeline.ml.regime import (
    default_model,
    risk_scale,
    trend_regime_labels,
    trend_regime_state,
    vol_regime_labels,
    vol_regime_state,
)
from pipeline.ml.regime_features import market_features, simple_rule_returns
from pipeline.ml.regime_models import (
    compare_models,
    default_candidates,
    feature_importance_stability,
    gate_in_force,
    overlay_evidence,
    overlay_gate,
)

__all__ = ["RegimeEvidence", "RegimeInputs", "applied_risk_scale", "calibration_table", "evaluation_key",
           "fit_sessions", "frame_records", "regime_evidence", "regime_inputs"]


@dataclass(frozen=True)
class RegimeInputs:
    """Features, labels and simple-rule returns on one session index (see :func:`regime_inputs`)."""

    features: pd.DataFrame
    vol_labels: pd.Series
    vol_state: pd.Series
    trend_labels: pd.Series
    trend_state: pd.Series
    simple_returns: pd.Series


def regime_inputs(prices: pd.DataFrame, vol: pd.DataFrame, combined: pd.DataFrame, horizon: int,
                  volume: pd.DataFrame | None = None) -> RegimeInputs:
    """Features, the two labels with their persistence baselines, and the simple-rule returns.

    Parameters
    ----------
    prices, vol, combined, volume
        As in :func:`pipeline.ml.regime_features.market_features`.
    horizon : int
        h, sessions the labels look ahead.

    Returns
    -------
    RegimeInputs
    """
    simple = simple_rule_returns(prices, vol, combined)
    return RegimeInputs(
        features=market_features(prices, vol, combined, volume),
        vol_labels=vol_regime_labels(prices, vol, horizon),
        vol_state=vol_regime_state(prices, vol, horizon),
        trend_labels=trend_regime_labels(simple, horizon),
        trend_state=trend_regime_state(simple, horizon),
        simple_returns=simple,
    )


def fit_sessions(index: pd.DatetimeIndex, min_train: int, retrain_every: int) -> pd.DatetimeIndex:
    """Sessions of the walk-forward refits: positions ``min_train - 1 + k * retrain_every``.

    Includes the last session itself when it is a refit position (a run at T fits at T).
    """
    return index[np.arange(min_train - 1, len(index), retrain_every)]


def evaluation_key(inputs: RegimeInputs, as_of: pd.Timestamp, horizon: int, params: dict[str, Any]) -> str:
    """SHA-256 of everything the evidence at refit session ``as_of`` depends on.

    The features, simple-rule returns and label baselines up to ``as_of``, the labels known by
    then (label t only if ``t + horizon <= as_of``), and ``params``; equal keys mean equal
    evidence.
    """
    upto = inputs.features.index <= as_of
    known = np.zeros(len(upto), dtype=bool)
    known[: max(int(upto.sum()) - horizon, 0)] = True
    frame = inputs.features[upto].copy()
    frame["_vol_label"] = inputs.vol_labels[upto].where(known[upto])
    frame["_trend_label"] = inputs.trend_labels[upto].where(known[upto])
    frame["_vol_state"] = inputs.vol_state[upto]
    frame["_trend_state"] = inputs.trend_state[upto]
    frame["_simple"] = inputs.simple_returns[upto]
    digest = hashlib.sha256(data_hash(frame).encode())
    digest.update(json.dumps(params, sort_keys=True).encode())
    return digest.hexdigest()


def calibration_table(probability: pd.Series, labels: pd.Series, n_bins: int = 5) -> pd.DataFrame:
    """Reliability of probabilities: mean predicted vs observed frequency in equal-width bins.

    Parameters
    ----------
    probability : Series
        Out-of-sample P(label = 1), index ``session``.
    labels : Series
        0/1 labels, same index; sessions with either missing are skipped.
    n_bins : int, default 5
        Bins of [0, 1].

    Returns
    -------
    DataFrame
        Index ``bin`` (e.g. ``"0.2-0.4"``); ``n``, ``mean_predicted``, ``observed`` (share of
        1s), ``gap`` (observed - predicted). Empty bins are left out.
    """
    ok = probability.notna() & labels.notna()
    p, y = probability[ok], labels[ok]
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p.to_numpy(), edges[1:-1]), 0, n_bins - 1)
    names = [f"{edges[k]:.1f}-{edges[k + 1]:.1f}" for k in range(n_bins)]
    frame = pd.DataFrame({"bin": np.asarray(names)[which], "p": p.to_numpy(), "y": y.to_numpy()})
    out = frame.groupby("bin", sort=True).agg(n=("p", "size"), mean_predicted=("p", "mean"), observed=("y", "mean"))
    out["gap"] = out["observed"] - out["mean_predicted"]
    return out


@dataclass(frozen=True)
class RegimeEvidence:
    """Output of :func:`regime_evidence` (everything as known at ``fit_session``).

    Attributes
    ----------
    fit_session : Timestamp
        T, the last refit session; the version's ``data_end``.
    comparison, trend_comparison : DataFrame
        :attr:`pipeline.ml.regime_models.ModelComparison.table` for the vol label (all candidates)
        and the trend label (majority, logistic).
    calibration : DataFrame
        :func:`calibration_table` of the production model's out-of-sample probabilities.
    importance : DataFrame
        Permutation importances (rows fold, columns feature).
    importance_rank_correlation : float
        Mean Spearman correlation of consecutive folds' importances.
    gate : DataFrame
        :func:`pipeline.ml.regime_models.overlay_gate` decided at every refit up to T.
    overlay : dict
        :class:`pipeline.ml.regime_models.OverlayEvidence` at T as a dict.
    approved : bool
        The gate's decision at T: the risk scale may be applied after T.
    model : estimator or None
        The production model refitted at T (None if its training labels held one class).
    training_window : list of str
        First and last training session of ``model``.
    """

    fit_session: pd.Timestamp
    comparison: pd.DataFrame
    trend_comparison: pd.DataFrame
    calibration: pd.DataFrame
    importance: pd.DataFrame
    importance_rank_correlation: float
    gate: pd.DataFrame
    overlay: dict[str, Any]
    approved: bool
    model: Any
    training_window: list[str]


def regime_evidence(
    inputs: RegimeInputs,
    fit_session: pd.Timestamp,
    *,
    horizon: int,
    retrain_every: int,
    min_train: int,
    high_vol_scale: float,
    evidence_ci: float = 0.90,
    min_oos_sessions: int = 252,
    n_boot: int = 500,
    n_threads: int = 1,
) -> RegimeEvidence:
    """Compute the evidence of the regime model on the data known at ``fit_session``.

    Parameters
    ----------
    inputs : RegimeInputs
        From :func:`regime_inputs`; only sessions ``<= fit_session`` are used.
    fit_session : Timestamp
        T (normally the last of :func:`fit_sessions`).
    horizon, retrain_every, min_train
        The walk-forward schedule (:class:`pipeline.config.RegimeConfig`).
    high_vol_scale, evidence_ci, min_oos_sessions
        The risk scale and its gate (:class:`pipeline.config.RegimeConfig`).
    n_boot : int, keyword-only, default 500
        Bootstrap resamples per gate decision.
    n_threads : int, keyword-only, default 1
        OpenMP/BLAS threads.

    Returns
    -------
    RegimeEvidence
    """
    upto = inputs.features.index <= fit_session
    f = inputs.features[upto]
    idx = f.index
    y_vol = inputs.vol_labels[upto]
    y_trend = inputs.trend_labels[upto]
    simple = inputs.simple_returns[upto]
    known = pd.Series(np.arange(len(idx)) < len(idx) - horizon, index=idx)
    # Labels after T - h look past T: mask them so that nothing here depends on data after T.
    y_vol, y_trend = y_vol.where(known), y_trend.where(known)

    with threadpool_limits(limits=n_threads):
        comparison = compare_models(f, y_vol, horizon, retrain_every, min_train,
                                    baseline=inputs.vol_state[upto], n_threads=n_threads)
        cheap = {k: v for k, v in default_candidates().items() if k in ("majority", "logistic")}
        trend = compare_models(f, y_trend, horizon, retrain_every, min_train, cheap,
                               baseline=inputs.trend_state[upto], n_threads=n_threads)
        stability = feature_importance_stability(f, y_vol, horizon, 5, n_threads=n_threads)
        p = comparison.results["logistic"].probability
        decisions = fit_sessions(idx, min_train, retrain_every)
        gate = overlay_gate(simple, p, high_vol_scale, decisions, min_sessions=min_oos_sessions,
                            n_boot=n_boot, ci=evidence_ci)
        overlay = overlay_evidence(simple, p, high_vol_scale, n_boot=n_boot, ci=evidence_ci)
        # The production model at T: trained on every t with t + h + embargo <= T (embargo = h).
        last = len(idx) - 1 - 2 * horizon
        ok = (f.notna().all(axis=1) & y_vol.notna()).to_numpy()
        train = np.flatnonzero(ok[: last + 1]) if last >= 0 else np.array([], dtype=int)
        model = None
        if len(train) and np.unique(y_vol.to_numpy()[train]).size == 2:
            model = clone(default_model()).fit(f.iloc[train], y_vol.to_numpy()[train].astype(int))
    window = [str(idx[train[0]].date()), str(idx[train[-1]].date())] if len(train) else []
    return RegimeEvidence(
        fit_session=pd.Timestamp(fit_session),
        comparison=comparison.table,
        trend_comparison=trend.table,
        calibration=calibration_table(p, y_vol),
        importance=stability.importances,
        importance_rank_correlation=stability.mean_rank_correlation,
        gate=gate,
        overlay={k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in overlay.__dict__.items()},
        approved=bool(len(gate) and gate["on"].iloc[-1]) and model is not None,
        model=model,
        training_window=window,
    )


def applied_risk_scale(probability: pd.Series, gate: pd.DataFrame, high_vol_scale: float,
                       require_evidence: bool) -> pd.DataFrame:
    """The risk scale each session would get, and the one applied after the evidence gate.

    Parameters
    ----------
    probability : Series
        Out-of-sample P(high vol), index ``session``.
    gate : DataFrame
        Gate decisions (:func:`pipeline.ml.regime_models.overlay_gate`), index ``decided_at``.
    high_vol_scale : float
        As in :func:`pipeline.ml.regime.risk_scale`.
    require_evidence : bool
        False: apply the scale regardless of the gate.

    Returns
    -------
    DataFrame
        Index ``session``; ``candidate_scale`` (``risk_scale(p)``), ``gate_on`` (bool),
        ``risk_scale`` (candidate where the gate is on or not required, else 1.0).
    """
    candidate = risk_scale(probability, high_vol_scale)
    on = gate_in_force(gate, probability.index) if require_evidence else pd.Series(True, index=probability.index)
    return pd.DataFrame({"candidate_scale": candidate, "gate_on": on.to_numpy(),
                         "risk_scale": candidate.where(on.to_numpy(), 1.0)}, index=probability.index)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-friendly records (index reset; NaN -> None; Timestamps -> ISO strings)."""
    out = frame.reset_index()
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c]):
            out[c] = out[c].dt.strftime("%Y-%m-%d")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in out.to_dict(orient="records")]
