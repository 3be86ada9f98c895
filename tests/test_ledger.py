"""The DuckDB ledger: schema, intents, fills, kill-switch log, alerts, and the writer lock.
Real DuckDB files in tmp_path; expected values are the ones written in each test."""

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from pipeline.store.ledger import LEDGER_FILE, Ledger, LedgerError, LedgerLockedError
from pipeline.trading import Fill, TradingState


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "lake" / LEDGER_FILE).init()


def intent_rows(*refs, session="2024-01-02", status="INTENT", mode="submit"):
    rows = []
    for ref in refs:
        strategy, day, instrument, seq = ref.split(":")
        rows.append(
            dict(
                order_ref=ref, strategy=strategy, session=pd.Timestamp(day), instrument=instrument, seq=int(seq),
                quantity=5.0, side="BUY", order_type="MKT", reference_price=100.0, target_position=5.0,
                position_before=0.0, status=status, mode=mode,
            )
        )
    return pd.DataFrame(rows)


def a_fill(order_ref="carver:2024-01-02:ES:1", quantity=5.0, fill_id=None, instrument="ES"):
    return Fill(
        fill_id=fill_id or f"paper:{order_ref}", order_ref=order_ref, broker="paper",
        session=pd.Timestamp("2024-01-02"), instrument=instrument, quantity=quantity, price=100.5,
        commission=1.0, slippage_cost=2.5, filled_at=pd.Timestamp("2024-01-02 21:00", tz="UTC"),
    )


def test_init_creates_the_folder_and_is_idempotent(tmp_path):
    ledger = Ledger.at_lake(tmp_path / "new_lake")
    ledger.init()
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1"))
    ledger.init()  # a second init must not drop data
    assert ledger.path == tmp_path / "new_lake" / "warehouse.duckdb"
    assert list(ledger.intents()["order_ref"]) == ["carver:2024-01-02:ES:1"]


def test_reading_a_ledger_that_was_never_initialised_says_to_init(tmp_path):
    with pytest.raises(LedgerError, match="Ledger.init"):
        Ledger(tmp_path / LEDGER_FILE).intents()


def test_recorded_intents_read_back_with_their_values(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1", "carver:2024-01-02:NQ:1"))
    df = ledger.intents()
    assert list(df["order_ref"]) == ["carver:2024-01-02:ES:1", "carver:2024-01-02:NQ:1"]
    row = df.iloc[0]
    assert (row["quantity"], row["side"], row["status"], row["mode"], row["seq"]) == (5.0, "BUY", "INTENT", "submit", 1)
    assert pd.Timestamp(row["session"]) == pd.Timestamp("2024-01-02")
    assert str(df["created_at"].dt.tz) == "UTC"


def test_intents_filter_by_session_and_instrument(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1", "carver:2024-01-02:NQ:1"))
    ledger.record_intents(intent_rows("carver:2024-01-03:ES:1", session="2024-01-03"))
    assert list(ledger.intents(session="2024-01-02")["order_ref"]) == ["carver:2024-01-02:ES:1", "carver:2024-01-02:NQ:1"]
    assert list(ledger.intents(session=pd.Timestamp("2024-01-03"), instrument="ES")["order_ref"]) == ["carver:2024-01-03:ES:1"]
    assert ledger.intents(instrument="ZN").empty


def test_an_order_ref_is_never_recorded_twice_and_the_batch_is_all_or_nothing(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1"))
    with pytest.raises(LedgerError, match="never reused"):
        ledger.record_intents(intent_rows("carver:2024-01-02:NQ:1", "carver:2024-01-02:ES:1"))
    assert list(ledger.intents()["order_ref"]) == ["carver:2024-01-02:ES:1"]  # NQ was rolled back


def test_an_unknown_status_is_rejected_by_the_schema(ledger):
    with pytest.raises(LedgerError, match="constraint"):
        ledger.record_intents(intent_rows("carver:2024-01-02:ES:1", status="PENDING"))


def test_update_status_sets_status_verdict_and_reason(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1"))
    ledger.update_status("carver:2024-01-02:ES:1", "DENIED", verdict="DENIED", deny_reason="kill_switch: HALTED")
    row = ledger.intents().iloc[0]
    assert (row["status"], row["verdict"], row["deny_reason"]) == ("DENIED", "DENIED", "kill_switch: HALTED")
    assert row["updated_at"] >= row["created_at"]


def test_update_status_of_an_unknown_order_ref_raises(ledger):
    with pytest.raises(LedgerError, match="no intent"):
        ledger.update_status("carver:2024-01-02:ES:9", "FILLED")


def test_update_status_rejects_an_unknown_status(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1"))
    with pytest.raises(LedgerError, match="not one of"):
        ledger.update_status("carver:2024-01-02:ES:1", "DONE")


def test_record_fill_stores_it_once_and_marks_the_intent_filled(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1"))
    assert ledger.record_fill(a_fill()) is True
    assert ledger.record_fill(a_fill()) is False  # same fill_id: not stored again
    fills = ledger.fills()
    assert len(fills) == 1
    assert (fills["price"].iloc[0], fills["commission"].iloc[0]) == (100.5, 1.0)
    assert fills["filled_at"].iloc[0] == pd.Timestamp("2024-01-02 21:00", tz="UTC")
    assert ledger.intents()["status"].iloc[0] == "FILLED"


def test_fills_filter_by_order_ref(ledger):
    ledger.record_fill(a_fill("carver:2024-01-02:ES:1"))
    ledger.record_fill(a_fill("carver:2024-01-02:ES:2"))
    assert list(ledger.fills(order_ref="carver:2024-01-02:ES:2")["fill_id"]) == ["paper:carver:2024-01-02:ES:2"]
    assert ledger.fills(broker="ib").empty


def test_net_fills_sums_signed_quantities_per_instrument(ledger):
    # ES: +5 - 2 = 3; NQ: -4
    ledger.record_fill(a_fill("carver:2024-01-02:ES:1", 5.0))
    ledger.record_fill(a_fill("carver:2024-01-02:ES:2", -2.0))
    ledger.record_fill(a_fill("carver:2024-01-02:NQ:1", -4.0, instrument="NQ"))
    assert ledger.net_fills().to_dict() == {"ES": 3.0, "NQ": -4.0}


def test_trading_state_is_active_when_never_set(ledger):
    assert ledger.trading_state() is TradingState.ACTIVE


def test_trading_state_is_the_latest_change_and_the_log_keeps_all(ledger):
    ledger.set_trading_state(TradingState.HALTED, "daily loss limit", "ops")
    ledger.set_trading_state("REDUCING", "winding down", "ops")
    assert ledger.trading_state() is TradingState.REDUCING
    log = ledger.trading_state_log()
    assert list(log["state"]) == ["HALTED", "REDUCING"]
    assert list(log["reason"]) == ["daily loss limit", "winding down"]


def test_set_trading_state_needs_a_valid_state_and_a_reason(ledger):
    with pytest.raises(LedgerError, match="not one of"):
        ledger.set_trading_state("PAUSED", "x", "ops")
    with pytest.raises(LedgerError, match="reason"):
        ledger.set_trading_state("HALTED", "", "ops")


def test_alerts_are_deduplicated_by_key(ledger):
    assert ledger.add_alert("order_denied", "WARN", "carver:2024-01-02:ES:1", "denied", "k1") is True
    assert ledger.add_alert("order_denied", "WARN", "carver:2024-01-02:ES:1", "denied again", "k1") is False
    assert ledger.add_alert("quality", "ERROR", None, "no key") is True
    assert ledger.add_alert("quality", "ERROR", None, "no key") is True  # no key: never de-duplicated
    alerts = ledger.alerts()
    assert list(alerts["message"]) == ["denied", "no key", "no key"]
    assert str(alerts["created_at"].dt.tz) == "UTC"


def test_inside_hold_other_readers_of_the_same_file_in_this_process_still_work(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1"))
    with ledger.hold():
        # a second Ledger object (e.g. the paper broker's) asks for a read-only connection while
        # this process holds the file read-write; DuckDB would refuse that configuration
        assert list(Ledger(ledger.path).intents()["order_ref"]) == ["carver:2024-01-02:ES:1"]
        ledger.update_status("carver:2024-01-02:ES:1", "SUBMITTED")
    assert ledger.intents()["status"].iloc[0] == "SUBMITTED"


_HOLD_LOCK = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
    """
)


def test_a_ledger_locked_by_another_process_raises_a_clear_error_after_retries(ledger):
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(ledger.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout.readline().strip() == "locked"
            blocked = Ledger(ledger.path, lock_retries=2, lock_backoff=0.01)
            with pytest.raises(LedgerLockedError, match="locked by another process after 2 attempts"):
                blocked.set_trading_state("HALTED", "test", "test")
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)
    # once the other writer is gone, the same ledger opens normally
    blocked.set_trading_state("HALTED", "test", "test")
    assert blocked.trading_state() is TradingState.HALTED


# --- broker answers, partial fills, audit trail, upgrade -------------------------------------------

def test_partial_fills_leave_the_intent_partially_filled_until_they_cover_it(ledger):
    ledger.record_intents(intent_rows("carver:2024-01-02:ES:1"))  # quantity 5
    ledger.record_fill(a_fill(quantity=2.0, fill_id="e1"))
    row = ledger.intents().iloc[0]
    assert (row["status"], row["filled_quantity"], row["commission"]) == ("PARTIALLY_FILLED", 2.0, 1.0)
    ledger.record_fill(a_fill(quantity=3.0, fill_id="e2"))
    row = ledger.intents().iloc[0]
    assert (row["status"], row["filled_quantity"], row["commission"]) == ("FILLED", 5.0, 2.0)


def test_broker_answers_are_recorded_with_ids_and_an_event_per_change(ledger):
    from pipeline.trading import BrokerOrder

    ref = "carver:2024-01-02:ES:1"
    ledger.record_intents(intent_rows(ref))
    ack = BrokerOrder(ref, "ACKNOWLEDGED", remaining=5.0, perm_id=900000001, order_id=7)
    assert ledger.record_broker_order(ack, run_id="r1") == "ACKNOWLEDGED"
    assert ledger.record_broker_order(ack, run_id="r2") == "ACKNOWLEDGED"  # unchanged: no second event
    done = BrokerOrder(ref, "FILLED", (a_fill(quantity=5.0, fill_id="e1"),), filled=5.0, perm_id=900000001, order_id=7)
    assert ledger.record_broker_order(done, run_id="r2") == "FILLED"
    row = ledger.intents().iloc[0]
    assert (row["perm_id"], row["broker_order_id"], row["avg_fill_price"]) == (900000001, 7, 100.5)
    assert pd.notna(row["submitted_at"])
    events = ledger.order_events(ref)
    assert events["status"].tolist() == ["ACKNOWLEDGED", "FILLED"] and events["run_id"].tolist() == ["r1", "r2"]
    # a final status is never moved back by a later (stale) answer
    assert ledger.record_broker_order(ack, run_id="r3") == "FILLED"


def test_a_rejection_keeps_the_brokers_reason(ledger):
    from pipeline.trading import BrokerOrder

    ref = "carver:2024-01-02:ES:1"
    ledger.record_intents(intent_rows(ref))
    ledger.record_broker_order(BrokerOrder(ref, "REJECTED", reason="Order rejected - reason:margin"))
    row = ledger.intents().iloc[0]
    assert (row["status"], row["status_reason"]) == ("REJECTED", "Order rejected - reason:margin")


def test_a_ledger_of_the_previous_layout_is_upgraded_keeping_every_row(tmp_path):
    import duckdb

    path = tmp_path / LEDGER_FILE
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE order_intents (
        order_ref VARCHAR PRIMARY KEY, strategy VARCHAR NOT NULL, session DATE NOT NULL, instrument VARCHAR NOT NULL,
        seq INTEGER NOT NULL, quantity DOUBLE NOT NULL, side VARCHAR NOT NULL, order_type VARCHAR NOT NULL
        CHECK (order_type IN ('MKT')), reference_price DOUBLE, target_position DOUBLE, position_before DOUBLE,
        verdict VARCHAR, deny_reason VARCHAR, status VARCHAR NOT NULL CHECK (status IN ('INTENT', 'SUBMITTED',
        'FILLED', 'DENIED', 'RECORDED')), mode VARCHAR NOT NULL, run_id VARCHAR, created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL)""")
    con.execute("""INSERT INTO order_intents VALUES ('carver:2024-01-02:ES:1', 'carver', DATE '2024-01-02', 'ES', 1,
        5, 'BUY', 'MKT', 100, 5, 0, 'ACCEPTED', NULL, 'SUBMITTED', 'submit', 'old-run', now(), now())""")
    con.execute("""CREATE TABLE fills (fill_id VARCHAR PRIMARY KEY, order_ref VARCHAR NOT NULL, broker VARCHAR NOT NULL,
        session DATE NOT NULL, instrument VARCHAR NOT NULL, quantity DOUBLE NOT NULL, price DOUBLE NOT NULL,
        commission DOUBLE NOT NULL, slippage_cost DOUBLE NOT NULL, filled_at TIMESTAMPTZ NOT NULL)""")
    con.close()
    ledger = Ledger(path).init()
    row = ledger.intents().iloc[0]
    assert (row["order_ref"], row["status"], row["run_id"]) == ("carver:2024-01-02:ES:1", "SUBMITTED", "old-run")
    ledger.update_status("carver:2024-01-02:ES:1", "REJECTED")  # a status the old CHECK refused
    ledger.record_fill(a_fill())
    assert ledger.fills()["perm_id"].isna().all()
    assert Ledger(path).init().intents()["status"].tolist() == ["REJECTED"]  # idempotent
