"""Reporting: what one order run did (:class:`ExecutionReport`, the result of
:func:`pipeline.execution.submit.execute_orders`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline.trading import TradingState


@dataclass(frozen=True)
class ExecutionReport:
    """What one :func:`execute_orders` run did.

    Attributes
    ----------
    session : pd.Timestamp
        The session traded or recorded.
    mode : str
        ``"submit"`` or ``"record_only"``.
    trading_state : TradingState
        The kill-switch state the run used (HALTED if the circuit breaker tripped).
    intents : DataFrame
        The ledger rows this run wrote or settled (columns of ``Ledger.intents`` plus
        ``action``: ``new``, ``adopted`` (an earlier intent found final at the broker: filled,
        cancelled or rejected), ``working`` (found working at the broker), ``resent`` (an
        earlier intent the broker did not know, sent again under the same order_ref),
        ``denied_on_resend``, ``replaced`` (a limit order cancelled for its market fallback)
        or ``fallback`` (the market order for a limit order's unfilled residual)).
    counts : dict[str, int]
        ``planned`` (orders from the residual), ``unchanged`` (planned orders identical to an
        intent already recorded, not written again), ``recorded`` (new intents), ``accepted``,
        ``denied`` (verdicts of the new intents), ``sent`` (orders given to the broker, resent
        included), ``filled`` (orders found or left fully filled this run), ``rejected`` (by
        the broker), ``reconciled`` (earlier open intents looked up), ``adopted``, ``resent``,
        ``fallbacks`` (market fallback intents written, denied ones included), ``previewed``
        (record-only intents given a what-if preview).
    """

    session: pd.Timestamp
    mode: str
    trading_state: TradingState
    intents: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
