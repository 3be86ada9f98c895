"""Portfolio assets: ``instrument_weights`` (ERC, IDM) and ``target_positions`` (ST ch. 9-11)."""


import dagster as dg
import pandas as pd

from assets.markdown import frame_md
from assets.ml import (
    REGIME,
    VOL_FORECAST,
    regime_scale_for_daily,
    vol_for_sizing_for_daily,
)
from assets.partitions import (
    DailyPartitions,
    is_backfill,
    no_session_result,
    run_sessions,
)
from assets.quality import CLEAN_BARS
from assets.resources import BrokerResource, Settings
from assets.signals import COMBINED, VOLATILITY
from pipeline.adapters.pysystemtrade import universe_fx
from pipeline.instruments import point_sizes
from pipeline.portfolio import (
    InstrumentWeights,
    estimate_instrument_weights,
    vol_normalised_returns,
)
from pipeline.portfolio import (
    target_positions as size_positions,
)
from pipeline.portfolio.capital import capital_series, decide_session_capital
from pipeline.portfolio.instrument_weights import weight_concentration
from pipeline.signals.combination import tradeable_returns
from pipeline.store.lake import wide_to_long

INSTRUMENT_WEIGHTS = "instrument_weights"
IDM_TABLE = "idm"
CORRELATION_TABLE = "instrument_correlation"
TARGET_POSITIONS = "target_positions"
CHECK_CONCENTRATION = "weights_not_concentrated"
CONCENTRATION_RULE = "weight_concentration"


@dg.asset(deps=[VOLATILITY], group_name="portfolio", kinds={"python", "parquet", "scipy"}, code_version="1",
          check_specs=[dg.AssetCheckSpec(
              CHECK_CONCENTRATION, asset=INSTRUMENT_WEIGHTS, blocking=True,
              description="ERROR when an estimated weight exceeds portfolio.max_weight_concentration times the "
                          "equal share (a broken vol estimate); blocks target positions and orders until released.")])
def instrument_weights(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Instrument weights, re-estimated at each month end on the trailing covariance of
    vol-normalised returns: equal risk contribution by default (scipy), or equal, fixed (from the
    config) or handcrafted (``portfolio.instrument_weights_method``), with risk contributions, the
    IDM of the chosen weights (1/sqrt(w'Hw), correlations floored at 0, capped at 2.5; or the fixed
    ``portfolio.idm``, pst ``instrument_div_multiplier``) and the correlation matrix. An estimate made at month end m applies from the next session (no look-ahead)."""
    cfg, lake = settings.config(), settings.lake()
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols)
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols)
    fx = universe_fx(cfg.instruments, cfg.portfolio.base_currency, cfg.portfolio.fx_path, closes.index)
    est = estimate_instrument_weights(
        tradeable_returns(vol_normalised_returns(closes, vol), closes, vol, cfg, fx),  # untraded markets: no weight
        lookback_sessions=int(cfg.portfolio.weights_lookback_years * 256),
        min_sessions=cfg.portfolio.weights_min_sessions,
        idm_cap=cfg.portfolio.idm_cap,
        method=cfg.portfolio.instrument_weights_method,
        fixed_weights=cfg.portfolio.instrument_weights,
        fixed_idm=None if cfg.portfolio.idm == "estimate" else float(cfg.portfolio.idm),
        optimiser=cfg.portfolio.optimiser,
    )
    if est.weights.empty:  # fail closed: no weights means no positions, said plainly
        raise dg.Failure(
            f"instrument_weights: no month end in {closes.index[0].date()} .. {closes.index[-1].date()} has "
            f"portfolio.weights_min_sessions = {cfg.portfolio.weights_min_sessions} sessions of returns yet; "
            "start the history earlier (history_start) or lower weights_min_sessions"
        )
    lake.write_table(INSTRUMENT_WEIGHTS, est.to_long())
    lake.write_table(IDM_TABLE, est.idm.rename("idm").rename_axis("estimated_at").reset_index())
    lake.write_table(CORRELATION_TABLE, est.correlation.rename_axis("instrument").reset_index())
    latest_at = est.weights.index[-1]
    latest = pd.DataFrame({"weight": est.weights.iloc[-1], "risk_contribution": est.risk_contributions.iloc[-1]})
    return dg.MaterializeResult(check_results=[_concentration_check(est.weights.iloc[-1], latest_at, cfg, settings,
                                                                     backfill=is_backfill(context))],
                                metadata={
        "method": cfg.portfolio.instrument_weights_method,
        "estimated_at": str(latest_at.date()),
        "n_estimates": len(est.weights),
        "idm": float(est.idm.iloc[-1]),
        "idm_source": "estimate" if cfg.portfolio.idm == "estimate" else "fixed (portfolio.idm)",
        "weights": dg.MetadataValue.md(frame_md(latest, index=True)),
        "correlation": dg.MetadataValue.md(frame_md(est.correlation.round(2), index=True, floatfmt="{:.2f}")),
        "max_risk_contribution_gap": float((latest["risk_contribution"][latest["weight"] > 0]).agg(lambda s: s.max() - s.min())),
    })


def _concentration_check(weights: pd.Series, estimated_at: pd.Timestamp, cfg, settings: Settings,
                         backfill: bool = False) -> dg.AssetCheckResult:
    """The latest estimate's concentrated instruments, less those a person released for that estimate
    (a warning in a backfill, which never trades)."""
    limit = cfg.portfolio.max_weight_concentration
    if limit is None or cfg.portfolio.instrument_weights_method not in ("erc", "handcraft"):
        return dg.AssetCheckResult(check_name=CHECK_CONCENTRATION, passed=True,
                                   description="off (max_weight_concentration None, or weights not estimated)")
    found = weight_concentration(weights, limit)
    released = settings.ledger().quarantine_releases()
    released = released[(released["rule"] == CONCENTRATION_RULE)
                        & (pd.to_datetime(released["session"]) == estimated_at.normalize())]
    open_ = found[~found.index.isin(released["instrument"])]
    day = estimated_at.date()
    return dg.AssetCheckResult(
        check_name=CHECK_CONCENTRATION,
        passed=open_.empty,
        severity=dg.AssetCheckSeverity.WARN if backfill else dg.AssetCheckSeverity.ERROR,
        description=(
            f"{', '.join(open_.index)}: weight {open_['multiple'].max():.1f}x the equal share in the estimate of {day} "
            f"(limit {limit:g}x): check its vol and recent bars; if right, trading-pipeline release {day} "
            f"{open_.index[0]} {CONCENTRATION_RULE} --reason ..." if len(open_)
            else f"no weight above {limit:g}x the equal share in the estimate of {day}"),
        metadata={"concentrated": dg.MetadataValue.md(frame_md(found, index=True)),
                  "released": dg.MetadataValue.json(sorted(set(found.index) - set(open_.index)))},
    )


def _load_weights(lake) -> InstrumentWeights:
    idm = lake.read_table(IDM_TABLE).set_index("estimated_at")["idm"]
    return InstrumentWeights.from_long(lake.read_table(INSTRUMENT_WEIGHTS), idm)


def target_positions(context: dg.AssetExecutionContext, settings: Settings, broker: BrokerResource) -> dg.MaterializeResult:
    """Vol-targeted, buffered positions in shares/contracts: capital x annual vol target / 16 /
    (daily price vol x point size) x combined forecast / 10 x instrument weight x IDM (x the
    regime risk scale if configured), then Carver's buffer (``portfolio.buffer_method``: 10% of the
    average position by default, or of the position), trading to its edge, rounded to whole units (ST ch. 10-11; pysystemtrade ``positionsizing.py``, ``buffering.py``).
    The vol of an instrument priced in another currency is converted to ``portfolio.base_currency``
    with the FX rates under ``portfolio.fx_path`` (pysystemtrade ``XXXUSD`` files). The capital of
    each session is the one recorded by its daily run (``capital`` in the ledger), the configured
    one before; a daily run records its own: ``portfolio.capital``, or with ``capital: account`` the
    broker's net liquidation value times ``capital_fraction`` (a jump beyond
    ``max_capital_change`` halts trading and keeps the last capital)."""
    cfg, lake = settings.config(), settings.lake()
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: a successful no-op (assets/partitions.py)
        return no_session_result(context, cfg.calendar)
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols, end=run[-1])
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols, end=run[-1])
    combined = lake.read_wide(COMBINED, "combined", cfg.symbols, end=run[-1]).reindex(closes.index)
    weights, idm = _load_weights(lake).daily(closes.index)
    weights = weights.reindex(columns=cfg.symbols)
    scale = None
    if cfg.regime.use_as_risk_scale:  # the research job's scale, the stored model's past it (never a refit)
        scale = regime_scale_for_daily(settings, closes, vol, combined)
    if cfg.vol_forecast.use_for_sizing:  # a vol model's forecast only where it won at the refit before
        vol = vol_for_sizing_for_daily(settings, closes, vol).fillna(vol)
    point_size = point_sizes(cfg.instruments)
    fx = universe_fx(cfg.instruments, cfg.portfolio.base_currency, cfg.portfolio.fx_path, closes.index)
    ledger = settings.ledger()
    clean = lake.sessions(CLEAN_BARS)
    if len(run) == 1 and len(clean) and run[0] == clean[-1]:  # the daily run of the latest session
        account = None
        if cfg.portfolio.capital_source == "account":
            with broker.broker() as connected:
                account = connected.net_liquidation(closes.loc[run[0]], cfg.portfolio.base_currency)
        decide_session_capital(ledger, run[0], cfg.portfolio, account, context.run.run_id)
    capital = capital_series(closes.index, ledger.recorded_capital(), cfg.portfolio.capital)
    sized = size_positions(closes, vol, combined, weights, idm, point_size, cfg.portfolio, fx=fx, risk_scale=scale,
                           capital=capital)
    idm_wide = pd.DataFrame({s: idm for s in cfg.symbols})
    scale_wide = pd.DataFrame({s: (scale if scale is not None else 1.0) for s in cfg.symbols}, index=closes.index)
    long = wide_to_long({
        "price": closes, "vol_scalar": sized.vol_scalar, "combined": combined, "weight": weights, "idm": idm_wide,
        "risk_scale": scale_wide, "optimal": sized.optimal, "lower": sized.lower, "upper": sized.upper,
        "target": sized.target,
    }, dropna="price")
    owned = lake.sessions_to_write(TARGET_POSITIONS, pd.DatetimeIndex(long["session"].unique()), run)
    rows = lake.write_sessions(TARGET_POSITIONS, long, owned)
    last = long[long["session"] == run[-1]].set_index("instrument")
    gross = float((last["target"].abs() * last["price"]).sum())
    return dg.MaterializeResult(metadata={
        "rows_written": rows,
        "session": str(run[-1].date()),
        "gross_exposure": gross,
        "capital": float(capital.loc[run[-1]]),
        "capital_source": cfg.portfolio.capital_source,
        "gross_leverage": gross / float(capital.loc[run[-1]]),
        "base_currency": cfg.portfolio.base_currency,
        "fx_latest": dg.MetadataValue.json({} if fx is None else {k: round(float(v), 6) for k, v in fx.iloc[-1].items()}),
        "positions": dg.MetadataValue.md(frame_md(last[["price", "combined", "weight", "optimal", "lower", "upper", "target"]], index=True)),
    })


def build(daily: DailyPartitions) -> list[dg.AssetsDefinition]:
    """The session-partitioned assets of this module, on the partitions of the configuration."""
    return [
        daily.asset(target_positions, deps=[VOLATILITY, COMBINED, INSTRUMENT_WEIGHTS, REGIME, VOL_FORECAST],
                    group_name="portfolio"),
    ]
