"""Trading rules: raw (unscaled, uncapped) forecasts from prices (carver.md §2.2-2.3).

Each rule maps a wide price frame (session x instrument) to a wide raw-forecast frame of the same
shape. Lookbacks count sessions of the frame's index, as pysystemtrade counts business days. At
a session without a price the exponentially weighted averages carry their last value (pandas'
``ewm`` with ``ignore_na=False``, as in pst), so the forecast carries over the gap.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from pipeline.signals.window_stats import rolling_max_min_set


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
        Daily vol in **price points** (e.g. :func:`pipeline.signals.volatility.robust_vol`), positive.
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
    values = ewmac_set(prices, vol, [(fast, slow)])[(fast, slow)]
    return pd.DataFrame(values, index=prices.index, columns=prices.columns)


def ewmac_set(
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    speeds: list[tuple[int, int]],
    out: dict[tuple[int, int], np.ndarray] | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Raw EWMAC forecasts of several speeds at once, each EWMA span computed once.

    Same formula, inputs, checks and errors as :func:`ewmac`; ``speeds`` lists ``(fast, slow)``
    pairs (Carver's 2/8 .. 64/256 share spans, so six speeds need eight EWMAs, not twelve). Each
    EWMA is computed when first needed and released after its last use, so at most a few are
    held at once.

    Parameters
    ----------
    out : dict ``(fast, slow)`` -> ndarray of shape (n_sessions, n_instruments), optional
        Where to write each speed's forecast (e.g. a slice of a stacked array); a speed missing
        from ``out`` gets a fresh array.

    Returns
    -------
    dict ``(fast, slow)`` -> ndarray of shape (n_sessions, n_instruments)
        Raw forecast in units of daily vol, rows and columns as ``prices`` (the arrays of ``out``
        where given).
    """
    _check_wide(prices, "ewmac prices")
    _check_wide(vol, "ewmac vol")
    for fast, slow in speeds:
        if not (int(fast) == fast and int(slow) == slow and 0 < fast < slow):
            raise RuleError(f"ewmac: need integer spans 0 < fast < slow, got fast={fast}, slow={slow}")
    missing = [c for c in prices.columns if c not in vol.columns]
    if missing:
        raise RuleError(f"ewmac: no vol for instruments {missing}; compute vol for every price column")
    if (vol[prices.columns] <= 0).any().any():
        raise RuleError("ewmac: vol has values <= 0; vol must be positive (robust_vol floors it at vol_abs_min)")
    prices = prices.astype(float)
    # Align on the union first so a vol known on a session missing from prices still carries forward.
    if vol.index.equals(prices.index):  # the usual case: one forward fill, no realignment copies
        vol_aligned = vol if vol.columns.equals(prices.columns) else vol[prices.columns]
        vol_aligned = vol_aligned.astype(float).ffill()
    else:
        vol_aligned = vol[prices.columns].astype(float).reindex(vol.index.union(prices.index)).ffill().reindex(prices.index)
    # the layout of the EWMAs below: elementwise ops stay contiguous
    vol_aligned = np.asfortranarray(vol_aligned.to_numpy())
    uses = Counter(int(span) for pair in speeds for span in pair)
    ewma: dict[int, np.ndarray] = {}

    def average(span: int) -> np.ndarray:
        if span not in ewma:
            ewma[span] = prices.ewm(span=span, min_periods=1).mean().to_numpy()
        return ewma[span]

    result = {}
    for fast, slow in speeds:
        target = None if out is None else out.get((fast, slow))
        raw = np.subtract(average(int(fast)), average(int(slow)), out=target)
        result[(fast, slow)] = np.divide(raw, vol_aligned, out=raw)  # in place: at most one fresh array per speed
        for span in (int(fast), int(slow)):
            uses[span] -= 1
            if uses[span] == 0:
                del ewma[span]  # last use: release it before the next EWMA is computed
    return result


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
    return breakout_set(prices, [(lookback, smooth)])[(lookback, smooth)]


def breakout_set(
    prices: pd.DataFrame,
    variations: list[tuple[int, int | None]],
    out: dict[tuple[int, int | None], np.ndarray] | None = None,
) -> dict[tuple[int, int | None], pd.DataFrame]:
    """Raw breakout forecasts of several ``(lookback, smooth)`` variations at once.

    Same formula, inputs, checks and errors as :func:`breakout` (``smooth=None`` is its default);
    the rolling extremes of all lookbacks come from one shared set of doubling windows
    (:func:`pipeline.signals.window_stats.rolling_max_min_set`).

    Parameters
    ----------
    out : dict ``(lookback, smooth)`` -> ndarray of shape (n_sessions, n_instruments), optional
        Where to write each variation's forecast (e.g. a slice of a stacked array); the returned
        frame of such a variation wraps that array.

    Returns
    -------
    dict ``(lookback, smooth)`` -> DataFrame (index and columns of ``prices``)
        As :func:`breakout`.
    """
    _check_wide(prices, "breakout prices")
    resolved = []
    for lookback, smooth in variations:
        if not (int(lookback) == lookback and lookback >= 2):
            raise RuleError(f"breakout: lookback must be an integer >= 2, got {lookback}")
        span = max(int(lookback / 4), 1) if smooth is None else smooth
        if not (int(span) == span and 1 <= span < lookback):
            raise RuleError(f"breakout{lookback}: smooth must be an integer with 1 <= smooth < lookback, got {span}")
        resolved.append((int(lookback), int(span)))
    values = np.asfortranarray(prices.to_numpy(dtype=float))
    observed = ~np.isnan(values)
    # Rolling extremes of every instrument at once (pandas' values exactly, NaN ignored).
    extremes = rolling_max_min_set(values, [(lookback, math.ceil(lookback / 2)) for lookback, _ in resolved])
    result = {}
    for (lookback, span), variation, (roll_max, roll_min) in zip(resolved, variations, extremes):
        # 40 * (price - (max + min) / 2) / (max - min), in place in ``roll_max`` (each pair is fresh).
        price_range = roll_max - roll_min
        position = np.add(roll_max, roll_min, out=roll_max)
        np.divide(position, 2.0, out=position)
        np.subtract(values, position, out=position)
        np.multiply(position, 40.0, out=position)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(position, price_range, out=position)  # NaN where a price or the range is missing
        position[(price_range == 0) & observed] = 0.0  # flat window: 0 (a flat window without a price stays NaN)
        raw = pd.DataFrame(position, index=prices.index, columns=prices.columns, copy=False)
        smoothed = raw.ewm(span=span, min_periods=math.ceil(span / 2)).mean()
        target = None if out is None else out.get(variation)
        if target is not None:
            target[...] = smoothed.to_numpy()
            smoothed = pd.DataFrame(target, index=prices.index, columns=prices.columns, copy=False)
        result[variation] = smoothed
    return result


def carry(
    price: pd.DataFrame,
    carry_price: pd.DataFrame,
    price_contract: pd.DataFrame,
    carry_contract: pd.DataFrame,
    vol: pd.DataFrame,
    smooth_days: float = 90,
) -> pd.DataFrame:
    """Raw carry forecast of futures from multiple prices (research API; see :mod:`pipeline.signals.carry`).

    ``ann_roll = (PRICE - CARRY) / (yearfrac(CARRY_CONTRACT) - yearfrac(PRICE_CONTRACT))``, then
    ``raw = ann_roll / (vol x 16)`` smoothed with ``ewm(com=smooth_days)`` (pst's ``ewm(90)``,
    which is ``com=90``, i.e. span 181: carver.md §4).

    Parameters
    ----------
    price, carry_price : DataFrame, index ``session`` (ascending DatetimeIndex), columns instruments
        Prices of the held and the carry contract in price points (``MultiplePrices.price`` /
        ``.carry`` from :func:`pipeline.adapters.pysystemtrade.read_multiple_prices`).
    price_contract, carry_contract : DataFrame, same grid
        Their contracts as ``yyyymmdd`` or ``yyyymm`` numbers.
    vol : DataFrame, same grid
        Daily vol of the back-adjusted price in price points (:func:`pipeline.signals.volatility.robust_vol`).
    smooth_days : float
        ``ewm`` centre of mass (pst 90).

    Returns
    -------
    DataFrame, same grid
        Raw carry in annualised Sharpe-ratio units (unscaled, uncapped; the forecast scalar is
        about 30: ``pipeline.signals.carry.CARRY_FORECAST_SCALAR``).

    Raises
    ------
    CarryError
        Malformed frames or different grids.

    Notes
    -----
    Source: pst ``systems/provided/rules/carry.py`` and ``systems/rawdata.py``; ST ch. 7;
    carver.md §2.4. Wraps :func:`pipeline.signals.carry.annualised_roll` and
    :func:`pipeline.signals.carry.carry_forecast`.
    """
    from pipeline.signals.carry import annualised_roll, carry_forecast

    return carry_forecast(annualised_roll(price, carry_price, price_contract, carry_contract), vol, smooth_days)
