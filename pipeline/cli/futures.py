"""``futures``: back-adjust pysystemtrade multiple prices (``futures adjust``) and show roll
calendars, planned from ``rollconfig.csv`` and actual from multiple prices (``futures roll-calendar``)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import date_option

__all__ = ["adjust", "commands", "roll_calendar"]

PANEL = "Data"
ROLLCONFIG_ENV = "TRADING_PIPELINE_ROLLCONFIG"

commands = typer.Typer(rich_markup_mode="markdown")
futures_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Futures price series: Panama-adjusted prices from multiple prices, roll calendars.",
    epilog="Example: trading-pipeline futures adjust CORN.csv --out CORN_adjusted.csv "
    "(then: trading-pipeline futures roll-calendar CORN --rollconfig rollconfig.csv)",
)
commands.add_typer(futures_app, name="futures", rich_help_panel=PANEL)


@futures_app.callback(invoke_without_command=True)
def _group(ctx: typer.Context) -> int:
    """Futures price series: Panama-adjusted prices from multiple prices, roll calendars."""
    if (
        ctx.invoked_subcommand is None
    ):  # ``trading-pipeline futures`` alone: its help, not an error
        print(ctx.get_help())
    return 0


def _data_error(exc: Exception) -> common.CliError:
    return common.CliError(f"error: {common.one_line(exc)}", 1)


@futures_app.command(
    "adjust",
    epilog="Example: trading-pipeline futures adjust multiple_prices_csv/CORN.csv --out CORN_adjusted.csv",
)
def adjust(
    multiple: Annotated[
        Path,
        typer.Argument(
            metavar="MULTIPLE.csv",
            show_default=False,
            help="pysystemtrade multiple prices: DATETIME, PRICE, PRICE_CONTRACT, FORWARD, FORWARD_CONTRACT (CARRY columns optional)",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="ADJUSTED.csv",
            show_default=False,
            help="where to write the adjusted prices (DATETIME,price)",
        ),
    ],
    missing_gap: Annotated[
        str,
        typer.Option(
            "--missing-gap",
            metavar="raise|flat",
            help="a roll whose old contract never has both PRICE and FORWARD: fail (raise) or stitch it flat",
        ),
    ] = "raise",
) -> int:
    """Back-adjust a multiple-prices CSV by the Panama method into DATETIME,price.

    Every earlier price is shifted by each roll's gap (FORWARD - PRICE on the row before the new
    contract's first row), so the last price is the current contract's and every daily change is
    the priced contract's. Rows with a blank PRICE are left out of the output.
    """
    from pipeline.futures import (
        FuturesDataError,
        panama_stitch,
        read_multiple_prices_csv,
        roll_gaps,
    )

    if missing_gap not in ("raise", "flat"):
        raise common.CliError(
            f"error: --missing-gap must be raise or flat, not {missing_gap!r}", 2
        )
    try:
        prices = read_multiple_prices_csv(multiple)
        gaps = roll_gaps(prices, missing_gap=missing_gap, source=str(multiple))
        adjusted = panama_stitch(prices, missing_gap=missing_gap, source=str(multiple))
    except FuturesDataError as exc:
        raise _data_error(exc) from None
    written = adjusted.dropna()
    if written.empty:
        raise common.CliError(
            f"error: {multiple}: every PRICE is blank; nothing to write", 1
        )
    try:
        written.rename_axis("DATETIME").to_frame("price").to_csv(out)
    except OSError as exc:
        raise common.CliError(
            f"error: cannot write {out}: {exc.strerror or exc}", 1
        ) from None
    methods = gaps["method"].value_counts()
    fallback = ", ".join(
        f"{n} {m.replace('_', ' ')}" for m, n in methods.items() if m != "previous_row"
    )
    print(
        f"{multiple}: {len(prices)} rows, {len(gaps)} rolls"
        + (f" (gap measured on the previous row except {fallback})" if fallback else "")
        + f"; {len(adjusted) - len(written)} rows without PRICE left out"
    )
    print(
        f"adjusted {written.index[0]} .. {written.index[-1]}: last {written.iloc[-1]:,.6g} "
        f"(= PRICE of {gaps['next_contract'].iloc[-1] if len(gaps) else 'the only contract'}); wrote {out}"
    )
    return 0


@futures_app.command(
    "roll-calendar",
    epilog="Example: trading-pipeline futures roll-calendar CORN --rollconfig csvconfig/rollconfig.csv "
    "--multiple multiple_prices_csv/CORN.csv",
)
def roll_calendar(
    instrument: Annotated[
        str,
        typer.Argument(
            show_default=False, help="instrument code as in rollconfig.csv, e.g. CORN"
        ),
    ],
    rollconfig: Annotated[
        Path | None,
        typer.Option(
            "--rollconfig",
            metavar="PATH",
            show_default=False,
            help=f"pysystemtrade's csvconfig/rollconfig.csv (default: ${ROLLCONFIG_ENV})",
        ),
    ] = None,
    start: Annotated[
        str | None,
        date_option(
            "--start",
            "first roll date shown (default: the multiple prices' first date, else a year ago)",
        ),
    ] = None,
    end: Annotated[
        str | None,
        date_option(
            "--end",
            "last roll date shown (default: the multiple prices' last date, else a year ahead)",
        ),
    ] = None,
    multiple: Annotated[
        Path | None,
        typer.Option(
            "--multiple",
            metavar="CSV",
            show_default=False,
            help="the instrument's multiple prices (CSV, or a long Parquet table with an instrument column): "
            "also show the actual rolls and how they differ from the plan",
        ),
    ] = None,
) -> int:
    """Print INSTRUMENT's roll calendar planned from its roll parameters; with --multiple also the actual rolls.

    Planned roll: expiry (day 1 of the contract month + ExpiryOffset days) + RollOffsetDays, on
    business days; the roll date is the first session in the next contract. Actual rolls are the
    dates where PRICE_CONTRACT changes; the difference is counted in business days (> 0: the
    actual roll came later than planned).
    """
    import pandas as pd

    from pipeline.futures import (
        FuturesDataError,
        actual_roll_calendar,
        compare_roll_calendars,
        read_multiple_prices,
        roll_parameters,
        summarise_comparison,
    )
    from pipeline.futures import roll_calendar as plan_rolls

    path = rollconfig or (
        Path(os.environ[ROLLCONFIG_ENV]) if os.environ.get(ROLLCONFIG_ENV) else None
    )
    if path is None:
        raise common.CliError(
            f"error: no roll configuration: pass --rollconfig PATH (pysystemtrade's "
            f"csvconfig/rollconfig.csv) or set ${ROLLCONFIG_ENV}",
            2,
        )
    try:
        params = roll_parameters(path, instrument)
        prices = (
            read_multiple_prices(multiple, instrument) if multiple is not None else None
        )
    except FuturesDataError as exc:
        raise _data_error(exc) from None
    today = pd.Timestamp(dt.date.today())
    first = (
        pd.Timestamp(start)
        if start
        else (
            prices.index[0].normalize()
            if prices is not None
            else today - pd.Timedelta(days=365)
        )
    )
    last = (
        pd.Timestamp(end)
        if end
        else (
            prices.index[-1].normalize()
            if prices is not None
            else today + pd.Timedelta(days=365)
        )
    )
    if last < first:
        raise common.CliError(
            f"error: --end {last.date()} is before --start {first.date()}", 2
        )
    # plan a margin either side, so that an actual roll near the edges finds its planned one
    margin = pd.Timedelta(days=400)
    planned_all = plan_rolls(params, first - margin, last + margin)
    planned = planned_all.loc[first:last]
    print(
        f"{instrument}: hold {params.hold_roll_cycle}, priced {params.priced_roll_cycle}, roll "
        f"{params.roll_offset_days:+d} days from expiry, expiry = day 1 + {params.expiry_offset} days, "
        f"carry offset {params.carry_offset:+d} ({path})"
    )
    shown = planned.assign(
        current_expiry=planned["current_expiry"].dt.date,
        target_date=planned["target_date"].dt.date,
    )
    shown.index = shown.index.date
    common.print_frame(
        shown, f"Planned rolls {first.date()} .. {last.date()}: {len(planned)}"
    )
    if prices is None:
        return 0
    try:
        actual = actual_roll_calendar(prices, source=str(multiple))
    except FuturesDataError as exc:
        raise _data_error(exc) from None
    actual = actual.loc[
        first : last + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    ]
    comparison = compare_roll_calendars(planned_all, actual)
    common.print_frame(
        actual.set_axis(actual.index.date), f"Actual rolls in {multiple}: {len(actual)}"
    )
    shown = comparison.assign(planned_date=comparison["planned_date"].dt.date)
    shown.index = shown.index.date
    common.print_frame(
        shown,
        "Actual against planned (difference_days: business days, > 0 = actual later)",
    )
    s = summarise_comparison(comparison)
    print(
        f"\n{int(s['rolls'])} actual rolls; {s['same_contracts']:.0%} between the planned contracts; "
        f"roll date difference median {s['median_days']:+.0f}, |median| {s['median_abs_days']:.0f}, "
        f"max |difference| {s['max_abs_days']:.0f} business days"
    )
    return 0
