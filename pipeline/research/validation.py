"""Statistical validation of a strategy's returns: significance tests, bootstrap intervals and
walk-forward evaluation.

A backtest's Sharpe ratio is one draw from a noisy distribution (Carver, ST ch. 3 and AFTS
ch. 1: about 0.3 of standard error per year of data for a Sharpe near 0.5). The tools here say
how noisy: a t-test of the mean return, a rank test between two return series, block
bootstrap confidence intervals that keep the serial dependence of daily returns, a Monte Carlo
distribution of the maximum drawdown, and walk-forward splitting so that every parameter is
estimated on data that precedes the returns it is judged on.

Statistics follow :mod:`pipeline.research.metrics`: 256 sessions per year, risk-free rate 0, CAGR and
drawdown on the compounded wealth curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.research.metrics import PERIODS_PER_YEAR

__all__ = [
    "BootstrapCI",
    "MannWhitneyResult",
    "TTestResult",
    "ValidationError",
    "WalkForwardResult",
    "annualised_sharpe",
    "block_bootstrap_ci",
    "block_bootstrap_indices",
    "cagr",
    "mann_whitney",
    "max_drawdown",
    "mean_return_ttest",
    "monte_carlo_max_drawdown",
    "walk_forward",
    "walk_forward_splits",
]

#: Largest number of resampled values held in memory at once (about 32 MB of float64).
_CHUNK_CELLS = 4_000_000


class ValidationError(ValueError):
    """Inputs to a validation function are unusable; the message says which and what to do."""


# --------------------------------------------------------------------------------------------
# Statistics over the last axis (work on one series or on a stack of resampled series)
# --------------------------------------------------------------------------------------------


def annualised_sharpe(returns: np.ndarray, periods_per_year: int = PERIODS_PER_YEAR) -> np.ndarray:
    """Sharpe ratio ``mean / std(ddof=1) * sqrt(ppy)`` over the last axis, risk-free rate 0.

    The convention of :func:`pipeline.research.metrics.performance_metrics` (and empyrical).

    Parameters
    ----------
    returns : ndarray of shape (..., n_sessions)
        Daily returns (fractions); no NaN.
    periods_per_year : int, default 256

    Returns
    -------
    ndarray of shape (...) (a float for 1-D input); NaN where the std is 0.
    """
    x = np.asarray(returns, dtype=float)
    std = x.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(std > 0, x.mean(axis=-1) / std, np.nan) * np.sqrt(periods_per_year)
    return out[()] if out.ndim == 0 else out


def cagr(returns: np.ndarray, periods_per_year: int = PERIODS_PER_YEAR) -> np.ndarray:
    """Compound annual growth rate ``W_n ** (ppy / n) - 1`` over the last axis, -1 if ``W_n <= 0``.

    Same convention as :func:`pipeline.research.metrics.performance_metrics` (empyrical ``cagr``:
    ``W_n = prod(1 + r)``, years = sessions / ppy).

    Parameters
    ----------
    returns : ndarray of shape (..., n_sessions)
    periods_per_year : int, default 256

    Returns
    -------
    ndarray of shape (...) (a float for 1-D input).
    """
    x = np.asarray(returns, dtype=float)
    final = np.prod(1.0 + x, axis=-1)
    with np.errstate(invalid="ignore"):
        grown = np.abs(final) ** (periods_per_year / x.shape[-1]) - 1.0
    out = np.where(final > 0, grown, -1.0)
    return out[()] if out.ndim == 0 else out


def max_drawdown(returns: np.ndarray) -> np.ndarray:
    """Largest fall of the compounded wealth from its running peak, over the last axis.

    ``min_t(W_t / max_{s<=t} W_s - 1)`` with ``W_0 = 1`` in the running peak (empyrical, and
    :func:`pipeline.research.metrics.performance_metrics`); a fraction <= 0.

    Parameters
    ----------
    returns : ndarray of shape (..., n_sessions)

    Returns
    -------
    ndarray of shape (...) (a float for 1-D input).
    """
    x = np.asarray(returns, dtype=float)
    wealth = np.cumprod(1.0 + x, axis=-1)
    peak = np.maximum(np.maximum.accumulate(wealth, axis=-1), 1.0)
    out = np.minimum((wealth / peak - 1.0).min(axis=-1), 0.0)
    return out[()] if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------
# Significance tests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TTestResult:
    """One-sample t-test of the mean return against 0.

    Attributes: ``statistic`` (t), ``p_value``, ``n`` (returns used), ``mean`` (daily, fraction),
    ``alternative`` (as passed to scipy).
    """

    statistic: float
    p_value: float
    n: int
    mean: float
    alternative: str


@dataclass(frozen=True)
class MannWhitneyResult:
    """Mann-Whitney U test of two return samples.

    Attributes: ``statistic`` (U of the first sample), ``p_value``, ``n_a``, ``n_b``,
    ``alternative``.
    """

    statistic: float
    p_value: float
    n_a: int
    n_b: int
    alternative: str


def _clean(returns: pd.Series | np.ndarray | Sequence[float], where: str, minimum: int) -> np.ndarray:
    x = pd.Series(np.asarray(returns, dtype=float)).dropna().to_numpy()
    if len(x) < minimum:
        raise ValidationError(f"{where}: need at least {minimum} non-NaN returns, got {len(x)}")
    return x


def mean_return_ttest(returns: pd.Series | np.ndarray, alternative: str = "two-sided") -> TTestResult:
    """Is the mean daily return different from 0? (``scipy.stats.ttest_1samp``).

    Daily returns are serially dependent and fat-tailed, so read the p-value as a rough guide;
    :func:`block_bootstrap_ci` of the Sharpe ratio makes fewer assumptions.

    Parameters
    ----------
    returns : Series or ndarray of shape (n_sessions,)
        Daily returns (fractions); NaN dropped.
    alternative : {"two-sided", "greater", "less"}

    Returns
    -------
    TTestResult

    Raises
    ------
    ValidationError
        Fewer than 2 returns.
    """
    x = _clean(returns, "mean_return_ttest", 2)
    res = stats.ttest_1samp(x, 0.0, alternative=alternative)
    return TTestResult(float(res.statistic), float(res.pvalue), len(x), float(x.mean()), alternative)


def mann_whitney(
    returns_a: pd.Series | np.ndarray,
    returns_b: pd.Series | np.ndarray,
    alternative: str = "two-sided",
) -> MannWhitneyResult:
    """Do two return samples come from the same distribution? (``scipy.stats.mannwhitneyu``).

    A rank test: robust to fat tails, e.g. returns in high- vs low-volatility regimes, or of a
    rule before and after a change.

    Parameters
    ----------
    returns_a, returns_b : Series or ndarray
        Daily returns; NaN dropped; lengths may differ.
    alternative : {"two-sided", "greater", "less"}
        "greater" tests whether ``returns_a`` tends to be larger.

    Returns
    -------
    MannWhitneyResult

    Raises
    ------
    ValidationError
        Either sample is empty.
    """
    a = _clean(returns_a, "mann_whitney (returns_a)", 1)
    b = _clean(returns_b, "mann_whitney (returns_b)", 1)
    res = stats.mannwhitneyu(a, b, alternative=alternative)
    return MannWhitneyResult(float(res.statistic), float(res.pvalue), len(a), len(b), alternative)


# --------------------------------------------------------------------------------------------
# Block bootstrap
# --------------------------------------------------------------------------------------------


def block_bootstrap_indices(
    n: int,
    n_samples: int,
    block: int,
    rng: np.random.Generator,
    method: str = "stationary",
) -> np.ndarray:
    """Resampling indices of a block bootstrap, generated without a loop.

    * ``"stationary"`` (Politis & Romano 1994; ``arch.bootstrap.StationaryBootstrap``): blocks
      of geometric length with mean ``block``, each starting at a uniform random session and
      wrapping around the end. The resampled series is stationary.
    * ``"moving"`` (Kuensch 1989, circular variant of Politis & Romano 1992;
      ``arch.bootstrap.CircularBlockBootstrap``): blocks of exactly ``block`` sessions.

    Parameters
    ----------
    n : int
        Length of the original series (and of each resample).
    n_samples : int
        Number of resamples.
    block : int
        (Mean) block length in sessions, >= 1.
    rng : numpy Generator
    method : {"stationary", "moving"}

    Returns
    -------
    ndarray of int64, shape (n_samples, n)
        Indices into the original series.
    """
    if n < 1 or n_samples < 0 or block < 1:
        raise ValidationError(
            f"block_bootstrap_indices: need n >= 1, n_samples >= 0 and block >= 1, got {n}, {n_samples}, {block}"
        )
    if method == "stationary":
        # A new block starts at t=0 and then with probability 1/block at each session; within a
        # block the index steps by one (mod n) from the block's random start.
        new = rng.random((n_samples, n)) < 1.0 / block
        new[:, 0] = True
        starts = rng.integers(0, n, size=(n_samples, n))
        t = np.arange(n)
        block_start_t = np.maximum.accumulate(np.where(new, t, 0), axis=1)
        start_of_block = np.take_along_axis(starts, block_start_t, axis=1)
        return (start_of_block + (t - block_start_t)) % n
    if method == "moving":
        n_blocks = -(-n // block)
        starts = rng.integers(0, n, size=(n_samples, n_blocks))
        idx = (starts[:, :, None] + np.arange(block)) % n
        return idx.reshape(n_samples, n_blocks * block)[:, :n]
    raise ValidationError(f"block_bootstrap_indices: method must be 'stationary' or 'moving', got {method!r}")


def _resampled_statistic(
    x: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_boot: int,
    block: int,
    seed: int | None,
    method: str,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // len(x))
    out = []
    for start in range(0, n_boot, chunk):  # bounded memory; each chunk is vectorised
        idx = block_bootstrap_indices(len(x), min(chunk, n_boot - start), block, rng, method)
        out.append(np.asarray(statistic(x[idx]), dtype=float).reshape(-1))
    return np.concatenate(out)


def _check_bootstrap(x: np.ndarray, n_boot: int, block: int, where: str) -> None:
    if n_boot < 1:
        raise ValidationError(f"{where}: n_boot/n_paths must be >= 1, got {n_boot}")
    if not 1 <= block <= len(x):
        raise ValidationError(f"{where}: block must be in [1, {len(x)}] (the series length), got {block}")


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap confidence interval.

    Attributes: ``estimate`` (the statistic of the original series), ``lower``, ``upper``,
    ``std_error`` (std of the bootstrap distribution), ``ci`` (coverage, e.g. 0.95),
    ``n_boot``, ``block``, ``method``.
    """

    estimate: float
    lower: float
    upper: float
    std_error: float
    ci: float
    n_boot: int
    block: int
    method: str


def block_bootstrap_ci(
    returns: pd.Series | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] = annualised_sharpe,
    n_boot: int = 2000,
    block: int = 20,
    ci: float = 0.95,
    seed: int | None = 0,
    method: str = "stationary",
) -> BootstrapCI:
    """Percentile confidence interval of a return statistic by block bootstrap.

    Resampling blocks of consecutive sessions keeps the serial correlation and volatility
    clustering that an i.i.d. bootstrap would destroy. The default is the stationary bootstrap
    (geometric blocks, mean length ``block``); ``method="moving"`` uses fixed circular blocks
    (:func:`block_bootstrap_indices`).

    Parameters
    ----------
    returns : Series or ndarray of shape (n_sessions,)
        Daily returns (fractions); NaN dropped.
    statistic : callable, default :func:`annualised_sharpe`
        Maps an array of shape ``(..., n_sessions)`` to the statistic over its last axis (shape
        ``(...)``), e.g. :func:`annualised_sharpe`, :func:`cagr`, :func:`max_drawdown`.
    n_boot : int, default 2000
        Resamples.
    block : int, default 20
        (Mean) block length in sessions (about a month).
    ci : float, default 0.95
        Coverage of the interval, in (0, 1).
    seed : int or None, default 0
        Seed of ``numpy.random.default_rng``; fixed by default so reports are reproducible.
    method : {"stationary", "moving"}

    Returns
    -------
    BootstrapCI
        ``lower``/``upper`` are the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of the
        bootstrap distribution (Efron's percentile interval).

    Raises
    ------
    ValidationError
        Fewer than 2 returns, ``ci`` outside (0, 1), ``n_boot < 1`` or ``block`` outside
        ``[1, n]``.
    """
    x = _clean(returns, "block_bootstrap_ci", 2)
    if not 0 < ci < 1:
        raise ValidationError(f"block_bootstrap_ci: ci must lie in (0, 1), got {ci}")
    _check_bootstrap(x, n_boot, block, "block_bootstrap_ci")
    draws = _resampled_statistic(x, statistic, n_boot, block, seed, method)
    lower, upper = np.nanquantile(draws, [(1 - ci) / 2, (1 + ci) / 2])
    return BootstrapCI(
        estimate=float(statistic(x)),
        lower=float(lower),
        upper=float(upper),
        std_error=float(np.nanstd(draws, ddof=1)),
        ci=float(ci),
        n_boot=int(n_boot),
        block=int(block),
        method=method,
    )


def monte_carlo_max_drawdown(
    returns: pd.Series | np.ndarray,
    n_paths: int = 2000,
    block: int = 20,
    seed: int | None = 0,
    quantiles: Sequence[float] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95),
    method: str = "stationary",
) -> pd.Series:
    """Distribution of the maximum drawdown over block-bootstrapped return paths.

    The realised drawdown is one path; reshuffling blocks of the same returns shows how deep
    it could plausibly have been. Each path has the length of ``returns``; drawdowns use the
    compounded wealth curve (:func:`max_drawdown`).

    Parameters
    ----------
    returns : Series or ndarray of shape (n_sessions,)
        Daily returns (fractions); NaN dropped.
    n_paths : int, default 2000
    block : int, default 20
        (Mean) block length in sessions.
    seed : int or None, default 0
    quantiles : sequence of float
        Quantiles of the drawdown distribution to report; drawdowns are <= 0, so a low quantile
        is a severe drawdown (0.05 = the drawdown exceeded on 5 % of paths).
    method : {"stationary", "moving"}

    Returns
    -------
    Series
        Index ``quantile``; values max drawdown fractions (<= 0); name ``"max_drawdown"``.

    Raises
    ------
    ValidationError
        Fewer than 2 returns, ``n_paths < 1`` or ``block`` outside ``[1, n]``.
    """
    x = _clean(returns, "monte_carlo_max_drawdown", 2)
    _check_bootstrap(x, n_paths, block, "monte_carlo_max_drawdown")
    draws = _resampled_statistic(x, max_drawdown, n_paths, block, seed, method)
    q = np.asarray(quantiles, dtype=float)
    return pd.Series(np.quantile(draws, q), index=pd.Index(q, name="quantile"), name="max_drawdown")


# --------------------------------------------------------------------------------------------
# Walk-forward
# --------------------------------------------------------------------------------------------


def walk_forward_splits(
    index: pd.Index,
    train_len: int,
    test_len: int,
    stride: int | None = None,
    expanding: bool = False,
    allow_partial: bool = True,
) -> list[tuple[pd.Index, pd.Index]]:
    """Train/test windows that roll forward through time.

    Fold k trains on ``index[k*stride : k*stride + train_len]`` (or from the start when
    ``expanding``) and tests on the ``test_len`` sessions right after. ``stride`` must be at
    least ``test_len`` so that test windows never overlap and stitched out-of-sample returns
    count each session once (stride > test_len leaves gaps).

    Parameters
    ----------
    index : Index
        Ascending, unique sessions (e.g. a returns index).
    train_len, test_len : int
        Sessions per training / test window, >= 1.
    stride : int, optional
        Sessions between fold starts; defaults to ``test_len`` (contiguous test windows).
    expanding : bool, default False
        Anchor every training window at the first session (Carver's expanding window,
        pysystemtrade ``fit_dates`` "expanding") instead of a rolling one.
    allow_partial : bool, default True
        Keep a last test window shorter than ``test_len`` at the end of ``index``.

    Returns
    -------
    list of (train_index, test_index)
        Each a slice of ``index``; every test session is after every train session of its fold.

    Raises
    ------
    ValidationError
        Lengths < 1, ``stride < test_len``, an index that is not ascending and unique, or too
        few sessions for one fold.
    """
    stride = test_len if stride is None else stride
    if min(train_len, test_len, stride) < 1:
        raise ValidationError(
            f"walk_forward_splits: train_len, test_len and stride must be >= 1, got "
            f"{train_len}, {test_len}, {stride}"
        )
    if stride < test_len:
        raise ValidationError(
            f"walk_forward_splits: stride {stride} < test_len {test_len} would make test windows "
            "overlap; use stride >= test_len"
        )
    if not (index.is_monotonic_increasing and index.is_unique):
        raise ValidationError("walk_forward_splits: index must be ascending and unique; sort it first")
    n = len(index)
    if n <= train_len:
        raise ValidationError(
            f"walk_forward_splits: {n} sessions leave no test window after train_len={train_len}"
        )
    test_starts = np.arange(train_len, n, stride)
    if not allow_partial:
        test_starts = test_starts[test_starts + test_len <= n]
    return [
        (index[0 if expanding else t - train_len : t], index[t : min(t + test_len, n)])
        for t in test_starts
    ]


@dataclass(frozen=True)
class WalkForwardResult:
    """Output of :func:`walk_forward`.

    Attributes
    ----------
    returns : Series
        Stitched out-of-sample returns, index the test sessions of every fold in order.
    folds : DataFrame
        One row per fold (index ``fold``): ``train_start``, ``train_end``, ``test_start``,
        ``test_end``, ``n_train``, ``n_test``, ``mean`` (daily OOS return), ``sharpe``
        (annualised, 256), ``total_return`` (compounded), ``params`` (``repr`` of the fitted
        parameters).
    params : list
        The fitted parameters of each fold, as returned by ``fit``.
    """

    returns: pd.Series
    folds: pd.DataFrame
    params: list[Any]


def walk_forward(
    data: pd.DataFrame | pd.Series,
    fit: Callable[[pd.DataFrame | pd.Series], Any],
    apply: Callable[[Any, pd.DataFrame | pd.Series], pd.Series],
    train_len: int,
    test_len: int,
    stride: int | None = None,
    expanding: bool = False,
    allow_partial: bool = True,
) -> WalkForwardResult:
    """Fit on each training window, evaluate on the following test window, stitch the results.

    ``fit`` sees only ``data`` rows of the training window; ``apply`` sees only the fitted
    parameters and the rows of the test window, so no parameter can depend on the future.
    Features that need a warm-up history (moving averages, volatility) should be computed
    causally over the whole history first and passed in ``data``.

    Parameters
    ----------
    data : DataFrame or Series
        Index ``session`` (ascending, unique); whatever columns ``fit`` and ``apply`` need.
    fit : callable
        ``fit(train_rows) -> params``.
    apply : callable
        ``apply(params, test_rows) -> returns``: a Series of daily returns indexed by (a subset
        of) the test sessions; missing sessions count as NaN.
    train_len, test_len, stride, expanding, allow_partial
        As for :func:`walk_forward_splits`.

    Returns
    -------
    WalkForwardResult

    Raises
    ------
    ValidationError
        Split errors (see :func:`walk_forward_splits`), or ``apply`` returns a value that is
        not a Series or has sessions outside its test window.
    """
    splits = walk_forward_splits(data.index, train_len, test_len, stride, expanding, allow_partial)
    pieces, rows, params = [], [], []
    for k, (train_idx, test_idx) in enumerate(splits):  # one fit per fold, not per row
        p = fit(data.loc[train_idx])
        r = apply(p, data.loc[test_idx])
        if not isinstance(r, pd.Series):
            raise ValidationError(
                f"walk_forward: apply must return a pandas Series, got {type(r).__name__} (fold {k})"
            )
        outside = r.index.difference(test_idx)
        if len(outside):
            raise ValidationError(
                f"walk_forward: apply returned {len(outside)} sessions outside fold {k}'s test "
                f"window {test_idx[0]}..{test_idx[-1]} (first {outside[0]}); return test sessions only"
            )
        r = r.reindex(test_idx).astype(float)
        valid = r.dropna().to_numpy()
        pieces.append(r)
        params.append(p)
        rows.append(
            {
                "train_start": train_idx[0],
                "train_end": train_idx[-1],
                "test_start": test_idx[0],
                "test_end": test_idx[-1],
                "n_train": len(train_idx),
                "n_test": len(test_idx),
                "mean": float(valid.mean()) if len(valid) else np.nan,
                "sharpe": float(annualised_sharpe(valid)) if len(valid) > 1 else np.nan,
                "total_return": float(np.prod(1.0 + valid) - 1.0),
                "params": repr(p),
            }
        )
    folds = pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="fold"))
    returns = pd.concat(pieces)
    returns.name = "oos_returns"
    return WalkForwardResult(returns=returns, folds=folds, params=params)
