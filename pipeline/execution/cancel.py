"""Cancellation: every open submitted intent of a session cancelled at the broker, in any
trading state (a cancel only removes risk, so the kill switch never blocks it)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.execution.broker_io import record_outcome, working_orders
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
        _cancel_and_record([str(ref) for ref in live["order_ref"]], ledger, broker, run_id, counts)
        return ledger.intents(session=session)


def _cancel_and_record(refs: list[str], ledger: Ledger, broker: Broker, run_id: str | None,
                       counts: dict[str, int]) -> None:
    """Cancel ``refs`` at the broker, then record the broker's word on each after all the cancels (a
    look-up by order_ref, late fills included; the cancel's own answer when the look-up finds nothing)."""
    cancelled = {ref: broker.cancel(ref) for ref in refs}
    for ref, answer in cancelled.items():
        found = broker.lookup(ref)  # the broker's final word, late fills included
        outcome = found if found is not None else answer
        if outcome is not None:
            record_outcome(ledger, outcome, run_id, counts)


def cancel_resting_spreads(routes: pd.DataFrame, *, ledger: Ledger, broker: Broker, run_id: str | None,
                           counts: dict[str, int]) -> list[str]:
    """Cancel the calendar spreads still working for the instruments whose roll state is ``Force_Outright``.

    A Force spread that has not filled rests at the broker; when the roll escalates to two outright
    orders it must go first (pysystemtrade cancels the spread before the outrights): left working,
    it counts as working in the priced month, so the residual is 0 and no outright is ever sent.
    Cancels only remove risk, so no trading state blocks them. Each answer is recorded as
    :func:`cancel_orders` records it (a spread that filled before the cancel reached the exchange is
    recorded FILLED, and the plan then sees its legs in the positions).

    Parameters
    ----------
    routes : DataFrame
        Index instrument, column ``state`` (the session's roll states, ``futures_order_routes``).
    ledger, broker, run_id, counts
        As :func:`pipeline.execution.submit.execute_orders`' run.

    Returns
    -------
    list of str
        The order references cancelled (empty when no instrument is ``Force_Outright``).

    Raises
    ------
    BrokerError
        The broker could not be asked or refused the cancel.
    """
    outright = set(routes.index[routes["state"].astype(str) == "Force_Outright"].astype(str))
    if not outright:
        return []
    intents = ledger.intents()
    if intents.empty or "spread_contract" not in intents.columns:
        return []
    spreads = intents[intents["instrument"].isin(outright) & intents["spread_contract"].notna()
                      & (intents["mode"] == "submit") & intents["status"].isin(OPEN_STATUSES)]
    working = set(working_orders(broker)["order_ref"].astype(str))
    refs = [str(ref) for ref in spreads["order_ref"] if str(ref) in working]
    _cancel_and_record(refs, ledger, broker, run_id, counts)
    return refs
