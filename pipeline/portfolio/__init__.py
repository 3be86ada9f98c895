"""The portfolio stage's public API in one namespace.

The maths lives in three modules: :mod:`pipeline.portfolio.instrument_weights` (vol-normalised returns, ERC instrument
weights, risk contributions, IDM, month-end estimation), :mod:`pipeline.portfolio.optimisers` (Kelly,
mean-variance, Black-Litterman, the efficient frontier) and :mod:`pipeline.portfolio.sizing` (vol scalar,
optimal positions, buffer, buffered target positions). Besides re-exporting them, this module
holds the two research-API entry points a notebook needs: :func:`position_sizes` (vol-targeted
positions, unbuffered) and :func:`buffer` (Carver's position buffer).
"""

from __future__ import annotations

import pandas as pd

from pipeline.portfolio.instrument_weights import (
    InstrumentWeights,
    WeightsError,
    erc_weights,
    estimate_instrument_weights,
    idm,
    last_window_frontier,
    month_end_sessions,
    risk_contributions,
    weights_on_sessions,
)
from pipeline.portfolio.optimisers import (
    EfficientFrontier,
    OptimiserError,
    black_litterman_moments,
    efficient_frontier,
    kelly_fractions,
    kelly_weights,
    mean_variance_weights,
)
from pipeline.portfolio.sizing import (
    SizingError,
    TargetPositions,
    buffer_width,
    buffered_positions,
    optimal_positions,
    position_buffer_width,
    target_positions,
    volatility_scalar,
)
from pipeline.signals.volatility import vol_normalised_returns

__all__ = [
    "EfficientFrontier",
    "InstrumentWeights",
    "OptimiserError",
    "SizingError",
    "TargetPositions",
    "WeightsError",
    "black_litterman_moments",
    "buffer",
    "buffer_width",
    "buffered_positions",
    "efficient_frontier",
    "erc_weights",
    "estimate_instrument_weights",
    "idm",
    "kelly_fractions",
    "kelly_weights",
    "last_window_frontier",
    "mean_variance_weights",
    "month_end_sessions",
    "optimal_positions",
    "position_buffer_width",
    "position_sizes",
    "risk_contributions",
    "target_positions",
    "vol_normalised_returns",
    "volatility_scalar",
    "weights_on_sessions",
]


def position_sizes(
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    combined: pd.DataFrame | float,
    weights: pd.DataFrame,
    idm: pd.Series,
    point_size: pd.Series,
    capital: float,
    vol_target: float,
    fx: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Vol-targeted (unbuffered) positions: ``capital x vol_target / 16 / (vol x point_size x fx) x
    combined / 10 x weight x IDM``.

    Parameters
    ----------
    prices : DataFrame, index ``session``, columns instruments
        Close prices in price points; fixes the output's shape (NaN price = no position).
    vol : DataFrame, same sessions and instruments
        Daily vol in price points (:func:`pipeline.signals.volatility.robust_vol`).
    combined : DataFrame (same sessions and instruments) or float
        Combined forecast (average |10|, capped at 20). A number applies to every cell: with
        ``10.0`` the result is the *average position* that :func:`buffer` needs.
    weights : DataFrame, same sessions and instruments
        Instrument weights in force on each session (e.g. :func:`erc_weights` broadcast, or
        ``InstrumentWeights.daily``).
    idm : Series, index session
        Instrument diversification multiplier in force (:func:`idm`).
    point_size : Series, index instrument
        Instrument currency per price point per unit (futures multiplier; 1 for shares).
    capital : float
        Trading capital in base currency (> 0).
    vol_target : float
        Annualised vol target as a fraction (0.25 = 25%).
    fx : DataFrame, optional
        Base currency per unit of instrument currency (:func:`pipeline.instruments.fx_to_base`); None = 1.

    Returns
    -------
    DataFrame, index and columns of ``prices``
        Signed positions in units (contracts, shares), not rounded.

    Raises
    ------
    SizingError
        Non-positive capital or vol target, missing point sizes, or inputs lacking sessions or
        instruments of ``prices``.

    Notes
    -----
    Source: pst ``systems/positionsizing.py`` and ``systems/portfolio.py``; ST ch. 10-11; AFTS
    ch. 4 (``N = capital x IDM x w x tau / (multiplier x price x fx x sigma%) x forecast / 10``);
    carver.md §2.7. Wraps :func:`volatility_scalar` and :func:`optimal_positions`.
    """
    scalar = volatility_scalar(prices, vol, capital, vol_target, point_size, fx)
    if not isinstance(combined, pd.DataFrame):
        combined = pd.DataFrame(float(combined), index=prices.index, columns=prices.columns)
    return optimal_positions(scalar, combined, weights, idm)


def buffer(
    optimal: pd.DataFrame,
    average_position: pd.DataFrame,
    fraction: float = 0.10,
    round_positions: bool = True,
    initial: pd.Series | None = None,
) -> pd.DataFrame:
    """Buffered positions: hold while inside ``optimal +/- fraction x |average position|``, else
    trade to the nearest edge of that zone.

    Parameters
    ----------
    optimal : DataFrame, index ``session``, columns instruments
        Unbuffered positions in units (:func:`position_sizes`).
    average_position : DataFrame, same sessions and instruments
        The position at forecast 10 (``position_sizes(..., combined=10.0, ...)``), units.
    fraction : float
        Buffer as a fraction of the average position (pst ``buffer_size`` 0.10), >= 0.
    round_positions : bool
        Round the zone's edges, so every position is a whole number of units.
    initial : Series, index instrument, optional
        Positions held before the first session (default 0).

    Returns
    -------
    DataFrame, shape of ``optimal``
        Positions to hold, units, never NaN (a session without an optimal position holds the
        previous one).

    Raises
    ------
    SizingError
        Negative ``fraction``, NaN in ``initial``, or frames that do not cover ``optimal``.

    Notes
    -----
    Source: pst ``systems/buffering.py`` (``buffer_method: forecast``, ``buffer_trade_to_edge:
    True``); AFTS ch. 8; carver.md §2.9. Wraps :func:`buffered_positions`.
    """
    if not fraction >= 0:
        raise SizingError(f"buffer: fraction must be >= 0, got {fraction}")
    if not isinstance(average_position, pd.DataFrame):
        raise SizingError("buffer: average_position must be a DataFrame (index session, columns instruments)")
    return buffered_positions(optimal, average_position.abs() * fraction, round_positions=round_positions,
                              initial=initial)
