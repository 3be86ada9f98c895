"""The Parquet lake: atomic, idempotent session writes; append-only batches; whole tables."""

import numpy as np
import pandas as pd
import pytest

from pipeline.store.lake import Lake, LakeError, wide_to_long


def _frame(sessions, value):
    return pd.DataFrame({"session": pd.DatetimeIndex(sessions), "instrument": "AAPL", "x": float(value)})


def test_write_sessions_replaces_only_the_owned_sessions(tmp_path):
    lake = Lake(tmp_path)
    days = pd.bdate_range("2021-12-29", "2022-01-04")
    lake.write_sessions("t", _frame(days, 1.0), days)
    lake.write_sessions("t", _frame(days, 2.0), days[-2:])
    got = lake.read("t").set_index("session")["x"]
    assert got.loc[days[:-2]].tolist() == [1.0] * (len(days) - 2)
    assert got.loc[days[-2:]].tolist() == [2.0, 2.0]
    # Re-running the same write is idempotent: same rows, no duplicates.
    lake.write_sessions("t", _frame(days, 2.0), days[-2:])
    assert len(lake.read("t")) == len(days)


def test_tables_are_split_by_year_and_read_back_with_a_session_filter(tmp_path):
    lake = Lake(tmp_path)
    days = pd.bdate_range("2021-12-29", "2022-01-04")
    lake.write_sessions("t", _frame(days, 1.0), days)
    assert sorted(p.parent.name for p in (tmp_path / "t").glob("*/*.parquet")) == ["year=2021", "year=2022"]
    got = lake.read("t", end=pd.Timestamp("2021-12-31"))
    assert got["session"].max() == pd.Timestamp("2021-12-31") and len(got) == 3
    assert str(got["session"].dtype) == "datetime64[ns]"


def test_sessions_to_write_adds_missing_history_but_not_stored_sessions(tmp_path):
    lake = Lake(tmp_path)
    days = pd.bdate_range("2022-01-03", "2022-01-14")
    lake.write_sessions("t", _frame(days[:3], 1.0), days[:3])
    owned = lake.sessions_to_write("t", days, run=days[7:8])
    # Stored sessions (first 3) are left alone; the gap up to the run and the run itself are owned;
    # computed sessions after the run are not.
    assert list(owned) == list(days[3:8])


def test_append_never_overwrites_a_batch(tmp_path):
    lake = Lake(tmp_path)
    days = pd.bdate_range("2022-01-03", "2022-01-05")
    lake.append("raw", _frame(days, 1.0), batch="b1")
    lake.append("raw", _frame(days, 2.0), batch="b2")
    assert len(lake.read("raw")) == 6
    with pytest.raises(LakeError, match="append-only"):
        lake.append("raw", _frame(days, 3.0), batch="b1")


def test_no_temporary_file_is_left_behind(tmp_path):
    lake = Lake(tmp_path)
    days = pd.bdate_range("2022-01-03", "2022-01-05")
    lake.write_sessions("t", _frame(days, 1.0), days)
    lake.write_table("w", pd.DataFrame({"a": [1, 2]}))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_read_table_names_the_asset_to_materialize_when_missing(tmp_path):
    with pytest.raises(LakeError, match="materialize asset 'instrument_weights'"):
        Lake(tmp_path).read_table("instrument_weights")


def test_wide_to_long_round_trips_through_read_wide(tmp_path):
    idx = pd.DatetimeIndex(pd.bdate_range("2022-01-03", periods=4), name="session").astype("datetime64[ns]")
    wide = pd.DataFrame({"A": [np.nan, 1.0, 2.0, 3.0], "B": [5.0, 6.0, 7.0, 8.0]}, index=idx)
    long = wide_to_long({"x": wide}, dropna="x")
    assert len(long) == 7  # the NaN before A's first value is not stored
    lake = Lake(tmp_path)
    lake.write_sessions("t", long, idx)
    back = lake.read_wide("t", "x", instruments=["A", "B", "C"])
    pd.testing.assert_frame_equal(back[["A", "B"]], wide, check_names=False, check_freq=False)
    assert back["C"].isna().all()
