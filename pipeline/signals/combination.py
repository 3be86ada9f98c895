"""The forecast combination of the system, from capped forecasts to the combined forecast (ST ch. 8, 12).

One entry point, :func:`combine_rules`, runs the whole stage as configured (``combination.*``):
the SR cost of each rule on each instrument, Carver's speed limit, the forecast weights (fixed,
equal, handcrafted or bootstrapped, re-estimated at year ends and smoothed), the FDM and the cap,
and the instruments left out of trading (too short a history, too costly a trade: :func:`exclusions_of`).
The ``combined_forecast`` asset calls it; the walk-forward backtest, which fits the same stage on
each training window, shares its cost and speed-limit steps (:func:`combination_costs`,
:func:`close_too_expensive`), so a rule is charged and excluded the same way in both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.instruments import point_sizes
from pipeline.quality.stale import stale_mask
from pipeline.signals.combine import CombinationError, forecast_weights
from pipeline.signals.costs import (
    apply_speed_limit,
    average_position_units,
    exclusion_table,
    instrument_exclusions,
    rule_sr_costs,
    speed_limit_exclusions,
    sr_cost_per_trade,
    too_expensive,
)
from pipeline.signals.forecast_weights import (
    combine_with_weight_history,
    estimate_forecast_weights,
)


@dataclass(frozen=True)
class CombinedForecast:
    """The outputs of :func:`combine_rules`.

    Attributes
    ----------
    combined : pd.DataFrame
        Index ``session``, columns the configured instruments; weighted, FDM-scaled forecast capped
        at +/- ``rules.forecast_cap`` (0 for an instrument with no rule cheap enough).
    fdm : pd.Series
        Index ``session``; the forecast diversification multiplier applied on each session.
    weight_history : pd.DataFrame
        Index ``estimated_at``, columns rules; each estimate of the forecast weights (one row for
        ``fixed`` and ``equal``), before smoothing.
    costs : pd.DataFrame or None
        Annual SR cost per session and ``(rule, instrument)`` (None when neither the speed limit nor
        an estimated weighting needs it).
    excluded : pd.DataFrame or None
        True where a ``(rule, instrument)`` is over the speed limit on a session (None without it).
    exclusions : pd.DataFrame or None
        Index ``session``, columns instruments: why an instrument is not traded that session
        (``""`` = traded; ``short_history``, ``cost_per_trade``: :func:`instrument_exclusions`); its
        combined forecast is 0 there. None when neither ``combination.min_history_sessions`` nor
        ``max_sr_cost_per_trade`` is set.
    sr_cost_per_trade : pd.DataFrame or None
        Index ``session``, columns instruments: the SR cost of one trade (None with ``exclusions``).
    fdm_by_instrument : pd.DataFrame or None
        With forecast weights per instrument: index ``session``, columns instruments, the FDM of
        each instrument's group (instruments with the same weights share one pooled FDM); ``fdm``
        is then their mean across instruments. None otherwise.
    weights_by_instrument : pd.DataFrame or None
        With forecast weights per instrument: index instrument, columns rules, the weights (summing
        to 1); ``weight_history`` is then their mean. None otherwise.
    """

    combined: pd.DataFrame
    fdm: pd.Series
    weight_history: pd.DataFrame
    costs: pd.DataFrame | None
    excluded: pd.DataFrame | None
    exclusions: pd.DataFrame | None = None
    sr_cost_per_trade: pd.DataFrame | None = None
    fdm_by_instrument: pd.DataFrame | None = None
    weights_by_instrument: pd.DataFrame | None = None

    def fdm_wide(self) -> pd.DataFrame:
        """The FDM applied to each instrument on each session: index ``session``, columns the
        instruments of ``combined`` (the pooled ``fdm`` for all, unless weights differ by instrument)."""
        if self.fdm_by_instrument is not None:
            return self.fdm_by_instrument.reindex(index=self.combined.index, columns=self.combined.columns)
        return pd.DataFrame({s: self.fdm.reindex(self.combined.index) for s in self.combined.columns})


def combination_costs(capped: pd.DataFrame, closes: pd.DataFrame, vol: pd.DataFrame, config: PipelineConfig,
                      fx: pd.DataFrame | None = None) -> pd.DataFrame:
    """Annual SR cost of each rule on each instrument, as the combination charges it.

    Parameters
    ----------
    capped : pd.DataFrame
        Capped forecasts, index ``session``, columns ``(rule, instrument)``.
    closes, vol : pd.DataFrame
        Closes and daily price-unit vol (price points), the sessions of ``capped``, columns instruments.
    config : PipelineConfig
        ``combination.sr_cost_trade_size`` (``average_position``: Carver's trade of one average
        position, sized with ``portfolio.capital`` and ``vol_target``; else one unit) and
        ``cost_window``; the instruments' cost models and point sizes.
    fx : pd.DataFrame, optional
        Base currency per unit of each instrument's currency; None = 1.

    Returns
    -------
    pd.DataFrame
        Index ``session``, columns ``(rule, instrument)``; SR units a year (see
        :func:`pipeline.signals.costs.rule_sr_costs`).
    """
    comb = config.combination
    return rule_sr_costs(capped, closes, vol, config.instruments, comb.cost_window,
                         trade_units=_trade_units(closes, vol, config, fx))


def _trade_units(closes: pd.DataFrame, vol: pd.DataFrame, config: PipelineConfig,
                 fx: pd.DataFrame | None) -> pd.DataFrame | None:
    """The trade the SR cost per trade is priced on: one average position (Carver) or None (one unit)."""
    comb = config.combination
    if comb.sr_cost_trade_size != "average_position":
        return None
    return average_position_units(vol, point_sizes(config.instruments).reindex(closes.columns), config.portfolio.capital,
                                  config.portfolio.vol_target, fx=fx, window=comb.cost_window)


def exclusions_of(closes: pd.DataFrame, vol: pd.DataFrame, config: PipelineConfig,
                  fx: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which instruments the combination leaves out on each session, and the SR cost of one trade.

    Parameters
    ----------
    closes, vol : pd.DataFrame
        Closes and daily price-unit vol, index ``session``, columns instruments of the universe.
    config : PipelineConfig
        ``combination.max_sr_cost_per_trade``, ``min_history_sessions``, ``sr_cost_trade_size``,
        ``cost_window``; the instruments' cost models and point sizes; ``portfolio`` capital and vol target.
    fx : pd.DataFrame, optional
        As :func:`combination_costs`.

    Returns
    -------
    (reasons, sr_cost_per_trade) : tuple of pd.DataFrame
        Index and columns of ``closes``: :func:`pipeline.signals.costs.instrument_exclusions` (``""`` =
        traded) and :func:`pipeline.signals.costs.sr_cost_per_trade` (SR units of one trade).

    Raises
    ------
    CostError
        An instrument without a cost model or point size.
    """
    comb = config.combination
    by_symbol = {i.symbol: i for i in config.instruments}
    names = list(closes.columns)
    per_trade = sr_cost_per_trade(closes, vol.reindex(index=closes.index, columns=names),
                                  point_sizes([by_symbol[n] for n in names]), {n: by_symbol[n].costs for n in names},
                                  comb.cost_window, trade_units=_trade_units(closes, vol, config, fx))
    reasons = instrument_exclusions(closes, per_trade, comb.max_sr_cost_per_trade, comb.min_history_sessions)
    return reasons, per_trade


def close_too_expensive(combined: pd.DataFrame, capped: pd.DataFrame, excluded: pd.DataFrame) -> pd.DataFrame:
    """``combined`` with 0 where an instrument has no rule under the speed limit (ST ch. 12).

    ``excluded`` is on the index and ``(rule, instrument)`` columns of ``capped``; sessions and
    instruments of ``combined`` it does not cover stay as they are.
    """
    closed = too_expensive(capped, excluded).reindex(index=combined.index, columns=combined.columns, fill_value=False)
    return combined.mask(closed.astype(bool), 0.0)


def combine_rules(capped: pd.DataFrame, closes: pd.DataFrame | None, vol: pd.DataFrame | None,
                  config: PipelineConfig, fx: pd.DataFrame | None = None) -> CombinedForecast:
    """The combined forecast of every instrument, as ``combination.*`` configures it (ST ch. 8).

    Parameters
    ----------
    capped : pd.DataFrame
        Capped forecasts, index ``session`` (ascending), columns ``(rule, instrument)``.
    closes, vol : pd.DataFrame or None
        Closes and daily price-unit vol, columns instruments; needed (on the sessions of
        ``capped``) for the speed limit and for ``handcraft``/``bootstrap`` weights, else unused.
    config : PipelineConfig
        ``rules.rule_names``, ``rules.forecast_cap``, ``combination.*``, the instruments.
    fx : pd.DataFrame, optional
        As :func:`combination_costs`.

    Returns
    -------
    CombinedForecast

    Raises
    ------
    ValueError
        ``closes``/``vol`` are missing where the configuration needs them; the estimators' errors
        (:mod:`pipeline.signals.forecast_weights`, :mod:`pipeline.signals.combine`) propagate.

    Notes
    -----
    Every value for session ``d`` uses forecasts, prices and costs up to ``d`` only: weights are
    estimated at year ends from past data and applied after; the FDM is expanding. Sources:
    pysystemtrade ``forecast_combine.py``, ``forecast_weight_estimate``; carver.md §2.5-2.6, 2.10.
    """
    comb = config.combination
    method = comb.forecast_weights_method
    costs = excluded = None
    if comb.needs_prices and (closes is None or vol is None):
        raise ValueError("combine_rules: closes and vol are needed for the speed limit, the instrument exclusions "
                         f"(combination.max_sr_cost_per_trade, min_history_sessions) and {method} weights")
    if comb.apply_speed_limit or method in ("handcraft", "bootstrap"):
        costs = combination_costs(capped, closes, vol, config, fx)
    used = capped
    if comb.apply_speed_limit:
        excluded = speed_limit_exclusions(costs, comb.speed_limit)
        used = apply_speed_limit(capped, excluded)
    if method == "fixed" and comb.per_instrument_weights:
        return _excluding(_combine_per_instrument(used, capped, excluded, costs, config), closes, vol, config, fx)
    if method in ("fixed", "equal"):
        weights = forecast_weights(config.rules.rule_names, comb.forecast_weights if method == "fixed" else None)
        history = pd.DataFrame([weights], index=pd.DatetimeIndex(capped.index[:1], name="estimated_at"))
    else:
        history = estimate_forecast_weights(
            capped, closes, vol, method, comb.weights_min_sessions, sr_costs=costs,
            draws=comb.bootstrap_draws, block=comb.bootstrap_block, seed=comb.bootstrap_seed,
        )
    combined, fdm = combine_with_weight_history(
        used, history, comb.fdm, comb.fdm_cap, config.rules.forecast_cap, smooth_span=comb.forecast_weight_ewma_span
    )
    if excluded is not None:
        combined = close_too_expensive(combined, capped, excluded)
    return _excluding(CombinedForecast(combined=combined.reindex(columns=config.symbols), fdm=fdm,
                                       weight_history=history, costs=costs, excluded=excluded), closes, vol, config, fx)


def _excluding(result: CombinedForecast, closes: pd.DataFrame | None, vol: pd.DataFrame | None,
               config: PipelineConfig, fx: pd.DataFrame | None) -> CombinedForecast:
    """``result`` with a combined forecast of 0 where :func:`exclusions_of` leaves the instrument out."""
    comb = config.combination
    if comb.max_sr_cost_per_trade is None and comb.min_history_sessions is None:
        return result
    reasons, per_trade = exclusions_of(closes.reindex(columns=config.symbols), vol, config, fx)
    out = reasons.reindex(index=result.combined.index, columns=result.combined.columns, fill_value="")
    combined = result.combined.mask(out.ne("") & result.combined.notna(), 0.0)
    return replace(result, combined=combined, exclusions=reasons, sr_cost_per_trade=per_trade)


def _combine_per_instrument(used: pd.DataFrame, capped: pd.DataFrame, excluded: pd.DataFrame | None,
                            costs: pd.DataFrame | None, config: PipelineConfig) -> CombinedForecast:
    """:func:`combine_rules` with fixed forecast weights per instrument (pst's per-instrument
    ``forecast_weights``): the instruments are grouped by their weights and each group combined as
    one panel, so an instrument's combined forecast and its FDM (pooled over its group, with its
    own weights) do not depend on the instruments with other weights.

    Raises
    ------
    CombinationError
        An instrument's weights name a rule it has no forecast for (e.g. carry without multiple
        prices), or a rule not configured.
    """
    comb, rules = config.combination, config.rules.rule_names
    table = pd.DataFrame({s: forecast_weights(rules, comb.forecast_weights[s]) for s in config.symbols}).T
    table.index.name, table.columns.name = "instrument", "rule"
    have = pd.Series(True, index=capped.columns).unstack(level=0, fill_value=False).reindex(
        index=table.index, columns=table.columns, fill_value=False)
    lacking = (table > 0) & ~have.astype(bool)
    if lacking.to_numpy().any():
        pairs = [f"{i}: {r}" for i, r in lacking.stack().loc[lambda x: x].index]
        raise CombinationError(f"combination.forecast_weights give a weight to rules an instrument has no forecast "
                               f"for ({', '.join(pairs)}); set those weights to 0 or add the data (carry needs "
                               "multiple prices)")
    combined, fdm_parts = [], []
    instruments = used.columns.get_level_values(1)
    for members in table.groupby(list(table.columns), sort=False).groups.values():  # one pass per weight set
        history = pd.DataFrame([table.loc[members[0]]], index=pd.DatetimeIndex(capped.index[:1], name="estimated_at"))
        part, fdm = combine_with_weight_history(
            used.loc[:, instruments.isin(members)], history, comb.fdm, comb.fdm_cap, config.rules.forecast_cap,
            smooth_span=comb.forecast_weight_ewma_span)
        combined.append(part)
        fdm_parts.append(pd.DataFrame({m: fdm for m in members}))
    combined = pd.concat(combined, axis=1).reindex(columns=config.symbols)
    if excluded is not None:
        combined = close_too_expensive(combined, capped, excluded)
    fdm_wide = pd.concat(fdm_parts, axis=1).reindex(index=combined.index, columns=config.symbols)
    mean = table.mean().rename(capped.index[0])
    return CombinedForecast(
        combined=combined, fdm=fdm_wide.mean(axis=1).rename("fdm"),
        weight_history=pd.DataFrame([mean], index=pd.DatetimeIndex(capped.index[:1], name="estimated_at")),
        costs=costs, excluded=excluded, fdm_by_instrument=fdm_wide, weights_by_instrument=table)


def excluded_instruments(closes: pd.DataFrame, vol: pd.DataFrame, config: PipelineConfig,
                         fx: pd.DataFrame | None = None, start=None, end=None) -> pd.DataFrame:
    """The instruments a run left out of trading, or guarded, between ``start`` and ``end``, with the reason.

    The exclusions of :func:`exclusions_of` (``short_history``, ``cost_per_trade``: combined forecast 0,
    position closed) and, with ``stale_guard.sessions``, the stale-price guard's sessions
    (``stale_guard``: no new forecast, position held; :func:`pipeline.quality.stale.stale_mask`),
    computed on all of ``closes`` (no look-ahead: every value for d uses data up to d) and reported
    over ``start`` .. ``end`` (None = from the first / to the last session).

    Parameters
    ----------
    closes, vol : pd.DataFrame
        Closes and daily price-unit vol (the ``volatility`` table), index ``session``, columns instruments.
    config : PipelineConfig
    fx : pd.DataFrame, optional
        As :func:`combination_costs`.
    start, end : date-like, optional

    Returns
    -------
    pd.DataFrame
        :func:`pipeline.signals.costs.exclusion_table`: ``instrument, reason, sessions, share, first, last,
        detail``; empty when nothing is excluded or no exclusion is configured.
    """
    comb, guard = config.combination, config.stale_guard.sessions
    names = [s for s in config.symbols if s in closes.columns]
    closes = closes.reindex(columns=names)
    if comb.max_sr_cost_per_trade is None and comb.min_history_sessions is None:
        reasons = pd.DataFrame("", index=closes.index, columns=names)
        per_trade = pd.DataFrame(np.nan, index=closes.index, columns=names)
    else:
        reasons, per_trade = exclusions_of(closes, vol, config, fx)
    stale = stale_mask(closes, guard) if guard else None
    window = slice(start, end)
    history = closes.notna().cumsum()
    return exclusion_table(reasons.loc[window], per_trade.loc[window], history.loc[window],
                           None if stale is None else stale.loc[window], comb.max_sr_cost_per_trade,
                           comb.min_history_sessions, guard)


def tradeable_returns(returns: pd.DataFrame, closes: pd.DataFrame, vol: pd.DataFrame, config: PipelineConfig,
                      fx: pd.DataFrame | None = None) -> pd.DataFrame:
    """``returns`` without the sessions an instrument is not traded: left out by :func:`exclusions_of`
    (too short a history, too costly a trade) or held by the stale-price guard (``stale_guard.sessions``).

    The instrument weights are estimated on these, so a market the system does not trade gets no weight
    once its excluded sessions leave fewer than ``portfolio.weights_min_sessions`` in the window (pst
    gives no weight to the instruments it does not trade), and a flat, stale series cannot look like a
    riskless diversifier to the ERC estimate.

    Parameters
    ----------
    returns : pd.DataFrame
        Vol-normalised returns (:func:`pipeline.signals.volatility.vol_normalised_returns`), index
        ``session``, columns instruments.
    closes, vol : pd.DataFrame
        The closes and daily price-unit vol the returns came from, same index and columns.
    config : PipelineConfig
    fx : pd.DataFrame, optional
        As :func:`combination_costs`.

    Returns
    -------
    pd.DataFrame
        ``returns`` with NaN on the excluded and stale sessions; ``returns`` itself when neither an
        exclusion nor the stale guard is configured.
    """
    comb, guard = config.combination, config.stale_guard.sessions
    drop = pd.DataFrame(False, index=returns.index, columns=returns.columns)
    if comb.max_sr_cost_per_trade is not None or comb.min_history_sessions is not None:
        reasons, _ = exclusions_of(closes.reindex(columns=returns.columns), vol, config, fx)
        drop |= reasons.reindex(index=returns.index, columns=returns.columns, fill_value="").ne("")
    if guard:
        drop |= stale_mask(closes.reindex(columns=returns.columns), guard).reindex(
            index=returns.index, columns=returns.columns, fill_value=False).astype(bool)
    return returns.mask(drop)
