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
from pipeline.trading import OrderIntent, TradingState


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
        early = self._run_rules(instrument)
        if early is not None:
            return early
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

    def check_spread(self, quantity: float, instrument: str, spread_price: float, leg_price: float,
                     position_before: float, limit_price: float | None) -> Verdict:
        """A calendar spread (sell ``quantity`` of the priced contract at ``leg_price``, buy it in
        the forward at ``leg_price + spread_price``; price points) through the run's rules and the gate.

        Each leg passes :func:`pipeline.execution.gate.pre_trade_check` as an outright on its own
        contract's price (order quantity, notional, position limit, kill switch; the forward leg
        from the position the priced leg leaves), counted as one order for the throttle. The pair
        leaves the instrument's exposure unchanged, so REDUCING lets a roll through (HALTED does
        not). The price collar is on the spread's price: a limit further than
        ``limits.price_collar x leg_price`` from ``spread_price`` is denied (a spread's price is
        near zero or negative, so a relative collar on it would mean nothing).
        """
        early = self._run_rules(instrument)
        if early is not None:
            return early
        state = TradingState.ACTIVE if self.state is TradingState.REDUCING else self.state
        size = float(self.point_sizes.get(instrument, math.nan))
        common = {"orders_in_window": self.sent_in_window if self.throttle else 0,
                  "trades_in_session": self.trades_in_session, "account": self.policy.account, "live": self.policy.live}
        legs = (("priced leg", -quantity, leg_price, position_before),
                ("forward leg", quantity, leg_price + spread_price, position_before - quantity))
        for name, qty, price, before in legs:
            verdict = pre_trade_check(qty, instrument, price, size, before, state, self.limits, **common)
            if not verdict.accepted:
                return Verdict(False, f"{verdict.reason} ({name} of the calendar spread)", verdict.rule)
        if limit_price is not None:
            if not math.isfinite(limit_price):
                return Verdict(False, f"{instrument} spread limit price {limit_price!r} is not finite",
                               "invalid_limit_price")
            off = abs(limit_price - spread_price)
            if off > self.limits.price_collar * abs(leg_price) * (1 + 1e-12):
                return Verdict(False, f"|{limit_price!r} - {spread_price!r}| = {off:g} > {self.limits.price_collar:g} x "
                                      f"{leg_price!r} (the spread's collar on the priced leg's price)", "price_collar")
        self.sent_in_window += 1
        self.trades_in_session += 1
        return Verdict(True)

    def _run_rules(self, instrument: str) -> Verdict | None:
        """The run's own rules (position break, earlier rejection): a denial, or None."""
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
        return None

    def check_intent(self, intent: OrderIntent, price: float, position_before: float) -> Verdict:
        """:meth:`check` or, for a calendar spread, :meth:`check_spread` of one intent at ``price``."""
        if intent.is_spread:
            leg = intent.contract_price if intent.contract_price is not None else math.nan
            return self.check_spread(intent.quantity, intent.instrument, price, leg, position_before, intent.limit_price)
        return self.check(intent.quantity, intent.instrument, price, position_before, intent.limit_price)


def gate_plan(
    plan: pd.DataFrame,
    state: TradingState,
    limits: RiskLimits,
    point_sizes: dict[str, float],
    context: GateContext | None = None,
) -> list[Verdict]:
    """The gate's verdict on each row of ``plan`` (columns ``quantity``, ``instrument``,
    ``reference_price``, ``position_before``, optional ``limit_price``; a row with a
    ``spread_contract`` is a calendar spread, gated by :meth:`GateContext.check_spread` with its
    ``contract_price``), in row order.

    ``context`` carries what the run knows (breaks, earlier rejections, the throttle and session
    counts, which it advances for every accepted order); without it, a fresh one from ``state``,
    ``limits`` and ``point_sizes``. Rules: :func:`pipeline.execution.gate.pre_trade_check`.
    """
    # A loop over a handful of orders a day; the gate is per order by nature (rules short-circuit,
    # and the throttle counts the orders accepted before each one).
    ctx = context or GateContext(state, limits, point_sizes)
    def column(name: str) -> pd.Series:
        return plan[name] if name in plan.columns else pd.Series(np.nan, index=plan.index)

    spread = column("spread_contract").notna().to_numpy().tolist()
    columns = (  # plain arrays: iterating the frame's rows converts every column, dates included
        plan["quantity"].to_numpy(dtype=float).tolist(), plan["instrument"].to_numpy(dtype=object).tolist(),
        plan["reference_price"].to_numpy(dtype=float).tolist(), plan["position_before"].to_numpy(dtype=float).tolist(),
        column("limit_price").to_numpy(dtype=float).tolist(), column("contract_price").to_numpy(dtype=float).tolist(),
        spread,
    )
    return [
        ctx.check_spread(q, str(i), p, leg, b, None if not math.isfinite(lp) else lp) if is_spread else
        ctx.check(q, str(i), p, b, None if not math.isfinite(lp) else lp)
        for q, i, p, b, lp, leg, is_spread in zip(*columns)
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
