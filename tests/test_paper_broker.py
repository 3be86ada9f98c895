"""The paper broker: fill prices with slippage, the CostModel commission, positions from the
ledger's fills, and at most one fill per order_ref. Expected numbers are hand-computed."""

import pandas as pd
import pytest

from pipeline.config import CostModel
from pipeline.execution.paper_broker import PaperBroker, commission
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.trading import Broker, BrokerError, OrderIntent, order_ref

COSTS = {
    "ES": CostModel(slippage=0.25, commission_per_unit=2.0, commission_min=0.0),
    "AAPL": CostModel(slippage=0.01, commission_per_unit=0.005, commission_min=1.0),
    "EURUSD": CostModel(slippage=0.00005, commission_pct=0.00002, commission_min=2.0),
}
POINT_SIZES = {"ES": 50.0, "AAPL": 1.0, "EURUSD": 1.0}


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / LEDGER_FILE).init()


@pytest.fixture
def broker(ledger):
    return PaperBroker(ledger, COSTS, POINT_SIZES)


def intent(instrument, quantity, seq=1, session="2024-01-02"):
    return OrderIntent(
        order_ref=order_ref("carver", session, instrument, seq), strategy="carver", session=pd.Timestamp(session),
        instrument=instrument, seq=seq, quantity=quantity, reference_price=100.0,
    )


def test_paper_broker_satisfies_the_broker_protocol(broker):
    assert isinstance(broker, Broker)
    assert broker.name == "paper"


def test_a_buy_pays_the_slippage_and_the_per_contract_commission(broker):
    # ES buy 3 at 4500: price 4500 + 0.25 = 4500.25; commission max(3 x 2, 0, 0) = 6;
    # slippage cost 3 x 0.25 x 50 = 37.5 USD
    order = broker.submit(intent("ES", 3.0), 4500.0)
    assert order.status == "FILLED" and order.filled == 3.0 and order.remaining == 0.0
    [fill] = order.fills
    assert (fill.quantity, fill.price, fill.commission, fill.slippage_cost) == (3.0, 4500.25, 6.0, 37.5)
    assert fill.fill_id == "paper:carver:2024-01-02:ES:1"
    assert str(fill.filled_at.tz) == "UTC"


def test_a_sell_receives_less_by_the_slippage(broker):
    # AAPL sell 100 at 190: price 190 - 0.01 = 189.99; commission max(100 x 0.005 = 0.5, min 1) = 1
    [fill] = broker.submit(intent("AAPL", -100.0), 190.0).fills
    assert fill.price == pytest.approx(189.99)
    assert fill.commission == 1.0
    assert fill.slippage_cost == pytest.approx(1.0)  # 100 x 0.01 x 1


def test_commission_takes_the_percentage_when_it_is_the_largest():
    # EURUSD 200000 units at 1.10: pct 0.00002 x 200000 x 1.10 x 1 = 4.4 > min 2 > per-unit 0
    assert commission(-200_000, 1.10, 1.0, COSTS["EURUSD"]) == pytest.approx(4.4)
    # 50000 units: pct = 1.1 < min 2
    assert commission(50_000, 1.10, 1.0, COSTS["EURUSD"]) == 2.0


def test_submitting_the_same_order_ref_twice_fills_once(broker, ledger):
    [first] = broker.submit(intent("ES", 3.0), 4500.0).fills
    [second] = broker.submit(intent("ES", 3.0), 4600.0).fills  # a retry of the same order, later price
    assert second.price == first.price == 4500.25
    assert len(ledger.fills()) == 1
    assert broker.positions().to_dict() == {"ES": 3.0}


def test_positions_are_the_sum_of_the_fills_and_flat_instruments_are_dropped(broker):
    # ES: +3 then -1 = 2; AAPL: +100 then -100 = 0 (dropped)
    broker.submit(intent("ES", 3.0, seq=1), 4500.0)
    broker.submit(intent("ES", -1.0, seq=2), 4510.0)
    broker.submit(intent("AAPL", 100.0, seq=1), 190.0)
    broker.submit(intent("AAPL", -100.0, seq=2), 191.0)
    assert broker.positions().to_dict() == {"ES": 2.0}


def test_a_new_account_is_flat(broker):
    positions = broker.positions()
    assert positions.empty and positions.index.name == "instrument"


def test_positions_fail_closed_when_the_ledger_cannot_be_read(tmp_path):
    broker = PaperBroker(Ledger(tmp_path / "missing.duckdb"), COSTS, POINT_SIZES)
    with pytest.raises(BrokerError, match="positions unreadable"):
        broker.positions()


def test_find_by_order_ref_returns_the_stored_fill_or_none(broker):
    [fill] = broker.submit(intent("ES", 2.0), 4500.0).fills
    assert broker.find_by_order_ref(fill.order_ref) == fill
    assert broker.lookup(fill.order_ref).fills == (fill,)
    assert broker.lookup("carver:2024-01-02:ES:2") is None
    assert broker.find_by_order_ref("carver:2024-01-02:ES:2") is None


def test_the_submit_marks_the_ledger_intent_filled(broker, ledger):
    rows = pd.DataFrame(
        [dict(order_ref="carver:2024-01-02:ES:1", strategy="carver", session="2024-01-02", instrument="ES", seq=1,
              quantity=2.0, side="BUY", order_type="MKT", reference_price=4500.0, target_position=2.0,
              position_before=0.0, status="INTENT", mode="submit")]
    )
    ledger.record_intents(rows)
    broker.submit(intent("ES", 2.0), 4500.0)
    assert ledger.intents()["status"].iloc[0] == "FILLED"


def test_working_orders_are_always_empty_with_the_expected_columns(broker):
    working = broker.working_orders()
    assert working.empty and list(working.columns) == ["order_ref", "instrument", "quantity"]


def test_an_instrument_without_a_cost_model_is_refused(broker, ledger):
    with pytest.raises(BrokerError, match="no cost model"):
        broker.submit(intent("ZN", 1.0), 110.0)
    assert ledger.fills().empty


@pytest.mark.parametrize("quantity, price", [(0.0, 100.0), (1.0, float("nan"))])
def test_a_zero_quantity_or_missing_price_is_refused(broker, quantity, price):
    with pytest.raises(BrokerError):
        broker.submit(intent("AAPL", quantity), price)
