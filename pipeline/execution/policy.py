"""The order policy: how accepted intents become broker orders (order type, limit offset,
account, live or paper, market fallback, what-if previews) and the audit fields they carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OrderPolicy:
    """How accepted intents become broker orders, and the audit fields they carry.

    Attributes
    ----------
    order_type : str
        ``MKT`` or ``LMT`` (``BrokerConfig.order_type``).
    limit_offset : float
        ``LMT``: the limit is ``reference x (1 + offset)`` for a buy, ``x (1 - offset)`` for a
        sell (a fraction; the price collar of the gate checks it).
    account : str or None
        The account orders go to; with ``live`` False it must be a paper account (``DU...``).
    live : bool
        True only in live mode (``execution: live`` with ``live_enabled``).
    code_version, input_hash : str or None
        Stored on each intent: which code and which inputs produced it (:mod:`pipeline.store.audit`).
    market_fallback_after : float or None
        ``LMT``: seconds to wait for a limit order's fills before its unfilled residual is
        cancelled and sent as a market order (``BrokerConfig.market_fallback_after``); None: no
        fallback, a limit order works until it fills or expires.
    what_if : bool
        Record-only runs with a broker (a dry run of today's orders): ask the broker's what-if
        check (``Broker.what_if``, IB's ``whatIfOrder``) for each accepted intent and store its
        margin and commission preview on the intent.
    """

    order_type: str = "MKT"
    limit_offset: float = 0.0
    account: str | None = None
    live: bool = False
    code_version: str | None = None
    input_hash: str | None = None
    market_fallback_after: float | None = None
    what_if: bool = False

    def limit_prices(self, quantity: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Limit prices in price points (NaN for market orders)."""
        if self.order_type != "LMT":
            return np.full(len(quantity), np.nan)
        return reference * (1.0 + np.sign(quantity) * self.limit_offset)
