"""The fake gateway's broker side: orders, executions and positions, and their wire layouts.

An :class:`OrderBook` outlives a server: pass it to a new :class:`~pipeline.adapters.ib.fake_gateway.FakeTWS`
to simulate a gateway restart (orders and positions persist at the broker, order ids start
again from ``next_order_id``). Orders are identified by ``permId`` (unique for the book's life),
never by ``orderId``, which a restarted gateway may hand out again.

The ``*_fields`` functions give the fields (after the message id) of the messages TWS sends at
server version 178, in the order ib_async 2.1.0's ``decoder.py`` (and ibapi 10.50's at 178)
reads them: ``openOrder`` (5), ``orderStatus`` (3), ``completedOrder`` (101), ``execDetails``
(11), ``commissionReport`` (59), ``position`` (61) and ``updatePortfolio`` (7). Unset numbers are
sent as empty strings, booleans as ``0``/``1``, and every count field (order combo legs,
parameters, conditions) as ``0``; a combo (``BAG``) order's legs are sent in its ``openOrder`` and
``completedOrder`` (conId, ratio, action, exchange, openClose, shortSaleSlot, designatedLocation,
exemptCode), and each leg's execution names the leg's contract.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

#: Order statuses after which an order is done (TWS wording).
DONE_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


@dataclass
class FakeExecution:
    """One execution (a fill) of an order; for a combo order, of one leg (``contract`` the leg's 12
    contract fields, ``side`` BOT or SLD); None / "" for an outright order's own contract and side."""

    exec_id: str
    time: str
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    commission: float
    contract: list[str] | None = None
    side: str = ""


@dataclass(frozen=True)
class FakeLeg:
    """One leg of a combo (``BAG``) order as placeOrder carried it: buy or sell ``ratio`` units of
    contract ``con_id`` per unit of the combo bought."""

    con_id: int
    ratio: int
    action: str
    exchange: str = ""


@dataclass
class FakeSettlement:
    """A position closed at expiry: cash-settled (``kind`` "cash") or delivered ("delivery") at
    ``price``, the contract's final price, on ``session`` (YYYYMMDD)."""

    con_id: int
    contract: list[str]
    quantity: float
    price: float
    session: str
    kind: str


@dataclass
class DeliveryBreach:
    """A position in a physically delivered contract held on or after its close-out date."""

    con_id: int
    local_symbol: str
    quantity: float
    close_out: str
    session: str


@dataclass
class FakeOrder:
    """An order the fake broker holds.

    ``contract`` holds the 12 contract fields as the client sent them (conId, symbol, secType,
    lastTradeDateOrContractMonth, strike, right, multiplier, exchange, primaryExchange,
    currency, localSymbol, tradingClass).
    """

    perm_id: int
    order_id: int
    client_id: int
    epoch: int
    contract: list[str]
    action: str
    quantity: float
    order_type: str
    lmt_price: str
    tif: str
    account: str
    order_ref: str
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_price: float = 0.0
    last_price: float = 0.0
    reason: str = ""
    completed_time: str = ""
    executions: list[FakeExecution] = field(default_factory=list)
    #: ``overridePercentageConstraints`` as the placeOrder message carried it: True would ask TWS
    #: to skip its own price-percentage check (the second price collar behind the gate's).
    override_percentage_constraints: bool = False
    #: The legs of a combo (``BAG``) order; empty for an outright order.
    legs: list[FakeLeg] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def con_id(self) -> int:
        return int(self.contract[0] or 0)

    @property
    def signed_sign(self) -> int:
        return 1 if self.action == "BUY" else -1


@dataclass
class FakePosition:
    contract: list[str]
    quantity: float = 0.0
    avg_cost: float = 0.0

    @property
    def con_id(self) -> int:
        return int(self.contract[0] or 0)


class OrderBook:
    """Orders and positions of the fake broker; thread-safe, shared across server restarts.

    Parameters
    ----------
    first_perm_id : int
        The first permId handed out (IB permIds are large and never reused).
    """

    def __init__(self, first_perm_id: int = 900_000_001) -> None:
        self.lock = threading.RLock()
        self.orders: list[FakeOrder] = []
        self.positions: dict[int, FakePosition] = {}
        self.next_perm_id = first_perm_id
        self.exec_seq = 0
        self.epoch = 0
        #: Positions closed at expiry, and physically delivered positions held past close-out.
        self.settlements: list[FakeSettlement] = []
        self.breaches: list[DeliveryBreach] = []

    def new_perm_id(self) -> int:
        with self.lock:
            p = self.next_perm_id
            self.next_perm_id += 1
            return p

    def new_exec_id(self, perm_id: int) -> str:
        with self.lock:
            self.exec_seq += 1
            return f"0000e0d5.{perm_id:x}.{self.exec_seq:04d}.01"

    def by_ref(self, order_ref: str) -> list[FakeOrder]:
        """Orders with this orderRef (a list: a duplicate submission shows up as two)."""
        with self.lock:
            return [o for o in self.orders if o.order_ref == order_ref]

    def find_open(self, client_id: int, order_id: int, epoch: int) -> FakeOrder | None:
        with self.lock:
            for o in self.orders:
                if o.client_id == client_id and o.order_id == order_id and o.epoch == epoch and not o.done:
                    return o
        return None

    def apply_fill(self, order: FakeOrder, shares: float, price: float, time: str, commission: float) -> FakeExecution:
        """Record an execution of ``shares`` (> 0) at ``price`` and move the position."""
        with self.lock:
            total = order.filled + shares
            order.avg_price = (order.avg_price * order.filled + price * shares) / total
            order.filled = total
            order.last_price = price
            ex = FakeExecution(self.new_exec_id(order.perm_id), time, shares, price, total, order.avg_price, commission)
            order.executions.append(ex)
            self.move_position(order.con_id, order.contract, order.signed_sign * shares, price)
            return ex

    def apply_leg_fill(self, order: FakeOrder, contract: list[str], action: str, shares: float, price: float,
                       time: str, commission: float) -> FakeExecution:
        """Record the execution of one leg of a combo order (``shares`` > 0 of ``contract``, ``action``
        BUY or SELL, at ``price``) and move that contract's position; the combo's own filled
        quantity is the caller's to update once every leg has filled."""
        with self.lock:
            ex = FakeExecution(self.new_exec_id(order.perm_id), time, shares, price, shares, price, commission,
                               contract=list(contract), side="BOT" if action == "BUY" else "SLD")
            order.executions.append(ex)
            self.move_position(int(contract[0]), contract, (1 if action == "BUY" else -1) * shares, price)
            return ex

    def move_position(self, con_id: int, contract: list[str], signed: float, price: float) -> FakePosition:
        """Add ``signed`` units bought (< 0: sold) at ``price`` to the position in ``con_id``: the
        average cost is the price when the position opens or crosses zero, the weighted average when
        it grows, unchanged when it shrinks, 0 when it closes."""
        with self.lock:
            pos = self.positions.setdefault(con_id, FakePosition(list(contract)))
            new_qty = pos.quantity + signed
            if new_qty == 0:
                pos.avg_cost = 0.0
            elif pos.quantity == 0 or (new_qty > 0) != (pos.quantity > 0):  # opened, or crossed zero
                pos.avg_cost = price
            elif abs(new_qty) > abs(pos.quantity):  # added to the position
                pos.avg_cost = (pos.avg_cost * abs(pos.quantity) + price * abs(signed)) / abs(new_qty)
            pos.quantity = new_qty
            return pos


# ---------------------------------------------------------------------------------------------
# Wire layouts (fields after the message id)


def _b(x: bool) -> str:
    return "1" if x else "0"


def _f(x: float | str) -> str:
    if isinstance(x, str):
        return x
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def _qty(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _legs(o: FakeOrder) -> list[object]:
    """The combo legs block: count, then per leg conId, ratio, action, exchange, openClose (0: same
    as the parent), shortSaleSlot (0), designatedLocation (""), exemptCode (-1)."""
    out: list[object] = [len(o.legs)]
    for leg in o.legs:
        out += [leg.con_id, leg.ratio, leg.action, leg.exchange, 0, 0, "", -1]
    return out


def contract11(c: list[str]) -> list[str]:
    """conId, symbol, secType, lastTrade, strike, right, multiplier, exchange, currency,
    localSymbol, tradingClass (the 12 client fields without primaryExchange)."""
    return [c[0], c[1], c[2], c[3], c[4] or "0", c[5], c[6], c[7], c[9], c[10], c[11]]


@dataclass(frozen=True)
class WhatIf:
    """A what-if answer (``openOrder`` with ``whatIf`` set): margins and equity with loan before,
    change and after, and the commission, in the account's currency."""

    init_before: float
    maint_before: float
    equity_before: float
    init_change: float
    maint_change: float
    commission: float
    currency: str = "USD"

    def fields(self) -> list[str]:
        """The 14 fields from ``initMarginBefore`` to ``commissionCurrency``."""
        return [
            _f(self.init_before), _f(self.maint_before), _f(self.equity_before),
            _f(self.init_change), _f(self.maint_change), "0.0",
            _f(self.init_before + self.init_change), _f(self.maint_before + self.maint_change), _f(self.equity_before),
            _f(self.commission), _f(self.commission), _f(self.commission), self.currency,
        ]  # fmt: skip


def open_order_fields(o: FakeOrder, what_if: WhatIf | None = None) -> list[object]:
    """``openOrder`` (5) after the message id: 126 fields for a plain order at version 178; with
    ``what_if``, the answer to a what-if order (``whatIf`` 1, margins and commission filled in)."""
    state = what_if.fields() if what_if is not None else [""] * 13
    return [
        o.order_id, *contract11(o.contract),
        o.action, _qty(o.quantity), o.order_type, o.lmt_price, "", o.tif, "", o.account, "O", 0,
        o.order_ref, o.client_id, o.perm_id,
        "0", "0", "0", "", "",  # outsideRth, hidden, discretionaryAmt, goodAfterTime, sharesAllocation
        "", "", "",  # faGroup, faMethod, faPercentage
        "", "", "", "", "", 0, "", "", "",  # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm, shortSaleSlot, designatedLocation, exemptCode, auctionStrategy
        "", "", "", "", "", "",  # startingPrice, stockRefPrice, delta, stockRangeLower, stockRangeUpper, displaySize
        "0", "0", "0", "", "0", "0", "0", "",  # blockOrder, sweepToFill, allOrNone, minQty, ocaType, eTradeOnly, firmQuoteOnly, nbboPriceCap
        0, 0, "", "", "", "",  # parentId, triggerMethod, volatility, volatilityType, deltaNeutralOrderType, deltaNeutralAuxPrice
        "0", "", "", "", "", "", "",  # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, basisPoints, basisPointsType, comboLegsDescrip
        *_legs(o), 0, 0,  # combo legs, order combo legs, smart combo routing params
        "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        "0", "", "", "0", 0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, deltaNeutralContract present
        "",  # algoStrategy
        "0", _b(what_if is not None), o.status,  # solicited, whatIf, status
        *state,  # margin before / change / after (9); commission, minCommission, maxCommission, commissionCurrency
        "",  # warningText
        "0", "0",  # randomizeSize, randomizePrice
        0,  # conditions
        "", "", "", "", "", "", "", 0,  # adjustedOrderType, triggerPrice, trailStopPrice, lmtPriceOffset, adjustedStopPrice, adjustedStopLimitPrice, adjustedTrailingAmount, adjustableTrailingUnit
        "", "", "",  # softDollarTier name, value, displayName
        "", "0", "0", "0", "",  # cashQty, dontUseAutoPriceForHedge, isOmsContainer, discretionaryUpToLimitPrice, usePriceMgmtAlgo
        "", "", "0",  # duration (159), postToAts (160), autoCancelParent (162)
        "", "", "", "", "",  # minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsetAtWhole, midOffsetAtHalf (170)
    ]  # fmt: skip


def order_status_fields(o: FakeOrder) -> list[object]:
    """``orderStatus`` (3): orderId, status, filled, remaining, avgFillPrice, permId, parentId,
    lastFillPrice, clientId, whyHeld, mktCapPrice."""
    return [
        o.order_id, o.status, _qty(o.filled), _qty(o.remaining), _f(o.avg_price), o.perm_id, 0,
        _f(o.last_price), o.client_id, "", "0.0",
    ]  # fmt: skip


def completed_order_fields(o: FakeOrder) -> list[object]:
    """``completedOrder`` (101): no orderId and no clientId; 95 fields at version 178."""
    status = o.reason or o.status
    return [
        *contract11(o.contract),
        o.action, _qty(o.quantity), o.order_type, o.lmt_price, "", o.tif, "", o.account, "O", 0,
        o.order_ref, o.perm_id,
        "0", "0", "0", "",  # outsideRth, hidden, discretionaryAmt, goodAfterTime
        "", "", "",  # faGroup, faMethod, faPercentage
        "", "", "", "", "", 0, "", "",  # modelCode, goodTillDate, rule80A, percentOffset, settlingFirm, shortSaleSlot, designatedLocation, exemptCode
        "", "", "", "", "", "",  # startingPrice, stockRefPrice, delta, stockRangeLower, stockRangeUpper, displaySize
        "0", "0", "", "0", 0, "", "", "", "",  # sweepToFill, allOrNone, minQty, ocaType, triggerMethod, volatility, volatilityType, deltaNeutralOrderType, deltaNeutralAuxPrice
        "0", "", "", "", "",  # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, comboLegsDescrip
        *_legs(o), 0, 0,  # combo legs, order combo legs, smart combo routing params
        "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        "", "", "0", 0,  # clearingAccount, clearingIntent, notHeld, deltaNeutralContract present
        "",  # algoStrategy
        "0", o.status, "0", "0",  # solicited, status, randomizeSize, randomizePrice
        0,  # conditions
        "", "", "", "0", "0",  # trailStopPrice, lmtPriceOffset, cashQty, dontUseAutoPriceForHedge, isOmsContainer
        "", _qty(o.filled), 0, "0", "", "0", "0", 0,  # autoCancelDate, filledQuantity, refFuturesConId, autoCancelParent, shareholder, imbalanceOnly, routeMarketableToBbo, parentPermId
        o.completed_time, status,  # completedTime, completedStatus
        "", "", "", "", "",  # minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsetAtWhole, midOffsetAtHalf (170)
    ]  # fmt: skip


def exec_details_fields(req_id: int | str, o: FakeOrder, ex: FakeExecution) -> list[object]:
    """``execDetails`` (11): reqId (-1 for a live fill), orderId, contract (11), execution; a combo
    leg's execution names the leg's contract and side."""
    contract = ex.contract or o.contract
    side = ex.side or ("BOT" if o.action == "BUY" else "SLD")
    return [
        req_id, o.order_id, *contract11(contract),
        ex.exec_id, ex.time, o.account, contract[7] or "SMART", side,
        _qty(ex.shares), _f(ex.price), o.perm_id, o.client_id, 0, _qty(ex.cum_qty), _f(ex.avg_price),
        o.order_ref, "", "", "", 1, "0",  # evRule, evMultiplier, modelCode, lastLiquidity, pendingPriceRevision
    ]  # fmt: skip


def commission_fields(ex: FakeExecution, currency: str) -> list[object]:
    """``commissionReport`` (59): version, execId, commission, currency, realizedPNL, yield, redemption date."""
    return [1, ex.exec_id, _f(ex.commission), currency, "1.7976931348623157E308", "1.7976931348623157E308", ""]


def position_fields(account: str, p: FakePosition) -> list[object]:
    """``position`` (61): version 3, account, contract (11), position, avgCost."""
    return [3, account, *contract11(p.contract), _qty(p.quantity), _f(p.avg_cost)]


def portfolio_fields(account: str, p: FakePosition, price: float) -> list[object]:
    """``updatePortfolio`` (7): version 8, contract with primaryExchange, position, prices, P&L, account."""
    c = p.contract
    value = p.quantity * price * float(c[6] or 1)
    unrealized = value - p.quantity * p.avg_cost
    return [
        8, c[0], c[1], c[2], c[3], c[4] or "0", c[5], c[6], c[8], c[9], c[10], c[11],
        _qty(p.quantity), _f(price), _f(value), _f(p.avg_cost), _f(unrealized), "0.0", account,
    ]  # fmt: skip
