"""``trading-pipeline rehearse``: the daily job session by session against the fake IB gateway.

Unit tests of the pieces (multiple prices from contract prices, the compressed calendar's months,
the report's rolls / orphans / breaches / duplicates), then rehearsals on a compressed calendar
(months expiring every 4 sessions) through the command itself: the normal run and the hard cases
(every roll done by the roll policy before the multiple prices move, no orphan, no breach).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.adapters.ib.fake_gateway import GC, MCL, generated_bars, rehearsal_months
from pipeline.calendar import sessions
from pipeline.cli.app import main
from pipeline.futures import RollParameters
from pipeline.futures.from_contracts import multiple_prices_from_contracts
from pipeline.futures.rehearsal import (
    duplicate_orders,
    expiry_breaches,
    rehearsal_orphans,
    rehearsal_rolls,
)
from pipeline.store.lake import Lake

EXAMPLE = "examples/futures_roll_rehearsal.yaml"


# --- multiple prices from contract prices ------------------------------------------------------

def test_multiple_prices_take_each_contract_close_on_the_planned_roll_calendar():
    params = RollParameters(hold_roll_cycle="HMUZ", priced_roll_cycle="HMUZ", roll_offset_days=-5, carry_offset=1,
                            expiry_offset=17)
    days = pd.bdate_range("2023-03-06", "2023-03-17")
    # ESH3 expires 2023-03-17: the roll is 5 days before (03-12, a Sunday -> last day in H3 on Friday 03-10)
    prices = pd.DataFrame({
        "instrument": "ES", "session": np.tile(days, 3),
        "contract": np.repeat(["202303", "202306", "202309"], len(days)),
        "close": np.concatenate([4000 + np.arange(10.0), 4010 + np.arange(10.0), 4020 + np.arange(10.0)]),
    })  # fmt: skip
    table = multiple_prices_from_contracts(prices, {"ES": params}, expiries={"ES": {"202303": "2023-03-17"}})
    es = table.set_index("session")
    assert list(es.loc[:"2023-03-10", "PRICE_CONTRACT"].unique()) == [20230300]
    assert list(es.loc["2023-03-13":, "PRICE_CONTRACT"].unique()) == [20230600]
    assert es.loc["2023-03-10", "PRICE"] == 4004.0 and es.loc["2023-03-10", "FORWARD"] == 4014.0
    assert es.loc["2023-03-13", "PRICE"] == 4015.0 and es.loc["2023-03-13", "FORWARD"] == 4025.0
    assert es.loc["2023-03-13", "FORWARD_CONTRACT"] == 20230900
    # carry_offset +1: the carry contract is the one after the priced one (the forward here)
    assert es.loc["2023-03-13", "CARRY"] == 4025.0
    assert str(table["PRICE_CONTRACT"].dtype) == "int64" and str(table["FORWARD_CONTRACT"].dtype) == "Int64"


def test_contract_prices_without_roll_parameters_are_refused():
    prices = pd.DataFrame({"instrument": ["CL"], "contract": ["202303"], "session": ["2023-03-01"], "close": [70.0]})
    with pytest.raises(ValueError, match="no roll parameters for CL"):
        multiple_prices_from_contracts(prices, {})


# --- the compressed calendar --------------------------------------------------------------------

def test_compressed_months_expire_every_n_sessions_and_physical_ones_close_out_before():
    start = pd.Timestamp("2023-03-01")
    days = sessions(start, "2023-06-30", "CMES")
    mcl = rehearsal_months(MCL, "2022-06-01", start, days[11], every=4)
    new = mcl[mcl["last_trade"] >= start]
    assert list(new["last_trade"][:4]) == list(days[[4, 8, 12, 16]])
    assert (new["close_out"] == new["last_trade"]).all()  # cash-settled
    assert new["contract"].iloc[0] == "202304"  # MCLJ3 follows MCLH3, the last to expire (2023-02-17) before start
    gc = rehearsal_months(GC, "2022-06-01", start, days[11], every=4, close_out_lead=1)
    new = gc[gc["last_trade"] >= start]
    assert list(new["contract"][:3]) == ["202304", "202306", "202308"]
    assert list(new["close_out"][:3]) == list(days[[3, 7, 11]])
    bars = generated_bars(GC, gc)
    last = bars.merge(gc, on="con_id").query("session == last_trade")
    assert len(last) == len(gc)  # every month has its bar on its last trading day


# --- the report ---------------------------------------------------------------------------------

def _positions(rows):
    return pd.DataFrame(rows, columns=["session", "instrument", "contract", "position"]).assign(
        session=lambda f: pd.to_datetime(f["session"]))


def test_rolls_are_held_months_moving_later_with_the_state_that_moved_them():
    positions = _positions([
        ("2023-03-01", "ES", "202303", 2), ("2023-03-02", "ES", "202303", 2), ("2023-03-02", "ES", "202306", 1),
        ("2023-03-03", "ES", "202306", 3), ("2023-03-06", "MCL", "202304", -5), ("2023-03-07", "MCL", "202305", -5),
        ("2023-03-08", "ES", "202309", 3),
    ])  # fmt: skip
    states = pd.DataFrame({"instrument": ["ES", "ES"], "state": ["Passive", "Force"],
                           "session": pd.to_datetime(["2023-03-01", "2023-03-07"])})
    settled = pd.DataFrame({"instrument": ["MCL"], "contract": ["202304"]})
    rolls = rehearsal_rolls(positions, states, settled)
    assert rolls.to_dict("records") == [
        {"instrument": "ES", "from": "202303", "to": "202306", "session": pd.Timestamp("2023-03-03"), "how": "Passive"},
        {"instrument": "MCL", "from": "202304", "to": "202305", "session": pd.Timestamp("2023-03-07"), "how": "expiry"},
        {"instrument": "ES", "from": "202306", "to": "202309", "session": pd.Timestamp("2023-03-08"), "how": "Force"},
    ]


def test_orphans_breaches_and_duplicates_are_found():
    positions = _positions([("2023-03-01", "ES", "202303", 2), ("2023-03-02", "ES", "202312", 1),
                            ("2023-03-03", "GC", "202304", 4)])
    contracts = pd.DataFrame({"session": pd.to_datetime(["2023-03-01", "2023-03-02", "2023-03-03"]),
                              "instrument": ["ES", "ES", "GC"], "priced_contract": ["202303", "202306", "202304"],
                              "forward_contract": ["202306", "202309", "202306"]})
    orphans = rehearsal_orphans(positions, contracts)
    assert orphans[["session", "contract"]].to_dict("records") == [
        {"session": pd.Timestamp("2023-03-02"), "contract": "202312"}]
    months = pd.DataFrame({"instrument": ["ES", "ES", "GC"], "contract": ["202303", "202312", "202304"],
                           "last_trade": pd.to_datetime(["2023-03-17", "2023-12-15", "2023-03-08"]),
                           "close_out": pd.to_datetime(["2023-03-17", "2023-12-15", "2023-03-03"])})
    breaches = expiry_breaches(positions, months)
    assert breaches[["instrument", "contract", "kind"]].to_dict("records") == [
        {"instrument": "GC", "contract": "202304", "kind": "held_past_close_out"}]
    orders = pd.DataFrame({"order_ref": ["a", "a", "b", "c"], "filled": [1.0, 1.0, 3.0, 2.0]})
    intents = pd.DataFrame({"order_ref": ["a", "b", "c"], "quantity": [1.0, -2.0, 2.0]})
    dups = duplicate_orders(orders, intents)
    assert dups[["order_ref", "received", "filled", "intended"]].to_dict("records") == [
        {"order_ref": "a", "received": 2, "filled": 2.0, "intended": 1.0},
        {"order_ref": "b", "received": 1, "filled": 3.0, "intended": 2.0}]


# --- rehearsals through the command -------------------------------------------------------------

def _rehearse(out, *args) -> tuple[int, dict]:
    code = main(["rehearse", "--config", EXAMPLE, "--out", str(out), "--compressed", "4", *args])
    return code, json.loads((out / "rehearsal.json").read_text())


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal")
    code, report = _rehearse(out, "--sessions", "10")
    return out, code, report


def test_the_rehearsal_plays_every_session_in_one_instance_and_writes_its_report(rehearsal):
    out, _, report = rehearsal
    assert [s["session"] for s in report["sessions"]] == [str(d.date()) for d in sessions("2023-03-01", "2023-03-14", "CMES")]
    assert all(s["ran"] for s in report["sessions"]) and report["counts"]["runs"] == 10
    assert {"rolls", "orphans", "duplicate_orders", "expiry_breaches", "positions", "counts"} <= set(report)
    assert len({s["run_id"] for s in report["sessions"]}) == 10
    assert len(list((out / "dagster_home").glob("dagster.yaml"))) == 1  # one instance for the whole rehearsal
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["source"]["kind"] == "ib" and config["broker"]["execution"] == "paper"
    months = pd.DataFrame(report["months"])
    mcl = months[months["instrument"] == "MCL"].set_index("contract")
    assert str(config["instruments"][0]["rolls"]["expiries"]["202305"]) == mcl.loc["202305", "last_trade"][:10]


def test_multiple_prices_are_the_gateways_contract_closes(rehearsal):
    out, _, report = rehearsal
    table = Lake(out / "lake").read("multiple_prices")
    months = pd.DataFrame(report["months"]).assign(last_trade=lambda f: pd.to_datetime(f["last_trade"]))
    mcl = months[months["instrument"] == "MCL"].reset_index(drop=True)
    bars = generated_bars(MCL, mcl[["contract", "con_id", "local_symbol", "last_trade"]].assign(close_out=mcl["last_trade"]))
    closes = bars.merge(mcl[["con_id", "contract"]], on="con_id").set_index(["session", "contract"])["close"]
    row = table[(table["instrument"] == "MCL") & (table["session"] == pd.Timestamp("2023-03-08"))].iloc[0]
    priced = str(row["PRICE_CONTRACT"] // 100)
    assert row["PRICE"] == closes[(pd.Timestamp("2023-03-08"), priced)]
    assert row["FORWARD"] == closes[(pd.Timestamp("2023-03-08"), str(row["FORWARD_CONTRACT"] // 100))]
    # on the compressed calendar the priced month moves every 4 sessions: three months over 10 sessions
    played = table[(table["instrument"] == "MCL") & (table["session"] >= pd.Timestamp("2023-03-01"))]
    assert played["PRICE_CONTRACT"].nunique() >= 3


def test_the_rehearsal_finds_no_orphan_no_duplicate_order_and_no_expiry_breach(rehearsal):
    _, code, report = rehearsal
    counts = report["counts"]
    assert (counts["orphans"], counts["duplicate_orders"], counts["expiry_breaches"]) == (0, 0, 0)
    assert code == 0


def test_the_rehearsal_passes_two_rolls_of_each_instrument(rehearsal):
    _, _, report = rehearsal
    assert report["counts"]["failed_runs"] == 0
    # GC and MCL hold a position throughout and are rolled (Force) before each of their 3 planned rolls inside
    # the 10 sessions (the multiple prices move on 2023-03-06, 03-10 and 03-14); ES rolls twice, then its target
    # goes to 0 on 2023-03-08, so it has nothing to roll at 03-14
    assert report["rolls_per_instrument"] == {"ES": 2, "GC": 3, "MCL": 3}
    es = [p for p in report["positions"] if p["instrument"] == "ES" and p["position"] != 0]
    assert max(p["session"] for p in es)[:10] == "2023-03-07"
    assert {r["how"] for r in report["rolls"]} <= {"Passive", "Force", "Force_Outright"}
    # a roll goes into the month after: never back into the month rolled out of
    assert all(r["to"] > r["from"] for r in report["rolls"])


def test_a_spread_that_never_fills_escalates_to_force_outright(tmp_path):
    # Months every 10 sessions leave room for Force (3 sessions before the roll), Force_Outright one
    # session later and the outrights before the guard's last session. The resting spread is cancelled
    # before the outrights (pipeline/execution/cancel.py: cancel_resting_spreads); left working it
    # would count as working in the priced month and no outright would ever be sent.
    code = main(["rehearse", "--config", EXAMPLE, "--out", str(tmp_path), "--compressed", "10", "--sessions", "14",
                 "--spread-never-fills"])
    report = json.loads((tmp_path / "rehearsal.json").read_text())
    states = pd.DataFrame(report["roll_states"])
    assert set(states.loc[states["state"] == "Force_Outright", "instrument"]) == {"ES", "GC", "MCL"}
    by_outright = {r["instrument"] for r in report["rolls"] if r["how"] == "Force_Outright"}
    assert {"GC", "MCL"} <= by_outright  # rolled by the two outright orders, the spread never having filled
    assert code == 0 and report["counts"]["failed_runs"] == 0
    assert report["counts"]["expiry_breaches"] == 0
    assert report["counts"]["orphans"] == 0 and report["counts"]["duplicate_orders"] == 0


def test_skipped_sessions_before_expiry_send_nothing_to_the_expiring_month(tmp_path):
    # MCLJ3 (202304) expires on the 4th session after 2023-03-01 (03-07); no run on 03-02 .. 03-06
    _, report = _rehearse(tmp_path, "--sessions", "5", "--skip-sessions", "2023-03-02:3")
    ran = [s for s in report["sessions"] if s["ran"]]
    assert [s["session"] for s in ran] == ["2023-03-01", "2023-03-07"]
    assert [s["session"] for s in report["sessions"] if not s["ran"]] == ["2023-03-02", "2023-03-03", "2023-03-06"]
    after = report["sessions"][-1]
    expiring = {(m["instrument"], m["contract"]) for m in report["months"] if m["last_trade"][:10] == "2023-03-07"}
    assert ("MCL", "202304") in expiring
    sent = {(o["instrument"], o["contract"]) for o in after["orders"]}
    sent |= {(o["instrument"], leg["contract"]) for o in after["orders"] for leg in o["legs"]}
    assert not sent & expiring


def test_the_expiry_guard_fires_after_sessions_skipped_before_expiry(tmp_path):
    _, report = _rehearse(tmp_path, "--sessions", "5", "--skip-sessions", "2023-03-02:3")
    assert any("expiry_guard" in c for c in report["sessions"][-1]["failed_checks"])


def test_a_position_break_stops_the_instrument_while_it_is_open(tmp_path):
    _, report = _rehearse(tmp_path, "--sessions", "4", "--position-break-at", "2023-03-02:MCL")
    first, brk = report["sessions"][:2]
    assert brk["events"] and "MCL" in brk["events"][0]
    held = [p for p in first["positions"] if p["instrument"] == "MCL"]
    assert [p["contract"] for p in held] == ["202304"]
    # the break adds 1 at the broker to the held month; no MCL order moves it
    assert [p for p in brk["positions"] if p["instrument"] == "MCL"] == [
        {"instrument": "MCL", "contract": "202304", "position": held[0]["position"] + 1.0}]
    breaks = pd.DataFrame(report["position_breaks"])
    assert "MCL" in set(breaks["instrument"])
    # from the break on, no order for MCL reaches the gateway while the break is open
    assert [o for s in report["sessions"][1:] for o in s["orders"] if o["instrument"] == "MCL"] == []


def test_a_bad_rehearsal_config_prints_one_line_and_exits_non_zero(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"rehearsal": {"start": "2023-03-01"}, "instruments": [{"symbol": "AAPL"}]}))
    assert main(["rehearse", "--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs futures" in err[0]
    assert main(["rehearse", "--config", EXAMPLE, "--out", str(tmp_path / "o"), "--skip-sessions", "soon"]) == 2
    assert "START:N" in capsys.readouterr().err
