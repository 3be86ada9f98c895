"""``trading-pipeline backtest``, ``walk-forward`` and ``compare``: research runs from the shell.

    trading-pipeline backtest [--start YYYY-MM-DD] [--end YYYY-MM-DD] [--strategy NAME] [--out DIR]
    trading-pipeline walk-forward [--train-len 252] [--test-len 63] [--stride 63] [--strategy NAME] [--out DIR]
    trading-pipeline compare RUN_DIR RUN_DIR ... [--out FILE]
    trading-pipeline stability [--start YYYY-MM-DD] [--end YYYY-MM-DD] [--out DIR]

``backtest`` runs the production code through Dagster: one run of the daily job for the session
``--end`` (default: the source's latest) with order submission off, on an empty lake (a temporary
folder, or ``--lake``). On an empty lake that run writes every session's rows from the first bar
to ``--end``, each computed from data up to its session: exactly what a single-run backfill of
the daily assets writes, at a fraction of its bookkeeping. The ``backtest`` asset in the same run
simulates ``--start`` .. ``--end`` and writes ``{out}/{timestamp}_{strategy}/`` (see
:mod:`pipeline.backtest_results`). The run is recorded in ``$DAGSTER_HOME`` like any other.

``walk-forward`` fills a lake the same way, then refits forecast scalars, forecast weights (when
``combination.forecast_weights_method`` estimates them), speed-limit exclusions, FDM, instrument
weights and IDM on each training window only and trades the following test window with them
(:mod:`pipeline.walk_forward_backtest`), simulated with the same ``backtest:`` options as
``backtest``; the stitched out-of-sample account gets a results folder with a per-fold table of
its statistics and fitted parameters. ``compare`` writes ``compare.html`` for results folders. ``stability``
fills a lake the same way and reports the Sharpe ratio of the trend system with each key
parameter moved by -25% / +25% and its performance by volatility regime
(:mod:`pipeline.parameter_stability`), gross of costs and in sample.

Use ``--config`` with a ``files`` source to run on a folder of your own bars.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

__all__ = ["add_parser", "cmd_backtest", "cmd_compare", "cmd_stability", "cmd_walk_forward"]


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``backtest``, ``walk-forward`` and ``compare`` on the CLI's subparsers."""
    p = sub.add_parser("backtest", parents=[common],
                       help="run the production code over history and write a results folder with report.html")
    _window_args(p)
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("walk-forward", parents=[common],
                       help="refit scalars and weights on rolling train windows; stitched out-of-sample results")
    _window_args(p)
    p.add_argument("--train-len", type=int, default=252, help="sessions per training window (default 252)")
    p.add_argument("--test-len", type=int, default=63, help="sessions per test window (default 63)")
    p.add_argument("--stride", type=int, default=None, help="sessions between folds (default: --test-len)")
    p.add_argument("--expanding", action="store_true", help="anchor every training window at the first session")
    p.set_defaults(func=cmd_walk_forward)

    p = sub.add_parser("compare", parents=[common], help="put several backtest results folders side by side")
    p.add_argument("runs", nargs="+", help="results folders written by backtest or walk-forward")
    p.add_argument("--out", help="HTML file to write (default: compare.html beside the first folder)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("stability", parents=[common],
                       help="Sharpe with each key parameter moved +/-25%, and performance by vol regime")
    _window_args(p)
    p.set_defaults(func=cmd_stability)


def _window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", help="first session simulated, YYYY-MM-DD (default: the first with a price)")
    p.add_argument("--end", help="last session, YYYY-MM-DD (default: the source's latest session)")
    p.add_argument("--strategy", help="name of the results folder (default: backtest.name or broker.strategy)")
    p.add_argument("--out", help="parent folder of the results (default: backtest.results_dir)")


def _fill_lake(args: argparse.Namespace, stack: ExitStack, tags: dict[str, str]):
    """Run the daily job for ``--end`` with no order sent; return (result, config, lake root, end)."""
    from pipeline.cli import _config, _failure_text
    from pipeline.definitions import ensure_dagster_home, execute_daily
    from pipeline.sources import make_source

    cfg = _config(args)
    end = pd.Timestamp(args.end) if args.end else make_source(cfg.source, cfg.instruments).last_session(cfg.symbols)
    if end is None:
        raise SystemExit(f"error: source {cfg.source.kind!r} has no bars for {cfg.symbols}")
    lake_root = str(Path(args.lake).resolve()) if args.lake else stack.enter_context(
        tempfile.TemporaryDirectory(prefix="backtest-lake-"))
    ensure_dagster_home()
    day = end.strftime("%Y-%m-%d")
    print(f"Running the daily job for {day} over the whole history ({len(cfg.symbols)} instruments, "
          f"source {cfg.source.kind}, no orders sent) ...")
    started = time.perf_counter()
    result = execute_daily(day, submit=False, config_path=args.config, lake_root=lake_root,
                           tags={"trading/trigger": f"cli-{args.command}", **tags})
    if not result.success:
        print(f"Run {result.run_id} FAILED after {time.perf_counter() - started:.1f} s:\n{_failure_text(result)}",
              file=sys.stderr)
        return None, cfg, lake_root, day
    print(f"Run {result.run_id} done in {time.perf_counter() - started:.1f} s")
    return result, cfg, lake_root, day


def cmd_backtest(args: argparse.Namespace) -> int:
    from pipeline.backtest_results import RUN_TAGS

    tags = {RUN_TAGS["out"]: str(Path(_out_default(args)).resolve())}
    for key, value in (("start", args.start), ("end", args.end), ("name", args.strategy)):
        if value:
            tags[RUN_TAGS[key]] = value
    with ExitStack() as stack:
        result, *_ = _fill_lake(args, stack, tags)
        if result is None:
            return 1
        events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "backtest"]
        folder = Path(events[0].materialization.metadata["results_folder"].value)
        _print_summary(folder)
    return 0


def cmd_walk_forward(args: argparse.Namespace) -> int:
    from pipeline.backtest import needs_bars
    from pipeline.backtest_results import write_results
    from pipeline.forecasts import ForecastSet
    from pipeline.fx import universe_fx
    from pipeline.lake import Lake
    from pipeline.walk_forward_backtest import walk_forward_backtest

    with ExitStack() as stack:
        result, cfg, lake_root, day = _fill_lake(args, stack, {})
        if result is None:
            return 1
        started = time.perf_counter()
        lake = Lake(Path(lake_root))
        raw = ForecastSet.from_long(lake.read("forecasts")).raw
        closes = lake.read_wide("volatility", "close", cfg.symbols)
        vol = lake.read_wide("volatility", "vol_price", cfg.symbols)
        fx = universe_fx(cfg.instruments, cfg.portfolio.base_currency, cfg.portfolio.fx_path, closes.index)
        bars = {f"{field}s": lake.read_wide("clean_bars", field, cfg.symbols).reindex(closes.index)
                for field in needs_bars(cfg)}
        run = walk_forward_backtest(raw, closes, vol, cfg, train_len=args.train_len, test_len=args.test_len,
                                    stride=args.stride, expanding=args.expanding, start=args.start, end=day,
                                    name=args.strategy or f"{cfg.backtest.name or cfg.broker.strategy}-walk-forward",
                                    fx=fx, bars=bars)
        folder = write_results(run, _out_default(args))
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


def cmd_compare(args: argparse.Namespace) -> int:
    from pipeline.backtest_results import ResultsError, write_comparison

    out = Path(args.out) if args.out else Path(args.runs[0]).resolve().parent / "compare.html"
    try:
        path = write_comparison(args.runs, out)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Comparison of {len(args.runs)} runs: {path}")
    return 0


def cmd_stability(args: argparse.Namespace) -> int:
    import numpy as np

    from pipeline.lake import Lake
    from pipeline.parameter_stability import (
        TrendParameters,
        performance_by_vol_regime,
        sharpe_surface,
        trend_returns,
    )
    from pipeline.validation import PERIODS_PER_YEAR

    with ExitStack() as stack:
        result, cfg, lake_root, day = _fill_lake(args, stack, {})
        if result is None:
            return 1
        closes = Lake(Path(lake_root)).read_wide("volatility", "close", cfg.symbols).loc[:day]
        start = pd.Timestamp(args.start) if args.start else closes.index[0] + pd.offsets.BDay(300)  # after warm-up
        base = TrendParameters(vol_target=cfg.portfolio.vol_target, buffer_fraction=cfg.portfolio.buffer)
        surface = sharpe_surface(closes, base, start=start, capital=cfg.portfolio.capital)
        returns = trend_returns(closes, base, capital=cfg.portfolio.capital).loc[start:]
        market = closes.pct_change(fill_method=None).mean(axis=1)  # equal-weight market return
        market_vol = market.rolling(64, min_periods=32).std() * np.sqrt(PERIODS_PER_YEAR)
        regimes = performance_by_vol_regime(returns, market_vol)
        folder = Path(_out_default(args)) / (
            f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%SZ}_{args.strategy or cfg.broker.strategy}-stability")
        folder.mkdir(parents=True, exist_ok=True)
        surface.to_csv(folder / "sharpe_surface.csv")
        regimes.to_csv(folder / "performance_by_vol_regime.csv")
        basis = {"sample": f"{start.date()} .. {day}, {len(cfg.symbols)} instruments",
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


def _out_default(args: argparse.Namespace) -> str:
    if args.out:
        return args.out
    from pipeline.cli import _config

    return _config(args).backtest.results_dir


def _print_summary(folder: Path) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    perf, basis = summary["performance"]["values"], summary["basis"]
    keys = ["cagr", "annual_vol", "sharpe", "sortino", "max_drawdown", "calmar", "realised_vol_vs_target"]
    print(f"\nSample {basis['sample']}; {basis['in_or_out_of_sample']}; {basis['costs']}")
    print("  " + ", ".join(f"{k} {perf[k]:.3f}" if perf.get(k) is not None else f"{k} n/a" for k in keys))
    orders = summary["trades"]["orders"]
    print(f"  trades {summary['trades']['values']['n_trades']:.0f}, orders {orders['n_orders']:.0f}, "
          f"fill rate {orders['fill_rate'] if orders['fill_rate'] is not None else float('nan'):.1%}")
    trips = summary["trades"].get("circuit_breaker") or []
    if trips:
        print(f"  daily-loss circuit breaker tripped on {len(trips)} sessions ({trips[0]['session']} first); "
              "the orders of each next session were denied")
    print(f"Results: {folder}\nReport:  {folder / 'report.html'}")
