"""`trading-pipeline backtest` with a stop_target strategy: trades.csv, summary.json, report.html."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.cli.app import main
from pipeline.config import load_config
from pipeline.strategies.backtest import EXIT_REASONS
from pipeline.strategies.config import strategy_config
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mcl_ema_atr.yaml"
TRADE_CSV_COLUMNS = ["instrument", "direction", "entry_session", "entry_price", "exit_session", "exit_price",
                     "contracts", "pnl", "exit_reason"]
TRADE_KEYS = {"count", "win_rate", "average_win", "average_loss", "profit_factor", "expectancy",
              "max_consecutive_losses"}
PERFORMANCE_KEYS = {"sharpe", "max_drawdown"}
TIME_KEYS = {"average_holding_sessions", "pnl_by_weekday", "best_weekday", "worst_weekday"}


def _folder(out: Path) -> Path:
    (folder,) = list(out.iterdir())
    return folder


def _check_results(folder: Path) -> tuple[pd.DataFrame, dict]:
    for name in ("trades.csv", "summary.json", "report.html", "daily.csv", "equity_curve.csv", "parameters.json"):
        assert (folder / name).is_file(), name
    trades = pd.read_csv(folder / "trades.csv")
    summary = json.loads((folder / "summary.json").read_text())
    assert list(trades.columns[: len(TRADE_CSV_COLUMNS)]) == TRADE_CSV_COLUMNS
    assert set(trades["exit_reason"]) <= set(EXIT_REASONS)
    assert TRADE_KEYS <= set(summary["trades"]["values"])
    assert PERFORMANCE_KEYS <= set(summary["performance"]["values"])
    assert TIME_KEYS <= set(summary["time_analysis"])
    # the trades' P&L, net of costs, is the account's
    assert trades["pnl"].sum() == pytest.approx(summary["performance"]["values"]["pnl_net"], abs=1e-6)
    assert summary["trades"]["values"]["count"] == int((trades["exit_reason"] != "end_of_data").sum())
    equity = pd.read_csv(folder / "equity_curve.csv")
    assert equity["pnl"].sum() == pytest.approx(trades["pnl"].sum(), abs=1e-6)
    assert "<h2>Trades" in (folder / "report.html").read_text()
    return trades, summary


def test_the_example_runs_on_its_bundled_synthetic_bars(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # source.path is relative to the working directory
    assert main(["backtest", "--config", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    trades, summary = _check_results(_folder(tmp_path))
    assert len(trades) >= 3 and trades["contracts"].between(1, 5).all()
    assert {"stop", "signal"} <= set(trades["exit_reason"])
    assert summary["run"]["order_ref_prefix"] == "mclema"
    assert summary["data_range"]["first_session"] == "2019-01-02" and summary["data_range"]["sessions"] == 1000
    assert summary["time_analysis"]["best_weekday"] in summary["time_analysis"]["pnl_by_weekday"]
    assert "Backtesting the stop_target strategy 'mcl_ema_atr'" in capsys.readouterr().out


def test_an_invalid_strategy_section_is_one_line_naming_the_field(tmp_path, capsys):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["strategy"]["exits"] = {"stop": {"kind": "atr", "value": -1}}
    raw["source"]["path"] = str(ROOT / "examples" / "mcl_synthetic")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["backtest", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: config file {config}") and "strategy.exits.stop.value" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_carver_system_stays_the_default():
    assert load_config().strategy is None and strategy_config(load_config()) is None
    assert strategy_config(load_config(EXAMPLE)).entry.kind == "ema_crossover"


@pytest.mark.shared_data("futures_quantiacs_88.parquet")
def test_the_example_on_real_wti_bars(tmp_path):
    """WTI front-month crude 1990-2021, Panama back-adjusted with the set's roll gaps (scripts/quantiacs_wti.py)."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "quantiacs_wti.py"), str(tmp_path),
                           "--data", str(SHARED_DATA / "futures_quantiacs_88.parquet")],
                          capture_output=True, text=True, check=True)
    assert "368 rolls" in done.stdout
    bars = pd.read_csv(tmp_path / "bars" / "MCL.csv")
    # Panama: anchored at the last contract (its last close, 63,220 $ a contract = 63.22 $/bbl), earlier bars shifted
    assert len(bars) == 7817 and bars["close"].iloc[-1] == pytest.approx(63.22) and bars["low"].min() > 0
    assert main(["backtest", "--config", str(tmp_path / "mcl_ema_atr.yaml"), "--out", str(tmp_path / "out")]) == 0
    trades, summary = _check_results(_folder(tmp_path / "out"))
    assert summary["trades"]["values"]["count"] > 100 and trades["contracts"].between(1, 5).all()
    assert summary["data_range"]["first_session"] == "1990-01-02"
    assert summary["data_quality"]["held_out_of_clean_bars_by_rule"]  # the set's bad bars are left out
