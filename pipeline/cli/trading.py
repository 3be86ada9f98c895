"""The trading controls: ``kill-switch`` (show or set the trading state) and ``cancel-orders`` (at the broker)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from pipeline.cli import common
from pipeline.cli.options import Config, Lake, date_argument

__all__ = ["cancel_orders", "commands", "kill_switch"]

commands = typer.Typer(rich_markup_mode="markdown")
PANEL = "Trading controls"


@commands.command(
    "kill-switch", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline kill-switch HALTED --reason \"broker incident\"")
def kill_switch(
    state: Annotated[Literal["ACTIVE", "REDUCING", "HALTED"] | None, typer.Argument(
        show_default=False,
        help="the new state; without it, print the current one")] = None,
    reason: Annotated[str | None, typer.Option("--reason", show_default=False,
                                               help="why, kept in the trading state log")] = None,
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Show or set the trading state.

    ACTIVE passes every order to the pre-trade limit checks; REDUCING only orders that reduce a
    position without crossing zero; HALTED no new order at all (working orders stay at the broker:
    cancel them with cancel-orders). Every change is logged in the ledger with its reason.
    """
    from pipeline.store.ledger import Ledger
    from pipeline.store.warehouse import WAREHOUSE_FILE
    from pipeline.trading import TradingState

    cfg = common.load_config(config, lake)
    ledger = Ledger(common.state_root(cfg, lake) / WAREHOUSE_FILE)
    ledger.init()
    if state:
        ledger.set_trading_state(TradingState(state), reason=reason or "set from the CLI", changed_by="cli")
    print(f"trading state: {ledger.trading_state().value}")
    return 0


@commands.command(
    "cancel-orders", rich_help_panel=PANEL,
    epilog="Example: trading-pipeline cancel-orders 2022-12-28")
def cancel_orders(
    session: Annotated[str, date_argument("session date YYYY-MM-DD of the orders")],
    config: Config = None,
    lake: Lake = None,
) -> int:
    """Cancel the working orders of a session at the broker (allowed when HALTED).

    A cancel only removes risk, so it is allowed in every trading state: with kill-switch HALTED
    it is the kill functionality of FIA 2015 guide 1.11 / MiFID II RTS 6 Art. 12 (no new orders,
    the working ones cancelled). Each broker answer is recorded in the ledger (order_intents,
    order_events).
    """
    from pipeline.execution import cancel_orders as cancel

    cfg = common.load_config(config, lake)
    ledger = common.ledger(cfg, lake)
    with common.broker(cfg, ledger) as broker:
        after = cancel(session, ledger=ledger, broker=broker, run_id="cli-cancel-orders")
    sent = after[after["mode"] == "submit"]
    for r in sent.itertuples(index=False):
        print(f"{r.order_ref}: {r.status}")
    if sent.empty:
        print(f"no submitted orders for {session}")
    return 0
