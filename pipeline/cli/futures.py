"""``futures``: back-adjust pysystemtrade multiple prices (``futures adjust``), show roll calendars,
planned from ``rollconfig.csv`` and actual from multiple prices (``futures roll-calendar``), set an
instrument's roll state by hand (``futures roll``) and show each futures instrument's contracts, roll
state, roll and close-out dates and positions with the expiry guard (``futures status``)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake, date_option

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import PipelineConfig

__all__ = ["adjust", "commands", "roll", "roll_calendar", "status", "status_table"]

PANEL = "Data"
ROLLCONFIG_ENV = "TRADING_PIPELINE_ROLLCONFIG"

commands = typer.Typer(rich_markup_mode="markdown")
futures_app = typer.Typer(
    rich_markup_mode="markdown",
    help="Futures: Panama-adjusted prices, roll calendars, roll states and the expiry guard.",
    epilog="Example: trading-pipeline futures adjust CORN.csv --out CORN_adjusted.csv "
    "(then: trading-pipeline futures roll-calendar CORN --rollconfig rollconfig.csv; trading-pipeline futures status)",
)
commands.add_typer(futures_app, name="futures", rich_help_panel=PANEL)


@futures_app.callback(invoke_without_command=True)
def _group(ctx: typer.Context) -> int:
    """Futures: Panama-adjusted prices, roll calendars, roll states and the expiry guard."""
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


def _latest_session(code: str, session: str | None) -> pd.Timestamp:
    """``session`` as a Timestamp, else the latest session of exchange ``code`` up to today."""
    import pandas as pd

    from pipeline.calendar import sessions

    if session:
        return pd.Timestamp(session)
    today = pd.Timestamp(dt.date.today())
    recent = sessions(today - pd.Timedelta(days=14), today, code)
    return recent[-1] if len(recent) else today


def _futures_instrument(cfg: PipelineConfig, instrument: str):
    """The configured futures instrument ``instrument``; a one-line CliError if unknown or not a future."""
    found = {i.symbol: i for i in cfg.instruments}
    futures = [i.symbol for i in cfg.instruments if i.sec_type == "FUT"]
    if instrument not in found:
        raise common.CliError(
            f"error: unknown instrument {instrument!r}; the configuration's futures: {', '.join(futures) or 'none'}", 2
        )
    if found[instrument].sec_type != "FUT":
        raise common.CliError(
            f"error: {instrument} is not a futures instrument (sec_type {found[instrument].sec_type}); roll states "
            f"are for futures: {', '.join(futures) or 'none in the configuration'}",
            2,
        )
    return found[instrument]


@futures_app.command(
    "roll",
    epilog='Example: trading-pipeline futures roll CORN Passive --reason "forward is the liquid contract now"',
)
def roll(
    instrument: Annotated[
        str, typer.Argument(show_default=False, help="a futures instrument of the configuration, e.g. CORN")
    ],
    state: Annotated[
        str,
        typer.Argument(
            show_default=False,
            help="No_Roll, Passive, Force, Force_Outright, Close, No_Open or Roll_Adjusted (any case)",
        ),
    ],
    reason: Annotated[str, typer.Option("--reason", show_default=False, help="why the state is set")],
    by: Annotated[
        str | None, typer.Option("--by", show_default=False, help="who sets it (default: $USER, else cli)")
    ] = None,
    session: Annotated[
        str | None, date_option("--session", "the session it is set for (default: the latest session up to today)")
    ] = None,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Set INSTRUMENT's roll state by hand; the ledger keeps every change with the reason and who.

    The state says which orders the order path may send: No_Roll (trade the priced contract),
    Passive (reduce the priced contract, open in the forward), Force (roll with a calendar
    spread), Force_Outright (roll with two outright orders), Close (only close the priced
    contract), No_Open (only reduce), Roll_Adjusted (switch the priced contract, re-stitch).
    """
    from pipeline.futures import FuturesDataError, parse_roll_state

    cfg = common.load_config(config, lake)
    inst = _futures_instrument(cfg, instrument)
    try:
        new = parse_roll_state(state)
    except FuturesDataError as exc:
        raise common.CliError(f"error: {common.one_line(exc)}", 2) from None
    if not reason.strip():
        raise common.CliError("error: --reason is empty; say why the roll state changes", 2)
    day = _latest_session(inst.calendar, session)
    ledger = common.ledger(cfg, lake)
    before = ledger.roll_state(instrument)
    who = by if by is not None else os.environ.get("USER", "cli")
    ledger.set_roll_state(instrument, new.value, reason, set_by=who, session=day)
    print(f"{instrument}: roll state {new.value} (was {before}) for session {day.date()}, set by {who}: {reason}")
    print(f"  {new.value}: {new.meaning}")
    return 0


def status_table(cfg: PipelineConfig, session: pd.Timestamp, history: pd.DataFrame, positions: pd.Series) -> pd.DataFrame:
    """One row per futures instrument of ``cfg`` with roll parameters: contracts, state, dates, position, policy.

    Parameters
    ----------
    cfg : PipelineConfig
        The configuration (instruments with ``sec_type: FUT`` and ``rolls``; ``settlement`` for the close-out).
    session : pd.Timestamp
        The session shown.
    history : pd.DataFrame
        The ledger's roll states, oldest first (``Ledger.roll_state_history``); the last row of an
        instrument is its state (No_Roll if it has none).
    positions : pd.Series
        Signed contracts per instrument (the ledger's expected positions: per instrument, not per
        contract, so each is taken as held in the priced contract).

    Returns
    -------
    pd.DataFrame
        Index ``instrument``; columns ``calendar`` (exchange calendar code), ``state``, ``priced``
        and ``forward`` (from the planned roll calendar: the contracts held on ``session``; while
        a roll is under way, i.e. the latest rows are Passive, Force, Force_Outright, Close or
        No_Open, the contracts of the planned roll nearest to the session the first of those rows
        was set for: the ones rolled out of and into), ``roll_date``, ``to_roll`` (sessions),
        ``close_out`` (of the priced contract, NaT without ``settlement``), ``to_close_out``
        (sessions), ``position``, ``policy`` (the state
        :func:`pipeline.futures.roll_states.roll_policy` proposes; empty without a close-out) and
        ``reason``.
    """
    import pandas as pd

    from pipeline.calendar import non_session_weekdays
    from pipeline.futures import (
        RollPolicy,
        instrument_close_outs,
        planned_contracts,
        roll_parameters_of,
        roll_policy,
    )
    from pipeline.futures.roll_states import ROLLING_STATES, nearest_roll

    rolling_names = [s.value for s in ROLLING_STATES]
    rows = history[["instrument", "state", "session"]].reset_index(drop=True)
    rolling = rows["state"].isin(rolling_names)
    # the trailing run of rolling rows of each instrument is the roll under way; its first row started it
    run = (~rolling).astype(int).groupby(rows["instrument"]).cumsum()
    last_run = run.groupby(rows["instrument"]).transform("max")
    started = rows[rolling & (run == last_run)].groupby("instrument")["session"].first()
    state_of = rows.groupby("instrument")["state"].last()
    out, holidays = [], {}
    for inst in (i for i in cfg.instruments if i.sec_type == "FUT" and i.rolls is not None):  # a few instruments
        code = inst.calendar
        if code not in holidays:
            holidays[code] = non_session_weekdays(session - pd.Timedelta(days=800), code)
        state = str(state_of.get(inst.symbol, "No_Roll"))
        start = started.get(inst.symbol) if state in rolling_names else None
        params = roll_parameters_of(inst)
        if start is not None and not pd.isna(start):
            plan = nearest_roll(params, [start], expiries=inst.rolls.expiries, holidays=holidays[code]).iloc[0]
        else:
            plan = planned_contracts(params, [session], expiries=inst.rolls.expiries, holidays=holidays[code]).iloc[0]
        close_out = (instrument_close_outs(inst, [plan["priced_contract"]], holidays[code]).iloc[0]
                     if inst.settlement is not None else pd.NaT)
        out.append({
            "instrument": inst.symbol, "calendar": code, "state": state, "priced": plan["priced_contract"],
            "forward": plan["forward_contract"], "roll_date": plan["roll_date"], "close_out": close_out,
            "position": float(positions.get(inst.symbol, 0.0)), "force_sessions": inst.rolls.force_sessions,
            "outright_after": inst.rolls.outright_after,
        })
    columns = ["calendar", "state", "priced", "forward", "roll_date", "to_roll", "close_out", "to_close_out",
               "position", "policy", "reason"]
    if not out:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="instrument"))
    table = pd.DataFrame(out).set_index("instrument")
    table["to_roll"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["to_close_out"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table["policy"] = ""
    table["reason"] = "no settlement in the configuration: close-out unknown"
    for code, part in table[table["close_out"].notna()].groupby("calendar"):  # one policy call per exchange calendar
        decided = roll_policy(
            part.assign(session=session, priced_position=part["position"], forward_position=0.0, spread_sessions=0),
            RollPolicy(), holidays=holidays[code])
        table.loc[part.index, "to_roll"] = decided["sessions_to_roll"]
        table.loc[part.index, "to_close_out"] = decided["sessions_to_close_out"]
        table.loc[part.index, "policy"] = decided["state"]
        table.loc[part.index, "reason"] = decided["reason"]
    return table[columns]


@futures_app.command("status", epilog="Example: trading-pipeline futures status --session 2023-11-16")
def status(
    session: Annotated[
        str | None, date_option("--session", "the session shown (default: the latest session up to today)")
    ] = None,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Per futures instrument: priced and forward contract, roll state, sessions to the roll and to
    the close-out, position, the state the roll policy proposes, and the expiry guard.

    Contracts come from the planned roll calendar of instruments[].rolls; the close-out date from
    instruments[].settlement (physical: before first notice; cash: the last trading day). The
    expiry guard lists positions within instruments[].rolls.expiry_guard_sessions (default 5)
    sessions of their close-out.
    """
    import pandas as pd

    from pipeline.calendar import non_session_weekdays
    from pipeline.futures import FuturesDataError, expiry_guard
    from pipeline.futures.expiry import BREACH_COLUMNS

    cfg = common.load_config(config, lake)
    futures = [i for i in cfg.instruments if i.sec_type == "FUT"]
    if not futures:
        print("no futures instruments in the configuration (instruments[].sec_type: FUT)")
        return 0
    day = _latest_session(cfg.calendar, session)
    ledger = common.ledger(cfg, lake)
    positions = ledger.expected_positions(cfg.broker.mode)
    try:
        table = status_table(cfg, day, ledger.roll_state_history(), positions)
    except FuturesDataError as exc:
        raise _data_error(exc) from None
    shown = table.drop(columns="calendar").assign(roll_date=table["roll_date"].dt.date,
                                                  close_out=pd.to_datetime(table["close_out"]).dt.date)
    common.print_frame(shown, f"Futures on {day.date()}: roll states, contracts and positions ({cfg.broker.mode})")
    unconfigured = [i.symbol for i in futures if i.rolls is None]
    if unconfigured:
        print(f"\nno roll parameters (instruments[].rolls) for {', '.join(unconfigured)}: not shown")
    from pipeline.futures.tables import contract_positions_table

    per_contract = contract_positions_table(ledger.expected_contract_positions(cfg.broker.mode),
                                            [i.symbol for i in futures if i.rolls is not None])
    common.print_frame(per_contract.assign(contract=per_contract["contract"].fillna("(unknown)")).set_index("instrument"),
                       f"Positions per contract month in the ledger ({cfg.broker.mode}): two months of one future are "
                       "two positions")
    held = table[table["position"].abs() > 0]
    limits = {i.symbol: i.rolls.expiry_guard_sessions for i in futures if i.rolls is not None}
    guards = [
        expiry_guard(
            part.reset_index()[["instrument", "priced", "position"]].rename(columns={"priced": "contract"}),
            part.reset_index()[["instrument", "priced", "close_out"]].rename(columns={"priced": "contract"}),
            day,
            sessions=limits,
            holidays=non_session_weekdays(day - pd.Timedelta(days=800), code),
        )
        for code, part in held.groupby("calendar")  # one call per exchange calendar
    ]
    guard = pd.concat(guards, ignore_index=True) if guards else pd.DataFrame(columns=list(BREACH_COLUMNS))
    common.print_frame(
        guard.assign(close_out=pd.to_datetime(guard["close_out"]).dt.date).set_index("instrument"),
        f"Expiry guard: contracts held within their limit of sessions of the close-out: {len(guard)}",
    )
    return 0
