"""Bar sources: the raw-bar schema, the bundled sample, and the folder-of-files reader."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.adapters.sources import (
    BAR_COLUMNS,
    BAR_DTYPES,
    SAMPLE_PATH,
    BarSource,
    FilesSource,
    SampleSource,
    SchemaError,
    SourceError,
    conform_bars,
    make_source,
    read_bar_file,
)
from pipeline.config import SourceConfig
from tests.conftest import require_shared_data

FIXED = pd.Timestamp("2024-03-08 22:00", tz="UTC")
EVER = (pd.Timestamp("1900-01-01"), pd.Timestamp("2100-01-01"))
JAN = (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-31"))


def clock() -> pd.Timestamp:
    return FIXED


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def assert_bar_schema(df: pd.DataFrame) -> None:
    assert list(df.columns) == BAR_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in BAR_DTYPES.items()
    }
    keys = df[["instrument", "session"]]
    assert keys.equals(keys.sort_values(["instrument", "session"], ignore_index=True))


# -- conform_bars -----------------------------------------------------------------------------


def small_bars() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "session": pd.to_datetime(["2024-01-03", "2024-01-02", "2024-01-02"]),
            "instrument": ["B", "B", "A"],
            "open": [1.0, 2.0, np.nan],
            "high": [1.5, 2.5, np.nan],
            "low": [0.5, 1.5, np.nan],
            "close": [1.2, 2.2, 3.3],
            "volume": [10, 20, 30],
        }
    )


def test_conform_bars_types_sorts_and_fills_source_and_fetched_at():
    out = conform_bars(small_bars(), "test", pd.Timestamp("2024-03-08 22:00"))
    assert_bar_schema(out)
    assert out["instrument"].tolist() == ["A", "B", "B"]
    assert out["close"].tolist() == [3.3, 2.2, 1.2]  # values unchanged, only reordered
    assert (out["source"] == "test").all()
    assert (out["fetched_at"] == FIXED).all()  # a naive fetch time is taken as UTC


def test_conform_bars_names_missing_and_extra_columns():
    df = small_bars().drop(columns=["close"]).assign(adj_close=1.0)
    expected = r"missing columns \['close'.*extra columns \['adj_close'\]"
    with pytest.raises(SchemaError, match=expected):
        conform_bars(df, "test", FIXED)


def test_conform_bars_requires_source_when_frame_has_none():
    with pytest.raises(SchemaError, match="source"):
        conform_bars(small_bars(), fetched_at=FIXED)


def test_conform_bars_rejects_intraday_sessions():
    df = small_bars().assign(session=pd.to_datetime(["2024-01-03 15:30"] * 3))
    with pytest.raises(SchemaError, match="not midnight"):
        conform_bars(df, "test", FIXED)


def test_conform_bars_rejects_tz_aware_sessions():
    df = small_bars().assign(session=lambda d: d["session"].dt.tz_localize("UTC"))
    with pytest.raises(SchemaError, match="tz-aware"):
        conform_bars(df, "test", FIXED)


def test_conform_bars_rejects_price_text():
    df = small_bars().assign(close=["1", "2", "x"])
    with pytest.raises(SchemaError, match="close"):
        conform_bars(df, "test", FIXED)


@settings(max_examples=40, deadline=None)
@example(rows=[(0, "ES", 0.0), (0, "ES", float("nan"))])  # NaN beside a number (found in CI)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30),
            st.sampled_from(["ES", "AAPL", "EURUSD"]),
            st.floats(allow_nan=True, allow_infinity=True, width=64),
        ),
        max_size=30,
    )
)
def test_conform_bars_keeps_every_row_and_value(rows):
    # property: conforming only types and reorders; the multiset of (instrument, session, close)
    # is unchanged (NaN compared as a string so it is counted too)
    df = pd.DataFrame(
        {
            "session": pd.Timestamp("2024-01-01") + pd.to_timedelta([r[0] for r in rows], "D"),
            "instrument": [r[1] for r in rows],
            "open": np.nan,
            "high": np.nan,
            "low": np.nan,
            "close": np.array([r[2] for r in rows], dtype="float64"),
            "volume": np.nan,
        }
    )
    out = conform_bars(df, "test", FIXED)
    assert_bar_schema(out)

    def key(frame: pd.DataFrame) -> list[tuple]:
        # repr, not astype(str): pandas 3's string dtype keeps NaN missing, and NaN does not sort.
        closes = [repr(x) for x in frame["close"].to_numpy(dtype=float)]
        return sorted(zip(frame["instrument"], frame["session"], closes))

    assert key(out) == key(df)


# -- the bundled sample ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> SampleSource:
    return SampleSource(clock=clock)


def test_sample_is_a_bar_source(sample):
    assert isinstance(sample, BarSource)
    assert isinstance(make_source(SourceConfig()), SampleSource)


def test_sample_file_is_compact_and_keeps_float64_prices():
    assert SAMPLE_PATH.stat().st_size < 3_000_000
    raw = pd.read_parquet(SAMPLE_PATH)
    assert all(raw[c].dtype == "float64" for c in ["open", "high", "low", "close", "volume"])
    # 20 + 1 + 5 skfolio series, GSPC, IXIC, WTI (pipeline/data/README.md)
    assert raw["instrument"].nunique() == 29
    assert len(raw) == 204_276
    assert not raw.duplicated(["instrument", "session"]).any()


def test_sample_fetch_returns_bar_schema_with_one_fetched_at(sample):
    bars = sample.fetch(
        ["XOM", "AAPL", "WTI"], pd.Timestamp("2018-12-20"), pd.Timestamp("2019-01-10")
    )
    assert_bar_schema(bars)
    assert set(bars["instrument"]) == {"AAPL", "WTI", "XOM"}
    assert (bars["fetched_at"] == FIXED).all()


def test_sample_fetch_range_is_inclusive(sample):
    bars = sample.fetch(["SPX"], pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-06"))
    # 2020-01-04/05 is a weekend: sessions 2nd, 3rd, 6th
    days = bars["session"].dt.strftime("%Y-%m-%d").tolist()
    assert days == ["2020-01-02", "2020-01-03", "2020-01-06"]
    # published S&P 500 closes of 2020-01-02 and 2020-01-03
    assert bars["close"].tolist()[:2] == pytest.approx([3257.85, 3234.85], abs=0.005)


def test_sample_close_only_datasets_have_nan_open_high_low_volume(sample):
    bars = sample.fetch(["MTUM"], pd.Timestamp("2014-01-02"), pd.Timestamp("2014-01-31"))
    assert bars[["open", "high", "low", "volume"]].isna().all().all()
    assert bars["close"].notna().all()
    # skfolio's documented first MTUM close (load_factors_dataset docstring): 52.704
    assert bars["close"].iloc[0] == pytest.approx(52.704, abs=0.0005)
    assert (bars["source"] == "sample:skfolio.load_factors_dataset").all()


def test_sample_gspc_has_arch_ohlcv_using_close_not_adj_close(sample):
    bar = sample.fetch(["GSPC"], pd.Timestamp("1999-01-04"), pd.Timestamp("1999-01-04")).iloc[0]
    # first row of arch.data.sp500 (Yahoo layout): 1229.22998, 1248.810059, 1219.099976,
    # 1228.099976, volume 877000000
    assert [bar.open, bar.high, bar.low, bar.close, bar.volume] == pytest.approx(
        [1229.22998, 1248.810059, 1219.099976, 1228.099976, 877_000_000]
    )
    assert bar.source == "sample:arch.data.sp500"


def test_sample_wti_missing_fred_observations_are_not_bars(sample):
    wti = sample.fetch(["WTI"], pd.Timestamp("1986-01-01"), pd.Timestamp("2019-12-31"))
    assert wti["close"].notna().all()
    assert len(wti) == 8_611 - 290  # FRED rows minus missing observations (data README)


def test_sample_unknown_instrument_error_names_it_and_lists_the_sample(sample):
    with pytest.raises(SourceError, match=r"unknown instrument\(s\) ES.*it has 29: AAPL, AMD"):
        sample.fetch(["AAPL", "ES"], pd.Timestamp("2020-01-01"), pd.Timestamp("2020-02-01"))


def test_sample_start_after_end_raises(sample):
    with pytest.raises(SourceError, match="after end"):
        sample.fetch(["AAPL"], pd.Timestamp("2020-02-01"), pd.Timestamp("2020-01-01"))


def test_sample_empty_range_returns_empty_frame_with_schema(sample):
    bars = sample.fetch(["AAPL"], pd.Timestamp("2030-01-01"), pd.Timestamp("2030-12-31"))
    assert bars.empty
    assert_bar_schema(bars)


def test_sample_last_session_is_the_latest_of_any_instrument(sample):
    assert sample.last_session(["WTI"]) == pd.Timestamp("2019-01-03")
    assert sample.last_session(["GSPC", "WTI"]) == pd.Timestamp("2019-01-03")
    assert sample.last_session(["GSPC", "SPX"]) == pd.Timestamp("2022-12-28")


# -- files: real vendor formats -------------------------------------------------------------


def test_files_reads_carver_adjusted_price_csv(tmp_path):
    src = require_shared_data("futures_carver_2016", "US10_price.csv")
    shutil.copyfile(src, tmp_path / "US10.csv")
    with src.open() as fh:
        rows = list(csv.DictReader(fh))  # independent reading with the csv module
    bars = FilesSource(tmp_path, clock=clock).fetch(["US10"], *EVER)
    assert_bar_schema(bars)
    assert len(bars) == len(rows)
    assert bars["close"].isna().sum() == sum(r["PRICE"] == "" for r in rows)  # blank rows stay NaN
    # raw stays raw: the back-adjusted price is negative in 1982
    assert bars["session"].iloc[0] == pd.Timestamp(rows[0]["DATETIME"])
    assert bars["close"].iloc[0] == float(rows[0]["PRICE"]) < 0
    assert bars[["open", "high", "low", "volume"]].isna().all().all()
    assert (bars["source"] == "files:US10.csv").all()


def test_files_reads_dukascopy_csv_with_dotted_dates(tmp_path):
    src = require_shared_data("fx_dukascopy_d1", pattern="Dukascopy-EURUSD-*.csv")
    shutil.copyfile(src, tmp_path / "EURUSD.csv")
    with src.open() as fh:
        rows = list(csv.DictReader(fh))
    bars = FilesSource(tmp_path, clock=clock).fetch(["EURUSD"], *EVER)
    assert len(bars) == len(rows)
    first = bars.iloc[0]
    assert first.session == pd.Timestamp("2003-05-05")  # "2003.05.05"
    assert [first.open, first.high, first.low, first.close] == [1.12161, 1.13009, 1.12014, 1.12774]
    assert np.isnan(first.volume)
    # weekend-dated bars are returned as received (the data README counts 62 Sundays)
    sundays = sum(pd.Timestamp(r["Date"].replace(".", "-")).dayofweek == 6 for r in rows)
    assert (bars["session"].dt.day_of_week == 6).sum() == sundays > 0


def test_files_reads_yahoo_layout_taking_close_not_adj_close(tmp_path):
    src = require_shared_data("equity_index", "arch_sp500_1999_2018.csv")
    shutil.copyfile(src, tmp_path / "GSPC.csv")
    source = FilesSource(tmp_path, clock=clock)
    bars = source.fetch(["GSPC"], pd.Timestamp("1999-01-04"), pd.Timestamp("1999-01-05"))
    # first two rows of the file ("1/4/1999", month first)
    assert bars["session"].tolist() == [pd.Timestamp("1999-01-04"), pd.Timestamp("1999-01-05")]
    assert bars["close"].tolist() == [1228.099976, 1244.780029]
    assert bars["volume"].tolist() == [877_000_000.0, 775_000_000.0]


def test_files_reads_long_parquet_with_name_column(tmp_path):
    src = require_shared_data("stocks", "sp500_5yr_2013_2018_all505.parquet")
    shutil.copyfile(src, tmp_path / "sp500.parquet")
    source = FilesSource(tmp_path, clock=clock)
    assert len(source.instruments()) == 505
    bars = source.fetch(["AOS"], pd.Timestamp("2014-05-19"), pd.Timestamp("2014-05-19"))
    # the known defect is returned as received: high 23.595 < low 23.85 (data README)
    assert bars[["open", "high", "low", "close"]].iloc[0].tolist() == [23.89, 23.595, 23.85, 24.445]


# -- files: layouts and column names ----------------------------------------------------------


def test_files_column_names_are_case_insensitive(tmp_path):
    write(tmp_path, "ES.csv", "DATE , Open,HIGH,low,Close,Vol\n2024-01-02,10,12,9,11,100\n")
    bars = FilesSource(tmp_path, clock=clock).fetch(["ES"], *JAN)
    assert bars[["open", "high", "low", "close", "volume"]].iloc[0].tolist() == [10, 12, 9, 11, 100]


def test_files_long_csv_with_symbol_column(tmp_path):
    text = "symbol,date,price\nES,2024-01-02,10\nNQ,2024-01-02,20\nES,2024-01-03,11\n"
    write(tmp_path, "bars.csv", text)
    source = FilesSource(tmp_path, clock=clock)
    assert source.instruments() == ["ES", "NQ"]
    bars = source.fetch(["ES"], *JAN)
    assert bars["close"].tolist() == [10.0, 11.0]


def test_files_adj_close_used_only_when_there_is_no_close(tmp_path):
    write(tmp_path, "A.csv", "Date,Close,Adj Close\n2024-01-02,10,9\n")
    write(tmp_path, "B.csv", "Date,Adj Close\n2024-01-02,9\n")
    bars = FilesSource(tmp_path, clock=clock).fetch(["A", "B"], *JAN)
    assert bars["close"].tolist() == [10.0, 9.0]


def test_files_parquet_per_instrument(tmp_path):
    frame = pd.DataFrame(
        {"timestamp": pd.to_datetime(["2024-01-02", "2024-01-03"]), "close": [1.5, 1.6]}
    )
    frame.to_parquet(tmp_path / "CL.parquet")
    bars = FilesSource(tmp_path, clock=clock).fetch(["CL"], *JAN)
    assert_bar_schema(bars)
    assert bars["close"].tolist() == [1.5, 1.6]


def test_files_daily_timestamps_are_normalised_to_the_date(tmp_path):
    write(tmp_path, "X.csv", "DATETIME,PRICE\n2024-01-02 23:00:00,1\n2024-01-03 00:00:00,2\n")
    bars = FilesSource(tmp_path, clock=clock).fetch(["X"], *JAN)
    assert bars["session"].tolist() == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")]


def test_files_missing_markers_and_blank_lines(tmp_path):
    text = "date,close\n2024-01-02,1\n\n2024-01-03,\n2024-01-04,.\n2024-01-05,NaN\n"
    write(tmp_path, "X.csv", text)
    bars = FilesSource(tmp_path, clock=clock).fetch(["X"], *JAN)
    assert len(bars) == 4  # the blank line is not a bar; empty / "." / NaN closes are
    assert bars["close"].isna().tolist() == [False, True, True, True]


def test_files_same_instrument_in_two_files_returns_both(tmp_path):
    # more.csv is opened because NQ has no file of its own; ES then comes from both files
    write(tmp_path, "ES.csv", "date,close\n2024-01-02,1\n")
    write(tmp_path, "more.csv", "ticker,date,close\nES,2024-01-02,2\nNQ,2024-01-02,3\n")
    bars = FilesSource(tmp_path, clock=clock).fetch(["ES", "NQ"], *JAN)
    es = bars[bars["instrument"] == "ES"]
    assert sorted(es["close"]) == [1.0, 2.0]
    assert sorted(es["source"]) == ["files:ES.csv", "files:more.csv"]


def test_files_rereads_a_replaced_file(tmp_path):
    path = write(tmp_path, "ES.csv", "date,close\n2024-01-02,1\n")
    source = FilesSource(tmp_path, clock=clock)
    assert source.last_session(["ES"]) == pd.Timestamp("2024-01-02")
    path.write_text("date,close\n2024-01-02,1\n2024-01-03,2\n")
    assert source.last_session(["ES"]) == pd.Timestamp("2024-01-03")


def test_files_last_session_is_the_latest_of_any_instrument(tmp_path):
    write(tmp_path, "A.csv", "date,close\n2024-01-02,1\n2024-01-05,1\n")
    write(tmp_path, "B.csv", "date,close\n2024-01-03,1\n")
    assert FilesSource(tmp_path).last_session(["A", "B"]) == pd.Timestamp("2024-01-05")
    assert FilesSource(tmp_path).last_session(["B"]) == pd.Timestamp("2024-01-03")


def test_files_unknown_instrument_lists_what_the_folder_has(tmp_path):
    write(tmp_path, "ES.csv", "date,close\n2024-01-02,1\n")
    write(tmp_path, "notes.txt", "not bars")
    with pytest.raises(SourceError, match=r"unknown instrument\(s\) NQ.*it has 1: ES\."):
        FilesSource(tmp_path).fetch(["NQ"], *JAN)


def test_files_missing_folder_raises(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FilesSource(tmp_path / "nope")


def test_make_source_files_needs_a_path(tmp_path):
    with pytest.raises(SourceError, match="source.path"):
        make_source(SourceConfig(kind="files"))
    assert isinstance(make_source(SourceConfig(kind="files", path=str(tmp_path))), FilesSource)


# -- files: bad input errors name file and row ------------------------------------------------


def test_files_unparseable_date_names_file_and_row(tmp_path):
    write(tmp_path, "ES.csv", "date,close\n2024-01-02,1\n2024-01-03,2\n2024-13-45,3\n")
    expected = r"ES\.csv, data row 3 \(line 4\): unparseable date '2024-13-45'"
    with pytest.raises(SourceError, match=expected):
        FilesSource(tmp_path).fetch(["ES"], *JAN)


def test_files_row_numbers_count_blank_lines(tmp_path):
    # the blank line is data row 2, so the bad value is data row 3 / line 4 of the file
    write(tmp_path, "ES.csv", "date,close\n2024-01-02,1\n\n2024-01-03,abc\n")
    expected = r"data row 3 \(line 4\): non-numeric value 'abc' in column 'close'"
    with pytest.raises(SourceError, match=expected):
        read_bar_file(tmp_path / "ES.csv", "ES")


def test_files_non_numeric_price_names_file_row_and_column(tmp_path):
    text = 'Date,Open,High,Low,Close\n2024-01-02,1,2,0.5,1.5\n2024-01-03,1,"2,5",0.5,1.5\n'
    write(tmp_path, "ES.csv", text)
    expected = r"ES\.csv, data row 2 \(line 3\): non-numeric value '2,5' in column 'High'"
    with pytest.raises(SourceError, match=expected):
        FilesSource(tmp_path).fetch(["ES"], *JAN)


def test_files_missing_close_column_names_the_columns_found(tmp_path):
    write(tmp_path, "ES.csv", "date,open,bid\n2024-01-02,1,2\n")
    expected = r"ES\.csv has no close column .*found columns \['date', 'open', 'bid'\]"
    with pytest.raises(SourceError, match=expected):
        FilesSource(tmp_path).fetch(["ES"], *JAN)


def test_files_missing_date_column_names_the_columns_found(tmp_path):
    write(tmp_path, "ES.csv", "day,close\n2024-01-02,1\n")
    with pytest.raises(SourceError, match=r"no session column .*found columns \['day', 'close'\]"):
        read_bar_file(tmp_path / "ES.csv", "ES")


def test_files_empty_instrument_in_long_file_names_the_row(tmp_path):
    write(tmp_path, "bars.csv", "symbol,date,close\nES,2024-01-02,1\n,2024-01-02,2\n")
    with pytest.raises(SourceError, match=r"bars\.csv, data row 2 \(line 3\): empty instrument"):
        FilesSource(tmp_path).instruments()


def test_files_ambiguous_date_columns_are_an_error(tmp_path):
    write(tmp_path, "ES.csv", "date,timestamp,close\n2024-01-02,2024-01-02,1\n")
    with pytest.raises(SourceError, match="2 columns that could be the session"):
        read_bar_file(tmp_path / "ES.csv", "ES")


def test_files_parquet_error_names_data_row(tmp_path):
    frame = pd.DataFrame({"date": ["2024-01-02", "garbage"], "close": [1.0, 2.0]})
    frame.to_parquet(tmp_path / "CL.parquet")
    with pytest.raises(SourceError, match=r"CL\.parquet, data row 2: unparseable date 'garbage'"):
        read_bar_file(tmp_path / "CL.parquet", "CL")
