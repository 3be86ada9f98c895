"""Roll states: the roll policy's transitions, the trades each state allows, the planned contracts,
and the ledger's append-only ``roll_states`` table."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.futures import (
    FuturesDataError,
    RollParameters,
    RollPolicy,
    RollState,
    allowed_trade,
    allowed_trades,
    parse_roll_state,
    planned_contracts,
    roll_policy,
)
from pipeline.futures.roll_states import nearest_roll
from pipeline.store.ledger import Ledger, LedgerError
from pipeline.store.ledger.schema import ROLL_STATES

CORN = RollParameters(HoldRollCycle="Z", PricedRollCycle="HKNUZ", RollOffsetDays=-60, CarryOffset=-1, ExpiryOffset=14)
#: CORN 202312: planned roll 2023-10-17 (first session in 202412), close-out 2023-11-30 (first notice day).
ROLL, CLOSE_OUT = "2023-10-17", "2023-11-30"


def _one(session, state="No_Roll", priced=3.0, forward=0.0, spread_sessions=0, roll_date=ROLL, close_out=CLOSE_OUT,
         policy=None, **extra):
    frame = pd.DataFrame(
        {"session": [session], "roll_date": [roll_date], "close_out": [close_out], "state": [state],
         "priced_position": [priced], "forward_position": [forward], "spread_sessions": [spread_sessions], **extra},
        index=pd.Index(["CORN"], name="instrument"),
    )
    return roll_policy(frame, policy or RollPolicy()).iloc[0]


def test_passive_from_the_roll_date_not_before():
    before = _one("2023-10-16")
    assert (before["state"], before["sessions_to_roll"], before["changed"]) == ("No_Roll", 1, False)
    assert before["reason"] == "1 sessions to the roll date 2023-10-17"
    on = _one("2023-10-17")
    assert (on["state"], on["previous_state"], on["changed"], on["sessions_to_roll"]) == ("Passive", "No_Roll", True, 0)
    assert on["reason"] == "roll date 2023-10-17 reached: reduce the priced contract, open in the forward"
    assert _one("2023-10-30", state="Passive")["state"] == "Passive"


def test_force_when_the_close_out_is_force_sessions_away():
    # 2023-11-16 .. 2023-11-29 are 10 weekdays: the 10th session before the close-out
    at_ten = _one("2023-11-16", state="Passive")
    assert (at_ten["state"], at_ten["sessions_to_close_out"]) == ("Force", 10)
    assert at_ten["reason"].startswith("10 sessions to the priced contract's close-out 2023-11-30 (Force at 10)")
    at_eleven = _one("2023-11-15", state="Passive")
    assert (at_eleven["state"], at_eleven["sessions_to_close_out"]) == ("Passive", 11)
    # a per-instrument threshold overrides the policy's
    assert _one("2023-11-15", state="Passive", force_sessions=[11])["state"] == "Force"
    # also from No_Roll when the roll date lies after the close-out (a bad roll offset)
    assert _one("2023-11-16", roll_date="2023-12-10")["state"] == "Force"


def test_force_outright_after_k_sessions_of_unfilled_spread():
    working = _one("2023-11-20", state="Force", spread_sessions=2)
    assert (working["state"], working["reason"]) == ("Force", "calendar spread working for 2 sessions")
    stuck = _one("2023-11-21", state="Force", spread_sessions=3)
    assert stuck["state"] == "Force_Outright"
    assert stuck["reason"] == "the Force spread has not filled in 3 sessions (limit 3): two outright orders"
    assert _one("2023-11-21", state="Force", spread_sessions=3, policy=RollPolicy(outright_after=5))["state"] == "Force"
    # never de-escalated while the priced position remains
    assert _one("2023-11-22", state="Force_Outright", spread_sessions=0)["state"] == "Force_Outright"


def test_roll_adjusted_once_the_priced_position_is_zero_then_back_to_no_roll():
    done = _one("2023-10-25", state="Passive", priced=0.0, forward=3.0)
    assert (done["state"], done["changed"]) == ("Roll_Adjusted", True)
    assert done["reason"] == "no position left in the priced contract (roll date 2023-10-17): switch it to the forward"
    assert _one("2023-11-21", state="Force", priced=0.0, forward=3.0)["state"] == "Roll_Adjusted"
    assert _one("2023-11-21", state="Force_Outright", priced=0.0, forward=3.0)["state"] == "Roll_Adjusted"
    assert _one("2023-10-17", state="No_Roll", priced=0.0)["state"] == "Roll_Adjusted"  # flat: nothing to roll
    assert _one("2023-10-16", state="No_Roll", priced=0.0)["state"] == "No_Roll"
    # Roll_Adjusted is kept while the multiple prices have not moved PRICE_CONTRACT (the roll date of the
    # priced contract is reached), and goes back to No_Roll once they price the contract rolled into
    waiting = _one("2023-10-26", state="Roll_Adjusted", priced=0.0, forward=3.0)
    assert (waiting["state"], waiting["changed"]) == ("Roll_Adjusted", False)
    assert waiting["reason"].startswith("waiting for the multiple prices to price the forward (roll date 2023-10-17")
    switched = _one("2023-10-26", state="Roll_Adjusted", priced=3.0, roll_date="2024-01-17")
    assert (switched["state"], switched["sessions_to_roll"]) == ("No_Roll", 59)


def test_states_set_by_hand_are_kept():
    for state in ("Close", "No_Open"):
        kept = _one("2023-11-28", state=state, priced=3.0)  # 2 sessions from the close-out
        assert (kept["state"], kept["changed"]) == (state, False)
        assert kept["reason"] == "set by hand: kept until a person changes it"


def test_the_policy_is_vectorised_over_instruments_and_rejects_bad_rows():
    frame = pd.DataFrame(
        {"session": "2023-11-16", "roll_date": [ROLL, "2023-12-15", ROLL], "close_out": CLOSE_OUT,
         "state": ["passive", "No_Roll", "Force"], "priced_position": [2, -4, 0], "forward_position": [1, 0, -5]},
        index=pd.Index(["CORN", "GOLD", "SP500"], name="instrument"),
    )
    out = roll_policy(frame)
    assert out["state"].tolist() == ["Force", "Force", "Roll_Adjusted"]
    assert out["sessions_to_close_out"].tolist() == [10, 10, 10]
    with pytest.raises(FuturesDataError, match=r"roll policy, GOLD: unknown roll state 'Rolling'"):
        roll_policy(frame.assign(state=["Passive", "Rolling", "Force"]))
    with pytest.raises(FuturesDataError, match="missing column.*close_out"):
        roll_policy(frame.drop(columns="close_out"))
    with pytest.raises(FuturesDataError, match=r"SP500: close_out 'soon' is not a date"):
        roll_policy(frame.assign(close_out=[CLOSE_OUT, CLOSE_OUT, "soon"]))


@pytest.mark.parametrize(
    ("state", "priced", "trade_priced", "trade_forward", "forward", "allowed", "order"),
    [
        ("No_Roll", 3, 2, 0, 0, True, "outright"),
        ("No_Roll", 3, -5, 0, 0, True, "outright"),  # crosses zero: normal trading
        ("No_Roll", 3, 0, 1, 0, False, "outright"),
        ("Passive", 3, -2, 0, 0, True, "outright"),
        ("Passive", 3, -3, -1, 0, True, "outright"),  # close the priced, open short in the forward
        ("Passive", 3, 1, 0, 0, False, "outright"),
        ("Passive", 3, -4, 0, 0, False, "outright"),  # past zero in the priced contract
        ("Passive", 0, 0, 2, 0, True, "outright"),
        ("Force", 3, -3, 3, 0, True, "spread"),
        ("Force", -2, 2, -2, 0, True, "spread"),
        ("Force", 3, -3, 2, 0, False, "spread"),  # unequal legs
        ("Force", 3, -4, 4, 0, False, "spread"),  # more than the priced position
        ("Force", 3, 1, 0, 0, False, "spread"),
        ("Force_Outright", 3, -3, 3, 0, True, "outright_legs"),
        ("Close", 3, -1, 0, 0, True, "outright"),
        ("Close", 3, -1, 1, 0, False, "outright"),
        ("No_Open", 3, -1, -1, 2, True, "outright"),
        ("No_Open", 3, -1, 1, 2, False, "outright"),
        ("Roll_Adjusted", 3, -1, 1, 0, False, "outright"),  # the switched priced contract only
        ("Roll_Adjusted", 3, 2, 0, 0, True, "outright"),
        ("Roll_Adjusted", 3, 0, 0, 0, True, "none"),
    ],
)
def test_allowed_trade_per_state(state, priced, trade_priced, trade_forward, forward, allowed, order):
    verdict = allowed_trade(state, priced, trade_priced, trade_forward, forward_position=forward)
    assert (verdict.allowed, verdict.order) == (allowed, order)
    assert (verdict.reason == "") == allowed
    assert verdict.reason == "" or verdict.reason.startswith(state)


def test_allowed_trades_is_vectorised_and_checks_its_inputs():
    out = allowed_trades(["Passive", "Force", "Close"], [3, 3, 3], [-1, -3, 1], [1, 3, 0])
    assert out["allowed"].tolist() == [True, True, False]
    assert out["order"].tolist() == ["outright", "spread", "outright"]
    with pytest.raises(FuturesDataError, match="different lengths"):
        allowed_trades(["Passive"], [3, 1], [0], [0])
    with pytest.raises(FuturesDataError, match="unknown roll state 'Hold'"):
        allowed_trade("Hold", 3, 0, 0)


contracts = st.integers(min_value=-50, max_value=50)


@given(state=st.sampled_from(["Close", "No_Open"]), priced=contracts, forward=contracts, trade_priced=contracts,
       trade_forward=contracts)
def test_close_and_no_open_never_allow_a_trade_that_increases_a_position(state, priced, forward, trade_priced,
                                                                          trade_forward):
    verdict = allowed_trade(state, priced, trade_priced, trade_forward, forward_position=forward)
    if verdict.allowed:
        assert abs(priced + trade_priced) <= abs(priced)
        assert abs(forward + trade_forward) <= abs(forward)


def test_roll_state_names_parse_in_any_case_and_match_the_ledger():
    assert parse_roll_state(" force_outright ") is RollState.Force_Outright
    assert tuple(s.value for s in RollState) == ROLL_STATES
    assert all(s.meaning for s in RollState)
    with pytest.raises(FuturesDataError, match="unknown roll state 'Rolling'; one of No_Roll, Passive"):
        parse_roll_state("Rolling")


def test_planned_contracts_and_the_nearest_roll():
    plan = planned_contracts(CORN, ["2023-06-01", "2023-10-16", "2023-10-17"])
    assert plan["priced_contract"].tolist() == ["202312", "202312", "202412"]
    assert plan["forward_contract"].tolist() == ["202412", "202412", "202512"]
    assert plan["roll_date"].dt.strftime("%Y-%m-%d").tolist() == ["2023-10-17", "2023-10-17", "2024-10-17"]
    # a roll under way since just after its roll date still rolls out of 202312
    near = nearest_roll(CORN, ["2023-10-12", "2023-10-17", "2023-11-20", "2024-06-01"])
    assert near["priced_contract"].tolist() == ["202312", "202312", "202312", "202412"]


def test_the_ledger_keeps_every_roll_state_and_reads_the_latest(tmp_path):
    ledger = Ledger(tmp_path / "warehouse.duckdb").init()
    assert ledger.roll_state("CORN") == "No_Roll"
    ledger.set_roll_state("CORN", "Passive", "roll date reached", set_by="roll_policy", session="2023-10-17")
    ledger.set_roll_state("GOLD", "Close", "delivery risk", set_by="alice")
    ledger.set_roll_state("CORN", "Force", "6 sessions to close-out", set_by="roll_policy", session="2023-11-22")
    assert ledger.roll_state("CORN") == "Force"
    current = ledger.current_roll_states().set_index("instrument")
    assert current["state"].to_dict() == {"CORN": "Force", "GOLD": "Close"}
    assert pd.isna(current.loc["GOLD", "session"])
    history = ledger.roll_state_history("CORN")
    assert history["state"].tolist() == ["Passive", "Force"]
    assert history["set_by"].tolist() == ["roll_policy", "roll_policy"]
    assert pd.Timestamp(history["session"].iloc[0]) == pd.Timestamp("2023-10-17")
    with pytest.raises(LedgerError, match="unknown roll state 'Hold' for CORN"):
        ledger.set_roll_state("CORN", "Hold", "x", set_by="alice")
    with pytest.raises(LedgerError, match="reason"):
        ledger.set_roll_state("CORN", "Passive", " ", set_by="alice")
    assert len(ledger.roll_state_history()) == 3  # refused rows were not written


def test_a_roll_the_multiple_prices_have_adopted_is_over_and_an_early_roll_waits_for_them():
    # Force set for the roll out of the old month; the spread filled and the multiple prices then moved to the
    # month rolled into, where the position now is: the roll is over (No_Roll), not an unfilled spread to escalate
    over = _one("2023-10-26", state="Force", priced=3.0, spread_sessions=3, roll_date="2024-01-17",
                priced_moved=[True], rolled_out_position=[0.0])
    assert (over["state"], over["previous_state"], over["changed"]) == ("No_Roll", "Force", True)
    assert over["reason"].startswith("the multiple prices price the contract rolled into (the Force roll is complete)")
    # something still held in the month rolled out of: the state is not reset
    stuck = _one("2023-10-26", state="Force", priced=3.0, spread_sessions=3, roll_date="2024-01-17",
                 priced_moved=[True], rolled_out_position=[1.0])
    assert stuck["state"] == "Force_Outright"
    # rolled before the planned roll date (Force near the close-out): Roll_Adjusted waits for the multiple prices
    # to move although the roll date lies ahead, and ends once they have
    early = _one("2023-10-12", state="Roll_Adjusted", priced=0.0, forward=3.0, priced_moved=[False])
    assert (early["state"], early["sessions_to_roll"]) == ("Roll_Adjusted", 3)
    assert early["reason"].startswith("waiting for the multiple prices to price the forward (roll date 2023-10-17 ahead")
    assert _one("2023-10-18", state="Roll_Adjusted", priced=3.0, roll_date="2024-01-17",
                priced_moved=[True])["state"] == "No_Roll"


def test_multiple_prices_on_the_planned_calendar_force_the_roll_before_the_roll_date():
    # 2023-10-12 .. 2023-10-16 are 3 sessions before the roll date 2023-10-17; the close-out is 35 sessions away
    on_plan = _one("2023-10-12", policy=RollPolicy(force_sessions=3), prices_roll_on_plan=[True])
    assert (on_plan["state"], on_plan["sessions_to_roll"], on_plan["sessions_to_close_out"]) == ("Force", 3, 35)
    assert on_plan["reason"] == ("3 sessions to the roll date 2023-10-17 (the multiple prices move PRICE_CONTRACT "
                                 "then) (Force at 3): roll now with a calendar spread")
    assert _one("2023-10-11", policy=RollPolicy(force_sessions=3), prices_roll_on_plan=[True])["state"] == "No_Roll"
    # a source whose prices roll after the plan: Passive from the roll date, as before
    assert _one("2023-10-12", policy=RollPolicy(force_sessions=3))["state"] == "No_Roll"
