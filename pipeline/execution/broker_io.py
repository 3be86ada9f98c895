"""The order path's exchanges with the broker, failing closed, and its answers in the ledger.

Positions and working orders are read from the broker and refused when unusable (an unknown
position is not a flat one); one intent already in the ledger is sent (:func:`submit_intent`) or, in
a record-only run, given a what-if preview (:func:`preview_intents`); every broker answer (fills,
status, ids) is recorded (:func:`record_outcome`), a rejection alerted and never retried
automatically.
"""

from __future__ import annotations

import math

import pandas as pd

from pipeline.adapters.alerts import notify
from pipeline.store.ledger import Ledger
from pipeline.trading import (
    WORKING_COLUMNS,
    Broker,
    BrokerError,
    BrokerOrder,
    OrderIntent,
)


def fill_price(instrument: str, reference_prices: pd.Series, fallback: float) -> float:
    """The price (price points) a paper fill of ``instrument`` takes: its reference price in
    ``reference_prices`` (index instrument), or ``fallback`` (the intent's own) when missing or not finite."""
    price = reference_prices.get(instrument, math.nan) if reference_prices is not None else math.nan
    price = float(price) if price is not None else math.nan
    return price if math.isfinite(price) else float(fallback)


def intent_price(intent: OrderIntent, reference_prices: pd.Series) -> float:
    """The price (price points) an intent is gated and paper-filled at: a dated futures contract's
    own reference price (for a calendar spread, the spread's), else :func:`fill_price` of its
    instrument."""
    if intent.contract is not None:
        return float(intent.reference_price)
    return fill_price(intent.instrument, reference_prices, intent.reference_price)


def working_orders(broker: Broker) -> pd.DataFrame:
    """The broker's working orders, refusing an answer that cannot be used (fail closed)."""
    working = broker.working_orders()
    if not isinstance(working, pd.DataFrame) or not set(WORKING_COLUMNS) <= set(working.columns):
        raise BrokerError(
            f"broker {broker.name}: working_orders() did not return a DataFrame with columns "
            f"{list(WORKING_COLUMNS)}; without them an order could be sent twice"
        )
    return working


def broker_positions(broker: Broker) -> tuple[pd.Series, pd.Series]:
    """Positions and working quantity per instrument from the broker, failing closed."""
    positions = broker.positions()
    if not isinstance(positions, pd.Series):
        raise BrokerError(
            f"broker {broker.name}: positions() returned {type(positions).__name__}, not a Series; "
            "an unknown position is not a flat one"
        )
    working = working_orders(broker).groupby("instrument")["quantity"].sum().astype(float)
    return positions.astype(float), working


def _by_contract(series: pd.Series) -> pd.Series:
    """A per-instrument Series as a per-(instrument, contract) one, the contract the instrument's symbol."""
    index = pd.MultiIndex.from_arrays([series.index.astype(str), series.index.astype(str)],
                                      names=["instrument", "contract"])
    return pd.Series(series.to_numpy(dtype=float), index=index, name=series.name)


def broker_contract_positions(broker: Broker) -> tuple[pd.Series, pd.Series]:
    """Positions and working quantities per (instrument, contract) from the broker, failing closed.

    Returns
    -------
    (positions, working) : tuple of pd.Series
        MultiIndex ``(instrument, contract)``, signed units; ``contract`` the dated month of a
        futures instrument with roll parameters, else the instrument's symbol. From
        ``broker.contract_positions()`` when the broker has it (else its per-instrument positions,
        each in the instrument's own key), and its working orders' ``contract`` column (else the symbol).

    Raises
    ------
    BrokerError
        The broker's answer is not a Series / a frame with :data:`pipeline.trading.WORKING_COLUMNS`.
    """
    reader = getattr(broker, "contract_positions", None)
    positions = reader() if reader is not None else broker.positions()
    if not isinstance(positions, pd.Series):
        raise BrokerError(
            f"broker {broker.name}: positions returned {type(positions).__name__}, not a Series; "
            "an unknown position is not a flat one"
        )
    if not isinstance(positions.index, pd.MultiIndex):
        positions = _by_contract(positions)
    working = working_orders(broker)
    contract = working["contract"] if "contract" in working.columns else working["instrument"]
    per_contract = working.assign(contract=contract.fillna(working["instrument"]).astype(str))
    working = per_contract.groupby(["instrument", "contract"])["quantity"].sum().astype(float)
    return positions.astype(float), working


def record_outcome(ledger: Ledger, outcome: BrokerOrder, run_id: str | None, counts: dict[str, int]) -> str:
    """Store a broker answer; a rejection is alerted (and never retried automatically)."""
    status = ledger.record_broker_order(outcome, run_id)
    if status == "FILLED":
        counts["filled"] += 1
    elif status == "REJECTED":
        counts["rejected"] += 1
        notify(
            ledger, "order_rejected", "ERROR", outcome.order_ref,
            f"{outcome.order_ref} rejected by the broker: {outcome.reason or 'no reason given'}; "
            "not retried: new orders for this instrument are denied for the rest of the session",
            f"order_rejected:{outcome.order_ref}",
        )  # fmt: skip
    return status


def submit_intent(
    broker: Broker, ledger: Ledger, intent: OrderIntent, price: float, counts: dict[str, int], run_id: str | None
) -> BrokerOrder:
    """Send one intent that is already in the ledger; record the outcome."""
    try:
        outcome = broker.submit(intent, price)
    except BrokerError as exc:
        notify(
            ledger, "broker_error", "ERROR", intent.order_ref,
            f"submit of {intent.order_ref} failed: {exc}; the intent stays open and the next run "
            "reconciles it with the broker before sending anything",
            f"broker_error:{intent.order_ref}",
        )
        raise
    counts["sent"] += 1
    record_outcome(ledger, outcome, run_id, counts)
    return outcome


def preview_intents(accepted: pd.DataFrame, broker: Broker, ledger: Ledger) -> int:
    """Store the broker's what-if preview of each accepted record-only intent; returns how many.

    A preview only informs (nothing is sent either way), so a broker that cannot give one is
    alerted (``what_if_failed``) and the run goes on."""
    what_if = getattr(broker, "what_if", None)
    if what_if is None or accepted.empty:
        return 0
    done = 0
    for _, row in accepted.iterrows():
        intent = OrderIntent.from_row(row)
        try:
            preview = what_if(intent)
        except BrokerError as exc:
            notify(ledger, "what_if_failed", "WARN", intent.order_ref,
                   f"what-if preview of {intent.order_ref} failed: {exc}", f"what_if_failed:{intent.order_ref}")
            continue
        ledger.record_what_if(preview)
        done += 1
    return done
