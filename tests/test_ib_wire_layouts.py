"""The fake gateway's order messages decoded by IB's official Python client (``ibapi-stable``).

ib_async unpacks messages with ``*fields`` and so hides a surplus or a shifted field; IB's own
decoder reads every field with its type (an int field holding ``10.0`` or a bool holding ``None``
fails). Each message is decoded at server version 178 and the iterator must then be exhausted.
"""

from __future__ import annotations

import pytest

ibapi = pytest.importorskip("ibapi")  # test extra: ibapi-stable
from ibapi.decoder import Decoder
from ibapi.wrapper import EWrapper

from pipeline.adapters.ib.fake_gateway.book import (
    FakeExecution,
    FakeOrder,
    FakePosition,
    WhatIf,
    commission_fields,
    completed_order_fields,
    exec_details_fields,
    open_order_fields,
    order_status_fields,
    portfolio_fields,
    position_fields,
)
from pipeline.adapters.ib.fake_gateway.server import SERVER_VERSION, encode

CONTRACT = ["265598", "AAPL", "STK", "", "0", "", "", "SMART", "NASDAQ", "USD", "AAPL", "NMS"]


class Recorder(EWrapper):
    def __init__(self):
        super().__init__()
        self.calls = []

    def openOrder(self, orderId, contract, order, orderState):
        self.calls.append(("openOrder", orderId, contract, order, orderState))

    def orderStatus(self, orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice,
                    clientId, whyHeld, mktCapPrice):
        self.calls.append(("orderStatus", orderId, status, filled, remaining, avgFillPrice, permId, clientId))

    def completedOrder(self, contract, order, orderState):
        self.calls.append(("completedOrder", contract, order, orderState))

    def execDetails(self, reqId, contract, execution):
        self.calls.append(("execDetails", reqId, contract, execution))

    def commissionAndFeesReport(self, report):
        self.calls.append(("commission", report))

    def position(self, account, contract, position, avgCost):
        self.calls.append(("position", account, contract, position, avgCost))

    def updatePortfolio(self, contract, position, marketPrice, marketValue, averageCost, unrealizedPNL,
                        realizedPNL, accountName):
        self.calls.append(("portfolio", contract, position, marketPrice, marketValue, accountName))

    def error(self, *args):
        raise AssertionError(f"the decoder reported an error: {args}")


def decode(msg_id: int, fields: list) -> tuple:
    """Frame the message as the fake sends it, then decode it as ibapi's reader would."""
    body = encode(msg_id, *fields)[4:]
    parts = tuple(body.split(b"\0")[:-1])
    assert int(parts[0]) == msg_id
    recorder = Recorder()
    decoder = Decoder(recorder, SERVER_VERSION)
    it = iter(parts[1:])
    decoder.msgId2handleInfo[msg_id].processMeth(decoder, it)
    assert list(it) == [], "fields left over: the layout has a surplus field"
    [call] = recorder.calls
    return call


def an_order(**kw) -> FakeOrder:
    o = FakeOrder(900000001, 7, 201, 1, list(CONTRACT), "BUY", 10.0, "LMT", "190.19", "DAY", "DU1234567",
                  "carver:2024-01-02:AAPL:1")
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def test_open_order_decodes_field_by_field():
    _, order_id, contract, order, state = decode(5, open_order_fields(an_order(status="Submitted")))
    assert (order_id, contract.conId, contract.symbol, contract.secType) == (7, 265598, "AAPL", "STK")
    assert (order.action, float(order.totalQuantity), order.orderType, order.lmtPrice) == ("BUY", 10.0, "LMT", 190.19)
    assert (order.tif, order.account, order.orderRef, order.clientId, order.permId) == (
        "DAY", "DU1234567", "carver:2024-01-02:AAPL:1", 201, 900000001)
    assert state.status == "Submitted"


def test_a_what_if_answer_decodes_with_its_margins_and_commission():
    answer = WhatIf(init_before=1000.0, maint_before=500.0, equity_before=1e6, init_change=950.0, maint_change=475.0,
                    commission=1.0)
    _, order_id, _, order, state = decode(5, open_order_fields(an_order(status="PreSubmitted"), answer))
    assert order_id == 7 and order.whatIf is True and state.status == "PreSubmitted"
    assert (float(state.initMarginChange), float(state.maintMarginChange), float(state.initMarginAfter)) == (950.0, 475.0, 1950.0)
    assert (state.commissionAndFees, state.commissionAndFeesCurrency) == (1.0, "USD")


def test_order_status_decodes():
    call = decode(3, order_status_fields(an_order(status="Filled", filled=10.0, avg_price=190.0, last_price=190.0)))
    assert call == ("orderStatus", 7, "Filled", 10.0, 0.0, 190.0, 900000001, 201)


def test_completed_order_decodes_without_order_id():
    _, contract, order, state = decode(101, completed_order_fields(
        an_order(status="Filled", filled=10.0, completed_time="20240102 21:00:00 UTC")))
    assert (contract.symbol, order.orderRef, order.permId, float(order.filledQuantity)) == (
        "AAPL", "carver:2024-01-02:AAPL:1", 900000001, 10.0)
    assert (state.status, state.completedStatus, state.completedTime) == ("Filled", "Filled", "20240102 21:00:00 UTC")


def test_exec_details_and_commission_decode():
    ex = FakeExecution("0000e0d5.1.0001.01", "20240102 21:00:00 UTC", 10.0, 190.0, 10.0, 190.0, 1.0)
    _, req_id, contract, execution = decode(11, exec_details_fields(-1, an_order(), ex))
    assert (req_id, contract.conId, execution.execId, execution.side, float(execution.shares), execution.price) == (
        -1, 265598, "0000e0d5.1.0001.01", "BOT", 10.0, 190.0)
    assert (execution.permId, execution.clientId, execution.orderRef) == (900000001, 201, "carver:2024-01-02:AAPL:1")
    _, report = decode(59, commission_fields(ex, "USD"))
    assert (report.execId, report.commissionAndFees, report.currency) == ("0000e0d5.1.0001.01", 1.0, "USD")


def test_position_and_portfolio_decode():
    p = FakePosition(list(CONTRACT), -3.0, 190.0)
    _, account, contract, position, avg_cost = decode(61, position_fields("DU1234567", p))
    assert (account, contract.conId, float(position), avg_cost) == ("DU1234567", 265598, -3.0, 190.0)
    _, contract, position, price, value, account = decode(7, portfolio_fields("DU1234567", p, 195.0))
    assert (contract.symbol, float(position), price, value, account) == ("AAPL", -3.0, 195.0, -585.0, "DU1234567")
