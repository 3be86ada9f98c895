"""The context of one submitting run: a small frozen object handed to reconciliation, sending
and the market fallback (:class:`SubmitRun`), so those steps need not import the run itself."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline.execution.policy import OrderPolicy
from pipeline.execution.run_gate import GateContext
from pipeline.store.ledger import Ledger
from pipeline.trading import Broker


@dataclass(frozen=True)
class SubmitRun:
    """What a submitting run of :func:`execute_orders` carries through reconciliation, sending and
    the market fallback: where intents are written, where orders go, the gate, the prices, the
    run's counters (mutated), its id and its order policy."""

    ledger: Ledger
    broker: Broker
    gate: GateContext
    reference_prices: pd.Series
    counts: dict[str, int]
    run_id: str | None
    policy: OrderPolicy
