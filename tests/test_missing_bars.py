"""Missing bars: the ``missing_bars`` table, the per-instrument policy (block, carry, omit) and a
series that has ended, on real sample bars through the daily job and the command line."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.adapters.sources import SampleSource
from pipeline.calendar import sessions
from pipeline.cli.app import main
from pipeline.definitions import execute_backfill, execute_daily
from pipeline.quality.missing import carried_bars, classify_missing_bars
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from tests.conftest import LATEST_SAMPLE_SESSION, write_config

UNIVERSE = ["AAPL", "KO", "XOM"]
LAST = pd.Timestamp(LATEST_SAMPLE_SESSION)
PREVIOUS = pd.Timestamp("2022-12-27")


def _bars() -> pd.DataFrame:
    bars = SampleSource().fetch(UNIVERSE, pd.Timestamp("2015-01-02"), LAST)
    return bars[["session", "instrument", "open", "high", "low", "close", "volume"]]


def _config(folder, bars: pd.DataFrame, policies: dict[str, str] | None = None):
    data = folder / "bars"
    data.mkdir(parents=True)
    bars.to_parquet(data / "bars.parquet", index=False)
    path = write_config(folder, symbols=UNIVERSE, source={"kind": "files", "path": str(data)},
                        history_start="2015-01-02")
    raw = yaml.safe_load(path.read_text())
    for instrument in raw["instruments"]:
        if instrument["symbol"] in (policies or {}):
            instrument["missing_bar_policy"] = policies[instrument["symbol"]]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _daily(config, session=LATEST_SAMPLE_SESSION):
    with dg.instance_for_test() as instance:
        return execute_daily(session, submit=True, config_path=str(config), instance=instance)


def _without_ko_on_the_last_session() -> pd.DataFrame:
    bars = _bars()
    return bars[~((bars["instrument"] == "KO") & (bars["session"] == LAST))]


# -- the classification, on a small frame ----------------------------------------------------


def _frame(days: pd.DatetimeIndex, rows: dict[str, pd.DatetimeIndex]) -> pd.DataFrame:
    parts = [pd.DataFrame({"session": d, "instrument": s, "close": 10.0 + np.arange(len(d))}) for s, d in rows.items()]
    out = pd.concat(parts, ignore_index=True)
    return out.assign(session=out["session"].astype("datetime64[us]"), source="files:t.csv",
                      fetched_at=pd.Timestamp("2023-01-02", tz="UTC"), open=np.nan, high=np.nan, low=np.nan,
                      volume=np.nan)


def test_reasons_and_actions_of_each_gap():
    days = sessions("2022-11-01", "2022-12-28")  # 40 NYSE sessions
    clean = _frame(days, {
        "A": days,                      # complete
        "B": days.delete([-3, -1]),     # no bar on 2022-12-23 and 2022-12-28
        "C": days[:11],                 # last bar 2022-11-15: 29 sessions without a bar since
        "E": days[:-8],                 # last bar 2022-12-15: 8 sessions without a bar since
    })
    quarantine = pd.DataFrame({"session": pd.to_datetime(["2022-12-28"]).astype("datetime64[us]"), "instrument": ["A"]})
    clean = clean[~((clean["instrument"] == "A") & (clean["session"] == LAST))]
    policies = {"A": "carry", "B": "carry", "C": "block", "D": "block", "E": "omit"}
    gaps = classify_missing_bars(clean, quarantine, days[-5:], ["A", "B", "C", "D", "E"], policies, ended_after=10)
    got = {(s.strftime("%m-%d"), i): (r, a) for s, i, r, a in zip(gaps["session"], gaps["instrument"], gaps["reason"],
                                                                  gaps["action"])}
    assert got[("12-28", "A")] == ("quarantined", "left_out")  # carry never carries over a quarantined bar
    assert got[("12-23", "B")] == got[("12-28", "B")] == ("missing", "carried")
    assert all(got[(d, "C")] == ("ended", "left_out") for d in ("12-21", "12-22", "12-23", "12-27", "12-28"))
    assert got[("12-28", "D")] == ("no_data", "left_out")
    assert got[("12-28", "E")] == ("missing", "left_out")  # 8 sessions <= 10: not ended yet, omitted
    assert len(gaps) == 1 + 2 + 5 + 5 + 5
    # The threshold: with ended_after 7, E's 8 sessions without a bar make it ended.
    again = classify_missing_bars(clean, quarantine, days[-1:], ["E"], {"E": "block"}, ended_after=7)
    assert again["reason"].tolist() == ["ended"] and again["action"].tolist() == ["left_out"]
    # ... and with 8 (not more than 8) it is still missing, and blocks.
    again = classify_missing_bars(clean, quarantine, days[-1:], ["E"], {"E": "block"}, ended_after=8)
    assert again["reason"].tolist() == ["missing"] and again["action"].tolist() == ["blocked"]

    bars, warnings = carried_bars(clean, gaps)
    b = bars.set_index(["instrument", "session"])
    last_close_b = clean[(clean["instrument"] == "B") & (clean["session"] == PREVIOUS)]["close"].item()
    assert b.loc[("B", LAST), ["open", "high", "low", "close", "volume"]].tolist() == [last_close_b] * 4 + [0.0]
    assert len(bars) == 2 and set(warnings["rule"]) == {"stale_price"}


def test_the_table_replaces_the_rows_of_a_rerun_session(tmp_path):
    ledger = Ledger(tmp_path / "warehouse.duckdb").init()
    gaps = pd.DataFrame({"session": [LAST, LAST], "instrument": ["KO", "XOM"], "reason": ["missing", "ended"],
                         "policy": ["block", "block"], "action": ["blocked", "left_out"],
                         "last_bar": [PREVIOUS, pd.Timestamp("2022-11-30")]})
    assert ledger.record_missing_bars(gaps, pd.DatetimeIndex([LAST]), "run1") == 2
    assert ledger.record_missing_bars(gaps.iloc[1:], pd.DatetimeIndex([LAST]), "run2") == 1  # KO's bar arrived
    rows = ledger.missing_bars(LAST)
    assert rows[["instrument", "reason", "action", "run_id"]].values.tolist() == [["XOM", "ended", "left_out", "run2"]]
    assert str(rows["last_bar"].iloc[0])[:10] == "2022-11-30"


# -- the policies through the daily job ------------------------------------------------------


def test_block_fails_bars_complete_and_the_command_lists_the_pair(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    config = _config(tmp_path, _without_ko_on_the_last_session())
    assert main(["daily", "--session", LATEST_SAMPLE_SESSION, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.strip().startswith("check clean_bars:bars_complete failed"))
    assert "1 missing bar(s): 2022-12-28 KO" in line and 'select * from missing_bars' in line
    ledger = Ledger(tmp_path / "lake" / "warehouse.duckdb")
    rows = ledger.missing_bars(LAST)
    assert rows[["instrument", "reason", "policy", "action"]].values.tolist() == [["KO", "missing", "block", "blocked"]]
    assert ledger.intents().empty  # blocked: no order computed


def test_omit_leaves_the_instrument_out_of_the_session_and_the_others_trade(tmp_path):
    config = _config(tmp_path, _without_ko_on_the_last_session(), {"KO": "omit"})
    result = _daily(config)
    assert result.success
    ledger = Ledger(tmp_path / "lake" / "warehouse.duckdb")
    assert sorted(ledger.intents(session=LATEST_SAMPLE_SESSION)["instrument"]) == ["AAPL", "XOM"]
    assert ledger.missing_bars(LAST)[["instrument", "action"]].values.tolist() == [["KO", "left_out"]]
    targets = Lake(tmp_path / "lake").read("target_positions", start=LAST)
    assert sorted(targets["instrument"]) == ["AAPL", "XOM"]


def test_carry_carries_the_last_close_flagged_stale(tmp_path):
    bars = _without_ko_on_the_last_session()
    ko_close = bars[(bars["instrument"] == "KO") & (bars["session"] == PREVIOUS)]["close"].item()
    config = _config(tmp_path, bars, {"KO": "carry"})
    assert _daily(config).success
    lake = Lake(tmp_path / "lake")
    clean = lake.read("clean_bars", start=LAST).set_index("instrument")
    assert clean.loc["KO", "close"] == pytest.approx(ko_close) and clean.loc["KO", "volume"] == 0.0
    assert clean.loc["KO", "source"] == "carried:files:bars.parquet"
    warned = lake.read("quality_warnings", start=LAST)
    flagged = warned[(warned["instrument"] == "KO") & (warned["rule"] == "stale_price")]
    assert len(flagged) == 1 and "carried forward" in flagged["detail"].item()
    ledger = Ledger(tmp_path / "lake" / "warehouse.duckdb")
    assert ledger.missing_bars(LAST)[["instrument", "action"]].values.tolist() == [["KO", "carried"]]
    assert "KO" in set(ledger.intents(session=LATEST_SAMPLE_SESSION)["instrument"])


def test_an_ended_series_does_not_block_a_backfill_and_is_reported_once(tmp_path):
    bars = _bars()
    bars = bars[~((bars["instrument"] == "XOM") & (bars["session"] > pd.Timestamp("2022-11-30")))]
    config = _config(tmp_path, bars)  # the default policy: block
    with dg.instance_for_test() as instance:
        result = execute_backfill("2022-12-01", LATEST_SAMPLE_SESSION, config_path=str(config), instance=instance)
    assert result.success
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "bars_complete")
    assert check.passed and "19 ended (left_out)" in check.description
    ledger = Ledger(tmp_path / "lake" / "warehouse.duckdb")
    rows = ledger.missing_bars()
    rows = rows[rows["reason"] != "flagged"]  # the history's flagged spikes are listed too (AAPL, KO)
    assert set(rows["instrument"]) == {"XOM"} and set(rows["reason"]) == {"ended"} and len(rows) == 19
    # the next daily run does not report it again
    assert _daily(config).success
    alerts = ledger.alerts()
    assert alerts[alerts["kind"] == "series_ended"]["subject"].tolist() == ["XOM"]
