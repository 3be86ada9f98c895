"""Carver's carry rule: the roll yield of a future in risk units (ST ch. 7, carver.md §2.4).

A future's price converges to spot as it expires, so holding a contract that trades below the
next one (``PRICE - CARRY > 0`` when the carry contract is further out) earns that gap per year
held. The rule annualises the gap, divides by the instrument's annualised price vol, and smooths
it. It returns the **unscaled** forecast: multiply by the forecast scalar (Carver's book uses
:data:`CARRY_FORECAST_SCALAR` = 30; pysystemtrade's pooled estimates are 27.8 - 29.4) and cap with
:func:`pipeline.signals.forecasts.scale_and_cap`.

Pitfall. pysystemtrade smooths with ``raw_carry.ewm(90).mean()``. The first positional argument
of pandas' ``ewm`` is ``com``, so that is ``com=90``: alpha = 1/91, the same decay as span 181,
not span 90. :func:`smooth_carry` reproduces ``ewm(com=smooth_days)`` on purpose.

Gaps. Everything is element-wise on the session grid except the smoothing, which is
``ewm(com, ignore_na=False)`` over the grid exactly as pysystemtrade does it: a session without a
carry value keeps the previous smoothed value, and the weights decay with the number of sessions
elapsed. No value at session d depends on data after d.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

#: pysystemtrade ``CALENDAR_DAYS_IN_YEAR`` (``syscore/dateutils.py``): the roll differential floor
#: is one calendar day.
CALENDAR_DAYS_IN_YEAR = 365.25
#: Annualisation: sqrt(256 business days) (pst ``ROOT_BDAYS_INYEAR``).
ROOT_BDAYS_INYEAR = 16.0
#: Carver's book forecast scalar for carry (ST; AFTS ``scaled_carry = smooth_carry * 30``).
CARRY_FORECAST_SCALAR = 30.0
#: pst ``carry`` rule default ``smooth_days`` (used as ``com``, see module docstring).
DEFAULT_SMOOTH_DAYS = 90


class CarryError(ValueError):
    """Carry input is malformed; the message says which and how to fix it."""


def _check_wide(frame: pd.DataFrame, name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise CarryError(f"{name}: expected a DataFrame (session x instrument), got {type(frame).__name__}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise CarryError(f"{name}: index must be a DatetimeIndex of sessions, got {type(frame.index).__name__}")
    if not (frame.index.is_monotonic_increasing and frame.index.is_unique):
        raise CarryError(f"{name}: sessions must be unique and ascending; sort_index() and drop duplicates first")


def _check_same_grid(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    if not (a.index.equals(b.index) and a.columns.equals(b.columns)):
        raise CarryError(
            f"{what}: frames must share sessions and instruments; reindex one to the other "
            "(e.g. the frames of one MultiplePrices)"
        )


def _values(frame: pd.DataFrame) -> np.ndarray:
    """float64 values of a wide frame (nullable integers' <NA> as NaN), as one array.

    The multiple-prices frames hold one column block per instrument; arithmetic on the array
    avoids a pandas operation per block.
    """
    return frame.to_numpy(dtype="float64", na_value=np.nan)


def _like(values: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(values, index=frame.index, columns=frame.columns, copy=False)


def contract_year_fraction(contracts: pd.DataFrame) -> pd.DataFrame:
    """Contract months as fractional years: ``yyyymmdd -> yyyy + mm/12 + dd/365.25``.

    Parameters
    ----------
    contracts : DataFrame, index ``session``, columns instruments
        Contract identifiers as ``yyyymmdd`` numbers (``dd = 00`` for a monthly contract) or
        legacy ``yyyymm`` (values below 1,000,000, read as ``yyyymm00``); NaN / <NA> = unknown.

    Returns
    -------
    DataFrame, same index and columns, float64
        Years (e.g. 201712 -> 2018.0, 20170300 -> 2017.25); NaN where the contract is unknown.
        Only differences of these values are meaningful.

    Raises
    ------
    CarryError
        Malformed frame, or a month outside 1..12 or a day outside 0..31.

    Notes
    -----
    pst ``sysobjects/carry_data.py::_total_year_frac_from_contract_series`` computes
    ``yyyy + (mmdd / 100) / 12``, which equals this for ``dd = 00`` (all of pysystemtrade's
    monthly contracts); a non-zero day is counted in calendar days here rather than as
    hundredths of a month.
    """
    _check_wide(contracts, "contract_year_fraction contracts")
    x = _values(contracts)
    x = np.where(x < 1_000_000, x * 100.0, x)
    year = np.floor(x / 10_000)
    month = np.floor((x - year * 10_000) / 100)
    day = x - year * 10_000 - month * 100
    bad = ~np.isnan(x) & ~((month >= 1) & (month <= 12) & (day >= 0) & (day <= 31))
    if bad.any():
        row, col = np.argwhere(bad)[0]  # the first by session, then instrument
        raise CarryError(
            f"contract_year_fraction: contract {x[row, col]:.0f} of {contracts.columns[col]} on "
            f"{pd.Timestamp(contracts.index[row]).date()} is not yyyymmdd / yyyymm; fix the multiple-prices file"
        )
    return _like(year + month / 12.0 + day / CALENDAR_DAYS_IN_YEAR, contracts)


def raw_roll(price: pd.DataFrame, carry: pd.DataFrame) -> pd.DataFrame:
    """Price gap between the held and the carry contract: ``PRICE - CARRY`` (0 -> NaN).

    Parameters
    ----------
    price, carry : DataFrame, same index ``session`` and columns
        Prices of the held and the carry contract, price points.

    Returns
    -------
    DataFrame, same shape
        Price points; NaN where either price is missing or the gap is exactly 0 (pst treats a
        zero gap as a missing carry price, not as zero carry).

    Raises
    ------
    CarryError
        Malformed frames or frames on different grids.

    Notes
    -----
    Source: pst ``sysobjects/carry_data.py::raw_futures_roll``.
    """
    _check_wide(price, "raw_roll price")
    _check_wide(carry, "raw_roll carry")
    _check_same_grid(price, carry, "raw_roll")
    roll = _values(price) - _values(carry)
    return _like(np.where(roll != 0.0, roll, np.nan), price)


def roll_differential(
    price_contract: pd.DataFrame, carry_contract: pd.DataFrame, floor: float = 1.0 / CALENDAR_DAYS_IN_YEAR
) -> pd.DataFrame:
    """Years from the held contract to the carry contract, abs-floored at ``floor``.

    Parameters
    ----------
    price_contract, carry_contract : DataFrame, same index ``session`` and columns
        Contracts as ``yyyymmdd`` (or ``yyyymm``), see :func:`contract_year_fraction`.
    floor : float
        Minimum absolute differential in years (pst: one calendar day, 1/365.25).

    Returns
    -------
    DataFrame, same shape, float64
        ``yearfrac(CARRY_CONTRACT) - yearfrac(PRICE_CONTRACT)``, years; negative when the carry
        contract is the nearer one (then PRICE - CARRY still gives the right sign of the roll
        yield per year). Values with ``0 < |d| < floor`` become ``sign(d) * floor``; NaN where a
        contract is unknown or ``d == 0`` (the same contract: no roll information; pst would
        divide by zero there).

    Raises
    ------
    CarryError
        Malformed frames, different grids, bad contracts or ``floor <= 0``.

    Notes
    -----
    Source: pst ``sysobjects/carry_data.py::roll_differentials`` (``apply_abs_min``).
    """
    if not floor > 0:
        raise CarryError(f"roll_differential: floor must be > 0 years, got {floor}")
    _check_same_grid(price_contract, carry_contract, "roll_differential")
    diff = (contract_year_fraction(carry_contract) - contract_year_fraction(price_contract)).to_numpy()
    diff = np.where(diff != 0.0, diff, np.nan)
    return _like(np.where(np.abs(diff) >= floor, diff, np.sign(diff) * floor), price_contract)


def annualised_roll(
    price: pd.DataFrame, carry: pd.DataFrame, price_contract: pd.DataFrame, carry_contract: pd.DataFrame
) -> pd.DataFrame:
    """Roll yield per year in price points: ``raw_roll / roll_differential``.

    Parameters
    ----------
    price, carry : DataFrame, index ``session``, columns instruments
        Held and carry contract prices, price points (e.g. ``MultiplePrices.price`` / ``.carry``).
    price_contract, carry_contract : DataFrame, same grid
        Their contracts (``yyyymmdd`` / ``yyyymm``).

    Returns
    -------
    DataFrame, same grid, float64
        Price points per year (positive = the held contract gains as it rolls down). NaN where
        any input is missing, the gap is 0 or the contracts coincide.

    Raises
    ------
    CarryError
        Malformed frames or different grids.

    Notes
    -----
    Source: pst ``systems/rawdata.py::annualised_roll`` / ``daily_annualised_roll``. pst then
    takes a daily mean (``resample("1B").mean()``); the session grid here already has one row
    per session, so that step is the identity.
    """
    _check_same_grid(price, price_contract, "annualised_roll")
    return raw_roll(price, carry) / roll_differential(price_contract, carry_contract)


def smooth_carry(raw_carry: pd.DataFrame, smooth_days: float = DEFAULT_SMOOTH_DAYS) -> pd.DataFrame:
    """Smooth a raw carry with pysystemtrade's ``ewm(smooth_days)``, i.e. ``ewm(com=smooth_days)``.

    Parameters
    ----------
    raw_carry : DataFrame, index ``session``, columns instruments
        Unsmoothed carry in annualised Sharpe-ratio units.
    smooth_days : float
        Centre of mass in sessions (pst default 90: alpha = 1/91, the decay of span 181).

    Returns
    -------
    DataFrame, same shape
        ``raw_carry.ewm(com=smooth_days, adjust=True, ignore_na=False).mean()``: NaN before an
        instrument's first value, afterwards the last smoothed value carries over gaps.

    Raises
    ------
    CarryError
        Malformed frame or ``smooth_days < 0``.

    Notes
    -----
    Source: pst ``systems/provided/rules/carry.py::carry`` (carver.md §2.4 and §4 pitfall).
    """
    _check_wide(raw_carry, "smooth_carry raw_carry")
    if not smooth_days >= 0:
        raise CarryError(f"smooth_carry: smooth_days (the ewm centre of mass) must be >= 0, got {smooth_days}")
    return raw_carry.astype("float64").ewm(com=smooth_days).mean()


def carry_forecast(
    ann_roll: pd.DataFrame, vol: pd.DataFrame, smooth_days: float = DEFAULT_SMOOTH_DAYS
) -> pd.DataFrame:
    """Carver's carry rule: smoothed annualised roll yield over annualised price vol (unscaled).

    ``raw = ann_roll / (vol * 16)``, then :func:`smooth_carry` (``ewm(com=smooth_days)``).

    Parameters
    ----------
    ann_roll : DataFrame, index ``session``, columns instruments
        From :func:`annualised_roll`, price points per year.
    vol : DataFrame, same index and columns
        Daily vol of the back-adjusted price in price points (e.g.
        :func:`pipeline.signals.volatility.mixed_vol` or ``robust_vol``); already forward-filled there.
    smooth_days : float
        ``ewm`` centre of mass (pst 90).

    Returns
    -------
    DataFrame, same grid
        Raw (unscaled, uncapped) carry forecast in annualised Sharpe-ratio units; multiply by
        :data:`CARRY_FORECAST_SCALAR` (30) and cap via ``pipeline.signals.forecasts.scale_and_cap``.
        Sessions with zero / NaN vol give no raw value (the smoothing carries the last one).

    Raises
    ------
    CarryError
        Malformed frames or different grids.

    Notes
    -----
    Source: pst ``systems/provided/rules/carry.py::carry`` (``ann_stdev = vol * ROOT_BDAYS_INYEAR``),
    ST ch. 7, carver.md §2.4.
    """
    _check_wide(ann_roll, "carry_forecast ann_roll")
    _check_wide(vol, "carry_forecast vol")
    _check_same_grid(ann_roll, vol, "carry_forecast")
    vol_values = _values(vol)
    with np.errstate(invalid="ignore"):
        ann_vol = np.where(vol_values > 0, vol_values, np.nan) * ROOT_BDAYS_INYEAR
    return smooth_carry(_like(_values(ann_roll) / ann_vol, ann_roll), smooth_days)


def carry_variations(
    price: pd.DataFrame,
    carry: pd.DataFrame,
    price_contract: pd.DataFrame,
    carry_contract: pd.DataFrame,
    vol: pd.DataFrame,
    smooth_days: Mapping[str, float],
) -> dict[str, pd.DataFrame]:
    """Raw carry forecasts of several variations from multiple prices put on the sessions of ``vol``.

    The multiple prices (pysystemtrade's business-day grid) are reindexed onto ``vol``'s sessions
    and instruments: a session without a row has no roll that day (the smoothing carries the last
    value), nothing after the last session of ``vol`` is used. Then :func:`annualised_roll` once and
    :func:`carry_forecast` per variation.

    Parameters
    ----------
    price, carry : DataFrame, index dates, columns instruments
        Held and carry contract prices, price points (``MultiplePrices.price`` / ``.carry``).
    price_contract, carry_contract : DataFrame, same grid
        Their contracts (``yyyymmdd`` / ``yyyymm``; nullable integers allowed).
    vol : DataFrame, index ``session`` (ascending), columns the instruments to compute
        Daily vol of the back-adjusted price in price points (the ``volatility`` asset's
        ``vol_price``); every column must be a column of ``price``.
    smooth_days : mapping variation name -> float
        ``ewm`` centre of mass of each variation (pst ``smooth_days``, 90 in the chapter-15 system).

    Returns
    -------
    dict variation name -> DataFrame (index and columns of ``vol``)
        Raw (unscaled, uncapped) carry in annualised Sharpe-ratio units.

    Raises
    ------
    CarryError
        Malformed frames, an instrument of ``vol`` without multiple prices, a non-positive ``smooth_days``.

    Notes
    -----
    Source: pst ``systems/rawdata.py::daily_annualised_roll`` and ``systems/provided/rules/carry.py``;
    pst averages the roll per business day, so on a holiday of the session calendar the pst roll of
    that day is dropped here (one value fewer in the smoothing).
    """
    _check_wide(vol, "carry_variations vol")
    absent = [c for c in vol.columns if c not in price.columns]
    if absent:
        raise CarryError(f"carry_variations: no multiple prices for {absent}; leave them out of vol")
    bad = {name: days for name, days in smooth_days.items() if not days > 0}
    if bad:
        raise CarryError(f"carry_variations: smooth_days must be > 0, got {bad}")

    def grid(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.reindex(index=vol.index, columns=vol.columns)

    ann = annualised_roll(grid(price), grid(carry), grid(price_contract), grid(carry_contract))
    return {name: carry_forecast(ann, vol, days) for name, days in smooth_days.items()}


def fx_carry(
    rate_base: pd.DataFrame, rate_quote: pd.DataFrame, vol: pd.DataFrame, price: pd.DataFrame
) -> pd.DataFrame:
    """Raw carry of a spot FX position from the interest-rate differential.

    ``(r_base - r_quote) * price / (vol * 16)``.

    Convention: a long position in pair ``BASEQUOTE`` (price = quote currency per one unit of
    base, e.g. EURUSD = USD per EUR) earns the base deposit rate and pays the quote rate, so its
    annual carry in price points is ``(r_base - r_quote) * price`` (covered interest parity: the
    same roll a future on the pair would show). Rates are **annual decimal fractions**
    (0.05 = 5% a year), each applying over the session it is stamped with.

    Parameters
    ----------
    rate_base, rate_quote : DataFrame, index ``session``, columns pairs
        Annual interest rates (decimal) of the base and quote currency.
    vol : DataFrame, same grid
        Daily price vol of the pair in price points.
    price : DataFrame, same grid
        Spot rate in price points (quote currency per base unit).

    Returns
    -------
    DataFrame, same grid
        Raw carry in annualised Sharpe-ratio units (unsmoothed; apply :func:`smooth_carry` and a
        forecast scalar as for futures carry). NaN where any input is missing or vol <= 0.

    Raises
    ------
    CarryError
        Malformed frames or different grids.

    Notes
    -----
    Source: ST ch. 7 / AFTS ch. 10 (carry as the rate differential for spot FX), normalised
    exactly as the futures carry rule (pst ``systems/provided/rules/carry.py``).
    """
    frames = {"rate_base": rate_base, "rate_quote": rate_quote, "vol": vol, "price": price}
    for name, frame in frames.items():
        _check_wide(frame, f"fx_carry {name}")
        _check_same_grid(frame, rate_base, f"fx_carry ({name} vs rate_base)")
    ann_vol = vol.astype("float64").where(vol > 0) * ROOT_BDAYS_INYEAR
    return (rate_base.astype("float64") - rate_quote.astype("float64")) * price.astype("float64") / ann_vol


def rate_differentials(differentials: Mapping[str, float | str], index: pd.DatetimeIndex) -> pd.DataFrame:
    """The configured interest-rate differential of each spot FX pair on the sessions of ``index``.

    Parameters
    ----------
    differentials : mapping pair -> float or str
        ``Instrument.rate_differential``: a constant annual differential (base minus quote, decimal)
        or the path of a CSV with columns ``DATETIME`` and ``differential`` (one row per date the
        differential changes or is observed; the last value up to a session applies to it).
    index : DatetimeIndex
        The sessions wanted (ascending).

    Returns
    -------
    DataFrame, index ``index``, columns the pairs
        Annual differentials, decimal; NaN before a CSV's first date (no carry there).

    Raises
    ------
    CarryError
        A CSV that cannot be read, lacks the columns, or holds a non-numeric differential or a bad
        date (the file and row named).
    """
    columns = {}
    for pair, value in differentials.items():  # a handful of FX pairs
        if not isinstance(value, str):
            columns[pair] = pd.Series(float(value), index=index)
            continue
        path = Path(value)
        try:
            raw = pd.read_csv(path, dtype=str)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise CarryError(f"rate_differential of {pair}: cannot read {path}: {exc}") from exc
        if not {"DATETIME", "differential"} <= set(raw.columns):
            raise CarryError(f"rate_differential of {pair}: {path} needs the columns DATETIME,differential; "
                             f"it has {list(raw.columns)}")
        dates = pd.to_datetime(raw["DATETIME"], errors="coerce")
        values = pd.to_numeric(raw["differential"], errors="coerce")
        bad = dates.isna() | values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise CarryError(f"rate_differential of {pair}: {path} row {row + 2} has a bad date or differential "
                             f"({raw['DATETIME'].iloc[row]!r}, {raw['differential'].iloc[row]!r})")
        series = pd.Series(values.to_numpy(), index=pd.DatetimeIndex(dates).normalize()).sort_index()
        series = series[~series.index.duplicated(keep="last")]
        columns[pair] = series.reindex(series.index.union(index)).ffill().reindex(index)
    return pd.DataFrame(columns, index=index)


def fx_carry_variations(differential: pd.DataFrame, price: pd.DataFrame, vol: pd.DataFrame,
                        smooth_days: Mapping[str, float]) -> dict[str, pd.DataFrame]:
    """Raw carry forecasts of spot FX pairs, one frame per carry variation.

    ``fx_carry(differential, 0, vol, price)`` (the differential is already base minus quote), then
    :func:`smooth_carry` with each variation's ``smooth_days``, as the futures carry rule.

    Parameters
    ----------
    differential : DataFrame, index ``session``, columns pairs
        :func:`rate_differentials`.
    price, vol : DataFrame, same grid
        Spot closes and daily vol in price points (the ``volatility`` asset).
    smooth_days : mapping variation name -> float
        ``ewm`` centre of mass of each variation (pst ``smooth_days``).

    Returns
    -------
    dict variation name -> DataFrame (grid of ``vol``)
        Raw (unscaled, uncapped) carry in annualised Sharpe-ratio units.

    Raises
    ------
    CarryError
        As :func:`fx_carry` and :func:`smooth_carry`.
    """
    raw = fx_carry(differential, pd.DataFrame(0.0, index=differential.index, columns=differential.columns), vol, price)
    return {name: smooth_carry(raw, days) for name, days in smooth_days.items()}
