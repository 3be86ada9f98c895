"""Tests of pipeline.research.metrics against hand computations on short series."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from pipeline.research.metrics import METRIC_NAMES, performance_metrics

# The worked example: five sessions, periods_per_year = 256.
#   mean = (0.01 - 0.02 + 0.03 + 0 - 0.01) / 5 = 0.002
#   deviations 0.008, -0.022, 0.028, -0.002, -0.012; squares sum to 0.00148
#   var (ddof=1) = 0.00148 / 4 = 0.00037, std = sqrt(0.00037) = 0.0192353841
#   wealth 1.01, 0.9898, 1.019494, 1.019494, 1.00929906
RETURNS = pd.Series(
    [0.01, -0.02, 0.03, 0.0, -0.01],
    index=pd.DatetimeIndex(pd.bdate_range("2024-01-01", periods=5), name="session"),
)
STD = math.sqrt(0.00037)


@pytest.fixture(scope="module")
def m() -> dict[str, float]:
    return performance_metrics(RETURNS, vol_target=0.25)


def test_total_return_is_compounded(m):
    # 1.01 * 0.98 * 1.03 * 1.00 * 0.99 - 1 = 0.00929906
    assert m["total_return"] == pytest.approx(0.00929906, abs=1e-12)


def test_cagr_compounds_to_a_256_session_year(m):
    # 1.00929906 ** (256 / 5) - 1 = 0.6062653...
    assert m["cagr"] == pytest.approx(1.00929906 ** (256 / 5) - 1, rel=1e-12)
    assert m["cagr"] == pytest.approx(0.6062653, abs=1e-6)


def test_annual_return_is_mean_times_256(m):
    # 0.002 * 256 = 0.512
    assert m["annual_return"] == pytest.approx(0.512, rel=1e-12)


def test_annual_vol_is_sample_std_times_16(m):
    # 0.0192353841 * 16 = 0.3077661
    assert m["annual_vol"] == pytest.approx(STD * 16, rel=1e-12)
    assert m["annual_vol"] == pytest.approx(0.3077661, abs=1e-7)


def test_sharpe_is_mean_over_std_times_16(m):
    # 0.002 / 0.0192353841 * 16 = 1.6636008
    assert m["sharpe"] == pytest.approx(1.6636008, abs=1e-7)


def test_sortino_uses_downside_deviation_over_all_sessions(m):
    # min(r, 0) = [0, -0.02, 0, 0, -0.01]; mean of squares = 0.0005 / 5 = 0.0001; sqrt = 0.01.
    # sortino = 0.512 / (0.01 * 16) = 3.2
    assert m["sortino"] == pytest.approx(3.2, rel=1e-12)


def test_max_drawdown_of_compounded_curve(m):
    # Peak 1.01 after session 1, trough 0.9898: 0.9898 / 1.01 - 1 = -0.02 (the later dip is -0.01).
    assert m["max_drawdown"] == pytest.approx(-0.02, rel=1e-12)


def test_max_drawdown_duration_of_worked_example(m):
    # Below the peak only on session 2 and session 5 (session 4 equals its peak): longest run 1.
    assert m["max_drawdown_duration"] == 1


def test_max_drawdown_duration_counts_until_recovery():
    # wealth 1.1, 0.99 (under), 1.188 (peak), 1.17612 (under), 1.1643588 (under),
    # 1.2225767 (new high)
    r = pd.Series([0.1, -0.1, 0.2, -0.01, -0.01, 0.05])
    assert performance_metrics(r)["max_drawdown_duration"] == 2


def test_max_drawdown_duration_counts_an_open_drawdown_to_the_end():
    # wealth 1.1, then 0.99, 1.0395, 1.091475, 1.091475: four sessions below 1.1, never recovered.
    r = pd.Series([0.1, -0.1, 0.05, 0.05, 0.0])
    assert performance_metrics(r)["max_drawdown_duration"] == 4


def test_calmar_is_cagr_over_max_drawdown(m):
    # 0.6062653 / 0.02 = 30.313266
    assert m["calmar"] == pytest.approx(30.313266, abs=1e-5)


def test_win_rate_ignores_flat_sessions(m):
    # 2 positive of 4 non-zero sessions.
    assert m["win_rate"] == 0.5


def test_profit_factor(m):
    # gains 0.01 + 0.03 = 0.04, losses 0.02 + 0.01 = 0.03: 4 / 3.
    assert m["profit_factor"] == pytest.approx(4 / 3, rel=1e-12)


def test_skew_is_bias_adjusted(m):
    # m2 = 0.00148 / 5 = 2.96e-4, m3 = 1.008e-5 / 5 = 2.016e-6, g1 = m3 / m2**1.5 = 0.395873,
    # G1 = sqrt(5 * 4) / 3 * g1 = 0.590129 (= scipy.stats.skew(bias=False)).
    assert m["skew"] == pytest.approx(0.590129, abs=1e-6)
    assert m["skew"] == pytest.approx(scipy.stats.skew(RETURNS, bias=False), rel=1e-12)


def test_realised_vol_vs_target(m):
    # 0.3077661 / 0.25 = 1.2310646
    assert m["realised_vol_vs_target"] == pytest.approx(1.2310646, abs=1e-7)


def test_realised_vol_vs_target_nan_without_target():
    assert math.isnan(performance_metrics(RETURNS)["realised_vol_vs_target"])


def test_periods_per_year_changes_annualisation():
    # 252-day year: annual_vol = std * sqrt(252).
    got = performance_metrics(RETURNS, periods_per_year=252)
    assert got["annual_vol"] == pytest.approx(STD * math.sqrt(252), rel=1e-12)


def test_constant_return_cagr_over_exactly_one_year():
    # 256 sessions of +0.1 %: one year, so cagr == total_return == 1.001**256 - 1.
    got = performance_metrics(pd.Series(np.full(256, 0.001)))
    assert got["cagr"] == pytest.approx(1.001**256 - 1, rel=1e-12)
    assert got["total_return"] == pytest.approx(got["cagr"], rel=1e-12)


@pytest.mark.parametrize("returns", [pd.Series([], dtype=float), pd.Series(np.zeros(10))])
def test_empty_or_all_zero_returns_give_nan(returns):
    got = performance_metrics(returns, vol_target=0.2)
    assert set(got) == set(METRIC_NAMES)
    assert all(math.isnan(v) for v in got.values())


def test_nan_returns_are_dropped():
    with_gaps = pd.concat([RETURNS, pd.Series([np.nan])], ignore_index=True)
    a = performance_metrics(RETURNS)
    b = performance_metrics(with_gaps)
    assert a == pytest.approx(b, nan_ok=True)


def test_ratios_without_losses_are_nan_not_inf():
    got = performance_metrics(pd.Series([0.01, 0.02, 0.0]))
    assert math.isnan(got["sortino"])
    assert math.isnan(got["profit_factor"])
    assert math.isnan(got["calmar"])  # no drawdown
    assert got["max_drawdown"] == 0.0


def test_wiped_out_account_has_cagr_minus_one():
    got = performance_metrics(pd.Series([0.1, -1.0, 0.0]))
    assert got["cagr"] == -1.0
    assert got["max_drawdown"] == pytest.approx(-1.0)


def test_fixed_capital_level_statistics_are_those_of_the_additive_equity_curve():
    # returns on a fixed capital of 1,000: the equity the report draws is capital + cumsum(pnl)
    pnl = pd.Series([100.0, -300.0, 50.0, 400.0, -80.0], index=pd.bdate_range("2024-01-01", periods=5))
    capital = 1000.0
    equity = capital + pnl.cumsum()  # 1100, 800, 850, 1250, 1170
    m = performance_metrics(pnl / capital, compounded=False, periods_per_year=256)
    assert m["total_return"] == pytest.approx(equity.iloc[-1] / capital - 1.0)  # 0.17
    assert m["cagr"] == pytest.approx((1170 / 1000) ** (256 / 5) - 1.0)
    assert m["max_drawdown"] == pytest.approx(800 / 1100 - 1.0)  # the curve's own deepest fall
    # compounding the same returns tells another story: (1.1)(0.7)(1.05)(1.4)(0.92) - 1
    assert performance_metrics(pnl / capital)["total_return"] == pytest.approx(1.1 * 0.7 * 1.05 * 1.4 * 0.92 - 1)
    # the return statistics do not depend on it
    assert m["sharpe"] == pytest.approx(performance_metrics(pnl / capital)["sharpe"])
