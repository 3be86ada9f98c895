"""Trading rules: raw (unscaled, uncapped) forecasts from prices (carver.md §2.2-2.3).

Each rule maps a wide price frame (session x instrument) to a wide raw-forecast frame of the same
shape. Lookbacks count sessions of the frame's index, as pysystemtrade counts business days. At
a session without a price the exponentially weighted averages carry their last value (pandas'
``ewm`` with ``ignore_na=False``, as in pst), so the forecast carries over the gap.
"""

from __future__ import annotations

import math

import pandas as pd


class RuleError(ValueError):
    """A trading rule got malformed input; the message says which and how to fix it."""


def _check_wide(frame: pd.DataFrame, name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise RuleError(f"{name}: expected a pandas DataFrame (session x instrument), got {type(frame).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise RuleError(f"{name}: index must be a DatetimeIndex of sessions, got {type(frame.index).__name__}")
    if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
        raise RuleError(f"{name}: sessions must be unique and ascending; sort_index() and drop duplicates first")


def ewmac(prices: pd.DataFrame, vol: pd.DataFrame, fast: int, slow: int) -> pd.DataFrame:
    """Raw EWMAC forecast: exponentially weighted moving average crossover, vol-normalised.

    ``raw = (price.ewm(span=fast, min_periods=1).mean() - price.ewm(span=slow, min_periods=1).mean())
    / vol.ffill()``.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (DatetimeIndex, ascending), columns instruments
        Back-adjusted prices in price points; NaN = no price.
    vol : DataFrame, index ``session``, columns (a superset of) the instruments of ``prices``
        Daily vol in **price points** (e.g. :func:`pipeline.volatility.robust_vol`), positive.
        Aligned to ``prices`` by label and forward-filled (causal).
    fast, slow : int
        EWMA spans in sessions, ``0 < fast < slow`` (Carver uses slow = 4 x fast).

    Returns
    -------
    DataFrame, index and columns of ``prices``
        Raw forecast in units of daily vol (unscaled, uncapped). NaN before the first price or
        while the vol is still NaN.

    Raises
    ------
    RuleError
        Malformed frames, ``vol`` missing an instrument, ``vol <= 0``, or bad spans.

    Notes
    -----
    Source: pst ``systems/provided/rules/ewmac.py::ewmac``; ST ch. 7 and Appendix B.
    """
    _check_wide(prices, "ewmac prices")
    _check_wide(vol, "ewmac vol")
    if not (int(fast) == fast and int(slow) == slow and 0 < fast < slow):
        raise RuleError(f"ewmac: need integer spans 0 < fast < slow, got fast={fast}, slow={slow}")
    missing = [c for c in prices.columns if c not in vol.columns]
    if missing:
        raise RuleError(f"ewmac: no vol for instruments {missing}; compute vol for every price column")
    if (vol[prices.columns] <= 0).any().any():
        raise RuleError("ewmac: vol has values <= 0; vol must be positive (robust_vol floors it at vol_abs_min)")
    prices = prices.astype(float)
    # Align on the union first so a vol known on a session missing from prices still carries forward.
    vol_aligned = vol[prices.columns].astype(float).reindex(vol.index.union(prices.index)).ffill().reindex(prices.index)
    fast_ewma = prices.ewm(span=fast, min_periods=1).mean()
    slow_ewma = prices.ewm(span=slow, min_periods=1).mean()
    return (fast_ewma - slow_ewma) / vol_aligned


def breakout(prices: pd.DataFrame, lookback: int, smooth: int | None = None) -> pd.DataFrame:
    """Raw breakout forecast: where the price sits in its recent range, smoothed.

    ``raw = 40 * (price - (max + min) / 2) / (max - min)`` with rolling ``max``/``min`` over
    ``lookback`` sessions (at least ``ceil(lookback / 2)`` prices), then
    ``raw.ewm(span=smooth, min_periods=ceil(smooth / 2)).mean()``.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (DatetimeIndex, ascending), columns instruments
        Back-adjusted prices in price points; NaN = no price.
    lookback : int
        Window in sessions, >= 2.
    smooth : int or None
        EWMA span of the smoothing, ``1 <= smooth < lookback``; default ``max(int(lookback / 4), 1)``.

    Returns
    -------
    DataFrame, index and columns of ``prices``
        Raw forecast, natural range -20..+20 before smoothing (the smoothing keeps it there).
        Where the price has been flat over the window (``max == min``) the unsmoothed value is
        0 (the price sits at the middle of a degenerate range: no breakout), not inf or NaN.
        NaN until ``ceil(lookback / 2)`` prices and ``ceil(smooth / 2)`` raw values exist.

    Raises
    ------
    RuleError
        Malformed ``prices`` or bad ``lookback`` / ``smooth``.

    Notes
    -----
    Source: pst ``systems/provided/rules/breakout.py::breakout`` (carver.md §2.3). pst would
    give NaN for a flat window (0/0); 0 is chosen so a stale price fades the forecast instead of
    freezing its last value.
    """
    _check_wide(prices, "breakout prices")
    if not (int(lookback) == lookback and lookback >= 2):
        raise RuleError(f"breakout: lookback must be an integer >= 2, got {lookback}")
    if smooth is None:
        smooth = max(int(lookback / 4), 1)
    if not (int(smooth) == smooth and 1 <= smooth < lookback):
        raise RuleError(f"breakout{lookback}: smooth must be an integer with 1 <= smooth < lookback, got {smooth}")
    prices = prices.astype(float)
    window = prices.rolling(lookback, min_periods=math.ceil(lookback / 2))
    roll_max, roll_min = window.max(), window.min()
    price_range = roll_max - roll_min
    position = 40.0 * (prices - (roll_max + roll_min) / 2.0) / price_range.where(price_range > 0)
    raw = position.where(~((price_range == 0) & prices.notna()), 0.0)
    return raw.ewm(span=smooth, min_periods=math.ceil(smooth / 2)).mean()
