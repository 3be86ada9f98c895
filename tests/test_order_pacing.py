"""Orders paced, not refused (issue 16): a run sends every accepted order, evenly spaced under the
gate's order-rate throttle and the broker's message rate, instead of firing them all and having
the throttle deny the rest. A long throttle window stays a budget the gate enforces."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.adapters.ib.broker import IBBroker
from pipeline.adapters.ib.fake_gateway import FakeContract, FakeTWS
from pipeline.config import BrokerConfig, IBConnection, Instrument, RiskLimits
from pipeline.execution import OrderPolicy, execute_orders
from pipeline.execution.pacing import OrderPacer, paced_rate
from pipeline.execution.paper_broker import PaperBroker
from pipeline.store.ledger import LEDGER_FILE, Ledger

SESSION = "2024-01-02"
N = 500
SYMBOLS = [f"S{i:03d}" for i in range(N)]
#: The default throttle (100 orders within 1 s) and limits that let every order of the test through.
LIMITS = RiskLimits(max_order_quantity=1_000, max_order_notional=1_000_000, max_position=1_000)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(("limit", "window", "broker_rate", "rate"), [
    (100, 1.0, None, 90.0),      # a rate: 90% of it
    (100, 1.0, 40.0, 40.0),      # IB's own order rate is lower
    (2, 60.0, None, None),       # a budget: enforced when planning, not paced
    (2, 60.0, 40.0, 40.0),
    (10, 10.0, None, 0.9),       # the longest window still paced
])
def test_the_paced_rate_is_ninety_percent_of_a_short_throttle_and_never_above_the_broker(limit, window, broker_rate, rate):
    limits = RiskLimits(max_orders_per_window=limit, order_window_seconds=window)
    assert paced_rate(limits, broker_rate) == rate


def test_the_pacer_spaces_sends_evenly_and_keeps_every_window_under_the_limit():
    clock = FakeClock()
    pacer = OrderPacer(90.0, clock=clock, sleep=clock.sleep)
    worst = 0
    for _ in range(500):
        pacer.wait()
        pacer.sent()
        worst = max(worst, pacer.sent_within(1.0))
    assert clock.now == pytest.approx(499 / 90.0)  # the first leaves at once, then one every 1/90 s
    assert worst <= 91 < 100  # at most rate x window + 1 in any window (float spacing)


def test_five_hundred_intents_through_the_paper_broker_are_all_sent_none_denied_for_rate(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_FILE).init()
    instruments = [Instrument(symbol=s) for s in SYMBOLS]
    targets, prices = pd.Series(1.0, index=SYMBOLS), pd.Series(10.0, index=SYMBOLS)
    report = execute_orders(targets, prices, SESSION, ledger=ledger, broker=PaperBroker.for_universe(ledger, instruments),
                            limits=LIMITS, point_sizes=dict.fromkeys(SYMBOLS, 1.0), strategy="carver", submit=True,
                            run_id="rebalance")
    assert report.counts["sent"] == report.counts["filled"] == N
    assert report.counts["denied"] == 0
    assert not ledger.intents()["deny_reason"].fillna("").str.startswith("order_rate").any()


def test_five_hundred_intents_through_the_fake_gateway_never_trip_its_message_rate(tmp_path):
    ledger = Ledger(tmp_path / LEDGER_FILE).init()
    instruments = [Instrument(symbol=s) for s in SYMBOLS]
    with FakeTWS() as fake:
        for i, s in enumerate(SYMBOLS):
            fake.add(FakeContract(s, "STK", "SMART", "USD", 1_000 + i, primary_exchange="NYSE"))
            fake.set_price(s, 10.0)
        cfg = BrokerConfig(mode="ib", execution="paper", ib=IBConnection(port=fake.port, client_id=201, timeout=10.0),
                           paper_ports=[fake.port], order_timeout=5.0, fill_wait=1.0)
        with IBBroker(instruments, cfg) as broker:
            report = execute_orders(
                pd.Series(1.0, index=SYMBOLS), pd.Series(10.0, index=SYMBOLS), SESSION, ledger=ledger, broker=broker,
                limits=LIMITS, point_sizes=dict.fromkeys(SYMBOLS, 1.0), strategy="carver", submit=True,
                run_id="rebalance", policy=OrderPolicy(account=broker.account))
        assert report.counts["sent"] == report.counts["filled"] == N and report.counts["denied"] == 0
        assert fake.rate_violations == 0  # TWS's error 100 never answered
        assert len(fake.orders()) == N and all(fake.position(s) == 1.0 for s in SYMBOLS[:5])


def test_the_fake_gateway_answers_a_flood_beyond_fifty_messages_a_second_with_error_100():
    from ib_async import IB

    with FakeTWS() as fake:
        ib = IB()
        ib.connect("127.0.0.1", fake.port, clientId=5, timeout=5)
        try:
            ib.client.MaxRequests = 0  # switch off ib_async's own throttle (45 a second) to flood TWS
            for _ in range(120):
                ib.client.reqCurrentTime()
            ib.sleep(0.5)
        finally:
            ib.disconnect()
        assert fake.rate_violations > 0
