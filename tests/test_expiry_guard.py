"""Close-out dates (physical: before first notice; cash: the last trading day), the expiry guard and
the orphan report."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import Instrument
from pipeline.futures import (
    FuturesDataError,
    close_out_dates,
    expiry_guard,
    instrument_close_outs,
    orphan_positions,
    read_roll_config,
)
from tests.conftest import SHARED_DATA, require_shared_data

ROLLCONFIG = SHARED_DATA / "futures_carver_2023" / "csvconfig" / "rollconfig.csv"
THANKSGIVING = ["2023-11-23"]
MCL = Instrument(
    symbol="MCL", sec_type="FUT", exchange="NYMEX", point_size=100, calendar="CMES", settlement="cash",
    rolls={"hold_roll_cycle": "FGHJKMNQUVXZ", "priced_roll_cycle": "FGHJKMNQUVXZ", "roll_offset_days": -40,
           "expiry_offset": -11, "expiries": {"202312": "2023-11-17"}},
)


def _dates(series: pd.Series) -> dict[str, str]:
    return series.dt.strftime("%Y-%m-%d").to_dict()


def test_cash_settled_mcl_is_held_to_its_last_trading_day():
    # MCL Dec 2023 (MCLZ23) traded until 2023-11-17, one business day before CL's 2023-11-20
    assert _dates(instrument_close_outs(MCL, ["202312", "20240100"])) == {"202312": "2023-11-17", "202401": "2023-12-21"}
    # without the exact date: the approximate expiry, day 1 - 11 days = the 20th of the month before
    assert _dates(close_out_dates(["202312"], "cash", expiry_offset=-11)) == {"202312": "2023-11-20"}
    # an approximate expiry on a holiday moves back to the business day before
    assert _dates(close_out_dates(["202312"], "cash", expiry_offset=-8)) == {"202312": "2023-11-23"}
    assert _dates(close_out_dates(["202312"], "cash", expiry_offset=-8, holidays=THANKSGIVING)) == {"202312": "2023-11-22"}


def test_physical_gold_and_corn_close_out_before_the_contract_month():
    gold = close_out_dates(["202312", "202402", "202406"], "physical", expiry_offset=26)
    # GCZ23 first notice 2023-11-30; 2024-06-01 is a Saturday, so June's first business day is the 3rd
    assert _dates(gold) == {"202312": "2023-11-30", "202402": "2024-01-31", "202406": "2024-05-31"}
    corn = close_out_dates(["202312", "202403"], "physical", expiry_offset=14)
    assert _dates(corn) == {"202312": "2023-11-30", "202403": "2024-02-29"}
    # a physical contract that expires in the month before (crude oil) is out by its expiry
    assert _dates(close_out_dates(["202312"], "physical", expiry_offset=-11)) == {"202312": "2023-11-20"}
    # an exact close-out date (IB's first position day) wins
    exact = close_out_dates(["202312", "202403"], "physical", 14, close_outs={"20231200": "2023-11-28"})
    assert _dates(exact) == {"202312": "2023-11-28", "202403": "2024-02-29"}


def test_close_out_inputs_are_checked():
    with pytest.raises(FuturesDataError, match="settlement must be physical or cash, not 'delivery'"):
        close_out_dates(["202312"], "delivery", 14)
    with pytest.raises(FuturesDataError, match=r"value 2 \('2023Z'\) is not a contract id"):
        close_out_dates(["202312", "2023Z"], "physical", 14)
    with pytest.raises(FuturesDataError, match="no settlement in the configuration"):
        instrument_close_outs(Instrument(symbol="ES", sec_type="FUT", rolls=MCL.rolls), ["202312"])


POSITIONS = pd.DataFrame({
    "instrument": ["CORN", "GOLD", "MCL", "CORN"],
    "contract": ["202312", "20231200", "202401", "202412"],
    "position": [3.0, -2.0, 0.0, 1.0],
})
CLOSE_OUTS = pd.DataFrame({
    "instrument": ["CORN", "GOLD", "MCL", "CORN"],
    "contract": ["202312", "202312", "202401", "202412"],
    "close_out": pd.to_datetime(["2023-11-30", "2023-11-30", "2023-12-21", "2024-11-29"]),
})


def test_the_guard_breaches_at_five_sessions_not_at_six():
    # 2023-11-22, 24, 27, 28, 29: five sessions before the 30th (Thanksgiving closed)
    breach = expiry_guard(POSITIONS, CLOSE_OUTS, "2023-11-22", holidays=THANKSGIVING)
    assert breach[["instrument", "contract", "position", "sessions_left", "limit"]].to_dict("records") == [
        {"instrument": "CORN", "contract": "202312", "position": 3.0, "sessions_left": 5.0, "limit": 5},
        {"instrument": "GOLD", "contract": "202312", "position": -2.0, "sessions_left": 5.0, "limit": 5},
    ]
    assert breach["reason"].iloc[0] == "held within 5 sessions of the close-out: roll or close it"
    assert expiry_guard(POSITIONS, CLOSE_OUTS, "2023-11-21", holidays=THANKSGIVING).empty  # 6 sessions left
    # per instrument N; the flat MCL position is never a breach
    wider = expiry_guard(POSITIONS, CLOSE_OUTS, "2023-11-21", sessions={"GOLD": 6}, holidays=THANKSGIVING)
    assert wider["instrument"].tolist() == ["GOLD"]
    reached = expiry_guard(POSITIONS, CLOSE_OUTS, "2023-11-30", holidays=THANKSGIVING)
    assert reached["sessions_left"].tolist() == [0.0, 0.0]
    assert reached["reason"].iloc[0].startswith("close-out date reached")


def test_a_held_contract_without_a_close_out_date_is_a_breach():
    breach = expiry_guard(POSITIONS, CLOSE_OUTS.iloc[1:], "2023-10-02")
    assert breach[["instrument", "contract"]].to_dict("records") == [{"instrument": "CORN", "contract": "202312"}]
    assert pd.isna(breach["close_out"].iloc[0]) and breach["reason"].iloc[0] == "no close-out date known for this contract"
    with pytest.raises(FuturesDataError, match="positions lack column"):
        expiry_guard(POSITIONS.drop(columns="position"), CLOSE_OUTS, "2023-10-02")


def test_orphans_are_positions_outside_the_priced_and_forward_contracts():
    positions = pd.DataFrame({
        "instrument": ["CORN", "CORN", "CORN", "GOLD", "GOLD", "SP500"],
        "contract": ["202312", "202412", "202212", "20231200", "202402", "202312"],
        "position": [3.0, 1.0, -1.0, 2.0, 0.0, 4.0],
    })
    contracts = pd.DataFrame({"priced_contract": ["202312", "202312"], "forward_contract": ["202412", "202402"]},
                             index=pd.Index(["CORN", "GOLD"], name="instrument"))
    orphans = orphan_positions(positions, contracts)
    assert orphans.to_dict("records") == [
        {"instrument": "CORN", "contract": "202212", "position": -1.0, "priced_contract": "202312",
         "forward_contract": "202412"},
        {"instrument": "SP500", "contract": "202312", "position": 4.0, "priced_contract": None,
         "forward_contract": None},
    ]
    assert orphan_positions(positions.iloc[:2], contracts).empty


def test_close_outs_from_pysystemtrades_roll_configuration():
    require_shared_data(ROLLCONFIG)
    config = read_roll_config(ROLLCONFIG)
    micro = close_out_dates(["202312"], "cash", config["CRUDE_W_micro"].expiry_offset)
    gold = close_out_dates(["202312"], "physical", config["GOLD"].expiry_offset)
    corn = close_out_dates(["202312"], "physical", config["CORN"].expiry_offset)
    assert (micro.iloc[0], gold.iloc[0], corn.iloc[0]) == (
        pd.Timestamp("2023-11-20"), pd.Timestamp("2023-11-30"), pd.Timestamp("2023-11-30"))
