"""The data commands: ``query`` (SQL over the lake and the ledger) and ``release`` (a quarantined bar)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake, date_argument

__all__ = ["commands", "query", "release"]

commands = typer.Typer(rich_markup_mode="markdown")
PANEL = "Data"


@commands.command(
    "query", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline query \"select * from target_positions where session = '2022-12-28'\"")
def query(
    sql: Annotated[str, typer.Argument(show_default=False,
                                       help="the query; tables are the lake's views and the ledger's tables")],
    csv: Annotated[bool, typer.Option("--csv", help="write CSV to stdout")] = False,
    max_rows: Annotated[int, typer.Option("--max-rows", help="rows printed at most (not with --csv)")] = 100,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """SQL over the lake views and the ledger (DuckDB).

    The lake's tables (bars, forecasts, target positions, backtest results) are views over its
    Parquet files; the ledger's (order intents, fills, trading state, quarantine) sit beside them.
    A table name that does not exist fails with the list of the tables there are; a table with a
    broken Parquet file fails naming the file and what to do, and the other tables still answer.
    """
    import duckdb
    import pandas as pd

    from pipeline.store.warehouse import BrokenLakeFileError
    from pipeline.store.warehouse import query as run_query

    cfg = common.load_config(config, lake)
    try:
        df = run_query(common.lake_root(cfg, lake), sql, cfg, state_root=common.state_root(cfg, lake))
    except BrokenLakeFileError as exc:  # one table's file is truncated or not Parquet
        raise common.CliError(f"error: {common.one_line(exc)}") from exc
    except duckdb.Error as exc:  # e.g. a typo in the SQL: DuckDB's message names the tables available
        hint = "; fix the SQL and run it again" if isinstance(exc, duckdb.ProgrammingError) else ""
        raise common.CliError(f"error: {common.one_line(exc)}{hint}") from exc
    if csv:
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", max_rows):
            print(df.to_string(index=False, max_rows=max_rows))
    return 0


@commands.command(
    "release", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline release 2022-12-28 AAPL price_spike --reason \"split confirmed by the exchange\"")
def release(
    session: Annotated[str, date_argument("session date YYYY-MM-DD")],
    instrument: Annotated[str, typer.Argument(show_default=False,
                                              help="the instrument's symbol, as in the configuration")],
    rule: Annotated[str, typer.Argument(show_default=False,
                                        help="the rule it failed, as in the quarantine table (e.g. price_spike)")],
    reason: Annotated[str, typer.Option("--reason", show_default=False, help="what the check found")],
    by: Annotated[str | None, typer.Option("--by", show_default=False,
                                           help="who checked it (default: $USER, else cli)")] = None,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Release a quarantined bar after a manual check.

    The release is recorded in the ledger with the reason and who checked; re-run the session
    (trading-pipeline daily --session ...) to take the bar into clean_bars.
    """
    from pipeline.store.ledger import Ledger
    from pipeline.store.warehouse import WAREHOUSE_FILE

    cfg = common.load_config(config, lake)
    ledger = Ledger(common.state_root(cfg, lake) / WAREHOUSE_FILE)
    ledger.init()
    who = by if by is not None else os.environ.get("USER", "cli")
    new = ledger.release_quarantined(session, instrument, rule, reason=reason, released_by=who)
    print(f"{'released' if new else 'already released'}: {instrument} {session} rule {rule}; "
          "re-run the session (trading-pipeline daily --session ...) to take the bar into clean_bars")
    return 0
