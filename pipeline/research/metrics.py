"""Performance statistics of a daily return series.

Conventions (stated once, used by every statistic):

* ``periods_per_year = 256`` sessions by default (Carver, pysystemtrade
  ``syscore/dateutils.py``: ``BUSINESS_DAYS_IN_YEAR = 256``, so ``sqrt = 16``); empyrical and
  quantstats default to 252, so their default Sharpe is ours times ``sqrt(252 / 256)``.
* The risk-free rate is 0: the backtest's returns are already excess returns of a futures-style
  notional account.
* Level statistics (``total_return``, ``cagr``, ``max_drawdown``, its duration and ``calmar``)
  use the wealth curve starting at ``W_0 = 1``: compounded, ``W_t = prod_{s<=t}(1 + r_s)``, as
  empyrical and quantstats do (the default), or additive, ``W_t = 1 + sum_{s<=t} r_s``, for returns
  on a fixed capital (``compounded=False``): the backtest's fixed-capital ``equity`` is
  ``capital x W_t`` exactly, so its report's headline agrees with the curve it draws.
* Moment statistics (``annual_return``, ``annual_vol``, ``sharpe``, ``sortino``, ``skew``) use
  the arithmetic daily returns.
* A ratio whose denominator is 0 is NaN (no inf), so the dict can be stored as JSON metadata.

``tests/test_metrics_crosscheck.py`` checks ``total_return``, ``cagr``, ``annual_vol``, ``sharpe``,
``sortino``, ``max_drawdown``, ``calmar`` against empyrical-reloaded (with the same ``annualization``,
risk-free 0) and ``skew`` against scipy, to 1e-10 on real daily returns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["METRIC_NAMES", "PERIODS_PER_YEAR", "performance_metrics"]

#: Carver's business days per year (pysystemtrade ``BUSINESS_DAYS_IN_YEAR``).
PERIODS_PER_YEAR = 256

#: Keys of :func:`performance_metrics`, in display order.
METRIC_NAMES = (
    "total_return",
    "cagr",
    "annual_return",
    "annual_vol",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_duration",
    "calmar",
    "win_rate",
    "profit_factor",
    "skew",
    "realised_vol_vs_target",
)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 and not math.isnan(den) else math.nan


def performance_metrics(
    returns: pd.Series,
    vol_target: float | None = None,
    periods_per_year: int = PERIODS_PER_YEAR,
    compounded: bool = True,
) -> dict[str, float]:
    """Standard performance statistics of daily returns.

    Parameters
    ----------
    returns : Series
        Fractional returns per session (0.01 = 1 %), index ``session``. NaN entries are dropped.
    vol_target : float, optional
        Annualised volatility target as a fraction (0.25 = 25 %); needed only for
        ``realised_vol_vs_target``.
    periods_per_year : int, default 256
        Sessions per year used to annualise (Carver's 256).
    compounded : bool, default True
        How the wealth ``W`` behind the level statistics grows: True, ``W_t = prod(1 + r)`` (returns
        on a capital that is reinvested: empyrical's convention, a compounding backtest); False,
        ``W_t = 1 + sum(r)`` (returns on a fixed capital: the equity curve ``capital + cumsum(pnl)``
        of a fixed-capital backtest, so the headline total return, CAGR and drawdown are those of
        the curve the report draws). The return statistics (Sharpe, vol, ...) do not depend on it.

    Returns
    -------
    dict of str -> float
        With ``n`` returns ``r``, ``ppy = periods_per_year`` and ``W`` the wealth (compounded or
        not, ``compounded``):

        - ``total_return``: ``W_n - 1``.
        - ``cagr``: ``W_n ** (ppy / n) - 1`` (empyrical ``cagr``); -1 if ``W_n <= 0``.
        - ``annual_return``: ``mean(r) * ppy``, the arithmetic annual return. Not empyrical's
          ``annual_return``, which is the compounded rate (our ``cagr``).
        - ``annual_vol``: ``std(r, ddof=1) * sqrt(ppy)``.
        - ``sharpe``: ``mean(r) / std(r, ddof=1) * sqrt(ppy)`` (risk-free 0).
        - ``sortino``: ``mean(r) * ppy / (sqrt(mean(min(r, 0)**2)) * sqrt(ppy))`` (empyrical:
          the downside deviation averages over all n sessions, target 0).
        - ``max_drawdown``: ``min(W_t / max_{s<=t} W_s - 1)`` with ``W_0 = 1`` included in the
          running peak (empyrical); <= 0.
        - ``max_drawdown_duration``: the longest run of consecutive sessions with ``W_t`` below
          its running peak (a drawdown still open at the end counts to the last session).
        - ``calmar``: ``cagr / |max_drawdown|``.
        - ``win_rate``: positive sessions / sessions with a non-zero return (quantstats
          ``win_rate`` also leaves zero-return sessions out).
        - ``profit_factor``: ``sum(r > 0) / |sum(r < 0)|``.
        - ``skew``: adjusted Fisher-Pearson sample skewness (pandas ``Series.skew``, equal to
          ``scipy.stats.skew(bias=False)``).
        - ``realised_vol_vs_target``: ``annual_vol / vol_target``; NaN without a target.

    Notes
    -----
    Empty or all-zero returns give NaN for every key (nothing was traded, so no statistic is
    meaningful); a single return gives NaN for the ``ddof=1`` statistics. Any ratio with a zero
    denominator (no losing session, zero volatility, no drawdown) is NaN. Never raises for
    numeric input.
    """
    r = pd.Series(returns, dtype=float).dropna()
    out = dict.fromkeys(METRIC_NAMES, math.nan)
    n = len(r)
    if n == 0 or (r == 0).all():
        return out

    x = r.to_numpy()
    ppy = float(periods_per_year)
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + x) if compounded else 1.0 + np.cumsum(x)])
    final = wealth[-1]
    out["total_return"] = float(final - 1.0)
    out["cagr"] = float(final ** (ppy / n) - 1.0) if final > 0 else -1.0

    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    out["annual_return"] = mean * ppy
    out["annual_vol"] = std * math.sqrt(ppy)
    out["sharpe"] = _ratio(mean, std) * math.sqrt(ppy)
    downside = math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2)))
    out["sortino"] = _ratio(mean * ppy, downside * math.sqrt(ppy))

    peak = np.maximum.accumulate(wealth)
    underwater = wealth / peak - 1.0
    out["max_drawdown"] = float(underwater.min())
    out["max_drawdown_duration"] = float(_longest_run(underwater[1:] < 0))
    out["calmar"] = _ratio(out["cagr"], abs(out["max_drawdown"]))

    gains = float(x[x > 0].sum())
    losses = float(x[x < 0].sum())
    out["win_rate"] = _ratio(float((x > 0).sum()), float((x != 0).sum()))
    out["profit_factor"] = _ratio(gains, abs(losses))
    out["skew"] = float(r.skew()) if n > 2 else math.nan
    if vol_target:
        out["realised_vol_vs_target"] = out["annual_vol"] / vol_target
    return out


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a boolean array, vectorised."""
    if not flags.any():
        return 0
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return int((ends - starts).max())
