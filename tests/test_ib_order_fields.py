"""Promise 6 at the wire: every order IBBroker sends leaves TWS's own price-percentage check on.

``Order.overridePercentageConstraints = True`` asks TWS to skip its percentage constraint on the
order price, the broker-side collar behind the gate's ``price_collar``. The fake gateway decodes
the field from each placeOrder message (field 61 at server version 178), so the test reads what
went over the socket, not a Python attribute.
"""

from __future__ import annotations

import time

import pytest
from ib_async import IB, LimitOrder, Stock

from pipeline.adapters.ib.broker import IBBroker
from pipeline.execution import OrderPolicy
from pipeline.store.ledger import LEDGER_FILE, Ledger
from tests.test_ib_broker import INSTRUMENTS, config, new_fake, run


@pytest.fixture
def fake():
    with new_fake() as f:
        yield f


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / LEDGER_FILE).init()


def _wait_for_orders(fake, n: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while len(fake.orders()) < n and time.monotonic() < end:
        time.sleep(0.02)


def test_the_fake_decodes_the_override_flag_a_client_sets(fake):
    # the decoder's check: a raw ib_async order that does set the flag is read as True
    ib = IB()
    ib.connect("127.0.0.1", fake.port, clientId=77, timeout=5)
    try:
        contract = ib.qualifyContracts(Stock("AAPL", "SMART", "USD"))[0]
        order = LimitOrder(
            "BUY",
            1,
            190.0,
            orderRef="probe:override",
            overridePercentageConstraints=True,
        )
        ib.placeOrder(contract, order)
        plain = LimitOrder("BUY", 1, 190.0, orderRef="probe:plain")
        ib.placeOrder(contract, plain)
        _wait_for_orders(fake, 2)
    finally:
        ib.disconnect()
    decoded = {o.order_ref: o.override_percentage_constraints for o in fake.orders()}
    assert decoded == {"probe:override": True, "probe:plain": False}


@pytest.mark.parametrize("order_type", ["MKT", "LMT"])
def test_every_order_ibbroker_sends_keeps_the_percentage_constraints(
    fake, ledger, order_type
):
    with IBBroker(INSTRUMENTS, config(fake.port, order_type=order_type)) as broker:
        report = run(
            ledger,
            broker,
            {"AAPL": 10, "EURUSD": -20000, "ES": 2},
            policy=OrderPolicy(
                order_type=order_type, limit_offset=0.001, account=broker.account
            ),
        )
    assert report.counts["sent"] == 3
    orders = fake.orders()
    assert sorted(o.order_ref for o in orders) == [
        "carver:2024-01-02:AAPL:1",
        "carver:2024-01-02:ES:1",
        "carver:2024-01-02:EURUSD:1",
    ]
    assert {o.order_type for o in orders} == {order_type}
    assert [o.override_percentage_constraints for o in orders] == [False, False, False]
    # the raw field on the wire, for the record: "0" in every placeOrder message
    assert [f[61] for f in fake.placed()] == ["0", "0", "0"]
