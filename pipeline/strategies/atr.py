"""True range and Wilder's average true range (ATR) over a wide panel of daily bars.

Source: J. Welles Wilder, *New Concepts in Technical Trading Systems* (1978), "Volatility Index":
the true range of a session is the largest of its high minus its low, its high minus the previous
close and the previous close minus its low; the ATR is its smoothed average with Wilder's
smoothing ``ATR_t = ATR_{t-1} + (TR_t - ATR_{t-1}) / n`` (an EWMA with ``alpha = 1/n``), seeded with
the simple mean of the first ``n`` true ranges.

Bars quarantined or flagged by the quality rules are absent from clean bars: a session with no bar
(NaN high, low or close) has no true range and leaves the ATR unchanged (the last value is carried,
so a stop can still be measured); the next bar's true range uses the last close before the gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ATRInputError", "true_range", "wilder_atr"]


class ATRInputError(ValueError):
    """The high, low and close panels do not line up or the period is not positive."""


def _check(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame) -> None:
    for name, frame in (("low", low), ("close", close)):
        if not (frame.index.equals(high.index) and frame.columns.equals(high.columns)):
            raise ATRInputError(f"true_range: {name} has a different index or columns than high; reindex all "
                                "three panels on the same sessions and instruments")


def true_range(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame) -> pd.DataFrame:
    """Wilder's true range of each bar, in price points.

    ``TR_t = max(high_t - low_t, |high_t - C|, |low_t - C|)`` where ``C`` is the last close before
    session t (the previous bar's close; across a missing bar, the close before the gap). On an
    instrument's first bar, ``TR = high - low``.

    Parameters
    ----------
    high, low, close : DataFrame
        Index ``session`` (ascending), columns instruments, price points; the same index and columns.
        NaN = no bar that session.

    Returns
    -------
    DataFrame
        Same index and columns; NaN where the bar has no high, low or close.

    Raises
    ------
    ATRInputError
        The three panels do not share index and columns.
    """
    _check(high, low, close)
    prev = close.ffill().shift(1).to_numpy(dtype=float)
    h, lo = high.to_numpy(dtype=float), low.to_numpy(dtype=float)
    has_bar = np.isfinite(h) & np.isfinite(lo) & np.isfinite(close.to_numpy(dtype=float))
    with np.errstate(invalid="ignore"):
        tr = np.fmax(h - lo, np.fmax(np.abs(h - prev), np.abs(lo - prev)))  # fmax: a NaN prev close drops out
    return pd.DataFrame(np.where(has_bar, tr, np.nan), index=high.index, columns=high.columns)


def wilder_atr(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame, period: int = 14) -> pd.DataFrame:
    """Wilder's average true range, in price points.

    ``ATR`` is NaN until an instrument has ``period`` true ranges; on that bar it is their simple
    mean; afterwards ``ATR_t = ATR_{t-1} + (TR_t - ATR_{t-1}) / period``. Sessions without a bar keep
    the last ATR (forward-filled), so a missing bar neither moves nor resets it.

    Parameters
    ----------
    high, low, close : DataFrame
        Index ``session``, columns instruments, price points (see :func:`true_range`).
    period : int, default 14
        Wilder's ``n`` (14 in the book).

    Returns
    -------
    DataFrame
        Same index and columns as ``high``.

    Raises
    ------
    ATRInputError
        Panels that do not line up, or ``period < 1``.

    Notes
    -----
    Vectorised over instruments and sessions: the recursion after the seed is pandas' ``ewm`` with
    ``alpha = 1 / period, adjust=False`` run on each instrument's true ranges from its seed on
    (the seed replaces the first ``period`` values), computed for the whole panel at once after
    packing each column's bars to the top. Source: Wilder (1978), see the module docstring.
    """
    if period < 1:
        raise ATRInputError(f"wilder_atr: period must be >= 1, got {period}")
    tr = true_range(high, low, close)
    values = tr.to_numpy(dtype=float)
    n_rows = values.shape[0]
    present = np.isfinite(values)
    # pack each instrument's true ranges to the top (rank = k-th bar of the instrument), run the recursion, unpack
    rank = np.cumsum(present, axis=0) - 1
    packed = np.full_like(values, np.nan)
    rows, cols = np.nonzero(present)
    packed[rank[rows, cols], cols] = values[rows, cols]
    seed = pd.DataFrame(packed).rolling(period, min_periods=period).mean().to_numpy()
    started = np.zeros_like(packed)
    if n_rows >= period:
        started[period - 1:] = packed[period - 1:]
        started[period - 1] = seed[period - 1]  # NaN where an instrument has fewer than `period` bars
    started[: period - 1] = np.nan
    smoothed = pd.DataFrame(started).ewm(alpha=1.0 / period, adjust=False, ignore_na=True).mean().to_numpy().copy()
    smoothed[np.isnan(started)] = np.nan  # pandas carries the last value over NaN; keep NaN in packed form
    out = np.full_like(values, np.nan)
    out[rows, cols] = smoothed[rank[rows, cols], cols]
    return pd.DataFrame(out, index=high.index, columns=high.columns).ffill()
