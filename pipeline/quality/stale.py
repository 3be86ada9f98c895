"""Stale-price guard for the signal stage.

A market whose close stops moving (no trading, a dead data feed, a contract that is quoted but
not traded) feeds zero price changes into its volatility. Carver's robust vol then decays towards
its floor, which decays with it (it is a quantile of the vol's own recent history), and the raw
EWMAC forecast, a price difference divided by that vol, explodes. The guard therefore

* flags a session when the instrument's close equals its close on each of the ``sessions``
  previous sessions with a price (:func:`stale_mask`);
* takes the flagged closes out of the vol calculation (:func:`without_stale`), so a stale run
  cannot shrink the vol; the vol carries its last value over the run;
* gives the instrument no forecast while it is flagged (:func:`mask_stale_forecasts`): the
  combined forecast is NaN and the buffered position is held, not traded on a stale price.

Everything is causal: the flag at session ``d`` uses closes up to ``d`` only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class StaleError(ValueError):
    """Bad input to the stale-price guard; the message names the input and what to do."""


def stale_mask(prices: pd.DataFrame, sessions: int) -> pd.DataFrame:
    """Flag sessions whose close has not changed for ``sessions`` sessions.

    ``stale[d, i]`` is True when instrument ``i`` has a close at ``d`` and that close equals its
    previous ``sessions`` closes (``sessions`` consecutive zero changes). Sessions without a
    close neither extend nor end a run (a holiday inside a flat spell keeps it flat) and are
    never flagged.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (ascending, unique DatetimeIndex), columns instruments
        Close prices in price points; NaN = no close that session.
    sessions : int
        Number of unchanged sessions (>= 1) that makes a close stale; e.g. 5 = a week.

    Returns
    -------
    DataFrame of bool, index and columns of ``prices``
        True = stale.

    Raises
    ------
    StaleError
        ``prices`` not a session-indexed DataFrame, or ``sessions < 1``.

    Notes
    -----
    pysystemtrade has no guard in the signal stage (its data checks reject stale FX rows at
    import, carver.md §2.11). The ``no_stale_prices`` check of ``clean_bars`` only warns; it
    counts equal closes including the current one, so its ``stale_sessions: 10`` is 9 unchanged
    sessions here.
    """
    if not isinstance(prices, pd.DataFrame) or not isinstance(prices.index, pd.DatetimeIndex):
        raise StaleError("stale_mask: prices must be a DataFrame indexed by session (DatetimeIndex)")
    if not (prices.index.is_monotonic_increasing and prices.index.is_unique):
        raise StaleError("stale_mask: sessions must be unique and ascending; sort_index() first")
    if not (int(sessions) == sessions and sessions >= 1):
        raise StaleError(f"stale_mask: sessions must be an integer >= 1, got {sessions}")
    values = prices.to_numpy(dtype=float)
    has = ~np.isnan(values)
    filled = prices.ffill().to_numpy(dtype=float)
    change = np.full_like(filled, np.nan)
    change[1:] = filled[1:] - filled[:-1]
    unchanged = has & (change == 0)
    moved = has & ~(change == 0)  # a real change, or the first close
    count = np.cumsum(unchanged, axis=0)
    # run length = unchanged closes since the last close that moved (cumsum with reset)
    at_reset = np.maximum.accumulate(np.where(moved, count, 0), axis=0)
    run = count - at_reset
    return pd.DataFrame(has & (run >= sessions), index=prices.index, columns=prices.columns)


def without_stale(prices: pd.DataFrame, stale: pd.DataFrame) -> pd.DataFrame:
    """Closes with the stale ones removed (NaN), for the vol calculation.

    :func:`pipeline.signals.volatility.robust_vol` skips sessions without a price and forward-fills the
    vol over them, so the zero changes of a stale run do not enter the vol; the change across the
    run, when the price moves again, counts as one change.

    Parameters
    ----------
    prices : DataFrame, index ``session``, columns instruments
        Close prices.
    stale : DataFrame of bool
        :func:`stale_mask` of ``prices`` (missing entries = not stale).

    Returns
    -------
    DataFrame, shape of ``prices``
    """
    return prices.mask(stale.reindex(index=prices.index, columns=prices.columns).fillna(False).astype(bool))


def mask_stale_forecasts(forecasts: pd.DataFrame, stale: pd.DataFrame) -> pd.DataFrame:
    """Set every rule's forecast to NaN on the sessions an instrument is stale.

    Parameters
    ----------
    forecasts : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Raw, scaled or capped forecasts.
    stale : DataFrame of bool, index ``session``, columns instruments
        :func:`stale_mask`; sessions or instruments it lacks are not stale.

    Returns
    -------
    DataFrame, shape of ``forecasts``
        NaN where stale: the combination then has no forecast for the instrument, the combined
        forecast is NaN and :func:`pipeline.portfolio.sizing.buffered_positions` holds the position.

    Raises
    ------
    StaleError
        ``forecasts`` without a two-level column MultiIndex.
    """
    if not (isinstance(forecasts.columns, pd.MultiIndex) and forecasts.columns.nlevels == 2):
        raise StaleError("mask_stale_forecasts: forecasts need a (rule, instrument) column MultiIndex")
    instruments = forecasts.columns.get_level_values(1)
    flags = stale.reindex(index=forecasts.index, columns=instruments).fillna(False).astype(bool)
    return forecasts.mask(flags.to_numpy())


def stale_instruments(stale: pd.DataFrame, session: pd.Timestamp) -> list[str]:
    """Instruments flagged stale at ``session`` (empty if the session is not in ``stale``)."""
    if session not in stale.index:
        return []
    row = stale.loc[session]
    return [str(i) for i in row.index[row.to_numpy(dtype=bool)]]
