"""Position sizing (volatility targeting) and position buffering.

Chain (pysystemtrade ``systems/positionsizing.py``, ``systems/portfolio.py``, ``systems/buffering.py``;
carver.md §2.7, §2.9; ST ch. 10-11, AFTS ch. 2-4 and 8)::

    vol scalar         = (capital × vol target / 16) / (vol × point size × fx)    units per forecast 10
    subsystem position = vol scalar × combined forecast / 10
    optimal (notional) = subsystem position × instrument weight × IDM (× risk scale)
    buffer width       = buffer × |vol scalar × instrument weight × IDM|           buffer 0.1: 10% of average
                         (buffer_method: position: buffer × |optimal|, 10% of the position, ST ch. 11)
    target             = previous target if inside [optimal ± width], else the nearest edge

Positions are in units of the instrument (shares, contracts, currency units), signed (negative =
short). Every value for session ``d`` uses inputs for ``d`` and earlier only; the target decided at
``d`` is traded at the next price.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import PortfolioConfig

SESSION = "session"
INSTRUMENT = "instrument"
#: sqrt(256): Carver annualises with 256 business days (carver.md §2.0).
ROOT_BDAYS_IN_YEAR = 16.0


class SizingError(ValueError):
    """Bad input to position sizing or buffering; the message names the input and what to do."""


def volatility_scalar(
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    capital: float | pd.Series,
    vol_target: float,
    point_size: pd.Series,
    fx: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Units to hold per unit of forecast/10: the position with exactly the target risk.

    ``daily cash target = capital × vol_target / 16`` and ``instrument value vol = vol × point
    size × fx``, so ``vol scalar = daily cash target / instrument value vol``. This equals
    pysystemtrade's ``block value × % vol`` (``price × point size × 1% × 100 × vol / price``) when
    the % vol's denominator is the same price; for back-adjusted futures pst divides by the
    current contract's price instead (carver.md §2.7, §4), which this price-unit form avoids.

    Parameters
    ----------
    prices : pd.DataFrame
        Index ``session``, columns instruments; close prices in price points. Used to mask
        sessions without a price (the scalar is NaN there) and to fix the output's shape.
    vol : pd.DataFrame
        Daily vol in price points, same sessions, at least the instruments of ``prices``.
    capital : float or pd.Series
        Trading capital in base currency (> 0): one number, or per session (index covering the
        sessions of ``prices``; :func:`pipeline.portfolio.capital.capital_series`).
    vol_target : float
        Annualised volatility target as a fraction (0.25 = 25%).
    point_size : pd.Series
        Index = instruments; instrument currency per price point per unit (the futures
        multiplier; 1 for shares).
    fx : pd.DataFrame, optional
        Base currency per unit of instrument currency, same sessions and instruments as
        ``prices``; ``None`` = every instrument is in the base currency (fx = 1).

    Returns
    -------
    pd.DataFrame
        Index and columns of ``prices``; units per forecast 10. NaN where price, vol or fx is NaN
        or the vol is not positive.

    Raises
    ------
    SizingError
        If capital or vol target is not positive, a point size is missing or not positive, or an
        input lacks sessions/instruments of ``prices``.
    """
    if isinstance(capital, pd.Series):
        per_session = capital.reindex(prices.index).to_numpy(dtype=float)
        if not (np.isfinite(per_session) & (per_session > 0)).all():
            raise SizingError("volatility_scalar: capital must be positive on every session of prices")
        capital = per_session[:, None]
    if not np.all(np.asarray(capital) > 0) or not vol_target > 0:
        raise SizingError(
            f"volatility_scalar: capital ({capital}) and vol_target ({vol_target}) must be positive"
        )
    vol = _frame_on(vol, prices, "vol", "prices")
    ps = _point_sizes(point_size, prices.columns)
    fx_values = 1.0 if fx is None else _frame_on(fx, prices, "fx", "prices").to_numpy(dtype=float)
    daily_cash_target = capital * vol_target / ROOT_BDAYS_IN_YEAR
    value_vol = vol.to_numpy(dtype=float) * ps * fx_values
    with np.errstate(divide="ignore", invalid="ignore"):
        scalar = np.where(value_vol > 0, daily_cash_target / value_vol, np.nan)
    scalar[~np.isfinite(prices.to_numpy(dtype=float))] = np.nan
    return _named(pd.DataFrame(scalar, index=prices.index.copy(), columns=prices.columns.copy()))


def optimal_positions(
    vol_scalar: pd.DataFrame,
    combined: pd.DataFrame,
    weights_daily: pd.DataFrame,
    idm_daily: pd.Series,
    risk_scale: pd.DataFrame | pd.Series | None = None,
) -> pd.DataFrame:
    """Unbuffered (optimal) positions: ``vol scalar × forecast/10 × weight × IDM (× risk scale)``.

    Subsystem position then notional position (pst ``positionsizing.py`` and ``portfolio.py``;
    AFTS ch. 4: ``N = capital·IDM·w·τ/(multiplier·price·fx·σ%) × forecast/10``).

    Parameters
    ----------
    vol_scalar : pd.DataFrame
        Index ``session``, columns instruments (:func:`volatility_scalar`); fixes the output shape.
    combined : pd.DataFrame
        Combined forecast (±20, average |10|), containing the sessions and instruments of
        ``vol_scalar`` (extra ones are ignored).
    weights_daily : pd.DataFrame
        Instrument weights in force on each session (``InstrumentWeights.daily``); same coverage.
    idm_daily : pd.Series
        IDM in force on each session; index containing the sessions of ``vol_scalar``.
    risk_scale : pd.DataFrame or pd.Series, optional
        Multiplier in [0, 1] (e.g. a regime overlay), per session and instrument or per session
        for all instruments; ``None`` = 1.

    Returns
    -------
    pd.DataFrame
        Shape of ``vol_scalar``; signed units. NaN wherever an input is NaN (e.g. before the
        first instrument-weight estimate).

    Raises
    ------
    SizingError
        If an input lacks sessions or instruments of ``vol_scalar``.
    """
    forecast = _frame_on(combined, vol_scalar, "combined", "vol_scalar")
    weight = _frame_on(weights_daily, vol_scalar, "weights_daily", "vol_scalar")
    dm = _series_on(idm_daily, vol_scalar, "idm_daily")
    subsystem = vol_scalar.to_numpy(dtype=float) * forecast.to_numpy(dtype=float) / 10.0
    notional = subsystem * weight.to_numpy(dtype=float) * dm[:, None] * _scale_on(risk_scale, vol_scalar)
    return _named(pd.DataFrame(notional, index=vol_scalar.index.copy(), columns=vol_scalar.columns.copy()))


def buffer_width(
    vol_scalar: pd.DataFrame,
    weights_daily: pd.DataFrame,
    idm_daily: pd.Series,
    buffer: float = 0.10,
) -> pd.DataFrame:
    """Half-width of the no-trade zone: ``buffer × |vol scalar × weight × IDM|``.

    pysystemtrade's forecast method (``systems/buffering.py``, ``buffer_size: 0.10``; AFTS ch. 8):
    a fraction of the *average* position, the position at forecast 10, so the zone does not
    collapse when the forecast is near 0 (unlike ST ch. 11's 10% of the current position). The
    risk scale is deliberately not applied, as in pst.

    Parameters
    ----------
    vol_scalar, weights_daily, idm_daily
        As for :func:`optimal_positions`.
    buffer : float
        Fraction of the average position, >= 0 (``PortfolioConfig.buffer``).

    Returns
    -------
    pd.DataFrame
        Shape of ``vol_scalar``; units, >= 0; NaN where an input is NaN.

    Raises
    ------
    SizingError
        If ``buffer`` is negative or an input lacks sessions/instruments of ``vol_scalar``.
    """
    if not buffer >= 0:
        raise SizingError(f"buffer_width: buffer must be >= 0, got {buffer}")
    weight = _frame_on(weights_daily, vol_scalar, "weights_daily", "vol_scalar")
    dm = _series_on(idm_daily, vol_scalar, "idm_daily")
    width = buffer * np.abs(vol_scalar.to_numpy(dtype=float) * weight.to_numpy(dtype=float) * dm[:, None])
    return _named(pd.DataFrame(width, index=vol_scalar.index.copy(), columns=vol_scalar.columns.copy()))


def position_buffer_width(optimal: pd.DataFrame, buffer: float = 0.10) -> pd.DataFrame:
    """Half-width of the no-trade zone by Carver's position method: ``buffer × |optimal position|``.

    pysystemtrade ``buffer_method: position`` (``systems/buffering.py``; ST ch. 11, 10% of the
    position): the zone shrinks with the position, so it vanishes when the forecast is near 0.

    Parameters
    ----------
    optimal : pd.DataFrame
        Unbuffered positions in units (:func:`optimal_positions`), index ``session``, columns instruments.
    buffer : float
        Fraction of the position, >= 0 (``PortfolioConfig.buffer``).

    Returns
    -------
    pd.DataFrame
        Shape of ``optimal``; units, >= 0; NaN where ``optimal`` is NaN.

    Raises
    ------
    SizingError
        If ``buffer`` is negative.
    """
    if not buffer >= 0:
        raise SizingError(f"position_buffer_width: buffer must be >= 0, got {buffer}")
    width = buffer * np.abs(optimal.to_numpy(dtype=float))
    return _named(pd.DataFrame(width, index=optimal.index.copy(), columns=optimal.columns.copy()))


def buffered_positions(
    optimal: pd.DataFrame,
    buffer_width: pd.DataFrame,
    round_positions: bool = True,
    initial: pd.Series | None = None,
) -> pd.DataFrame:
    """Buffered positions: trade only when outside ``optimal ± width``, and then to the nearest edge.

    pysystemtrade ``systems/accounts/account_buffering_subsystem.py::apply_buffer`` with
    ``buffer_trade_to_edge: True`` (carver.md §2.9). With rounding both bounds are rounded to
    whole units (numpy/pandas round-half-to-even, as pst's ``Series.round()``), so every trade
    lands on a whole number and ``|target - optimal| <= width + 0.5``.

    Differences from pst, on purpose: the path starts from ``initial`` (the position actually held,
    default 0) rather than from the first optimal position, so a live run continues from the
    broker's position; and where the optimal position or width is NaN (instrument not tradable
    yet, a missing bar, no weight estimate yet) the previous position is *held*, not zeroed,
    because a data gap must not cause a round trip. Before an instrument's first valid optimal
    position it is therefore ``initial`` (0 by default).

    The loop runs over sessions because each target depends on the previous one; it is vectorised
    across instruments.

    Parameters
    ----------
    optimal : pd.DataFrame
        Index ``session``, columns instruments; optimal positions in units (:func:`optimal_positions`).
    buffer_width : pd.DataFrame
        Half-widths in units (>= 0) (:func:`buffer_width`), covering ``optimal``'s sessions and
        instruments.
    round_positions : bool
        Round the bounds (and so every traded position) to whole units.
    initial : pd.Series, optional
        Index = instruments; positions held before the first session (missing instruments = 0).

    Returns
    -------
    pd.DataFrame
        Shape of ``optimal``; target positions in units, never NaN.

    Raises
    ------
    SizingError
        If a width is negative, ``initial`` has NaN, or ``buffer_width`` lacks sessions/instruments.
    """
    lower, upper = _bounds(optimal, buffer_width, round_positions)
    target = _apply_buffer(lower, upper, _initial_on(initial, optimal.columns))
    return _named(pd.DataFrame(target, index=optimal.index.copy(), columns=optimal.columns.copy()))


@dataclass(frozen=True)
class TargetPositions:
    """Every stage of the position calculation, as wide frames (index ``session``, columns instruments).

    Attributes
    ----------
    vol_scalar : pd.DataFrame
        Units per forecast 10 (the subsystem position at forecast 10).
    optimal : pd.DataFrame
        Unbuffered notional positions, units (NaN where not computable).
    lower, upper : pd.DataFrame
        Buffer bounds, units (rounded when positions are rounded; NaN where ``optimal`` is NaN).
    target : pd.DataFrame
        Buffered positions to hold after trading on the session's close, units; never NaN.
    """

    vol_scalar: pd.DataFrame
    optimal: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame
    target: pd.DataFrame

    def to_long(self) -> pd.DataFrame:
        """Long table ``[session, instrument, vol_scalar, optimal, lower, upper, target]``.

        Rows with no optimal position and a zero target (e.g. before an instrument lists) are
        left out: they carry no information.
        """
        parts = {
            "vol_scalar": self.vol_scalar,
            "optimal": self.optimal,
            "lower": self.lower,
            "upper": self.upper,
            "target": self.target,
        }
        long = pd.concat({k: v.stack() for k, v in parts.items()}, axis=1)  # pandas 3 keeps NaN
        long = long[long["optimal"].notna() | (long["target"] != 0)]
        long = long.reset_index()
        long.columns = [SESSION, INSTRUMENT, *parts]
        return long


def target_positions(
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    combined: pd.DataFrame,
    weights_daily: pd.DataFrame,
    idm_daily: pd.Series,
    point_size: pd.Series,
    config: PortfolioConfig,
    fx: pd.DataFrame | None = None,
    risk_scale: pd.DataFrame | pd.Series | None = None,
    initial: pd.Series | None = None,
    capital: pd.Series | None = None,
) -> TargetPositions:
    """Vol scalar → optimal positions → buffer bounds → buffered target positions, in one call.

    Uses ``config.capital`` (or ``capital``, per session, when given), ``config.vol_target``, ``config.buffer``,
    ``config.buffer_method`` (``forecast``: :func:`buffer_width`; ``position``: :func:`position_buffer_width`) and
    ``config.round_positions``; see :func:`volatility_scalar`, :func:`optimal_positions`,
    :func:`buffer_width` and :func:`buffered_positions` for shapes, units and NaN handling.
    ``prices`` fixes the sessions and instruments of every output.

    Raises
    ------
    SizingError
        As the functions above.
    """
    scalar = volatility_scalar(prices, vol, config.capital if capital is None else capital, config.vol_target,
                               point_size, fx)
    optimal = optimal_positions(scalar, combined, weights_daily, idm_daily, risk_scale)
    if config.buffer_method == "position":
        width = position_buffer_width(optimal, config.buffer)
    else:
        width = buffer_width(scalar, weights_daily, idm_daily, config.buffer)
    lower, upper = _bounds(optimal, width, config.round_positions)
    target = _apply_buffer(lower, upper, _initial_on(initial, optimal.columns))

    def frame(values: np.ndarray) -> pd.DataFrame:
        return _named(pd.DataFrame(values, index=optimal.index.copy(), columns=optimal.columns.copy()))

    return TargetPositions(scalar, optimal, frame(lower), frame(upper), frame(target))


# --------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------


def _bounds(
    optimal: pd.DataFrame, width: pd.DataFrame, round_positions: bool
) -> tuple[np.ndarray, np.ndarray]:
    w = _frame_on(width, optimal, "buffer_width", "optimal").to_numpy(dtype=float)
    if np.any(w < 0):
        raise SizingError("buffered_positions: buffer widths must be >= 0; compute them with buffer_width()")
    o = optimal.to_numpy(dtype=float)
    lower, upper = o - w, o + w
    if round_positions:
        lower, upper = np.round(lower), np.round(upper)
    return lower, upper


def _apply_buffer(lower: np.ndarray, upper: np.ndarray, initial: np.ndarray) -> np.ndarray:
    valid = np.isfinite(lower) & np.isfinite(upper)
    out = np.empty_like(lower)
    position = initial.copy()
    for t in range(lower.shape[0]):
        # Clipping to [lower, upper] is "stay if inside, else go to the nearest edge".
        clipped = np.minimum(np.maximum(position, lower[t]), upper[t])
        position = np.where(valid[t], clipped, position)
        out[t] = position
    return out


def _initial_on(initial: pd.Series | None, columns: pd.Index) -> np.ndarray:
    if initial is None:
        return np.zeros(len(columns))
    if initial.isna().any():
        nan = list(map(str, initial.index[initial.isna()]))
        raise SizingError(
            f"buffered_positions: initial positions are NaN for {nan}; give 0 for instruments not held"
        )
    return initial.reindex(columns).fillna(0.0).to_numpy(dtype=float)


def _point_sizes(point_size: pd.Series, columns: pd.Index) -> np.ndarray:
    missing = [str(c) for c in columns if c not in point_size.index]
    if missing:
        raise SizingError(
            f"volatility_scalar: no point size for instruments {missing}; add them to the universe config"
        )
    ps = point_size.reindex(columns).to_numpy(dtype=float)
    if not np.all(ps > 0):
        bad = [str(c) for c, v in zip(columns, ps) if not v > 0]
        raise SizingError(f"volatility_scalar: point sizes must be positive, not for {bad}")
    return ps


def _frame_on(frame: pd.DataFrame, like: pd.DataFrame, name: str, like_name: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise SizingError(
            f"{name} must be a DataFrame (index session, columns instruments), got {type(frame).__name__}"
        )
    missing = [str(c) for c in like.columns if c not in frame.columns]
    if missing:
        raise SizingError(
            f"{name} has no column for instruments {missing} of {like_name}; compute it for them first"
        )
    absent = like.index.difference(frame.index)
    if len(absent):
        raise SizingError(
            f"{name} lacks {len(absent)} sessions of {like_name} (first {absent[0].date()}); "
            "compute it over the same sessions first"
        )
    if frame.index.equals(like.index) and frame.columns.equals(like.columns):
        return frame
    return frame.reindex(index=like.index, columns=like.columns)


def _series_on(series: pd.Series, like: pd.DataFrame, name: str) -> np.ndarray:
    if not isinstance(series, pd.Series):
        raise SizingError(f"{name} must be a Series indexed by session, got {type(series).__name__}")
    absent = like.index.difference(series.index)
    if len(absent):
        raise SizingError(
            f"{name} lacks {len(absent)} sessions (first {absent[0].date()}); map it onto the sessions first"
        )
    return series.reindex(like.index).to_numpy(dtype=float)


def _scale_on(risk_scale: pd.DataFrame | pd.Series | None, like: pd.DataFrame) -> np.ndarray | float:
    if risk_scale is None:
        return 1.0
    if isinstance(risk_scale, pd.Series):
        return _series_on(risk_scale, like, "risk_scale")[:, None]
    return _frame_on(risk_scale, like, "risk_scale", "vol_scalar").to_numpy(dtype=float)


def _named(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename_axis(index=SESSION, columns=INSTRUMENT)
