"""``trading-pipeline futures adjust`` and ``futures roll-calendar``, run through the CLI's entry point."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main

HEADER = "DATETIME,CARRY,CARRY_CONTRACT,PRICE,PRICE_CONTRACT,FORWARD,FORWARD_CONTRACT\n"
#: Two rolls (gaps +3 and -1.5; the second measured on 03-13 as 03-14 lacks FORWARD) and a blank PRICE.
MULTIPLE = (
    HEADER
    + """2023-03-08 23:00:00,,20230600,100,20230300,102,20230600
2023-03-09 23:00:00,,20230600,101,20230300,104,20230600
2023-03-10 23:00:00,,20230900,105,20230600,103,20230900
2023-03-13 23:00:00,,20230900,106,20230600,104.5,20230900
2023-03-14 23:00:00,,20230900,107,20230600,,20230900
2023-03-15 23:00:00,,20231200,103,20230900,103.5,20231200
2023-03-16 23:00:00,,20231200,,20230900,103.5,20231200
"""
)
ROLLCONFIG = """Instrument,HoldRollCycle,RollOffsetDays,CarryOffset,PricedRollCycle,ExpiryOffset
SP500,HMUZ,-5,1,HMUZ,14
"""


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    multiple, rollconfig = tmp_path / "SP500.csv", tmp_path / "rollconfig.csv"
    multiple.write_text(MULTIPLE)
    rollconfig.write_text(ROLLCONFIG)
    return multiple, rollconfig


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    ), err
    return err


def test_adjust_writes_datetime_price_back_adjusted(files, tmp_path, capsys):
    multiple, _ = files
    out = tmp_path / "adjusted.csv"
    assert main(["futures", "adjust", str(multiple), "--out", str(out)]) == 0
    assert out.read_text().splitlines() == [
        "DATETIME,price",
        "2023-03-08 23:00:00,101.5",
        "2023-03-09 23:00:00,102.5",
        "2023-03-10 23:00:00,103.5",
        "2023-03-13 23:00:00,104.5",
        "2023-03-14 23:00:00,105.5",
        "2023-03-15 23:00:00,103.0",
    ]
    printed = capsys.readouterr().out
    assert (
        "7 rows, 2 rolls (gap measured on the previous row except 1 earlier row); 1 rows without PRICE left out"
        in printed
    )
    assert "last 103 (= PRICE of 202309)" in printed


def test_adjust_fails_in_one_line_on_a_missing_file_missing_columns_and_bad_rows(
    files, tmp_path, capsys
):
    out = str(tmp_path / "adjusted.csv")
    assert main(["futures", "adjust", str(tmp_path / "nope.csv"), "--out", out]) == 1
    assert "nope.csv does not exist" in _one_line_error(capsys)

    bad = tmp_path / "bad.csv"
    bad.write_text("DATETIME,PRICE\n2023-03-08,100\n")
    assert main(["futures", "adjust", str(bad), "--out", out]) == 1
    assert "missing column(s) PRICE_CONTRACT" in _one_line_error(capsys)
    bad.write_text(
        MULTIPLE.replace(
            "2023-03-09 23:00:00,,20230600,101,", "2023-03-09 23:00:00,,20230600,1o1,"
        )
    )
    assert main(["futures", "adjust", str(bad), "--out", out]) == 1
    assert (
        "bad.csv, line 3 (2023-03-09 23:00:00): PRICE '1o1' is not a number"
        in _one_line_error(capsys)
    )
    bad.write_text(MULTIPLE.replace("2023-03-13 23:00:00", "13/03/2023"))
    assert main(["futures", "adjust", str(bad), "--out", out]) == 1
    assert "bad.csv, line 5: DATETIME '13/03/2023' is not a date" in _one_line_error(
        capsys
    )
    bad.write_text(MULTIPLE.replace("107,20230600", "107,20231300"))
    assert main(["futures", "adjust", str(bad), "--out", out]) == 1
    assert (
        "line 6 (2023-03-14 23:00:00): PRICE_CONTRACT '20231300' is not a contract id"
        in _one_line_error(capsys)
    )
    bad.write_text(MULTIPLE.replace("2023-03-10 23:00:00", "2023-03-09 23:00:00"))
    assert main(["futures", "adjust", str(bad), "--out", out]) == 1
    assert (
        "line 4 (2023-03-09 23:00:00): the date repeats the date of the row before"
        in _one_line_error(capsys)
    )
    assert not Path(out).exists()


def test_adjust_with_an_unmeasurable_gap_fails_unless_stitched_flat(
    files, tmp_path, capsys
):
    multiple, _ = files
    text = MULTIPLE.replace(",101,20230300,104,", ",101,20230300,,").replace(
        ",100,20230300,102,", ",100,20230300,,"
    )
    multiple.write_text(text)
    out = tmp_path / "adjusted.csv"
    assert main(["futures", "adjust", str(multiple), "--out", str(out)]) == 1
    assert (
        "roll on 2023-03-10 23:00:00 from 202303 to 202306: no row of the old contract"
        in _one_line_error(capsys)
    )
    assert (
        main(
            [
                "futures",
                "adjust",
                str(multiple),
                "--out",
                str(out),
                "--missing-gap",
                "flat",
            ]
        )
        == 0
    )
    assert pd.read_csv(out)["price"].tolist() == [
        102.5,
        103.5,
        103.5,
        104.5,
        105.5,
        103.0,
    ]
    assert (
        main(
            [
                "futures",
                "adjust",
                str(multiple),
                "--out",
                str(out),
                "--missing-gap",
                "zero",
            ]
        )
        == 2
    )
    assert "--missing-gap must be raise or flat" in _one_line_error(capsys)


def test_roll_calendar_prints_the_planned_rolls(files, capsys):
    _, rollconfig = files
    code = main(
        [
            "futures",
            "roll-calendar",
            "SP500",
            "--rollconfig",
            str(rollconfig),
            "--start",
            "2023-01-01",
            "--end",
            "2023-12-31",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert (
        "SP500: hold HMUZ, priced HMUZ, roll -5 days from expiry, expiry = day 1 + 14 days, carry offset +1"
        in out
    )
    assert "Planned rolls 2023-01-01 .. 2023-12-31: 4" in out
    rows = [
        line.split() for line in out.splitlines() if line.strip().startswith("2023-")
    ]
    assert [r[:3] for r in rows] == [
        ["2023-03-13", "202303", "202306"],
        ["2023-06-12", "202306", "202309"],
        ["2023-09-11", "202309", "202312"],
        ["2023-12-11", "202312", "202403"],
    ]


def test_roll_calendar_with_multiple_prices_shows_the_actual_rolls_and_differences(
    files, capsys
):
    multiple, rollconfig = files
    assert (
        main(
            [
                "futures",
                "roll-calendar",
                "SP500",
                "--rollconfig",
                str(rollconfig),
                "--multiple",
                str(multiple),
                "--start",
                "2023-01-01",
                "--end",
                "2023-12-31",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Actual rolls in" in out and "Actual against planned" in out
    compared = [
        line.split()
        for line in out.split("Actual against planned")[1].splitlines()
        if line.strip().startswith("2023-03")
    ]
    # 03-10 is one session before the planned 03-13; the roll into 202309 on 03-15 is 63 sessions before 06-12
    assert compared == [
        ["2023-03-10", "202303", "202306", "2023-03-13", "202303", "True", "-1.00"],
        ["2023-03-15", "202306", "202309", "2023-06-12", "202306", "True", "-63.00"],
    ]
    assert (
        "2 actual rolls; 100% between the planned contracts; roll date difference median -32"
        in out
    )


def test_roll_calendar_errors_are_one_line(files, tmp_path, capsys, monkeypatch):
    _, rollconfig = files
    monkeypatch.delenv("TRADING_PIPELINE_ROLLCONFIG", raising=False)
    assert main(["futures", "roll-calendar", "SP500"]) == 2
    assert "no roll configuration: pass --rollconfig PATH" in _one_line_error(capsys)
    assert (
        main(["futures", "roll-calendar", "GOLD", "--rollconfig", str(rollconfig)]) == 1
    )
    assert "has no instrument 'GOLD'" in _one_line_error(capsys)
    assert (
        main(
            [
                "futures",
                "roll-calendar",
                "SP500",
                "--rollconfig",
                str(tmp_path / "none.csv"),
            ]
        )
        == 1
    )
    assert "none.csv does not exist" in _one_line_error(capsys)
    assert (
        main(
            [
                "futures",
                "roll-calendar",
                "SP500",
                "--rollconfig",
                str(rollconfig),
                "--start",
                "2023-02-30",
            ]
        )
        == 2
    )
    assert "is not a date YYYY-MM-DD" in _one_line_error(capsys)
    assert (
        main(
            [
                "futures",
                "roll-calendar",
                "SP500",
                "--rollconfig",
                str(rollconfig),
                "--start",
                "2023-06-01",
                "--end",
                "2023-01-01",
            ]
        )
        == 2
    )
    assert "--end 2023-01-01 is before --start 2023-06-01" in _one_line_error(capsys)
    monkeypatch.setenv("TRADING_PIPELINE_ROLLCONFIG", str(rollconfig))
    assert (
        main(
            [
                "futures",
                "roll-calendar",
                "SP500",
                "--multiple",
                str(tmp_path / "gone.csv"),
            ]
        )
        == 1
    )
    assert "gone.csv does not exist" in _one_line_error(capsys)


def test_roll_calendar_reads_one_instrument_from_a_long_parquet_table(
    files, tmp_path, capsys
):
    multiple, rollconfig = files
    frame = pd.read_csv(multiple).rename(columns={"DATETIME": "date"})
    other = frame.assign(PRICE_CONTRACT=20230300)  # another instrument that never rolls
    table = pd.concat(
        [frame.assign(instrument="SP500"), other.assign(instrument="OTHER")]
    )
    table["date"] = pd.to_datetime(table["date"])
    path = tmp_path / "multiple_prices.parquet"
    table.to_parquet(path)
    args = [
        "futures",
        "roll-calendar",
        "SP500",
        "--rollconfig",
        str(rollconfig),
        "--multiple",
        str(path),
    ]
    assert main([*args, "--start", "2023-01-01", "--end", "2023-12-31"]) == 0
    assert (
        "2 actual rolls; 100% between the planned contracts" in capsys.readouterr().out
    )
    assert (
        main(
            [
                "futures",
                "roll-calendar",
                "SP500",
                "--rollconfig",
                str(rollconfig),
                "--multiple",
                str(path).replace("multiple_prices", "none"),
            ]
        )
        == 1
    )
    assert "none.parquet does not exist" in _one_line_error(capsys)
    table.assign(instrument="OTHER").to_parquet(path)
    assert main(args) == 1
    assert "no rows for instrument 'SP500'" in _one_line_error(capsys)
