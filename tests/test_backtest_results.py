"""Tests of pipeline.research.results: drawdown and monthly tables, the results folder, comparisons."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from pipeline.config import CostModel
from pipeline.research.analytics import monthly_returns, reconstruct_trades
from pipeline.research.backtest import simulate
from pipeline.research.metrics import performance_metrics
from pipeline.research.results import (
    RESULT_FILES,
    BacktestRun,
    ResultsError,
    drawdown_periods,
    write_comparison,
    write_results,
)


def sessions(n: int, start: str = "2024-01-01") -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.bdate_range(start, periods=n), name="session")


def test_drawdown_periods_by_hand():
    # peaks 100 110 110 110 111 111 111: two drawdowns, the second still open.
    equity = pd.Series([100, 110, 99, 105, 111, 108, 108.0], index=sessions(7))
    dd = drawdown_periods(equity, 100.0)
    first = dd.iloc[0]  # deepest first: 99 / 110 - 1 = -10 %
    assert first["depth"] == pytest.approx(-0.1) and first["depth_money"] == pytest.approx(-11)
    assert (first["peak_session"], first["trough_session"], first["recovery_session"]) == (
        equity.index[1], equity.index[2], equity.index[4])
    assert (first["sessions_to_trough"], first["sessions_underwater"]) == (1, 2)
    second = dd.iloc[1]
    assert second["depth"] == pytest.approx(108 / 111 - 1)
    assert pd.isna(second["recovery_session"]) and second["sessions_underwater"] == 2


def test_drawdown_from_starting_capital_has_no_peak_session():
    dd = drawdown_periods(pd.Series([95.0, 101.0], index=sessions(2)), 100.0)
    assert pd.isna(dd.loc[0, "peak_session"]) and dd.loc[0, "depth"] == pytest.approx(-0.05)


def test_no_drawdown_gives_an_empty_table():
    assert drawdown_periods(pd.Series([100.0, 101.0], index=sessions(2)), 100.0).empty


def test_monthly_returns_sum_fixed_capital_returns_by_month():
    index = pd.DatetimeIndex(["2024-01-30", "2024-01-31", "2024-02-01", "2025-03-03"], name="session")
    table = monthly_returns(pd.Series([0.01, 0.02, -0.005, 0.004], index=index))
    assert table.loc[2024, 1] == pytest.approx(0.03) and table.loc[2024, 2] == pytest.approx(-0.005)
    assert table.loc[2025, 3] == pytest.approx(0.004) and np.isnan(table.loc[2024, 3])
    assert list(table.columns) == list(range(1, 13))


def demo_run(name: str = "trend demo", n: int = 600, seed: int = 1) -> BacktestRun:
    rng = np.random.default_rng(seed)
    cols = ["ES", "ZN", "EURUSD"]
    index = sessions(n, "2019-06-03")
    prices = pd.DataFrame(100 + np.cumsum(rng.normal(0, 1, (n, 3)), axis=0), index, cols)
    positions = np.sign(prices.diff(10)).fillna(0.0) * 5
    ps = pd.Series({"ES": 50.0, "ZN": 1000.0, "EURUSD": 1.0})
    res = simulate(positions, prices, ps, {c: CostModel(slippage=0.25) for c in cols}, 1e6, borrow_rate=0.02)
    return BacktestRun(name, res, {"ES": "equity", "ZN": "bond", "EURUSD": "fx"}, ps,
                       {"capital": 1e6, "note": float("nan")}, sample="in-sample",
                       sample_note="fixed parameters", vol_target=0.25)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_results(demo_run(), tmp_path_factory.mktemp("results"),
                         when=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))


def test_results_folder_is_named_by_time_and_strategy_and_holds_every_file(folder):
    assert folder.name == "20240506-070809_trend-demo"
    assert sorted(p.name for p in folder.iterdir()) == sorted(RESULT_FILES)


def test_a_second_run_in_the_same_second_does_not_overwrite(folder):
    again = write_results(demo_run(), folder.parent, when=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    assert again.name == "20240506-070809_trend-demo-2"


def test_summary_is_strict_json_and_every_section_states_its_basis(folder):
    def no_nan(token):
        raise AssertionError(f"summary.json holds {token}")

    summary = json.loads((folder / "summary.json").read_text(), parse_constant=no_nan)
    for section in ("performance", "risk", "trades", "time_analysis", "attribution"):
        basis = summary[section]["basis"]
        assert basis["in_or_out_of_sample"] == "in-sample"
        assert "sessions" in basis["sample"] and "net of trading costs" in basis["costs"]
    assert summary["run"]["id"] == folder.name


def test_summary_statistics_match_the_metrics_of_the_reported_returns(folder):
    run = demo_run()
    start = run.window_start()
    summary = json.loads((folder / "summary.json").read_text())
    expected = performance_metrics(run.result.returns.loc[start:], vol_target=0.25)
    assert summary["performance"]["values"]["sharpe"] == pytest.approx(expected["sharpe"], abs=1e-12)
    # costs and borrow in the summary are the simulation's totals over the window
    assert summary["performance"]["values"]["costs"] == pytest.approx(run.result.costs.loc[start:].to_numpy().sum())
    assert summary["performance"]["values"]["borrow"] == pytest.approx(run.result.borrow.loc[start:].to_numpy().sum())
    assert summary["data_range"]["reported_from"] == str(start.date())


def test_equity_curve_csv_reproduces_the_simulation(folder):
    run = demo_run()
    curve = pd.read_csv(folder / "equity_curve.csv", index_col="session", parse_dates=["session"])
    expected = run.result.equity.loc[run.window_start():]
    np.testing.assert_allclose(curve["equity"], expected, rtol=0, atol=1e-6)
    daily = pd.read_csv(folder / "daily_pnl.csv")
    # per-instrument net P&L (borrow included) in daily_pnl.csv adds up to the equity change
    before = run.result.equity.loc[:run.window_start()].iloc[-2]
    assert daily["pnl_net"].sum() == pytest.approx(expected.iloc[-1] - before, abs=1e-6)


def test_trades_csv_holds_the_reconstructed_round_trips(folder):
    run = demo_run()
    expected = reconstruct_trades(run.result.holdings, run.result.prices, run.point_size, pnl=run.result.pnl_gross)
    trades = pd.read_csv(folder / "trades.csv")
    assert len(trades) == len(expected)
    np.testing.assert_allclose(trades["pnl"].sum(), expected["pnl"].sum())


def test_report_is_self_contained(folder):
    page = (folder / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert page.count('class="plotly-graph-div"') == 7


def test_comparison_puts_runs_side_by_side(folder, tmp_path):
    other = write_results(demo_run("other", seed=2), tmp_path)
    out = write_comparison([folder, other], tmp_path)
    page = out.read_text()
    assert out.name == "compare.html" and folder.name in page and other.name in page
    assert page.count('class="plotly-graph-div"') == 3


def test_comparison_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ResultsError, match="no summary.json"):
        write_comparison([tmp_path], tmp_path / "c.html")


def test_a_name_without_letters_is_refused(tmp_path):
    with pytest.raises(ResultsError, match="no letter or digit"):
        write_results(demo_run("///"), tmp_path)


def test_the_headline_agrees_with_the_equity_curve_it_draws(folder):
    # fixed capital: total return, CAGR and max drawdown are those of the equity the report draws
    # (capital + cumsum(pnl)), not of the returns compounded as if reinvested
    run = demo_run()
    perf = json.loads((folder / "summary.json").read_text())["performance"]["values"]
    start, capital = run.window_start(), 1e6
    equity = run.result.equity
    before = equity.loc[:start].iloc[-2] if equity.index[0] < start else capital
    wealth = 1.0 + (equity.loc[start:] - before) / capital  # the drawn curve over the reported window
    assert perf["total_return"] == pytest.approx(wealth.iloc[-1] - 1.0, abs=1e-12)
    assert perf["cagr"] == pytest.approx(wealth.iloc[-1] ** (256 / len(wealth)) - 1.0, abs=1e-12)
    assert perf["max_drawdown"] == pytest.approx((wealth / np.maximum(wealth.cummax(), 1.0) - 1.0).min(), abs=1e-12)
    compounded = performance_metrics(run.result.returns.loc[start:])
    assert abs(compounded["total_return"] - perf["total_return"]) > 1e-3  # the two conventions differ here
