"""The research runs: ``backtest``, ``walk-forward``, ``compare`` and ``stability`` on the production code."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake, date_option

__all__ = ["backtest", "commands", "compare", "stability", "walk_forward"]

commands = typer.Typer(rich_markup_mode="markdown")
PANEL = "Research (no order is ever sent)"

Start = Annotated[str | None, date_option(
    "--start", "first session simulated, YYYY-MM-DD (default: the first with a price)")]
End = Annotated[str | None, date_option(
    "--end", "last session, YYYY-MM-DD (default: the source's latest session)")]
Strategy = Annotated[str | None, typer.Option(
    "--strategy", metavar="NAME", show_default=False,
    help="name of the results folder (default: backtest.name or broker.strategy)")]
Out = Annotated[str | None, typer.Option(
    "--out", metavar="DIR", show_default=False, help="parent folder of the results (default: backtest.results_dir)")]


def _fill_lake(command: str, config: str | None, lake: str | None, end: str | None, stack: ExitStack,
               tags: dict[str, str]):
    """Run the daily job for ``end`` with no order sent; return (result or None if it failed, config, lake root, end)."""
    import dagster as dg
    import pandas as pd

    from pipeline.adapters.sources import make_source
    from pipeline.definitions import execute_daily, research_dagster_home

    cfg = common.load_config(config, lake)
    last = pd.Timestamp(end) if end else make_source(cfg.source, cfg.instruments).last_session(cfg.symbols)
    if last is None:
        raise common.CliError(f"error: source {cfg.source.kind!r} has no bars for {cfg.symbols}")
    lake_root = str(Path(lake).resolve()) if lake else stack.enter_context(
        tempfile.TemporaryDirectory(prefix="backtest-lake-"))
    home = research_dagster_home()  # research runs never enter the production instance
    instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
    day = last.strftime("%Y-%m-%d")
    print(f"Running the daily job for {day} over the whole history ({len(cfg.symbols)} instruments, "
          f"source {cfg.source.kind}, no orders sent; research instance {home}) ...")
    started = time.perf_counter()
    result = execute_daily(day, submit=False, config_path=config, lake_root=lake_root, research=True,
                           instance=instance, tags={"trading/trigger": f"cli-{command}", **tags})
    if not result.success:
        print(f"Run {result.run_id} FAILED after {time.perf_counter() - started:.1f} s:\n{common.failure_text(result)}",
              file=sys.stderr)
        return None, cfg, lake_root, day
    print(f"Run {result.run_id} done in {time.perf_counter() - started:.1f} s")
    return result, cfg, lake_root, day


def _out_default(out: str | None, config: str | None, lake: str | None) -> str:
    return out if out else common.load_config(config, lake).backtest.results_dir


def _print_summary(folder: Path) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    perf, basis = summary["performance"]["values"], summary["basis"]
    keys = ["cagr", "annual_vol", "sharpe", "sortino", "max_drawdown", "calmar", "realised_vol_vs_target"]
    print(f"\nSample {basis['sample']}; {basis['in_or_out_of_sample']}; {basis['costs']}")
    print(f"  capital: {basis.get('capital', 'fixed')}")
    print("  " + ", ".join(f"{k} {perf[k]:.3f}" if perf.get(k) is not None else f"{k} n/a" for k in keys))
    orders = summary["trades"]["orders"]
    print(f"  trades {summary['trades']['values']['n_trades']:.0f}, orders {orders['n_orders']:.0f}, "
          f"fill rate {orders['fill_rate'] if orders['fill_rate'] is not None else float('nan'):.1%}")
    trips = summary["trades"].get("circuit_breaker") or []
    if trips:
        print(f"  daily-loss circuit breaker tripped on {len(trips)} sessions ({trips[0]['session']} first); "
              "the orders of each next session were denied")
    print(f"Results: {folder}\nReport:  {folder / 'report.html'}")


@commands.command(
    "backtest", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline backtest --start 2015-01-02 --end 2022-06-30 --strategy trend --out results")
def backtest(start: Start = None, end: End = None, strategy: Strategy = None, out: Out = None,
             config: Config = None, lake: Lake = None) -> int:
    """Run the production code over history and write a results folder with report.html.

    One run of the daily job for --end with order submission off, on an empty lake (a temporary
    folder, or --lake): it writes every session's rows from the first bar to --end, each computed
    from data up to its session, as a single-run backfill of the daily assets would. The backtest
    asset of the same run simulates --start .. --end and writes OUT/TIMESTAMP_STRATEGY/ (summary,
    equity curve, trades, report.html). Use --config with a files source to run on your own bars.
    """
    from pipeline.research.results import RUN_TAGS

    if _stop_target_backtest(start, end, strategy, out, config, lake):
        return 0
    tags = {RUN_TAGS["out"]: str(Path(_out_default(out, config, lake)).resolve())}
    for key, value in (("start", start), ("end", end), ("name", strategy)):
        if value:
            tags[RUN_TAGS[key]] = value
    with ExitStack() as stack:
        result, *_ = _fill_lake("backtest", config, lake, end, stack, tags)
        if result is None:
            return 1
        events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "backtest"]
        folder = Path(events[0].materialization.metadata["results_folder"].value)
        _print_summary(folder)
    return 0


def _stop_target_backtest(start: str | None, end: str | None, name: str | None, out: str | None,
                          config: str | None, lake: str | None) -> bool:
    """Run the stop-and-target strategy when the configuration's ``strategy.kind`` is ``stop_target``
    (pipeline/strategies, docs/strategies.md); False for Carver's system (no ``strategy`` section)."""
    from pipeline.config import config_file
    from pipeline.strategies.config import StrategyConfigError, strategy_config
    from pipeline.strategies.run import run_strategy_backtest

    cfg = common.load_config(config, lake)
    try:
        kind = strategy_config(cfg)
        if kind is None:
            return False
        print(f"Backtesting the stop_target strategy {kind.name!r} on {', '.join(cfg.symbols)} (source "
              f"{cfg.source.kind}, no orders sent) ...")
        started = time.perf_counter()
        run = run_strategy_backtest(cfg, kind, _out_default(out, config, lake), start=start, end=end, name=name)
    except StrategyConfigError as exc:
        raise common.CliError(f"error: config file {config_file(config)}: {common.one_line(exc)}", 2) from exc
    perf, trades = run.summary["performance"]["values"], run.summary["trades"]["values"]
    time_analysis = run.summary["time_analysis"]
    print(f"Done in {time.perf_counter() - started:.1f} s. Sample {run.summary['basis']['sample']}; "
          f"{run.summary['basis']['costs']}")
    print(f"  trades {trades['count']}, win rate {trades['win_rate'] or 0:.1%}, profit factor "
          f"{trades['profit_factor'] or float('nan'):.2f}, expectancy {trades['expectancy'] or 0:,.2f}, "
          f"Sharpe {perf['sharpe'] or float('nan'):.2f}, max drawdown {perf['max_drawdown'] or 0:.1%}, "
          f"net P&L {perf['pnl_net']:,.2f}")
    print(f"  average holding {time_analysis['average_holding_sessions'] or float('nan'):.1f} sessions, best weekday "
          f"{time_analysis['best_weekday']}, worst {time_analysis['worst_weekday']}")
    print(f"Results: {run.folder}\nReport:  {run.folder / 'report.html'}")
    return True


@commands.command(
    "walk-forward", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline walk-forward --start 2016-01-04 --train-len 252 --test-len 126 --out results")
def walk_forward(
    start: Start = None, end: End = None, strategy: Strategy = None, out: Out = None,
    train_len: Annotated[int, typer.Option("--train-len", help="sessions per training window")] = 252,
    test_len: Annotated[int, typer.Option("--test-len", help="sessions per test window")] = 63,
    stride: Annotated[int | None, typer.Option("--stride", show_default=False,
                                               help="sessions between folds (default: --test-len)")] = None,
    expanding: Annotated[bool, typer.Option("--expanding",
                                            help="anchor every training window at the first session")] = False,
    config: Config = None, lake: Lake = None,
) -> int:
    """Refit scalars and weights on rolling train windows; stitched out-of-sample results.

    Fills a lake as backtest does, then refits forecast scalars, forecast weights (when
    combination.forecast_weights_method estimates them), speed-limit exclusions, FDM, instrument
    weights and IDM on each training window only, and trades the following test window with them,
    simulated with the same backtest options. The stitched out-of-sample account gets a results
    folder with a per-fold table (folds.csv) of its statistics and fitted parameters.
    """
    import pandas as pd

    from pipeline.adapters.pysystemtrade import universe_fx
    from pipeline.research.backtest import needs_bars
    from pipeline.research.results import write_results
    from pipeline.research.walk_forward import walk_forward_backtest
    from pipeline.signals.forecasts import ForecastSet
    from pipeline.store.lake import Lake as LakeStore

    with ExitStack() as stack:
        result, cfg, lake_root, day = _fill_lake("walk-forward", config, lake, end, stack, {})
        if result is None:
            return 1
        started = time.perf_counter()
        store = LakeStore(Path(lake_root))
        raw = ForecastSet.from_long(store.read("forecasts")).raw
        closes = store.read_wide("volatility", "close", cfg.symbols)
        vol = store.read_wide("volatility", "vol_price", cfg.symbols)
        fx = universe_fx(cfg.instruments, cfg.portfolio.base_currency, cfg.portfolio.fx_path, closes.index)
        bars = {f"{field}s": store.read_wide("clean_bars", field, cfg.symbols).reindex(closes.index)
                for field in needs_bars(cfg)}
        run = walk_forward_backtest(raw, closes, vol, cfg, train_len=train_len, test_len=test_len,
                                    stride=stride, expanding=expanding, start=start, end=day,
                                    name=strategy or f"{cfg.backtest.name or cfg.broker.strategy}-walk-forward",
                                    fx=fx, bars=bars)
        folder = write_results(run, _out_default(out, config, lake))
        print(f"Walk-forward: {len(run.folds)} folds in {time.perf_counter() - started:.1f} s "
              f"(fitted on each training window: {', '.join(run.parameters['walk_forward']['fitted_in_sample'])})")
        shown = ["test_start", "test_end", "n_test", "pnl_net", "sharpe", "total_return", "breaker_trips",
                 "forecast_weights_source", "fdm", "idm", "n_instruments"]
        with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 500,
                               "display.float_format", "{:.3f}".format):
            print(f"Out-of-sample test windows (fitted parameters per fold in {folder / 'folds.csv'}):")
            print(run.folds[shown].to_string())
        _print_summary(folder)
    return 0


@commands.command(
    "compare", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline compare results/20240102T170000Z_carver results/20240102T171500Z_carver-walk-forward")
def compare(
    runs: Annotated[list[str], typer.Argument(show_default=False,
                                              help="results folders written by backtest or walk-forward")],
    out: Annotated[str | None, typer.Option(
        "--out", metavar="FILE", show_default=False,
        help="HTML file to write (default: compare.html beside the first folder)")] = None,
    config: Config = None, lake: Lake = None,
) -> int:
    """Put several backtest results folders side by side.

    One self-contained HTML page: the key statistics of every run in one table (each with its
    sample, costs and in/out-of-sample basis), overlaid equity curves, drawdowns and rolling
    Sharpe ratios.
    """
    from pipeline.research.results import ResultsError, write_comparison

    target = Path(out) if out else Path(runs[0]).resolve().parent / "compare.html"
    try:
        path = write_comparison(runs, target)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Comparison of {len(runs)} runs: {path}")
    return 0


@commands.command(
    "stability", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline stability --start 2015-01-02 --end 2022-06-30 --out results")
def stability(start: Start = None, end: End = None, strategy: Strategy = None, out: Out = None,
              config: Config = None, lake: Lake = None) -> int:
    """Sharpe with each key parameter moved +/-25%, and performance by vol regime.

    Fills a lake as backtest does, then reports the Sharpe ratio of the trend system with each key
    parameter (EWMA spans, vol span, buffer fraction, vol target) scaled by 0.75 and 1.25, and its
    performance in terciles of the market's realised volatility; gross of costs and in sample (a
    sensitivity, not a performance claim). Writes sharpe_surface.csv, performance_by_vol_regime.csv
    and stability.json. --start defaults to 300 sessions after the first price (the warm-up).
    """
    import numpy as np
    import pandas as pd

    from pipeline.research.parameter_stability import (
        TrendParameters,
        performance_by_vol_regime,
        sharpe_surface,
        trend_returns,
    )
    from pipeline.research.validation import PERIODS_PER_YEAR
    from pipeline.store.lake import Lake as LakeStore

    with ExitStack() as stack:
        result, cfg, lake_root, day = _fill_lake("stability", config, lake, end, stack, {})
        if result is None:
            return 1
        closes = LakeStore(Path(lake_root)).read_wide("volatility", "close", cfg.symbols).loc[:day]
        first = pd.Timestamp(start) if start else closes.index[0] + pd.offsets.BDay(300)  # after warm-up
        base = TrendParameters(vol_target=cfg.portfolio.vol_target, buffer_fraction=cfg.portfolio.buffer)
        surface = sharpe_surface(closes, base, start=first, capital=cfg.portfolio.capital)
        returns = trend_returns(closes, base, capital=cfg.portfolio.capital).loc[first:]
        market = closes.pct_change(fill_method=None).mean(axis=1)  # equal-weight market return
        market_vol = market.rolling(64, min_periods=32).std() * np.sqrt(PERIODS_PER_YEAR)
        regimes = performance_by_vol_regime(returns, market_vol)
        folder = Path(_out_default(out, config, lake)) / (
            f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%SZ}_{strategy or cfg.broker.strategy}-stability")
        folder.mkdir(parents=True, exist_ok=True)
        surface.to_csv(folder / "sharpe_surface.csv")
        regimes.to_csv(folder / "performance_by_vol_regime.csv")
        basis = {"sample": f"{first.date()} .. {day}, {len(cfg.symbols)} instruments",
                 "costs": "none (gross)", "in_or_out_of_sample": "in sample (sensitivity, not a performance claim)",
                 "base_parameters": {"ewmac_fast": list(base.ewmac_fast), "vol_span": base.vol_span,
                                     "buffer_fraction": base.buffer_fraction, "vol_target": base.vol_target},
                 "regime": "terciles of the equal-weight market's 64-session realised vol at the previous close"}
        (folder / "stability.json").write_text(json.dumps({
            "basis": basis,
            "sharpe_surface": {k: {str(f): float(v) for f, v in row.items()} for k, row in surface.iterrows()},
            "performance_by_vol_regime": json.loads(regimes.to_json(orient="index")),
        }, indent=2))
        with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
            print(f"\nSample {basis['sample']}; {basis['in_or_out_of_sample']}; costs {basis['costs']}")
            print(f"Sharpe with each parameter scaled by the factor:\n{surface.to_string()}")
            print(f"\nPerformance by volatility regime:\n{regimes.to_string()}")
        print(f"Results: {folder}")
    return 0
