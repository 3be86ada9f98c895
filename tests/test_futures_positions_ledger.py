"""Futures positions per (instrument, contract) in the ledger, and the roll policy applied in the daily.

Fills and intents carry their contract month (additive columns: a ledger written before opens and
upgrades); the per-instrument sums the sizing path reads are unchanged; the per-contract view
keeps two months of one instrument as two positions, reconciliation compares per contract and a
break names its month. ``futures_positions`` runs the roll policy for the session and records
each state change (``policy: ...``) in the ledger's roll-state history, keeping a hand-set Close.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from pipeline.execution.positions import position_differences
from pipeline.futures.tables import contract_positions_table
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.trading import Fill, OrderIntent
from tests.conftest import require_shared_data

T = pd.Timestamp("2023-10-02 20:00", tz="UTC")


def fill(fill_id, instrument, quantity, contract=None, broker="ib", price=75.0):
    return Fill(fill_id=fill_id, order_ref=f"carver:2023-10-02:{instrument}:{contract or 'x'}:1", broker=broker,
                session=pd.Timestamp("2023-10-02"), instrument=instrument, quantity=quantity, price=price,
                commission=1.0, slippage_cost=0.0, filled_at=T, contract=contract)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / LEDGER_FILE).init()


def test_two_months_of_one_instrument_are_two_positions_and_the_sizing_sum_is_kept(ledger):
    for f in (fill("a", "MCL", 2.0, "202312"), fill("b", "MCL", 3.0, "202401"), fill("c", "MCL", -2.0, "202312"),
              fill("d", "MCL", 1.0, "202312"), fill("e", "AAPL", 10.0, price=190.0)):
        ledger.record_fill(f)
    assert ledger.expected_contract_positions("ib").to_dict() == {("AAPL", "AAPL"): 10.0, ("MCL", "202312"): 1.0,
                                                                   ("MCL", "202401"): 3.0}
    assert ledger.expected_positions("ib").to_dict() == {"AAPL": 10.0, "MCL": 4.0}  # per instrument, for sizing
    assert ledger.net_fills(broker="ib", by_contract=True).to_dict() == {
        ("AAPL", "AAPL"): 10.0, ("MCL", "202312"): 1.0, ("MCL", "202401"): 3.0}
    table = contract_positions_table(ledger.expected_contract_positions("ib"), ["MCL"])
    assert table.to_dict("records") == [{"instrument": "MCL", "contract": "202312", "position": 1.0},
                                        {"instrument": "MCL", "contract": "202401", "position": 3.0}]


def test_reconciliation_per_contract_names_the_month_and_adopting_fixes_only_that_month(ledger):
    ledger.record_fill(fill("a", "MCL", 3.0, "202312"))
    broker = pd.Series({("MCL", "202312"): 1.0, ("MCL", "202401"): 2.0})  # the same 3 lots, in two months
    broker.index = pd.MultiIndex.from_tuples(broker.index, names=["instrument", "contract"])
    diff = position_differences(ledger.expected_contract_positions("ib"), broker)
    assert diff.to_dict("records") == [
        {"instrument": "MCL", "contract": "202312", "expected": 3.0, "broker_position": 1.0, "difference": -2.0},
        {"instrument": "MCL", "contract": "202401", "expected": 0.0, "broker_position": 2.0, "difference": 2.0},
    ]  # per instrument both say 3: no break; per contract two
    assert position_differences(ledger.expected_positions("ib"), broker.groupby(level=0).sum()).empty
    ledger.record_position_check("ib", diff, "2023-10-02")
    assert ledger.adopt_broker_position("ib", "MCL", 2.0, "IB rolled a lot", "ops", contract="202401") == 2.0
    assert ledger.open_position_breaks("ib")["contract"].tolist() == ["202312"]
    assert ledger.expected_contract_positions("ib").to_dict() == {("MCL", "202312"): 3.0, ("MCL", "202401"): 2.0}


def test_a_ledger_written_before_contracts_opens_and_keeps_its_rows(tmp_path):
    path = tmp_path / LEDGER_FILE
    Ledger(path).init()
    with duckdb.connect(str(path)) as con:  # the layout before this change: no contract columns
        for table, column in (("fills", "contract"), ("order_intents", "contract"), ("order_intents", "spread_contract"),
                              ("order_intents", "contract_price"), ("order_intents", "roll_state")):
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        con.execute("INSERT INTO fills VALUES ('old', 'carver:2023-10-02:ES:1', 'ib', DATE '2023-10-02', 'ES', 2, 4800, "
                    "1, 0, TIMESTAMPTZ '2023-10-02 20:00:00+00', NULL)")
    ledger = Ledger(path).init()
    fills = ledger.fills()
    assert fills["contract"].isna().all() and fills["quantity"].tolist() == [2.0]
    assert ledger.expected_positions("ib").to_dict() == {"ES": 2.0}
    assert ledger.expected_contract_positions("ib").to_dict() == {("ES", "ES"): 2.0}  # no month: the symbol's key
    assert contract_positions_table(ledger.expected_contract_positions("ib"), ["ES"])["contract"].tolist() == [None]
    intent = {"order_ref": "carver:2023-10-02:MCL:202312_202401:1", "strategy": "carver", "session": "2023-10-02",
              "instrument": "MCL", "seq": 1, "quantity": 2.0, "side": "BUY", "order_type": "MKT",
              "reference_price": -0.5, "target_position": 2.0, "position_before": 2.0, "status": "INTENT",
              "mode": "submit", "contract": "202312", "spread_contract": "202401", "contract_price": 75.0,
              "roll_state": "Force"}
    ledger.record_intents(pd.DataFrame([intent]))
    stored = OrderIntent.from_row(ledger.intents().iloc[0])
    assert (stored.contract, stored.spread_contract, stored.contract_price, stored.is_spread) == ("202312", "202401",
                                                                                                  75.0, True)
    # the spread fills leg by leg: its filled quantity is the forward leg's, its price forward - priced
    ledger.record_fill(Fill("l1", intent["order_ref"], "ib", pd.Timestamp("2023-10-02"), "MCL", -2.0, 75.0, 1.0, 0.0, T,
                            contract="202312"))
    assert ledger.intents().iloc[0][["status", "filled_quantity"]].tolist() == ["PARTIALLY_FILLED", 0.0]
    ledger.record_fill(Fill("l2", intent["order_ref"], "ib", pd.Timestamp("2023-10-02"), "MCL", 2.0, 74.5, 1.0, 0.0, T,
                            contract="202401"))
    row = ledger.intents().iloc[0]
    assert (row["status"], row["filled_quantity"], row["avg_fill_price"], row["commission"]) == ("FILLED", 2.0, -0.5, 2.0)


# --- the roll policy in the daily (futures_positions), on the shared 2023 data -------------------------------

def test_futures_positions_applies_the_roll_policy_and_keeps_a_hand_set_close(tmp_path):
    from tests.test_futures_assets import CARVER_2023, THREE, _config, _hold, _run

    require_shared_data(CARVER_2023)
    from assets import futures
    from assets.resources import Settings
    from tests.test_pysystemtrade_source import write_csv_folder

    folder = write_csv_folder(tmp_path / "csv", THREE, intraday=False)
    config = _config(tmp_path, folder)
    settings = Settings(config_path=str(config))
    _hold(settings, "GOLD", 2)  # in 202308, 5 sessions from its close-out 2023-07-31 on 07-24
    _hold(settings, "CORN", 1, contract="202309")
    settings.ledger().set_roll_state("CORN", "Close", "illiquid forward", set_by="ops", session="2023-07-20")
    _run(config, partition="2023-07-24")
    history = settings.ledger().roll_state_history()
    gold = history[history["instrument"] == "GOLD"]
    assert gold["state"].tolist() == ["Force"] and gold["set_by"].tolist() == ["roll_policy"]
    assert gold["reason"].iloc[0] == ("policy: 5 sessions to the priced contract's close-out 2023-07-31 (Force at 10): "
                                      "roll now with a calendar spread")
    assert history[history["instrument"] == "CORN"]["state"].tolist() == ["Close"]  # kept: set by hand
    routes = settings.lake().read(futures.FUTURES_ORDER_ROUTES).set_index("instrument")
    assert routes.loc["GOLD", ["state", "order_priced_contract", "order_forward_contract", "priced_position"]].tolist() == [
        "Force", "202308", "202310", 2.0]
    assert routes.loc["GOLD", "order_forward_price"] > 0 and routes.loc["CORN", "state"] == "Close"
    # a re-run of the session changes nothing more
    _run(config, partition="2023-07-24")
    assert len(settings.ledger().roll_state_history()) == len(history)


