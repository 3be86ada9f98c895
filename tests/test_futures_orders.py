"""Futures orders to dated contract months, split by roll state (issue 18).

An instrument's trade (target - position) is routed by its roll state into orders to dated
contracts: No_Roll and Roll_Adjusted trade the priced month, Passive reduces the priced month and
opens in the forward, Force rolls the whole priced position with one calendar spread (a BAG at IB),
Force_Outright with two outright orders, Close and No_Open refuse what would increase. Each order
has its own orderRef naming the contract; a re-run of a session sends nothing. With the paper
broker, and with the IB broker and the real ib_async client against the fake gateway (whose book
says what it received: never a CONTFUT).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from ib_async import IB, Future

from pipeline.adapters.ib.broker import IBBroker, refuse_continuous_future
from pipeline.adapters.ib.fake_gateway import MCL, FakeTWS
from pipeline.config import Instrument, RiskLimits
from pipeline.execution import execute_orders
from pipeline.execution.paper_broker import PaperBroker
from pipeline.futures.roll_orders import order_contracts, split_by_roll_state
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.trading import BrokerError, parse_order_ref
from tests.test_ib_broker import config

SESSION = "2023-10-02"  # MCL: 202311 expires 2023-10-19; the fake prices 202312 and 202401
ROLLS = {"hold_roll_cycle": "FGHJKMNQUVXZ", "priced_roll_cycle": "FGHJKMNQUVXZ", "roll_offset_days": -40,
         "expiry_offset": 19}
INSTRUMENTS = [
    Instrument(symbol="MCL", sec_type="FUT", exchange="NYMEX", point_size=100, calendar="CMES", rolls=ROLLS),
    Instrument(symbol="AAPL"),
]
POINT_SIZES = {"MCL": 100.0, "AAPL": 1.0}
LIMITS = RiskLimits(max_order_quantity=1000, max_order_notional=10_000_000, max_position=1000)
PRICED, FORWARD = "202312", "202401"


def routes(state: str, priced_price: float = 75.0, forward_price: float = 74.5) -> pd.DataFrame:
    return pd.DataFrame({"state": [state], "priced_contract": [PRICED], "forward_contract": [FORWARD],
                         "priced_price": [priced_price], "forward_price": [forward_price]},
                        index=pd.Index(["MCL"], name="instrument"))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / LEDGER_FILE).init()


def run(ledger, broker, targets, state, session=SESSION, run_id="run", prices=(75.0, 74.5)):
    return execute_orders(
        pd.Series(targets, dtype=float), pd.Series({"MCL": prices[0], "AAPL": 190.0}), session, ledger=ledger,
        broker=broker, limits=LIMITS, point_sizes=POINT_SIZES, strategy="carver", submit=True, run_id=run_id,
        futures_routes=routes(state, *prices),
    )


def sent(report) -> list[tuple[str, float, str]]:
    rows = report.intents
    return list(zip(rows["order_ref"], rows["quantity"].astype(float), rows["status"], strict=True))


# --- the split -------------------------------------------------------------------------------------

def test_the_split_of_an_instrument_trade_by_roll_state():
    frame = pd.DataFrame({
        "state": ["No_Roll", "Passive", "Passive", "Force", "Force_Outright", "Close", "No_Open", "Roll_Adjusted"],
        "trade": [2, -2, 5, 1, -1, 2, -5, 1],
        "priced_position": [3, 3, 3, 3, 3, 3, 3, 0],
        "forward_position": [0, 0, 0, 0, 0, 0, 1, 3],
    })
    out = split_by_roll_state(frame)[["priced_trade", "spread", "forward_trade", "refused"]]
    assert out.to_numpy().tolist() == [
        [2, 0, 0, 0],     # No_Roll: the priced month
        [-2, 0, 0, 0],    # Passive: a reducing trade in the priced month
        [0, 0, 5, 0],     # Passive: an increasing trade in the forward
        [0, 3, 1, 0],     # Force: spread of the whole priced position, the instrument trade in the forward
        [-3, 0, 2, 0],    # Force_Outright: the spread's legs as outrights (forward netted with the trade)
        [0, 0, 0, 2],     # Close: nothing that increases
        [-3, 0, -1, -1],  # No_Open: close priced 3, reduce forward 1, refuse 1
        [1, 0, 0, 0],     # Roll_Adjusted: the (switched) priced month
    ]


def test_roll_adjusted_trades_the_contract_rolled_into_until_the_multiple_prices_move():
    contracts = pd.DataFrame({"priced_contract": [PRICED, PRICED], "forward_contract": [FORWARD, FORWARD],
                              "priced_price": [75.0, 75.0], "forward_price": [74.5, 74.5]},
                             index=pd.Index(["MCL", "CL"], name="instrument"))
    out = order_contracts(contracts, pd.Series({"MCL": "Roll_Adjusted", "CL": "Roll_Adjusted"}),
                          pd.Series({"MCL": -3, "CL": 40}))
    assert out.loc["MCL", ["priced_contract", "priced_price"]].tolist() == [FORWARD, 74.5]  # not switched yet
    assert out.loc["CL", ["priced_contract", "forward_contract"]].tolist() == [PRICED, FORWARD]  # switched
    assert pd.isna(out.loc["MCL", "forward_contract"]) and pd.isna(out.loc["MCL", "forward_price"])


# --- paper broker ----------------------------------------------------------------------------------

def test_paper_passive_reduces_the_priced_month_and_opens_in_the_forward(ledger):
    broker = PaperBroker.for_universe(ledger, INSTRUMENTS)
    first = run(ledger, broker, {"MCL": 5, "AAPL": 10}, "No_Roll", "2023-10-02")
    assert sent(first) == [("carver:2023-10-02:AAPL:1", 10.0, "FILLED"), ("carver:2023-10-02:MCL:202312:1", 5.0, "FILLED")]
    reduce = run(ledger, broker, {"MCL": 3}, "Passive", "2023-10-03")
    assert sent(reduce) == [("carver:2023-10-03:MCL:202312:1", -2.0, "FILLED")]
    increase = run(ledger, broker, {"MCL": 6}, "Passive", "2023-10-04")
    assert sent(increase) == [("carver:2023-10-04:MCL:202401:1", 3.0, "FILLED")]
    assert increase.intents["reference_price"].tolist() == [74.5]  # the forward month's own price
    assert broker.contract_positions().to_dict() == {("AAPL", "AAPL"): 10.0, ("MCL", PRICED): 3.0, ("MCL", FORWARD): 3.0}
    assert ledger.expected_positions("paper").to_dict() == {"AAPL": 10.0, "MCL": 6.0}  # the sizing path's sums
    assert ledger.position_breaks().empty


def test_paper_force_rolls_with_one_spread_and_a_rerun_sends_nothing(ledger):
    broker = PaperBroker.for_universe(ledger, INSTRUMENTS)
    run(ledger, broker, {"MCL": 4}, "No_Roll", "2023-10-02")
    roll = run(ledger, broker, {"MCL": 5}, "Force", "2023-10-03")
    assert sent(roll) == [("carver:2023-10-03:MCL:202312_202401:1", 4.0, "FILLED"),
                          ("carver:2023-10-03:MCL:202401:2", 1.0, "FILLED")]
    spread = ledger.intents(session="2023-10-03").iloc[0]
    assert (spread["contract"], spread["spread_contract"], spread["roll_state"]) == (PRICED, FORWARD, "Force")
    assert (spread["reference_price"], spread["avg_fill_price"], spread["filled_quantity"]) == (-0.5, -0.5, 4.0)
    legs = ledger.fills(order_ref=spread["order_ref"])
    assert legs[["contract", "quantity", "price"]].to_numpy().tolist() == [[PRICED, -4.0, 75.0], [FORWARD, 4.0, 74.5]]
    assert broker.contract_positions().to_dict() == {("MCL", FORWARD): 5.0}
    again = run(ledger, broker, {"MCL": 5}, "Force", "2023-10-03", run_id="rerun")
    assert again.counts["planned"] == 0 and again.counts["sent"] == 0
    assert parse_order_ref("carver:2023-10-03:MCL:202312_202401:1").contract == "202312_202401"


def test_paper_force_outright_sends_two_outrights(ledger):
    broker = PaperBroker.for_universe(ledger, INSTRUMENTS)
    run(ledger, broker, {"MCL": -3}, "No_Roll", "2023-10-02")
    roll = run(ledger, broker, {"MCL": -3}, "Force_Outright", "2023-10-03")
    assert sent(roll) == [("carver:2023-10-03:MCL:202312:1", 3.0, "FILLED"), ("carver:2023-10-03:MCL:202401:2", -3.0, "FILLED")]
    assert broker.contract_positions().to_dict() == {("MCL", FORWARD): -3.0}


def test_paper_close_and_no_open_refuse_what_increases(ledger):
    broker = PaperBroker.for_universe(ledger, INSTRUMENTS)
    run(ledger, broker, {"MCL": 4}, "No_Roll", "2023-10-02")
    close = run(ledger, broker, {"MCL": 7}, "Close", "2023-10-03")
    assert sent(close) == [("carver:2023-10-03:MCL:202312:1", 3.0, "DENIED")]
    assert close.intents["deny_reason"].iloc[0].startswith("roll state Close: only close the priced contract")
    partly = run(ledger, broker, {"MCL": 1}, "Close", "2023-10-04")
    assert sent(partly) == [("carver:2023-10-04:MCL:202312:1", -3.0, "FILLED")]
    no_open = run(ledger, broker, {"MCL": -2}, "No_Open", "2023-10-05")  # 1 closes, the 2 short are refused
    assert sent(no_open) == [("carver:2023-10-05:MCL:202312:1", -1.0, "FILLED"), ("carver:2023-10-05:MCL:202312:2", -2.0, "DENIED")]
    assert broker.contract_positions().empty
    again = run(ledger, broker, {"MCL": -2}, "No_Open", "2023-10-05", run_id="rerun")
    assert again.counts["recorded"] == 0 and again.counts["unchanged"] == 1  # the denial is not piled up


# --- IB broker against the fake gateway -----------------------------------------------------------

def _close(port: int, month: str) -> float:
    ib = IB()
    ib.connect("127.0.0.1", port, clientId=77, timeout=5)
    try:
        [c] = ib.qualifyContracts(Future("MCL", month, "NYMEX", currency="USD"))
        return ib.reqHistoricalData(c, "", "5 D", "1 day", "TRADES", True, timeout=0)[-1].close
    finally:
        ib.disconnect()


@pytest.fixture
def fake():
    with FakeTWS(session=SESSION) as f:
        f.add_future(MCL, "2023-01", "2024-12")
        yield f


def ib_run(ledger, port, targets, state, run_id="ib", session=SESSION):
    prices = (_close(port, PRICED), _close(port, FORWARD))
    with IBBroker(INSTRUMENTS[:1], config(port)) as broker:
        return run(ledger, broker, targets, state, session=session, run_id=run_id, prices=prices), prices


def test_ib_force_sends_a_bag_spread_filled_leg_by_leg_into_the_forward_month(fake, ledger):
    first, (p_old, p_new) = ib_run(ledger, fake.port, {"MCL": 3}, "No_Roll")
    assert sent(first) == [("carver:2023-10-02:MCL:202312:1", 3.0, "FILLED")]
    roll, _ = ib_run(ledger, fake.port, {"MCL": 3}, "Force", run_id="ib-2")
    assert sent(roll) == [("carver:2023-10-02:MCL:202312_202401:2", 3.0, "FILLED")]
    [booked] = fake.orders("carver:2023-10-02:MCL:202312_202401:2")
    assert booked.contract[2] == "BAG" and [leg.action for leg in booked.legs] == ["SELL", "BUY"]
    legs = ledger.fills(order_ref="carver:2023-10-02:MCL:202312_202401:2")
    assert legs[["contract", "quantity", "price"]].to_numpy().tolist() == [[PRICED, -3.0, p_old], [FORWARD, 3.0, p_new]]
    spread = ledger.intents().set_index("order_ref").loc["carver:2023-10-02:MCL:202312_202401:2"]
    assert spread["avg_fill_price"] == pytest.approx(p_new - p_old) and spread["filled_quantity"] == 3.0
    assert ledger.expected_contract_positions("ib").to_dict() == {("MCL", FORWARD): 3.0}
    assert list(fake.positions_by_contract().values()) == [3.0]
    # exactly once: a re-run of the session sends nothing, and no order ever named a CONTFUT
    again, _ = ib_run(ledger, fake.port, {"MCL": 3}, "Force", run_id="ib-3")
    assert again.counts["sent"] == 0 and len(fake.orders()) == 2
    assert {c[2] for c in fake.order_contracts()} == {"FUT", "BAG"}
    assert ledger.position_breaks().empty


def test_ib_passive_and_two_months_stay_two_positions(fake, ledger):
    ib_run(ledger, fake.port, {"MCL": 4}, "No_Roll")
    reduce, _ = ib_run(ledger, fake.port, {"MCL": 2}, "Passive", run_id="ib-2")
    assert sent(reduce) == [("carver:2023-10-02:MCL:202312:2", -2.0, "FILLED")]
    increase, _ = ib_run(ledger, fake.port, {"MCL": 5}, "Passive", run_id="ib-3")
    assert sent(increase) == [("carver:2023-10-02:MCL:202401:3", 3.0, "FILLED")]
    with IBBroker(INSTRUMENTS[:1], config(fake.port)) as broker:
        held = broker.contract_positions().to_dict()
        assert held == {("MCL", PRICED): 2.0, ("MCL", FORWARD): 3.0}
        assert broker.positions().to_dict() == {"MCL": 5.0}
    assert sorted(fake.positions_by_contract().values()) == [2.0, 3.0]
    assert ledger.expected_contract_positions("ib").to_dict() == held
    assert {c[2] for c in fake.order_contracts()} == {"FUT"}
    # dated months, never CONTFUT; qualified, each carries its last trading day, whose month is not the
    # contract month for MCL (MCLZ3 stops on 2023-11-20, MCLF4 on 2023-12-18): positions map by conId
    assert [c[3] for c in fake.order_contracts()] == ["20231120", "20231120", "20231218"]


def test_ib_force_outright_sends_two_outrights_and_a_break_names_its_month(fake, ledger):
    ib_run(ledger, fake.port, {"MCL": 2}, "No_Roll")
    roll, _ = ib_run(ledger, fake.port, {"MCL": 2}, "Force_Outright", run_id="ib-2")
    assert sent(roll) == [("carver:2023-10-02:MCL:202312:2", -2.0, "FILLED"), ("carver:2023-10-02:MCL:202401:3", 2.0, "FILLED")]
    assert ledger.expected_contract_positions("ib").to_dict() == {("MCL", FORWARD): 2.0}
    # a month the ledger does not know: a break naming that month, the instrument blocked
    ib = IB()
    ib.connect("127.0.0.1", fake.port, clientId=78, timeout=5)
    try:
        [c] = ib.qualifyContracts(Future("MCL", "202402", "NYMEX", currency="USD"))
        from ib_async import MarketOrder
        trade = ib.placeOrder(c, MarketOrder("BUY", 1, account="DU1234567"))
        while not trade.isDone():
            ib.sleep(0.02)
    finally:
        ib.disconnect()
    blocked, _ = ib_run(ledger, fake.port, {"MCL": 4}, "No_Roll", run_id="ib-3")
    [row] = ledger.open_position_breaks("ib").to_dict("records")
    assert (row["instrument"], row["contract"], row["expected"], row["broker_position"]) == ("MCL", "202402", 0.0, 1.0)
    assert blocked.intents["deny_reason"].iloc[0].startswith("position_break: the broker holds 1 of MCL (202402)")
    assert "--contract 202402" in blocked.intents["deny_reason"].iloc[0]


def test_an_order_to_a_continuous_future_is_refused_before_it_is_sent():
    from ib_async import ContFuture

    with pytest.raises(BrokerError, match="refusing to send an order to a continuous future"):
        refuse_continuous_future(ContFuture("MCL", "NYMEX"), "carver:2023-10-02:MCL:1")
    assert refuse_continuous_future(Future("MCL", "202312", "NYMEX"), "ref").secType == "FUT"


def test_roll_adjusted_before_the_roll_date_trades_the_contract_rolled_into_until_the_prices_move():
    # rolled early (Force near the close-out): the roll date lies ahead, yet the month rolled out of is not traded
    contracts = pd.DataFrame({"priced_contract": [PRICED, PRICED], "forward_contract": [FORWARD, FORWARD],
                              "priced_price": [75.0, 75.0], "forward_price": [74.5, 74.5]},
                             index=pd.Index(["MCL", "CL"], name="instrument"))
    out = order_contracts(contracts, pd.Series({"MCL": "Roll_Adjusted", "CL": "Roll_Adjusted"}),
                          pd.Series({"MCL": 2, "CL": 2}), priced_moved=pd.Series({"MCL": False, "CL": True}))
    assert out.loc["MCL", ["priced_contract", "priced_price"]].tolist() == [FORWARD, 74.5]
    assert out.loc["CL", ["priced_contract", "forward_contract"]].tolist() == [PRICED, FORWARD]
