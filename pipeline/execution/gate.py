"""The pre-trade gate and the kill switch: one check in front of every order submission.

Every order passes :func:`pre_trade_check` before it reaches a broker; a denial names the rule
and the numbers and is recorded in the ledger with the intent. The rules are the financial
controls of SEC Rule 15c3-5 (c)(1) and MiFID II RTS 6 Art. 15 (maximum order volume and value,
price collars), a position cap per instrument (RTS 6 Art. 8; pysystemtrade
``sysobjects/production/position_limits.py``), and the kill switch of the FIA 2015 guide §1.11
in nautilus_trader's three-state form (``TradingState`` ACTIVE / REDUCING / HALTED,
``nautilus_trader/risk/engine.pyx``): HALTED denies every new order, REDUCING lets only orders
that cut exposure through.

An order that breaks a quantity, notional or collar limit is rejected whole: it is a symptom (bad
data, a bug, a wrong config) to look at, not to trade a part of. The position limit is different:
as in pysystemtrade, a trade that would carry the position beyond it is clipped to the limit before
the gate (:func:`clip_to_position_limit`, recorded on the intent), and a trade that reduces the
absolute position is always allowed, so a book over its limit can be brought back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.config import RiskLimits
from pipeline.trading import PAPER_ACCOUNT_PREFIX, TradingState


@dataclass(frozen=True)
class Verdict:
    """Outcome of the pre-trade gate for one order.

    Attributes
    ----------
    accepted : bool
        True when the order may be sent.
    reason : str or None
        For a denial, the rule and the numbers, e.g.
        ``"max_order_notional: |120 x 4500.0 x 1| = 540000 > 500000"``; None when accepted.
    rule : str or None
        For a denial, the rule's name (``kill_switch``, ``reduce_only``, ``invalid_quantity``,
        ``invalid_position``, ``invalid_reference_price``, ``invalid_limit_price``,
        ``max_order_quantity``, ``max_order_notional``, ``max_position``, ``price_collar``,
        ``paper_account``, ``order_rate``; ``rejected_earlier`` from the order path);
        None when accepted.
    """

    accepted: bool
    reason: str | None = None
    rule: str | None = None


ACCEPT = Verdict(True)


#: Relative tolerance of the limit comparisons, so that a value at a limit up to float rounding
#: counts as at the limit (accepted).
_REL_TOL = 1e-12


def _deny(rule: str, detail: str) -> Verdict:
    return Verdict(False, f"{rule}: {detail}", rule)


def _exceeds(value: float, limit: float) -> bool:
    """``value > limit``, ignoring float rounding: a value at the limit (e.g. a collar of
    |110 / 100 - 1| = 0.10000000000000009 against 0.10) must pass, as the limits are inclusive."""
    return value > limit * (1.0 + _REL_TOL)


def _num(x: float) -> str:
    """Numbers in denial reasons: integers without a trailing '.0', up to 12 significant digits."""
    return f"{x:.12g}"


def is_reducing(quantity: float, position_before: float) -> bool:
    """Whether an order strictly reduces |position| without crossing through zero.

    Parameters
    ----------
    quantity : float
        Signed order size in units (shares / contracts / currency units); + buys, - sells.
    position_before : float
        Signed position in units before the order.

    Returns
    -------
    bool
        True when ``position_before != 0``, the order has the opposite sign and
        ``|quantity| <= |position_before|`` (going exactly flat counts as reducing).
        Source: nautilus_trader ``RiskEngine`` REDUCING state (reliability.md §1.2).
    """
    if position_before == 0 or quantity == 0:
        return False
    return (quantity > 0) != (position_before > 0) and abs(quantity) <= abs(position_before)


def pre_trade_check(
    quantity: float,
    instrument: str,
    reference_price: float,
    point_size: float,
    position_before: float,
    state: TradingState,
    limits: RiskLimits,
    limit_price: float | None = None,
    *,
    orders_in_window: int = 0,
    trades_in_session: int = 0,
    account: str | None = None,
    live: bool = False,
) -> Verdict:
    """Accept or deny one order before it is sent (the pre-trade gate, DESIGN rule 4).

    Rules, in the order they are checked (the first failing rule is reported):

    1. ``kill_switch``: state HALTED denies everything.
    1a. ``paper_account``: an ``account`` that is not a paper account (IB paper accounts start
       with ``DU``) while ``live`` is False.
    1b. ``order_rate``: ``orders_in_window >= limits.max_orders_per_window`` (the throttle of
       RTS 6 Art. 15; nautilus ``max_order_submit_rate``).
    1c. ``max_trades_per_session``: ``trades_in_session >= limits.max_trades_per_session`` (the
       repeated-execution limit of RTS 6 Art. 15(3); pysystemtrade ``trade_limits.py``).
    2. ``invalid_quantity``: zero or non-finite quantity (fail closed).
    3. ``invalid_position``: non-finite ``position_before`` (fail closed).
    4. ``invalid_reference_price``: non-finite or non-positive reference price, or a non-finite
       or non-positive point size (fail closed: notional cannot be bounded).
    5. ``reduce_only``: state REDUCING denies orders that do not reduce |position| or that
       cross through zero (:func:`is_reducing`).
    6. ``max_order_quantity``: ``|quantity| >`` the instrument's limit
       (:meth:`pipeline.config.RiskLimits.order_quantity_limit`: its entry in
       ``max_order_quantity_by_instrument``, else ``max_order_quantity``).
    7. ``max_order_notional``: ``|quantity| x reference_price x point_size >
       limits.max_order_notional``.
    8. ``max_position``: ``|position_before + quantity| > limits.max_position``, unless the
       order reduces ``|position|`` (a book over its limit can always be brought back; the
       order path clips trades to the limit first, :func:`clip_to_position_limit`).
    9. ``price_collar`` (only when ``limit_price`` is given): ``|limit_price / reference_price
       - 1| > limits.price_collar``; a non-finite or non-positive limit price is
       ``invalid_limit_price``.

    A value at a limit is accepted (the limits are inclusive, up to a relative 1e-12 of float
    rounding); anything more than that above the limit is denied.

    Parameters
    ----------
    quantity : float
        Signed order size in units (shares, contracts, currency units); + buy, - sell.
    instrument : str
        Symbol, only used in messages.
    reference_price : float
        Latest price in price points (e.g. the session close) used to value the order.
    point_size : float
        Currency per price point per unit (futures multiplier; 1 for stocks).
    position_before : float
        Signed position in units before the order (including orders already working).
    state : TradingState
        The kill switch state (see :class:`TradingState`).
    limits : RiskLimits
        Configured limits (``pipeline.config.RiskLimits``). Notional is compared in the
        instrument's currency; no FX conversion is done here.
    limit_price : float, optional
        Limit price in price points; None for a market order (no collar check).
    orders_in_window : int
        Orders already sent within the last ``limits.order_window_seconds`` (this run's
        accepted orders included).
    trades_in_session : int
        Orders already sent for this session (earlier runs' and this run's accepted ones).
    account : str, optional
        The account the order goes to; None skips the paper-account rule (paper broker).
    live : bool
        True only when live trading is explicitly enabled (``BrokerConfig.live_enabled``
        with ``execution: live``).

    Returns
    -------
    Verdict
        ``Verdict(True)`` or a denial whose ``reason`` names the rule and the numbers, e.g.
        ``"max_order_notional: |120 x 4500.0 x 1| = 540000 > 500000"``.

    Notes
    -----
    Sources: SEC Rule 15c3-5 (c)(1)(ii); MiFID II RTS 6 Art. 15 (collars, maximum order value
    and volume) and Art. 8 (position limits); FIA 2015 guide §1.11 (kill switch);
    nautilus_trader ``risk/engine.pyx`` (trading states, max notional per order).
    """
    state = TradingState(state)
    if state is TradingState.HALTED:
        return _deny("kill_switch", f"trading state is HALTED; {instrument} order of {_num(quantity)} not sent")
    if account is not None and not live and not account.startswith(PAPER_ACCOUNT_PREFIX):
        return _deny(
            "paper_account",
            f"account {account} is not a paper account ({PAPER_ACCOUNT_PREFIX}...) and live trading is not enabled",
        )
    if orders_in_window >= limits.max_orders_per_window:
        return _deny(
            "order_rate",
            f"{orders_in_window} orders within {_num(limits.order_window_seconds)} s >= "
            f"{limits.max_orders_per_window}",
        )
    if limits.max_trades_per_session is not None and trades_in_session >= limits.max_trades_per_session:
        return _deny(
            "max_trades_per_session",
            f"{trades_in_session} orders already sent for this session >= {limits.max_trades_per_session}",
        )
    if not math.isfinite(quantity) or quantity == 0:
        return _deny("invalid_quantity", f"{instrument} quantity {quantity!r} is zero or not finite")
    if not math.isfinite(position_before):
        return _deny("invalid_position", f"{instrument} position before the order is {position_before!r}")
    if not (math.isfinite(reference_price) and reference_price > 0):
        return _deny(
            "invalid_reference_price",
            f"{instrument} reference price {reference_price!r} is not a finite positive number",
        )
    if not (math.isfinite(point_size) and point_size > 0):
        return _deny(
            "invalid_reference_price", f"{instrument} point size {point_size!r} is not a finite positive number"
        )
    if state is TradingState.REDUCING and not is_reducing(quantity, position_before):
        return _deny(
            "reduce_only",
            f"trading state is REDUCING; {instrument} order of {_num(quantity)} from position "
            f"{_num(position_before)} does not reduce |position| without crossing zero",
        )
    max_quantity = limits.order_quantity_limit(instrument)
    if _exceeds(abs(quantity), max_quantity):
        return _deny("max_order_quantity", f"|{_num(quantity)}| > {_num(max_quantity)}")
    notional = abs(quantity) * reference_price * point_size
    if _exceeds(notional, limits.max_order_notional):
        return _deny(
            "max_order_notional",
            f"|{_num(quantity)} x {reference_price!r} x {_num(point_size)}| = {_num(notional)} "
            f"> {_num(limits.max_order_notional)}",
        )
    after = position_before + quantity
    if _exceeds(abs(after), limits.max_position) and not abs(after) < abs(position_before):
        return _deny(
            "max_position",
            f"|{_num(position_before)} + {_num(quantity)}| = {_num(abs(after))} > {_num(limits.max_position)}",
        )
    if limit_price is not None:
        if not (math.isfinite(limit_price) and limit_price > 0):
            return _deny(
                "invalid_limit_price", f"{instrument} limit price {limit_price!r} is not a finite positive number"
            )
        deviation = abs(limit_price / reference_price - 1.0)
        if _exceeds(deviation, limits.price_collar):
            return _deny(
                "price_collar",
                f"|{limit_price!r} / {reference_price!r} - 1| = {_num(deviation)} > {_num(limits.price_collar)}",
            )
    return ACCEPT


def clip_to_position_limit(position: float, limit: float, trade: float) -> float:
    """The part of ``trade`` the position limit allows (units, signed).

    A trade that keeps ``|position + trade|`` within ``limit`` passes whole. One that would end
    beyond it moves the position to the limit on the side the trade goes (``sign(new) x limit -
    position``), so a buy of 4 from 0 with a limit of 3 buys 3. A position already over the limit
    may always be reduced: a trade in the same direction is cut to 0, a reducing one passes whole
    unless it crosses zero and ends beyond the limit on the other side, where it stops at the limit.

    Parameters
    ----------
    position : float
        Signed units held before the trade.
    limit : float
        The absolute position limit (``RiskLimits.max_position``), units.
    trade : float
        Signed units the plan wants to trade.

    Returns
    -------
    float
        Signed units to trade; 0 when nothing is allowed. Never of the other sign than ``trade``.

    Notes
    -----
    pysystemtrade ``sysobjects/production/position_limits.py``, ``what_trade_is_possible_single_leg_trade``:
    its 35 doctest cases are the parametrised cases of ``tests/test_risk.py``. Arrays:
    :func:`clip_trades`.
    """
    if trade == 0:
        return 0.0
    limit = abs(limit)
    new = position + trade
    if abs(new) <= limit:
        return trade
    to_limit = math.copysign(limit, new) - position
    if abs(position) <= limit:  # within the limit before: go to the limit, no further
        return to_limit
    if (position > 0) == (trade > 0):  # over the limit and the trade adds to it
        return 0.0
    if (new > 0) == (position > 0):  # reducing but still over: keep the whole reduction
        return trade
    return to_limit  # reducing through zero and beyond the limit on the other side


def clip_trades(position: np.ndarray, trade: np.ndarray, limit: float) -> np.ndarray:
    """:func:`clip_to_position_limit` element-wise over arrays of positions and trades (units); the
    same rules as there, written for arrays (a test holds the two equal)."""
    limit = abs(limit)
    new = position + trade
    to_limit = np.copysign(limit, new) - position
    within_before = np.abs(position) <= limit
    adds_to_excess = (position > 0) == (trade > 0)
    still_same_side = (new > 0) == (position > 0)
    return np.select(
        [trade == 0, np.abs(new) <= limit, within_before, adds_to_excess, still_same_side],
        [0.0, trade, to_limit, 0.0, trade],
        default=to_limit,  # reducing through zero and beyond the limit on the other side
    )


def daily_loss_breached(daily_pnl: float | None, limits: RiskLimits) -> str | None:
    """Why the daily-loss circuit breaker trips, or None.

    Parameters
    ----------
    daily_pnl : float or None
        Today's profit and loss of the account in the base currency (IB ``reqPnL`` dailyPnL);
        None or NaN when the broker does not report it.
    limits : RiskLimits
        ``max_daily_loss`` (base currency, > 0) or None (breaker off).

    Returns
    -------
    str or None
        ``"max_daily_loss: daily P&L -60000 < -50000"`` when ``daily_pnl < -max_daily_loss``;
        None when within the limit, when the breaker is off, or when the P&L is unknown (the
        kill switch, not this rule, covers an unknown account).

    Notes
    -----
    The circuit breaker of RTS 6 Art. 15 / the FIA 2015 guide: the order path sets HALTED in
    the ledger, so every later run is denied until a person sets ACTIVE again.
    """
    if limits.max_daily_loss is None or daily_pnl is None or not math.isfinite(daily_pnl):
        return None
    if daily_pnl < -limits.max_daily_loss:
        return f"max_daily_loss: daily P&L {_num(daily_pnl)} < -{_num(limits.max_daily_loss)}"
    return None
