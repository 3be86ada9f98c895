"""From target positions to orders, exactly once (DESIGN rule 3; reliability.md §2).

Every order carries a deterministic reference ``strategy:session:instrument:seq`` (IB's
``orderRef``), is written to the ledger before it is sent, and passes the pre-trade gate. A run
first reconciles the session's unfinished intents with the broker, then orders only the
residual ``target - position - working`` (pysystemtrade's netting of new targets against
unfilled orders, ``sysexecution/order_stacks/instrument_order_stack.py``), so a re-run or a
retry after a crash never sends an order twice.

This module is the order run itself (:func:`execute_orders`): lock, circuit breaker,
reconciliation, planning, gating, writing, sending and market fallback, in that order; each
step's work lives in its own module of :mod:`pipeline.execution`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.adapters.alerts import notify
from pipeline.config import RiskLimits
from pipeline.execution.broker_io import (
    broker_contract_positions,
    intent_price,
    preview_intents,
    submit_intent,
)
from pipeline.execution.cancel import cancel_resting_spreads
from pipeline.execution.context import SubmitRun
from pipeline.execution.fallback import complete_fallbacks, market_fallback
from pipeline.execution.gate import daily_loss_breached
from pipeline.execution.intents import (
    as_instrument_series,
    clip_plan,
    plan_orders,
    unchanged_intents,
)
from pipeline.execution.lock import order_run_lock
from pipeline.execution.pacing import OrderPacer, paced_rate, paces
from pipeline.execution.policy import OrderPolicy
from pipeline.execution.positions import reconcile_positions
from pipeline.execution.reconcile import reconcile_open_intents
from pipeline.execution.report import ExecutionReport
from pipeline.execution.roll_routing import route_futures_orders
from pipeline.execution.run_gate import (
    GateContext,
    gate_plan,
    rejected_in_session,
    sent_in_session,
)
from pipeline.store.ledger import OPEN_STATUSES, Ledger
from pipeline.trading import Broker, OrderError, OrderIntent, TradingState, session_day


def execute_orders(
    targets: pd.Series,
    reference_prices: pd.Series,
    session: Any,
    *,
    ledger: Ledger,
    broker: Broker | None,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    strategy: str,
    submit: bool,
    run_id: str | None,
    assumed_positions: pd.Series | None = None,
    policy: OrderPolicy | None = None,
    futures_routes: pd.DataFrame | None = None,
) -> ExecutionReport:
    """Take the positions of one session to their targets, exactly once.

    Flow (DESIGN rule 3; reliability.md §2):

    0. ``submit=True``: take the strategy's order-run lock (:func:`order_run_lock`; a second
       concurrent run fails at once with :class:`OrderRunLocked`, sending nothing), and trip
       the daily-loss circuit breaker if the broker reports a loss beyond
       ``limits.max_daily_loss`` (HALTED is written to the ledger's kill-switch log).
    1. Reconcile (``submit=True`` only): every intent of ``session`` in mode ``submit`` still
       open (INTENT, SUBMITTED, ACKNOWLEDGED, PARTIALLY_FILLED; e.g. after a crash between
       ``placeOrder`` and the ledger update) is looked up at the broker by order_ref and
       settled (see :func:`reconcile_open_intents`): adopted, left working, or re-sent under the SAME
       order_ref when the broker never got it.
    2. Read broker positions and working orders; a :class:`BrokerError` propagates and stops
       the run (fail closed: nothing is planned from an unknown position). Reconcile the
       positions with the ledger's (:func:`pipeline.execution.positions.reconcile_positions`):
       each difference is a position break, recorded and alerted, and its instrument's order is
       denied (``position_break``); an empty answer while positions are expected stops the run.
    3. Plan the residual ``target - position - working`` (:func:`plan_orders`); with an
       ``LMT`` policy each order gets its limit price. Futures instruments in
       ``futures_routes`` trade dated contracts: their trade is split by roll state into
       contract orders (:func:`pipeline.execution.roll_routing.route_futures_orders`), each with
       its own order_ref naming the contract; the part the roll state does not allow is
       recorded DENIED.
    4. Gate each order (:func:`pipeline.execution.gate.pre_trade_check`, plus ``rejected_earlier``: an
       instrument whose order the broker rejected this session is not retried), then write
       every intent in one transaction BEFORE any submission, with its verdict: ACCEPTED
       orders as INTENT (``submit``) or RECORDED (``record_only``), denials as DENIED with the
       reason (and, in submit runs, an alert ``order_denied``).
    5. ``submit=True``: send the accepted intents, paced under the order rate
       (:mod:`pipeline.execution.pacing`: at most 90% of ``limits.max_orders_per_window`` per
       ``order_window_seconds`` when that window is short, and no faster than the broker's
       ``max_order_rate``), and record each broker answer (fills with
       their execution ids and commissions, permId, status: ACKNOWLEDGED, PARTIALLY_FILLED,
       FILLED, CANCELLED or REJECTED, the latter alerted). A BrokerError on submit leaves the
       intent open, adds an alert ``broker_error`` and propagates; the next run reconciles
       it. ``submit=False`` (a backfill or a dry run): nothing is sent; with a broker and
       ``policy.what_if``, each accepted intent gets the broker's what-if margin and commission
       preview (``Ledger.record_what_if``; a failed preview is alerted, the run goes on).
    6. Market fallback (``submit=True`` and ``policy.market_fallback_after`` set): see below.

    Market fallback. Limit orders of the session still working after
    ``market_fallback_after`` seconds (counted from this run's submissions; a limit order
    found working by a later run falls back at once) are replaced: (a) the limit intent's
    ``fallback_at`` is written to the ledger, (b) the order is cancelled at the broker and its
    final state (fills included) recorded, (c) its unfilled residual ``quantity -
    filled_quantity`` becomes a new MKT intent with the next seq of (session, instrument), its
    own order_ref and ``parent_ref`` = the limit order's, gated and written before it is
    sent. Step 1 of every submit run also completes any fallback that (a) started but whose
    (c) was never written (a crash between the cancel and the market order), so each limit
    order gets at most one market fallback; a rejected or fully filled limit order gets none.

    Idempotency. Submit runs: the residual is against the broker's position, so a re-run
    after success plans nothing. Record-only runs never change a position, so instead a
    planned order is *unchanged* — not written again — when the latest intent of the same
    (session, instrument) in the same mode did not trade (status RECORDED or DENIED) and has
    the same target position, quantity, verdict and denial reason. The same rule keeps a
    re-run of a submit run that was denied (e.g. while HALTED) from piling up identical
    denials. A changed target (or a changed verdict) records a new intent with the next seq.

    Parameters
    ----------
    targets : Series
        Index instrument; target positions for ``session`` in signed units (NaN: no order).
    reference_prices : Series
        Index instrument; price points; valued by the gate and used as the paper fill price.
    session : date-like
        The session the orders are for.
    ledger : Ledger
        The initialised ledger.
    broker : Broker or None
        Required when ``submit``. In a record-only run it is optional: given, the residual is
        against its current positions (a dry run of today's orders); None, against
        ``assumed_positions`` (a backfill).
    limits : RiskLimits
        Pre-trade limits.
    point_sizes : dict[str, float]
        Currency per price point per unit, per instrument (missing: the gate denies).
    strategy : str
        First field of each order_ref.
    submit : bool
        True to send orders (only for the latest session, DESIGN rule 2); False records only.
    run_id : str or None
        The Dagster run id, stored on each new intent and broker event.
    assumed_positions : Series, optional
        Record-only runs without a broker: positions to net against (e.g. the previous
        session's targets); default flat. Ignored when a broker is given.
    policy : OrderPolicy, optional
        Order type, limit offset, account and audit fields; default market orders.
    futures_routes : DataFrame, optional
        Index instrument: the futures instruments with roll parameters and, for the session,
        their roll state, the priced and forward contracts the order path trades and their
        prices (:data:`pipeline.futures.roll_orders.ROUTE_COLUMNS`, from
        :func:`pipeline.futures.roll_orders.order_contracts`). Positions and breaks are then
        reconciled per contract. None (the default): every order is per instrument, as before.

    Returns
    -------
    ExecutionReport

    Raises
    ------
    BrokerError
        The broker could not report positions / working orders / fills, or a submit failed.
    OrderRunLocked
        Another submit run of the strategy is in progress.
    OrderError
        ``submit`` without a broker, or bad inputs (see :func:`plan_orders`).
    LedgerError
        The ledger cannot be read or written (e.g. locked by another process).

    Notes
    -----
    The ledger file stays open (``Ledger.hold``) for the run, so other processes wait for the
    write lock until it returns.
    """
    if submit and broker is None:
        raise OrderError("execute_orders: submit=True needs a broker (or run with submit=False)")
    kwargs = dict(
        ledger=ledger, broker=broker, limits=limits, point_sizes=point_sizes, strategy=strategy, submit=submit,
        run_id=run_id, assumed_positions=assumed_positions, policy=policy or OrderPolicy(),
        futures_routes=futures_routes,
    )
    if not submit:
        with ledger.hold():
            return _execute_orders(targets, reference_prices, session_day(session), **kwargs)
    with order_run_lock(ledger, strategy), ledger.hold():  # one open of the DuckDB file for the whole run
        return _execute_orders(targets, reference_prices, session_day(session), **kwargs)


def _in_priced(positions: pd.Series, routes: pd.DataFrame | None) -> pd.Series:
    """Assumed per-instrument positions (a record-only run without a broker) per (instrument,
    contract): a routed future's in its priced contract, anything else in its own symbol."""
    if positions.empty:
        return pd.Series(dtype=float)
    contract = positions.index.map(lambda i: routes["priced_contract"].get(i) if routes is not None else None)
    contract = pd.Index(contract, dtype=object).where(pd.notna(contract), positions.index)
    index = pd.MultiIndex.from_arrays([positions.index.astype(str), contract.astype(str)], names=["instrument", "contract"])
    return pd.Series(positions.to_numpy(dtype=float), index=index)


def _limit_prices(plan: pd.DataFrame, policy: OrderPolicy) -> np.ndarray:
    """Limit prices of the plan (NaN for market orders): outrights from their reference price; a
    calendar spread at its price plus ``limit_offset x`` the priced leg's price (a spread's price is
    near zero, so an offset relative to it would mean nothing)."""
    qty, ref = plan["quantity"].to_numpy(float), plan["reference_price"].to_numpy(float)
    prices = policy.limit_prices(qty, ref)
    if "spread_contract" not in plan.columns or policy.order_type != "LMT":
        return prices
    spread = plan["spread_contract"].notna().to_numpy()
    leg = plan["contract_price"].to_numpy(float)
    return np.where(spread, ref + np.sign(qty) * policy.limit_offset * np.abs(leg), prices)


def _circuit_breaker(ledger: Ledger, broker: Broker, limits: RiskLimits, state: TradingState) -> TradingState:
    """HALT (in the ledger) when the broker's daily P&L is beyond the loss limit."""
    daily_pnl = getattr(broker, "daily_pnl", None)
    if limits.max_daily_loss is None or daily_pnl is None or state is TradingState.HALTED:
        return state
    why = daily_loss_breached(daily_pnl(), limits)
    if why is None:
        return state
    ledger.set_trading_state(TradingState.HALTED, why, "circuit_breaker")
    notify(ledger, "circuit_breaker", "ERROR", "trading_state", f"trading HALTED: {why}",
           f"circuit_breaker:{pd.Timestamp.now(tz='UTC').date()}")
    return TradingState.HALTED


def _deny_at_send(ledger: Ledger, intent: OrderIntent, in_window: int, limits: RiskLimits,
                  counts: dict[str, int]) -> None:
    """The order-rate guard at send time: the pacer keeps under it, so only a runaway loop gets here."""
    reason = (f"order_rate: {in_window} orders within {limits.order_window_seconds:g} s >= "
              f"{limits.max_orders_per_window} at send time (runaway guard; nothing sent)")
    ledger.update_status(intent.order_ref, "DENIED", verdict="DENIED", deny_reason=reason)
    counts["accepted"] -= 1
    counts["denied"] += 1
    notify(ledger, "order_denied", "ERROR", intent.order_ref, f"{intent.order_ref} denied: {reason}",
           f"order_denied:{intent.order_ref}")


def _execute_orders(
    targets: pd.Series,
    reference_prices: pd.Series,
    session: pd.Timestamp,
    *,
    ledger: Ledger,
    broker: Broker | None,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    strategy: str,
    submit: bool,
    run_id: str | None,
    assumed_positions: pd.Series | None,
    policy: OrderPolicy,
    futures_routes: pd.DataFrame | None = None,
) -> ExecutionReport:
    mode = "submit" if submit else "record_only"
    counts = dict.fromkeys(
        ("planned", "unchanged", "recorded", "accepted", "denied", "sent", "filled", "rejected", "reconciled",
         "adopted", "resent", "fallbacks", "previewed"),
        0,
    )
    state = ledger.trading_state()
    prior = ledger.intents(session=session)
    gate = GateContext(state, limits, point_sizes, policy)
    if submit:
        gate.state = state = _circuit_breaker(ledger, broker, limits, state)
        window = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=limits.order_window_seconds)
        # a long window is a budget the gate enforces when planning; a short one is a rate the run
        # paces itself under when sending (pipeline.execution.pacing)
        gate.sent_in_window, gate.throttle = ledger.submitted_since(window), not paces(limits)
        pacer = OrderPacer(paced_rate(limits, getattr(broker, "max_order_rate", None)))
        gate.rejected = rejected_in_session(prior)
        gate.trades_in_session = sent_in_session(prior)
        run = SubmitRun(ledger, broker, gate, reference_prices, counts, run_id, policy)

    # 1. reconcile the session's open intents before anything new is planned
    actions: dict[str, str] = {}
    if submit:
        open_intents = prior[(prior["mode"] == "submit") & prior["status"].isin(OPEN_STATUSES)]
        actions = reconcile_open_intents(open_intents, run)
        actions.update(complete_fallbacks(session, run))
        if actions:
            prior = ledger.intents(session=session)
            gate.rejected = rejected_in_session(prior)
            gate.trades_in_session = sent_in_session(prior)

    # 1b. a roll escalated to Force_Outright: its resting spread goes before the outrights are planned
    if submit and futures_routes is not None and cancel_resting_spreads(
            futures_routes, ledger=ledger, broker=broker, run_id=run_id, counts=counts):
        prior = ledger.intents(session=session)

    # 2. positions: the broker's, failing closed; or the assumed ones of a record-only run
    if broker is not None:
        held, held_working = broker_contract_positions(broker)
        positions = held.groupby(level=0).sum() if len(held) else pd.Series(dtype=float)
        working = held_working.groupby(level=0).sum() if len(held_working) else pd.Series(dtype=float)
        gate.breaks = reconcile_positions(ledger, broker.name, held, session, run_id).blocked()
    else:
        positions, working = as_instrument_series(assumed_positions, "assumed_positions"), pd.Series(dtype=float)
        held, held_working = _in_priced(positions, futures_routes), pd.Series(dtype=float)

    # 3. plan the residual (routed to dated contracts by roll state), 4. gate and write before sending
    plan = clip_plan(plan_orders(targets, positions, working, reference_prices, session, strategy, prior), limits)
    if futures_routes is not None:
        plan = route_futures_orders(plan, as_instrument_series(targets, "targets"), futures_routes, held,
                                    held_working, session, strategy, prior)
    counts["planned"] = len(plan)
    plan["order_type"] = policy.order_type
    plan["limit_price"] = _limit_prices(plan, policy)
    verdicts = gate_plan(plan, state, limits, point_sizes, gate)
    plan["verdict"] = pd.array(["ACCEPTED" if v.accepted else "DENIED" for v in verdicts], dtype="str")
    plan["deny_reason"] = pd.array([v.reason for v in verdicts], dtype="str")
    if "route_denial" in plan.columns:  # the part of a trade the roll state does not allow: recorded, never sent
        refused = plan["route_denial"].notna().to_numpy()
        plan.loc[refused, "verdict"] = "DENIED"
        plan.loc[refused, "deny_reason"] = plan.loc[refused, "route_denial"]
        plan = plan.drop(columns="route_denial")
    unchanged = unchanged_intents(plan, prior, mode)
    counts["unchanged"] = int(unchanged.sum())
    plan = plan[~unchanged].reset_index(drop=True)
    accepted = (plan["verdict"] == "ACCEPTED").to_numpy()
    plan["status"] = np.where(accepted, "INTENT" if submit else "RECORDED", "DENIED")
    plan["mode"] = mode
    plan["run_id"] = run_id
    plan["account"] = policy.account
    plan["code_version"] = policy.code_version
    plan["input_hash"] = policy.input_hash
    ledger.record_intents(plan)
    counts.update(recorded=len(plan), accepted=int(accepted.sum()), denied=int((~accepted).sum()))
    actions.update(dict.fromkeys(plan["order_ref"], "new"))
    if submit:
        for r in plan[~accepted].itertuples(index=False):
            notify(
                ledger, "order_denied", "WARN", r.order_ref, f"{r.order_ref} denied by the pre-trade gate: {r.deny_reason}",
                f"order_denied:{r.order_ref}",
            )

    if not submit and broker is not None and policy.what_if:
        counts["previewed"] = preview_intents(plan[accepted], broker, ledger)

    # 5. send the accepted intents (already in the ledger); 6. market fallback of working limits
    if submit:
        for _, row in plan[accepted].iterrows():
            intent = OrderIntent.from_row(row)
            pacer.wait()
            in_window = pacer.sent_within(limits.order_window_seconds)
            if paces(limits) and in_window >= limits.max_orders_per_window:
                _deny_at_send(ledger, intent, in_window, limits, counts)
                continue
            price = intent_price(intent, reference_prices)
            pacer.sent()
            submit_intent(broker, ledger, intent, price, counts, run_id)
        if policy.market_fallback_after is not None:
            sent_limits = bool(accepted.any()) and policy.order_type == "LMT"
            actions.update(market_fallback(session, policy.market_fallback_after if sent_limits else 0.0, run))

    report = ledger.intents(session=session)
    report = report[report["order_ref"].isin(list(actions))].reset_index(drop=True)
    report["action"] = report["order_ref"].map(actions)
    return ExecutionReport(session=session, mode=mode, trading_state=state, intents=report, counts=counts)
