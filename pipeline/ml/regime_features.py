"""Market-state features for the regime models, each known at the close of its session.

Every feature is a cross-instrument statistic of a panel (index ``session``, columns instruments),
computed from prices, the daily price-unit volatility ``sigma`` of :mod:`pipeline.signals.volatility`
(carver.md §2.1), the combined forecasts and (where present) volume, using data up to and
including its session only: trailing windows, expanding maxima and EWMAs, never a centred or
forward window. The simple-rule system whose drawdown is a feature (and whose returns are the
benchmark of the regime overlay in :mod:`pipeline.ml.regime_models`) is

    r_t = mean_i (f_{i,t-1} / 10) * z_{i,t},      z_{i,t} = (P_{i,t} - P_{i,t-1}) / sigma_{i,t-1}

the equal-weight portfolio of vol-normalised returns held at the combined forecast of the previous
close (Carver, *Systematic Trading* ch. 10: a position proportional to forecast / vol), in daily
vol units of one instrument at an average forecast of 10.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.ml.regime import RegimeInputError, normalised_portfolio_returns

__all__ = [
    "EWMAC_SPEEDS",
    "MARKET_FEATURE_NAMES",
    "average_correlation",
    "market_features",
    "simple_rule_returns",
]

#: EWMAC (fast, slow) spans whose sign agreement measures trend consistency (Carver ST ch. 6).
EWMAC_SPEEDS = ((8, 32), (16, 64), (32, 128), (64, 256))

#: Columns of :func:`market_features` without volume, in order (``volume_ratio`` is appended when
#: volume is given).
MARKET_FEATURE_NAMES = (
    "ret5", "ret21", "ret63", "ret252",
    "port_vol21", "port_vol63", "port_ewma_vol", "vol_ratio", "rv_ratio", "ewma_ratio",
    "abs_forecast", "ewmac_agreement", "breakout_position", "breakout_extremity",
    "correlation63", "dispersion21", "strategy_drawdown",
)

#: Window of the long-run mean vol in ``vol_ratio`` (one Carver year).
VOL_RATIO_WINDOW = 256
#: Range of the breakout position (sessions), Carver's breakout lookback of 80 rounded to a quarter.
BREAKOUT_WINDOW = 63
#: Window of the average pairwise correlation (sessions).
CORRELATION_WINDOW = 63
#: Elements of one block of (session, instrument, instrument) products in :func:`average_correlation`
#: (4M float64 = 32 MB).
_CORRELATION_BLOCK_ELEMENTS = 4_000_000
#: Span of the EWMA vol of the portfolio, Carver's 36-day EWMA vol (carver.md §2.1).
EWMA_SPAN = 36


def _check_same_index(name: str, frame: pd.DataFrame, index: pd.Index) -> None:
    if not frame.index.equals(index):
        raise RegimeInputError(
            f"regime features: {name} does not share the session index of prices "
            f"({len(frame.index)} vs {len(index)} sessions); reindex it on prices.index"
        )


def _z(prices: pd.DataFrame, vol: pd.DataFrame) -> pd.DataFrame:
    sigma = vol.reindex(columns=prices.columns)
    return prices.diff() / sigma.where(sigma > 0).shift(1)


def simple_rule_returns(prices: pd.DataFrame, vol: pd.DataFrame, combined: pd.DataFrame) -> pd.Series:
    """Daily return of the simple-rule system (module docstring), in daily instrument-vol units.

    ``r_t = mean_i (f_{i,t-1} / 10) * z_{i,t}`` over the instruments with both a forecast at t-1
    and a return at t; the forecast and vol are those of the previous close, so ``r_t`` is known
    at the close of t and earned by a position taken at t-1.

    Parameters
    ----------
    prices : DataFrame
        Close prices (price points), index ``session``, columns instruments.
    vol : DataFrame
        Daily price-unit volatility, same index (non-positive = missing).
    combined : DataFrame
        Combined forecasts (-20..20), same index; columns may be a subset.

    Returns
    -------
    Series
        ``simple_rule`` return per session; NaN where no instrument contributes.

    Raises
    ------
    RegimeInputError
        ``vol`` or ``combined`` does not share the index of ``prices``.
    """
    _check_same_index("vol", vol, prices.index)
    _check_same_index("combined", combined, prices.index)
    f = combined.reindex(columns=prices.columns)
    out = (f.shift(1) / 10.0 * _z(prices, vol)).mean(axis=1)
    out.name = "simple_rule"
    return out


def average_correlation(z: pd.DataFrame, window: int) -> pd.Series:
    """Mean pairwise correlation of the columns of ``z`` over trailing ``window`` sessions.

    For each session t and each pair (i, j) with both values in all of ``t-window+1..t``, the
    Pearson correlation over the window; the result is the mean over those pairs. Computed from
    cumulative sums of products (no loop over sessions or pairs).

    Parameters
    ----------
    z : DataFrame
        Returns (any unit), index ``session``, columns instruments; NaN = missing.
    window : int
        Sessions in the window (>= 3).

    Returns
    -------
    Series
        ``correlation`` in [-1, 1]; NaN where fewer than two instruments have a full window.

    Raises
    ------
    RegimeInputError
        ``window < 3``.
    """
    if window < 3:
        raise RegimeInputError(f"average_correlation: window must be >= 3, got {window}")
    x = z.to_numpy(dtype=float)
    ok = np.isfinite(x)
    x0 = np.where(ok, x, 0.0)
    n, k = x.shape

    def rolling(a: np.ndarray) -> np.ndarray:
        c = np.cumsum(a, axis=0)
        out = c.copy()
        out[window:] -= c[:-window]
        out[: window - 1] = np.nan
        return out

    full = rolling(ok.astype(float)) == window  # (n, k): instrument has the whole window
    s = rolling(x0)
    s2 = rolling(x0 * x0)
    w = float(window)
    var = s2 - s * s / w
    offdiag = ~np.eye(k, dtype=bool)
    total = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    # The (session, k, k) sums of products are taken in blocks of sessions (about 32 MB each), so
    # memory stays flat in the number of sessions; the running sum carries over from block to
    # block through ``tail`` (the cumulative sums of the previous ``window`` sessions), which
    # keeps every number identical to one cumulative sum over all sessions.
    block = max(1, _CORRELATION_BLOCK_ELEMENTS // (k * k))
    tail = np.zeros((0, k, k))
    for a in range(0, n, block):
        b = min(n, a + block)
        products = x0[a:b, :, None] * x0[a:b, None, :]  # (b - a, k, k)
        if a:
            products = np.concatenate([tail[-1:], products])
        c = np.cumsum(products, axis=0)[1 if a else 0:]  # cumulative sums at sessions a .. b-1
        history = np.concatenate([tail, c])  # sessions a - len(tail) .. b - 1
        t = np.arange(a, b)
        sxy = history[t - a + len(tail)].copy()
        late = t >= window
        sxy[late] -= history[t[late] - window - a + len(tail)]
        sxy[t < window - 1] = np.nan
        cov = sxy - s[a:b, :, None] * s[a:b, None, :] / w
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.sqrt(var[a:b, :, None] * var[a:b, None, :])
        pair = full[a:b, :, None] & full[a:b, None, :] & offdiag[None]
        pair &= np.isfinite(corr)
        total[a:b] = np.where(pair, corr, 0.0).sum(axis=(1, 2))
        count[a:b] = pair.sum(axis=(1, 2))
        tail = history[-window:]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return pd.Series(mean, index=z.index, name="correlation")


def market_features(
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    combined: pd.DataFrame,
    volume: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The regime models' features at each session, from data up to that session only.

    ``sigma`` is daily price-unit vol, ``z`` the vol-normalised return (module docstring), ``q``
    its equal-weight mean (:func:`pipeline.ml.regime.normalised_portfolio_returns`). "mean" is over
    the instruments with data that session (NaN-skipping).

    - ``ret{k}`` (k = 5, 21, 63, 252): mean of ``(P_t - P_{t-k}) / (sigma_t sqrt(k))``, the
      k-session move in standard deviations.
    - ``port_vol21``, ``port_vol63``: ``std(q_{t-k+1..t}, ddof=1)``, realised daily vol of the
      vol-normalised portfolio; ``port_ewma_vol``: ``sqrt(EWMA_36(q^2))``.
    - ``vol_ratio``: mean of ``sigma_t / mean(sigma_{t-255..t})`` (> 1: vol above its year).
    - ``rv_ratio``: ``port_vol21 / port_vol63``; ``ewma_ratio``: ``port_ewma_vol / port_vol63``.
    - ``abs_forecast``: mean of ``|combined forecast_t|`` (0..20), trend strength.
    - ``ewmac_agreement``: mean of ``|mean_s sign(EWMA_fast - EWMA_slow)|`` over the speeds
      :data:`EWMAC_SPEEDS` (0 = speeds split evenly, 1 = all agree).
    - ``breakout_position``: mean of ``(P_t - min) / (max - min) - 0.5`` over the trailing
      63-session range (-0.5 at the low, +0.5 at the high); ``breakout_extremity``: mean of
      ``2 |position|`` (1 = at an edge of the range).
    - ``correlation63``: mean pairwise correlation of ``z`` over 63 sessions
      (:func:`average_correlation`); ``dispersion21``: std across instruments of ``ret21``'s
      per-instrument moves.
    - ``strategy_drawdown``: ``C_t - max(0, max_{s<=t} C_s)`` with ``C`` the cumulative sum of
      :func:`simple_rule_returns` from its first return (<= 0, daily vol units).
    - ``volume_ratio`` (only when ``volume`` is given): mean of
      ``log(V_t / mean(V_{t-62..t}))`` over the instruments reporting volume.

    Parameters
    ----------
    prices : DataFrame
        Close prices (price points), index ``session``, columns instruments.
    vol : DataFrame
        Daily price-unit volatility, same index.
    combined : DataFrame
        Combined forecasts, same index; columns may be a subset.
    volume : DataFrame, optional
        Traded volume (shares/contracts), same index; zero or negative = missing.

    Returns
    -------
    DataFrame
        Index ``session``, columns :data:`MARKET_FEATURE_NAMES` (+ ``volume_ratio``); NaN until
        each window is full.

    Raises
    ------
    RegimeInputError
        An input does not share the index of ``prices``.
    """
    _check_same_index("vol", vol, prices.index)
    _check_same_index("combined", combined, prices.index)
    sigma = vol.reindex(columns=prices.columns)
    sigma = sigma.where(sigma > 0)
    z = _z(prices, vol)
    q = normalised_portfolio_returns(prices, vol)

    def move(k: int) -> pd.DataFrame:
        return (prices - prices.shift(k)) / (sigma * math.sqrt(k))

    move21 = move(21)
    port21 = q.rolling(21, min_periods=21).std()
    port63 = q.rolling(63, min_periods=63).std()
    ewma = np.sqrt((q * q).ewm(span=EWMA_SPAN, min_periods=EWMA_SPAN, ignore_na=True).mean())
    long_run = sigma.rolling(VOL_RATIO_WINDOW, min_periods=VOL_RATIO_WINDOW).mean()

    signs = sum(
        np.sign(prices.ewm(span=fast, min_periods=slow, ignore_na=True).mean()
                - prices.ewm(span=slow, min_periods=slow, ignore_na=True).mean())
        for fast, slow in EWMAC_SPEEDS
    ) / len(EWMAC_SPEEDS)
    hi = prices.rolling(BREAKOUT_WINDOW, min_periods=BREAKOUT_WINDOW).max()
    lo = prices.rolling(BREAKOUT_WINDOW, min_periods=BREAKOUT_WINDOW).min()
    position = ((prices - lo) / (hi - lo).where(hi > lo)) - 0.5

    rule = simple_rule_returns(prices, vol, combined)
    equity = rule.fillna(0.0).cumsum().where(rule.notna().cummax())
    drawdown = equity - equity.cummax().clip(lower=0.0)  # the starting equity 0 is a peak too

    out = pd.DataFrame(
        {
            "ret5": move(5).mean(axis=1),
            "ret21": move21.mean(axis=1),
            "ret63": move(63).mean(axis=1),
            "ret252": move(252).mean(axis=1),
            "port_vol21": port21,
            "port_vol63": port63,
            "port_ewma_vol": ewma,
            "vol_ratio": (sigma / long_run).mean(axis=1),
            "rv_ratio": port21 / port63,
            "ewma_ratio": ewma / port63,
            "abs_forecast": combined.abs().mean(axis=1),
            "ewmac_agreement": signs.abs().mean(axis=1),
            "breakout_position": position.mean(axis=1),
            "breakout_extremity": (2.0 * position.abs()).mean(axis=1),
            "correlation63": average_correlation(z, CORRELATION_WINDOW),
            "dispersion21": move21.std(axis=1, ddof=1),
            "strategy_drawdown": drawdown,
        },
        index=prices.index,
    )
    if volume is not None:
        _check_same_index("volume", volume, prices.index)
        v = volume.reindex(columns=prices.columns)
        v = v.where(v > 0)
        ratio = np.log(v / v.rolling(63, min_periods=63).mean())
        out["volume_ratio"] = ratio.mean(axis=1)
    out.columns.name = "feature"
    return out
