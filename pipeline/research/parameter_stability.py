"""Parameter stability of the trend system and its performance by volatility regime.

A robust system's Sharpe ratio changes little when a key parameter moves by a quarter; a
fragile, over-fitted one falls off a cliff. :func:`sharpe_surface` perturbs each key parameter
(EWMA spans, vol span, buffer width, vol target) one at a time by the given factors (default
-25%, 0, +25%) and reports the annualised Sharpe ratio of each run; :func:`sharpe_grid` moves two
parameters together. :func:`performance_by_vol_regime` splits a return series by the volatility
regime known at the previous close.

The system is the pipeline's own research API (``pipeline.signals.volatility``, ``pipeline.signals.rules``,
``pipeline.signals.forecasts``, ``pipeline.signals.combine``, ``pipeline.portfolio``, ``pipeline.research.backtest``):
EWMAC variations with slow = 4 x fast (ST ch. 7), scalars estimated on an expanding window (no
look-ahead), equal forecast weights with the estimated FDM, equal instrument weights (IDM 1),
Carver's forecast-method buffer, next-close fills. Every run states its sample; costs are the
caller's (free by default: these are in-sample sensitivity numbers, not performance claims).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pipeline import portfolio
from pipeline.config import CostModel
from pipeline.research.backtest import simulate
from pipeline.research.validation import PERIODS_PER_YEAR, annualised_sharpe
from pipeline.signals import combine, forecasts, rules, volatility

__all__ = [
    "PARAMETERS",
    "ParameterError",
    "TrendParameters",
    "performance_by_vol_regime",
    "sharpe_grid",
    "sharpe_surface",
    "trend_returns",
]

#: The key parameters that :func:`sharpe_surface` perturbs.
PARAMETERS = ("ewma_spans", "vol_span", "buffer_fraction", "vol_target")


class ParameterError(ValueError):
    """An unknown parameter name or a factor that gives an invalid value."""


@dataclass(frozen=True)
class TrendParameters:
    """Key parameters of the trend system (defaults: ST / pysystemtrade).

    Attributes
    ----------
    ewmac_fast : tuple of int
        Fast EWMA spans in sessions; each variation's slow span is 4 x fast (ST ch. 7).
    vol_span : int
        Span of the robust vol's EWMA, sessions (pst ``vol_span`` 35).
    buffer_fraction : float
        Buffer half-width as a fraction of the average position (ST ch. 11: 0.10).
    vol_target : float
        Annualised volatility target as a fraction of capital (0.25 = 25%).
    """

    ewmac_fast: tuple[int, ...] = (8, 16, 32, 64)
    vol_span: int = 35
    buffer_fraction: float = 0.10
    vol_target: float = 0.25

    def scaled(self, parameter: str, factor: float) -> "TrendParameters":
        """A copy with ``parameter`` multiplied by ``factor`` (spans rounded, fast spans >= 2).

        ``ewma_spans`` scales every fast span (and so every slow span) together.

        Raises
        ------
        ParameterError
            ``parameter`` is not one of :data:`PARAMETERS`, or ``factor`` is not > 0.
        """
        if not factor > 0:
            raise ParameterError(f"factor must be > 0, got {factor!r}")
        if parameter == "ewma_spans":
            return replace(self, ewmac_fast=tuple(max(2, int(round(f * factor))) for f in self.ewmac_fast))
        if parameter == "vol_span":
            return replace(self, vol_span=max(2, int(round(self.vol_span * factor))))
        if parameter in ("buffer_fraction", "vol_target"):
            return replace(self, **{parameter: getattr(self, parameter) * factor})
        raise ParameterError(f"unknown parameter {parameter!r}; expected one of {PARAMETERS}")


def trend_returns(
    prices: pd.DataFrame,
    params: TrendParameters = TrendParameters(),
    capital: float = 1_000_000.0,
    costs: Mapping[str, CostModel] | None = None,
    scalar_min_periods: int = 250,
) -> pd.Series:
    """Daily returns of the trend system on ``prices`` with ``params``.

    Parameters
    ----------
    prices : DataFrame
        Close prices in price points, index ``session`` (ascending), columns instruments (point
        size 1: shares or a continuous price series).
    params : TrendParameters
        The system's key parameters.
    capital : float
        Notional capital in the prices' currency, > 0.
    costs : mapping instrument -> CostModel, optional
        Trading costs; None means free trading.
    scalar_min_periods : int
        Sessions before the expanding forecast-scalar estimate is used (no position before).

    Returns
    -------
    Series
        Index ``session``: net P&L / capital per session (a fraction, daily), from
        :func:`pipeline.research.backtest.simulate` (next-close fills).

    Raises
    ------
    pipeline.research.backtest.BacktestInputError, pipeline.signals.rules.RuleError
        Malformed prices (see those functions).
    """
    vol = volatility.robust_vol(prices, span=params.vol_span)
    raw = pd.concat({f"ewmac{f}_{4 * f}": rules.ewmac(prices, vol, f, 4 * f) for f in params.ewmac_fast},
                    axis=1, names=["rule", "instrument"])
    scalars = forecasts.estimate_scalars(raw, min_periods=scalar_min_periods)
    capped = pd.concat({r: raw[r].mul(scalars[r], axis=0).clip(-20.0, 20.0) for r in scalars.columns},
                       axis=1, names=["rule", "instrument"])
    weights = combine.forecast_weights(list(scalars.columns), None)
    combined = combine.combine(capped, weights, combine.fdm(capped, weights))
    n = prices.shape[1]
    instrument_weights = pd.DataFrame(1.0 / n, index=prices.index, columns=prices.columns)
    idm = pd.Series(1.0, index=prices.index)
    point_size = pd.Series(1.0, index=prices.columns)
    sized = dict(weights=instrument_weights, idm=idm, point_size=point_size, capital=capital,
                 vol_target=params.vol_target)
    optimal = portfolio.position_sizes(prices, vol, combined.fillna(0.0), **sized)
    average = portfolio.position_sizes(prices, vol, 10.0, **sized)
    target = portfolio.buffer(optimal.fillna(0.0), average.fillna(0.0), fraction=params.buffer_fraction)
    costs = costs if costs is not None else {s: CostModel() for s in prices.columns}
    return simulate(target, prices, point_size, costs, capital).returns


def _sharpe(returns: pd.Series, start: str | pd.Timestamp | None) -> float:
    r = returns.loc[start:] if start is not None else returns
    return float(annualised_sharpe(r.to_numpy(dtype=float)))


def sharpe_surface(
    prices: pd.DataFrame,
    base: TrendParameters = TrendParameters(),
    factors: Sequence[float] = (0.75, 1.0, 1.25),
    parameters: Sequence[str] = PARAMETERS,
    start: str | pd.Timestamp | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Annualised Sharpe ratio with each parameter perturbed alone.

    Parameters
    ----------
    prices : DataFrame
        As in :func:`trend_returns`.
    base : TrendParameters
        The centre of the perturbation.
    factors : sequence of float
        Multipliers of each parameter (default -25%, 0, +25%).
    parameters : sequence of str
        Names from :data:`PARAMETERS`.
    start : date-like, optional
        First session of the Sharpe ratio (e.g. after the scalar warm-up); None = all sessions.
    **kwargs
        Passed to :func:`trend_returns` (capital, costs, scalar_min_periods).

    Returns
    -------
    DataFrame
        Index ``parameter``, columns the factors; values the annualised Sharpe ratio (rf = 0,
        ``PERIODS_PER_YEAR`` sessions a year, ``pipeline.research.validation`` convention). The factor-1
        column is one run (the base) repeated.

    Raises
    ------
    ParameterError
        An unknown parameter or a factor not > 0.
    """
    base_sharpe = _sharpe(trend_returns(prices, base, **kwargs), start)
    table = pd.DataFrame(index=pd.Index(list(parameters), name="parameter"),
                         columns=pd.Index(list(factors), name="factor"), dtype=float)
    for name in parameters:  # a handful of full runs: parameters x factors
        for factor in factors:
            table.loc[name, factor] = base_sharpe if factor == 1.0 else _sharpe(
                trend_returns(prices, base.scaled(name, factor), **kwargs), start)
    return table


def sharpe_grid(
    prices: pd.DataFrame,
    rows: str = "ewma_spans",
    columns: str = "vol_span",
    factors: Sequence[float] = (0.75, 1.0, 1.25),
    base: TrendParameters = TrendParameters(),
    start: str | pd.Timestamp | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Annualised Sharpe ratio over a grid of two parameters moved together.

    Returns
    -------
    DataFrame
        Index the factors of ``rows`` (named after it), columns the factors of ``columns``;
        values as in :func:`sharpe_surface`.

    Raises
    ------
    ParameterError
        An unknown parameter, the same parameter twice, or a factor not > 0.
    """
    if rows == columns:
        raise ParameterError(f"sharpe_grid needs two different parameters, got {rows!r} twice")
    grid = pd.DataFrame(index=pd.Index(list(factors), name=rows), columns=pd.Index(list(factors), name=columns),
                        dtype=float)
    for fr in factors:
        for fc in factors:
            params = base.scaled(rows, fr).scaled(columns, fc)
            grid.loc[fr, fc] = _sharpe(trend_returns(prices, params, **kwargs), start)
    return grid


def performance_by_vol_regime(
    returns: pd.Series,
    regime_vol: pd.Series,
    labels: Sequence[str] = ("low", "mid", "high"),
    periods_per_year: int = PERIODS_PER_YEAR,
) -> pd.DataFrame:
    """Annualised return, vol and Sharpe of ``returns`` in each volatility regime.

    The regime of session t is the quantile bucket (equal counts over the sample, so a
    descriptive, in-sample split) of ``regime_vol`` at t-1: known at the previous close, the
    regime never uses the day's own move.

    Parameters
    ----------
    returns : Series
        Daily returns (fractions), index ``session``.
    regime_vol : Series
        A volatility measure per session (e.g. the market's annualised realised vol), same
        index as ``returns`` or a superset.
    labels : sequence of str
        Regime names from calm to volatile; their number sets the number of buckets.
    periods_per_year : int
        Annualisation (``pipeline.research.validation.PERIODS_PER_YEAR`` by default).

    Returns
    -------
    DataFrame
        Index ``regime`` (``labels``); columns ``sessions``, ``vol_from``, ``vol_to`` (the
        bucket's range of ``regime_vol``), ``annual_return`` (mean x ppy), ``annual_vol``
        (std(ddof=1) x sqrt(ppy)), ``sharpe``.

    Raises
    ------
    ValueError
        Fewer than two labels, or a bucket with fewer than two sessions.
    """
    if len(labels) < 2:
        raise ValueError("performance_by_vol_regime needs at least two regime labels")
    known = regime_vol.reindex(returns.index).shift(1)
    ok = known.notna() & returns.notna()
    r, v = returns[ok], known[ok]
    bucket = pd.qcut(v, len(labels), labels=list(labels))
    rows = {}
    for label in labels:
        x = r[bucket == label].to_numpy(dtype=float)
        if len(x) < 2:
            raise ValueError(f"regime {label!r} has {len(x)} session(s); use fewer labels or more data")
        vb = v[bucket == label]
        sd = x.std(ddof=1)
        rows[label] = {"sessions": len(x), "vol_from": float(vb.min()), "vol_to": float(vb.max()),
                       "annual_return": x.mean() * periods_per_year, "annual_vol": sd * np.sqrt(periods_per_year),
                       "sharpe": x.mean() / sd * np.sqrt(periods_per_year) if sd > 0 else float("nan")}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("regime")
