"""Walk-forward backtest: parameters fitted on each training window only, judged on the next.

For every fold of :func:`pipeline.validation.walk_forward_splits` the estimated parameters of the
system are fitted on the training sessions alone:

* forecast scalars, pooled across instruments (:func:`pipeline.forecasts.estimate_forecast_scalars`
  over the window: ``10 / mean_t median_i |raw|``);
* the FDM from the pooled correlation of the capped forecasts over the window
  (:func:`pipeline.combine.fdm_from_correlation`), unless the configuration fixes it;
* ERC instrument weights and the IDM from the window's vol-normalised returns
  (:func:`pipeline.weights.estimate_instrument_weights`, the last month-end estimate inside it).

The following test window is then traded with those fixed parameters through the production
functions (:func:`pipeline.combine.combine_forecasts`, :func:`pipeline.sizing.target_positions`,
:func:`pipeline.backtest.simulate`). Forecast weights stay as configured. Raw forecasts and
volatility are causal (each value uses data up to its session), so they are computed once over
the whole history and only sliced per fold.

Each fold is simulated alone (starting flat) for its row of statistics; the stitched
out-of-sample run trades the concatenated test-window positions as one account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backtest import simulate, simulation_options
from pipeline.backtest_results import BacktestRun
from pipeline.combine import combine_forecasts, fdm_from_correlation, forecast_weights
from pipeline.config import PipelineConfig
from pipeline.forecasts import estimate_forecast_scalars, floor_long_only
from pipeline.sizing import target_positions
from pipeline.validation import walk_forward
from pipeline.weights import estimate_instrument_weights, vol_normalised_returns

__all__ = ["FoldParameters", "fit_fold", "walk_forward_backtest"]


@dataclass(frozen=True)
class FoldParameters:
    """Parameters fitted on one training window.

    Attributes
    ----------
    scalars : Series
        Forecast scalar per rule (index rule).
    fdm : float
        Forecast diversification multiplier.
    weights : Series
        Instrument weight per instrument (index instrument, sums to 1; 0 = not eligible).
    idm : float
        Instrument diversification multiplier.
    """

    scalars: pd.Series
    fdm: float
    weights: pd.Series
    idm: float

    def __repr__(self) -> str:
        held = int((self.weights > 0).sum())
        return f"FoldParameters(fdm={self.fdm:.3f}, idm={self.idm:.3f}, instruments={held}, scalars={self.scalars.round(3).to_dict()})"


def fit_fold(
    raw: pd.DataFrame,
    closes: pd.DataFrame,
    vol: pd.DataFrame,
    train: pd.Index,
    config: PipelineConfig,
    rule_weights: pd.Series,
) -> FoldParameters:
    """Fit forecast scalars, FDM, instrument weights and IDM on the sessions ``train`` only.

    Parameters
    ----------
    raw : DataFrame
        Raw forecasts, index ``session``, columns MultiIndex ``(rule, instrument)``.
    closes, vol : DataFrame
        Closes and daily price-unit volatility (price points), index ``session``, columns
        instruments.
    train : Index
        Training sessions (a slice of the index).
    config : PipelineConfig
        ``rules.forecast_cap``, ``combination.fdm``/``fdm_cap``, ``portfolio.weights_min_sessions``
        and ``idm_cap``.
    rule_weights : Series
        Forecast weights by rule (:func:`pipeline.combine.forecast_weights`).

    Returns
    -------
    FoldParameters

    Raises
    ------
    ValueError
        Propagated from the estimators (e.g. no instrument with enough returns in the window).
    """
    window = raw.loc[train]
    scalars = estimate_forecast_scalars(window, min_periods=1).ffill().iloc[-1]
    capped = _scaled(window, scalars, config.rules.forecast_cap)
    if config.combination.fdm == "estimate":
        rules = list(rule_weights.index)
        pooled = pd.DataFrame({r: capped[r].to_numpy().ravel() for r in rules})
        fdm = fdm_from_correlation(rule_weights, pooled.corr().fillna(0.0), cap=config.combination.fdm_cap)
    else:
        fdm = float(config.combination.fdm)
    returns = vol_normalised_returns(closes, vol).loc[train]
    est = estimate_instrument_weights(
        returns, lookback_sessions=len(train),
        min_sessions=min(config.portfolio.weights_min_sessions, max(2, len(train) // 2)),
        idm_cap=config.portfolio.idm_cap,
    )
    weights = est.weights.iloc[-1].reindex(closes.columns).fillna(0.0)
    return FoldParameters(scalars=scalars, fdm=float(fdm), weights=weights, idm=float(est.idm.iloc[-1]))


def walk_forward_backtest(
    raw: pd.DataFrame,
    closes: pd.DataFrame,
    vol: pd.DataFrame,
    config: PipelineConfig,
    train_len: int = 252,
    test_len: int = 63,
    stride: int | None = None,
    expanding: bool = False,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    name: str = "walk-forward",
    fx: pd.DataFrame | None = None,
) -> BacktestRun:
    """Walk-forward backtest of the configured system; out-of-sample results stitched.

    Parameters
    ----------
    raw : DataFrame
        Raw forecasts (``ForecastSet.raw``), index ``session``, columns MultiIndex
        ``(rule, instrument)``, computed causally over the whole history.
    closes, vol : DataFrame
        Closes and daily price-unit volatility, index ``session``, columns the configured
        instruments (``config.symbols``).
    config : PipelineConfig
        The system (rules cap, combination, portfolio, instruments' point sizes and costs) and the
        simulation options (``backtest:``; next-open and limit fills need bars and are not used
        here: the closes are the fills).
    train_len, test_len, stride, expanding
        As :func:`pipeline.validation.walk_forward_splits` (stride defaults to ``test_len``).
    start, end : optional
        Sessions of ``closes`` taking part (the first training window starts at ``start``).
    name : str
        Name of the run (results folder).
    fx : DataFrame, optional
        Base currency per unit of each instrument's currency, index ``session`` (a superset of
        the sessions used), columns instruments (:func:`pipeline.fx.universe_fx`); None = 1.

    Returns
    -------
    BacktestRun
        ``result``: the stitched out-of-sample simulation over every test session; ``folds``:
        one row per fold (train/test dates, out-of-sample mean, Sharpe, total return, fitted
        parameters); ``sample`` ``"out-of-sample"``.

    Raises
    ------
    pipeline.validation.ValidationError
        Too few sessions for one fold, or bad window lengths.
    """
    closes = closes.loc[start:end]
    vol, raw = vol.reindex(closes.index), raw.reindex(closes.index)
    fx = None if fx is None else fx.reindex(index=closes.index, columns=closes.columns)
    cols = closes.columns
    rules = list(dict.fromkeys(raw.columns.get_level_values(0)))
    rule_weights = forecast_weights(rules, config.combination.forecast_weights)
    long_only = [i.symbol for i in config.instruments if i.long_only]
    point_size = pd.Series({i.symbol: i.point_size for i in config.instruments}).reindex(cols)
    costs = {i.symbol: i.costs for i in config.instruments}
    options = {**simulation_options(config), "fill": "next_close", "limit_offset": None}
    fold_positions: list[pd.DataFrame] = []

    def positions(params: FoldParameters, sessions: pd.Index) -> pd.DataFrame:
        capped = floor_long_only(_scaled(raw.loc[sessions], params.scalars, config.rules.forecast_cap), long_only)
        combined = combine_forecasts(capped, rule_weights, params.fdm, cap=config.rules.forecast_cap).reindex(columns=cols)
        weights = pd.DataFrame(np.broadcast_to(params.weights.to_numpy(), (len(sessions), len(cols))), sessions, cols)
        idm = pd.Series(params.idm, index=sessions)
        sized = target_positions(closes.loc[sessions], vol.loc[sessions], combined, weights, idm, point_size,
                                 config.portfolio, fx=None if fx is None else fx.loc[sessions])
        return sized.target.fillna(0.0)

    def fit(train_rows: pd.Series) -> FoldParameters:
        return fit_fold(raw, closes, vol, train_rows.index, config, rule_weights)

    def apply(params: FoldParameters, test_rows: pd.Series) -> pd.Series:
        pos = positions(params, test_rows.index)
        fold_positions.append(pos)
        res = simulate(pos, closes.loc[test_rows.index], point_size, costs, config.portfolio.capital,
                       None if fx is None else fx.loc[test_rows.index], **options)
        return res.returns

    wf = walk_forward(pd.Series(0.0, index=closes.index), fit, apply, train_len, test_len, stride, expanding)
    stitched = pd.concat(fold_positions)
    result = simulate(stitched, closes.loc[stitched.index], point_size, costs, config.portfolio.capital,
                      None if fx is None else fx.loc[stitched.index], **options)
    parameters: dict[str, Any] = {
        "walk_forward": {"train_len": train_len, "test_len": test_len, "stride": stride or test_len,
                         "expanding": expanding, "folds": len(wf.folds)},
        "config": config.model_dump(mode="json"),
    }
    note = (f"walk-forward, {len(wf.folds)} folds: train {train_len}, test {test_len}, stride {stride or test_len} "
            f"sessions{' (expanding)' if expanding else ''}; forecast scalars, FDM, instrument weights and IDM fitted "
            "on each training window only; forecast weights as configured")
    return BacktestRun(
        name=name, result=result, asset_classes={i.symbol: i.asset_class for i in config.instruments},
        point_size=point_size, parameters=parameters, sample="out-of-sample", sample_note=note,
        vol_target=config.portfolio.vol_target, start=stitched.index[0], folds=wf.folds,
    )


def _scaled(raw: pd.DataFrame, scalars: pd.Series, cap: float) -> pd.DataFrame:
    """``clip(raw x scalar of its rule, -cap, cap)`` for a (rule, instrument) column frame."""
    per_column = scalars.reindex(raw.columns.get_level_values(0)).to_numpy()
    return (raw * per_column).clip(-cap, cap)
