"""Trading costs in Sharpe-ratio units, forecast turnover and Carver's speed limit (carver.md §2.10).

A cost in cash says little until it is compared with the risk it buys. Carver measures it in
annualised Sharpe-ratio (SR) units: the SR cost of one trade of one unit is its cash cost over the
unit's annualised cash vol, and a rule's annual SR cost is that times the number of such trades a
year its forecast implies (its turnover), plus the holding cost of rolling futures. The *speed
limit* (ST ch. 12) drops, per instrument, any rule whose annual SR cost exceeds 0.13: no realistic
edge survives paying more than about a third of a good rule's SR in costs.

Every value for session ``d`` uses prices, vols and forecasts up to ``d`` only (rolling and
expanding windows), so a backfill applies the limit as the daily run would have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.config import CostModel, Instrument
from pipeline.instruments import point_sizes

#: Carver annualises with 256 business days; sqrt(256) = 16 (carver.md §2.0).
BUSINESS_DAYS_IN_YEAR = 256.0
ROOT_BDAYS_IN_YEAR = 16.0
#: ST ch. 12: a rule costing more than this many annual SR units is too fast for the instrument.
SPEED_LIMIT = 0.13
#: Forecasts are scaled to an average absolute value of 10 (ST ch. 7).
AVERAGE_ABS_FORECAST = 10.0


class CostError(ValueError):
    """Bad input to a cost calculation; the message names the input and what to do."""


def cash_cost_per_trade(
    costs: CostModel, price: float | np.ndarray, point_size: float, units: float = 1.0
) -> float | np.ndarray:
    """Cash cost of one trade of ``units`` units, in the instrument's currency.

    ``|n| x slippage x point_size + max(|n| x commission_per_unit, commission_min,
    commission_pct x |n| x |price| x point_size)``.

    Parameters
    ----------
    costs : CostModel
        Slippage in price points per unit; commission per unit, minimum per trade and fraction of
        traded notional.
    price : float or ndarray
        Price in price points (absolute value used: back-adjusted futures may be negative).
    point_size : float
        Currency per price point per unit (> 0).
    units : float
        Trade size in units (contracts, shares); the sign is ignored.

    Returns
    -------
    float or ndarray (shape of ``price``)
        Cost in instrument currency.

    Raises
    ------
    CostError
        ``point_size`` not positive.

    Notes
    -----
    Source: pst ``sysobjects/instruments.py`` (``instrumentCosts.calculate_cost_instrument_currency``),
    carver.md §2.10.
    """
    if not point_size > 0:
        raise CostError(f"cash_cost_per_trade: point_size must be > 0, got {point_size}")
    n = abs(units)
    notional = n * np.abs(price) * point_size
    slippage = n * costs.slippage * point_size
    commission = np.maximum(np.maximum(n * costs.commission_per_unit, costs.commission_min),
                            costs.commission_pct * notional)
    return slippage + commission


def average_position_units(
    vol: pd.DataFrame,
    point_size: pd.Series,
    capital: float,
    vol_target: float,
    weights: pd.Series | None = None,
    idm: float = 1.0,
    fx: pd.DataFrame | None = None,
    window: int = 256,
) -> pd.DataFrame:
    """Average position (the position at forecast 10) in units, per session and instrument.

    ``N = capital x vol_target / 16 x weight x IDM / (mean daily vol x point_size x fx)``: the
    subsystem position of Carver's sizing at the average forecast, with the vol averaged over the
    last ``window`` sessions as in :func:`sr_cost_per_trade`.

    Parameters
    ----------
    vol : DataFrame, index ``session``, columns instruments
        Daily vol in price points.
    point_size : Series, index instrument
        Instrument currency per price point per unit, > 0.
    capital : float
        Trading capital in the base currency, > 0.
    vol_target : float
        Annualised vol target as a fraction (0.25 = 25%), > 0.
    weights : Series, index instrument, optional
        Instrument weights; default equal, ``1 / n`` over the columns of ``vol``.
    idm : float
        Instrument diversification multiplier (>= 1; default 1, i.e. before diversification).
    fx : DataFrame, index ``session``, columns instruments, optional
        Base currency per unit of instrument currency; default 1.
    window : int
        Sessions averaged for the vol (256).

    Returns
    -------
    DataFrame, index and columns of ``vol``
        Units (contracts, shares; not rounded). NaN where the mean vol is not positive.

    Raises
    ------
    CostError
        Non-positive capital, vol target, IDM or point size; an instrument without a point size.

    Notes
    -----
    Source: ST ch. 10 / pst ``systems/positionsizing.py`` (volatility scalar x forecast / 10 x
    weight x IDM), carver.md §2.7.
    """
    if not (capital > 0 and vol_target > 0 and idm > 0 and window >= 1):
        raise CostError(
            f"average_position_units: need capital, vol_target, idm > 0 and window >= 1, got "
            f"{capital}, {vol_target}, {idm}, {window}"
        )
    instruments = list(vol.columns)
    missing = [i for i in instruments if i not in point_size.index]
    if missing:
        raise CostError(f"average_position_units: no point size for instruments {missing}")
    ps = point_size.reindex(instruments).to_numpy(dtype=float)
    if not np.all(ps > 0):
        raise CostError(f"average_position_units: point sizes must be > 0, got {dict(zip(instruments, ps))}")
    w = (
        np.full(len(instruments), 1.0 / max(len(instruments), 1))
        if weights is None
        else weights.reindex(instruments).fillna(0.0).to_numpy(dtype=float)
    )
    mean_vol = vol.rolling(window, min_periods=1).mean().to_numpy(dtype=float)
    rate = 1.0 if fx is None else fx.reindex(index=vol.index, columns=instruments).ffill().to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        units = np.where(
            mean_vol > 0, capital * vol_target / ROOT_BDAYS_IN_YEAR * w * idm / (mean_vol * ps * rate), np.nan
        )
    return pd.DataFrame(units, index=vol.index, columns=vol.columns)


def sr_cost_per_trade(
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    point_size: pd.Series,
    costs: Mapping[str, CostModel],
    window: int = 256,
    trade_units: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """SR cost of one trade, per unit traded, per session and instrument (annualised SR units).

    ``cash_cost_per_trade(price = mean price, units = n) / (n x mean daily vol x 16 x point_size)``,
    with the means over the last ``window`` sessions with a value (the current one included). The
    trade size ``n`` is one unit by default; Carver's convention (ST ch. 12, AFTS ch. 5) is a
    trade of the average position (:func:`average_position_units`), the block in which turnover is
    counted, so a per-trade minimum commission is spread over a realistic trade. Costs that scale
    with the trade (slippage, per-unit and percentage commission) give the same SR cost either way.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (ascending), columns instruments
        Close prices in price points; NaN = no price.
    vol : DataFrame, same index, columns at least those of ``prices``
        Daily vol in price points (:func:`pipeline.signals.volatility.robust_vol`).
    point_size : Series, index instrument
        Currency per price point per unit, > 0, for every instrument of ``prices``.
    costs : mapping instrument -> CostModel
        Cost model of every instrument of ``prices``.
    window : int
        Sessions averaged (pst: one year, 256).
    trade_units : DataFrame, index and columns of ``prices`` (or a superset), optional
        Size of one trade in units (e.g. :func:`average_position_units`); at least one whole unit
        is traded (``max(n, 1)``), and a NaN size counts as one unit. None: one unit.

    Returns
    -------
    DataFrame, index and columns of ``prices``
        SR units of a trade of ``n`` units per unit traded (dimensionless, annualised): multiplied
        by a turnover counted in the same blocks it gives the annual SR cost. NaN before the first
        price or vol, or where the mean vol is not positive. Currency cancels: cost and vol are both
        in the instrument's currency.

    Raises
    ------
    CostError
        An instrument without a point size or cost model, a non-positive point size, or
        ``window < 1``.

    Notes
    -----
    Source: pst ``systems/accounts/account_costs.py`` (``get_SR_cost_per_trade_for_instrument``:
    cost at the average price of the last year over the average annualised price vol of the last
    year), carver.md §2.10; AFTS ch. 5. With one unit a minimum commission per trade is charged in
    full on that unit, as pst's ``cost(n=1)`` does.
    """
    if window < 1:
        raise CostError(f"sr_cost_per_trade: window must be >= 1, got {window}")
    instruments = list(prices.columns)
    missing = [i for i in instruments if i not in point_size.index or i not in costs]
    if missing:
        raise CostError(f"sr_cost_per_trade: no point size or cost model for instruments {missing}")
    absent = [i for i in instruments if i not in vol.columns]
    if absent:
        raise CostError(f"sr_cost_per_trade: no vol for instruments {absent}")
    ps = point_size.reindex(instruments).to_numpy(dtype=float)
    if not np.all(ps > 0):
        raise CostError(f"sr_cost_per_trade: point sizes must be > 0, got {dict(zip(instruments, ps))}")
    mean_price = prices.abs().rolling(window, min_periods=1).mean().to_numpy(dtype=float)
    mean_vol = vol.reindex(index=prices.index, columns=instruments).rolling(window, min_periods=1).mean()
    mean_vol = mean_vol.to_numpy(dtype=float)
    slip = np.array([costs[i].slippage for i in instruments])
    per_unit = np.array([costs[i].commission_per_unit for i in instruments])
    minimum = np.array([costs[i].commission_min for i in instruments])
    pct = np.array([costs[i].commission_pct for i in instruments])
    n = 1.0
    if trade_units is not None:
        n = trade_units.reindex(index=prices.index, columns=instruments).to_numpy(dtype=float)
        n = np.maximum(np.where(np.isnan(n), 1.0, np.abs(n)), 1.0)
    # cash cost of the n-unit trade, per unit: the minimum commission is shared by the n units
    cash = slip * ps + np.maximum(np.maximum(per_unit, minimum / n), pct * mean_price * ps)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(mean_vol > 0, cash / (mean_vol * ROOT_BDAYS_IN_YEAR * ps), np.nan)
    return pd.DataFrame(sr, index=prices.index, columns=prices.columns).rename_axis(
        index="session", columns="instrument"
    )


def forecast_turnover(
    forecasts: pd.DataFrame, average_abs: float = AVERAGE_ABS_FORECAST, pooled: bool = True
) -> pd.DataFrame:
    """Annual turnover of each rule's forecast, expanding (no look-ahead).

    ``turnover_t = 256 x mean_{s <= t} |f_s - f_{s-1}| / average_abs``: how many times a year the
    forecast moves by its average absolute size, i.e. how many average positions it trades.

    Parameters
    ----------
    forecasts : DataFrame, index ``session`` (ascending), columns MultiIndex ``(rule, instrument)``
        Scaled or capped forecasts (``ForecastSet.capped``), forecast units; NaN = no forecast
        (a change is counted only between two consecutive sessions that both have one).
    average_abs : float
        Average absolute forecast the turnover is measured against (10).
    pooled : bool
        True (pst ``use_pooled_turnover: True``): one turnover per rule, the mean of every
        instrument's daily changes up to ``t``, shared by the rule's columns. False: per
        instrument.

    Returns
    -------
    DataFrame, index and columns of ``forecasts``
        Turnover in round trips of the average position per year (> 0). NaN until a first change
        is observed.

    Raises
    ------
    CostError
        ``forecasts`` without a two-level column MultiIndex, or ``average_abs <= 0``.

    Notes
    -----
    Source: pst ``systems/accounts/account_forecast.py`` / ``forecast_turnover`` (``turnover(x,
    10) = mean(|diff(x / 10)|) x 256`` on daily data), carver.md §2.10; ST ch. 12.
    """
    _check_multi(forecasts, "forecast_turnover")
    if not average_abs > 0:
        raise CostError(f"forecast_turnover: average_abs must be > 0, got {average_abs}")
    change = forecasts.astype(float).diff().abs()
    seen = change.notna()
    total = change.fillna(0.0).cumsum()
    count = seen.cumsum()
    if pooled:
        rules = forecasts.columns.get_level_values(0)
        total = total.T.groupby(rules, sort=False).sum().T.reindex(columns=rules)
        count = count.T.groupby(rules, sort=False).sum().T.reindex(columns=rules)
        total.columns = count.columns = forecasts.columns
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_change = total.to_numpy() / count.to_numpy(dtype=float)
    mean_change[count.to_numpy() == 0] = np.nan
    return pd.DataFrame(mean_change * BUSINESS_DAYS_IN_YEAR / average_abs, index=forecasts.index,
                        columns=forecasts.columns)


def annual_sr_cost(
    turnover: pd.DataFrame, sr_per_trade: pd.DataFrame, rolls_per_year: pd.Series | None = None
) -> pd.DataFrame:
    """Annual SR cost of each rule for each instrument: trading cost plus holding cost.

    ``cost = turnover x SR cost per trade + rolls_per_year x 2 x SR cost per trade``.

    Parameters
    ----------
    turnover : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        :func:`forecast_turnover`.
    sr_per_trade : DataFrame, index ``session``, columns instruments
        :func:`sr_cost_per_trade`; must cover the sessions and instruments of ``turnover``.
    rolls_per_year : Series, index instrument, optional
        Futures rolls a year (each a closing and an opening trade); missing = 0 (stocks, spot FX).

    Returns
    -------
    DataFrame, index and columns of ``turnover``
        Annual cost in SR units (dimensionless). NaN where either input is NaN.

    Raises
    ------
    CostError
        ``sr_per_trade`` lacks an instrument of ``turnover``.

    Notes
    -----
    Source: pst ``systems/accounts/account_costs.py`` (``get_SR_cost_given_turnover``: transaction
    cost plus ``rolls_per_year x 2`` trades of holding cost), carver.md §2.10.
    """
    _check_multi(turnover, "annual_sr_cost")
    instruments = turnover.columns.get_level_values(1)
    missing = sorted(set(instruments) - set(sr_per_trade.columns))
    if missing:
        raise CostError(f"annual_sr_cost: no SR cost per trade for instruments {missing}")
    per_trade = sr_per_trade.reindex(index=turnover.index, columns=instruments).to_numpy(dtype=float)
    rolls = np.zeros(len(instruments)) if rolls_per_year is None else (
        rolls_per_year.reindex(instruments).fillna(0.0).to_numpy(dtype=float)
    )
    cost = per_trade * (turnover.to_numpy(dtype=float) + 2.0 * rolls)
    return pd.DataFrame(cost, index=turnover.index, columns=turnover.columns)


def rule_sr_costs(
    capped: pd.DataFrame,
    prices: pd.DataFrame,
    vol: pd.DataFrame,
    instruments: Sequence[Instrument],
    window: int = 256,
    trade_units: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Annual SR cost of every (rule, instrument) pair, per session, from the universe's cost models.

    :func:`sr_cost_per_trade` x (:func:`forecast_turnover`, pooled + 2 x ``rolls_per_year``)
    (:func:`annual_sr_cost`), with each instrument's ``point_size``, ``costs`` and
    ``rolls_per_year`` from its :class:`~pipeline.config.Instrument`.

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts.
    prices, vol : DataFrame, index ``session``, columns instruments
        Close prices and daily vol in price points, covering the instruments of ``capped``.
    instruments : sequence of Instrument
        The configured universe (at least the instruments of ``capped``).
    window : int
        Sessions averaged for the SR cost per trade (256).
    trade_units : DataFrame, index ``session``, columns instruments, optional
        Trade size for :func:`sr_cost_per_trade` (e.g. :func:`average_position_units`); None: one unit.

    Returns
    -------
    DataFrame, index and columns of ``capped``
        Annual SR cost (dimensionless); NaN until turnover and vol are known.

    Raises
    ------
    CostError
        An instrument of ``capped`` missing from ``instruments``, ``prices`` or ``vol``.
    """
    _check_multi(capped, "rule_sr_costs")
    names = sorted(set(capped.columns.get_level_values(1)))
    by_symbol = {i.symbol: i for i in instruments}
    missing = [n for n in names if n not in by_symbol or n not in prices.columns]
    if missing:
        raise CostError(f"rule_sr_costs: instruments {missing} are not in the universe or have no prices")
    per_trade = sr_cost_per_trade(
        prices.reindex(index=capped.index, columns=names),
        vol.reindex(index=capped.index),
        point_sizes([by_symbol[n] for n in names]),
        {n: by_symbol[n].costs for n in names},
        window,
        trade_units=None if trade_units is None else trade_units.reindex(index=capped.index),
    )
    rolls = pd.Series({n: by_symbol[n].rolls_per_year for n in names})
    return annual_sr_cost(forecast_turnover(capped), per_trade, rolls)


def speed_limit_exclusions(annual_cost: pd.DataFrame, speed_limit: float = SPEED_LIMIT) -> pd.DataFrame:
    """Which (rule, instrument) pairs break the speed limit, per session.

    Parameters
    ----------
    annual_cost : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        :func:`annual_sr_cost`.
    speed_limit : float
        Ceiling in annual SR units (ST ch. 12: 0.13), > 0.

    Returns
    -------
    DataFrame of bool, index and columns of ``annual_cost``
        True = excluded (cost > limit). A pair whose cost is not known yet (NaN) is not excluded.

    Raises
    ------
    CostError
        ``speed_limit`` not positive.

    Notes
    -----
    Source: ST ch. 12 ("speed limit"); pst ``forecast_post_ceiling_cost_SR`` /
    ``ceiling_cost_SR: 0.13`` (carver.md §2.6).
    """
    _check_multi(annual_cost, "speed_limit_exclusions")
    if not speed_limit > 0:
        raise CostError(f"speed_limit_exclusions: speed_limit must be > 0, got {speed_limit}")
    return annual_cost > speed_limit


def apply_speed_limit(capped: pd.DataFrame, excluded: pd.DataFrame) -> pd.DataFrame:
    """Drop excluded rule forecasts so the combination gives them weight 0.

    :func:`pipeline.signals.combine.combine_forecasts` renormalises the forecast weights over the rules
    that have a forecast, per instrument and session, so a NaN forecast is exactly "forecast
    weight 0, the other rules' weights renormalised".

    Parameters
    ----------
    capped : DataFrame, index ``session``, columns MultiIndex ``(rule, instrument)``
        Capped forecasts.
    excluded : DataFrame of bool, same index, columns a superset of ``capped``'s
        :func:`speed_limit_exclusions`; missing entries = not excluded.

    Returns
    -------
    DataFrame, shape of ``capped``
        ``capped`` with NaN where excluded.

    Raises
    ------
    CostError
        Malformed frames.
    """
    _check_multi(capped, "apply_speed_limit capped")
    _check_multi(excluded, "apply_speed_limit excluded")
    mask = excluded.reindex(index=capped.index, columns=capped.columns).fillna(False).astype(bool)
    return capped.mask(mask)


def too_expensive(capped: pd.DataFrame, excluded: pd.DataFrame) -> pd.DataFrame:
    """Instruments that have forecasts but whose every rule is excluded by the speed limit.

    Such an instrument is too expensive to trade with these rules (pst logs "no rules are cheap
    enough"); the caller sets its combined forecast to 0 so any position is closed.

    Returns
    -------
    DataFrame of bool, index session, columns instrument (sorted)
    """
    has = capped.notna()
    kept = has & ~excluded.reindex(index=capped.index, columns=capped.columns).fillna(False).astype(bool)
    instruments = capped.columns.get_level_values(1)
    any_has = has.T.groupby(instruments).any().T
    any_kept = kept.T.groupby(instruments).any().T
    return (any_has & ~any_kept).rename_axis(index="session", columns="instrument")


def excluded_pairs(excluded: pd.DataFrame, annual_cost: pd.DataFrame, session: pd.Timestamp) -> pd.DataFrame:
    """The (instrument, rule) pairs excluded at ``session``, with their annual SR cost, for display.

    Returns
    -------
    DataFrame, columns ``instrument, rule, annual_sr_cost``, sorted by instrument then rule
    """
    row = excluded.loc[session]
    cost = annual_cost.loc[session]
    pairs = row[row.astype(bool)].index
    out = pd.DataFrame({
        "instrument": [i for _, i in pairs],
        "rule": [r for r, _ in pairs],
        "annual_sr_cost": [float(cost[p]) for p in pairs],
    })
    return out.sort_values(["instrument", "rule"], ignore_index=True)


def _check_multi(frame: pd.DataFrame, name: str) -> None:
    if not (isinstance(frame, pd.DataFrame) and isinstance(frame.columns, pd.MultiIndex)
            and frame.columns.nlevels == 2):
        raise CostError(f"{name}: expected a DataFrame with a (rule, instrument) column MultiIndex")


#: Reasons an instrument is not traded on a session (:func:`instrument_exclusions`), in priority order.
EXCLUSION_REASONS = ("short_history", "cost_per_trade")


def instrument_exclusions(
    prices: pd.DataFrame,
    sr_per_trade: pd.DataFrame,
    max_sr_cost_per_trade: float | None,
    min_history_sessions: int | None,
) -> pd.DataFrame:
    """Why each instrument is not traded on each session: too short a history or too costly a trade.

    Parameters
    ----------
    prices : DataFrame, index ``session`` (ascending), columns instruments
        Closes; NaN = no price that session. The history of an instrument on session d is the count
        of its prices up to d (expanding, no look-ahead).
    sr_per_trade : DataFrame, index and columns covering ``prices``'
        :func:`sr_cost_per_trade` (annual SR units of one trade, means over the cost window up to d);
        NaN = not known yet (not excluded on cost).
    max_sr_cost_per_trade : float or None
        Ceiling in SR units per trade (AFTS: 0.01); None = no cost exclusion.
    min_history_sessions : int or None
        Prices needed before trading (one year: 256); None = no history exclusion.

    Returns
    -------
    DataFrame of str, index and columns of ``prices``
        ``""`` where traded, else the first of :data:`EXCLUSION_REASONS` that applies:
        ``short_history`` (fewer than ``min_history_sessions`` prices so far) or ``cost_per_trade``
        (SR cost of a trade above ``max_sr_cost_per_trade``). Sessions before an instrument's first
        price are ``short_history`` too (nothing to trade there anyway).

    Raises
    ------
    CostError
        ``max_sr_cost_per_trade`` not > 0 or ``min_history_sessions`` < 1.

    Notes
    -----
    Sources: AFTS (selecting instruments: a market costing more than 0.01 SR units per trade is not
    traded); ST ch. 12 (costs in SR units). The caller sets the combined forecast of an excluded
    instrument to 0, so its position is closed as with :func:`too_expensive`.
    """
    if max_sr_cost_per_trade is not None and not max_sr_cost_per_trade > 0:
        raise CostError(f"instrument_exclusions: max_sr_cost_per_trade must be > 0, got {max_sr_cost_per_trade}")
    if min_history_sessions is not None and min_history_sessions < 1:
        raise CostError(f"instrument_exclusions: min_history_sessions must be >= 1, got {min_history_sessions}")
    short = np.zeros(prices.shape, dtype=bool)
    if min_history_sessions is not None:
        short = prices.notna().cumsum().to_numpy() < min_history_sessions
    costly = np.zeros(prices.shape, dtype=bool)
    if max_sr_cost_per_trade is not None:
        cost = sr_per_trade.reindex(index=prices.index, columns=prices.columns).to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            costly = cost > max_sr_cost_per_trade
    reason = np.select([short, costly], list(EXCLUSION_REASONS), default="")
    return pd.DataFrame(reason, index=prices.index, columns=prices.columns).rename_axis(
        index="session", columns="instrument")


def exclusion_table(
    reasons: pd.DataFrame,
    sr_per_trade: pd.DataFrame,
    history: pd.DataFrame,
    stale: pd.DataFrame | None = None,
    max_sr_cost_per_trade: float | None = None,
    min_history_sessions: int | None = None,
    stale_sessions: int | None = None,
) -> pd.DataFrame:
    """One row per instrument left out (or guarded) on some session of ``reasons``, for reports and logs.

    Parameters
    ----------
    reasons : DataFrame of str, index ``session``, columns instruments
        :func:`instrument_exclusions` over the sessions reported.
    sr_per_trade, history : DataFrame, same index and columns
        The SR cost per trade and the count of prices so far, for the values quoted.
    stale : DataFrame of bool, same index and columns, optional
        The stale-price guard's mask (:func:`pipeline.quality.stale.stale_mask`): no new forecast,
        position held; listed with reason ``stale_guard``.
    max_sr_cost_per_trade, min_history_sessions, stale_sessions : optional
        The configured thresholds, quoted in ``detail``.

    Returns
    -------
    DataFrame, columns ``instrument, reason, sessions, share, first, last, detail``
        One row per (instrument, reason) with at least one session: ``sessions`` excluded, their
        ``share`` of the sessions from the instrument's first price (or of all sessions), the ``first``
        and ``last`` such session (ISO dates) and ``detail`` (the value against its threshold at the
        last such session). ``reason`` is ``short_history``, ``cost_per_trade`` or ``stale_guard``.
        Sorted by reason, then sessions descending.
    """
    flags = {r: reasons == r for r in EXCLUSION_REASONS}
    has = history.diff().fillna(history).gt(0) if len(history) else history.astype(bool)
    flags["short_history"] &= has  # sessions before the first price are not a decision
    if stale is not None:
        flags["stale_guard"] = stale.reindex(index=reasons.index, columns=reasons.columns, fill_value=False).astype(bool)
    rows = []
    for reason, mask in flags.items():  # three reasons, each vectorised over sessions and instruments
        count = mask.sum()
        hit = count[count > 0].index
        if not len(hit):
            continue
        sub = mask[hit]
        last = sub[::-1].idxmax()
        first = sub.idxmax()
        days = history[hit].gt(0).sum().where(lambda s: s > 0, len(reasons))  # sessions from the first price
        if reason == "cost_per_trade":
            values = [sr_per_trade.at[last[i], i] for i in hit]
            detail = [f"SR cost per trade {v:.4f} > {max_sr_cost_per_trade:g}" for v in values]
        elif reason == "short_history":
            values = [history.at[last[i], i] for i in hit]
            detail = [f"{int(v)} prices < {min_history_sessions} sessions" for v in values]
        else:
            detail = [f"close unchanged for {stale_sessions} sessions or more: no new forecast, position held"] * len(hit)
        rows.append(pd.DataFrame({
            "instrument": list(hit), "reason": reason, "sessions": count[hit].astype(int).to_numpy(),
            "share": (count[hit] / days).to_numpy(dtype=float),
            "first": [d.date().isoformat() for d in first], "last": [d.date().isoformat() for d in last],
            "detail": detail,
        }))
    if not rows:
        return pd.DataFrame(columns=["instrument", "reason", "sessions", "share", "first", "last", "detail"])
    out = pd.concat(rows, ignore_index=True)
    return out.sort_values(["reason", "sessions"], ascending=[True, False], ignore_index=True)
