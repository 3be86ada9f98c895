"""The lake on a URL root: ``file://`` is the local lake; ``s3://`` goes through pyarrow.fs.

The S3 tests run against a local S3 server (moto, test-only) on 127.0.0.1 and compare every table
and every stored file byte for byte with the same writes to a local folder.
"""

from pathlib import Path

import pandas as pd
import pytest

from pipeline.store.lake import Lake, LakeError, is_url
from tests.s3_server import s3_bucket

DAYS = pd.bdate_range("2021-12-29", "2022-01-05")


def _frame(sessions, value: float) -> pd.DataFrame:
    sessions = pd.DatetimeIndex(sessions)
    return pd.DataFrame({"session": sessions.repeat(2), "instrument": ["AAPL", "KO"] * len(sessions),
                         "x": [value, -value] * len(sessions)})


def _exercise(lake: Lake) -> None:
    """The same sequence of writes on any lake: sessions replaced, a year emptied, batches, a whole table."""
    lake.write_sessions("t", _frame(DAYS, 1.0), DAYS)
    lake.write_sessions("t", _frame(DAYS[-2:], 2.0), DAYS[-2:])
    lake.write_sessions("gone", _frame(DAYS[:2], 1.0), DAYS[:2])
    lake.write_sessions("gone", _frame([], 0.0), DAYS[:2])  # the 2021 file is deleted
    lake.append("raw", _frame(DAYS, 3.0), batch="b1")
    lake.write_table("whole", pd.DataFrame({"metric": ["sharpe"], "value": [0.5]}))


def _local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_is_url():
    assert is_url("s3://bucket/lake") and is_url("file:///tmp/lake")
    assert not is_url("data_lake") and not is_url("/tmp/lake") and not is_url(Path("/tmp/x"))


def test_file_url_is_the_local_lake_byte_for_byte(tmp_path):
    by_path, by_url = Lake(tmp_path / "a"), Lake((tmp_path / "b").as_uri())
    assert by_url.root == (tmp_path / "b").resolve()
    _exercise(by_path)
    _exercise(by_url)
    assert _local_files(tmp_path / "a") == _local_files(tmp_path / "b")
    assert "t/year=2021/part.parquet" in _local_files(tmp_path / "b")


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(LakeError, match="nosuch://bucket"):
        Lake("nosuch://bucket/lake")


@pytest.fixture(scope="module")
def s3_url():
    with s3_bucket() as url:
        yield url


def test_s3_lake_matches_the_local_lake(tmp_path, s3_url):
    local, remote = Lake(tmp_path), Lake(s3_url)
    assert remote.root == "s3://trading-lake/prod"
    assert remote.path("t") == "s3://trading-lake/prod/t"
    _exercise(local)
    _exercise(remote)

    assert remote.tables() == local.tables() == ["raw", "t", "whole"]
    for table in ("t", "raw"):
        pd.testing.assert_frame_equal(remote.read(table), local.read(table))
    pd.testing.assert_frame_equal(remote.read("t", start=DAYS[2], end=DAYS[-1]), local.read("t", start=DAYS[2], end=DAYS[-1]))
    pd.testing.assert_frame_equal(remote.read_table("whole"), local.read_table("whole"))
    assert remote.read("t").set_index(["session", "instrument"]).loc[(DAYS[-1], "KO"), "x"] == -2.0
    assert list(remote.sessions("t")) == list(DAYS)
    assert remote.read("gone").empty
    assert remote.glob("t") == "s3://trading-lake/prod/t/year=*/*.parquet"
    assert remote.glob("whole") == "s3://trading-lake/prod/whole/table.parquet"

    # the stored objects are the local files, byte for byte
    stored = {}
    for name in _local_files(tmp_path):
        with remote._fs.open_input_stream(f"trading-lake/prod/{name}") as fh:
            stored[name] = fh.read()
    assert stored == _local_files(tmp_path)


def test_s3_append_only_and_missing_tables(s3_url):
    lake = Lake(s3_url.replace("/prod?", "/other?"))
    assert lake.read("raw").empty and lake.tables() == []
    lake.append("raw", _frame(DAYS[:1], 1.0), batch="b1")
    with pytest.raises(LakeError, match="append-only"):
        lake.append("raw", _frame(DAYS[:1], 1.0), batch="b1")
    with pytest.raises(LakeError, match="materialize asset 'whole' first"):
        lake.read_table("whole")


def test_dataset_has_every_column_of_the_oldest_and_newest_file_for_duckdb(tmp_path, s3_url):
    import duckdb

    for lake in (Lake(tmp_path), Lake(s3_url.replace("/prod?", "/schemas?"))):
        lake.append("raw", _frame(DAYS[:1], 1.0), batch="b1")  # 2021: session, instrument, x
        lake.append("raw", _frame(DAYS[-1:], 2.0).assign(volume=7.0), batch="b2")  # 2022 adds volume
        lake.write_table("whole", pd.DataFrame({"metric": ["sharpe"], "value": [0.5]}))
        con = duckdb.connect()
        for table in ("raw", "whole"):
            con.register(table, lake.dataset(table))
        got = con.execute("select session, instrument, x, volume from raw order by session, instrument").fetchall()
        assert [(str(s), i, x, v) for s, i, x, v in got] == [
            ("2021-12-29", "AAPL", 1.0, None), ("2021-12-29", "KO", -1.0, None),
            ("2022-01-05", "AAPL", 2.0, 7.0), ("2022-01-05", "KO", -2.0, 7.0)]
        assert con.execute("select value from whole where metric = 'sharpe'").fetchone() == (0.5,)
        assert lake.dataset("missing") is None
        con.close()
