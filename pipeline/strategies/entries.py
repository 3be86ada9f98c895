"""Entry signal states of the stop-and-target strategy: +1 long, -1 short, 0 no entry.

A state is known at the close of its session (it uses closes up to that session only); the
backtest enters at the next session's open (:mod:`pipeline.strategies.backtest`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.strategies.config import (
    BreakoutEntry,
    EmaCrossoverEntry,
    ExternalEntry,
    StrategyConfigError,
)

__all__ = ["breakout_state", "ema_crossover_state", "entry_state"]


def ema_crossover_state(close: pd.DataFrame, fast: int, slow: int) -> pd.DataFrame:
    """+1 while the fast EMA of the close is above the slow EMA, -1 while below, 0 when equal or warming up.

    ``EMA = close.ewm(span, adjust=False)`` on each instrument's closes (sessions without a bar are
    skipped, the state carried); the state is 0 until the instrument has ``slow`` closes.

    Parameters
    ----------
    close : DataFrame
        Index ``session``, columns instruments, price points; NaN = no bar.
    fast, slow : int
        EMA spans in sessions, ``fast < slow``.

    Returns
    -------
    DataFrame of float in {-1, 0, 1}, index and columns of ``close``.

    Notes
    -----
    The classic moving-average crossover (e.g. Appel's MACD sign, Carver's EWMAC sign; ST ch. 15);
    ``adjust=False`` is the recursive EMA traders' platforms use.
    """
    fast_ema = close.ewm(span=fast, adjust=False, ignore_na=True).mean()
    slow_ema = close.ewm(span=slow, adjust=False, ignore_na=True).mean()
    warm = close.notna().cumsum() >= slow
    state = np.sign(fast_ema - slow_ema).where(warm, 0.0).fillna(0.0)
    return state.where(close.notna()).ffill().fillna(0.0)


def breakout_state(close: pd.DataFrame, lookback: int) -> pd.DataFrame:
    """Donchian channel breakout on closes: +1 from a close above the highest close of the previous
    ``lookback`` sessions, -1 from a close below the lowest, the state kept in between.

    Parameters
    ----------
    close : DataFrame
        Index ``session``, columns instruments, price points; NaN = no bar (the channel carries the
        last close over it; no state change on that session).
    lookback : int
        Channel length in sessions.

    Returns
    -------
    DataFrame of float in {-1, 0, 1}, index and columns of ``close``; 0 before the first breakout.

    Notes
    -----
    Donchian's 4-week rule; the Turtles' 20- and 55-day breakouts (Faith, *Way of the Turtle*, 2007).
    """
    carried = close.ffill()
    prior = carried.shift(1).rolling(lookback, min_periods=lookback)
    state = np.where(close > prior.max(), 1.0, np.where(close < prior.min(), -1.0, np.nan))
    return pd.DataFrame(state, index=close.index, columns=close.columns).ffill().fillna(0.0)


def entry_state(close: pd.DataFrame, entry: EmaCrossoverEntry | BreakoutEntry | ExternalEntry) -> pd.DataFrame:
    """The entry state of the configured rule (see :func:`ema_crossover_state`, :func:`breakout_state`).

    Raises
    ------
    StrategyConfigError
        ``entry.kind`` is ``external``: its configuration is defined, its feed is not built yet.
    """
    if entry.kind == "ema_crossover":
        return ema_crossover_state(close, entry.fast, entry.slow)
    if entry.kind == "breakout":
        return breakout_state(close, entry.lookback)
    raise StrategyConfigError(f"strategy.entry.kind external ({entry.path}): the external forecast feed is not "
                              "built yet; use ema_crossover or breakout")
