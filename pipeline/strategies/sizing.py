"""Contracts per entry of the stop-and-target strategy: fixed fraction, vol target, Kelly.

Every function is vectorised over instruments (numpy arrays of one session's values), returns whole
contracts ``>= 0`` (the direction is the signal's) capped at ``max_contracts``, and gives 0 where an
input is missing (NaN), non-positive or the equity is not positive. Sizes are rounded down, so the
risk taken is never more than asked. ``equity`` is the account value at the decision close (base
currency; instruments are priced in the base currency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "KellyEstimate",
    "fixed_fraction_contracts",
    "kelly_contracts",
    "kelly_leverage",
    "vol_target_contracts",
]

#: Carver's sqrt(256 business days): daily to annual vol (ST ch. 9).
ROOT_DAYS_IN_YEAR = 16.0
#: Added before rounding down, so a size that is whole up to float rounding is not cut by one.
_EPS = 1e-9


def _whole(raw: np.ndarray, max_contracts: int) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        n = np.floor(np.where(np.isfinite(raw) & (raw > 0), raw, 0.0) + _EPS)
    return np.minimum(n, float(max_contracts))


def fixed_fraction_contracts(
    equity: float, risk_fraction: float, stop_distance: np.ndarray, point_size: np.ndarray, max_contracts: int
) -> np.ndarray:
    """Contracts risking ``risk_fraction`` of equity to the initial stop.

    ``n = min(floor(equity x risk_fraction / (stop_distance x point_size)), max_contracts)``

    Parameters
    ----------
    equity : float
        Account value, base currency.
    risk_fraction : float
        Fraction of equity lost if the stop fills at its price (0.02 = 2 %).
    stop_distance : ndarray, shape (n_instruments,)
        Entry-to-stop distance, price points (> 0).
    point_size : ndarray, shape (n_instruments,)
        Currency per price point per contract (MCL: 100).
    max_contracts : int

    Returns
    -------
    ndarray of float, whole contracts in ``[0, max_contracts]``.

    Notes
    -----
    The 'percent risk' model: Van K. Tharp, *Trade Your Way to Financial Freedom* (1999), ch. 12;
    Ralph Vince's fixed fractional trading (*Portfolio Management Formulas*, 1990).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = equity * risk_fraction / (np.asarray(stop_distance, dtype=float) * np.asarray(point_size, dtype=float))
    return _whole(raw if equity > 0 else np.zeros_like(raw), max_contracts)


def vol_target_contracts(
    equity: float, annual_target: float, daily_vol: np.ndarray, point_size: np.ndarray, max_contracts: int
) -> np.ndarray:
    """Contracts whose annualised cash vol is ``annual_target`` of equity.

    ``n = min(floor(equity x annual_target / (daily_vol x 16 x point_size)), max_contracts)``

    Parameters
    ----------
    equity : float
        Account value, base currency.
    annual_target : float
        Annualised vol target as a fraction of equity (0.20 = 20 %).
    daily_vol : ndarray, shape (n_instruments,)
        Daily price vol, price points (:func:`pipeline.signals.volatility.robust_vol`).
    point_size : ndarray, shape (n_instruments,)
    max_contracts : int

    Returns
    -------
    ndarray of float, whole contracts in ``[0, max_contracts]``.

    Notes
    -----
    Carver, *Systematic Trading* (2015) ch. 9: volatility scalar = cash vol target / instrument value
    vol, one instrument, 256 sessions a year.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = equity * annual_target / (np.asarray(daily_vol, dtype=float) * ROOT_DAYS_IN_YEAR
                                         * np.asarray(point_size, dtype=float))
    return _whole(raw if equity > 0 else np.zeros_like(raw), max_contracts)


def kelly_leverage(trade_returns: np.ndarray, fraction: float, cap: float) -> float:
    """Fractional Kelly leverage from past trade returns, capped.

    ``f = clip(fraction x mu / sigma^2, 0, cap)`` with ``mu`` the mean and ``sigma^2`` the sample
    variance (ddof 1) of the returns.

    Parameters
    ----------
    trade_returns : ndarray
        Past trades' returns per unit of notional: P&L net of costs / (contracts x |entry price| x
        point size).
    fraction : float
        Fractional Kelly multiplier (0.5 = half Kelly).
    cap : float
        Largest leverage (notional / equity).

    Returns
    -------
    float
        Leverage in ``[0, cap]``; 0 with a negative edge, fewer than two returns or zero variance.

    Notes
    -----
    Kelly (1956), "A New Interpretation of Information Rate"; the continuous form ``f* = mu / sigma^2``
    of Thorp, "The Kelly criterion in blackjack, sports betting and the stock market" (2006), §7.
    """
    r = np.asarray(trade_returns, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) < 2:
        return 0.0
    return KellyEstimate(len(r), float(r.sum()), float((r * r).sum())).leverage(fraction, cap)


@dataclass
class KellyEstimate:
    """Running sums of trade returns for :func:`kelly_leverage` inside a backtest (O(1) per update).

    Attributes
    ----------
    n : int
        Trades seen.
    total, total_sq : float
        Sum of the returns and of their squares.
    """

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, returns: np.ndarray) -> None:
        """Add the returns of trades just closed (NaN ignored)."""
        r = np.asarray(returns, dtype=float)
        r = r[np.isfinite(r)]
        self.n += len(r)
        self.total += float(r.sum())
        self.total_sq += float((r * r).sum())

    def leverage(self, fraction: float, cap: float) -> float:
        """``clip(fraction x mu / sigma^2, 0, cap)``; 0 with fewer than two trades or zero variance."""
        if self.n < 2:
            return 0.0
        mu = self.total / self.n
        var = (self.total_sq - self.n * mu * mu) / (self.n - 1)
        if not var > 1e-18 or not math.isfinite(var):
            return 0.0
        return float(min(max(fraction * mu / var, 0.0), cap))


def kelly_contracts(
    equity: float, leverage: float, price: np.ndarray, point_size: np.ndarray, max_contracts: int
) -> np.ndarray:
    """Contracts whose notional is ``leverage`` x equity.

    ``n = min(floor(leverage x equity / (|price| x point_size)), max_contracts)``

    Parameters
    ----------
    equity : float
    leverage : float
        From :func:`kelly_leverage` (>= 0).
    price : ndarray, shape (n_instruments,)
        Decision close, price points.
    point_size : ndarray, shape (n_instruments,)
    max_contracts : int

    Returns
    -------
    ndarray of float, whole contracts in ``[0, max_contracts]``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = leverage * equity / (np.abs(np.asarray(price, dtype=float)) * np.asarray(point_size, dtype=float))
    return _whole(raw if equity > 0 else np.zeros_like(raw), max_contracts)
