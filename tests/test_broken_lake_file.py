"""One broken Parquet file of the lake breaks only its own table: ``trading-pipeline query`` on any
other table answers, and a query on the broken table prints one line naming the table, the file and
what to do, and exits 1. The advice given (move the file out, re-run a backfill) brings the table back."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from pipeline.cli.app import main
from pipeline.store.warehouse import WAREHOUSE_FILE, connect, publish_views
from tests.conftest import write_config

SYMBOLS = ["AAPL", "KO", "XOM"]
START, END = "2022-12-01", "2022-12-28"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A backfill of December 2022 over three sample instruments (it also writes the history since 1990),
    and the row counts of a few tables on the intact lake."""
    folder = tmp_path_factory.mktemp("broken_lake")
    config = write_config(folder, symbols=SYMBOLS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(folder / "dagster_home"))
        assert main(["backfill", START, END, "--config", str(config)]) == 0
        assert main(["research", "--config", str(config)]) == 0  # the backtest tables are the research job's
    con = connect(folder / "lake")
    counts = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
              for t in ("clean_bars", "target_positions", "backtest_metrics")}
    con.close()
    return config, folder / "lake", counts


@pytest.fixture
def lake(built, tmp_path, monkeypatch):
    """A copy of the built lake (ledger included) for one test to damage; DAGSTER_HOME in tmp_path."""
    config, source, counts = built
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    copy = tmp_path / "lake"
    shutil.copytree(source, copy)
    return config, copy, counts


def _query(config: Path, lake: Path, sql: str, capsys) -> tuple[int, str, str]:
    code = main(["query", sql, "--csv", "--config", str(config), "--lake", str(lake)])
    out, err = capsys.readouterr()
    return code, out, err


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a full disk or a killed copy leaves


def test_a_truncated_file_breaks_only_its_table(lake, capsys):
    config, root, counts = lake
    broken = root / "clean_bars" / "year=2011" / "part.parquet"
    _truncate(broken)

    code, out, _ = _query(config, root, "select count(*) as n from target_positions", capsys)
    assert code == 0 and out.split() == ["n", str(counts["target_positions"])]
    code, out, _ = _query(config, root, "select count(*) as n from alerts", capsys)
    assert code == 0 and out.split() == ["n", "0"]
    code, out, _ = _query(config, root, "select count(*) as n from backtest_metrics", capsys)
    assert code == 0 and out.split() == ["n", str(counts["backtest_metrics"])]

    for sql in ("select count(*) from clean_bars", "select close from clean_bars where instrument = 'KO'",
                "select count(*) from target_positions t join clean_bars c using (session, instrument)"):
        code, out, err = _query(config, root, sql, capsys)
        assert code == 1 and out == "", sql
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: lake table clean_bars: file {broken} cannot be read (No magic bytes"), err
        assert "restore it from a backup, or move it out of the lake and re-run `trading-pipeline backfill START END`" \
               " to write its 2011 sessions again" in err


def test_the_advice_brings_the_table_back(lake, capsys):
    config, root, counts = lake
    broken = root / "clean_bars" / "year=2011" / "part.parquet"
    _truncate(broken)
    assert _query(config, root, "select count(*) from clean_bars", capsys)[0] == 1

    broken.rename(root.parent / "part.parquet.broken")  # move it out of the lake
    assert main(["backfill", "2022-12-27", END, "--config", str(config), "--lake", str(root)]) == 0
    capsys.readouterr()
    code, out, _ = _query(config, root, "select count(*) as n from clean_bars", capsys)
    assert code == 0 and out.split() == ["n", str(counts["clean_bars"])]
    code, out, _ = _query(config, root, "select count(*) as n from clean_bars where year(session) = 2011", capsys)
    assert code == 0 and out.split() == ["n", str(252 * len(SYMBOLS))]  # the 252 NYSE sessions of 2011


def test_a_whole_table_file_that_is_not_parquet_is_named(lake, capsys):
    config, root, counts = lake
    broken = root / "backtest_metrics" / "table.parquet"
    broken.write_text("session,metric\n")  # something else wrote over it
    code, _, err = _query(config, root, "select * from backtest_metrics", capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: lake table backtest_metrics: file {broken} cannot be read")
    assert err.rstrip().endswith("to write the table again")
    code, out, _ = _query(config, root, "select count(*) as n from clean_bars", capsys)
    assert code == 0 and out.split() == ["n", str(counts["clean_bars"])]


def test_a_damaged_page_inside_a_file_is_named_when_the_query_reads_it(lake, capsys):
    config, root, counts = lake
    broken = root / "clean_bars" / "year=2015" / "part.parquet"
    data = bytearray(broken.read_bytes())
    data[8: len(data) // 2] = b"\xab" * (len(data) // 2 - 8)  # the pages, not the footer: views still build
    broken.write_bytes(bytes(data))
    code, out, _ = _query(config, root, "select count(*) as n from clean_bars", capsys)  # footers only
    assert code == 0 and out.split() == ["n", str(counts["clean_bars"])]
    code, _, err = _query(config, root, "select sum(close) from clean_bars", capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: lake table clean_bars: file {broken} cannot be read")
    assert "its 2015 sessions" in err


def test_the_views_stored_in_the_ledger_file_raise_the_same_message(lake):
    _, root, counts = lake
    broken = root / "target_positions" / "year=2020" / "part.parquet"
    _truncate(broken)
    published = publish_views(root)
    assert "target_positions" not in published and {"clean_bars", "backtest_metrics"} <= set(published)

    con = duckdb.connect(str(root / WAREHOUSE_FILE), read_only=True)  # as the DuckDB shell opens it
    try:
        assert con.execute("select count(*) from clean_bars").fetchone()[0] == counts["clean_bars"]
        with pytest.raises(duckdb.Error, match=f"lake table target_positions: file {broken} cannot be read"):
            con.execute("select count(*) from target_positions").fetchall()
    finally:
        con.close()

    con = connect(root)  # the Python API: the stand-in view keeps the table's columns
    try:
        with pytest.raises(duckdb.Error, match="lake table target_positions"):
            con.execute("select instrument, target from target_positions").fetchall()
    finally:
        con.close()
