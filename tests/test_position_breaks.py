"""Position reconciliation: the account is the truth (issue 16; DESIGN rule 5).

Before every order step the broker's positions are compared with the ledger's expected ones
(fills plus adopted adjustments). A difference is a position break: recorded, alerted, and no order
is sent for that instrument; an empty answer while positions are expected stops the step. The IB
cases run the real ib_async client against the fake gateway, which lies on request (``Empty``,
``Omit``); each ends with no duplicate order and no position nobody expects.
"""

from __future__ import annotations

import pandas as pd
import pytest
from ib_async import IB, MarketOrder, Stock

from pipeline.adapters.ib.broker import IBBroker
from pipeline.adapters.ib.fake_gateway import Empty, Omit
from pipeline.execution import execute_orders
from pipeline.execution.paper_broker import PaperBroker
from pipeline.execution.positions import position_differences
from pipeline.store.ledger import Ledger, LedgerError
from pipeline.trading import BrokerError, Fill
from tests.test_ib_broker import (  # the same universe, prices and limits as the order-path tests
    INSTRUMENTS,
    LIMITS,
    POINT_SIZES,
    PRICES,
    SESSION,
    run,
    run_once,
)
from tests.test_ib_broker import fake, ledger  # noqa: F401  (fixtures: the fake gateway with the universe, a new ledger)

TARGETS = {"AAPL": 10, "EURUSD": 20000, "ES": 2}


def _refs_sent_twice(fake) -> list[str]:
    refs = [o.order_ref for o in fake.orders()]
    return sorted({r for r in refs if refs.count(r) > 1})


# --- the comparison ------------------------------------------------------------------------------


def test_position_differences_list_only_the_instruments_that_disagree():
    expected = pd.Series({"AAPL": 10.0, "ES": 2.0, "KO": -5.0})
    held = pd.Series({"AAPL": 10.0, "ES": 0.0, "MSFT": 3.0})
    out = position_differences(expected, held)
    assert out.to_dict("records") == [
        {"instrument": "ES", "contract": "ES", "expected": 2.0, "broker_position": 0.0, "difference": -2.0},
        {"instrument": "KO", "contract": "KO", "expected": -5.0, "broker_position": 0.0, "difference": 5.0},
        {"instrument": "MSFT", "contract": "MSFT", "expected": 0.0, "broker_position": 3.0, "difference": 3.0},
    ]
    assert position_differences(expected, expected + 1e-9).empty  # float sums of fills agree


def test_a_position_break_is_kept_until_it_clears_and_adopting_sets_the_expected_position(ledger):
    ledger.record_fill(Fill(fill_id="f1", order_ref="carver:2024-01-02:ES:1", broker="ib", session=SESSION,
                            instrument="ES", quantity=2.0, price=4800.0, commission=1.0, slippage_cost=0.0,
                            filled_at=pd.Timestamp("2024-01-02 21:00", tz="UTC")))
    assert ledger.expected_positions("ib").to_dict() == {"ES": 2.0}
    diff = position_differences(ledger.expected_positions("ib"), pd.Series({"ES": 0.0}))
    open1, new1 = ledger.record_position_check("ib", diff, SESSION, "run-1")
    open2, new2 = ledger.record_position_check("ib", diff, "2024-01-03", "run-2")
    assert len(new1) == 1 and new2.empty  # seen twice, recorded once
    assert open2["break_id"].tolist() == open1["break_id"].tolist()
    assert str(open2["last_session"].iloc[0])[:10] == "2024-01-03" and str(open2["session"].iloc[0])[:10] == SESSION

    with pytest.raises(LedgerError, match="reason"):
        ledger.adopt_broker_position("ib", "ES", 0.0, " ", "ops")
    assert ledger.adopt_broker_position("ib", "ES", 0.0, "closed by hand at the broker", "ops") == -2.0
    assert ledger.expected_positions("ib").empty  # 2 filled - 2 adopted
    assert ledger.open_position_breaks("ib").empty
    (row,) = ledger.position_breaks().to_dict("records")
    assert (row["resolution"], row["resolved_by"], row["reason"]) == ("adopted", "ops", "closed by hand at the broker")
    with pytest.raises(LedgerError, match="nothing to adopt"):
        ledger.adopt_broker_position("ib", "ES", 0.0, "again", "ops")


def test_a_break_that_disappears_is_resolved_as_cleared(ledger):
    diff = position_differences(pd.Series({"ES": 2.0}), pd.Series(dtype=float))
    ledger.record_position_check("ib", diff, SESSION)
    open_after, _ = ledger.record_position_check("ib", diff.iloc[:0], "2024-01-03")
    assert open_after.empty
    assert ledger.position_breaks()["resolution"].tolist() == ["cleared"]


def test_the_paper_broker_never_breaks_because_its_positions_are_the_ledgers_fills(ledger):
    broker = PaperBroker.for_universe(ledger, INSTRUMENTS)
    for targets in (TARGETS, {"AAPL": 4, "EURUSD": -1000, "ES": 0}):
        execute_orders(pd.Series(targets, dtype=float), PRICES, SESSION, ledger=ledger, broker=broker, limits=LIMITS,
                       point_sizes=POINT_SIZES, strategy="carver", submit=True, run_id="paper")
    assert ledger.position_breaks().empty
    assert broker.positions().to_dict() == {"AAPL": 4.0, "EURUSD": -1000.0}


# --- lying brokers at the fake gateway ------------------------------------------------------------


def test_empty_positions_answer_while_positions_are_expected_stops_the_order_step(fake, ledger):
    run_once(ledger, fake.port, TARGETS, run_id="day-1")
    placed = len(fake.orders())
    fake.script("positions", Empty(), times=10)  # the connect's sync and the order step's read both lie
    with pytest.raises(BrokerError, match="reported no positions while the ledger expects 3"):
        run_once(ledger, fake.port, TARGETS, run_id="day-1-rerun")
    assert len(fake.orders()) == placed and _refs_sent_twice(fake) == []  # before: the book bought again
    assert {s: fake.position(s) for s in ("AAPL", "EUR", "ES")} == {"AAPL": 10.0, "EUR": 20000.0, "ES": 2.0}
    breaks = ledger.open_position_breaks("ib")
    assert breaks.set_index("instrument")["difference"].to_dict() == {"AAPL": -10.0, "ES": -2.0, "EURUSD": -20000.0}
    alerts = ledger.alerts()
    assert (alerts["kind"] == "position_break").sum() == 4  # one per instrument, one for the empty answer

    fake.clear_scripts("positions")  # the gateway tells the truth again
    report = run_once(ledger, fake.port, TARGETS, run_id="day-1-after")
    assert report.counts["sent"] == 0 and len(fake.orders()) == placed
    assert ledger.open_position_breaks("ib").empty  # the next true answer clears the breaks
    assert set(ledger.position_breaks()["resolution"]) == {"cleared"}


def test_a_position_break_on_a_missing_contract_blocks_only_that_instrument(fake, ledger):
    run_once(ledger, fake.port, TARGETS, run_id="day-1")
    placed = len(fake.orders())
    fake.script("positions", Omit(("ES",)), times=10)
    report = run_once(ledger, fake.port, {"AAPL": 15, "EURUSD": 20000, "ES": 3}, run_id="day-2")
    by_instrument = report.intents.set_index("instrument")
    assert by_instrument.loc["AAPL", "status"] == "FILLED"  # the others trade
    assert by_instrument.loc["ES", "status"] == "DENIED"
    assert by_instrument.loc["ES", "deny_reason"].startswith("position_break: the broker holds 0 of ES")
    assert len(fake.orders()) == placed + 1 and _refs_sent_twice(fake) == []
    assert fake.position("ES") == 2.0 and fake.position("AAPL") == 15.0  # nothing nobody expects
    assert ledger.open_position_breaks("ib")["instrument"].tolist() == ["ES"]


def test_a_manual_trade_at_the_broker_is_a_break_until_a_person_adopts_it(fake, ledger):
    run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1")
    ib = IB()  # a person trading by hand in TWS: an order the system never sent
    ib.connect("127.0.0.1", fake.port, clientId=99, timeout=5)
    try:
        ib.placeOrder(Stock("AAPL", "SMART", "USD", conId=265598), MarketOrder("SELL", 4, account="DU1234567"))
        ib.sleep(0.5)
    finally:
        ib.disconnect()
    assert fake.position("AAPL") == 6.0
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-2")
    assert report.counts["sent"] == 0 and report.intents["deny_reason"].str.startswith("position_break").all()
    assert ledger.open_position_breaks("ib")[["expected", "broker_position"]].values.tolist() == [[10.0, 6.0]]

    assert ledger.adopt_broker_position("ib", "AAPL", 6.0, "sold 4 by hand in TWS", "ops") == -4.0
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-2-after-adopt")
    assert report.counts["sent"] == 1 and fake.position("AAPL") == 10.0  # trades again, from the broker's 6
    assert ledger.open_position_breaks("ib").empty and ledger.expected_positions("ib").to_dict() == {"AAPL": 10.0}


def test_the_positions_command_shows_the_break_and_adopt_resolves_it(fake, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.config import load_config
    from tests.conftest import write_config

    path = write_config(tmp_path, broker={
        "mode": "ib", "execution": "paper", "paper_ports": [fake.port], "ib": {"port": fake.port, "timeout": 3.0}},
        instruments=[{"symbol": "AAPL", "sec_type": "STK"},
                     {"symbol": "EURUSD", "sec_type": "CASH", "exchange": "IDEALPRO", "asset_class": "fx"}])
    cfg = load_config(path)
    ledger = Ledger.at_lake(cfg.lake_path).init()
    with IBBroker(cfg.instruments, cfg.broker) as broker:
        run(ledger, broker, {"AAPL": 10, "EURUSD": 20000})
    fake.script("positions", Omit(("AAPL",)), times=3)
    with IBBroker(cfg.instruments, cfg.broker) as broker:
        run(ledger, broker, {"AAPL": 12, "EURUSD": 20000}, run_id="run-2")  # AAPL breaks: denied
    capsys.readouterr()
    fake.script("positions", Omit(("AAPL",)), times=3)
    assert main(["positions", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "AAPL" in out and "1 open position break(s)" in out
    fake.script("positions", Omit(("AAPL",)), times=3)
    assert main(["positions", "adopt", "AAPL", "--reason", "checked the statement", "--by", "ops",
                 "--config", str(path)]) == 0
    assert "adopted the broker's position 0 (adjustment -10)" in capsys.readouterr().out
    assert ledger.open_position_breaks().empty
    assert main(["positions", "adopt", "AAPL", "--reason", "again", "--config", str(path)]) == 2
