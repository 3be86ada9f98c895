"""``orders``: order intents for a session, gated, and sent to the broker only when it is safe.

DESIGN rule 2: orders are sent only for the latest completed session (the latest session with
clean bars), in a single-partition run whose config says ``submit: true`` (the daily schedule and
the ``daily`` CLI set it), and only when ``broker.execution`` is not ``dry_run`` (the default for
the IB broker). Every other run — a backfill, an older partition, a UI materialization without the
flag — records intents only. The order step never retries: a retry of the run re-reconciles with
the broker by orderRef and sends only what is missing.
"""


import dataclasses

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.futures import futures_routes
from assets.markdown import frame_md
from assets.partitions import DailyPartitions, no_session_result, run_sessions
from assets.portfolio import TARGET_POSITIONS
from assets.quality import CLEAN_BARS
from assets.resources import BrokerResource, Settings
from pipeline.execution import (
    OrderPolicy,
    execute_orders,
    record_intents_without_sending,
)
from pipeline.instruments import point_sizes
from pipeline.store.audit import code_version, input_hash


class OrdersConfig(dg.Config):
    submit: bool = Field(
        False,
        description="Send accepted orders to the broker. Honoured only for the latest session in a "
        "single-partition run; otherwise intents are recorded and nothing is sent.",
    )


def submission_allowed(run: pd.DatetimeIndex, latest: pd.Timestamp | None, requested: bool, execution: str) -> tuple[bool, str]:
    """Whether this run may send orders, and why (or why not)."""
    if not requested:
        return False, "submit not requested (run config orders.submit is false): intents recorded only"
    if execution == "dry_run":
        return False, "broker.execution is dry_run: intents recorded only"
    if len(run) != 1:
        return False, f"a backfill of {len(run)} sessions never sends orders: intents recorded only"
    if latest is None or run[0] != latest:
        return False, f"{run[0].date()} is not the latest session ({latest.date() if latest is not None else 'none'}): intents recorded only"
    return True, f"submitting for the latest session {run[0].date()}"


def orders(context: dg.AssetExecutionContext, config: OrdersConfig, settings: Settings, broker: BrokerResource) -> dg.MaterializeResult:
    """Orders that take the broker's positions to the session's target positions: one intent per
    instrument with a deterministic ``orderRef`` (``strategy:session:instrument:seq``), written to
    the ledger before submission, checked by the pre-trade gate (kill switch, paper account, order
    rate, max order quantity and notional, max position, price collar), and sent to the broker
    (paper: simulated fills; ib: TWS / IB Gateway), limit orders with an optional market fallback
    (``broker.market_fallback_after``). Re-running a session sends only the residual (nothing,
    after a success). A dry run of the latest session with ``broker.what_if`` plans against the
    broker's positions and stores IB's what-if margin and commission preview of each intent.
    Futures with roll parameters trade dated contract months: the instrument's trade is split by
    the session's roll state (table ``futures_order_routes`` of ``futures_positions``) into
    orders to the priced month, the forward month or a calendar spread, each with its own
    orderRef ``strategy:session:instrument:contract:seq``; backfills record per-instrument intents."""
    cfg, lake, ledger = settings.config(), settings.lake(), settings.ledger()
    run = run_sessions(context, cfg.calendar)
    if run.empty:  # a holiday or closure: a successful no-op (assets/partitions.py)
        return no_session_result(context, cfg.calendar)
    clean_sessions = lake.sessions(CLEAN_BARS)
    latest = clean_sessions[-1] if len(clean_sessions) else None
    submit, why = submission_allowed(run, latest, config.submit, cfg.broker.effective_execution)
    context.log.info(why)
    targets = lake.read_wide(TARGET_POSITIONS, "target", cfg.symbols, end=run[-1])
    prices = lake.read_wide(TARGET_POSITIONS, "price", cfg.symbols, end=run[-1])
    point_size = point_sizes(cfg.instruments).to_dict()
    missing = run.difference(targets.index)
    left_out = missing.difference(clean_sessions)  # no instrument has a clean bar (all flagged or missing)
    if len(missing.difference(left_out)):
        raise dg.Failure(f"orders: no target positions for {missing.difference(left_out)[0].date()}: "
                         "materialize target_positions first")
    if len(left_out):
        context.log.warning(f"orders: no instrument has a clean bar on {', '.join(str(d.date()) for d in left_out[:5])}"
                            f"{' ...' if len(left_out) > 5 else ''}: every position held, nothing to record there")
        run = run.difference(left_out)
        if run.empty:
            return dg.MaterializeResult(metadata={"rows_written": 0, "note": "every instrument left out of the "
                                                  "run's sessions (no clean bar): positions held, no intent"})
    # A dry run of the latest session with broker.what_if: intents against the broker's positions,
    # each with IB's what-if margin and commission preview; nothing is sent.
    preview = (
        not submit and config.submit and cfg.broker.what_if and cfg.broker.effective_execution == "dry_run"
        and len(run) == 1 and latest is not None and run[0] == latest
    )
    if preview:
        why += "; what-if preview of each intent against the broker's positions"
        context.log.info(why)
    if submit or preview:
        session = run[-1]
        # futures with roll parameters trade dated months, routed by the session's roll state
        routes = futures_routes(lake, cfg, session)
        policy = OrderPolicy(
            order_type=cfg.broker.order_type, limit_offset=cfg.broker.limit_offset,
            market_fallback_after=cfg.broker.market_fallback_after, what_if=preview,
            live=cfg.broker.effective_execution == "live" and cfg.broker.live_enabled,
            code_version=code_version(), input_hash=input_hash(targets.loc[session], prices.loc[session]),
        )
        with broker.broker() as connected:
            if submit:  # the account orders go to (a dry run sends none: no paper-account rule)
                policy = dataclasses.replace(policy, account=getattr(connected, "account", None))
            report = execute_orders(
                targets.loc[session].dropna(), prices.loc[session], session,
                ledger=ledger, broker=connected, limits=cfg.risk, point_sizes=point_size,
                strategy=cfg.broker.strategy, submit=submit, run_id=context.run.run_id, policy=policy,
                futures_routes=routes,
            )
        counts, last = report.counts, report.intents
    else:
        # Backfills, older partitions, dry runs: the trades the system would have made, recorded.
        last = record_intents_without_sending(
            targets, prices, run, ledger=ledger, limits=cfg.risk, point_sizes=point_size,
            strategy=cfg.broker.strategy, run_id=context.run.run_id,
        )
        counts = {"recorded": len(last), "denied": int((last["status"] == "DENIED").sum()), "sent": 0}
        last = last[last["session"] == run[-1]]
    columns = ["order_ref", "side", "quantity", "reference_price", "verdict", "deny_reason", "status"]
    if preview:
        columns += ["what_if_init_margin", "what_if_commission"]
    shown = last[columns] if len(last) else last
    return dg.MaterializeResult(metadata={
        "submitted": submit,
        "why": why,
        # the kill switch as read by this run, stamped: the UI shows a run's copy, not the live state
        # (trading-pipeline status reads it now)
        "trading_state": f"{ledger.trading_state().value} (read at {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M:%S} UTC "
                         "by this run; trading-pipeline status shows the current state)",
        **{k: int(v) for k, v in counts.items()},
        "orders": dg.MetadataValue.md(frame_md(shown, limit=50)),
    })


def build(daily: DailyPartitions, deps: tuple[str, ...] = ()) -> list[dg.AssetsDefinition]:
    """The session-partitioned assets of this module, on the partitions of the configuration;
    ``deps``: more assets ``orders`` waits for (``futures_positions``, whose blocking expiry guard
    then stops it)."""
    return [
        daily.asset(orders, deps=[TARGET_POSITIONS, CLEAN_BARS, *deps], group_name="execution",
                    kinds=("python", "duckdb")),
    ]
