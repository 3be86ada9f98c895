"""Daily price volatility of each instrument (carver.md §2.1).

:func:`estimate_vol` is the estimator the configuration chooses (``vol.estimator``): ``robust``
(the default, below), ``ewma`` (the same without the floor) or ``mixed`` (:func:`mixed_vol`).
The default vol is pysystemtrade's legacy ``robust_vol_calc`` (``sysquant/estimators/vol.py``): an
exponentially weighted standard deviation of daily *price differences* (not % returns), floored
at a tiny absolute minimum and at the 5% quantile of its own recent history, so a quiet spell
cannot shrink the vol (and blow up positions and EWMAC forecasts) without limit.

Gaps. Every calculation runs on each instrument's *own observed prices*: a session where an
instrument has no price is skipped, so the change across a missing session is one change
(price after minus price before) rather than two NaN changes, and the EWMA span and the floor
window count observations, as they would for that instrument alone. The result is then put back
on the session grid and forward-filled over sessions without a price (forward-fill is causal:
a value at session d depends on prices up to d only). Before an instrument's first price the vol
stays NaN. After its last price (delisted, or today's price not in yet) the last vol carries on;
callers that must not trade without a price mask on the price themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import VolConfig

#: Carver annualises with 256 business days, sqrt(256) = 16 (pst ``syscore/dateutils.py``).
ROOT_BDAYS_INYEAR = 16.0


class VolatilityError(ValueError):
    """Input to a volatility calculation is malformed; the message says which and how to fix it."""


def _check_wide(frame: pd.DataFrame, name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise VolatilityError(f"{name}: expected a pandas DataFrame (session x instrument), got {type(frame).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise VolatilityError(f"{name}: index must be a DatetimeIndex of sessions, got {type(frame.index).__name__}")
    if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
        raise VolatilityError(f"{name}: sessions must be unique and ascending; sort_index() and drop duplicates first")


def _pack(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move each column's observed values to the top of the column (ragged, NaN-padded below).

    Returns the packed array (max observations x columns) and, for every observed cell of
    ``frame``, its row, its column and its row in the packed array. Column-wise operations on
    the packed array see each instrument's own observations with no gaps; trailing padding
    never influences earlier rows of causal operations (ewm, rolling, diff).
    """
    values = frame.to_numpy(dtype=float)
    observed = ~np.isnan(values)
    rows, cols = np.nonzero(observed)
    packed_row = (np.cumsum(observed, axis=0) - 1)[rows, cols]
    n_rows = int(observed.sum(axis=0).max()) if values.size else 0
    packed = np.full((n_rows, values.shape[1]), np.nan)
    packed[packed_row, cols] = values[rows, cols]
    return packed, rows, cols, packed_row


def _unpack(
    packed: np.ndarray, like: pd.DataFrame, rows: np.ndarray, cols: np.ndarray, packed_row: np.ndarray
) -> pd.DataFrame:
    out = np.full(like.shape, np.nan)
    out[rows, cols] = packed[packed_row, cols]
    return pd.DataFrame(out, index=like.index, columns=like.columns)


def daily_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """Daily price changes of each instrument over its own observed prices.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (DatetimeIndex, ascending), columns instruments
        Back-adjusted (or plain) prices in price points; NaN = no price that session.

    Returns
    -------
    DataFrame, same index and columns
        ``price_t - price_prev`` in price points, where ``price_prev`` is the instrument's
        previous observed price (so a missing session yields one change, not two NaN). NaN at
        sessions without a price and at each instrument's first price.

    Raises
    ------
    VolatilityError
        ``prices`` is not a wide frame with an ascending unique DatetimeIndex.

    Notes
    -----
    pst ``rawdata.daily_returns`` (``adjusted_price.resample("1B").last().diff()``), but skipping
    gaps instead of resampling them to NaN.

    Convention for a missing session (a blank price, a holiday of the instrument's exchange):
    the return of the next priced session is the whole move since the last price, one return
    where pysystemtrade has two NaN (its ``diff`` on the business-day grid leaves out both the
    missing session and the one after it). Chosen because (1) no move is lost: an instrument's
    returns add up to its last price minus its first, so a market that jumps across a holiday
    still shows the jump to the vol (leaving it out understates the risk exactly when a gap hides
    a move); (2) the returns depend only on the instrument's own prices, not on the session grid,
    so they are the same whether the instrument is read alone or in a panel (tests/test_signals_company.py).
    The cost: a two-session move counts as one observation, so across gaps the vol reads slightly
    higher than per-session; with a few holidays a year against a 35-observation span that is small.
    """
    _check_wide(prices, "daily_returns prices")
    prices = prices.astype(float)
    return prices - prices.ffill().shift(1)


def robust_vol(
    prices: pd.DataFrame,
    span: int = 35,
    min_periods: int = 10,
    vol_abs_min: float = 1e-10,
    floor: bool = True,
    floor_min_quantile: float = 0.05,
    floor_min_periods: int = 100,
    floor_days: int = 500,
) -> pd.DataFrame:
    """Daily volatility in price points, pysystemtrade's legacy ``robust_vol_calc``.

    ``v = daily_returns.ewm(span, adjust=True, min_periods).std()`` (pandas' bias-corrected
    exponentially weighted std), ``v = max(v, vol_abs_min)``; then, if ``floor``, the floor
    ``f = v.rolling(floor_days, min_periods=floor_min_periods).quantile(floor_min_quantile)``
    with ``f = 0`` at the first observation and forward-filled (so it is 0 until
    ``floor_min_periods`` vols exist) and ``vol = max(v, f)``.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (DatetimeIndex, ascending, unique), columns instruments
        Back-adjusted prices in price points; NaN = no price (not yet listed, or a missing session).
    span, min_periods : int
        EWMA span and minimum number of price changes (carver.md §2.1 defaults: 35, 10).
    vol_abs_min : float
        Absolute minimum vol, price points (1e-10).
    floor : bool
        Apply the rolling-quantile floor (pst ``vol_floor``).
    floor_min_quantile, floor_min_periods, floor_days : float, int, int
        Quantile (0.05), minimum number of vols (100) and window in observations (500) of the floor.

    Returns
    -------
    DataFrame, same index and columns as ``prices``
        Daily vol in price points (not annualised). NaN before an instrument's first
        ``min_periods + 1`` prices; forward-filled over sessions without a price (see module
        docstring). Each instrument's calculation runs on its own observed prices.

    Raises
    ------
    VolatilityError
        Malformed ``prices`` or parameters out of range.

    Notes
    -----
    Source: pst ``sysquant/estimators/vol.py::robust_vol_calc`` (``simple_ewvol_calc``,
    ``apply_min_vol``, ``apply_vol_floor``), carver.md §2.1. No backfill (pst's ``backfill``
    option would be look-ahead).
    """
    _check_wide(prices, "robust_vol prices")
    if not (span >= 1 and min_periods >= 1 and floor_min_periods >= 1 and floor_days >= floor_min_periods):
        raise VolatilityError(
            f"robust_vol: need span >= 1, min_periods >= 1 and floor_days >= floor_min_periods >= 1; "
            f"got span={span}, min_periods={min_periods}, floor_days={floor_days}, "
            f"floor_min_periods={floor_min_periods}"
        )
    if not 0.0 <= floor_min_quantile <= 1.0:
        raise VolatilityError(f"robust_vol: floor_min_quantile={floor_min_quantile} must lie in [0, 1]")

    packed, rows, cols, packed_row = _pack(prices)
    returns = pd.DataFrame(packed).diff()
    vol = returns.ewm(span=span, adjust=True, min_periods=min_periods).std()
    values = np.maximum(vol.to_numpy(), vol_abs_min)  # NaN vol stays NaN
    if floor and len(vol):
        vol = pd.DataFrame(values, copy=False)
        vol_floor = vol.rolling(window=floor_days, min_periods=floor_min_periods).quantile(floor_min_quantile)
        vol_floor.iloc[0] = 0.0  # pst: 0 before enough history, so the floor is always defined
        np.maximum(values, vol_floor.ffill().to_numpy(), out=values)  # NaN vol stays NaN
    return _unpack(values, prices, rows, cols, packed_row).ffill()


def estimate_vol(prices: pd.DataFrame, config: VolConfig | None = None) -> pd.DataFrame:
    """Daily vol in price points by the estimator of ``config`` (``vol`` in the configuration).

    Parameters
    ----------
    prices : DataFrame, index ``session`` (ascending, unique), columns instruments
        Back-adjusted prices in price points; NaN = no price.
    config : VolConfig, optional
        ``estimator`` ``robust`` (:func:`robust_vol` with its floor), ``ewma`` (:func:`robust_vol`
        without the floor: pst ``simple_ewvol_calc``) or ``mixed`` (:func:`mixed_vol`), with their
        spans; None = the defaults (``robust``, span 35).

    Returns
    -------
    DataFrame, same index and columns as ``prices``
        Daily vol in price points, not annualised (see the estimator's function).

    Raises
    ------
    VolatilityError
        As the estimator's function.
    """
    config = config or VolConfig()
    if config.estimator == "mixed":
        return mixed_vol(prices, span=config.span, min_periods=config.min_periods,
                         slow_vol_years=config.slow_vol_years, proportion_of_slow_vol=config.proportion_of_slow_vol)
    return robust_vol(prices, span=config.span, min_periods=config.min_periods, floor=config.estimator == "robust",
                      floor_min_quantile=config.floor_min_quantile, floor_min_periods=config.floor_min_periods,
                      floor_days=config.floor_days)


def percentage_vol(vol: pd.DataFrame, prices: pd.DataFrame, annualise: bool = True) -> pd.DataFrame:
    """Volatility as a percentage of the price.

    ``100 * vol / |price|``, times 16 (sqrt of 256 business days) if ``annualise``.

    Parameters
    ----------
    vol : DataFrame, index ``session``, columns instruments
        Daily vol in price points (e.g. from :func:`robust_vol`).
    prices : DataFrame, index ``session``, columns instruments
        The price the position is sized on, in price points. For futures this is the current
        contract's price, not the back-adjusted series (carver.md §2.1 and §4).
    annualise : bool
        ``True``: annualised % (x16); ``False``: daily %.

    Returns
    -------
    DataFrame, index and columns of ``vol``
        Percent (5.0 means 5%). The price is forward-filled (causal) so it matches the
        forward-filled vol over gaps; NaN where no price is known yet or the price is 0.

    Raises
    ------
    VolatilityError
        Malformed frames, or an instrument of ``vol`` missing from ``prices``.

    Notes
    -----
    Source: pst ``systems/rawdata.py::get_daily_percentage_volatility``.
    """
    _check_wide(vol, "percentage_vol vol")
    _check_wide(prices, "percentage_vol prices")
    missing = [c for c in vol.columns if c not in prices.columns]
    if missing:
        raise VolatilityError(f"percentage_vol: no prices for instruments {missing}; pass prices with every vol column")
    price = prices.astype(float).reindex(index=vol.index.union(prices.index)).ffill().reindex(index=vol.index)
    denominator = price[vol.columns].abs().replace(0.0, np.nan)
    perc = 100.0 * vol.astype(float) / denominator
    return perc * ROOT_BDAYS_INYEAR if annualise else perc


@dataclass(frozen=True)
class BoundedVol:
    """Outcome of :func:`bounded_vol`.

    Attributes
    ----------
    vol : DataFrame
        Index and columns of the input vol; daily vol in price points, raised to the floor where it
        was below it, NaN where it was above the ceiling (refused).
    raised : DataFrame of bool
        Where the floor applied.
    refused : DataFrame of bool
        Where the ceiling applied.
    """

    vol: pd.DataFrame
    raised: pd.DataFrame
    refused: pd.DataFrame


def bounded_vol(
    vol: pd.DataFrame,
    prices: pd.DataFrame,
    asset_classes: Mapping[str, str],
    floor_vs_class: float | None = 0.1,
    ceiling_vs_long_run: float | None = 10.0,
    long_run_sessions: int = 2560,
    min_long_run: int = 256,
) -> BoundedVol:
    """Hold a vol estimate within bounds set by its asset class and its own long-run vol.

    In percentage terms (:func:`percentage_vol`, so instruments of a class compare):

    * **floor**: ``max(v, floor_vs_class x m_class)`` where ``m_class`` is the median % vol of the
      instrument's asset class on that session (classes of 3 or more instruments with a vol; a
      smaller class uses the instrument's own long-run median instead). A flat, stale series has a
      vol near zero, and its position, inversely proportional, would be huge;
    * **ceiling**: a vol above ``ceiling_vs_long_run x max(m_long, m_class)`` is refused (NaN),
      where ``m_long`` is the median of the instrument's own % vol over the previous
      ``long_run_sessions`` (at least ``min_long_run``). A bad print that reached the vol inflates it
      tens of times; sizing with it would shrink the position and, through the weights, the whole
      book. A refused vol gives no position (the buffer holds the last one) and no vol-normalised
      return for the weight estimate.

    Everything is causal: the long-run median uses sessions before ``d``, the class median the
    vols of session ``d``.

    Parameters
    ----------
    vol : DataFrame, index ``session``, columns instruments
        Daily vol in price points (:func:`robust_vol`).
    prices : DataFrame, index ``session``, columns instruments
        The prices the vol is measured against (price points).
    asset_classes : mapping of str to str
        Instrument -> asset class; instruments not in it form one class.
    floor_vs_class, ceiling_vs_long_run : float or None
        The bounds as fractions / multiples of the anchors (None = that bound is off).
    long_run_sessions, min_long_run : int
        Window and minimum count of the long-run median.

    Returns
    -------
    BoundedVol

    Raises
    ------
    VolatilityError
        Malformed frames (as :func:`percentage_vol`), or a bound out of range.

    Notes
    -----
    This project's guard. Carver's vol floor (:func:`robust_vol`, pysystemtrade ``vol_floor``) is
    relative to the instrument's own recent vol, so a series that has been flat for longer than its
    window has a floor near zero too (issue found on ETHANOL's flat last 180 sessions in
    pysystemtrade's 2023 data).
    """
    if floor_vs_class is not None and not 0 < floor_vs_class < 1:
        raise VolatilityError(f"bounded_vol: floor_vs_class must lie in (0, 1), got {floor_vs_class}")
    if ceiling_vs_long_run is not None and not ceiling_vs_long_run > 1:
        raise VolatilityError(f"bounded_vol: ceiling_vs_long_run must be > 1, got {ceiling_vs_long_run}")
    pct = percentage_vol(vol, prices, annualise=False)
    long_run = pct.rolling(long_run_sessions, min_periods=min_long_run).median().shift(1)
    classes = pd.Series({c: asset_classes.get(c, "") for c in pct.columns})
    class_median = pd.DataFrame(np.nan, index=pct.index, columns=pct.columns)
    for _, members in classes.groupby(classes):
        cols = list(members.index)
        med = pct[cols].median(axis=1).where(pct[cols].notna().sum(axis=1) >= 3)
        class_median[cols] = np.repeat(med.to_numpy()[:, None], len(cols), axis=1)
    out = vol.astype(float).copy()
    raised = pd.DataFrame(False, index=vol.index, columns=vol.columns)
    refused = raised.copy()
    if floor_vs_class is not None:
        floor_pct = floor_vs_class * class_median.fillna(long_run)
        raised = (pct < floor_pct).fillna(False)
        price = prices.astype(float).reindex(index=vol.index.union(prices.index)).ffill().reindex(index=vol.index)
        out = out.mask(raised, floor_pct * price[vol.columns].abs() / 100.0)  # the floor in price points
    if ceiling_vs_long_run is not None:
        anchor = np.fmax(long_run, class_median)
        refused = (pct > ceiling_vs_long_run * anchor).fillna(False)
        out = out.mask(refused)
    return BoundedVol(out, raised, refused)


def mixed_vol(
    prices: pd.DataFrame,
    span: int = 35,
    min_periods: int = 10,
    slow_vol_years: float = 10,
    proportion_of_slow_vol: float = 0.3,
    vol_abs_min: float = 1e-10,
) -> pd.DataFrame:
    """Daily volatility in price points, pysystemtrade's current default ``mixed_vol_calc``.

    ``v = daily_returns.ewm(span, adjust=True, min_periods).std()`` (as :func:`robust_vol`, no
    quantile floor), ``slow = v.ewm(span=slow_vol_years * 256).mean()`` (an EWMA of the vol
    itself, not a rolling mean), ``vol = proportion_of_slow_vol * slow + (1 - proportion) * v``,
    then ``vol = max(vol, vol_abs_min)``. Mixing in the slow vol pulls a vol that has been quiet
    for a while back towards its long-run level, so positions do not balloon in calm spells.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (DatetimeIndex, ascending, unique), columns instruments
        Back-adjusted prices in price points (may be negative); NaN = no price.
    span, min_periods : int
        EWMA span and minimum number of price changes of the fast vol (defaults.yaml: 35, 10).
    slow_vol_years : float
        Span of the slow EWMA in years of 256 observations (defaults.yaml 10; the pst function
        signature says 20 and Rob's own config uses 20).
    proportion_of_slow_vol : float
        Weight of the slow vol, in [0, 1] (defaults.yaml 0.3; Rob's config 0.35).
    vol_abs_min : float
        Absolute minimum vol, price points (1e-10).

    Returns
    -------
    DataFrame, same index and columns as ``prices``
        Daily vol in price points (not annualised). NaN until an instrument has
        ``min_periods + 1`` prices; forward-filled over sessions without a price. Each
        instrument runs on its own observed prices (gaps are skipped, module docstring), so the
        slow EWMA counts observations, as pst's does on a gap-free series.

    Raises
    ------
    VolatilityError
        Malformed ``prices`` or parameters out of range.

    Notes
    -----
    Source: pst ``sysquant/estimators/vol.py::mixed_vol_calc`` with ``sysdata/config/defaults.yaml``
    ``volatility_calculation`` (carver.md §2.1). The slow EWMA uses pandas' default
    ``min_periods=0``, as pst does, so at the start ``slow`` tracks ``v``. No backfill (pst's
    ``backfill`` option would be look-ahead).
    """
    _check_wide(prices, "mixed_vol prices")
    if not (span >= 1 and min_periods >= 1 and slow_vol_years > 0):
        raise VolatilityError(
            f"mixed_vol: need span >= 1, min_periods >= 1 and slow_vol_years > 0; got span={span}, "
            f"min_periods={min_periods}, slow_vol_years={slow_vol_years}"
        )
    if not 0.0 <= proportion_of_slow_vol <= 1.0:
        raise VolatilityError(f"mixed_vol: proportion_of_slow_vol={proportion_of_slow_vol} must lie in [0, 1]")

    packed, rows, cols, packed_row = _pack(prices)
    returns = pd.DataFrame(packed).diff()
    fast = returns.ewm(span=span, adjust=True, min_periods=min_periods).std()
    slow = fast.ewm(span=slow_vol_years * 256.0).mean()
    vol = proportion_of_slow_vol * slow + (1.0 - proportion_of_slow_vol) * fast
    vol = vol.where(vol.isna() | (vol >= vol_abs_min), vol_abs_min)
    return _unpack(vol.to_numpy(), prices, rows, cols, packed_row).ffill()


def vol_normalised_returns(prices: pd.DataFrame, vol: pd.DataFrame) -> pd.DataFrame:
    """Daily returns of a position scaled to unit daily volatility.

    ``r[d, i] = (price[d, i] - price[d-1, i]) / vol[d-1, i]``: the price change over one session
    divided by the price-unit vol known at the previous close, so the value for ``d`` uses data up
    to ``d`` only. Carver measures risk in price differences over price-unit vol (carver.md §2.1).

    Parameters
    ----------
    prices : pd.DataFrame
        Index ``session`` (ascending, unique), columns instruments; close prices in price points.
    vol : pd.DataFrame
        Daily volatility in price points (e.g. Carver's robust vol), same sessions and at least
        the same instruments as ``prices`` (extra columns are ignored).

    Returns
    -------
    pd.DataFrame
        Index and columns of ``prices``; unitless returns with daily standard deviation near 1.
        NaN where either close or the previous session's vol is missing, and where that vol is
        not positive (a zero vol would give an infinite return). A gap is not bridged: the
        session after a missing close is NaN too (its change spans two sessions).

    Raises
    ------
    VolatilityError
        If ``vol`` lacks instruments of ``prices`` or its sessions differ.
    """
    missing = [str(c) for c in prices.columns if c not in vol.columns]
    if missing:
        raise VolatilityError(f"vol has no column for instruments {missing} of prices; compute it for them first")
    if not vol.index.equals(prices.index):
        raise VolatilityError("vol and prices must have the same sessions (index); align them first")
    vol = vol[prices.columns]
    prev_vol = vol.where(vol > 0).shift(1)
    out = prices.diff() / prev_vol
    return out.rename_axis(index="session", columns="instrument")
