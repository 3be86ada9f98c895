"""Tests for pipeline.adapters.pysystemtrade: readers of pysystemtrade's price, FX and config files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.adapters.pysystemtrade import (
    ISSUE_COLUMNS,
    CarverDataError,
    read_adjusted_prices,
    read_fx,
    read_instrument_config,
    read_multiple_prices,
    to_instruments,
)
from tests.conftest import SHARED_DATA

CARVER_2016 = SHARED_DATA / "futures_carver_2016"
CARVER_2023 = SHARED_DATA / "futures_carver_2023"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ synthetic files


def test_price_csv_blank_row_is_rejected_with_reason_and_row(tmp_path):
    f = _write(tmp_path / "US10_price.csv", "DATETIME,PRICE\n2020-01-02,-37.5\n2020-01-03,\n2020-01-06,-36.0\n")
    table = read_adjusted_prices(f)
    # negative back-adjusted prices kept; the blank row's business day stays on the grid as NaN
    assert table.prices["US10"].tolist() == pytest.approx([-37.5, np.nan, -36.0], nan_ok=True)
    assert list(table.issues.columns) == ISSUE_COLUMNS
    issue = table.issues.iloc[0]
    assert (issue["instrument"], issue["row"], issue["kept"]) == ("US10", 2, False)  # 2nd data row
    assert issue["session"] == pd.Timestamp("2020-01-03")
    assert "blank PRICE" in issue["reason"]


def test_price_frame_is_wide_on_session_index(tmp_path):
    _write(tmp_path / "A_price.csv", "DATETIME,PRICE\n2020-01-02,1\n2020-01-03,2\n")
    _write(tmp_path / "B_price.csv", "DATETIME,PRICE\n2020-01-03,10\n")
    prices = read_adjusted_prices(tmp_path).prices
    assert prices.index.name == "session" and prices.columns.name == "instrument"
    assert list(prices.columns) == ["A", "B"]
    assert np.isnan(prices.at[pd.Timestamp("2020-01-02"), "B"])  # B not listed yet
    assert prices.at[pd.Timestamp("2020-01-03"), "B"] == 10.0


def test_intraday_timestamp_normalises_to_its_date(tmp_path):
    f = _write(tmp_path / "GBPUSD.csv", "DATETIME,PRICE\n2019-10-24 23:00:00,1.285\n2019-10-25 00:00:00,1.28\n")
    prices = read_fx(f).prices
    assert list(prices.index) == [pd.Timestamp("2019-10-24"), pd.Timestamp("2019-10-25")]


def test_duplicate_date_keeps_later_row_and_rejects_earlier(tmp_path):
    f = _write(tmp_path / "GBPUSD.csv", "DATETIME,PRICE\n2019-10-24 00:00:00,1.20\n2019-10-24 23:00:00,1.30\n")
    table = read_fx(f)
    assert table.prices["GBPUSD"].tolist() == [1.30]
    assert table.issues["row"].tolist() == [1] and not table.issues["kept"].iloc[0]
    assert "duplicate" in table.issues["reason"].iloc[0]


def test_sunday_row_is_kept_and_flagged(tmp_path):
    # 2020-01-05 is a Sunday
    f = _write(tmp_path / "EURUSDfx.csv", "DATETIME,FX\n2020-01-03,1.11\n2020-01-05,1.12\n2020-01-06,1.13\n")
    table = read_fx(f)
    assert table.prices["EURUSD"].tolist() == [1.11, 1.12, 1.13]
    assert table.issues["row"].tolist() == [2] and bool(table.issues["kept"].iloc[0])
    assert "Sunday" in table.issues["reason"].iloc[0]


def test_unparseable_date_names_file_and_row(tmp_path):
    f = _write(tmp_path / "CORN_price.csv", "DATETIME,PRICE\n2020-01-02,1\n2020-13-45,2\n")
    with pytest.raises(CarverDataError, match=r"CORN_price\.csv, data row 2 \(line 3\).*unparseable date '2020-13-45'"):
        read_adjusted_prices(f)


def test_non_numeric_price_names_file_row_and_column(tmp_path):
    f = _write(tmp_path / "CORN_carrydata.csv",
               "DATETIME,PRICE,CARRY,CARRY_CONTRACT,PRICE_CONTRACT\n2020-01-02,1,2,202003,202001\n"
               "2020-01-03,1,abc,202003,202001\n")
    with pytest.raises(CarverDataError, match=r"data row 2 \(line 3\).*'abc' in column 'CARRY'"):
        read_multiple_prices(f)


def test_missing_price_column_is_an_error(tmp_path):
    f = _write(tmp_path / "X_price.csv", "DATETIME,CLOSE\n2020-01-02,1\n")
    with pytest.raises(CarverDataError, match="no PRICE"):
        read_adjusted_prices(f)


def test_legacy_carrydata_contracts_become_yyyymmdd_and_blank_carry_is_nan(tmp_path):
    f = _write(tmp_path / "US5_carrydata.csv",
               "DATETIME,PRICE,CARRY,CARRY_CONTRACT,PRICE_CONTRACT\n"
               "1988-06-13,96.390625,,198906,198903\n1988-06-14,97.25,97.1,198906,198903\n"
               "1988-06-15,,,198906,198903\n")
    m = read_multiple_prices(f)
    assert m.price_contract["US5"].tolist() == [19890300, 19890300]  # yyyymm -> yyyymm00
    assert m.carry_contract["US5"].dtype == "Int64"
    assert np.isnan(m.carry["US5"].iloc[0]) and m.carry["US5"].iloc[1] == 97.1
    assert m.forward["US5"].isna().all()  # the legacy layout has no forward
    assert m.issues["row"].tolist() == [3]  # only the blank-PRICE row, not the blank CARRY


def test_multiple_prices_parquet_reads_all_columns(tmp_path):
    long = pd.DataFrame({
        "instrument": ["A", "A", "B"],
        "date": pd.to_datetime(["2023-08-30", "2023-08-31", "2023-08-31"]),
        "PRICE": [100.0, np.nan, 5.0], "PRICE_CONTRACT": pd.array([20230900] * 3, dtype="Int64"),
        "CARRY": [99.0, 98.0, np.nan], "CARRY_CONTRACT": pd.array([20231200] * 3, dtype="Int64"),
        "FORWARD": [99.0, 98.0, 5.1], "FORWARD_CONTRACT": pd.array([20231200] * 3, dtype="Int64"),
    })
    path = tmp_path / "multiple.parquet"
    long.to_parquet(path)
    m = read_multiple_prices(path)
    assert m.price.shape == (2, 2)
    assert m.forward.at[pd.Timestamp("2023-08-31"), "B"] == 5.1
    assert m.carry_contract.at[pd.Timestamp("2023-08-30"), "A"] == 20231200
    assert m.issues["row"].tolist() == [2] and m.issues["instrument"].tolist() == ["A"]
    assert read_multiple_prices(path, instruments=["B"]).price.columns.tolist() == ["B"]


def test_fx_folder_ignores_non_fx_files(tmp_path):
    _write(tmp_path / "EURUSDfx.csv", "DATETIME,FX\n2020-01-02,1.1\n")
    _write(tmp_path / "CORN_price.csv", "DATETIME,PRICE\n2020-01-02,300\n")
    _write(tmp_path / "instrumentconfig.csv", "Instrument,Pointsize,AssetClass,Currency\nCORN,50,Ags,USD\n")
    assert read_fx(tmp_path).prices.columns.tolist() == ["EURUSD"]


def test_instrument_config_merges_costs_and_maps_to_instruments(tmp_path):
    cfg = _write(tmp_path / "instrumentconfig.csv",
                 "Instrument,Pointsize,AssetClass,Currency,Shortonly\n"
                 "US10,1000,Bond,USD,FALSE\nKR3,1000000,Bond,KRW,FALSE\n")
    costs = _write(tmp_path / "costs_analysis.csv",
                   "Instrument,Slippage,PerBlock,Percentage,PerTrade\nUS10,0.008,1.51,0,0\nKR3,0.005,0,0.00004,0\n")
    frame = read_instrument_config(cfg, costs)
    assert frame.loc["US10", "Pointsize"] == 1000.0 and frame.loc["KR3", "Currency"] == "KRW"
    us10, kr3 = to_instruments(frame)
    assert (us10.sec_type, us10.back_adjusted, us10.point_size, us10.asset_class) == ("FUT", True, 1000.0, "Bond")
    assert (us10.costs.slippage, us10.costs.commission_per_unit) == (0.008, 1.51)
    assert kr3.costs.commission_pct == 0.00004 and kr3.currency == "KRW"


def test_spreadcost_is_read_as_slippage(tmp_path):
    cfg = _write(tmp_path / "instrumentconfig.csv",
                 "Instrument,Description,Pointsize,Currency,AssetClass,PerBlock,Percentage,PerTrade,Region\n"
                 'CORN,"Corn, CBOT",50,USD,Ags,2.92,0,0,US\n')
    spread = _write(tmp_path / "spreadcosts.csv", "Instrument,SpreadCost\nCORN,0.16\n")
    frame = read_instrument_config(cfg, spread)
    assert (frame.loc["CORN", "Slippage"], frame.loc["CORN", "PerBlock"]) == (0.16, 2.92)
    assert np.isnan(read_instrument_config(cfg).loc["CORN", "Slippage"])  # absent without a cost file


def test_non_positive_pointsize_names_row(tmp_path):
    cfg = _write(tmp_path / "instrumentconfig.csv",
                 "Instrument,Pointsize,AssetClass,Currency\nA,50,Ags,USD\nB,0,Ags,USD\n")
    with pytest.raises(CarverDataError, match=r"data row 2 \(line 3\): Pointsize of B"):
        read_instrument_config(cfg)


# ------------------------------------------------------------------ real pysystemtrade data

needs_2016 = pytest.mark.shared_data(CARVER_2016)
needs_2023 = pytest.mark.shared_data(CARVER_2023)


def _data_rows(path: Path) -> int:
    return sum(1 for _ in path.open()) - 1


@needs_2016
def test_every_2016_price_file_is_read_row_for_row():
    table = read_adjusted_prices(CARVER_2016)
    files = sorted(CARVER_2016.glob("*_price.csv"))
    assert table.prices.shape[1] == len(files) == 38  # ls: 38 files (the README says 37)
    rejected = table.issues[~table.issues["kept"]]
    assert set(rejected["reason"]) == {"blank PRICE: row rejected"}  # the only defect in these files
    for f in files:
        inst = f.stem[: -len("_price")]
        n_rejected = int((rejected["instrument"] == inst).sum())
        assert table.prices[inst].notna().sum() + n_rejected == _data_rows(f), inst
    assert len(rejected) == 7750  # counted with grep on the files: blank PRICE cells
    for inst in ("US10", "US20", "SOYBEAN", "LEANHOG", "MXP"):  # README: negative adjusted prices
        assert table.prices[inst].min() < 0, inst


@needs_2016
def test_every_2016_carrydata_file_is_read_row_for_row():
    m = read_multiple_prices(CARVER_2016)
    files = sorted(CARVER_2016.glob("*_carrydata.csv"))
    assert m.price.shape[1] == len(files) == 38
    for f in files:
        inst = f.stem[: -len("_carrydata")]
        n_rejected = int((m.issues["instrument"] == inst).sum())
        assert m.price[inst].notna().sum() + n_rejected == _data_rows(f), inst
    # last row of US10 (file): 2016-11-11, PRICE_CONTRACT 201612, CARRY_CONTRACT 201703
    last = m.price["US10"].last_valid_index()
    assert (m.price_contract.at[last, "US10"], m.carry_contract.at[last, "US10"]) == (20161200, 20170300)


@needs_2016
def test_2016_fx_files_are_read_with_the_krw_blank_rejected():
    table = read_fx(CARVER_2016)
    assert table.prices.columns.tolist() == ["AUDUSD", "CADUSD", "CHFUSD", "EURUSD", "GBPUSD",
                                              "HKDUSD", "JPYUSD", "KRWUSD"]
    rejected = table.issues[~table.issues["kept"]]
    # KRWUSDfx.csv line 5026 is "2014-01-20," (grep -n): data row 5025
    assert rejected[["instrument", "row"]].values.tolist() == [["KRWUSD", 5025]]
    assert (table.issues["kept"] & table.issues["reason"].str.startswith("Sunday")).sum() > 0


@needs_2016
def test_2016_instrument_config_gives_38_futures():
    frame = read_instrument_config(CARVER_2016 / "instrumentconfig.csv", CARVER_2016 / "costs_analysis.csv")
    instruments = {i.symbol: i for i in to_instruments(frame)}
    assert len(instruments) == 38  # one row per price file
    assert instruments["US10"].costs.slippage == 0.008 and instruments["SP500"].point_size == 50.0


@needs_2023
def test_2023_parquet_files_are_read_row_for_row():
    adj = read_adjusted_prices(CARVER_2023 / "adjusted_prices_daily.parquet", business_days=False)
    assert adj.prices.shape[1] == 238
    assert int(adj.prices.notna().sum().sum()) == 1_147_559  # README row count, no blank prices
    assert adj.issues["kept"].all()  # Sunday flags only
    grid = read_adjusted_prices(CARVER_2023 / "adjusted_prices_daily.parquet")  # weekend rows onto Fridays
    assert int(grid.prices.notna().sum().sum()) == 1_128_079
    assert int((~grid.issues["kept"]).sum()) == 1_147_559 - 1_128_079  # Friday rows a weekend row replaced
    m = read_multiple_prices(CARVER_2023 / "multiple_prices_daily.parquet")
    assert m.price.shape[1] == 226
    n_rejected = int((~m.issues["kept"]).sum())
    assert n_rejected == 21_451  # rows with PRICE null in the parquet file
    assert int(m.price.notna().sum().sum()) + n_rejected == 1_038_649


@needs_2023
def test_2023_fx_and_config_are_read():
    fx = read_fx(CARVER_2023 / "fx_prices_csv")
    assert fx.prices.shape[1] == 12
    assert fx.prices.index.is_unique and (fx.prices.index == fx.prices.index.normalize()).all()
    cfg = CARVER_2023 / "csvconfig"
    frame = read_instrument_config(cfg / "instrumentconfig.csv", cfg / "spreadcosts.csv")
    assert frame.loc["US10", "Slippage"] == 0.008 and frame.loc["CORN", "PerBlock"] == 2.92  # carver.md §2.10
    assert len(to_instruments(frame)) == len(frame) == 586
