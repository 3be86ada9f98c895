"""``trading-pipeline futures roll`` (a manual roll state, kept in the ledger) and ``futures status``
(contracts, roll states, roll and close-out dates, positions, the expiry guard), through the CLI's entry point."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import write_config

from pipeline.cli import main
from pipeline.store.ledger import Ledger
from pipeline.trading import Fill

INSTRUMENTS = [
    {"symbol": "CORN", "sec_type": "FUT", "exchange": "CBOT", "point_size": 50, "calendar": "CMES",
     "settlement": "physical",
     "rolls": {"hold_roll_cycle": "Z", "priced_roll_cycle": "HKNUZ", "roll_offset_days": -60, "carry_offset": -1,
               "expiry_offset": 14}},
    {"symbol": "GOLD", "sec_type": "FUT", "exchange": "COMEX", "point_size": 100, "calendar": "CMES",
     "settlement": "physical",
     "rolls": {"hold_roll_cycle": "GJMQVZ", "priced_roll_cycle": "GJMQVZ", "roll_offset_days": -30,
               "carry_offset": 1, "expiry_offset": 26, "expiry_guard_sessions": 3}},
    {"symbol": "MCL", "sec_type": "FUT", "exchange": "NYMEX", "point_size": 100, "calendar": "CMES",
     "settlement": "cash",
     "rolls": {"hold_roll_cycle": "FGHJKMNQUVXZ", "priced_roll_cycle": "FGHJKMNQUVXZ", "roll_offset_days": -40,
               "expiry_offset": -11, "expiries": {"202312": "2023-11-17"}}},
    {"symbol": "ES", "sec_type": "FUT", "exchange": "CME", "point_size": 50, "calendar": "CMES"},
    {"symbol": "AAPL", "sec_type": "STK"},
]


@pytest.fixture
def config(tmp_path):
    return str(write_config(tmp_path, instruments=INSTRUMENTS))


def _ledger(tmp_path) -> Ledger:
    return Ledger(tmp_path / "lake" / "warehouse.duckdb").init()


def _hold(ledger: Ledger, instrument: str, quantity: float) -> None:
    ledger.record_fill(Fill(
        fill_id=f"paper:{instrument}", order_ref=f"carver:2023-11-01:{instrument}:1", broker="paper",
        session=pd.Timestamp("2023-11-01"), instrument=instrument, quantity=quantity, price=100.0, commission=1.0,
        slippage_cost=0.0, filled_at=pd.Timestamp("2023-11-01 20:00", tz="UTC"),
    ))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_roll_records_a_manual_state_with_reason_and_who(config, tmp_path, capsys):
    argv = ["futures", "roll", "CORN", "passive", "--reason", "forward is liquid", "--by", "alice",
            "--session", "2023-10-17", "--config", config]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "CORN: roll state Passive (was No_Roll) for session 2023-10-17, set by alice: forward is liquid" in out
    assert "Passive: reduce the priced contract, open new positions in the forward contract" in out
    assert main(["futures", "roll", "CORN", "Force", "--reason", "close-out near", "--by", "bob",
                 "--session", "2023-11-16", "--config", config]) == 0
    history = _ledger(tmp_path).roll_state_history("CORN")
    assert history[["state", "reason", "set_by"]].to_dict("records") == [
        {"state": "Passive", "reason": "forward is liquid", "set_by": "alice"},
        {"state": "Force", "reason": "close-out near", "set_by": "bob"},
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["CORN", "Rolling"], "error: unknown roll state 'Rolling'; one of No_Roll, Passive, Force"),
        (["ZC", "Passive"], "error: unknown instrument 'ZC'; the configuration's futures: CORN, GOLD, MCL, ES"),
        (["AAPL", "Passive"], "error: AAPL is not a futures instrument (sec_type STK)"),
    ],
)
def test_roll_refuses_an_unknown_state_or_instrument_in_one_line(config, tmp_path, capsys, argv, message):
    assert main(["futures", "roll", *argv, "--reason", "x", "--config", config]) == 2
    assert _one_line_error(capsys).startswith(message)
    assert _ledger(tmp_path).roll_state_history().empty


def test_status_shows_contracts_states_dates_positions_and_the_policy(config, tmp_path, capsys):
    ledger = _ledger(tmp_path)
    _hold(ledger, "CORN", 3)
    _hold(ledger, "GOLD", -2)
    ledger.set_roll_state("CORN", "Passive", "roll date reached", set_by="roll_policy", session="2023-10-17")
    assert main(["futures", "status", "--session", "2023-11-16", "--config", config]) == 0
    out = capsys.readouterr().out
    states, per_contract = out.split("Positions per contract month in the ledger")
    rows = {line.split()[0]: line.split() for line in states.splitlines() if line.strip().split()[:1] in
            (["CORN"], ["GOLD"], ["MCL"])}
    # CORN is rolling out of 202312 (Passive since its roll date), 10 sessions before first notice: Force
    assert rows["CORN"][:8] == ["CORN", "Passive", "202312", "202412", "2023-10-17", "-22", "2023-11-30", "10"]
    assert rows["CORN"][8:10] == ["3.00", "Force"]
    # GOLD holds 202312 in No_Roll, its planned roll on 2023-11-28 still 8 sessions away
    assert rows["GOLD"][:10] == ["GOLD", "No_Roll", "202312", "202402", "2023-11-28", "8", "2023-11-30", "10",
                                 "-2.00", "Force"]
    # MCL (cash): the plan holds 202402 since the 2023-11-13 roll; close-out = its last trading day, approximated
    # as 2024-02-01 - 11 days = Sunday 2024-01-21, moved back to Friday the 19th (44 CMES sessions away)
    assert rows["MCL"][:8] == ["MCL", "No_Roll", "202402", "202403", "2023-12-13", "19", "2024-01-19", "44"]
    assert "no roll parameters (instruments[].rolls) for ES: not shown" in out
    # the ledger's positions per contract month: these fills name no month (recorded before orders went
    # to dated contracts), so their contract is unknown
    held = {line.split()[0]: line.split()[1:] for line in per_contract.splitlines()
            if line.strip().split()[:1] in (["CORN"], ["GOLD"])}
    assert held == {"CORN": ["(unknown)", "3.00"], "GOLD": ["(unknown)", "-2.00"]}
    assert "Expiry guard: contracts held within their limit of sessions of the close-out: 0" in out


def test_status_lists_guard_breaches_within_each_instruments_limit(config, tmp_path, capsys):
    ledger = _ledger(tmp_path)
    _hold(ledger, "CORN", 3)
    _hold(ledger, "GOLD", -2)
    ledger.set_roll_state("CORN", "Passive", "roll date reached", set_by="roll_policy", session="2023-10-17")
    # CMES trades on Thanksgiving: 2023-11-24 .. 11-29 are 4 sessions before the 30th
    assert main(["futures", "status", "--session", "2023-11-24", "--config", config]) == 0
    out = capsys.readouterr().out
    guard = out[out.index("Expiry guard"):]
    assert "Expiry guard: contracts held within their limit of sessions of the close-out: 1" in guard
    assert "CORN         202312      3.00  2023-11-30" in guard and "GOLD" not in guard  # GOLD's limit is 3
    assert main(["futures", "status", "--session", "2023-11-27", "--config", config]) == 0
    assert "close-out: 2" in capsys.readouterr().out


def test_status_without_futures_says_so(tmp_path, capsys):
    config = str(write_config(tmp_path))
    assert main(["futures", "status", "--session", "2023-11-16", "--config", config]) == 0
    assert capsys.readouterr().out == "no futures instruments in the configuration (instruments[].sec_type: FUT)\n"
