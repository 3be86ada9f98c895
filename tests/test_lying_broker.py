"""Lying or failing broker answers: each fault ends with 0 duplicate orders and 0 positions nobody
expects (reliability.md §5).

Every test drives the real order path (``execute_orders`` with ``IBBroker`` and the real ib_async
client) against the fake gateway, first through one fault (a switch of the fake) and then through a
normal run, and checks with real numbers: each orderRef reached the broker at most once, the
broker's positions equal the ledger's expected ones (or the difference is an open position break
that blocks its instrument: no order sent for it), and every execution is in the ledger once.
The empty and the incomplete positions answers are in tests/test_position_breaks.py.
"""

from __future__ import annotations

import time

import pytest

from pipeline.adapters.ib.broker import IBBroker
from pipeline.adapters.ib.fake_gateway import Drop, Omit, OrderBook, Silent
from pipeline.execution import OrderPolicy, cancel_orders
from pipeline.trading import BrokerError, TradingState
from tests.test_ib_broker import (  # the same universe, prices, limits and runs as the order-path tests
    INSTRUMENTS,
    SESSION,
    config,
    new_fake,
    run,
    run_once,
    run_with_fallback,
)
from tests.test_ib_broker import fake, ledger  # noqa: F401  (fixtures: the fake gateway with the universe, a new ledger)

#: The fake's symbol of each configured instrument.
FAKE_SYMBOL = {"AAPL": "AAPL", "EURUSD": "EUR", "ES": "ES"}
AAPL1, AAPL2 = "carver:2024-01-02:AAPL:1", "carver:2024-01-02:AAPL:2"


# --- what every test checks ------------------------------------------------------------------------


def refs_sent_twice(fake) -> list[str]:
    """orderRefs the broker holds more than one order of (a duplicate submission)."""
    refs = [o.order_ref for o in fake.orders()]
    return sorted({r for r in refs if refs.count(r) > 1})


def broker_positions(fake) -> dict[str, float]:
    """The fake broker's positions per configured instrument, flat ones left out."""
    held = {i: fake.position(s) for i, s in FAKE_SYMBOL.items()}
    return {i: q for i, q in held.items() if q != 0}


def broker_fills(fake) -> dict[str, float]:
    """Signed units each orderRef filled at the broker."""
    return {o.order_ref: o.filled * o.signed_sign for o in fake.orders() if o.filled}


def assert_nothing_duplicated_and_nothing_unexpected(fake, ledger) -> None:
    """0 duplicate orders, 0 positions nobody expects, every execution recorded exactly once."""
    assert refs_sent_twice(fake) == []
    assert broker_positions(fake) == ledger.expected_positions("ib").to_dict()
    assert ledger.open_position_breaks("ib").empty
    fills = ledger.fills()
    assert fills["fill_id"].is_unique
    assert sorted(fills["fill_id"]) == sorted(ex.exec_id for o in fake.orders() for ex in o.executions)
    assert fills.groupby("order_ref")["quantity"].sum().to_dict() == broker_fills(fake)
    filled = ledger.intents().dropna(subset=["filled_quantity"]).set_index("order_ref")["filled_quantity"]
    assert filled.to_dict() == broker_fills(fake)  # the intents' sums are the fills', none counted twice


# --- an executions answer missing a fill the positions show ----------------------------------------


def test_executions_missing_a_fill_the_positions_show_is_a_position_break(fake, ledger):
    fake.script("place", Drop())  # the broker fills AAPL 10; the client never hears of it
    with pytest.raises(BrokerError, match="dropped while waiting"):
        run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1")
    assert ledger.intents()["status"].tolist() == ["INTENT"] and fake.position("AAPL") == 10.0

    # the next run looks the order up: IB says Filled, its executions answer leaves the fill out
    fake.script("executions", Omit(("AAPL",)), times=10)  # the connect's sync and the look-up both lie
    report = run_once(ledger, fake.port, {"AAPL": 15, "ES": 1}, run_id="day-1-fault")
    assert ledger.fills()["instrument"].tolist() == ["ES"]  # no AAPL fill invented, none lost for good:
    assert ledger.intents().set_index("order_ref").loc[AAPL1, "status"] == "PARTIALLY_FILLED"  # still open
    breaks = ledger.open_position_breaks("ib")
    assert breaks[["instrument", "expected", "broker_position"]].values.tolist() == [["AAPL", 0.0, 10.0]]
    new = report.intents[report.intents["action"] == "new"].set_index("instrument")
    assert new.loc["AAPL", "status"] == "DENIED" and new.loc["AAPL", "deny_reason"].startswith(
        "position_break: the broker holds 10 of AAPL")  # blocked: no order sent for it
    assert new.loc["ES", "status"] == "FILLED"  # the others trade
    assert [o.order_ref for o in fake.orders()] == [AAPL1, "carver:2024-01-02:ES:1"]
    assert (fake.position("AAPL"), fake.position("ES")) == (10.0, 1.0)

    fake.clear_scripts("executions")  # the gateway tells the truth again
    report = run_once(ledger, fake.port, {"AAPL": 15, "ES": 1}, run_id="day-1-after")
    assert report.intents.set_index("order_ref").loc[AAPL1, "action"] == "adopted"
    assert ledger.intents().set_index("order_ref").loc[AAPL1, ["status", "filled_quantity"]].tolist() == ["FILLED", 10.0]
    assert report.counts["sent"] == 1 and [float(f[17]) for f in fake.placed("carver:2024-01-02:AAPL:3")] == [5.0]
    assert ledger.position_breaks()["resolution"].tolist() == ["cleared"]
    assert broker_positions(fake) == {"AAPL": 15.0, "ES": 1.0}
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


def test_executions_missing_a_fill_never_size_a_market_fallback(fake, ledger):
    # the resting limit fills 4 of 10 as the fallback cancels it; the executions answer leaves them out
    fake.set_price("AAPL", 195.0)
    fake.fill_after_cancel = 0.4
    fake.script("executions", Omit(("AAPL",)), times=10)
    with pytest.raises(BrokerError, match="not final at the broker after its cancel"):
        run_with_fallback(ledger, fake.port, {"AAPL": 10}, run_id="day-1")
    assert [(o.order_ref, o.filled) for o in fake.orders()] == [(AAPL1, 4.0)]  # no market order for 10
    assert fake.position("AAPL") == 4.0

    fake.clear_scripts("executions")
    fake.fill_after_cancel = 0.0
    report = run_with_fallback(ledger, fake.port, {"AAPL": 10}, run_id="day-1-normal")
    assert report.counts["fallbacks"] == 1 and [(o.order_ref, o.quantity) for o in fake.orders()] == [
        (AAPL1, 10.0), (AAPL2, 6.0)]  # the fallback is the residual of the fills the broker shows
    assert fake.position("AAPL") == 10.0
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


# --- the same execution reported twice ---------------------------------------------------------------


def test_the_same_execution_reported_twice_is_recorded_once(fake, ledger):
    fake.repeat_executions = 2  # every execDetails and commissionReport twice, live and in reqExecutions
    report = run_once(ledger, fake.port, {"AAPL": 10, "ES": 2}, run_id="day-1")
    assert report.counts["sent"] == 2 and report.counts["filled"] == 2
    intents = ledger.intents().set_index("instrument")
    assert intents["filled_quantity"].to_dict() == {"AAPL": 10.0, "ES": 2.0}
    assert intents["commission"].to_dict() == {"AAPL": 1.0, "ES": 1.0}  # one commission each, not two
    assert len(ledger.fills()) == 2

    # an answer the client missed is read from the executions answer, where it also comes twice
    fake.script("place", Drop())
    with pytest.raises(BrokerError, match="dropped while waiting"):
        run_once(ledger, fake.port, {"AAPL": 10, "ES": 2, "EURUSD": -20000}, run_id="day-1-drop")
    report = run_once(ledger, fake.port, {"AAPL": 10, "ES": 2, "EURUSD": -20000}, run_id="day-1-rerun")
    assert report.intents["action"].tolist() == ["adopted"] and report.counts["sent"] == 0
    eur = ledger.intents().set_index("instrument").loc["EURUSD"]
    assert (eur["status"], eur["filled_quantity"], eur["commission"]) == ("FILLED", -20000.0, 100.0)

    fake.repeat_executions = 1
    again = run_once(ledger, fake.port, {"AAPL": 10, "ES": 2, "EURUSD": -20000}, run_id="day-1-normal")
    assert again.counts["planned"] == 0 and again.counts["sent"] == 0
    assert len(ledger.fills()) == 3 and len(fake.orders()) == 3
    assert broker_positions(fake) == {"AAPL": 10.0, "ES": 2.0, "EURUSD": -20000.0}
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


# --- order statuses out of order (Filled before Submitted) -------------------------------------------


def test_statuses_out_of_order_end_in_the_final_status(fake, ledger):
    fake.filled_before_submitted = True  # Filled first; the stale Submitted (nothing filled) comes last
    started = time.monotonic()
    report = run_once(ledger, fake.port, {"AAPL": 10, "ES": 2}, run_id="day-1")
    took = time.monotonic() - started
    assert report.counts["sent"] == 2 and report.counts["filled"] == 2
    intents = ledger.intents().set_index("instrument")
    assert intents["status"].to_dict() == {"AAPL": "FILLED", "ES": "FILLED"}
    assert intents["filled_quantity"].to_dict() == {"AAPL": 10.0, "ES": 2.0}
    # the audit trail holds the final word, not the stale one: filled, nothing remaining
    events = ledger.order_events()
    last = events.groupby("order_ref").tail(1).set_index("order_ref")
    assert last["status"].tolist() == ["FILLED", "FILLED"] and last["remaining"].tolist() == [0.0, 0.0]
    assert not events["status"].isin(["ACKNOWLEDGED", "PARTIALLY_FILLED"]).any()
    assert took < 2 * 1.0  # a Filled order is done: no order waited out its fill_wait (1 s) for more
    assert [o.status for o in fake.orders()] == ["Filled", "Filled"]

    fake.filled_before_submitted = False
    again = run_once(ledger, fake.port, {"AAPL": 10, "ES": 2}, run_id="day-1-normal")
    assert again.counts["sent"] == 0 and len(fake.orders()) == 2
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


# --- a partial fill then a disconnect ------------------------------------------------------------------


@pytest.mark.parametrize("after_partial", ["cancel", "rest"])
def test_a_partial_fill_then_a_disconnect_sends_only_the_residual_once(fake, ledger, after_partial):
    # 3 of 10 fill and are reported; then the connection drops; the rest expires ("cancel", a DAY
    # order) or keeps working ("rest") at the broker while the client is away
    fake.fill_ratio, fake.after_partial, fake.drop_after_partial = 0.3, after_partial, True
    with pytest.raises(BrokerError, match="dropped while waiting"):
        run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1")
    assert ledger.intents()["status"].tolist() == ["INTENT"]  # the outcome is unknown to the ledger
    assert fake.position("AAPL") == 3.0 and fake.orders()[0].filled == 3.0

    fake.fill_ratio, fake.drop_after_partial = 1.0, False
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1-rerun")
    first = ledger.intents().set_index("order_ref").loc[AAPL1]
    assert first["filled_quantity"] == 3.0
    if after_partial == "cancel":  # the residual 7 is sent once, under its own orderRef
        assert first["status"] == "CANCELLED"
        assert dict(zip(report.intents["order_ref"], report.intents["action"])) == {AAPL1: "adopted", AAPL2: "new"}
        assert [(o.order_ref, o.quantity) for o in fake.orders()] == [(AAPL1, 10.0), (AAPL2, 7.0)]
        expected_position = 10.0
    else:  # the rest still works at the broker: nothing more is sent
        assert first["status"] == "PARTIALLY_FILLED" and report.intents["action"].tolist() == ["working"]
        assert report.counts["planned"] == 0 and [o.order_ref for o in fake.orders()] == [AAPL1]
        expected_position = 3.0
    assert fake.position("AAPL") == expected_position

    again = run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1-normal")
    assert again.counts["sent"] == 0 and again.counts["planned"] == 0
    assert fake.position("AAPL") == expected_position
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


# --- a fill reported after a cancel was acknowledged ---------------------------------------------------


def test_a_fill_after_an_acknowledged_cancel_is_recorded_and_not_resent(fake, ledger):
    # a buy limit at 190 x 1.001 = 190.19 rests under the market (195); after 0.3 s the market
    # fallback cancels it: the cancel is acknowledged (Cancelled, 202), then 4 of its 10 turn out
    # to have filled at the limit before the cancel reached the exchange
    fake.set_price("AAPL", 195.0)
    fake.fill_after_cancel = 0.4
    report = run_with_fallback(ledger, fake.port, {"AAPL": 10}, run_id="day-1")
    limit, market = ledger.intents().itertuples()
    assert (limit.status, limit.filled_quantity, limit.avg_fill_price) == ("CANCELLED", 4.0, 190.19)
    assert (market.order_type, market.quantity, market.status, market.parent_ref) == ("MKT", 6.0, "FILLED", AAPL1)
    assert report.counts["fallbacks"] == 1
    assert [(o.order_ref, o.quantity, o.filled) for o in fake.orders()] == [(AAPL1, 10.0, 4.0), (AAPL2, 6.0, 6.0)]
    assert fake.position("AAPL") == 10.0  # not 16: the late 4 were not sent again

    fake.fill_after_cancel = 0.0
    again = run_with_fallback(ledger, fake.port, {"AAPL": 10}, run_id="day-1-normal")
    assert again.counts["sent"] == 0 and again.counts["fallbacks"] == 0 and len(fake.orders()) == 2
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


def test_a_fill_after_an_acknowledged_cancel_of_the_cancel_command_is_recorded_and_not_resent(fake, ledger):
    fake.set_price("AAPL", 195.0)  # the buy limit at 190 rests
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        run(ledger, broker, {"AAPL": 10}, run_id="day-1",
            policy=OrderPolicy(order_type="LMT", limit_offset=0.0, account=broker.account))
    ledger.set_trading_state(TradingState.HALTED, "incident", "ops")
    fake.fill_after_cancel = 0.4  # 4 of the 10 fill as the cancel arrives, reported after the 202
    with IBBroker(INSTRUMENTS, config(fake.port)) as broker:
        after = cancel_orders(SESSION, ledger=ledger, broker=broker, run_id="cancel").set_index("order_ref")
    assert after.loc[AAPL1, ["status", "filled_quantity", "avg_fill_price"]].tolist() == ["CANCELLED", 4.0, 190.0]
    assert fake.position("AAPL") == 4.0 and ledger.expected_positions("ib").to_dict() == {"AAPL": 4.0}

    fake.fill_after_cancel = 0.0
    ledger.set_trading_state(TradingState.ACTIVE, "resolved", "ops")
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1-normal")
    assert report.counts["sent"] == 1 and [(o.order_ref, o.quantity) for o in fake.orders()] == [
        (AAPL1, 10.0), (AAPL2, 6.0)]  # only the residual, once
    assert fake.position("AAPL") == 10.0
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


# --- an orderId sequence reset -----------------------------------------------------------------------------


def test_an_order_id_sequence_reset_does_not_confuse_reconciliation(ledger):
    book = OrderBook()
    with new_fake(book=book) as before:  # AAPL fills 3 of 10 (the rest expires), ES fills
        before.on_place = lambda o: setattr(before, "fill_ratio", 0.3 if o.contract[1] == "AAPL" else 1.0)
        run_once(ledger, before.port, {"AAPL": 10, "ES": 1}, run_id="day-1")
        ids_before = {o.order_ref: o.order_id for o in before.orders()}
    with new_fake(book=book) as after:  # restarted: the same orders and positions, order ids from 1 again
        report = run_once(ledger, after.port, {"AAPL": 10, "ES": 1, "EURUSD": -20000}, run_id="day-1-restart")
        assert report.counts["sent"] == 2  # AAPL's residual 7 and EURUSD; ES's fill survived the restart
        orders = {o.order_ref: o for o in after.orders()}
        ids_after = {ref: o.order_id for ref, o in orders.items() if ref not in ids_before}
        assert sorted(ids_after.values()) == sorted(ids_before.values())  # the same orderIds, handed out again
        assert orders[AAPL2].order_id == orders[AAPL1].order_id  # even on the same contract
        assert len({o.perm_id for o in orders.values()}) == 4  # four orders, each once, told apart by permId
        intents = ledger.intents().set_index("order_ref")
        assert intents["perm_id"].to_dict() == {ref: o.perm_id for ref, o in orders.items()}
        assert intents.loc[AAPL2, "quantity"] == 7.0 and intents.loc[AAPL1, "status"] == "CANCELLED"
        assert ledger.fills().groupby("order_ref")["perm_id"].first().to_dict() == {
            ref: o.perm_id for ref, o in orders.items()}  # each fill with its own order, none swapped

        again = run_once(ledger, after.port, {"AAPL": 10, "ES": 1, "EURUSD": -20000}, run_id="day-1-normal")
        assert again.counts["sent"] == 0 and again.counts["planned"] == 0 and len(after.orders()) == 4
        assert broker_positions(after) == {"AAPL": 10.0, "ES": 1.0, "EURUSD": -20000.0}
        assert_nothing_duplicated_and_nothing_unexpected(after, ledger)


# --- an answer that never comes (time-out) -------------------------------------------------------------------


def test_a_positions_answer_that_never_comes_stops_the_step(fake, ledger):
    run_once(ledger, fake.port, {"AAPL": 10, "ES": 2}, run_id="day-1")
    fake.script("positions", Silent(), skip=1)  # the connect's own request passes; the order step's is never answered
    started = time.monotonic()
    with pytest.raises(BrokerError, match="positions"):
        run_once(ledger, fake.port, {"AAPL": 15, "ES": 2}, run_id="day-1-fault")
    assert time.monotonic() - started < 3.0 + 5.0  # the 3 s request timeout, not a hang
    assert len(ledger.intents()) == 2 and len(fake.orders()) == 2  # nothing planned from an unknown position
    assert broker_positions(fake) == ledger.expected_positions("ib").to_dict() == {"AAPL": 10.0, "ES": 2.0}

    fake.clear_scripts("positions")
    report = run_once(ledger, fake.port, {"AAPL": 15, "ES": 2}, run_id="day-1-normal")
    assert report.counts["sent"] == 1 and fake.position("AAPL") == 15.0
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)


@pytest.mark.parametrize("kind, skip, written", [
    ("all_open_orders", 0, []),  # working orders, read with the positions: the step stops before planning
    ("completed_orders", 1, ["INTENT"]),  # the look-up before sending: the intent is written, not sent
    ("executions", 1, ["INTENT"]),
])
def test_an_order_look_up_answer_that_never_comes_sends_nothing_twice(fake, ledger, kind, skip, written):
    fake.script(kind, Silent(), skip=skip)  # skip: the connect's own request of that kind passes
    started = time.monotonic()
    with pytest.raises(BrokerError, match="timed out|time"):
        run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1-fault")
    assert time.monotonic() - started < 3.0 + 5.0  # the 3 s request timeout, not a hang
    assert fake.orders() == [] and ledger.intents()["status"].tolist() == written

    fake.clear_scripts(kind)
    report = run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1-normal")
    assert report.intents["action"].tolist() == (["resent"] if written else ["new"])  # the same orderRef
    again = run_once(ledger, fake.port, {"AAPL": 10}, run_id="day-1-again")
    assert again.counts["sent"] == 0 and [o.order_ref for o in fake.orders()] == [AAPL1]
    assert fake.position("AAPL") == 10.0
    assert_nothing_duplicated_and_nothing_unexpected(fake, ledger)
