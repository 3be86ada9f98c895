"""Backtest capital by configuration: fixed (Carver), full and half compounding (pysystemtrade's
capital correction), and the reports that name which one a run used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline.config import CostModel, Instrument, PipelineConfig, load_config
from pipeline.research.backtest import (
    BacktestInputError,
    capital_multiplier,
    compounded_positions,
    simulate,
    simulation_options,
)
from pipeline.research.results import BacktestRun, write_results
from tests.conftest import write_config

SESSIONS = pd.bdate_range("2021-01-04", periods=5, name="session")
# A: +10%, +10%, -10%, +10%; B (point size 2): 0, +5, 0, -5.5
PRICES = pd.DataFrame(
    {"A": [100.0, 110.0, 121.0, 108.9, 119.79], "B": [50.0, 50.0, 55.0, 55.0, 49.5]},
    SESSIONS,
)
POINT_SIZE = pd.Series({"A": 1.0, "B": 2.0})
FREE = {"A": CostModel(), "B": CostModel()}
CAPITAL = 1_000_000.0
# the target changes on every session, so a compounded run resizes every position every session
TARGETS = pd.DataFrame(
    {
        "A": [1000.0, 1100.0, 1200.0, 1300.0, 1400.0],
        "B": [2000.0, 2100.0, 2200.0, 2300.0, 2400.0],
    },
    SESSIONS,
)
# fixed-capital P&L by hand (pysystemtrade's delayfill: the target of t-1 trades at t's close, so the
# holding over session t is the target of t-2):
#   t2: 1000 * 11 + 2000 * 5 * 2 = 31,000;   t3: 1100 * -12.1 = -13,310
#   t4: 1200 * 10.89 + 2200 * -5.5 * 2 = -11,132
FIXED_RETURNS = np.array([0.0, 0.0, 0.031, -0.01331, -0.011132])
FULL_M = np.cumprod(1.0 + FIXED_RETURNS)  # 1, 1, 1.031, 1.01727739, 1.00595306...


def _run(method: str, targets: pd.DataFrame = TARGETS, **kw):
    return simulate(
        targets,
        PRICES,
        POINT_SIZE,
        kw.pop("costs", FREE),
        CAPITAL,
        capital_method=method,
        **kw,
    )


def test_fixed_is_the_default_and_matches_the_hand_computed_returns():
    default = simulate(TARGETS, PRICES, POINT_SIZE, FREE, CAPITAL)
    fixed = _run("fixed")
    np.testing.assert_allclose(
        default.returns.to_numpy(), FIXED_RETURNS, rtol=0, atol=1e-15
    )
    for name in ("holdings", "pnl_net", "costs"):
        pd.testing.assert_frame_equal(
            getattr(fixed, name), getattr(default, name), check_exact=True
        )
    pd.testing.assert_series_equal(fixed.returns, default.returns, check_exact=True)
    pd.testing.assert_series_equal(fixed.equity, default.equity, check_exact=True)
    assert default.capital_method == "fixed" and default.capital_path is None
    assert default.capital_label() == "fixed 1,000,000"


def test_full_compounding_scales_positions_by_the_multiplier_and_compounds_the_equity():
    full = _run("full")
    assert FULL_M[3] == pytest.approx(1.031 * 0.98669, abs=1e-15)
    np.testing.assert_allclose(
        capital_multiplier(_run("fixed").returns, "full").to_numpy(), FULL_M, rtol=1e-15
    )
    # the target decided at t's close is sized with the multiplier known then, m_t (no look-ahead)
    expected = TARGETS.shift(1).fillna(0.0).mul(np.r_[1.0, FULL_M[:-1]], axis=0)
    np.testing.assert_allclose(
        full.holdings.to_numpy(), expected.to_numpy(), rtol=1e-15
    )
    assert full.holdings.loc[SESSIONS[4]].tolist() == pytest.approx(
        [1300 * 1.01727739, 2300 * 1.01727739]
    )
    # session 4 by hand: (1200 * 1.031) * 10.89 + (2200 * 1.031) * -5.5 * 2 = -11,477.092
    assert full.portfolio_pnl.tolist() == pytest.approx(
        [0.0, 0.0, 31_000.0, -13_310.0, -11_477.092], abs=1e-8
    )
    assert full.equity.iloc[-1] == pytest.approx(1_006_212.908, abs=1e-6)
    # equity = capital x cumprod(1 + r) but for the one session the fill waits: a position held over
    # t was sized at t-2's close, so each session adds -capital * m_{t-2} * r_{t-1} * r_t
    delay = CAPITAL * np.cumsum(
        np.r_[1.0, 1.0, FULL_M[:-2]] * np.r_[0.0, FIXED_RETURNS[:-1]] * FIXED_RETURNS
    )
    np.testing.assert_allclose(
        full.equity.to_numpy(), CAPITAL * FULL_M - delay, rtol=1e-13
    )
    assert CAPITAL * FULL_M[-1] == pytest.approx(1_005_953.06, abs=0.01) and delay[
        -1
    ] == pytest.approx(-259.85, abs=0.01)
    # returns are on the capital at risk: the capital after the previous session's close
    np.testing.assert_allclose(
        full.capital_path.to_numpy(), CAPITAL * np.r_[1.0, FULL_M[:-1]], rtol=1e-15
    )
    assert full.returns.iloc[-1] == pytest.approx(
        -11_477.092 / (CAPITAL * 1.01727739), rel=1e-8
    )
    assert full.capital_label() == "compounded (full) from 1,000,000 to 1,017,277"


def test_full_compounding_with_whole_units_rounds_as_sizing_does_and_stays_within_the_rounding():
    full = _run("full", whole_units=True)
    exact = _run("full")
    # 1200 * 1.031 = 1237.2 -> 1237, 2200 * 1.031 = 2268.2 -> 2268; 1300 * 1.0172774 = 1322.46 -> 1322,
    # 2300 * 1.0172774 = 2339.74 -> 2340 (half to even, as sizing's np.round)
    assert full.holdings.loc[SESSIONS[3]].tolist() == [1237.0, 2268.0]
    assert full.holdings.loc[SESSIONS[4]].tolist() == [1322.0, 2340.0]
    np.testing.assert_array_equal(
        full.holdings.to_numpy(), np.round(exact.holdings.to_numpy())
    )
    # each unit rounded off (at most 0.5 per instrument) misses at most half a session's price move
    bound = (
        (0.5 * PRICES.diff().abs().fillna(0.0) * POINT_SIZE)
        .sum(axis=1)
        .cumsum()
        .to_numpy()
    )
    gap = np.abs(full.equity.to_numpy() - exact.equity.to_numpy())
    assert (gap <= bound + 1e-9).all() and gap[
        -1
    ] > 0  # rounding did change the numbers


def test_compounding_resizes_only_when_the_fixed_target_trades():
    held = TARGETS.copy()
    held.loc[SESSIONS[3] :, "B"] = 2200.0  # B's target stays from session 2 on
    full = _run("full", held)
    m = capital_multiplier(_run("fixed", held).returns, "full")
    assert m.iloc[2] == pytest.approx(1.031) and m.iloc[3] != m.iloc[2]
    # B was resized at session 2 (2200 * m_2) and is held, though the multiplier moved
    assert full.holdings["B"].iloc[3:].tolist() == pytest.approx(
        [2200.0 * 1.031] * 2, rel=1e-15
    )
    assert full.trades["B"].iloc[4] == 0.0
    assert full.holdings["A"].iloc[4] == pytest.approx(1300.0 * m.iloc[3], rel=1e-15)


def test_half_compounding_lets_losses_cut_the_capital_but_never_lifts_it_above_the_start():
    half = _run("half")
    # m: 1, 1, min(1, 1.031) = 1, 0.98669, 0.98669 * (1 - 0.011132)
    expected_m = [1.0, 1.0, 1.0, 0.98669, 0.98669 * (1 - 0.011132)]
    m = capital_multiplier(_run("fixed").returns, "half")
    np.testing.assert_allclose(m.to_numpy(), expected_m, rtol=1e-12)
    np.testing.assert_allclose(
        half.capital_path.to_numpy(), CAPITAL * np.r_[1.0, expected_m[:-1]], rtol=1e-12
    )
    # the gain of session 2 did not lift the positions; the loss of session 3 cut them
    np.testing.assert_allclose(
        half.holdings.iloc[3].to_numpy(), [1200.0, 2200.0], rtol=1e-15
    )
    np.testing.assert_allclose(
        half.holdings.iloc[4].to_numpy(), [1300 * 0.98669, 2300 * 0.98669], rtol=1e-12
    )


def test_half_multiplier_solves_its_recursion_and_stays_at_or_below_one():
    rng = np.random.default_rng(3)
    returns = pd.Series(
        rng.normal(0.0005, 0.02, 2000), index=pd.bdate_range("2010-01-01", periods=2000)
    )
    half = capital_multiplier(returns, "half")
    m, expected = 1.0, []
    for r in returns:  # pysystemtrade's half_compounding loop, on the capital at risk
        m = min(1.0, m * (1.0 + r))
        expected.append(m)
    np.testing.assert_allclose(half.to_numpy(), expected, rtol=1e-9)
    assert (
        half.max() <= 1.0 and half.min() < 0.9
    )  # it did lose, and never compounded gains above the start
    full = capital_multiplier(returns, "full")
    assert full.max() > 1.0  # the same returns do lift a fully compounded capital
    assert (capital_multiplier(returns, "fixed") == 1.0).all()
    # a session that loses everything leaves nothing to trade with
    ruin = capital_multiplier(pd.Series([0.1, -1.5, 0.2]), "full")
    assert ruin.tolist() == [pytest.approx(1.1), 0.0, 0.0]


def test_a_long_backtest_half_never_has_more_capital_than_it_started_with():
    rng = np.random.default_rng(11)
    idx = pd.bdate_range("2012-01-02", periods=800, name="session")
    prices = pd.DataFrame(
        100 * np.exp(np.cumsum(rng.normal(0.0004, 0.012, (800, 2)), axis=0)),
        idx,
        ["A", "B"],
    )
    targets = pd.DataFrame(np.round(rng.normal(400, 150, (800, 2))), idx, ["A", "B"])
    half = simulate(
        targets,
        prices,
        POINT_SIZE,
        FREE,
        CAPITAL,
        capital_method="half",
        whole_units=True,
    )
    full = simulate(
        targets,
        prices,
        POINT_SIZE,
        FREE,
        CAPITAL,
        capital_method="full",
        whole_units=True,
    )
    assert (half.capital_path <= CAPITAL).all() and half.capital_path.min() < CAPITAL
    assert full.capital_path.max() > CAPITAL
    assert (half.holdings.to_numpy() == np.round(half.holdings.to_numpy())).all()


def test_options_apply_to_the_compounded_run():
    costs = {"A": CostModel(slippage=0.05), "B": CostModel(commission_per_unit=0.01)}
    full = _run("full", costs=costs, max_gross_exposure=0.25)
    fixed = _run("fixed", costs=costs, max_gross_exposure=0.25)
    # the exposure limit cut the fixed targets; compounding scaled what the limit left
    assert (
        fixed.holdings.abs().sum(axis=1) < TARGETS.shift(1).fillna(0).sum(axis=1)
    ).any()
    m = capital_multiplier(fixed.returns, "full").shift(1, fill_value=1.0)
    np.testing.assert_allclose(
        full.holdings.to_numpy(), fixed.holdings.mul(m, axis=0).to_numpy(), rtol=1e-12
    )
    assert m.iloc[-1] != 1.0
    assert full.costs.to_numpy().sum() > 0


def test_unknown_method_is_refused():
    with pytest.raises(BacktestInputError, match="capital_method must be one of"):
        _run("double")
    with pytest.raises(BacktestInputError, match="different session indexes"):
        compounded_positions(TARGETS, pd.Series(1.0, index=SESSIONS[1:]))


def test_the_configuration_chooses_the_method():
    one = [Instrument(symbol="A")]
    cfg = PipelineConfig(instruments=one, backtest={"capital_method": "half"})
    assert simulation_options(cfg)["capital_method"] == "half"
    assert (
        simulation_options(PipelineConfig(instruments=one))["capital_method"] == "fixed"
    )
    assert (
        simulation_options(load_config())["capital_method"] == "fixed"
    )  # the shipped default
    with pytest.raises(ValueError, match="capital_method"):
        PipelineConfig(instruments=one, backtest={"capital_method": "kelly"})


def _report(tmp_path, method: str):
    from pipeline.cli.backtest import _print_summary

    run = BacktestRun(
        "compound",
        _run(method),
        {"A": "equity", "B": "future"},
        POINT_SIZE,
        parameters={},
        start=SESSIONS[0],
    )
    folder = write_results(run, tmp_path / method)
    return folder, json.loads((folder / "summary.json").read_text()), _print_summary


def test_summary_report_and_cli_output_name_the_method(tmp_path, capsys):
    folder, summary, print_summary = _report(tmp_path, "full")
    label = summary["basis"]["capital"]
    assert label == "compounded (full) from 1,000,000 to 1,017,277"
    assert f"<b>Capital</b> {label}" in (folder / "report.html").read_text()
    curve = pd.read_csv(folder / "equity_curve.csv", index_col="session")
    assert curve["capital"].iloc[0] == CAPITAL and curve["capital"].iloc[
        -1
    ] == pytest.approx(1_017_277.39, abs=0.01)
    # the P&L is the account's money, not the returns times the starting capital
    assert summary["performance"]["values"]["pnl_net"] == pytest.approx(
        6_212.908, abs=1e-6
    )
    print_summary(folder)
    assert f"capital: {label}" in capsys.readouterr().out

    fixed_folder, fixed_summary, _ = _report(tmp_path, "fixed")
    assert fixed_summary["basis"]["capital"] == "fixed 1,000,000"
    assert "capital" not in pd.read_csv(fixed_folder / "equity_curve.csv").columns
    print_summary(fixed_folder)
    assert "capital: fixed 1,000,000" in capsys.readouterr().out


def test_the_backtest_command_compounds_when_configured(tmp_path):
    config = write_config(
        tmp_path, symbols=["KO", "XOM"], backtest={"capital_method": "full"}
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "TRADING_PIPELINE_CONFIG": str(config),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "backtest",
            "--start",
            "2019-01-02",
            "--end",
            "2020-06-30",
            "--out",
            str(tmp_path / "out"),
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "capital: compounded (full) from 1,000,000 to " in done.stdout
    summary = json.loads(next((tmp_path / "out").glob("*/summary.json")).read_text())
    assert summary["basis"]["capital"].startswith("compounded (full) from 1,000,000")


def test_the_report_shows_turnover_as_times_a_year_not_a_percentage():
    from pipeline.research.tearsheet import _fmt

    assert _fmt("annual_turnover", 63.3173) == "63.3x a year"
    assert _fmt("annual_cost_drag", 0.0123) == "1.23%"
