"""The pre-trade gate as one run applies it.

Every order passes :func:`pipeline.execution.gate.pre_trade_check`; around it a run adds what
only the run knows: the kill-switch state it read, its order policy's account and mode, the
orders already sent within the throttle window, ``rejected_earlier`` (an instrument whose
order the broker rejected this session is not retried) and ``position_break`` (an instrument
whose broker position differs from the ledger's gets no order until the break is resolved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.config import RiskLimits
from pipeline.execution.gate import Verdict, pre_trade_check
from pipeline.execution.policy import OrderPolicy
from pipeline.trading import TradingState


@dataclass
class GateContext:
    """Everything the gate needs besides the order itself, for one run."""

    state: TradingState
    limits: RiskLimits
    point_sizes: dict[str, float]
    policy: OrderPolicy = field(default_factory=OrderPolicy)
    #: instrument -> (order_ref, reason) of a broker rejection earlier in the session
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: orders already sent within the throttle window (before this run's)
    sent_in_window: int = 0
    #: only runs that send orders are throttled (record-only runs and backfills send nothing)
    throttle: bool = False
    #: instrument -> reason, for the instruments with an open position break (no order for them)
    breaks: dict[str, str] = field(default_factory=dict)
    #: orders already sent for the session (earlier runs'), then this run's accepted ones
    trades_in_session: int = 0

    def check(self, quantity: float, instrument: str, price: float, position_before: float,
              limit_price: float | None) -> Verdict:
        """One order through the run's rules (position break, earlier rejection), then the gate."""
        if instrument in self.breaks:
            return Verdict(False, self.breaks[instrument], "position_break")
        if instrument in self.rejected and self.state is not TradingState.HALTED:
            ref, reason = self.rejected[instrument]
            return Verdict(
                False,
                f"rejected_earlier: {ref} was rejected by the broker ({reason}); no automatic retry "
                "in this session: fix the cause, the next session trades again",
                "rejected_earlier",
            )
        verdict = pre_trade_check(
            quantity, instrument, price, float(self.point_sizes.get(instrument, math.nan)), position_before,
            self.state, self.limits, limit_price=limit_price,
            orders_in_window=self.sent_in_window if self.throttle else 0, trades_in_session=self.trades_in_session,
            account=self.policy.account, live=self.policy.live,
        )
        if verdict.accepted:
            self.sent_in_window += 1
            self.trades_in_session += 1
        return verdict


def gate_plan(
    plan: pd.DataFrame,
    state: TradingState,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    context: GateContext | None = None,
) -> list[Verdict]:
    """The gate's verdict on each row of ``plan`` (columns ``quantity``, ``instrument``,
    ``reference_price``, ``position_before``, optional ``limit_price``), in row order.

    ``context`` carries what the run knows (breaks, earlier rejections, the throttle and session
    counts, which it advances for every accepted order); without it, a fresh one from ``state``,
    ``limits`` and ``point_sizes``. Rules: :func:`pipeline.execution.gate.pre_trade_check`.
    """
    # A loop over a handful of orders a day; the gate is per order by nature (rules short-circuit,
    # and the throttle counts the orders accepted before each one).
    ctx = context or GateContext(state, limits, point_sizes)
    limit = plan["limit_price"] if "limit_price" in plan.columns else pd.Series(np.nan, index=plan.index)
    columns = (  # plain arrays: iterating the frame's rows converts every column, dates included
        plan["quantity"].to_numpy(dtype=float).tolist(), plan["instrument"].to_numpy(dtype=object).tolist(),
        plan["reference_price"].to_numpy(dtype=float).tolist(), plan["position_before"].to_numpy(dtype=float).tolist(),
        limit.to_numpy(dtype=float).tolist(),
    )
    return [
        ctx.check(q, str(i), p, b, None if not math.isfinite(lp) else lp)
        for q, i, p, b, lp in zip(*columns)
    ]


#: Statuses of an intent that reached the broker.
SENT_STATUSES = ("SUBMITTED", "ACKNOWLEDGED", "PARTIALLY_FILLED", "FILLED", "CANCELLED", "REJECTED")


def sent_in_session(prior: pd.DataFrame) -> int:
    """Orders of the session's earlier runs that reached the broker (submit mode)."""
    if prior.empty:
        return 0
    return int(((prior["mode"] == "submit") & prior["status"].isin(SENT_STATUSES)).sum())


def rejected_in_session(prior: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """instrument -> (order_ref, reason) where the latest submit intent was REJECTED."""
    if prior.empty:
        return {}
    sent = prior[prior["mode"] == "submit"].sort_values("seq").groupby("instrument").tail(1)
    rej = sent[sent["status"] == "REJECTED"]
    return {r.instrument: (r.order_ref, str(r.status_reason or "")) for r in rej.itertuples(index=False)}
