"""Forecasting next-month realised volatility, judged against the vol used for sizing.

Positions are sized by the daily price vol of :mod:`pipeline.signals.volatility` (Carver's EWMA/robust
vol, carver.md §2.1): implicitly a forecast that the next weeks' vol equals today's estimate. This
module asks whether a model does better at the horizon that matters for a position held about a
month, ``H = 21`` sessions.

Per instrument i and session t, with percentage returns ``r_{i,t} = P_{i,t} / P_{i,t-1} - 1``:

* **target** (known at the close of t + H): ``y_{i,t} = sqrt(mean(r^2_{i,t+1..t+H}))``, the
  realised daily vol of the next H sessions (a fraction);
* **sizing baseline** ``s_{i,t} = sigma_{i,t} / P_{i,t}``, the sizing vol as a fraction of price;
* **features** (known at t, logs of variances floored at ``VAR_FLOOR``): ``log_rv1 = log r^2_t``,
  ``log_rv5``, ``log_rv21``, ``log_rv63`` (mean of ``r^2`` over the last 5, 21, 63 sessions) and
  ``log_sizing = log s^2_t``;
* **models**, all predicting ``log y^2`` and pooled over instruments (panel rows = instrument
  sessions): ``har``, the heterogeneous autoregressive model of Corsi (2009, *J. Financial
  Econometrics* 7(2)) in logs on ``log_rv1, log_rv5, log_rv21`` (OLS); ``har_sizing``, the same
  plus ``log_sizing``; ``gradient_boosting``, ``HistGradientBoostingRegressor`` on every feature.
  A log forecast ``m`` becomes a variance ``exp(m + v / 2)``, ``v`` the variance of the training
  residuals (log-normal bias correction).

Walk-forward: a fit at session position T trains on sessions ``t <= T - H - embargo`` (their
targets were known at T) and predicts sessions ``T+1 .. T+retrain_every``. The forecasts are
scored out of sample by QLIKE, ``mean(y^2 / f - log(y^2 / f) - 1)``, and MSE of variance
(Patton 2011, *J. Econometrics* 160(1): both rank forecasts consistently with a noisy proxy of
the true variance; QLIKE is the less sensitive to the extremes).

Percentage returns are undefined where a price is <= 0, which a back-adjusted futures series (the
price plus the sum of later roll gaps) may be. Such an instrument is left out of the panel, hence
of the pooled models, when any of its prices given is <= 0 (:func:`nonpositive_instruments`); its
forecasts are missing, so sizing keeps its sizing vol. For any other instrument a price <= 0 is
bad data and raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

__all__ = [
    "BASELINE",
    "VOL_FEATURES",
    "VolForecastError",
    "VolForecastResult",
    "default_vol_models",
    "nonpositive_instruments",
    "qlike",
    "score_vol_forecasts",
    "sizing_decision",
    "sizing_gate",
    "vol_for_sizing",
    "vol_forecast_panel",
    "walk_forward_vol_forecast",
]

#: Name of the sizing-vol baseline in the score table.
BASELINE = "sizing_vol"
#: Feature columns of :func:`vol_forecast_panel`.
VOL_FEATURES = ("log_rv1", "log_rv5", "log_rv21", "log_rv63", "log_sizing")
#: Floor of every variance before a log (a daily vol of 0.01%): a zero return has no log.
VAR_FLOOR = 1e-8
#: Annualisation of daily variance (Carver: 256 sessions a year).
SESSIONS_PER_YEAR = 256


class VolForecastError(ValueError):
    """Inputs of the vol forecast are misaligned or its parameters are inconsistent."""


def qlike(realised_var: np.ndarray, forecast_var: np.ndarray) -> float:
    """QLIKE loss ``mean(y / f - log(y / f) - 1)`` of variance forecasts (Patton 2011).

    Parameters
    ----------
    realised_var, forecast_var : ndarray of shape (n,)
        Realised and forecast variances (> 0), same unit.

    Returns
    -------
    float
        >= 0, zero only for perfect forecasts; NaN if ``n == 0``.
    """
    y = np.asarray(realised_var, dtype=float)
    f = np.asarray(forecast_var, dtype=float)
    if y.size == 0:
        return math.nan
    ratio = y / f
    return float(np.mean(ratio - np.log(ratio) - 1.0))


def nonpositive_instruments(prices: pd.DataFrame, back_adjusted: Collection[str] = ()) -> list[str]:
    """Back-adjusted instruments with a price <= 0, which percentage returns cannot use.

    A back-adjusted futures price is the traded price plus the sum of later roll gaps, so it may
    be zero or negative and still be right (pysystemtrade's ``adjusted_prices``); a price <= 0 of
    any other instrument is bad data.

    Parameters
    ----------
    prices : DataFrame
        Close prices (price points), index ``session``, columns instruments; NaN = no price.
    back_adjusted : collection of str, default ()
        Instruments whose prices are back-adjusted (``pipeline.config.Instrument.back_adjusted``).

    Returns
    -------
    list of str
        The back-adjusted instruments with a price <= 0 on some session, in column order.

    Raises
    ------
    VolForecastError
        An instrument not in ``back_adjusted`` has a price <= 0 (names it and its first session).
    """
    bad = prices.le(0)  # NaN compares False: a missing price is not a bad one
    hit = bad.any()
    strict = hit & ~hit.index.isin(list(back_adjusted))
    if strict.any():
        inst = str(strict.index[strict.to_numpy()][0])
        first = pd.Timestamp(bad[inst].idxmax()).date()
        raise VolForecastError(
            f"vol_forecast: price <= 0 for {inst} on {first}; percentage returns need positive prices and "
            "the instrument is not back-adjusted (set back_adjusted: true if its prices are)"
        )
    return [str(c) for c in hit.index[hit.to_numpy()]]


def vol_forecast_panel(
    prices: pd.DataFrame, vol: pd.DataFrame, horizon: int = 21, *, back_adjusted: Collection[str] = ()
) -> pd.DataFrame:
    """Features, sizing baseline and target of every instrument session (module docstring).

    Parameters
    ----------
    prices : DataFrame
        Close prices (price points), index ``session``, columns instruments.
    vol : DataFrame
        Daily price-unit sizing vol, same index; columns matched by name.
    horizon : int, default 21
        H, sessions of the target window (>= 2).
    back_adjusted : collection of str, keyword-only, default ()
        Back-adjusted instruments: one with a price <= 0 anywhere in ``prices`` is left out (no
        rows), see :func:`nonpositive_instruments`. The other instruments' rows do not depend
        on it.

    Returns
    -------
    DataFrame
        MultiIndex (``session``, ``instrument``), sorted by session then instrument; columns
        :data:`VOL_FEATURES`, ``sizing_var`` (``s^2``, daily), ``target_var`` (``y^2``, daily;
        NaN until t + H has closed). Rows without a price at t are dropped.

    Raises
    ------
    VolForecastError
        ``vol`` does not share the index of ``prices``, ``horizon < 2``, or a price <= 0 of an
        instrument not in ``back_adjusted``.
    """
    if not vol.index.equals(prices.index):
        raise VolForecastError(
            f"vol_forecast: vol does not share the session index of prices ({len(vol.index)} vs "
            f"{len(prices.index)} sessions); reindex it on prices.index"
        )
    if horizon < 2:
        raise VolForecastError(f"vol_forecast: horizon must be >= 2 sessions, got {horizon}")
    prices = prices.drop(columns=nonpositive_instruments(prices, back_adjusted))
    sigma = vol.reindex(columns=prices.columns)
    r2 = (prices / prices.shift(1) - 1.0) ** 2

    def mean_r2(k: int) -> pd.DataFrame:
        return r2.rolling(k, min_periods=k).mean()

    sizing = (sigma.where(sigma > 0) / prices) ** 2
    wide = {
        "log_rv1": np.log(r2.clip(lower=VAR_FLOOR)),
        "log_rv5": np.log(mean_r2(5).clip(lower=VAR_FLOOR)),
        "log_rv21": np.log(mean_r2(21).clip(lower=VAR_FLOOR)),
        "log_rv63": np.log(mean_r2(63).clip(lower=VAR_FLOOR)),
        "log_sizing": np.log(sizing.clip(lower=VAR_FLOOR)),
        "sizing_var": sizing,
        "target_var": mean_r2(horizon).shift(-horizon),
    }
    panel = pd.concat({k: v.stack(future_stack=True) for k, v in wide.items()}, axis=1)
    panel.index.names = ["session", "instrument"]
    present = prices.stack(future_stack=True).notna().reindex(panel.index)
    return panel[present.to_numpy()]


class _LogModel:
    """Wraps a regressor of ``log y^2``; predicts a variance with the log-normal bias correction."""

    def __init__(self, regressor: Any, columns: tuple[str, ...]) -> None:
        self.regressor = regressor
        self.columns = columns

    def fit(self, x: pd.DataFrame, log_target: np.ndarray) -> _LogModel:
        self.regressor.fit(x[list(self.columns)].to_numpy(), log_target)
        resid = log_target - self.regressor.predict(x[list(self.columns)].to_numpy())
        self.resid_var_ = float(np.var(resid))
        return self

    def predict_var(self, x: pd.DataFrame) -> np.ndarray:
        return np.exp(self.regressor.predict(x[list(self.columns)].to_numpy()) + self.resid_var_ / 2)


VolModelFactory = Callable[[], _LogModel]


def default_vol_models() -> dict[str, VolModelFactory]:
    """Candidates of :func:`walk_forward_vol_forecast` (name -> zero-argument factory).

    - ``har``: OLS of ``log y^2`` on ``log_rv1, log_rv5, log_rv21`` (Corsi 2009, in logs);
    - ``har_sizing``: the same plus ``log_sizing`` (the sizing vol as a predictor);
    - ``gradient_boosting``: ``HistGradientBoostingRegressor(max_iter=60, learning_rate=0.1,
      max_depth=3, min_samples_leaf=200, random_state=0)`` on :data:`VOL_FEATURES`; few shallow
      trees with large leaves, as the target is noisy (and the daily run refits it).
    """
    return {
        "har": lambda: _LogModel(LinearRegression(), ("log_rv1", "log_rv5", "log_rv21")),
        "har_sizing": lambda: _LogModel(LinearRegression(), ("log_rv1", "log_rv5", "log_rv21", "log_sizing")),
        "gradient_boosting": lambda: _LogModel(
            HistGradientBoostingRegressor(max_iter=60, learning_rate=0.1, max_depth=3,
                                          min_samples_leaf=200, random_state=0),
            VOL_FEATURES,
        ),
    }


@dataclass(frozen=True)
class VolForecastResult:
    """Output of :func:`walk_forward_vol_forecast`.

    Attributes
    ----------
    forecasts : DataFrame
        MultiIndex (``session``, ``instrument``); columns ``target_var`` and one per forecast
        (:data:`BASELINE` then the models), daily variances; a model's column is NaN before its
        first fit and where a feature is missing.
    scores : DataFrame
        Index ``model`` (:data:`BASELINE` first); ``n_scored`` (instrument sessions where every
        forecast and the target exist), ``qlike``, ``mse`` (of variance in annualised %^2:
        ``var * 256 * 100^2``), ``qlike_improvement`` (``1 - qlike / qlike_baseline``),
        ``mse_improvement``.
    folds : DataFrame
        One row per fit: ``fit_session``, ``train_start``, ``train_end``, ``test_start``,
        ``test_end``, ``n_train`` (panel rows), ``n_test``.
    last_models : dict
        Model name -> the last fitted model (``predict_var(features)``).
    """

    forecasts: pd.DataFrame
    scores: pd.DataFrame
    folds: pd.DataFrame
    last_models: dict[str, Any]


def walk_forward_vol_forecast(
    panel: pd.DataFrame,
    horizon: int = 21,
    retrain_every: int = 252,
    min_train: int = 756,
    models: Mapping[str, VolModelFactory] | None = None,
    *,
    embargo: int | None = None,
    train_stride: int = 10,
    n_threads: int = 1,
) -> VolForecastResult:
    """Fit the vol models walk-forward on the panel and score them against the sizing vol.

    Fit k happens at the close of session position ``T = min_train - 1 + k * retrain_every``; it
    trains on the rows of sessions ``t <= T - horizon - embargo`` with complete features and a
    target (every ``train_stride``-th session: neighbouring targets share ``H - 1`` of their
    ``H`` days, so thinning loses little information and saves time) and predicts sessions
    ``T+1 .. T+retrain_every``.

    Parameters
    ----------
    panel : DataFrame
        Output of :func:`vol_forecast_panel` with the same ``horizon``.
    horizon : int, default 21
        H, sessions of the target window.
    retrain_every : int, default 252
        Sessions between fits (>= 1).
    min_train : int, default 756
        Sessions before the first fit; must exceed ``horizon + embargo``.
    models : dict name -> factory, optional
        Default :func:`default_vol_models`; the name :data:`BASELINE` is reserved.
    embargo : int, keyword-only, optional
        Extra sessions between the last training target and the fit; default 0 (the target
        window already ends at or before T).
    train_stride : int, keyword-only, default 10
        Use every k-th session for training (>= 1).
    n_threads : int, keyword-only, default 1
        OpenMP/BLAS threads (``threadpoolctl``).

    Returns
    -------
    VolForecastResult

    Raises
    ------
    VolForecastError
        Missing panel columns, invalid schedule parameters, or a model named ``sizing_vol``.
    """
    embargo = 0 if embargo is None else embargo
    missing = [c for c in (*VOL_FEATURES, "sizing_var", "target_var") if c not in panel.columns]
    if missing:
        raise VolForecastError(f"walk_forward_vol_forecast: panel lacks columns {missing}; build it with vol_forecast_panel")
    if horizon < 1 or retrain_every < 1 or embargo < 0 or train_stride < 1:
        raise VolForecastError(
            "walk_forward_vol_forecast: need horizon, retrain_every, train_stride >= 1 and embargo >= 0; got "
            f"{horizon}, {retrain_every}, {train_stride}, {embargo}"
        )
    if min_train <= horizon + embargo:
        raise VolForecastError(
            f"walk_forward_vol_forecast: min_train ({min_train}) must exceed horizon + embargo ({horizon} + {embargo})"
        )
    models = default_vol_models() if models is None else dict(models)
    if BASELINE in models:
        raise VolForecastError(f"walk_forward_vol_forecast: the name {BASELINE!r} is the baseline's")

    sessions = panel.index.get_level_values("session")
    uniq = pd.DatetimeIndex(sessions.unique()).sort_values()
    pos = uniq.get_indexer(sessions)  # session position of every panel row
    x_ok = panel[list(VOL_FEATURES)].notna().all(axis=1).to_numpy()
    y = panel["target_var"].to_numpy(dtype=float)
    y_ok = np.isfinite(y) & (y > 0)
    log_y = np.log(np.clip(y, VAR_FLOOR, None))
    out = {name: np.full(len(panel), np.nan) for name in models}
    rows: list[dict[str, Any]] = []
    last_models: dict[str, Any] = {}
    n = len(uniq)
    with threadpool_limits(limits=n_threads):
        for fit_pos in range(min_train - 1, n - 1, retrain_every):  # one iteration per fit
            last_train = fit_pos - horizon - embargo
            train = np.flatnonzero(x_ok & y_ok & (pos <= last_train) & (pos % train_stride == 0))
            test_end = min(fit_pos + retrain_every, n - 1)
            test = np.flatnonzero(x_ok & (pos > fit_pos) & (pos <= test_end))
            if len(train) < 10 or len(test) == 0:
                continue
            x_train, x_test = panel.iloc[train], panel.iloc[test]
            for name, factory in models.items():
                fitted = factory().fit(x_train, log_y[train])
                out[name][test] = fitted.predict_var(x_test)
                last_models[name] = fitted
            rows.append({
                "fit_session": uniq[fit_pos], "train_start": uniq[pos[train].min()],
                "train_end": uniq[pos[train].max()], "test_start": uniq[fit_pos + 1],
                "test_end": uniq[test_end], "n_train": len(train), "n_test": len(test),
            })
    forecasts = pd.DataFrame({"target_var": y, BASELINE: panel["sizing_var"].to_numpy(dtype=float), **out},
                             index=panel.index)
    folds = pd.DataFrame(rows, columns=["fit_session", "train_start", "train_end", "test_start", "test_end",
                                        "n_train", "n_test"])
    return VolForecastResult(forecasts=forecasts, scores=score_vol_forecasts(forecasts), folds=folds,
                             last_models=last_models)


def score_vol_forecasts(forecasts: pd.DataFrame) -> pd.DataFrame:
    """QLIKE and MSE of every forecast column against ``target_var``, on common rows only.

    Parameters
    ----------
    forecasts : DataFrame
        Columns ``target_var`` and :data:`BASELINE` and one per model (daily variances).

    Returns
    -------
    DataFrame
        As :attr:`VolForecastResult.scores`.
    """
    cols = [c for c in forecasts.columns if c != "target_var"]
    values = forecasts[["target_var", *cols]].to_numpy(dtype=float)
    common = np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)
    y = values[common, 0]
    annual_pct2 = SESSIONS_PER_YEAR * 1e4
    rows = []
    for j, name in enumerate(cols, start=1):  # loop over models, vectorised over rows
        f = values[common, j]
        rows.append({"model": name, "n_scored": int(common.sum()), "qlike": qlike(y, f),
                     "mse": float(np.mean(((y - f) * annual_pct2) ** 2)) if len(y) else math.nan})
    table = pd.DataFrame(rows).set_index("model")
    table["qlike_improvement"] = 1.0 - table["qlike"] / table.loc[BASELINE, "qlike"]
    table["mse_improvement"] = 1.0 - table["mse"] / table.loc[BASELINE, "mse"]
    return table


def sizing_decision(scores: pd.DataFrame, margin: float, enabled: bool) -> tuple[str | None, str]:
    """Whether a model's vol forecast replaces the sizing vol, and why.

    The best model by out-of-sample QLIKE is chosen only if ``enabled`` and its
    ``qlike_improvement >= margin`` and its MSE is no worse than the baseline's.

    Parameters
    ----------
    scores : DataFrame
        :attr:`VolForecastResult.scores`.
    margin : float
        Required relative QLIKE improvement (e.g. 0.05 = 5%).
    enabled : bool
        The configuration switch (``vol_forecast.use_for_sizing``).

    Returns
    -------
    (str or None, str)
        The model to size with (None = keep the sizing vol) and the reason in words.
    """
    models = scores.drop(index=BASELINE, errors="ignore").dropna(subset=["qlike"])
    if models.empty or scores["n_scored"].max() == 0:
        return None, "no out-of-sample forecasts yet (too little history); sizing keeps the EWMA/robust vol"
    best = str(models["qlike"].idxmin())
    gain, mse_gain = float(models.loc[best, "qlike_improvement"]), float(models.loc[best, "mse_improvement"])
    wins = gain >= margin and mse_gain >= 0
    verdict = (f"best model {best}: QLIKE {gain:+.1%} and MSE {mse_gain:+.1%} vs the sizing vol out of sample "
               f"(required QLIKE gain {margin:.1%} and no worse MSE)")
    if not wins:
        return None, f"{verdict}: not enough; sizing keeps the EWMA/robust vol"
    if not enabled:
        return None, f"{verdict}: it wins, but vol_forecast.use_for_sizing is off; sizing keeps the EWMA/robust vol"
    return best, f"{verdict}: it wins and vol_forecast.use_for_sizing is on; sizing uses {best}"


def sizing_gate(
    forecasts: pd.DataFrame,
    decision_sessions: pd.DatetimeIndex,
    horizon: int,
    margin: float,
    enabled: bool,
) -> pd.DataFrame:
    """Point-in-time version of :func:`sizing_decision`, re-decided at every refit.

    At decision session D the forecasts are scored only on sessions ``t <= D - horizon``
    (positions), whose targets were known at D; the model chosen at D (or none) sizes the
    sessions after D until the next decision. A backtest never uses a verdict from its future.

    Parameters
    ----------
    forecasts : DataFrame
        :attr:`VolForecastResult.forecasts`.
    decision_sessions : DatetimeIndex
        Ascending sessions (e.g. :attr:`VolForecastResult.folds` ``fit_session``).
    horizon : int
        H, sessions of the target.
    margin, enabled
        As in :func:`sizing_decision`.

    Returns
    -------
    DataFrame
        Index ``decided_at``; ``model`` (object: str, or None for the sizing vol) and ``reason``.
    """
    sessions = forecasts.index.get_level_values("session")
    uniq = pd.DatetimeIndex(sessions.unique()).sort_values()
    rows = []
    for d in decision_sessions:  # one scoring per refit (yearly), never per session
        cut = uniq.searchsorted(d, side="right") - 1 - horizon
        known = sessions <= uniq[cut] if cut >= 0 else np.zeros(len(sessions), dtype=bool)
        model, reason = sizing_decision(score_vol_forecasts(forecasts[known]), margin, enabled)
        rows.append({"model": model, "reason": reason})
    index = pd.DatetimeIndex(decision_sessions, name="decided_at")
    return pd.DataFrame({"model": pd.Series([r["model"] for r in rows], index=index, dtype=object),
                         "reason": pd.Series([r["reason"] for r in rows], index=index, dtype=object)})


def vol_for_sizing(forecasts: pd.DataFrame, gate: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """The daily price vol to size with: the chosen model's forecast while the gate picks one.

    Parameters
    ----------
    forecasts : DataFrame
        :attr:`VolForecastResult.forecasts` (daily variances of returns).
    gate : DataFrame
        Output of :func:`sizing_gate`; a decision at D applies from the session after D.
    prices : DataFrame
        Close prices (price points), index ``session``, columns instruments.

    Returns
    -------
    DataFrame
        Index ``session``, columns instruments: ``sqrt(forecast variance) * price`` (price points,
        daily) where a model is in force and has a forecast, NaN elsewhere (the caller keeps
        its sizing vol there).
    """
    sessions = forecasts.index.get_level_values("session")
    decided = gate.index.searchsorted(sessions, side="left") - 1  # last decision strictly before
    models = gate["model"].to_numpy(dtype=object)
    chosen = np.where(decided >= 0, models[np.maximum(decided, 0)] if len(models) else None, None)
    var = np.full(len(forecasts), np.nan)
    for name in {m for m in models if isinstance(m, str)}:  # loop over models, not rows
        use = chosen == name
        var[use] = forecasts[name].to_numpy(dtype=float)[use]
    frac = pd.Series(np.sqrt(var), index=forecasts.index).unstack("instrument")
    frac = frac.reindex(index=prices.index, columns=prices.columns)
    return frac * prices
