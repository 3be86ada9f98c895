"""Futures price series: month codes, contract ids, expiries, roll calendars and the Panama stitch.

Unit tests on hand-computed examples, a property test of the stitch, and evidence on pysystemtrade's
2023 data (``../shared/data/futures_carver_2023``; skipped when absent): our adjusted prices against
pysystemtrade's own, and our planned roll calendar against the rolls its multiple prices show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.futures import (
    MONTH_LETTERS,
    FuturesDataError,
    RollParameters,
    actual_roll_calendar,
    approx_expiry,
    carry_contracts,
    check_multiple_prices,
    compare_roll_calendars,
    contract_id,
    cycle_months,
    expiry_dates,
    held_contracts,
    letter_month,
    month_letter,
    normalise_contract,
    panama_stitch,
    read_roll_config,
    roll_calendar,
    roll_gaps,
    roll_parameters,
    summarise_comparison,
)
from pipeline.futures.rolls import contract_numbers, cycle_contracts
from tests.conftest import SHARED_DATA, require_shared_data

DATA = SHARED_DATA / "futures_carver_2023"
EVIDENCE = ["CORN", "SP500", "GOLD", "US10", "CRUDE_W", "VIX", "KOSPI", "EUROSTX"]

SP500 = RollParameters(
    HoldRollCycle="HMUZ",
    PricedRollCycle="HMUZ",
    RollOffsetDays=-5,
    CarryOffset=1,
    ExpiryOffset=14,
)
CORN = RollParameters(
    HoldRollCycle="Z",
    PricedRollCycle="HKNUZ",
    RollOffsetDays=-60,
    CarryOffset=-1,
    ExpiryOffset=14,
)
CRUDE = RollParameters(
    HoldRollCycle="Z",
    PricedRollCycle="FGHJKMNQUVXZ",
    RollOffsetDays=-40,
    CarryOffset=-1,
    ExpiryOffset=-11,
)


# --------------------------------------------------------------------------- month codes and cycles


def test_month_letters_map_january_to_december_both_ways():
    assert (
        [month_letter(m) for m in range(1, 13)]
        == list("FGHJKMNQUVXZ")
        == list(MONTH_LETTERS)
    )
    assert [letter_month(c) for c in "FHMUZ"] == [1, 3, 6, 9, 12]
    for bad in ("A", "z", "FG", ""):
        with pytest.raises(FuturesDataError, match="not a futures month letter"):
            letter_month(bad)
    with pytest.raises(FuturesDataError, match="not 1..12"):
        month_letter(13)


def test_cycles_are_sorted_months_and_reject_repeats_and_strangers():
    assert cycle_months("ZUMH") == (3, 6, 9, 12)
    assert cycle_months("GJMQVZ") == (2, 4, 6, 8, 10, 12)
    assert cycle_contracts("HZ", 2023, 2024) == ["202303", "202312", "202403", "202412"]
    with pytest.raises(FuturesDataError, match="repeats"):
        cycle_months("HHZ")
    with pytest.raises(FuturesDataError, match="'A' is not a futures month letter"):
        cycle_months("HAZ")


# --------------------------------------------------------------------------- contract ids and expiries


def test_contract_ids_read_yyyymm_and_pysystemtrade_yyyymmdd():
    assert contract_numbers(
        ["202312", "20231200", 202312, 20231200, 20231200.0, "20231214"]
    ).tolist() == [20231200, 20231200, 20231200, 20231200, 20231200, 20231214]
    assert normalise_contract(20231200) == normalise_contract("202312") == "202312"
    assert (
        normalise_contract("20231214") == "20231214"
    )  # a weekly contract keeps its day
    assert contract_id(2024, 3) == "202403"
    with pytest.raises(
        FuturesDataError, match=r"value 2 \('202313'\) is not a contract id"
    ):
        contract_numbers(["202312", "202313"], source="test")
    for bad in ("2023", "2023120", "20231232", None, "abc"):
        with pytest.raises(FuturesDataError):
            normalise_contract(bad)


def test_approximate_expiry_is_day_one_plus_the_offset_and_exact_expiries_win():
    assert approx_expiry("202312", 14) == pd.Timestamp("2023-12-15")
    assert approx_expiry("20231200", 14) == pd.Timestamp("2023-12-15")
    assert approx_expiry("202401", -11) == pd.Timestamp(
        "2023-12-21"
    )  # CRUDE_W: expires the month before
    assert approx_expiry("20231214", 0) == pd.Timestamp(
        "2023-12-14"
    )  # a dated contract counts from its day
    out = expiry_dates(["202309", 20231200], 14, exact={"20231200": "2023-12-15 16:00"})
    assert out.index.tolist() == ["202309", "202312"]
    assert out.tolist() == [pd.Timestamp("2023-09-15"), pd.Timestamp("2023-12-15")]
    out = expiry_dates(["202312"], 14, exact={202312: "2023-12-20"})
    assert out.iloc[0] == pd.Timestamp("2023-12-20")


def test_carry_contract_is_the_priced_contract_before_or_after_the_held_one():
    assert carry_contracts(["202312", "202412"], CORN) == [
        "202309",
        "202409",
    ]  # -1 in HKNUZ
    assert carry_contracts(["202312", "202403"], SP500) == [
        "202403",
        "202406",
    ]  # +1 in HMUZ
    assert carry_contracts(["202401", "202312"], CRUDE) == [
        "202312",
        "202311",
    ]  # -1 over a year end
    wide = RollParameters(
        HoldRollCycle="Z",
        PricedRollCycle="HZ",
        RollOffsetDays=0,
        CarryOffset=1,
        ExpiryOffset=0,
    )
    assert carry_contracts(["202312"], wide) == ["202403"]


# --------------------------------------------------------------------------- roll parameters and rollconfig.csv


def test_roll_parameters_validate_like_rollconfig_rows():
    p = RollParameters(
        HoldRollCycle="ZH",
        PricedRollCycle="HMUZ",
        RollOffsetDays="-5",
        CarryOffset="1",
        ExpiryOffset="14",
    )
    assert (p.hold_roll_cycle, p.roll_offset_days, p.carry_offset, p.expiry_offset) == (
        "HZ",
        -5,
        1,
        14,
    )
    assert (
        RollParameters(
            hold_roll_cycle="Z",
            priced_roll_cycle="Z",
            roll_offset_days=0,
            carry_offset=-1,
            expiry_offset=0,
        ).priced_roll_cycle
        == "Z"
    )
    with pytest.raises(ValueError, match="not in the priced cycle"):
        RollParameters(
            HoldRollCycle="HF",
            PricedRollCycle="HMUZ",
            RollOffsetDays=-5,
            CarryOffset=1,
            ExpiryOffset=14,
        )
    with pytest.raises(ValueError, match="CarryOffset"):
        RollParameters(
            HoldRollCycle="H",
            PricedRollCycle="H",
            RollOffsetDays=-5,
            CarryOffset=0,
            ExpiryOffset=14,
        )
    with pytest.raises(ValueError, match="not a whole number"):
        RollParameters(
            HoldRollCycle="H",
            PricedRollCycle="H",
            RollOffsetDays="-5.5",
            CarryOffset=1,
            ExpiryOffset=14,
        )


ROLLCONFIG = """Instrument,HoldRollCycle,RollOffsetDays,CarryOffset,PricedRollCycle,ExpiryOffset
CORN,Z,-60,-1,HKNUZ,14
SP500,HMUZ,-5,1,HMUZ,14
"""


def test_read_roll_config_reads_rows_and_names_the_line_of_a_bad_one(tmp_path):
    path = tmp_path / "rollconfig.csv"
    path.write_text(ROLLCONFIG)
    config = read_roll_config(path)
    assert (
        list(config) == ["CORN", "SP500"]
        and config["CORN"] == CORN
        and config["SP500"] == SP500
    )
    assert roll_parameters(path, "SP500") == SP500
    with pytest.raises(
        FuturesDataError, match="has no instrument 'SP5'; similar: SP500"
    ):
        roll_parameters(path, "SP5")

    path.write_text(ROLLCONFIG + "GOLD,GJMQVZ,-30,2,GJMQVZ,26\n")
    with pytest.raises(
        FuturesDataError, match=r"rollconfig.csv, line 4 \(GOLD\): CarryOffset: "
    ):
        read_roll_config(path)
    path.write_text(ROLLCONFIG + "CORN,Z,-60,-1,HKNUZ,14\n")
    with pytest.raises(FuturesDataError, match="line 4: instrument CORN appears twice"):
        read_roll_config(path)
    path.write_text("Instrument,HoldRollCycle,RollOffsetDays\nCORN,Z,-60\n")
    with pytest.raises(
        FuturesDataError,
        match="missing column.*CarryOffset, PricedRollCycle, ExpiryOffset",
    ):
        read_roll_config(path)
    with pytest.raises(FuturesDataError, match="does not exist"):
        read_roll_config(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- roll calendars


def test_planned_roll_dates_are_expiry_plus_offset_moved_to_business_days():
    cal = roll_calendar(SP500, "2023-01-01", "2023-12-31")
    # expiry = day 1 + 14 days; -5 calendar days; a weekend goes back to Friday (the last day in the
    # old contract, pysystemtrade's calendar date) and the roll date is the next business day
    assert cal.index.strftime("%Y-%m-%d").tolist() == [
        "2023-03-13",
        "2023-06-12",
        "2023-09-11",
        "2023-12-11",
    ]
    assert cal["current_contract"].tolist() == ["202303", "202306", "202309", "202312"]
    assert cal["next_contract"].tolist() == ["202306", "202309", "202312", "202403"]
    assert cal["carry_contract"].tolist() == ["202306", "202309", "202312", "202403"]
    assert cal["target_date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2023-03-10",
        "2023-06-10",
        "2023-09-10",
        "2023-12-10",
    ]

    exact = roll_calendar(
        SP500,
        "2023-01-01",
        "2023-12-31",
        expiries={"20231200": "2023-12-20"},
        holidays=["2023-03-13"],
    )
    assert exact.index.strftime("%Y-%m-%d").tolist() == [
        "2023-03-14",
        "2023-06-12",
        "2023-09-11",
        "2023-12-18",
    ]

    corn = roll_calendar(CORN, "2020-01-01", "2023-12-31")
    assert corn.index.strftime("%Y-%m-%d").tolist() == [
        "2020-10-19",
        "2021-10-18",
        "2022-10-17",
        "2023-10-17",
    ]
    assert corn["carry_contract"].tolist() == ["202009", "202109", "202209", "202309"]
    with pytest.raises(
        FuturesDataError, match="end 2022-01-01 is before start 2023-01-01"
    ):
        roll_calendar(SP500, "2023-01-01", "2022-01-01")


def _multiple(rows: list[tuple]) -> pd.DataFrame:
    """Multiple prices from (date, PRICE, PRICE_CONTRACT, FORWARD, FORWARD_CONTRACT) tuples."""
    frame = pd.DataFrame(
        rows,
        columns=["DATETIME", "PRICE", "PRICE_CONTRACT", "FORWARD", "FORWARD_CONTRACT"],
    )
    frame["CARRY"], frame["CARRY_CONTRACT"] = np.nan, frame["FORWARD_CONTRACT"]
    return frame.set_index(pd.DatetimeIndex(frame.pop("DATETIME")))


#: Two rolls; the second one's eve lacks FORWARD, so its gap comes from the row before it.
HAND = _multiple(
    [
        ("2023-03-08", 100.0, 20230300, 102.0, 20230600),
        ("2023-03-09", 101.0, 20230300, 104.0, 20230600),
        ("2023-03-10", 105.0, 20230600, 103.0, 20230900),  # roll: gap 104 - 101 = +3
        ("2023-03-13", 106.0, 20230600, 104.5, 20230900),
        ("2023-03-14", 107.0, 20230600, np.nan, 20230900),
        (
            "2023-03-15",
            103.0,
            20230900,
            103.5,
            20231200,
        ),  # roll: gap 104.5 - 106 = -1.5 (from 03-13)
    ]
)


def test_actual_roll_calendar_is_where_the_price_contract_changes():
    actual = actual_roll_calendar(HAND)
    assert actual.index.strftime("%Y-%m-%d").tolist() == ["2023-03-10", "2023-03-15"]
    assert actual["current_contract"].tolist() == ["202303", "202306"]
    assert actual["next_contract"].tolist() == ["202306", "202309"]
    assert actual["carry_contract"].tolist() == [
        "202306",
        "202309",
    ]  # the previous row's CARRY_CONTRACT


def test_held_contracts_and_the_comparison_count_business_days():
    planned = roll_calendar(SP500, "2022-06-01", "2023-12-31")
    held = held_contracts(
        planned,
        pd.to_datetime(["2022-07-01", "2023-03-10", "2023-03-13", "2023-12-29"]),
    )
    assert held.tolist() == ["202209", "202303", "202306", "202403"]
    actual = pd.DataFrame(
        {
            "current_contract": ["202303", "202306", "202309"],
            "next_contract": ["202306", "202309", "202401"],
            "carry_contract": None,
        },
        index=pd.DatetimeIndex(
            pd.to_datetime(["2023-03-09", "2023-06-15", "2023-09-11"]), name="roll_date"
        ),
    )
    cmp = compare_roll_calendars(planned, actual)
    assert cmp["planned_date"].dt.strftime("%Y-%m-%d").fillna("NaT").tolist() == [
        "2023-03-13",
        "2023-06-12",
        "NaT",
    ]
    assert cmp["same_contracts"].tolist() == [True, True, False]
    assert cmp["difference_days"].iloc[:2].tolist() == [
        -2.0,
        3.0,
    ]  # Thu 9 Mar is 2 sessions before Mon 13
    assert np.isnan(cmp["difference_days"].iloc[2])
    summary = summarise_comparison(cmp)
    assert summary == {
        "rolls": 3.0,
        "same_contracts": pytest.approx(2 / 3),
        "median_abs_days": 2.5,
        "max_abs_days": 3.0,
        "median_days": 0.5,
    }


# --------------------------------------------------------------------------- Panama stitch


def test_panama_stitch_on_a_hand_computed_example():
    adjusted = panama_stitch(HAND)
    # rows after the last roll: PRICE; 03-10..03-14: PRICE - 1.5; before 03-10: PRICE + 3 - 1.5
    assert adjusted.tolist() == [101.5, 102.5, 103.5, 104.5, 105.5, 103.0]
    assert adjusted.name == "price" and adjusted.index.equals(HAND.index)
    gaps = roll_gaps(HAND)
    assert gaps["gap"].tolist() == [3.0, -1.5]
    assert gaps["method"].tolist() == ["previous_row", "earlier_row"]
    assert gaps["measured_on"].dt.strftime("%Y-%m-%d").tolist() == [
        "2023-03-09",
        "2023-03-13",
    ]
    assert gaps[["current_contract", "next_contract"]].to_numpy().tolist() == [
        ["202303", "202306"],
        ["202306", "202309"],
    ]
    # the roll-day change is the new contract's change: PRICE(03-10) - FORWARD(03-09) = 105 - 104
    assert adjusted.diff().iloc[2] == pytest.approx(1.0)


def test_a_blank_price_gives_a_blank_adjusted_value_and_leaves_the_rest():
    frame = HAND.copy()
    frame.loc["2023-03-08", "PRICE"] = np.nan
    adjusted = panama_stitch(frame)
    assert np.isnan(adjusted.iloc[0]) and adjusted.iloc[1:].tolist() == [
        102.5,
        103.5,
        104.5,
        105.5,
        103.0,
    ]


def test_a_forward_of_another_contract_is_not_a_roll_gap():
    frame = HAND.copy()
    frame.loc["2023-03-09", "FORWARD_CONTRACT"] = (
        20230900  # the eve's FORWARD is not the contract rolled into
    )
    gaps = roll_gaps(frame)
    assert gaps["gap"].tolist() == [2.0, -1.5]  # 102 - 100 from 03-08
    assert gaps["method"].tolist() == ["earlier_row", "earlier_row"]


def test_an_unmeasurable_roll_gap_raises_or_is_stitched_flat():
    frame = HAND.copy()
    frame.loc[:"2023-03-09", "FORWARD"] = np.nan
    with pytest.raises(
        FuturesDataError,
        match=r"roll on 2023-03-10 00:00:00 from 202303 to 202306: no row of the old contract",
    ):
        panama_stitch(frame)
    adjusted = panama_stitch(frame, missing_gap="flat")
    assert roll_gaps(frame, missing_gap="flat")["gap"].tolist() == [
        4.0,
        -1.5,
    ]  # 105 - 101: flat across the roll
    assert adjusted.tolist() == [102.5, 103.5, 103.5, 104.5, 105.5, 103.0]


def test_bad_multiple_prices_are_named_by_row():
    with pytest.raises(FuturesDataError, match="missing column.*FORWARD_CONTRACT"):
        panama_stitch(HAND.drop(columns="FORWARD_CONTRACT"))
    with pytest.raises(
        FuturesDataError, match=r"row 3 \(2023-03-09 00:00:00\): the date is earlier"
    ):
        check_multiple_prices(
            HAND.iloc[[0, 1, 1]].set_axis(
                pd.to_datetime(["2023-03-08", "2023-03-10", "2023-03-09"])
            )
        )
    with pytest.raises(FuturesDataError, match="repeats the date"):
        check_multiple_prices(HAND.iloc[[0, 0]])
    bad = HAND.astype({"PRICE_CONTRACT": object})
    bad.iloc[4, bad.columns.get_loc("PRICE_CONTRACT")] = 20231300
    with pytest.raises(
        FuturesDataError, match=r"row 5 .*PRICE_CONTRACT 20231300 is not a contract id"
    ):
        panama_stitch(bad)
    with pytest.raises(FuturesDataError, match="no rows"):
        panama_stitch(HAND.iloc[:0])


def _yyyymm00(month_index: np.ndarray) -> np.ndarray:
    return (2020 + month_index // 12) * 10_000 + (month_index % 12 + 1) * 100


@st.composite
def _random_multiple(draw):
    """Random multiple prices: quarterly contracts, rolls on random rows, FORWARD on every row."""
    n = draw(st.integers(min_value=2, max_value=60))
    rolls = draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    month = 3 * np.cumsum([0, *rolls])
    values = st.lists(st.floats(-50, 500, allow_nan=False), min_size=n, max_size=n)
    return pd.DataFrame(
        {
            "PRICE": draw(values),
            "PRICE_CONTRACT": _yyyymm00(month),
            "FORWARD": draw(values),
            "FORWARD_CONTRACT": _yyyymm00(month + 3),
        },
        index=pd.bdate_range("2020-01-01", periods=n),
    )


@settings(max_examples=150, deadline=None)
@given(_random_multiple())
def test_adjusted_changes_are_the_priced_contracts_changes_and_the_last_level_is_the_last_price(
    multiple,
):
    adjusted = panama_stitch(multiple).to_numpy()
    price, forward = multiple["PRICE"].to_numpy(), multiple["FORWARD"].to_numpy()
    contract = multiple["PRICE_CONTRACT"].to_numpy()
    assert adjusted[-1] == price[-1]
    roll = np.r_[False, contract[1:] != contract[:-1]]
    change = np.diff(adjusted)
    scale = 1e-9 * max(1.0, np.abs(price).max(), np.abs(forward).max()) * len(price)
    assert np.allclose(change[~roll[1:]], np.diff(price)[~roll[1:]], rtol=0, atol=scale)
    # on a roll row: the new contract's change, from its FORWARD price on the row before
    assert np.allclose(
        change[roll[1:]], (price[1:] - forward[:-1])[roll[1:]], rtol=0, atol=scale
    )


# --------------------------------------------------------------------------- evidence on pysystemtrade's data


@pytest.fixture(scope="module")
def carver():
    require_shared_data(DATA)
    filters = [("instrument", "in", EVIDENCE)]
    multiple = pd.read_parquet(DATA / "multiple_prices_daily.parquet", filters=filters)
    adjusted = pd.read_parquet(DATA / "adjusted_prices_daily.parquet", filters=filters)
    return multiple, adjusted, read_roll_config(DATA / "csvconfig" / "rollconfig.csv")


def _one(multiple: pd.DataFrame, instrument: str) -> pd.DataFrame:
    frame = multiple[multiple["instrument"] == instrument].sort_values("date")
    return frame.drop(columns="instrument").set_index("date")


@pytest.mark.parametrize("instrument", EVIDENCE)
def test_panama_reproduces_pysystemtrades_adjusted_prices(carver, instrument):
    multiple, adjusted, _ = carver
    mine = panama_stitch(
        _one(multiple, instrument), missing_gap="flat", source=instrument
    ).dropna()
    theirs = (
        adjusted[adjusted["instrument"] == instrument]
        .set_index("date")["price"]
        .sort_index()
    )
    common = mine.index.intersection(theirs.index)
    assert len(common) > 2000
    ours, pst = mine.loc[common], theirs.loc[common]
    scale = float(pst.abs().median())
    d_ours, d_pst = ours.diff().iloc[1:], pst.diff().iloc[1:]
    equal = float((np.abs(d_ours - d_pst) < 1e-6 * scale).mean())
    assert equal >= 0.97, f"{instrument}: {equal:.2%} of daily changes equal"
    assert np.corrcoef(d_ours, d_pst)[0, 1] >= 0.995
    assert abs(ours.iloc[-1] - pst.iloc[-1]) < 1e-9 * scale  # the same last level
    assert mine.iloc[-1] == _one(multiple, instrument)["PRICE"].dropna().iloc[-1]


@pytest.mark.parametrize("instrument", ["SP500", "US10", "CORN"])
def test_the_planned_calendar_makes_the_actual_rolls_2013_2023(carver, instrument):
    multiple, _, config = carver
    prices = _one(multiple, instrument).loc["2013-01-01":"2023-08-31"]
    actual = actual_roll_calendar(prices)
    planned = roll_calendar(config[instrument], "2012-01-01", "2024-12-31")
    summary = summarise_comparison(compare_roll_calendars(planned, actual))
    assert summary["rolls"] >= 10 and summary["same_contracts"] == 1.0
    assert (
        abs(summary["median_days"]) <= 2
    )  # half the rolls within two business days of the plan
