"""Cancellation: every open submitted intent of a session cancelled at the broker, in any
trading state (a cancel only removes risk, so the kill switch never blocks it)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.execution.broker_io import record_outcome
from pipeline.store.ledger import OPEN_STATUSES, Ledger
from pipeline.trading import Broker


def cancel_orders(session: Any, *, ledger: Ledger, broker: Broker, run_id: str | None = None) -> pd.DataFrame:
    """Cancel every open submitted intent of ``session`` at the broker, in any trading state.

    A cancel only removes risk, so the kill switch never blocks it (FIA 2015 §1.11: a kill
    switch disables new orders *and* cancels working ones; nautilus_trader lets cancels through
    when HALTED). Each answer is recorded like any broker answer (status CANCELLED, or FILLED
    if the order filled first): the broker's word after all the cancels (a look-up by
    order_ref), fills included, since an execution may be reported after the cancel's
    acknowledgement (the order filled before the cancel reached the exchange).

    Returns
    -------
    DataFrame
        The session's intents after the cancels (``Ledger.intents`` columns).

    Raises
    ------
    BrokerError
        The broker could not be asked or refused the cancel.
    """
    counts = dict.fromkeys(("filled", "rejected"), 0)
    with ledger.hold():
        prior = ledger.intents(session=session)
        live = prior[(prior["mode"] == "submit") & prior["status"].isin(OPEN_STATUSES)]
        cancelled = {str(ref): broker.cancel(str(ref)) for ref in live["order_ref"]}
        for ref, answer in cancelled.items():
            found = broker.lookup(ref)  # the broker's final word, late fills included
            outcome = found if found is not None else answer
            if outcome is not None:
                record_outcome(ledger, outcome, run_id, counts)
        return ledger.intents(session=session)
