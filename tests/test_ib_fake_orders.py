"""The fake gateway's broker side, exercised with the real ib_async client over a real socket.

These pin what the order path relies on: statuses, permIds, execIds, commissions and pushed
positions of a fill; partial fills; rejects (201); cancels (202 / 10147); open orders of every
client; completed orders (no orderId); executions on a fresh connection; the duplicate client id
(326); and orders and positions surviving a gateway restart while order ids start again.
"""

from __future__ import annotations

import pytest
from ib_async import IB, LimitOrder, MarketOrder, Stock

from pipeline.adapters.ib.fake_gateway import FakeContract, FakeTWS, OrderBook
from pipeline.adapters.ib.fake_gateway.book import (
    completed_order_fields,
    open_order_fields,
)

AAPL = FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ")
ACCOUNT = "DU1234567"


def make_fake(**kwargs) -> FakeTWS:
    fake = FakeTWS(**kwargs)
    fake.add(AAPL)
    fake.set_price("AAPL", 190.0)
    return fake


def connect(port: int, client_id: int) -> IB:
    ib = IB()
    ib.RaiseRequestErrors = True
    ib.RequestTimeout = 5
    ib.connect("127.0.0.1", port, clientId=client_id, timeout=3, raiseSyncErrors=True)
    return ib


def settle(ib: IB, trade, done=True, seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if (trade.isDone() if done else trade.orderStatus.status not in ("PendingSubmit", "")):
            break
        ib.sleep(0.01)
    ib.sleep(0.05)  # the commission report and the pushed position follow


def stock(ib: IB) -> Stock:
    c = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(c)
    return c


@pytest.fixture
def fake():
    with make_fake() as f:
        yield f


def test_a_market_order_fills_with_one_permid_execid_commission_and_pushed_position(fake):
    ib = connect(fake.port, 3)
    try:
        trade = ib.placeOrder(stock(ib), MarketOrder("BUY", 10, orderRef="carver:2024-01-02:AAPL:1", account=ACCOUNT, tif="DAY"))
        settle(ib, trade)
        assert [e.status for e in trade.log] == ["PendingSubmit", "Submitted", "Submitted", "Filled"]
        assert (trade.orderStatus.filled, trade.orderStatus.remaining, trade.orderStatus.avgFillPrice) == (10.0, 0.0, 190.0)
        [fill] = trade.fills
        assert fill.execution.permId == trade.order.permId == trade.orderStatus.permId == 900_000_001
        assert fill.execution.orderRef == "carver:2024-01-02:AAPL:1" and fill.execution.side == "BOT"
        assert fill.commissionReport.commission == 1.0  # max(1.0 minimum, 0.005 x 10)
        [pos] = ib.positions()
        assert (pos.account, pos.contract.conId, pos.position, pos.avgCost) == (ACCOUNT, 265598, 10.0, 190.0)
        [item] = ib.portfolio()
        assert (item.position, item.marketValue) == (10.0, 1900.0)
    finally:
        ib.disconnect()
    # the order as the broker holds it: account, tif and orderRef as sent
    [order] = fake.orders()
    assert (order.account, order.tif, order.order_ref, order.status) == (ACCOUNT, "DAY", "carver:2024-01-02:AAPL:1", "Filled")


def test_a_partial_fill_rests_and_is_seen_by_every_client_but_as_own_order_only_by_its_own(fake):
    fake.fill_ratio, fake.after_partial = 0.3, "rest"
    a, b = connect(fake.port, 3), connect(fake.port, 4)
    try:
        trade = a.placeOrder(stock(a), MarketOrder("SELL", 10, orderRef="carver:2024-01-02:AAPL:1", account=ACCOUNT))
        settle(a, trade, done=False)
        a.sleep(0.1)
        assert (trade.orderStatus.status, trade.orderStatus.filled, trade.orderStatus.remaining) == ("Submitted", 3.0, 7.0)
        assert [t.order.orderRef for t in b.reqAllOpenOrders()] == ["carver:2024-01-02:AAPL:1"]
        assert b.reqOpenOrders() == []  # reqOpenOrders: this client's orders only
        assert fake.position("AAPL") == -3.0
    finally:
        a.disconnect()
        b.disconnect()


def test_completed_orders_carry_ref_and_permid_but_no_orderid_and_executions_their_commission(fake):
    first = connect(fake.port, 3)
    trade = first.placeOrder(stock(first), MarketOrder("BUY", 400, orderRef="carver:2024-01-02:AAPL:1", account=ACCOUNT))
    settle(first, trade)
    first.disconnect()
    fresh = connect(fake.port, 3)  # a restart of the client: in-memory trades are gone
    try:
        [done] = fresh.reqCompletedOrders(apiOnly=False)
        assert (done.order.orderRef, done.order.permId, done.order.orderId) == ("carver:2024-01-02:AAPL:1", trade.order.permId, 0)
        assert done.orderStatus.status == "Filled" and done.order.filledQuantity == 400
        [execution] = fresh.reqExecutions()
        assert execution.execution.orderRef == "carver:2024-01-02:AAPL:1"
        # the commission report follows its execution; ib_async files it under the execId
        known = {f.execution.execId: f for f in fresh.fills()}
        assert known[execution.execution.execId].commissionReport.commission == 2.0  # 0.005 x 400
    finally:
        fresh.disconnect()


def test_a_reject_by_order_ref_is_error_201_and_other_orders_still_fill(fake):
    fake.reject("insufficient margin", order_ref="carver:2024-01-02:AAPL:2")
    ib = connect(fake.port, 3)
    try:
        c = stock(ib)
        ok = ib.placeOrder(c, MarketOrder("BUY", 1, orderRef="carver:2024-01-02:AAPL:1", account=ACCOUNT))
        bad = ib.placeOrder(c, MarketOrder("BUY", 1, orderRef="carver:2024-01-02:AAPL:2", account=ACCOUNT))
        settle(ib, bad)
        settle(ib, ok)
        assert ok.orderStatus.status == "Filled"
        assert bad.orderStatus.status == "Cancelled"
        assert [e.errorCode for e in bad.log if e.errorCode] == [201]
        assert "insufficient margin" in bad.log[1].message
    finally:
        ib.disconnect()


def test_cancel_answers_202_and_an_unknown_order_10147(fake):
    errors = []
    ib = connect(fake.port, 3)
    ib.errorEvent += lambda req_id, code, text, contract: errors.append((req_id, code))
    try:
        trade = ib.placeOrder(stock(ib), LimitOrder("BUY", 5, 150.0, orderRef="carver:2024-01-02:AAPL:1", account=ACCOUNT))
        settle(ib, trade, done=False)
        assert trade.orderStatus.status == "Submitted"  # a buy limit below the market rests
        ib.cancelOrder(trade.order)
        settle(ib, trade)
        assert trade.orderStatus.status == "Cancelled"
        ib.client.cancelOrder(9999)
        ib.sleep(0.1)
        assert (trade.order.orderId, 202) in errors and (9999, 10147) in errors
    finally:
        ib.disconnect()


def test_a_client_id_already_connected_gets_326_and_the_connect_times_out(fake):
    first = connect(fake.port, 7)
    second = IB()
    try:
        with pytest.raises((TimeoutError, ConnectionError)):
            second.connect("127.0.0.1", fake.port, clientId=7, timeout=1, raiseSyncErrors=True)
        assert fake.connections == 1
    finally:
        second.disconnect()
        first.disconnect()


def test_after_a_gateway_restart_orders_and_positions_persist_and_order_ids_start_again():
    book = OrderBook()
    with make_fake(book=book) as before:
        ib = connect(before.port, 3)
        t1 = ib.placeOrder(stock(ib), MarketOrder("BUY", 10, orderRef="carver:2024-01-02:AAPL:1", account=ACCOUNT))
        settle(ib, t1)
        ib.disconnect()
    with make_fake(book=book) as after:  # same broker state, nextValidId back at 1
        ib = connect(after.port, 3)
        try:
            assert [p.position for p in ib.reqPositions()] == [10.0]
            t2 = ib.placeOrder(stock(ib), MarketOrder("BUY", 5, orderRef="carver:2024-01-03:AAPL:1", account=ACCOUNT))
            settle(ib, t2)
            assert t2.order.orderId == t1.order.orderId  # the id is handed out again ...
            assert t2.order.permId != t1.order.permId  # ... the permId never is
            refs = {t.order.permId: t.order.orderRef for t in ib.reqCompletedOrders(apiOnly=False)}
            assert refs == {t1.order.permId: "carver:2024-01-02:AAPL:1", t2.order.permId: "carver:2024-01-03:AAPL:1"}
            assert after.position("AAPL") == 15.0
        finally:
            ib.disconnect()


def test_open_and_completed_order_layouts_have_the_field_counts_of_server_version_178():
    # IB reference notes section 2.4/2.5: 126 fields after the message id for a plain openOrder,
    # 95 for completedOrder; ib_async's *fields unpacking would hide a surplus, so count them.
    book = OrderBook()
    fake = FakeTWS(book=book)
    from pipeline.adapters.ib.fake_gateway.book import FakeOrder

    order = FakeOrder(1, 3, 1, 1, ["265598", "AAPL", "STK", "", "0", "", "", "SMART", "NASDAQ", "USD", "AAPL", "NMS"],
                      "BUY", 10, "MKT", "", "DAY", ACCOUNT, "carver:2024-01-02:AAPL:1")
    assert len(open_order_fields(order)) == 126
    assert len(completed_order_fields(order)) == 95
    assert fake.book is book
