"""``trading-pipeline backtest``, ``walk-forward`` and ``compare`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from pipeline.research.results import RESULT_FILES
from tests.conftest import write_config


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=False, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One backtest and one walk-forward of a three-instrument universe, into one results folder."""
    folder = tmp_path_factory.mktemp("backtest_cli")
    config = write_config(folder, symbols=["AAPL", "KO", "XOM"], backtest={"borrow_rate": 0.01, "fill": "next_open"})
    env = {**os.environ, "DAGSTER_HOME": str(folder / "dagster_home"), "TRADING_PIPELINE_CONFIG": str(config)}
    out = folder / "results"
    backtest = _cli("backtest", "--start", "2015-01-02", "--end", "2022-06-30", "--strategy", "trend three",
                    "--out", str(out), "--lake", str(folder / "lake"), env=env)
    walk = _cli("walk-forward", "--start", "2016-01-04", "--train-len", "252", "--test-len", "126",
                "--out", str(out), env=env)
    return backtest, walk, out, env


def test_backtest_writes_the_results_folder_for_the_window(runs):
    backtest, _, out, _ = runs
    assert backtest.returncode == 0, backtest.stderr[-3000:]
    folder = next(out.glob("*_trend-three"))
    assert set(RESULT_FILES) <= {p.name for p in folder.iterdir()}
    summary = json.loads((folder / "summary.json").read_text())
    # the simulation covers --start .. --end; statistics start at the first position
    assert summary["data_range"]["first_session"] == "2015-01-02"
    assert summary["data_range"]["last_session"] == "2022-06-30"
    assert summary["basis"]["in_or_out_of_sample"] == "in-sample"
    assert summary["performance"]["values"]["borrow"] > 0  # the config's borrow rate reached the simulation
    assert set(summary["attribution"]["by_rule"]) >= {"ewmac8_32", "breakout20"}
    assert f"Results: {folder}" in backtest.stdout and "sharpe" in backtest.stdout


def test_walk_forward_writes_an_out_of_sample_folder_with_its_folds(runs):
    _, walk, out, _ = runs
    assert walk.returncode == 0, walk.stderr[-3000:]
    folder = next(out.glob("*_carver-walk-forward"))
    folds = pd.read_csv(folder / "folds.csv", parse_dates=["train_start", "train_end", "test_start", "test_end"])
    assert (folds["train_end"] < folds["test_start"]).all() and (folds["n_train"] == 252).all()
    assert folds["test_start"].iloc[0] > pd.Timestamp("2016-12-30")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["basis"]["in_or_out_of_sample"] == "out-of-sample"
    assert len(summary["walk_forward"]["folds"]) == len(folds)
    assert f"{len(folds)} folds" in walk.stdout
    # the same simulation options as backtest (next-open fills need the opens, read from the lake)
    assert summary["performance"]["values"]["borrow"] > 0
    # every fold states what it fitted, with the values
    assert {"fdm", "idm", "scalar:ewmac8_32", "instrument_weight:KO"} <= set(folds.columns)
    fitted = summary["walk_forward"]["fitted"]
    assert len(fitted) == len(folds) and fitted[0]["instrument_weights"].keys() == {"AAPL", "KO", "XOM"}
    assert fitted[0]["forecast_scalars"]["ewmac8_32"] == pytest.approx(folds.loc[0, "scalar:ewmac8_32"])


def test_compare_puts_both_runs_in_one_page(runs):
    _, _, out, env = runs
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    cmp = _cli("compare", *map(str, folders), env=env)
    assert cmp.returncode == 0, cmp.stderr
    page = (out / "compare.html").read_text()
    assert all(f.name in page for f in folders)


def test_compare_of_a_folder_that_is_no_run_fails_clearly(runs, tmp_path):
    *_, env = runs
    bad = _cli("compare", str(tmp_path), env=env)
    assert bad.returncode != 0 and "no summary.json" in bad.stderr


def test_backfill_results_sit_beside_a_local_lake_not_in_the_working_directory(tmp_path):
    from assets.research import _results_root

    assert _results_root("results/backtests", tmp_path / "lake") == tmp_path.resolve() / "results" / "backtests"
    assert _results_root(str(tmp_path / "abs"), tmp_path / "lake") == tmp_path / "abs"


def test_stability_reports_the_sharpe_surface_and_regimes_on_the_same_lake(runs):
    *_, out, env = runs
    done = _cli("stability", "--start", "2015-01-02", "--end", "2022-06-30", "--out", str(out),
                "--lake", str(out.parent / "lake"), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = next(out.glob("*_carver-stability"))
    surface = pd.read_csv(folder / "sharpe_surface.csv", index_col="parameter")
    assert list(surface.index) == ["ewma_spans", "vol_span", "buffer_fraction", "vol_target"]
    assert list(surface.columns) == ["0.75", "1.0", "1.25"]
    assert surface["1.0"].nunique() == 1 and surface.notna().all().all()  # one base run, every run finite
    regimes = pd.read_csv(folder / "performance_by_vol_regime.csv", index_col="regime")
    assert list(regimes.index) == ["low", "mid", "high"]
    assert (regimes["vol_from"].iloc[1:].to_numpy() >= regimes["vol_to"].iloc[:-1].to_numpy()).all()
    basis = json.loads((folder / "stability.json").read_text())["basis"]
    assert basis["costs"] == "none (gross)" and basis["sample"].startswith("2015-01-02 .. 2022-06-30")
