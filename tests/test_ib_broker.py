"""The order path with the IB broker: execute_orders + IBBroker + the real ib_async client against
the fake gateway over a real socket. Nothing of ours is mocked; each failure scenario asserts
that nothing is lost and that no order reaches the broker twice (reliability.md §5).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest

from pipeline.adapters.ib.broker import IBBroker
from pipeline.adapters.ib.fake_gateway import (
    CONNECTIVITY_LOST_TEXT,
    Drop,
    FakeContract,
    FakeTWS,
    OrderBook,
)
from pipeline.config import BrokerConfig, IBConnection, Instrument, RiskLimits
from pipeline.execution import (
    OrderPolicy,
    OrderRunLocked,
    cancel_orders,
    execute_orders,
    order_run_lock,
)
from pipeline.store.ledger import LEDGER_FILE, Ledger
from pipeline.trading import BrokerError, TradingState

SESSION = "2024-01-02"
ACCOUNT = "DU1234567"
INSTRUMENTS = [
    Instrument(symbol="AAPL", sec_type="STK"),
    Instrument(symbol="EURUSD", sec_type="CASH", exchange="IDEALPRO", asset_class="fx"),
    Instrument(symbol="ES", sec_type="FUT", exchange="CME", point_size=50, calendar="CMES"),
]
CONTRACTS = [
    FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"),
    FakeContract("EUR", "CASH", "IDEALPRO", "USD", 12087792, local_symbol="EUR.USD", min_tick=0.00005),
    FakeContract("ES", "CONTFUT", "CME", "USD", 495512563, local_symbol="ESH4", multiplier="50", last_trade="20240315",
                 min_tick=0.25),
]
PRICES = pd.Series({"AAPL": 190.0, "EURUSD": 1.1, "ES": 4800.0})
POINT_SIZES = {"AAPL": 1.0, "EURUSD": 1.0, "ES": 50.0}
LIMITS = RiskLimits(max_order_quantity=1_000_000, max_order_notional=10_000_000, max_position=2_000_000)


def new_fake(**kwargs) -> FakeTWS:
    fake = FakeTWS(**kwargs)
    for c in CONTRACTS:
        fake.add(c)
    fake.set_price("AAPL", 190.0)
    fake.set_price("EUR", 1.1)
    fake.set_price("ES", 4800.0)
    return fake


@pytest.fixture
def fake():
    with new_fake() as f:
        yield f


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / LEDGER_FILE).init()


def config(port: int, client_id: int = 201, **kwargs) -> BrokerConfig:
    base = {"mode": "ib", "execution": "paper", "ib": IBConnection(port=port, client_id=client_id, timeout=3.0),
            "paper_ports": [port], "order_timeout": 3.0, "fill_wait": 1.0}
    return BrokerConfig(**{**base, **kwargs})


def run(ledger, broker, targets, *, limits=LIMITS, run_id="run-1", policy=None):
    return execute_orders(
        pd.Series(targets, dtype=float), PRICES, SESSION, ledger=ledger, broker=broker, limits=limits,
        point_sizes=POINT_SIZES, strategy="carver", submit=True, run_id=run_id,
        policy=policy or OrderPolicy(account=broker.account),
    )


def run_once(ledger, port, targets, **kwargs):
    with IBBroker(INSTRUMENTS, config(port)) as broker:
        return run(ledger, broker, targets, **kwargs)


# --- happy paths --------------------------------------------------------------------------------

def test_orders_for_a_stock_a_currency_pair_and_a_future_fill_once_each(fake, ledger):
    report = run_once(ledger, fake.port, {"AAPL": 10, "EURUSD": -20000, "ES": 2})
    assert report.counts["sent"] == 3 and report.counts["filled"] == 3
    intents = ledger.intents().set_index("instrument")
    assert set(intents["status"]) == {"FILLED"}
    assert intents["perm_id"].notna().all() and intents["submitted_at"].notna().all()
    assert intents.loc["AAPL", "commission"] == 1.0 and intents.loc["EURUSD", "commission"] == 100.0  # 0.005 x 20000
    fills = ledger.fills().set_index("instrument")
    assert fills.loc["ES", "quantity"] == 2.0 and fills.loc["ES", "price"] == 4800.0
    assert set(fills["perm_id"]) == set(intents["perm_id"])
    # exactly one order per orderRef at the broker, each with the account and tif set explicitly
    orders = {o.order_ref: o for o in fake.orders()}
    assert len(fake.orders()) == 3 and set(orders) == set(intents["order_ref"])
    assert {(o.account, o.tif) for o in orders.values()} == {(ACCOUNT, "DAY")}
    assert orders["carver:2024-01-02:ES:1"].contract[2] == "FUT"  # traded on the resolved month, not CONTFUT
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        assert broker.positions().to_dict() == {"AAPL": 10.0, "ES": 2.0, "EURUSD": -20000.0}


def test_a_rerun_after_success_sends_nothing(fake, ledger):
    run_once(ledger, fake.port, {"AAPL": 10, "ES": 2})
    again = run_once(ledger, fake.port, {"AAPL": 10, "ES": 2}, run_id="run-2")
    assert again.counts["planned"] == 0 and again.counts["sent"] == 0
    assert len(fake.placed()) == 2


def test_limit_orders_go_out_on_the_tick_grid_inside_the_collar(fake, ledger):
    with IBBroker(INSTRUMENTS, config(fake.port, order_type="LMT")) as broker:
        run(ledger, broker, {"AAPL": 10, "ES": -1},
            policy=OrderPolicy(order_type="LMT", limit_offset=0.001, account=broker.account))
    placed = {f[26]: f for f in fake.placed()}
    aapl, es = placed["carver:2024-01-02:AAPL:1"], placed["carver:2024-01-02:ES:1"]
    assert (aapl[18], float(aapl[19])) == ("LMT", 190.19)  # 190 x 1.001, rounded down to the 0.01 tick
    assert (es[18], float(es[19])) == ("LMT", 4795.25)  # 4800 x 0.999 = 4795.2, rounded up to the 0.25 tick
    assert ledger.intents().set_index("instrument").loc["AAPL", "limit_price"] == pytest.approx(190.19)


FALLBACK = {"order_type": "LMT", "limit_offset": 0.001, "market_fallback_after": 0.3}


def run_with_fallback(ledger, port, targets, run_id="run-1"):
    with IBBroker(INSTRUMENTS, config(port, order_type="LMT")) as broker:
        return run(ledger, broker, targets, run_id=run_id, policy=OrderPolicy(account=broker.account, **FALLBACK))


def test_a_limit_order_the_market_never_reaches_falls_back_to_a_market_order(fake, ledger):
    fake.set_price("AAPL", 195.0)  # the buy limit at 190 x 1.001 = 190.19 rests below the market
    report = run_with_fallback(ledger, fake.port, {"AAPL": 10})
    assert report.counts["fallbacks"] == 1 and report.counts["sent"] == 2
    limit, market = ledger.intents().itertuples()
    assert (limit.order_ref, limit.order_type, limit.status) == ("carver:2024-01-02:AAPL:1", "LMT", "CANCELLED")
    assert pd.isna(limit.filled_quantity) and pd.notna(limit.fallback_at)
    assert (market.order_ref, market.order_type, market.quantity, market.status, market.parent_ref) == (
        "carver:2024-01-02:AAPL:2", "MKT", 10.0, "FILLED", "carver:2024-01-02:AAPL:1")
    assert market.avg_fill_price == 195.0 and market.verdict == "ACCEPTED"
    assert dict(zip(report.intents["order_ref"], report.intents["action"])) == {
        "carver:2024-01-02:AAPL:1": "replaced", "carver:2024-01-02:AAPL:2": "fallback"}
    # at the broker: the limit cancelled, one market order under its own orderRef
    assert [(o.order_ref, o.order_type, o.status) for o in fake.orders()] == [
        ("carver:2024-01-02:AAPL:1", "LMT", "Cancelled"), ("carver:2024-01-02:AAPL:2", "MKT", "Filled")]
    assert fake.position("AAPL") == 10.0
    again = run_with_fallback(ledger, fake.port, {"AAPL": 10}, run_id="run-2")
    assert again.counts["sent"] == 0 and len(fake.placed()) == 2


def test_after_a_partial_limit_fill_only_the_residual_goes_to_market(fake, ledger):
    fake.after_partial = "rest"
    # the limit order is marketable but only 30% of it fills (floor(0.3 x 10) = 3); the market order fills in full
    fake.on_place = lambda order: setattr(fake, "fill_ratio", 0.3 if order.order_type == "LMT" else 1.0)
    report = run_with_fallback(ledger, fake.port, {"AAPL": 10})
    limit, market = ledger.intents().itertuples()
    assert (limit.status, limit.filled_quantity, limit.avg_fill_price) == ("CANCELLED", 3.0, 190.0)
    assert (market.order_type, market.quantity, market.status, market.parent_ref) == ("MKT", 7.0, "FILLED", limit.order_ref)
    assert [float(f[17]) for f in fake.placed()] == [10.0, 7.0] and fake.position("AAPL") == 10.0
    assert report.counts["fallbacks"] == 1
    assert ledger.fills().groupby("order_ref")["quantity"].sum().to_dict() == {limit.order_ref: 3.0, market.order_ref: 7.0}


def test_a_crash_between_the_cancel_and_the_market_order_ends_with_exactly_one_fallback(fake, ledger):
    fake.set_price("AAPL", 195.0)  # the limit rests
    fake.script("cancel", Drop())  # the broker cancels the limit; the connection drops before the client hears
    with pytest.raises(BrokerError):
        run_with_fallback(ledger, fake.port, {"AAPL": 10})
    [limit] = ledger.intents().itertuples()
    assert limit.status == "ACKNOWLEDGED" and pd.notna(limit.fallback_at)  # the fallback is owed
    assert [o.status for o in fake.orders()] == ["Cancelled"] and len(fake.placed()) == 1
    report = run_with_fallback(ledger, fake.port, {"AAPL": 10}, run_id="run-2")
    assert report.counts["fallbacks"] == 1 and report.counts["sent"] == 1 and report.counts["planned"] == 0
    limit, market = ledger.intents().itertuples()
    assert limit.status == "CANCELLED" and (market.order_type, market.quantity, market.status) == ("MKT", 10.0, "FILLED")
    assert market.parent_ref == limit.order_ref and market.run_id == "run-2"
    third = run_with_fallback(ledger, fake.port, {"AAPL": 10}, run_id="run-3")
    assert third.counts["sent"] == 0 and third.counts["fallbacks"] == 0
    assert [(o.order_type, o.status) for o in fake.orders()] == [("LMT", "Cancelled"), ("MKT", "Filled")]
    assert fake.position("AAPL") == 10.0


def test_without_the_fallback_setting_a_resting_limit_order_keeps_working(fake, ledger):
    fake.set_price("AAPL", 195.0)
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        report = run(ledger, broker, {"AAPL": 10}, policy=OrderPolicy(order_type="LMT", limit_offset=0.001,
                                                                      account=broker.account))
    assert report.counts["fallbacks"] == 0 and ledger.intents()["status"].tolist() == ["ACKNOWLEDGED"]
    assert [o.status for o in fake.orders()] == ["Submitted"]


# --- failure scenarios ---------------------------------------------------------------------------

def test_gateway_not_running_fails_with_a_clear_error_and_no_ledger_rows(ledger):
    with new_fake() as gone:
        port = gone.port
    with pytest.raises(BrokerError, match=rf"127.0.0.1:{port}.*Is TWS / IB Gateway running"):
        with IBBroker(INSTRUMENTS, config(port)) as broker:
            run(ledger, broker, {"AAPL": 10})
    assert ledger.intents().empty and ledger.fills().empty


def test_a_disconnect_right_after_place_order_is_adopted_by_the_next_run_not_resent(fake, ledger):
    fake.script("place", Drop())  # the broker takes the order, the client never hears back
    with pytest.raises(BrokerError, match="dropped while waiting"):
        run_once(ledger, fake.port, {"AAPL": 10})
    [intent] = ledger.intents().itertuples()
    assert intent.status == "INTENT"  # written before sending; outcome unknown
    assert "broker_error" in set(ledger.alerts()["kind"])
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="run-2")
    assert report.counts["adopted"] == 1 and report.counts["sent"] == 0
    assert ledger.intents()["status"].tolist() == ["FILLED"]
    assert len(fake.placed("carver:2024-01-02:AAPL:1")) == 1 and fake.position("AAPL") == 10.0


def test_a_partial_fill_then_a_rerun_sends_only_the_residual(fake, ledger):
    fake.fill_ratio, fake.after_partial = 0.3, "cancel"  # 30% fills, the rest of the DAY order expires
    run_once(ledger, fake.port, {"AAPL": 10})
    first = ledger.intents().iloc[0]
    assert (first["status"], first["filled_quantity"]) == ("CANCELLED", 3.0)
    fake.fill_ratio = 1.0
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="run-2")
    assert report.intents["quantity"].tolist() == [7.0]  # 10 - 3, never the full 10 again
    assert [float(f[17]) for f in fake.placed()] == [10.0, 7.0]
    assert fake.position("AAPL") == 10.0


def test_a_partly_filled_order_still_working_is_not_ordered_again(fake, ledger):
    fake.fill_ratio, fake.after_partial = 0.3, "rest"
    run_once(ledger, fake.port, {"AAPL": 10})
    assert ledger.intents()["status"].tolist() == ["PARTIALLY_FILLED"]
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="run-2")
    assert report.counts["planned"] == 0 and report.intents["action"].tolist() == ["working"]
    assert len(fake.placed()) == 1


def test_a_rejected_order_is_recorded_alerted_and_not_retried(fake, ledger):
    fake.reject("insufficient margin", order_ref="carver:2024-01-02:AAPL:1")
    report = run_once(ledger, fake.port, {"AAPL": 10, "ES": 1})
    assert report.counts["rejected"] == 1
    intents = ledger.intents().set_index("instrument")
    assert intents.loc["AAPL", "status"] == "REJECTED" and "insufficient margin" in intents.loc["AAPL", "status_reason"]
    assert intents.loc["ES", "status"] == "FILLED"
    alerts = ledger.alerts()
    assert alerts.loc[alerts["kind"] == "order_rejected", "subject"].tolist() == ["carver:2024-01-02:AAPL:1"]
    again = run_once(ledger, fake.port, {"AAPL": 10, "ES": 1}, run_id="run-2")
    assert again.counts["sent"] == 0 and len(fake.placed()) == 2
    denied = again.intents[again.intents["action"] == "new"]
    assert denied["deny_reason"].str.startswith("rejected_earlier").all() and len(denied) == 1


def test_a_reject_the_client_missed_is_recorded_as_rejected_after_the_reconnect_not_retried(fake, ledger):
    # The gateway rejects the order (201) but the connection drops before the client hears it:
    # the next run knows the order only from the completed orders ("Cancelled", completedStatus
    # "Order rejected - reason:..."), and must record a REJECTED order, not a CANCELLED one whose
    # residual it would send again.
    fake.reject("insufficient margin", order_ref="carver:2024-01-02:AAPL:1")
    fake.script("place", Drop())
    with pytest.raises(BrokerError, match="dropped while waiting"):
        run_once(ledger, fake.port, {"AAPL": 10})
    assert ledger.intents()["status"].tolist() == ["INTENT"]
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="run-2")
    assert report.counts["rejected"] == 1 and report.counts["sent"] == 0
    [intent] = ledger.intents()[lambda d: d["seq"] == 1].itertuples()
    assert intent.status == "REJECTED"
    assert intent.status_reason == "Order rejected - reason:insufficient margin"
    retried = report.intents[report.intents["action"] == "new"]
    assert retried["deny_reason"].str.startswith("rejected_earlier").all() and len(retried) == 1
    assert ledger.alerts().query("kind == 'order_rejected'")["subject"].tolist() == ["carver:2024-01-02:AAPL:1"]
    assert len(fake.placed()) == 1 and fake.position("AAPL") == 0.0


CRASHING_RUN = textwrap.dedent("""
    import sys
    import pandas as pd
    from pipeline.adapters.ib.broker import IBBroker
    from pipeline.config import BrokerConfig, IBConnection, Instrument, RiskLimits
    from pipeline.store.ledger import Ledger
    from pipeline.execution import OrderPolicy, execute_orders
    port, path = int(sys.argv[1]), sys.argv[2]
    cfg = BrokerConfig(mode="ib", execution="paper", ib=IBConnection(port=port, client_id=201, timeout=3.0),
                       paper_ports=[port], order_timeout=30.0)
    with IBBroker([Instrument(symbol="AAPL")], cfg) as broker:
        execute_orders(pd.Series({"AAPL": 10.0}), pd.Series({"AAPL": 190.0}), "2024-01-02", ledger=Ledger(path),
                       broker=broker, limits=RiskLimits(), point_sizes={"AAPL": 1.0}, strategy="carver",
                       submit=True, run_id="crashed", policy=OrderPolicy(account=broker.account))
    print("not killed")
""")


def test_a_process_killed_between_place_order_and_the_ledger_update_is_adopted_on_restart(fake, ledger, tmp_path):
    script = tmp_path / "crashing_run.py"
    script.write_text(CRASHING_RUN)
    proc = subprocess.Popen([sys.executable, str(script), str(fake.port), str(ledger.path)],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the broker books the order, then the order step's process dies before it hears anything
    fake.on_place = lambda order: os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert ledger.intents()["status"].tolist() == ["INTENT"]
    fake.on_place = None
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="restart")
    assert report.intents["action"].tolist() == ["adopted"] and report.counts["sent"] == 0
    assert len(fake.orders("carver:2024-01-02:AAPL:1")) == 1 and len(fake.orders()) == 1
    assert ledger.intents()["status"].tolist() == ["FILLED"] and fake.position("AAPL") == 10.0


def test_two_order_runs_at_once_exactly_one_proceeds(fake, ledger):
    entered, release = threading.Event(), threading.Event()

    def slow_gateway(order):  # the first run's order is in flight while the second run starts
        entered.set()
        release.wait(10)

    outcome = {}

    def first_run():  # its own thread and its own IB session (an IB object stays on its thread)
        with IBBroker(INSTRUMENTS, config(fake.port, 201)) as first:
            outcome["first"] = run(ledger, first, {"AAPL": 10})

    with IBBroker(INSTRUMENTS, config(fake.port, 202)) as second:
        fake.on_place = slow_gateway
        worker = threading.Thread(target=first_run)
        worker.start()
        assert entered.wait(10)
        try:
            with pytest.raises(OrderRunLocked, match="another order run"):
                run(Ledger(ledger.path), second, {"AAPL": 10}, run_id="run-2")
        finally:
            release.set()
            worker.join(20)
    assert outcome["first"].counts["sent"] == 1
    assert len(fake.placed()) == 1 and ledger.intents()["run_id"].tolist() == ["run-1"]


def test_the_order_run_lock_is_released_after_a_run(ledger):
    with order_run_lock(ledger, "carver"):
        with pytest.raises(OrderRunLocked):
            with order_run_lock(ledger, "carver"):
                pass
    with order_run_lock(ledger, "carver"):  # free again
        pass


def test_order_ids_reused_after_a_gateway_restart_do_not_confuse_reconciliation(ledger):
    book = OrderBook()
    with new_fake(book=book) as before:
        run_once(ledger, before.port, {"AAPL": 10})
    with new_fake(book=book) as after:  # restarted gateway: same orders, order ids from 1 again
        report = run_once(ledger, after.port, {"AAPL": 10, "ES": 1}, run_id="run-2")
        assert report.counts["sent"] == 1  # only ES: AAPL's position survived the restart
        orders = {o.order_ref: o for o in after.orders()}
    aapl, es = orders["carver:2024-01-02:AAPL:1"], orders["carver:2024-01-02:ES:1"]
    assert aapl.order_id == es.order_id and aapl.perm_id != es.perm_id
    intents = ledger.intents().set_index("order_ref")
    assert intents.loc["carver:2024-01-02:AAPL:1", "perm_id"] == aapl.perm_id
    assert intents.loc["carver:2024-01-02:ES:1", "perm_id"] == es.perm_id
    assert ledger.fills().groupby("order_ref")["quantity"].sum().to_dict() == {
        "carver:2024-01-02:AAPL:1": 10.0, "carver:2024-01-02:ES:1": 1.0}


def test_positions_on_a_broken_connection_raise_instead_of_reading_flat(fake, ledger):
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        run(ledger, broker, {"AAPL": 10})
        fake.drop_all()
        try:
            broker._ib.sleep(0.2)  # lets ib_async notice the closed socket
        except ConnectionError:
            pass
        with pytest.raises(BrokerError, match="positions is unknown"):
            broker.positions()
        with pytest.raises(BrokerError):
            run(ledger, broker, {"AAPL": 20}, run_id="run-2")
    assert len(ledger.intents()) == 1 and len(fake.placed()) == 1


def test_a_position_request_dropped_mid_answer_raises(fake, ledger):
    fake.script("positions", Drop(), skip=1)  # connect's own request passes, the broker's drops
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        with pytest.raises(BrokerError):
            broker.positions()


def test_lost_connectivity_1100_makes_positions_unknown(fake):
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        fake.send_notice(1100, CONNECTIVITY_LOST_TEXT)
        broker._ib.sleep(0.2)
        with pytest.raises(BrokerError, match="1100"):
            broker.positions()


def test_halted_denies_submits_but_lets_cancels_through(fake, ledger):
    fake.set_price("AAPL", 195.0)  # a buy limit at the 190 reference rests below the market
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        run(ledger, broker, {"AAPL": 10}, policy=OrderPolicy(order_type="LMT", limit_offset=0.0, account=broker.account))
    assert ledger.intents()["status"].tolist() == ["ACKNOWLEDGED"] and fake.orders()[0].status == "Submitted"
    ledger.set_trading_state(TradingState.HALTED, "incident", "ops")
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        report = run(ledger, broker, {"AAPL": 10, "ES": 1}, run_id="run-2")
        assert report.counts["sent"] == 0
        assert report.intents.loc[report.intents["action"] == "new", "deny_reason"].str.startswith("kill_switch").all()
        after = cancel_orders(SESSION, ledger=ledger, broker=broker, run_id="cancel")
    assert after.set_index("order_ref").loc["carver:2024-01-02:AAPL:1", "status"] == "CANCELLED"
    assert fake.orders("carver:2024-01-02:AAPL:1")[0].status == "Cancelled" and len(fake.placed()) == 1


def test_reducing_lets_only_exposure_reducing_orders_through(fake, ledger):
    run_once(ledger, fake.port, {"AAPL": 10, "ES": 2})
    ledger.set_trading_state(TradingState.REDUCING, "wind down", "ops")
    report = run_once(ledger, fake.port, {"AAPL": 4, "ES": 3}, run_id="run-2")
    new = report.intents.set_index("instrument")
    assert new.loc["AAPL", "status"] == "FILLED" and new.loc["ES", "status"] == "DENIED"
    assert new.loc["ES", "deny_reason"].startswith("reduce_only")
    assert (fake.position("AAPL"), fake.position("ES")) == (4.0, 2.0)


def test_the_daily_loss_circuit_breaker_halts_trading(fake, ledger):
    fake.daily_pnl = -60_000.0
    limits = LIMITS.model_copy(update={"max_daily_loss": 50_000.0})
    report = run_once(ledger, fake.port, {"AAPL": 10}, limits=limits)
    assert report.trading_state is TradingState.HALTED and report.counts["sent"] == 0
    assert ledger.trading_state() is TradingState.HALTED
    log = ledger.trading_state_log().iloc[-1]
    assert (log["changed_by"], log["reason"]) == ("circuit_breaker", "max_daily_loss: daily P&L -60000 < -50000")
    assert "circuit_breaker" in set(ledger.alerts()["kind"]) and fake.placed() == []


def test_the_order_rate_throttle_denies_orders_beyond_the_window(fake, ledger):
    limits = LIMITS.model_copy(update={"max_orders_per_window": 2, "order_window_seconds": 60.0})
    report = run_once(ledger, fake.port, {"AAPL": 10, "ES": 1, "EURUSD": 1000}, limits=limits)
    assert report.counts["sent"] == 2
    denied = report.intents[report.intents["status"] == "DENIED"]
    assert denied["deny_reason"].tolist() == ["order_rate: 2 orders within 60 s >= 2"]


# --- modes ----------------------------------------------------------------------------------------

def test_paper_mode_refuses_a_port_outside_the_paper_ports_before_connecting(fake):
    with pytest.raises(BrokerError, match="not a paper port"):
        with IBBroker(INSTRUMENTS, config(fake.port, paper_ports=[4002])):
            pass
    assert fake.requests(71) == []


def test_paper_mode_refuses_an_account_that_is_not_a_paper_account():
    with new_fake(account="U7654321") as live_account:
        with pytest.raises(BrokerError, match="not a paper account"):
            with IBBroker(INSTRUMENTS, config(live_account.port)):
                pass
        assert live_account.placed() == []


def test_live_mode_needs_the_flag_the_allow_list_and_a_live_port():
    with pytest.raises(ValueError, match="live_enabled"):
        BrokerConfig(mode="ib", execution="live")
    with new_fake(account="U7654321") as gw:
        cfg = config(gw.port, execution="live", live_enabled=True, live_accounts=["U0000001"], live_ports=[gw.port])
        with pytest.raises(BrokerError, match="not on broker.live_accounts"):
            with IBBroker(INSTRUMENTS, cfg):
                pass
        ok = config(gw.port, execution="live", live_enabled=True, live_accounts=["U7654321"], live_ports=[gw.port])
        with IBBroker(INSTRUMENTS, ok) as broker:
            assert broker.account == "U7654321"


def test_dry_run_connects_read_only_and_refuses_to_send(fake):
    with IBBroker(INSTRUMENTS, config(fake.port, execution=None)) as broker:
        assert broker.execution == "dry_run"
        assert broker.positions().empty
        from pipeline.trading import OrderIntent

        intent = OrderIntent("carver:2024-01-02:AAPL:1", "carver", pd.Timestamp(SESSION), "AAPL", 1, 10.0, 190.0)
        with pytest.raises(BrokerError, match="dry_run"):
            broker.submit(intent, 190.0)
    assert fake.requests(5) == [] and fake.placed() == []  # read-only: no open-orders sync, no order


def test_a_dry_run_with_what_if_records_margin_and_commission_previews_and_sends_nothing(fake, ledger):
    fake.set_price("AAPL", 195.0)  # the what-if values the order at the broker's price
    with IBBroker(INSTRUMENTS, config(fake.port, execution=None, what_if=True)) as broker:
        assert broker.execution == "dry_run"
        report = execute_orders(
            pd.Series({"AAPL": 10.0, "ES": -2.0}), PRICES, SESSION, ledger=ledger, broker=broker, limits=LIMITS,
            point_sizes=POINT_SIZES, strategy="carver", submit=False, run_id="dry", policy=OrderPolicy(what_if=True),
        )
    assert report.counts["previewed"] == 2 and report.counts["sent"] == 0
    assert fake.placed() == [] and fake.orders() == [] and fake.position("AAPL") == 0.0  # nothing booked
    assert sorted(o.order_ref for o in fake.what_ifs) == ["carver:2024-01-02:AAPL:1", "carver:2024-01-02:ES:1"]
    intents = ledger.intents().set_index("instrument")
    assert set(intents["status"]) == {"RECORDED"} and set(intents["mode"]) == {"record_only"}
    # the fake's margins: 50% initial, 25% maintenance of |units| x price x multiplier
    assert intents.loc["AAPL", ["what_if_init_margin", "what_if_maint_margin"]].tolist() == [975.0, 487.5]  # 10 x 195
    assert intents.loc["ES", ["what_if_init_margin", "what_if_maint_margin"]].tolist() == [240_000.0, 120_000.0]  # 2 x 4800 x 50
    assert intents["what_if_commission"].tolist() == [1.0, 1.0] and set(intents["what_if_currency"]) == {"USD"}


def test_without_what_if_a_dry_run_stays_read_only_and_previews_nothing(fake, ledger):
    with IBBroker(INSTRUMENTS, config(fake.port, execution=None)) as broker:
        report = execute_orders(
            pd.Series({"AAPL": 10.0}), PRICES, SESSION, ledger=ledger, broker=broker, limits=LIMITS,
            point_sizes=POINT_SIZES, strategy="carver", submit=False, run_id="dry", policy=OrderPolicy(),
        )
    assert report.counts["previewed"] == 0 and fake.what_ifs == [] and fake.requests(5) == []  # read-only sync
    assert ledger.intents()["what_if_init_margin"].isna().all()


def test_the_cancel_orders_command_cancels_a_sessions_working_orders_while_halted(fake, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.config import load_config
    from tests.conftest import write_config

    path = write_config(tmp_path, symbols=["AAPL"], broker={
        "mode": "ib", "execution": "paper", "paper_ports": [fake.port], "ib": {"port": fake.port, "timeout": 3.0}})
    cfg = load_config(path)
    ledger = Ledger.at_lake(cfg.lake_path).init()
    fake.set_price("AAPL", 195.0)  # the buy limit at 190 rests
    with IBBroker(cfg.instruments, cfg.broker) as broker:
        execute_orders(pd.Series({"AAPL": 10.0}), PRICES, SESSION, ledger=ledger, broker=broker, limits=LIMITS,
                       point_sizes=POINT_SIZES, strategy="carver", submit=True, run_id="run-1",
                       policy=OrderPolicy(order_type="LMT", account=broker.account))
    assert main(["kill-switch", "HALTED", "--reason", "incident", "--config", str(path)]) == 0
    assert main(["cancel-orders", SESSION, "--config", str(path)]) == 0
    assert "carver:2024-01-02:AAPL:1: CANCELLED" in capsys.readouterr().out
    assert fake.orders()[0].status == "Cancelled" and len(fake.placed()) == 1
