"""A bars folder with bad files beside good ones: each bad file is named once (table, alert, one
line of the command's output), the good instruments backfill and trade, and a per-symbol file whose
symbol is not in the universe is never opened."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.adapters.sources import FilesSource, SampleSource
from pipeline.bars import SourceDataError
from pipeline.cli.app import main
from pipeline.store.ledger import Ledger
from tests.conftest import write_config

GOOD = ["AAPL", "KO", "XOM"]
BAD = {
    "EMPTY.csv": (b"", "empty"),
    "BIN.csv": (bytes(range(256)) * 4, "binary"),
    "HDR.csv": (b"foo,bar\n1,2\n", "no_header"),
    # "Clôture" written in latin-1: byte 0xf4 is not UTF-8
    "LAT.csv": ("date,close\n2022-12-20,1\n2022-12-21,Cl\xf4ture\n".encode("latin-1"), "encoding"),
}
JAN = (pd.Timestamp("2022-12-01"), pd.Timestamp("2022-12-28"))


def _folder(tmp_path: Path) -> Path:
    """Good per-symbol CSVs of three sample stocks since 2015, and the bad files of BAD."""
    data = tmp_path / "bars"
    data.mkdir()
    bars = SampleSource().fetch(GOOD, pd.Timestamp("2015-01-02"), pd.Timestamp("2022-12-28"))
    for symbol, rows in bars.groupby("instrument"):
        rows[["session", "open", "high", "low", "close", "volume"]].rename(columns={"session": "date"}).to_csv(
            data / f"{symbol}.csv", index=False)
    for name, (content, _) in BAD.items():
        (data / name).write_bytes(content)
    return data


def _config(tmp_path: Path, data: Path, extra: list[str]) -> Path:
    path = write_config(tmp_path, symbols=GOOD, source={"kind": "files", "path": str(data)},
                        history_start="2015-01-02")
    raw = yaml.safe_load(path.read_text())
    raw["instruments"] += [{"symbol": s, "sec_type": "STK", "asset_class": "equity"} for s in extra]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_fetch_report_names_each_bad_file_with_its_kind_and_returns_the_good_bars(tmp_path):
    data = _folder(tmp_path)
    wanted = GOOD + ["EMPTY", "BIN", "HDR", "LAT", "NOFILE"]
    report = FilesSource(data).fetch_report(wanted, *JAN)
    kinds = dict(zip(report.unreadable["file"].map(lambda f: Path(f).name), report.unreadable["kind"]))
    assert kinds == {name: kind for name, (_, kind) in BAD.items()}
    assert sorted(report.unreadable["instrument"]) == ["BIN", "EMPTY", "HDR", "LAT"]
    assert report.missing == ["EMPTY", "BIN", "HDR", "LAT", "NOFILE"]
    assert sorted(report.bars["instrument"].unique()) == sorted(GOOD)
    # 19 NYSE sessions in 2022-12-01 .. 2022-12-28 (the 26th is Christmas observed), one bar each
    assert len(report.bars) == 3 * 19
    assert report.unreadable["fingerprint"][report.unreadable["file"].str.endswith("EMPTY.csv")].tolist()[0].startswith("0:")
    # the strict fetch a library caller uses raises on the first bad file, naming it
    with pytest.raises(SourceDataError, match=r"BIN\.csv is binary"):
        FilesSource(data).fetch(wanted, *JAN)


def test_a_per_symbol_file_outside_the_universe_is_never_opened(tmp_path):
    data = _folder(tmp_path)
    source = FilesSource(data)
    # The bad files would each fail if read (asked for, they are reported) ...
    assert len(source.fetch_report(["BIN"], *JAN).unreadable) >= 1
    # ... but with the universe of good symbols, each of which has a file of its own, none is opened.
    fresh = FilesSource(data)
    report = fresh.fetch_report(GOOD, *JAN)
    assert report.unreadable.empty and report.missing == []
    assert {path.name for path, _ in fresh._cache} == {"AAPL.csv", "KO.csv", "XOM.csv"}
    assert fresh.last_session(GOOD) == pd.Timestamp("2022-12-28")


def test_the_good_symbols_backfill_and_trade_and_each_bad_file_is_named_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    data = _folder(tmp_path)
    config = _config(tmp_path, data, ["EMPTY", "BIN", "HDR", "LAT", "NOFILE"])

    assert main(["backfill", "2022-12-20", "2022-12-27", "--config", str(config)]) == 0
    backfill = capsys.readouterr()
    assert "5 sessions" in backfill.out
    assert main(["daily", "--config", str(config)]) == 0
    daily = capsys.readouterr()
    assert "Daily run for session 2022-12-28" in daily.out and "succeeded" in daily.out

    for run in (backfill, daily):
        text = run.out + run.err
        for name in BAD:
            assert text.count(f"bars/{name}") == 1, (name, text[-3000:])  # named once, on its own line
        assert text.count("no readable input holds NOFILE") == 1
        assert "Traceback" not in text and "Stack Trace" not in text

    ledger = Ledger(tmp_path / "lake" / "warehouse.duckdb")
    intents = ledger.intents(session="2022-12-28")
    assert sorted(intents["instrument"]) == sorted(GOOD)  # the good symbols trade
    errors = ledger.source_errors(open_only=True)
    assert sorted(errors["kind"]) == ["binary", "empty", "encoding", "no_header", "not_in_source"]
    assert (errors["first_run_id"] != errors["last_run_id"]).all()  # seen by both runs, recorded once
    alerts = ledger.alerts()
    source_alerts = alerts[alerts["kind"] == "source_error"]
    assert len(source_alerts) == 5  # one per bad file and one for NOFILE, not one per run
    assert set(source_alerts["subject"]) == {str(data / n) for n in BAD} | {"NOFILE"}

    # The empty file is fixed: its problem is resolved and EMPTY... is still not traded (no history).
    (data / "EMPTY.csv").write_text("date,close\n2022-12-28,10\n")
    assert main(["daily", "--session", "2022-12-28", "--no-submit", "--config", str(config)]) == 0
    capsys.readouterr()
    errors = ledger.source_errors()
    empty = errors[errors["kind"] == "empty"]
    assert len(empty) == 1 and empty["resolved_at"].notna().all()


def test_nothing_readable_fails_once_without_retries_and_names_the_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    data = _folder(tmp_path)
    config = write_config(tmp_path, symbols=["EMPTY", "BIN"], source={"kind": "files", "path": str(data)},
                          history_start="2015-01-02")
    assert main(["backfill", "2022-12-20", "2022-12-27", "--config", str(config)]) == 1
    run = capsys.readouterr()
    assert "no readable input for any instrument of the universe" in run.err
    assert "max_retries" not in run.err and "STEP_UP_FOR_RETRY" not in run.err  # deterministic: no retry
    assert run.err.count("bars/EMPTY.csv") == 1 and run.err.count("bars/BIN.csv") == 1
    # One line per event on the console: no stack trace, no line per skipped downstream step, and
    # the failure's message without Dagster's class name.
    assert "Stack Trace" not in run.err and "Traceback" not in run.err
    assert "Not executing" not in run.err and "dagster._core" not in run.err
    assert run.err.count("STEP_FAILURE") == 1 and run.err.count("RUN_FAILURE") == 1

    # --verbose keeps every event in full, the stack trace included (the event log always has it).
    monkeypatch.setenv("TRADING_PIPELINE_LOG_LEVEL", "INFO")  # --verbose sets DEBUG: restored after the test
    assert main(["backfill", "2022-12-20", "2022-12-27", "--verbose", "--config", str(config)]) == 1
    verbose = capsys.readouterr()
    assert "Stack Trace" in verbose.err and "Not executing" in verbose.err
