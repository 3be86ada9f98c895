"""``positions``: the broker's positions against the ledger's and the targets, and ``positions adopt``
(take the broker's position as the truth after a manual check)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import PipelineConfig
    from pipeline.store.ledger import Ledger

__all__ = ["adopt", "commands", "positions_table", "show"]

PANEL = "Trading controls"
commands = typer.Typer(rich_markup_mode="markdown")
positions_app = typer.Typer(
    rich_markup_mode="markdown",
    help="The broker's positions against the ledger's and the targets; adopt the broker's after a check.",
    epilog="Example: trading-pipeline positions (then: trading-pipeline positions adopt ES --reason \"...\")",
)
commands.add_typer(positions_app, name="positions", rich_help_panel=PANEL)


def positions_table(cfg: PipelineConfig, ledger: Ledger, held: pd.Series, broker_name: str, lake_root: str) -> pd.DataFrame:
    """One row per instrument held, expected or targeted: broker, expected, difference, target and
    the open position break (if any).

    Returns
    -------
    pd.DataFrame
        Index ``instrument``; columns ``contract``, ``broker``, ``expected`` (ledger fills plus
        adopted adjustments), ``difference`` (broker - expected), ``target`` (the latest session's
        target position in the lake, NaN if none), ``target_session``, ``break_since`` (first
        seen of the open break, empty if none). Units are shares / contracts / currency units.
    """
    import pandas as pd

    from pipeline.store.lake import Lake

    expected = ledger.expected_positions(broker_name)
    lake = Lake(lake_root)
    stored = lake.sessions("target_positions")
    last = stored[-1] if len(stored) else None  # only the latest session's rows are read
    latest = (lake.read("target_positions", columns=["instrument", "target"], start=last, end=last).set_index("instrument")
              if last is not None else pd.DataFrame(columns=["target"]))
    names = sorted(set(cfg.symbols) | set(held.index) | set(expected.index))
    table = pd.DataFrame(index=pd.Index(names, name="instrument"))
    table["contract"] = table.index
    table["broker"] = held.reindex(table.index).fillna(0.0)
    table["expected"] = expected.reindex(table.index).fillna(0.0)
    table["difference"] = table["broker"] - table["expected"]
    table["target"] = latest["target"].reindex(table.index).astype(float)
    table["target_session"] = str(last.date()) if last is not None else ""
    breaks = ledger.open_position_breaks(broker_name).set_index("instrument")
    since = breaks["first_seen"].reindex(table.index)
    table["break_since"] = since.map(lambda t: "" if pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d %H:%M UTC"))
    keep = (table[["broker", "expected"]].abs().sum(axis=1) > 0) | table["target"].fillna(0).ne(0) | table["break_since"].ne("")
    return table[keep]


@positions_app.callback(invoke_without_command=True)
def show(
    ctx: typer.Context,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Show the broker's position, the ledger's expected position and the target per instrument.

    The broker is asked now (IB: a read of the account's positions; paper: its fills in the
    ledger). A difference between broker and expected is a position break: the order step sends
    nothing for that instrument until the positions agree again or you adopt the broker's position
    (`positions adopt`) after checking the account.
    """
    if ctx.invoked_subcommand is not None:
        return 0
    cfg = common.load_config(config, lake)
    ledger = common.ledger(cfg, lake)
    with common.broker(cfg, ledger) as broker:
        held = broker.positions()
        name = broker.name
    table = positions_table(cfg, ledger, held, name, common.lake_root(cfg, lake))
    common.print_frame(table, f"Positions at broker {name} against the ledger and the latest targets (units)")
    open_breaks = int(table["break_since"].ne("").sum())
    print(f"\n{open_breaks} open position break(s)" + (": no order is sent for those instruments" if open_breaks else ""))
    return 0


@positions_app.command(
    "adopt", epilog="Example: trading-pipeline positions adopt ES --reason \"manual close at the broker on 2024-01-02\"")
def adopt(
    instrument: Annotated[str, typer.Argument(help="the instrument whose broker position becomes the truth")],
    reason: Annotated[str, typer.Option("--reason", help="what you checked (kept with the adjustment)")],
    by: Annotated[str | None, typer.Option("--by", show_default=False, help="who checked it (default: $USER)")] = None,
    contract: Annotated[str | None, typer.Option(
        "--contract", show_default=False,
        help="the dated contract month of a futures position (YYYYMM), as the break names it")] = None,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Adopt the broker's position of INSTRUMENT (of its month CONTRACT, for a future traded by
    contract month) as the truth, after checking the account.

    Records an adjustment of (broker - expected) in the ledger's position_adjustments with the
    reason and who checked, and resolves the instrument's open position break; the next order step
    trades that instrument again, from the broker's position.
    """
    cfg = common.load_config(config, lake)
    ledger = common.ledger(cfg, lake)
    with common.broker(cfg, ledger) as broker:
        if contract is None:
            held = float(broker.positions().get(instrument, 0.0))
        else:
            from pipeline.execution.broker_io import broker_contract_positions

            held = float(broker_contract_positions(broker)[0].get((instrument, contract), 0.0))
        name = broker.name
    from pipeline.store.ledger import LedgerError

    try:
        adjustment = ledger.adopt_broker_position(name, instrument, held, reason, by or os.environ.get("USER", "cli"),
                                                  contract=contract)
    except LedgerError as exc:
        raise common.CliError(f"error: {exc}", 2) from None
    print(f"{instrument}{' ' + contract if contract else ''}: adopted the broker's position {held:g} (adjustment {adjustment:+g}); "
          "the position break is resolved and the next order step trades it again")
    return 0
