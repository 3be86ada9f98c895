"""Research asset ``backtest``.

The backtest is the production code run over history: it reads the ``target_positions`` that the
daily runs (or a backfill) wrote, so research and production never diverge. A backfill (and
``trading-pipeline backtest``) also writes a results folder with an HTML report.
"""


import base64
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd

from assets.markdown import frame_md
from assets.portfolio import IDM_TABLE, INSTRUMENT_WEIGHTS, TARGET_POSITIONS
from assets.quality import CLEAN_BARS
from assets.resources import Settings
from assets.signals import FORECASTS, VOLATILITY
from pipeline.adapters.pysystemtrade import universe_fx
from pipeline.instruments import point_sizes
from pipeline.portfolio import InstrumentWeights, vol_normalised_returns
from pipeline.portfolio import target_positions as size_positions
from pipeline.portfolio.instrument_weights import WeightsError, last_window_frontier
from pipeline.research.backtest import needs_bars, simulate, simulation_options
from pipeline.signals.combination import excluded_instruments
from pipeline.signals.forecasts import ForecastSet

BACKTEST = "backtest"
BACKTEST_DAILY = "backtest_daily"
BACKTEST_METRICS = "backtest_metrics"
BACKTEST_TRADES = "backtest_trades"

#: Run tags of a backfill over a partition range (set by Dagster for UI and CLI backfills).
_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


@dg.asset(deps=[TARGET_POSITIONS, FORECASTS], group_name="research", kinds={"python", "parquet", "matplotlib", "plotly"},
          code_version="2")
def backtest(context: dg.AssetExecutionContext, settings: Settings) -> dg.MaterializeResult:
    """Daily P&L of the target positions traded as ``backtest:`` configures (default: market orders
    at the next session's close), net of commission, spread and borrow costs from the config;
    equity curve, drawdown and the usual statistics (Sharpe, Sortino, max drawdown, CAGR, Calmar,
    realised vol against the vol target, 256-day annualisation), round-trip trades, fill rate, P&L
    by asset class and by trading rule (each rule's forecast traded alone), VaR/CVaR and stress
    replays. A backfill over a partition range (or ``trading-pipeline backtest``) simulates that
    range only and writes a results folder with ``report.html``; a daily run covers all history."""
    from pipeline.research.analytics import reconstruct_trades
    from pipeline.research.plots import bar_png, equity_drawdown_png
    from pipeline.research.results import (
        RUN_TAGS,
        BacktestRun,
        summarise,
        write_results,
    )

    cfg, lake = settings.config(), settings.lake()
    if not lake.sessions(TARGET_POSITIONS).size:  # the research job on a lake no daily run has sized yet
        raise dg.Failure(description=f"backtest: no target positions in the lake {lake.root} yet: run the daily job "
                                     "(trading-pipeline daily or backfill) first")
    tags = context.run.tags
    start = tags.get(RUN_TAGS["start"]) or tags.get(_RANGE_TAGS[0])
    end = tags.get(RUN_TAGS["end"]) or tags.get(_RANGE_TAGS[1])
    positions = lake.read_wide(TARGET_POSITIONS, "target", cfg.symbols).loc[start:end]
    prices = lake.read_wide(TARGET_POSITIONS, "price", cfg.symbols).loc[start:end]
    bars = {f"{field}s": lake.read_wide(CLEAN_BARS, field, cfg.symbols).reindex(prices.index) for field in needs_bars(cfg)}
    point_size = point_sizes(cfg.instruments)
    costs = {i.symbol: i.costs for i in cfg.instruments}
    fx = universe_fx(cfg.instruments, cfg.portfolio.base_currency, cfg.portfolio.fx_path, prices.index)
    result = simulate(positions.fillna(0.0), prices, point_size=point_size, costs=costs, capital=cfg.portfolio.capital,
                      fx=fx, **simulation_options(cfg), **bars)
    by_rule = _rule_attribution(cfg, lake, prices, point_size, costs, fx)
    name = tags.get(RUN_TAGS["name"]) or cfg.backtest.name or cfg.broker.strategy
    run = BacktestRun(name, result, {i.symbol: i.asset_class for i in cfg.instruments}, point_size,
                      parameters=cfg.model_dump(mode="json"), sample="in-sample",
                      sample_note=_sample_note(cfg), vol_target=cfg.portfolio.vol_target, rule_attribution=by_rule,
                      excluded_instruments=_excluded(cfg, lake, prices.index))
    summary = summarise(run, run_id=context.run.run_id)
    start_at = run.window_start()
    metrics = summary["performance"]["values"]
    trade_stats = summary["trades"]["values"]
    trades = reconstruct_trades(result.holdings, result.fill_prices.combine_first(prices), point_size, pnl=result.pnl_gross)
    per_instrument, portfolio = result.to_long()
    lake.write_table(BACKTEST_DAILY, per_instrument)
    lake.write_table(BACKTEST, portfolio)
    lake.write_table(BACKTEST_TRADES, trades)
    lake.write_table(BACKTEST_METRICS, pd.DataFrame({
        "metric": list(metrics) + [f"trades_{k}" for k in trade_stats],
        "value": [_float(v) for v in metrics.values()] + [_float(v) for v in trade_stats.values()],
    }))
    folder = None
    if start or end or tags.get(RUN_TAGS["out"]) or cfg.backtest.results_on_daily_runs:
        try:  # report.html's efficient frontier: a decoration of the report, never a reason to fail the backtest
            run = replace(run, frontier=_frontier(cfg, lake))
        except WeightsError as exc:
            context.log.warning(f"backtest: report.html without an efficient frontier: {exc}")
        folder = write_results(run, tags.get(RUN_TAGS["out"]) or _results_root(cfg.backtest.results_dir, lake.root))
        context.log.info(f"backtest results folder: {folder}")
    period = f"{start_at.date()} .. {prices.index[-1].date()}"
    equity_png = equity_drawdown_png(result.equity.loc[start_at:], result.drawdown.loc[start_at:],
                                     title=f"{name}: equity and drawdown, {period}")
    by_instrument = result.pnl_net.loc[start_at:].sum().rename("pnl_net").to_frame()
    by_instrument["costs"] = result.costs.loc[start_at:].sum()
    by_class = pd.Series(summary["attribution"]["net_by_asset_class"], name="net").rename_axis("asset_class")
    risk = pd.DataFrame(summary["risk"]["var_cvar"]).T.rename_axis("level")
    stress = pd.DataFrame(summary["risk"]["stress_on_last_positions"])
    metadata = {
        "metrics": dg.TableMetadataValue(
            records=[dg.TableRecord({"metric": k, "value": _float(v)}) for k, v in metrics.items()],
            schema=dg.TableSchema(columns=[dg.TableColumn("metric", "string"), dg.TableColumn("value", "float")]),
        ),
        "sharpe": _float(metrics["sharpe"]),
        "max_drawdown": _float(metrics["max_drawdown"]),
        "realised_vol_vs_target": _float(metrics["realised_vol_vs_target"]),
        "period": period,
        "basis": dg.MetadataValue.json(summary["basis"]),
        "equity_curve": dg.MetadataValue.md(_png_md("equity and drawdown", equity_png)),
        "pnl_by_instrument": dg.MetadataValue.md(frame_md(by_instrument, index=True, floatfmt="{:,.0f}")),
        "pnl_by_asset_class": dg.MetadataValue.md(frame_md(by_class.to_frame(), index=True, floatfmt="{:,.0f}")),
        "trades": dg.MetadataValue.md(frame_md(pd.Series(trade_stats, name="value").rename_axis("statistic").to_frame(), index=True)),
        "orders": dg.MetadataValue.json(summary["trades"]["orders"]),
        "var_cvar": dg.MetadataValue.md(frame_md(risk, index=True)),
        "stress_on_current_positions": dg.MetadataValue.md(frame_md(stress, floatfmt="{:,.0f}") if len(stress) else "(no stress window in the history)"),
    }
    if by_rule is not None:
        table = by_rule["summary"]
        metadata["rule_attribution"] = dg.MetadataValue.md(
            _png_md("net P&L of each rule traded alone", bar_png(table["net"], "each rule traded alone"))
            + "\n\n" + frame_md(table, index=True, floatfmt="{:,.2f}"))
    if folder is not None:
        metadata["results_folder"] = dg.MetadataValue.path(str(Path(folder).resolve()))
    return dg.MaterializeResult(metadata=metadata)


def _rule_attribution(cfg, lake, prices: pd.DataFrame, point_size: pd.Series, costs, fx) -> dict | None:
    """Each rule's capped forecast traded alone with the production sizing (vol target, instrument
    weights, IDM, buffer), over the backtest's sessions; None without forecasts or weights."""
    from pipeline.research.analytics import rule_attribution

    forecasts = lake.read(FORECASTS)
    weights_long = lake.read_table(INSTRUMENT_WEIGHTS)
    if forecasts.empty or weights_long.empty:
        return None
    capped = ForecastSet.from_long(forecasts).capped
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols).reindex(prices.index)
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols).reindex(prices.index)
    idm = lake.read_table(IDM_TABLE).set_index("estimated_at")["idm"]
    weights, idm_daily = InstrumentWeights.from_long(weights_long, idm).daily(prices.index)
    weights = weights.reindex(columns=cfg.symbols)

    def positions_for(forecast: pd.DataFrame) -> pd.DataFrame:
        combined = forecast.reindex(index=prices.index, columns=cfg.symbols)
        return size_positions(closes, vol, combined, weights, idm_daily, point_size, cfg.portfolio, fx=fx).target.fillna(0.0)

    return rule_attribution(capped, positions_for, prices, point_size, costs, cfg.portfolio.capital, fx)


def _results_root(results_dir: str, lake_root) -> Path:
    """``backtest.results_dir``; a relative one sits beside a local lake folder (the working directory
    for the default ``data_lake``), so a run on a temporary lake never writes into the working directory."""
    path = Path(results_dir)
    if path.is_absolute() or "://" in str(lake_root):  # a lake on object storage: the working directory
        return path
    return Path(lake_root).resolve().parent / path


def _frontier(cfg, lake):
    """The efficient frontier of the last instrument-weight window, the same returns and settings as
    the ``instrument_weights`` asset (``pipeline.portfolio.instrument_weights.last_window_frontier``)."""
    if len(cfg.symbols) < 2:  # one instrument has no frontier to draw
        return None
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols)
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols)
    p = cfg.portfolio
    return last_window_frontier(vol_normalised_returns(closes, vol), int(p.weights_lookback_years * 256),
                                p.weights_min_sessions, method=p.instrument_weights_method,
                                fixed_weights=p.instrument_weights, optimiser=p.optimiser)


def _excluded(cfg, lake, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    """Instruments not traded (or held by the stale guard) over ``sessions``, with the reason, from the
    ``volatility`` table (``pipeline.signals.combination.excluded_instruments``)."""
    closes = lake.read_wide(VOLATILITY, "close", cfg.symbols, end=sessions[-1])
    vol = lake.read_wide(VOLATILITY, "vol_price", cfg.symbols, end=sessions[-1])
    fx = universe_fx(cfg.instruments, cfg.portfolio.base_currency, cfg.portfolio.fx_path, closes.index)
    return excluded_instruments(closes, vol, cfg, fx, start=sessions[0], end=sessions[-1])


def _sample_note(cfg) -> str:
    """How each parameter of the run relates to the data: fixed by configuration, or estimated on past data only."""
    scalars = "published forecast scalars" if cfg.rules.scalars == "fixed" else "forecast scalars estimated on past data"
    fixed, estimated = [], []
    method = cfg.portfolio.instrument_weights_method
    (estimated if method not in ("equal", "fixed") else fixed).append(f"instrument weights ({method})")
    idm = cfg.portfolio.idm
    (estimated if idm == "estimate" else fixed).append("IDM" if idm == "estimate" else f"IDM {float(idm):g}")
    fdm = cfg.combination.fdm
    (estimated if fdm == "estimate" else fixed).append("FDM" if fdm == "estimate" else f"FDM {float(fdm):g}")
    parts = [scalars]
    if fixed:
        parts.append(", ".join(fixed) + " fixed by the configuration")
    if estimated:
        parts.append(", ".join(estimated) + " estimated at each session from past data only (expanding or trailing "
                     "windows)")
    return "; ".join(parts) + "; no parameter was fitted on the reported returns as a whole"


def _png_md(alt: str, png: bytes) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _float(value) -> float:
    return float("nan") if value is None else float(value)
