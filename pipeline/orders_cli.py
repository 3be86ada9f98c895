"""``trading-pipeline cancel-orders``: cancel a session's working orders at the broker.

    trading-pipeline cancel-orders SESSION

Allowed in every kill-switch state (a cancel only removes risk): together with
``trading-pipeline kill-switch HALTED`` it is the kill functionality of the FIA 2015 guide
§1.11 / MiFID II RTS 6 Art. 12 — no new orders, and the working ones cancelled. Each broker
answer is recorded in the ledger (``order_intents``, ``order_events``).
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "cmd_cancel_orders"]


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register ``cancel-orders`` on the CLI's subparsers."""
    p = sub.add_parser("cancel-orders", parents=[common],
                       help="cancel the working orders of a session at the broker (allowed when HALTED)")
    p.add_argument("session", help="session date YYYY-MM-DD of the orders")
    p.set_defaults(func=cmd_cancel_orders)


def cmd_cancel_orders(args: argparse.Namespace) -> int:
    from pipeline.broker.paper import PaperBroker
    from pipeline.config import load_config
    from pipeline.ledger import Ledger
    from pipeline.orders import cancel_orders
    from pipeline.storage import lake_root, state_path
    from pipeline.warehouse import WAREHOUSE_FILE

    cfg = load_config(args.config)
    ledger = Ledger(state_path(cfg, lake_root(cfg, args.lake)) / WAREHOUSE_FILE).init()
    if cfg.broker.mode == "ib":
        from pipeline.broker.ib import IBBroker

        broker = IBBroker(cfg.instruments, cfg.broker)
    else:
        broker = PaperBroker(ledger, {i.symbol: i.costs for i in cfg.instruments},
                             {i.symbol: i.point_size for i in cfg.instruments})
    with broker:
        after = cancel_orders(args.session, ledger=ledger, broker=broker, run_id="cli-cancel-orders")
    sent = after[after["mode"] == "submit"]
    for r in sent.itertuples(index=False):
        print(f"{r.order_ref}: {r.status}")
    if sent.empty:
        print(f"no submitted orders for {args.session}")
    return 0
