"""Walk-forward backtest: parameters fitted on each training window only, judged on the next.

For every fold of :func:`pipeline.research.validation.walk_forward_splits` the estimated parameters of the
system are fitted on the training sessions alone (:func:`fit_fold`):

* forecast scalars, pooled across instruments (:func:`pipeline.signals.forecasts.estimate_forecast_scalars`
  over the window: ``10 / mean_t median_i |raw|``);
* forecast weights, when ``combination.forecast_weights_method`` estimates them (``handcraft``:
  :func:`pipeline.signals.forecast_weights.handcraft_weights` of the correlation of the rules' returns;
  ``bootstrap``: :func:`pipeline.signals.forecast_weights.bootstrap_weights` net of the rules' SR costs),
  from the window's capped forecasts; ``fixed`` and ``equal`` weights are taken as configured;
* with ``combination.apply_speed_limit``, the (rule, instrument) pairs whose annual SR cost at the
  window's last session exceeds the speed limit (:func:`pipeline.signals.costs.rule_sr_costs`);
* the FDM from the pooled correlation of the capped forecasts over the window
  (:func:`pipeline.signals.combine.fdm_from_correlation`), unless the configuration fixes it;
* instrument weights (``portfolio.instrument_weights_method``, ERC by default) and the IDM from
  the window's vol-normalised returns (:func:`pipeline.portfolio.instrument_weights.estimate_instrument_weights`, the
  last month-end estimate inside it).

The following test window is then traded with those fixed parameters through the production
functions (:func:`pipeline.signals.combine.combine_forecasts`, :func:`pipeline.portfolio.sizing.target_positions`).
Estimated forecast weights phase in as in production: each fold's estimate is a step from its
first test session, smoothed through the stitched sessions with an EWMA of
``combination.forecast_weight_ewma_span`` (:func:`pipeline.signals.forecast_weights.smoothed_weights`).
Raw forecasts and volatility are causal (each value uses data up to its session), so they are
computed once over the whole history and only sliced per fold.

The test windows tile the out-of-sample period, and the stitched run is ONE account trading
them in sequence: the buffer carries each fold's last target into the next fold, and
:func:`pipeline.research.backtest.simulate` runs once over every test session with the same ``backtest:``
options as ``trading-pipeline backtest`` (fills, limit orders, shorts and borrow, exposure
limits, the pre-trade gate and its circuit breaker). Each fold's row of statistics is its test
window's slice of that account, so the folds' P&L add up to the stitched equity curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.instruments import point_sizes
from pipeline.portfolio.instrument_weights import estimate_instrument_weights
from pipeline.portfolio.sizing import target_positions
from pipeline.research.backtest import simulate, simulation_options
from pipeline.research.results import BacktestRun
from pipeline.research.validation import (
    ValidationError,
    annualised_sharpe,
    walk_forward_splits,
)
from pipeline.signals.combination import close_too_expensive, combination_costs
from pipeline.signals.combine import (
    combine_forecasts,
    combine_forecasts_daily,
    fdm_from_correlation,
    forecast_weights,
)
from pipeline.signals.costs import (
    apply_speed_limit,
    speed_limit_exclusions,
)
from pipeline.signals.forecast_weights import (
    bootstrap_weights,
    family_weights,
    handcraft_weights,
    rule_returns,
    smoothed_weights,
)
from pipeline.signals.forecasts import estimate_forecast_scalars, floor_long_only
from pipeline.signals.volatility import vol_normalised_returns

__all__ = ["FoldParameters", "fit_fold", "walk_forward_backtest"]


@dataclass(frozen=True)
class FoldParameters:
    """Parameters fitted on one training window.

    Attributes
    ----------
    scalars : Series
        Forecast scalar per rule (index rule, dimensionless).
    forecast_weights : Series
        Forecast weight per rule (index rule, sums to 1).
    forecast_weights_source : str
        How the forecast weights were set: ``configured`` (``fixed`` method), ``equal``,
        ``handcraft``, ``bootstrap``, or ``family fallback`` / ``equal fallback`` when the
        window had too few complete sessions of rule returns to estimate them.
    fdm : float
        Forecast diversification multiplier.
    weights : Series
        Instrument weight per instrument (index instrument, sums to 1; 0 = not eligible).
    idm : float
        Instrument diversification multiplier.
    excluded : Series of bool, optional
        Speed-limit exclusions, index ``(rule, instrument)`` (True = excluded); None when
        ``combination.apply_speed_limit`` is off.
    """

    scalars: pd.Series
    forecast_weights: pd.Series
    forecast_weights_source: str
    fdm: float
    weights: pd.Series
    idm: float
    excluded: pd.Series | None = None

    def __repr__(self) -> str:
        held = int((self.weights > 0).sum())
        return (f"FoldParameters(fdm={self.fdm:.3f}, idm={self.idm:.3f}, instruments={held}, "
                f"forecast_weights={self.forecast_weights_source}, scalars={self.scalars.round(3).to_dict()})")

    def row(self) -> dict[str, Any]:
        """Flat columns for the per-fold table: ``fdm``, ``idm``, ``n_instruments`` (weight > 0),
        ``forecast_weights_source``, ``n_excluded`` (speed-limit pairs), ``scalar:{rule}``,
        ``forecast_weight:{rule}`` and ``instrument_weight:{instrument}``."""
        out: dict[str, Any] = {
            "fdm": self.fdm, "idm": self.idm, "n_instruments": int((self.weights > 0).sum()),
            "forecast_weights_source": self.forecast_weights_source,
            "n_excluded": 0 if self.excluded is None else int(self.excluded.sum()),
        }
        out.update({f"scalar:{r}": float(v) for r, v in self.scalars.items()})
        out.update({f"forecast_weight:{r}": float(v) for r, v in self.forecast_weights.items()})
        out.update({f"instrument_weight:{i}": float(v) for i, v in self.weights.items()})
        return out


def fit_fold(
    raw: pd.DataFrame,
    closes: pd.DataFrame,
    vol: pd.DataFrame,
    train: pd.Index,
    config: PipelineConfig,
    fx: pd.DataFrame | None = None,
) -> FoldParameters:
    """Fit forecast scalars and weights, FDM, instrument weights and IDM on the sessions ``train`` only.

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
        ``rules.forecast_cap`` and ``forecast_scalars`` (the scalar of a rule with no forecast
        in the window), ``combination`` (``forecast_weights_method``, ``forecast_weights``,
        ``weights_min_sessions``, bootstrap settings, speed limit, ``fdm``/``fdm_cap``),
        ``portfolio.weights_min_sessions``, ``idm_cap``, ``instrument_weights_method`` and
        ``instrument_weights``, the instruments (``long_only``,
        costs for SR costs).
    fx : DataFrame, optional
        Base currency per unit of each instrument's currency (index ``session``, columns
        instruments), for the average position of ``combination.sr_cost_trade_size:
        average_position``; None = 1.

    Returns
    -------
    FoldParameters

    Raises
    ------
    ValueError
        Propagated from the estimators (e.g. no instrument with enough returns in the window).

    Notes
    -----
    An estimate needs at least ``min(configured minimum, len(train) // 2)`` sessions: the
    training window is the whole estimation sample, so a window shorter than the production
    minimum (``combination.weights_min_sessions`` 512, ``portfolio.weights_min_sessions``) still
    gets an estimate from half of it. Forecast weights with fewer complete sessions of rule
    returns fall back as production does (rule families for ``handcraft``, equal for
    ``bootstrap``). Sources: carver.md §2.5-2.8; pst ``forecast_scalar.py``,
    ``forecast_weight_estimate``, ``diversification_multipliers.py``.
    """
    comb = config.combination
    window = raw.loc[train]
    rules = list(dict.fromkeys(raw.columns.get_level_values(0)))
    fallback = pd.Series(config.rules.forecast_scalars, dtype=float).reindex(rules)
    scalars = estimate_forecast_scalars(window, min_periods=1).ffill().iloc[-1].reindex(rules).fillna(fallback)
    scalars.index.name = "rule"
    long_only = [i.symbol for i in config.instruments if i.long_only]
    capped = floor_long_only(_scaled(window, scalars, config.rules.forecast_cap), long_only)
    prices, vols = closes.loc[train], vol.loc[train]
    method = comb.forecast_weights_method
    costs = excluded = None
    if comb.apply_speed_limit or method == "bootstrap":  # SR costs as combined_forecast computes them
        costs = combination_costs(capped, prices, vols, config, None if fx is None else fx.loc[train]).ffill()
    if comb.apply_speed_limit:
        excluded = speed_limit_exclusions(costs, comb.speed_limit).iloc[-1]
    fw, source = _forecast_weights(capped, prices, vols, rules, config, costs, len(train))
    if comb.fdm == "estimate":
        used = capped if excluded is None else apply_speed_limit(capped, _exclusion_frame(capped, excluded))
        present = [r for r in rules if used[r].notna().to_numpy().any() and fw[r] > 0]
        if present:
            w = fw[present] / fw[present].sum()
            pooled = pd.DataFrame({r: used[r].to_numpy().ravel() for r in present})
            fdm = fdm_from_correlation(w, pooled.corr().fillna(0.0), cap=comb.fdm_cap)
        else:  # no weighted rule has a forecast (all excluded): nothing to diversify
            fdm = 1.0
    else:
        fdm = float(comb.fdm)
    returns = vol_normalised_returns(prices, vols)  # the first training session has no return
    est = estimate_instrument_weights(
        returns, lookback_sessions=len(train),
        min_sessions=min(config.portfolio.weights_min_sessions, max(2, len(train) // 2)),
        idm_cap=config.portfolio.idm_cap, method=config.portfolio.instrument_weights_method,
        fixed_weights=config.portfolio.instrument_weights,
        fixed_idm=None if config.portfolio.idm == "estimate" else float(config.portfolio.idm),
        optimiser=config.portfolio.optimiser,
    )
    weights = est.weights.iloc[-1].reindex(closes.columns).fillna(0.0)
    return FoldParameters(scalars=scalars, forecast_weights=fw, forecast_weights_source=source, fdm=float(fdm),
                          weights=weights, idm=float(est.idm.iloc[-1]), excluded=excluded)


def _forecast_weights(capped, prices, vols, rules, config, costs, n_train) -> tuple[pd.Series, str]:
    """Forecast weights of a fold and how they were set (see :class:`FoldParameters`)."""
    comb = config.combination
    method = comb.forecast_weights_method
    if method in ("fixed", "equal"):
        configured = comb.forecast_weights if method == "fixed" else None
        return forecast_weights(rules, configured), "configured" if configured is not None else "equal"
    returns = rule_returns(capped, prices, vols).reindex(columns=rules)
    complete = returns.dropna(how="any")
    if len(complete) < max(2, min(comb.weights_min_sessions, n_train // 2)):
        if method == "handcraft":
            return family_weights(rules), "family fallback"
        return forecast_weights(rules, None), "equal fallback"
    if method == "handcraft":
        fw = handcraft_weights(complete.corr())
    else:
        cost = None if costs is None else costs.iloc[-1].groupby(level=0).mean()
        fw = bootstrap_weights(complete, cost, draws=comb.bootstrap_draws,
                               block=min(comb.bootstrap_block, len(complete)), seed=comb.bootstrap_seed)
    fw = fw.reindex(rules).fillna(0.0)
    fw.index.name = "rule"
    return fw.rename("weight"), method


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
    bars: dict[str, pd.DataFrame] | None = None,
) -> BacktestRun:
    """Walk-forward backtest of the configured system; out-of-sample results stitched into one account.

    Parameters
    ----------
    raw : DataFrame
        Raw forecasts (``ForecastSet.raw``), index ``session``, columns MultiIndex
        ``(rule, instrument)``, computed causally over the whole history.
    closes, vol : DataFrame
        Closes and daily price-unit volatility, index ``session``, columns the configured
        instruments (``config.symbols``).
    config : PipelineConfig
        The system (rules, combination, portfolio, instruments' point sizes and costs) and the
        simulation options (``backtest:`` and, with ``backtest.pre_trade_gate``, ``risk:``),
        exactly as ``trading-pipeline backtest`` uses them (:func:`pipeline.research.backtest.simulation_options`).
    train_len, test_len, stride, expanding
        As :func:`pipeline.research.validation.walk_forward_splits`; ``stride`` (default ``test_len``)
        must equal ``test_len`` so that the test windows tile the out-of-sample period.
    start, end : optional
        Sessions of ``closes`` taking part (the first training window starts at ``start``).
    name : str
        Name of the run (results folder).
    fx : DataFrame, optional
        Base currency per unit of each instrument's currency, index ``session`` (a superset of
        the sessions used), columns instruments (:func:`pipeline.adapters.pysystemtrade.universe_fx`); None = 1.
    bars : dict, optional
        ``{"opens": ..., "highs": ..., "lows": ...}`` (index ``session``, columns instruments,
        price points) as :func:`pipeline.research.backtest.needs_bars` asks for next-open fills and limit
        orders; reindexed on the sessions used.

    Returns
    -------
    BacktestRun
        ``result``: the simulation of the stitched out-of-sample account over every test
        session; ``folds``: one row per fold (train/test dates and lengths, the fold's net P&L,
        costs, mean daily return, Sharpe and total return of its test window in the stitched
        account, circuit-breaker trips, and the fitted parameters: :meth:`FoldParameters.row`);
        ``sample`` ``"out-of-sample"``; ``parameters["walk_forward"]["fitted"]`` the fitted
        parameters of every fold (instrument weights included).

    Raises
    ------
    pipeline.research.validation.ValidationError
        Too few sessions for one fold, bad window lengths, or ``stride != test_len``.
    pipeline.research.backtest.BacktestInputError
        Simulation options that lack their bars (``next_open`` without opens, limit orders
        without highs and lows).
    """
    stride = test_len if stride is None else stride
    if stride != test_len:
        raise ValidationError(
            f"walk_forward_backtest: stride {stride} != test_len {test_len}; the stitched account needs test "
            "windows that follow one another (stride > test_len would leave sessions untraded)"
        )
    closes = closes.loc[start:end]
    vol, raw = vol.reindex(closes.index), raw.reindex(closes.index)
    fx = None if fx is None else fx.reindex(index=closes.index, columns=closes.columns)
    cols = closes.columns
    long_only = [i.symbol for i in config.instruments if i.long_only]
    point_size = point_sizes(config.instruments).reindex(cols)
    costs = {i.symbol: i.costs for i in config.instruments}
    cap = config.rules.forecast_cap

    splits = walk_forward_splits(closes.index, train_len, test_len, stride, expanding)
    method = config.combination.forecast_weights_method
    span = config.combination.forecast_weight_ewma_span if method in ("handcraft", "bootstrap") else None
    history: dict[pd.Timestamp, pd.Series] = {}  # fold estimates, dated at their training end
    tested = closes.index[:0]  # the test sessions so far
    fitted: list[FoldParameters] = []
    pieces: list[pd.DataFrame] = []
    held = None  # the previous fold's last target: the buffer carries on from it
    for train, test in splits:  # one fit per fold, not per row
        params = fit_fold(raw, closes, vol, train, config, fx)
        capped = floor_long_only(_scaled(raw.loc[test], params.scalars, cap), long_only)
        used = capped
        if params.excluded is not None:  # as combined_forecast: excluded rules get weight 0
            excluded = _exclusion_frame(capped, params.excluded)
            used = apply_speed_limit(capped, excluded)
        if span is None:
            combined = combine_forecasts(used, params.forecast_weights, params.fdm, cap=cap)
        else:  # the new estimate phases in from the fold's first test session (causal EWMA)
            history[train[-1]] = params.forecast_weights
            tested = tested.append(test)
            daily = smoothed_weights(pd.DataFrame(history).T, tested, span).loc[test]
            combined = combine_forecasts_daily(used, daily, params.fdm, cap=cap)
        combined = combined.reindex(columns=cols)
        if params.excluded is not None:  # an instrument with no rule cheap enough is closed
            combined = close_too_expensive(combined, capped, excluded)
        weights = pd.DataFrame(np.broadcast_to(params.weights.to_numpy(), (len(test), len(cols))), test, cols)
        sized = target_positions(closes.loc[test], vol.loc[test], combined, weights, pd.Series(params.idm, index=test),
                                 point_size, config.portfolio, fx=None if fx is None else fx.loc[test], initial=held)
        target = sized.target
        held = target.iloc[-1].fillna(0.0)
        fitted.append(params)
        pieces.append(target.fillna(0.0))
    stitched = pd.concat(pieces)
    sessions = stitched.index
    extra = {k: v.reindex(index=sessions, columns=cols) for k, v in (bars or {}).items()}
    result = simulate(stitched, closes.loc[sessions], point_size, costs, config.portfolio.capital,
                      None if fx is None else fx.loc[sessions], **simulation_options(config), **extra)
    folds = _fold_table(splits, fitted, result)
    what = ["forecast scalars"]
    if method in ("handcraft", "bootstrap"):
        what.append(f"forecast weights ({method}{f', phased in with an EWMA of span {span}' if span else ''})")
    if config.combination.apply_speed_limit:
        what.append("speed-limit exclusions")
    if config.combination.fdm == "estimate":
        what.append("FDM")
    what += [f"instrument weights ({config.portfolio.instrument_weights_method})", "IDM"]
    fixed = [] if method in ("handcraft", "bootstrap") else [f"forecast weights ({fitted[0].forecast_weights_source})"]
    if config.combination.fdm != "estimate":
        fixed.append(f"FDM {config.combination.fdm}")
    parameters: dict[str, Any] = {
        "walk_forward": {"train_len": train_len, "test_len": test_len, "stride": stride,
                         "expanding": expanding, "folds": len(splits), "fitted_in_sample": what,
                         "as_configured": fixed, "fitted": [_fitted_json(k, p, s) for k, (p, s) in
                                                            enumerate(zip(fitted, splits))]},
        "config": config.model_dump(mode="json"),
    }
    note = (f"walk-forward, {len(splits)} folds: train {train_len}, test {test_len}, stride {stride} "
            f"sessions{' (expanding)' if expanding else ''}; {', '.join(what)} fitted on each training window "
            f"only{'; ' + ', '.join(fixed) + ' as configured' if fixed else ''}; every reported session is "
            "out-of-sample, traded as one account")
    return BacktestRun(
        name=name, result=result, asset_classes={i.symbol: i.asset_class for i in config.instruments},
        point_size=point_size, parameters=parameters, sample="out-of-sample", sample_note=note,
        vol_target=config.portfolio.vol_target, start=sessions[0], folds=folds,
    )


def _fold_table(splits, fitted: list[FoldParameters], result) -> pd.DataFrame:
    """One row per fold: its windows and its test window's slice of the stitched account."""
    rows = []
    halted = result.circuit_breaker["session"]
    for (train, test), params in zip(splits, fitted):
        r = result.returns.loc[test].to_numpy(dtype=float)
        rows.append({
            "sample": "out-of-sample",
            "train_start": train[0], "train_end": train[-1], "test_start": test[0], "test_end": test[-1],
            "n_train": len(train), "n_test": len(test),
            "pnl_net": float(result.portfolio_pnl.loc[test].sum()),
            "costs": float(result.costs.loc[test].to_numpy().sum() + result.borrow.loc[test].to_numpy().sum()),
            "mean": float(r.mean()),
            "sharpe": float(annualised_sharpe(r)) if len(r) > 1 else np.nan,
            "total_return": float(r.sum()),
            "breaker_trips": int(halted.isin(test).sum()),
            "params": repr(params),
            **params.row(),
        })
    return pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="fold"))


def _fitted_json(k: int, params: FoldParameters, split) -> dict[str, Any]:
    train, test = split
    return {
        "fold": k, "sample": "in-sample fit, applied out-of-sample",
        "train": [str(train[0].date()), str(train[-1].date())], "test": [str(test[0].date()), str(test[-1].date())],
        "forecast_scalars": {str(r): float(v) for r, v in params.scalars.items()},
        "forecast_weights": {str(r): float(v) for r, v in params.forecast_weights.items()},
        "forecast_weights_source": params.forecast_weights_source,
        "fdm": params.fdm, "idm": params.idm,
        "instrument_weights": {str(i): float(v) for i, v in params.weights.items()},
        "speed_limit_excluded": ([f"{r}/{i}" for (r, i), v in params.excluded.items() if v]
                                 if params.excluded is not None else None),
    }


def _exclusion_frame(capped: pd.DataFrame, excluded: pd.Series) -> pd.DataFrame:
    """The fold's speed-limit exclusions (index ``(rule, instrument)``) on every session of ``capped``."""
    mask = excluded.reindex(capped.columns).fillna(False).to_numpy(dtype=bool)
    return pd.DataFrame(np.broadcast_to(mask, capped.shape), index=capped.index, columns=capped.columns)


def _scaled(raw: pd.DataFrame, scalars: pd.Series, cap: float) -> pd.DataFrame:
    """``clip(raw x scalar of its rule, -cap, cap)`` for a (rule, instrument) column frame."""
    per_column = scalars.reindex(raw.columns.get_level_values(0)).to_numpy()
    return (raw * per_column).clip(-cap, cap)
