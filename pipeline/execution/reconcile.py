"""Reconciliation with the broker: a submitting run first settles the session's unfinished
intents (reliability.md §2).

Each open intent is looked up at the broker by its order_ref, so a re-run or a retry after a
crash (e.g. between ``placeOrder`` and the ledger update) never sends an order twice: found, it
is adopted or left working; never received, it is gated again and re-sent under the same
order_ref.
"""

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
from pipeline.trading import OrderIntent


def reconcile_open_intents(open_intents: pd.DataFrame, run: SubmitRun) -> dict[str, str]:
    """Settle earlier open intents of the session with the broker; returns order_ref -> action.

    Each is looked up by order_ref (the broker searches its open orders of every client, its
    completed orders and today's executions; never the orderId). Found: its fills and status
    are recorded (``adopted`` when final, ``working`` otherwise). Not found: an intent that
    was never acknowledged (INTENT / SUBMITTED) is gated again and re-sent under the SAME
    order_ref; one the broker had acknowledged but no longer knows is closed as CANCELLED with
    an alert (the residual against the broker's positions decides what to do next).
    """
    actions: dict[str, str] = {}
    for _, row in open_intents.iterrows():
        intent = OrderIntent.from_row(row)
        run.counts["reconciled"] += 1
        found = run.broker.lookup(intent.order_ref)
        if found is not None:
            record_outcome(run.ledger, found, run.run_id, run.counts)
            actions[intent.order_ref] = "adopted" if found.final else "working"
            run.counts["adopted"] += int(found.final)
            continue
        if row["status"] not in ("INTENT", "SUBMITTED"):
            reason = f"acknowledged earlier ({row['status']}) but unknown to the broker at reconciliation"
            run.ledger.update_status(intent.order_ref, "CANCELLED", status_reason=reason)
            notify(run.ledger, "order_lost", "ERROR", intent.order_ref, f"{intent.order_ref}: {reason}",
                   f"order_lost:{intent.order_ref}")
            actions[intent.order_ref] = "adopted"
            continue
        # Unknown to the broker: it was never sent. Send it now under the same order_ref, after
        # the gate with today's state and positions (the gate stands before every submission).
        positions, working = broker_positions(run.broker)
        before = float(positions.get(intent.instrument, 0.0)) + float(working.get(intent.instrument, 0.0))
        price = intent_price(intent, run.reference_prices)
        verdict = run.gate.check_intent(intent, price, before)
        if not verdict.accepted:
            run.ledger.update_status(intent.order_ref, "DENIED", verdict="DENIED", deny_reason=verdict.reason)
            actions[intent.order_ref] = "denied_on_resend"
            continue
        run.ledger.update_status(intent.order_ref, row["status"], verdict="ACCEPTED")
        submit_intent(run.broker, run.ledger, intent, price, run.counts, run.run_id)
        actions[intent.order_ref] = "resent"
        run.counts["resent"] += 1
    return actions
