"""Backfills quarantine instead of stopping: a bad or missing bar in the middle of a history removes that
instrument's bar (its position is carried), is listed in the output and in the ledger's tables, and the rest
of the history is computed. A daily run of the traded session still blocks on the same defects."""

from __future__ import annotations

import pandas as pd

from pipeline.cli.app import main
from pipeline.config import load_config
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from tests.test_missing_bars import LATEST_SAMPLE_SESSION, _bars, _config

BAD_DAY = pd.Timestamp("2022-12-15")
GONE_DAY = pd.Timestamp("2022-12-20")


def _defective_history() -> pd.DataFrame:
    bars = _bars()
    bad = (bars["session"] == BAD_DAY) & (bars["instrument"] == "KO")
    close = bars.loc[bad, "close"].to_numpy()
    bars.loc[bad, "high"] = close * 0.9  # high below the close: ohlc_inconsistent
    return bars[~((bars["session"] == GONE_DAY) & (bars["instrument"] == "XOM"))]


def test_a_backfill_leaves_bad_and_missing_bars_out_lists_them_and_computes_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    config = _config(tmp_path, _defective_history())
    assert main(["backfill", "2022-12-01", LATEST_SAMPLE_SESSION, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Left out of the history" in out
    quarantine_line = next(x for x in out.splitlines() if "no_quarantined_bars" in x)
    assert "(WARN)" in quarantine_line and "KO 2022-12-15" in quarantine_line
    complete_line = next(x for x in out.splitlines() if "bars_complete" in x)
    assert "2022-12-15 KO" in complete_line and "2022-12-20 XOM" in complete_line

    cfg = load_config(config)
    lake = Lake(cfg.lake_path)
    targets = lake.read("target_positions", start=pd.Timestamp("2022-12-01"))
    last = targets[targets["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)]
    assert sorted(last["instrument"]) == ["AAPL", "KO", "XOM"]  # the history after the bad bars is computed
    clean = lake.read("clean_bars", start=BAD_DAY, end=GONE_DAY)
    assert not ((clean["session"] == BAD_DAY) & (clean["instrument"] == "KO")).any()
    gaps = Ledger(cfg.lake_path / "warehouse.duckdb").missing_bars()
    gaps = gaps[gaps["reason"] != "flagged"]
    listed = gaps[["session", "instrument", "reason", "action"]].astype({"session": "datetime64[us]"})
    assert listed.values.tolist() == [[BAD_DAY, "KO", "quarantined", "left_out"],
                                      [GONE_DAY, "XOM", "missing", "left_out"]]


def test_the_daily_of_a_session_with_a_quarantined_bar_still_blocks(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    bars = _bars()
    bad = (bars["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)) & (bars["instrument"] == "KO")
    bars.loc[bad, "high"] = bars.loc[bad, "close"] * 0.9
    config = _config(tmp_path, bars)
    assert main(["daily", "--session", LATEST_SAMPLE_SESSION, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert any("no_quarantined_bars" in x and "(ERROR)" in x for x in err.splitlines())
    assert Ledger(load_config(config).lake_path / "warehouse.duckdb").intents().empty
