"""The production runs: ``daily`` (one session, orders to the broker), ``research`` (model refits and the
backtest, no orders) and ``backfill`` (history, no orders)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake, date_argument, date_option

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from pipeline.config import PipelineConfig

__all__ = ["backfill", "backtest_line", "commands", "daily", "research", "summary"]

commands = typer.Typer(rich_markup_mode="markdown")
PANEL = "Production runs (through Dagster, recorded in $DAGSTER_HOME)"


def backtest_line(con: duckdb.DuckDBPyConnection) -> str:
    """The research job's latest backtest in the lake, one line: its whole-history window and statistics
    (the daily run does not compute it), or where to get one. ``con``: the warehouse
    (``pipeline.store.warehouse.connect``)."""
    import duckdb

    try:
        rows = con.execute("""
            select m.metric, m.value, w.first, w.last from backtest_metrics m
            cross join (select min(session) as first, max(session) as last from backtest) w""").df()
    except duckdb.CatalogException:  # no research run on this lake yet (no backtest tables)
        return "Backtest: none in this lake yet (the research job computes it: trading-pipeline research)"
    if rows.empty:
        return "Backtest: none in this lake yet (the research job computes it: trading-pipeline research)"
    metrics = rows.set_index("metric")["value"]
    keys = ["sharpe", "cagr", "annual_vol", "max_drawdown", "realised_vol_vs_target"]
    return (f"Backtest (the research job's latest, {rows['first'].iloc[0]:%Y-%m-%d} .. {rows['last'].iloc[0]:%Y-%m-%d}; "
            "trading-pipeline research refreshes it): " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics))


def summary(cfg: PipelineConfig, lake_root: str, session: pd.Timestamp, state_root: Path | None = None) -> None:
    """Print the session's combined forecasts, target positions and orders from the lake, and the
    research job's latest backtest (:func:`backtest_line`)."""
    from functools import partial

    import pandas as pd

    from pipeline.store.warehouse import connect, query

    query = partial(query, state_root=state_root)
    day = session.strftime("%Y-%m-%d")
    positions = query(lake_root, f"""
        select instrument, price, combined, weight, idm, optimal, target
        from target_positions where session = date '{day}' order by instrument""").set_index("instrument")
    common.print_frame(positions, f"Combined forecasts and target positions on {day} (units: shares/contracts)")
    con = connect(lake_root, state_root=state_root)  # one connection for the rest of the printout
    try:
        try:
            orders = con.execute(f"""
                select order_ref, side, abs(quantity) as quantity, reference_price, verdict,
                       coalesce(deny_reason, '') as deny_reason, status
                from order_intents where session = date '{day}' order by order_ref""").df()
        except Exception:  # the ledger may not exist yet (no orders asset run)
            orders = pd.DataFrame()
        common.print_frame(orders, f"Orders for {day} with their pre-trade verdicts")
        print("\n" + backtest_line(con))
    finally:
        con.close()


def _print_source_problems(cfg: PipelineConfig, lake: str | None, run_id: str) -> None:
    """Print (stderr) one line per input the run's bar source could not read, and where they are kept."""
    lines = common.source_problems(cfg, lake, run_id)
    if lines:
        print(f"\nBar source problems ({len(lines)}), inputs left out of the run "
              "(trading-pipeline query \"select * from source_errors\"):\n" + "\n".join(lines), file=sys.stderr)


@commands.command(
    "daily", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline daily --session 2022-12-28 --no-submit")
def daily(
    session: Annotated[str | None, date_option(
        "--session", "session date YYYY-MM-DD (default: the source's latest session)")] = None,
    no_submit: Annotated[bool, typer.Option("--no-submit", help="record order intents only, send nothing")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Dagster's step events too (DEBUG log)")] = False,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Run the daily job for the latest session (or --session).

    One run of the Dagster daily job: bars, data quality, forecasts, target positions, pre-trade
    checks and orders to the configured broker (paper or IB). On a weekend or exchange holiday
    nothing runs and no order is sent. Prints the session's combined forecasts, target positions,
    orders with their pre-trade verdicts and the research job's latest backtest (the daily run does
    not refit models or backtest: `trading-pipeline research`); exits 1 if the run fails.
    """
    import pandas as pd

    from pipeline.adapters.sources import make_source
    from pipeline.calendar import is_session
    from pipeline.definitions import ensure_dagster_home, execute_daily
    from pipeline.store.warehouse import publish_views

    _log_level(verbose)
    cfg = common.load_config(config, lake)
    root, state = common.lake_root(cfg, lake), common.state_root(cfg, lake)
    home = ensure_dagster_home()
    if session:
        when = pd.Timestamp(session)
    else:
        when = make_source(cfg.source, cfg.instruments).last_session(cfg.symbols)
        if when is None:
            print(f"error: source {cfg.source.kind!r} has no bars for {cfg.symbols}", file=sys.stderr)
            return 2
    day = when.strftime("%Y-%m-%d")
    if not is_session(when, cfg.calendar):  # a holiday or weekend: nothing to run, no orders
        print(f"{day} is not a {cfg.calendar} session (weekend, holiday or closure): no run, no orders")
        return 0
    print(f"Daily run for session {day}: {len(cfg.symbols)} instruments ({', '.join(cfg.symbols)})")
    started = time.perf_counter()
    result = execute_daily(day, submit=not no_submit, config_path=config, lake_root=root)
    elapsed = time.perf_counter() - started
    _print_source_problems(cfg, lake, result.run_id)
    _alert_outcome(cfg, lake, result)
    if not result.success:
        print(f"\nRun {result.run_id} FAILED after {elapsed:.1f} s:\n{common.failure_text(result)}", file=sys.stderr)
        return 1
    publish_views(root, state)
    summary(cfg, root, when, state)
    print(f"\nRun {result.run_id} succeeded in {elapsed:.1f} s (Dagster instance: {home})")
    print(f"Outputs: Parquet lake {root}, ledger and views {state / 'warehouse.duckdb'}")
    return 0


@commands.command(
    "research", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline research")
def research(
    verbose: Annotated[bool, typer.Option("--verbose", help="Dagster's step events too (DEBUG log)")] = False,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Run the research job on the lake's history: model refits and the backtest (no orders).

    One run of the Dagster research job: the regime model and the vol forecast refitted walk-forward
    (a new registry version when the data changed; the daily run scores the latest stored version
    without refitting) and the backtest over all history. The lake must hold the daily assets (run
    `trading-pipeline daily` or `backfill` first). Exits 1 if the run fails.
    """
    from pipeline.definitions import ensure_dagster_home, execute_research
    from pipeline.store.warehouse import connect, publish_views

    _log_level(verbose)
    cfg = common.load_config(config, lake)
    root, state = common.lake_root(cfg, lake), common.state_root(cfg, lake)
    home = ensure_dagster_home()
    started = time.perf_counter()
    result = execute_research(config_path=config, lake_root=root)
    elapsed = time.perf_counter() - started
    _alert_outcome(cfg, lake, result)
    if not result.success:
        print(f"Research run {result.run_id} FAILED after {elapsed:.1f} s:\n{common.failure_text(result)}", file=sys.stderr)
        return 1
    publish_views(root, state)
    models = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    regime = models.get("regime_model", {}).get("model_version")
    vol = models.get("vol_forecast", {}).get("model_versions")
    print(f"Research run {result.run_id} succeeded in {elapsed:.1f} s (Dagster instance: {home})")
    print(f"Regime model version: {regime.value if regime else 'none'}; vol forecast versions: "
          f"{vol.value if vol else 'none'}")
    con = connect(root, state_root=state)
    try:
        print(backtest_line(con))
    finally:
        con.close()
    return 0


@commands.command(
    "backfill", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline backfill 2022-12-01 2022-12-28")
def backfill(
    start: Annotated[str, date_argument("first session YYYY-MM-DD")],
    end: Annotated[str, date_argument("last session YYYY-MM-DD")],
    verbose: Annotated[bool, typer.Option("--verbose", help="Dagster's step events too (DEBUG log)")] = False,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Single-run backfill of every daily asset (no orders sent).

    One Dagster run materializes every weekday partition from START to END; exchange holidays
    are recorded as partitions without rows. Backfills never send orders.
    """
    import pandas as pd

    from pipeline.calendar import sessions
    from pipeline.definitions import ensure_dagster_home, execute_backfill
    from pipeline.store.warehouse import publish_views

    _log_level(verbose)
    cfg = common.load_config(config, lake)
    first, last = pd.Timestamp(start), pd.Timestamp(end)
    if first < pd.Timestamp(cfg.history_start):  # no partition exists before it
        raise common.CliError(
            f"error: backfill starts on {first.date()}, before history_start {pd.Timestamp(cfg.history_start).date()} of the "
            f"configuration ({config or 'the bundled default'}): start on or after it, or set history_start earlier")
    if last < first:
        raise common.CliError(f"error: backfill ends on {last.date()}, before its start {first.date()}")
    root, state = common.lake_root(cfg, lake), common.state_root(cfg, lake)
    home = ensure_dagster_home()
    started = time.perf_counter()
    result = execute_backfill(start, end, config_path=config, lake_root=root)
    elapsed = time.perf_counter() - started
    _print_source_problems(cfg, lake, result.run_id)
    _alert_outcome(cfg, lake, result)
    if not result.success:
        print(f"Backfill run {result.run_id} FAILED after {elapsed:.1f} s:\n{common.failure_text(result)}", file=sys.stderr)
        return 1
    publish_views(root, state)
    partitions = pd.DatetimeIndex(sorted({e.partition for e in result.get_asset_materialization_events() if e.partition}))
    n = int(partitions.isin(sessions(partitions.min(), partitions.max(), cfg.calendar)).sum()) if len(partitions) else 0
    print(f"Backfill {start} .. {end}: one run ({result.run_id}), {n} sessions, {elapsed:.1f} s "
          f"({len(partitions)} weekday partitions, holidays materialized as no-ops; Dagster instance: {home}; "
          f"lake: {root}). Backfills never send orders.")
    warned = common.failure_text(result, checks_only=True)
    if warned:
        print("Left out of the history, not blocking (a daily run would block on these):\n" + warned)
    return 0


def _alert_outcome(cfg, lake: str | None, result) -> None:
    """Alert on the failed checks and the failure of a command-line run (the daemon's sensors never see it):
    the alerts table and the configured destinations, with the sensors' keys."""
    import logging

    import dagster as dg

    from sensors.alerts import alert_run_outcome

    class _Ledger:  # what the alert helpers need of the Settings resource
        def ledger(self):
            return common.ledger(cfg, lake)

    failure = None if result.success else common.one_line(common.failure_text(result).strip().splitlines()[0])
    alert_run_outcome(dg.DagsterInstance.get(), result.run_id, _Ledger(), logging.getLogger("trading-pipeline"),
                      failure)


def _log_level(verbose: bool) -> None:
    """``--verbose``: Dagster's DEBUG step events on the console (default INFO; see
    ``pipeline.definitions.LOG_LEVEL_ENV``)."""
    if verbose:
        from pipeline.definitions import LOG_LEVEL_ENV

        os.environ[LOG_LEVEL_ENV] = "DEBUG"
