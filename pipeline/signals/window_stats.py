"""Causal rolling extremes over (session x instrument) arrays, all instruments at once.

The breakout rule needs the rolling maximum and minimum of every instrument's price over six
lookbacks (10 .. 320). pandas computes each one column at a time; here each is a few elementwise
passes over the whole array (doubling windows, see :func:`rolling_max_min_set`), shared between
the lookbacks, with exactly pandas' values, NaN handling included: :func:`rolling_max_min` equals
``DataFrame.rolling(window, min_periods=min_periods).max()`` and ``.min()``.

Inputs are 2-d float arrays, rows sessions (ascending), columns instruments; NaN = no value.
Every output at row ``t`` depends on rows ``<= t`` only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def rolling_max_min(values: np.ndarray, window: int, min_periods: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum and minimum over the trailing ``window`` rows of each column, NaN ignored.

    Parameters
    ----------
    values : ndarray of shape (n_sessions, n_instruments)
        Any units (e.g. prices in price points); NaN = no value.
    window : int
        Rows in the window (the current row included), >= 1.
    min_periods : int
        Non-NaN values needed in the window, ``1 <= min_periods <= window``; NaN otherwise.

    Returns
    -------
    (ndarray, ndarray), each of shape (n_sessions, n_instruments), Fortran order
        Rolling maximum and minimum in the units of ``values``: pandas
        ``rolling(window, min_periods).max()`` and ``.min()``.

    Raises
    ------
    ValueError
        Bad ``window`` / ``min_periods`` or ``values`` not 2-d.
    """
    return next(rolling_max_min_set(values, [(window, min_periods)]))


def rolling_max_min_set(
    values: np.ndarray, windows: list[tuple[int, int]]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """:func:`rolling_max_min` for several ``(window, min_periods)`` pairs over the same values.

    Doubling (a sparse table): the extremes over ``2^k`` rows come from two overlapping
    ``2^(k-1)`` windows, ``ext_{2h}(t) = ext(ext_h(t), ext_h(t - h))``, and a window of ``w`` rows
    with ``h <= w < 2h`` from two overlapping ``h`` windows, ``ext_w(t) = ext(ext_h(t),
    ext_h(t - (w - h)))``: one elementwise pass per level and two per window, exact (max and min
    of the same values). Windows in ascending order share the levels; the pairs are computed one
    at a time as the iterator advances.

    Returns
    -------
    iterator of (max, min) ndarray pairs, one per pair of ``windows``, in that order; each array
    is freshly allocated (the caller may overwrite it).

    Raises
    ------
    ValueError
        A bad ``(window, min_periods)`` pair or ``values`` not 2-d.
    """
    x = np.asfortranarray(values, dtype=float)  # columns contiguous: rows shift as whole blocks
    if x.ndim != 2:
        raise ValueError(f"rolling_max_min: values must be 2-d (sessions x instruments), got shape {x.shape}")
    for window, min_periods in windows:
        if not (int(window) == window and window >= 1 and 1 <= min_periods <= window):
            raise ValueError(
                "rolling_max_min: need an integer window >= 1 and 1 <= min_periods <= window, "
                f"got {window}, {min_periods}"
            )
    observed = ~np.isnan(x)
    cumulative = np.cumsum(observed, axis=0, dtype=np.int32)
    # Level 0: each row alone, with the neutral value where there is no observation (NaN never wins).
    base = (np.where(observed, x, -np.inf), np.where(observed, x, np.inf))
    # Two scratch arrays per extreme, written in turn as the levels grow (no fresh allocation).
    scratch = [[np.empty_like(b, order="F"), np.empty_like(b, order="F")] for b in base]
    level, extremes = 0, base
    for window, min_periods in windows:
        window = int(window)
        k = window.bit_length() - 1  # 2^k <= window < 2^(k+1)
        if k < level:
            level, extremes = 0, base
        while level < k:
            extremes = tuple(
                _doubled(e, 1 << level, op, out=scratch[j][level % 2])
                for j, (e, op) in enumerate(zip(extremes, (np.maximum, np.minimum)))
            )
            level += 1
        counts = cumulative.copy()
        counts[window:] -= cumulative[:-window]
        too_few = counts < min_periods
        pair = []
        for e, op in zip(extremes, (np.maximum, np.minimum)):
            out = _doubled(e, window - (1 << k), op) if window > (1 << k) else e.copy(order="F")
            out[too_few] = np.nan
            pair.append(out)
        yield pair[0], pair[1]


def _doubled(extreme: np.ndarray, shift: int, op: np.ufunc, out: np.ndarray | None = None) -> np.ndarray:
    """``op(extreme[t], extreme[t - shift])`` (rows before the start count as absent)."""
    out = np.empty_like(extreme, order="F") if out is None else out
    out[:shift] = extreme[:shift]
    op(extreme[shift:], extreme[:-shift], out=out[shift:])
    return out
