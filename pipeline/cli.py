"""``trading-pipeline``: run the daily job, backfill history, query the lake, set the kill switch.

    trading-pipeline daily [--session YYYY-MM-DD] [--no-submit]
    trading-pipeline backfill START END
    trading-pipeline query "select * from target_positions where session = '2022-12-28'"
    trading-pipeline kill-switch [ACTIVE|REDUCING|HALTED] [--reason TEXT]
    trading-pipeline release SESSION INSTRUMENT RULE --reason TEXT
    trading-pipeline fake-gateway [--port 4002] [--bars FILE]
    trading-pipeline cancel-orders SESSION

Every command takes ``--config PATH`` (default: ``$TRADING_PIPELINE_CONFIG`` or the bundled
default) and ``--lake PATH`` (a folder or an object-store URL; the ledger then lives in the
configuration's ``state_root``). Runs go through Dagster and are recorded in ``$DAGSTER_HOME``
(default ``./.dagster_home``), so they show in the UI next to scheduled runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline import backtest_cli
from pipeline import fake_gateway_cli, orders_cli, storage
from pipeline.config import ConfigError, PipelineConfig, load_config
from pipeline.storage import StorageError


def _config(args: argparse.Namespace) -> PipelineConfig:
    cfg = load_config(args.config)
    if args.lake:
        cfg = cfg.model_copy(update={"lake_root": args.lake})
    return cfg


def _lake_root(args: argparse.Namespace, cfg: PipelineConfig) -> str:
    """The lake root as a string: a resolved folder or an object-store URL (``pipeline.storage``)."""
    return str(storage.lake_root(cfg, args.lake))


def _state_root(args: argparse.Namespace, cfg: PipelineConfig) -> Path:
    """The local state folder of the ledger (``pipeline.storage``); StorageError if it has none."""
    return storage.state_path(cfg, storage.lake_root(cfg, args.lake))


def _print_frame(df: pd.DataFrame, title: str) -> None:
    print(f"\n{title}")
    if df.empty:
        print("  (none)")
        return
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 200,
                           "display.float_format", "{:,.2f}".format):
        print("  " + df.to_string().replace("\n", "\n  "))


def _failure_text(result) -> str:
    lines = []
    for event in result.all_events:
        if event.is_failure and event.step_key:
            data = event.event_specific_data
            error = getattr(data, "error", None)
            lines.append(f"  step {event.step_key}: {error.message.strip() if error else event.message}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            ev = event.event_specific_data
            lines.append(f"  check {ev.asset_check_key.asset_key.to_user_string()}:{ev.asset_check_key.name} failed ({ev.severity.value})")
    return "\n".join(lines) or "  (see the run in the Dagster UI)"


def summary(cfg: PipelineConfig, lake_root: str, session: pd.Timestamp, state_root: Path | None = None) -> None:
    """Print the session's combined forecasts, target positions and orders from the lake."""
    from functools import partial

    from pipeline.warehouse import query

    query = partial(query, state_root=state_root)
    day = session.strftime("%Y-%m-%d")
    positions = query(lake_root, f"""
        select instrument, price, combined, weight, idm, optimal, target
        from target_positions where session = date '{day}' order by instrument""").set_index("instrument")
    _print_frame(positions, f"Combined forecasts and target positions on {day} (units: shares/contracts)")
    try:
        orders = query(lake_root, f"""
            select order_ref, side, abs(quantity) as quantity, reference_price, verdict,
                   coalesce(deny_reason, '') as deny_reason, status
            from order_intents where session = date '{day}' order by order_ref""")
    except Exception:  # the ledger may not exist yet (no orders asset run)
        orders = pd.DataFrame()
    _print_frame(orders, f"Orders for {day} with their pre-trade verdicts")
    try:
        metrics = query(lake_root, "select metric, value from backtest_metrics").set_index("metric")["value"]
        keys = ["sharpe", "cagr", "annual_vol", "max_drawdown", "realised_vol_vs_target"]
        print("\nBacktest (whole history): " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics))
    except Exception:
        pass


def cmd_daily(args: argparse.Namespace) -> int:
    from pipeline.calendar import is_session
    from pipeline.definitions import ensure_dagster_home, execute_daily
    from pipeline.sources import make_source
    from pipeline.warehouse import publish_views

    cfg = _config(args)
    lake_root, state = _lake_root(args, cfg), _state_root(args, cfg)
    home = ensure_dagster_home()
    if args.session:
        session = pd.Timestamp(args.session)
    else:
        session = make_source(cfg.source, cfg.instruments).last_session(cfg.symbols)
        if session is None:
            print(f"error: source {cfg.source.kind!r} has no bars for {cfg.symbols}", file=sys.stderr)
            return 2
    day = session.strftime("%Y-%m-%d")
    if not is_session(session, cfg.calendar):  # a holiday or weekend: nothing to run, no orders
        print(f"{day} is not a {cfg.calendar} session (weekend, holiday or closure): no run, no orders")
        return 0
    print(f"Daily run for session {day}: {len(cfg.symbols)} instruments ({', '.join(cfg.symbols)})")
    started = time.perf_counter()
    result = execute_daily(day, submit=not args.no_submit, config_path=args.config, lake_root=lake_root)
    elapsed = time.perf_counter() - started
    if not result.success:
        print(f"\nRun {result.run_id} FAILED after {elapsed:.1f} s:\n{_failure_text(result)}", file=sys.stderr)
        return 1
    publish_views(lake_root, state)
    summary(cfg, lake_root, session, state)
    print(f"\nRun {result.run_id} succeeded in {elapsed:.1f} s (Dagster instance: {home})")
    print(f"Outputs: Parquet lake {lake_root}, ledger and views {state / 'warehouse.duckdb'}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from pipeline.calendar import sessions
    from pipeline.definitions import ensure_dagster_home, execute_backfill
    from pipeline.warehouse import publish_views

    cfg = _config(args)
    lake_root, state = _lake_root(args, cfg), _state_root(args, cfg)
    home = ensure_dagster_home()
    started = time.perf_counter()
    result = execute_backfill(args.start, args.end, config_path=args.config, lake_root=lake_root)
    elapsed = time.perf_counter() - started
    if not result.success:
        print(f"Backfill run {result.run_id} FAILED after {elapsed:.1f} s:\n{_failure_text(result)}", file=sys.stderr)
        return 1
    publish_views(lake_root, state)
    partitions = pd.DatetimeIndex(sorted({e.partition for e in result.get_asset_materialization_events() if e.partition}))
    n = int(partitions.isin(sessions(partitions.min(), partitions.max(), cfg.calendar)).sum()) if len(partitions) else 0
    print(f"Backfill {args.start} .. {args.end}: one run ({result.run_id}), {n} sessions, {elapsed:.1f} s "
          f"({len(partitions)} weekday partitions, holidays materialized as no-ops; Dagster instance: {home}; "
          f"lake: {lake_root}). Backfills never send orders.")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from pipeline.warehouse import query

    cfg = _config(args)
    df = query(_lake_root(args, cfg), args.sql, cfg, state_root=_state_root(args, cfg))
    if args.csv:
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", args.max_rows):
            print(df.to_string(index=False, max_rows=args.max_rows))
    return 0


def cmd_kill_switch(args: argparse.Namespace) -> int:
    from pipeline.ledger import Ledger
    from pipeline.risk import TradingState
    from pipeline.warehouse import WAREHOUSE_FILE

    cfg = _config(args)
    ledger = Ledger(_state_root(args, cfg) / WAREHOUSE_FILE)
    ledger.init()
    if args.state:
        ledger.set_trading_state(TradingState(args.state), reason=args.reason or "set from the CLI", changed_by="cli")
    print(f"trading state: {ledger.trading_state().value}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from pipeline.ledger import Ledger
    from pipeline.warehouse import WAREHOUSE_FILE

    cfg = _config(args)
    ledger = Ledger(_state_root(args, cfg) / WAREHOUSE_FILE)
    ledger.init()
    new = ledger.release_quarantined(args.session, args.instrument, args.rule, reason=args.reason, released_by=args.by)
    print(f"{'released' if new else 'already released'}: {args.instrument} {args.session} rule {args.rule}; "
          "re-run the session (trading-pipeline daily --session ...) to take the bar into clean_bars")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trading-pipeline", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="configuration YAML (default: $TRADING_PIPELINE_CONFIG or the bundled default)")
    common.add_argument("--lake", help="lake root: a folder or an object-store URL (default: lake_root of the configuration)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("daily", parents=[common], help="run the daily job for the latest session (or --session)")
    p.add_argument("--session", help="session date YYYY-MM-DD (default: the source's latest session)")
    p.add_argument("--no-submit", action="store_true", help="record order intents only, send nothing")
    p.set_defaults(func=cmd_daily)

    p = sub.add_parser("backfill", parents=[common], help="single-run backfill of every daily asset (no orders sent)")
    p.add_argument("start", help="first session YYYY-MM-DD")
    p.add_argument("end", help="last session YYYY-MM-DD")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("query", parents=[common], help="SQL over the lake views and the ledger (DuckDB)")
    p.add_argument("sql")
    p.add_argument("--csv", action="store_true", help="write CSV to stdout")
    p.add_argument("--max-rows", type=int, default=100)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("release", parents=[common], help="release a quarantined bar after a manual check")
    p.add_argument("session", help="session date YYYY-MM-DD")
    p.add_argument("instrument")
    p.add_argument("rule", help="the rule it failed, as in the quarantine table (e.g. price_spike)")
    p.add_argument("--reason", required=True, help="what the check found")
    p.add_argument("--by", default=os.environ.get("USER", "cli"), help="who checked it")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("kill-switch", parents=[common], help="show or set the trading state")
    p.add_argument("state", nargs="?", choices=["ACTIVE", "REDUCING", "HALTED"])
    p.add_argument("--reason")
    p.set_defaults(func=cmd_kill_switch)

    backtest_cli.add_parser(sub, common)
    fake_gateway_cli.add_parser(sub, common)
    orders_cli.add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
