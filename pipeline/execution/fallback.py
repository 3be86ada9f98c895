"""Market fallback: a limit order still working after ``market_fallback_after`` seconds is
cancelled and its unfilled residual sent as a market order, at most once per limit order
(:func:`pipeline.execution.submit.execute_orders`, "Market fallback")."""

from __future__ import annotations

import pandas as pd

from pipeline.adapters.alerts import notify
from pipeline.execution.broker_io import (
    broker_positions,
    intent_price,
    record_outcome,
    submit_intent,
)
from pipeline.execution.context import SubmitRun
from pipeline.execution.intents import ZERO_QUANTITY
from pipeline.store.ledger import OPEN_STATUSES
from pipeline.trading import BrokerError, OrderIntent, order_ref, session_day


def market_fallback(session: pd.Timestamp, wait: float, run: SubmitRun) -> dict[str, str]:
    """Give the session's working limit orders ``wait`` seconds, then replace what is left of
    each by a market order (steps (a)-(c) of :func:`execute_orders`, "Market fallback")."""
    intents = run.ledger.intents(session=session)
    working = intents[
        (intents["mode"] == "submit") & (intents["order_type"] == "LMT") & intents["status"].isin(OPEN_STATUSES)
    ]
    if working.empty:
        return {}
    waiter = getattr(run.broker, "wait_for_fills", None)
    if waiter is not None:
        for outcome in waiter(list(working["order_ref"]), wait).values():
            record_outcome(run.ledger, outcome, run.run_id, run.counts)
    intents = run.ledger.intents(session=session)
    still = intents[intents["order_ref"].isin(working["order_ref"]) & intents["status"].isin(OPEN_STATUSES)]
    for ref in still["order_ref"]:
        run.ledger.start_fallback(str(ref))  # (a) before the cancel: from here a fallback is owed
    return complete_fallbacks(session, run)


def complete_fallbacks(session: pd.Timestamp, run: SubmitRun) -> dict[str, str]:
    """Cancel every limit intent of ``session`` whose fallback started and has no market
    intent yet, record its final state, and send its unfilled residual as a market order."""
    intents = run.ledger.intents(session=session)
    if intents.empty:
        return {}
    owed = intents[
        (intents["mode"] == "submit") & intents["fallback_at"].notna()
        & ~intents["order_ref"].isin(intents["parent_ref"].dropna())
    ]
    actions: dict[str, str] = {}
    for _, row in owed.iterrows():
        ref = str(row["order_ref"])
        if row["status"] in OPEN_STATUSES:  # (b) cancel; then the broker's final word, fills included
            try:
                run.broker.cancel(ref)
                outcome = run.broker.lookup(ref)
            except BrokerError as exc:
                notify(run.ledger, "broker_error", "ERROR", ref,
                       f"market fallback of {ref}: the cancel failed ({exc}); the next run completes the "
                       "fallback after reconciling the limit order", f"broker_error:fallback:{ref}")
                raise
            if outcome is None or not outcome.final:
                raise BrokerError(
                    f"market fallback of {ref}: the limit order is not final at the broker after its cancel "
                    f"({outcome.status if outcome else 'unknown'}); no market order sent, the next run retries"
                )
            record_outcome(run.ledger, outcome, run.run_id, run.counts)
            actions[ref] = "replaced"
        parent = run.ledger.intents(session=session).set_index("order_ref").loc[ref]
        filled = float(parent["filled_quantity"]) if pd.notna(parent["filled_quantity"]) else 0.0
        residual = float(parent["quantity"]) - filled
        if parent["status"] != "CANCELLED" or abs(residual) < ZERO_QUANTITY:
            continue  # filled before the cancel, or rejected (never retried): no fallback
        actions.update(_send_fallback(parent, ref, residual, run))
    return actions


def _send_fallback(parent: pd.Series, parent_ref: str, quantity: float, run: SubmitRun) -> dict[str, str]:
    """(c): the market intent for a cancelled limit order's residual, gated, written, sent."""
    session, instrument = session_day(parent["session"]), str(parent["instrument"])
    seq = int(run.ledger.intents(session=session, instrument=instrument)["seq"].max()) + 1
    legs = {k: parent.get(k) if pd.notna(parent.get(k)) else None for k in ("contract", "spread_contract", "contract_price")}
    label = legs["contract"] if legs["spread_contract"] is None else f"{legs['contract']}_{legs['spread_contract']}"
    ref = order_ref(str(parent["strategy"]), session, instrument, seq, label)
    positions, working = broker_positions(run.broker)
    before = float(positions.get(instrument, 0.0)) + float(working.get(instrument, 0.0))
    market = OrderIntent.from_row(parent.to_dict() | {"order_ref": ref, "seq": seq, "quantity": quantity,
                                                        "order_type": "MKT", "limit_price": None})
    price = intent_price(market, run.reference_prices)
    verdict = run.gate.check_intent(market, price, before)
    row = pd.DataFrame([{
        "order_ref": ref, "strategy": parent["strategy"], "session": session, "instrument": instrument, "seq": seq,
        "quantity": quantity, "side": "BUY" if quantity > 0 else "SELL", "order_type": "MKT",
        "reference_price": price, "target_position": parent["target_position"], "position_before": before,
        "status": "INTENT" if verdict.accepted else "DENIED", "mode": "submit",
        "verdict": "ACCEPTED" if verdict.accepted else "DENIED", "deny_reason": verdict.reason, "run_id": run.run_id,
        "account": run.policy.account, "code_version": run.policy.code_version, "input_hash": run.policy.input_hash,
        "parent_ref": parent_ref, **legs, "roll_state": parent.get("roll_state"),
    }])
    run.ledger.record_intents(row)
    run.counts["fallbacks"] += 1
    if not verdict.accepted:
        notify(run.ledger, "order_denied", "WARN", ref, f"{ref} (market fallback of {parent_ref}) denied by the "
               f"pre-trade gate: {verdict.reason}", f"order_denied:{ref}")
        return {ref: "fallback"}
    submit_intent(run.broker, run.ledger, OrderIntent.from_row(row.iloc[0]), price, run.counts, run.run_id)
    return {ref: "fallback"}
