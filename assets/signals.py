"""Signal assets: ``volatility``, ``forecast_scalars``, ``forecasts`` (EWMAC, breakout, carry),
``combined_forecast`` (ST ch. 7-8).

Each daily run computes from the full history up to its last session and writes only its own
sessions (plus history rows the table still lacks; see ``Lake.sessions_to_write``).
"""


import dagster as dg
import pandas as pd

from assets.markdown import frame_md
from assets.partitions import DailyPartitions, no_session_result, run_sessions
from assets.quality import CLEAN_BARS
from assets.resources import BarSourceResource, Settings
from pipeline.adapters.pysystemtrade import universe_fx
from pipeline.quality.stale import (
    mask_stale_forecasts,
    stale_instruments,
    stale_mask,
    without_stale,
)
from pipeline.signals.carry import (
    CarryError,
    carry_variations,
    fx_carry_variations,
    rate_differentials,
)
from pipeline.signals.combination import combine_rules
from pipeline.signals.costs import (
    excluded_pairs,
)
from pipeline.signals.forecasts import (
    ForecastSet,
    compute_forecasts,
    estimate_guarded_scalars,
    floor_long_only,
    rescale,
)
from pipeline.signals.volatility import bounded_vol, estimate_vol, percentage_vol
from pipeline.store.lake import wide_to_long

VOLATILITY = "volatility"
FORECASTS = "forecasts"
FORECAST_SCALARS = "forecast_scalars"
COMBINED = "combined_forecast"

def volatility(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Volatility of daily price changes by the configured estimator (``vol.estimator``: Carver's
    robust EWMA, span 35, min 10 periods, 5% floor over 500 sessions, by default; ``ewma`` without
    the floor; pst's ``mixed``): daily, in price points (``vol_price``), and annualised % of price
    (``vol_pct_annual``). With ``stale_guard.sessions`` set, closes unchanged that long leave the
    calculation (the vol carries over them). ``vol_bounds``: a vol below a fraction of its asset class's
    median is raised to it, one far above its long-run vol is refused (no row: the instrument keeps its
    position that session). Source: pysystemtrade ``robust_vol_calc`` / ``mixed_vol_calc``; the bounds are this
    project's."""
    cfg, lake = settings.config(), settings.lake()
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: a successful no-op (assets/partitions.py)
        return no_session_result(context, cfg.calendar)
    closes = lake.read_wide(CLEAN_BARS, "close", cfg.symbols, end=run[-1])
    guard = cfg.stale_guard.sessions
    vol = estimate_vol(without_stale(closes, stale_mask(closes, guard)) if guard else closes, cfg.vol)
    bounds = cfg.vol_bounds
    bounded = bounded_vol(vol, closes, {i.symbol: i.asset_class for i in cfg.instruments}, bounds.floor_vs_class,
                          bounds.ceiling_vs_long_run, bounds.long_run_sessions)
    vol = bounded.vol
    in_run = {name: sorted({str(i) for i in frame.loc[frame.index.isin(run)].stack().loc[lambda x: x]
                            .index.get_level_values(1)})
              for name, frame in (("raised_to_floor", bounded.raised), ("refused_above_ceiling", bounded.refused))}
    if any(in_run.values()):
        context.log.warning(f"volatility: vol bounds applied in this run: {in_run} (vol_bounds in the configuration)")
    long = wide_to_long({"close": closes, "vol_price": vol, "vol_pct_annual": percentage_vol(vol, closes)},
                        dropna="vol_price")
    owned = lake.sessions_to_write(VOLATILITY, pd.DatetimeIndex(long["session"].unique()), run)
    rows = lake.write_sessions(VOLATILITY, long, owned)
    latest = long[long["session"] == long["session"].max()].set_index("instrument")[["close", "vol_price", "vol_pct_annual"]]
    return dg.MaterializeResult(metadata={
        "rows_written": rows,
        "latest_session": str(long["session"].max().date()),
        "latest": dg.MetadataValue.md(frame_md(latest, index=True)),
        "vol_bounds_in_run": dg.MetadataValue.json(in_run),
    })


@dg.asset(deps=[VOLATILITY], group_name="signals", kinds={"python", "parquet"}, code_version="1")
def forecast_scalars(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Forecast scalar of each rule variation, estimated as pysystemtrade does (pooled across
    instruments: 10 / expanding mean of the cross-sectional median |raw forecast|), one value per
    session using data up to it; shown beside the configured (published) values. Used by
    ``forecasts`` when ``rules.scalars`` is ``estimate``. With ``stale_guard.sessions`` set, the
    raw forecasts of stale instruments are left out before estimating, as ``forecasts`` leaves
    them out after scaling: the scalar is fitted on the forecasts that are traded."""
    cfg, lake = settings.config(), settings.lake()
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols)
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols)
    estimates = estimate_guarded_scalars(
        closes, vol, cfg.rules, stale_sessions=cfg.stale_guard.sessions or 0, min_periods=cfg.rules.min_scalar_periods
    )
    long = estimates.stack().rename("scalar").reset_index()
    lake.write_table(FORECAST_SCALARS, long)
    latest = estimates.ffill().iloc[-1]
    table = pd.DataFrame({"estimated": latest, "configured": pd.Series(cfg.rules.forecast_scalars).reindex(latest.index)})
    table["estimated/configured"] = table["estimated"] / table["configured"]
    return dg.MaterializeResult(metadata={
        "estimation_window": f"{closes.index[0].date()} .. {closes.index[-1].date()} (expanding, pooled over "
                             f"{len(cfg.symbols)} instruments, first estimate after {cfg.rules.min_scalar_periods} sessions)",
        "used_by_forecasts": cfg.rules.scalars,
        "scalars": dg.MetadataValue.md(frame_md(table.rename_axis("rule"), index=True, floatfmt="{:.3f}")),
    })


def forecasts(context: dg.AssetExecutionContext, settings: Settings, bar_source: BarSourceResource) -> dg.MaterializeResult:
    """EWMAC, breakout and carry forecasts per instrument and rule variation: raw, scaled by the rule's
    forecast scalar (fixed, or estimated when ``rules.scalars: estimate``; carry's scalar is the
    configured one in both cases), capped at +/-20, and floored at 0 for long-only instruments
    (ST ch. 7; pysystemtrade ``ewmac.py``, ``breakout.py``, ``carry.py``). Carry (``rules.carry``) is
    computed for every instrument whose source has multiple prices (a ``pysystemtrade`` source):
    annualised roll over annualised price vol, smoothed (``pipeline.signals.carry.carry_variations``), and for
    every spot FX pair with a ``rate_differential`` (the differential x price over annualised vol, smoothed the
    same way: ``fx_carry_variations``). With ``stale_guard.sessions`` set, an instrument whose close is stale gets no forecast."""
    cfg, lake = settings.config(), settings.lake()
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: a successful no-op (assets/partitions.py)
        return no_session_result(context, cfg.calendar)
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols, end=run[-1])
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols, end=run[-1])
    try:
        extra, with_carry = _carry_forecasts(cfg, bar_source, vol, closes)
    except CarryError as exc:  # a bad rate-differential file: asking again cannot help
        raise dg.Failure(f"forecasts: {exc}", allow_retries=False) from exc
    if cfg.rules.carry and not with_carry:
        context.log.warning(f"forecasts: rules.carry {list(cfg.rules.carry)} configured but no instrument has "
                            f"multiple prices (source {cfg.source.kind!r}) or a rate_differential: no carry forecast")
    fset = compute_forecasts(closes, vol, cfg.rules, extra=extra)
    if cfg.rules.scalars == "estimate":
        estimates = lake.read_table(FORECAST_SCALARS).pivot(index="session", columns="rule", values="scalar")
        fset = rescale(fset, estimates, cfg.rules.forecast_cap, fallback=cfg.rules.forecast_scalars)
    long_only = [i.symbol for i in cfg.instruments if i.long_only]
    if long_only:
        fset = ForecastSet(raw=fset.raw, scaled=fset.scaled, capped=floor_long_only(fset.capped, long_only))
    stale_now: list[str] = []
    if cfg.stale_guard.sessions:
        stale = stale_mask(closes, cfg.stale_guard.sessions)
        fset = ForecastSet(**{k: mask_stale_forecasts(getattr(fset, k), stale) for k in ("raw", "scaled", "capped")})
        stale_now = stale_instruments(stale, run[-1])
    long = fset.to_long()
    owned = lake.sessions_to_write(FORECASTS, pd.DatetimeIndex(long["session"].unique()), run)
    rows = lake.write_sessions(FORECASTS, long, owned)
    in_run = long[long["session"].isin(run)]
    mean_abs = in_run.groupby("rule")["capped"].apply(lambda s: s.abs().mean()).rename("mean_abs_capped")
    latest = long[long["session"] == run[-1]].pivot(index="instrument", columns="rule", values="capped")
    return dg.MaterializeResult(metadata={
        "rows_written": rows,
        "scalars": cfg.rules.scalars,
        "rules": dg.MetadataValue.json(cfg.rules.rule_names),
        "carry_instruments": dg.MetadataValue.json(with_carry),
        "stale_instruments": dg.MetadataValue.json(stale_now),
        "mean_abs_forecast_in_run": dg.MetadataValue.md(frame_md(mean_abs.to_frame(), index=True)),
        "latest_capped": dg.MetadataValue.md(frame_md(latest.reindex(columns=cfg.rules.rule_names), index=True, floatfmt="{:.1f}")),
    })


def _carry_forecasts(cfg, bar_source: BarSourceResource, vol: pd.DataFrame,
                     closes: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Raw carry of each ``rules.carry`` variation for the instruments with multiple prices and the
    spot FX pairs with a ``rate_differential``, on ``vol``'s sessions; and those instruments (none
    when carry is not configured or no instrument has either)."""
    if not cfg.rules.carry:
        return {}, []
    smooth = {name: v.smooth_days for name, v in cfg.rules.carry.items()}
    multiple = bar_source.multiple_prices(list(vol.columns))
    held = [] if multiple is None else [s for s in vol.columns if s in multiple.price.columns]
    variations = (carry_variations(multiple.price, multiple.carry, multiple.price_contract, multiple.carry_contract,
                                   vol[held], smooth) if held else {})
    pairs = {i.symbol: i.rate_differential for i in cfg.instruments
             if i.rate_differential is not None and i.symbol in vol.columns and i.symbol not in held}
    if pairs:  # spot FX: carry from the configured rate differential
        fx = fx_carry_variations(rate_differentials(pairs, vol.index), closes[list(pairs)], vol[list(pairs)], smooth)
        variations = {name: pd.concat([variations[name], fx[name]], axis=1) if name in variations else fx[name]
                      for name in smooth}
    return variations, [*held, *pairs]


def combined_forecast(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Forecast weights x capped forecasts (weights renormalised over the rules available),
    times the FDM, capped again at +/-20 (ST ch. 8; pysystemtrade ``forecast_combine.py``).
    Weights are fixed, equal, handcrafted or bootstrapped (``combination.forecast_weights_method``;
    estimates re-made at each year end from past data only, smoothed through time with
    ``combination.forecast_weight_ewma_span``); with ``combination.apply_speed_limit``
    a rule whose annual SR cost exceeds ``speed_limit`` gets weight 0 for that instrument (ST ch. 12;
    by default the SR cost of a trade of one average position, ``combination.sr_cost_trade_size``),
    and an instrument with no rule cheap enough gets a combined forecast of 0."""
    cfg, lake = settings.config(), settings.lake()
    comb = cfg.combination
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: a successful no-op (assets/partitions.py)
        return no_session_result(context, cfg.calendar)
    capped = ForecastSet.from_long(lake.read(FORECASTS, end=run[-1])).capped
    method = comb.forecast_weights_method
    closes = vol = fx = None
    if comb.needs_prices:  # SR costs, the speed limit, the instrument exclusions, estimated weights
        closes = lake.read_wide(VOLATILITY, "close", cfg.symbols, end=run[-1]).reindex(capped.index)
        vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols, end=run[-1]).reindex(capped.index)
        if comb.sr_cost_trade_size == "average_position":
            fx = universe_fx(cfg.instruments, cfg.portfolio.base_currency, cfg.portfolio.fx_path, closes.index)
    result = combine_rules(capped, closes, vol, cfg, fx)
    combined, fdm, history, excluded = result.combined, result.fdm, result.weight_history, result.excluded
    fdm_wide = result.fdm_wide()
    long = wide_to_long({"combined": combined, "fdm": fdm_wide}, dropna="combined")
    owned = lake.sessions_to_write(COMBINED, pd.DatetimeIndex(long["session"].unique()), run)
    rows = lake.write_sessions(COMBINED, long, owned)
    latest = combined.loc[:run[-1]].iloc[-1]
    in_force = history.loc[history.index < run[-1]]
    weights_now = (in_force if len(in_force) else history.iloc[:1]).iloc[-1]
    metadata = {
        "rows_written": rows,
        "forecast_weights_method": method,
        "forecast_weights": dg.MetadataValue.json({k: round(float(v), 6) for k, v in weights_now.items()}),
        "forecast_weight_estimates": dg.MetadataValue.md(frame_md(history.tail(5), index=True, floatfmt="{:.3f}")),
        "fdm_latest": float(fdm.loc[:run[-1]].iloc[-1]),
        "latest_combined": dg.MetadataValue.md(frame_md(latest.rename("combined").to_frame(), index=True, floatfmt="{:.2f}")),
    }
    if result.weights_by_instrument is not None:
        metadata["forecast_weights_by_instrument"] = dg.MetadataValue.md(
            frame_md(result.weights_by_instrument, index=True, floatfmt="{:.3f}"))
    if excluded is not None:
        pairs = excluded_pairs(excluded, result.costs, excluded.index[excluded.index <= run[-1]][-1])
        metadata["speed_limit"] = comb.speed_limit
        metadata["excluded_by_speed_limit"] = dg.MetadataValue.md(frame_md(pairs, floatfmt="{:.3f}"))
    if result.exclusions is not None:  # instruments not traded on the run's last session, with the reason
        now = result.exclusions.loc[:run[-1]].iloc[-1]
        now = now[now.ne("") & closes.loc[:run[-1]].iloc[-1].notna()]
        if len(now):
            context.log.info("combined_forecast: not traded on " + str(run[-1].date()) + ": "
                             + ", ".join(f"{i} ({r})" for i, r in now.items()))
        metadata["excluded_instruments"] = dg.MetadataValue.json({i: r for i, r in now.items()})
    return dg.MaterializeResult(metadata=metadata)


def build(daily: DailyPartitions) -> list[dg.AssetsDefinition]:
    """The session-partitioned assets of this module, on the partitions of the configuration."""
    return [
        daily.asset(volatility, deps=[CLEAN_BARS], group_name="signals"),
        daily.asset(forecasts, deps=[CLEAN_BARS, VOLATILITY, FORECAST_SCALARS], group_name="signals"),
        daily.asset(combined_forecast, deps=[FORECASTS, VOLATILITY], group_name="signals"),
    ]
