"""Tests of pipeline.research.validation, and of pipeline.research.metrics against independent reference formulas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline.adapters.sources import SampleSource
from pipeline.research.metrics import performance_metrics
from pipeline.research.validation import (
    ValidationError,
    annualised_sharpe,
    block_bootstrap_ci,
    block_bootstrap_indices,
    cagr,
    mann_whitney,
    max_drawdown,
    mean_return_ttest,
    monte_carlo_max_drawdown,
    walk_forward,
    walk_forward_splits,
)


def normal_returns(n=1000, mean=0.0005, vol=0.01, seed=42):
    index = pd.DatetimeIndex(pd.bdate_range("2010-01-01", periods=n), name="session")
    return pd.Series(np.random.default_rng(seed).normal(mean, vol, n), index=index)


# --- significance tests -------------------------------------------------------------------------


def test_ttest_by_hand():
    # [1, 2, 3]: mean 2, sample sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3; p from t with 2 dof
    res = mean_return_ttest(pd.Series([1.0, 2.0, 3.0, np.nan]))
    assert res.statistic == pytest.approx(2 * math.sqrt(3))
    assert res.p_value == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2))
    assert (res.n, res.mean) == (3, 2.0)


def test_ttest_needs_two_returns():
    with pytest.raises(ValidationError, match="at least 2"):
        mean_return_ttest([0.01])


def test_mann_whitney_by_hand():
    # every a below every b: U_a = 0; exact two-sided p = 2 / C(6, 3) = 0.1
    res = mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert res.statistic == 0.0
    assert res.p_value == pytest.approx(0.1)
    assert (res.n_a, res.n_b) == (3, 3)


def test_mann_whitney_one_sided():
    res = mann_whitney([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], alternative="greater")
    assert res.statistic == 9.0 and res.p_value == pytest.approx(0.05)  # 1 / C(6, 3)


# --- block bootstrap ----------------------------------------------------------------------------


def test_moving_block_indices_are_runs_of_exactly_block_sessions():
    idx = block_bootstrap_indices(50, 200, 5, np.random.default_rng(0), method="moving")
    assert idx.shape == (200, 50)
    steps = np.diff(idx.reshape(200, 10, 5), axis=2) % 50  # steps inside each block
    assert (steps == 1).all()
    # and the blocks start at different places (not one long run)
    assert ((np.diff(idx, axis=1) % 50) != 1).any()


def test_stationary_indices_have_geometric_blocks_of_the_mean_length():
    idx = block_bootstrap_indices(400, 500, 10, np.random.default_rng(1))
    assert idx.min() >= 0 and idx.max() < 400
    breaks = (np.diff(idx, axis=1) % 400) != 1
    # a new block starts with probability 1/10 and is seen as a break unless its random start
    # happens to be the successor (probability 1/400); the standard error here is about 0.0007
    assert breaks.mean() == pytest.approx(0.1 * 399 / 400, abs=0.002)


def test_bootstrap_is_reproducible_with_a_seed():
    r = normal_returns(300)
    a = block_bootstrap_ci(r, n_boot=200, seed=9)
    assert a == block_bootstrap_ci(r, n_boot=200, seed=9)
    assert a != block_bootstrap_ci(r, n_boot=200, seed=10)


def test_bootstrap_sharpe_standard_error_matches_lo_2002_for_iid_returns():
    # Lo (2002): for i.i.d. returns se(SR_daily) = sqrt((1 + SR_daily^2 / 2) / n); annualised x16.
    r = normal_returns(2000, seed=4)
    res = block_bootstrap_ci(r, annualised_sharpe, n_boot=1500, block=1, seed=0)
    sr_daily = r.mean() / r.std(ddof=1)
    expected = math.sqrt((1 + sr_daily**2 / 2) / len(r)) * 16
    assert res.std_error == pytest.approx(expected, rel=0.1)
    assert res.estimate == pytest.approx(performance_metrics(r)["sharpe"], rel=1e-12)


def test_bootstrap_cagr_estimate_is_the_metrics_cagr():
    r = normal_returns(500)
    res = block_bootstrap_ci(r, cagr, n_boot=100, seed=1, method="moving")
    assert res.estimate == pytest.approx(performance_metrics(r)["cagr"], rel=1e-12)
    assert res.lower < res.estimate < res.upper


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    mean=st.floats(-0.002, 0.002),
    vol=st.floats(0.002, 0.03),
    method=st.sampled_from(["stationary", "moving"]),
)
def test_bootstrap_interval_contains_the_sample_sharpe(seed, mean, vol, method):
    r = np.random.default_rng(seed).normal(mean, vol, 500)
    res = block_bootstrap_ci(r, n_boot=300, block=10, seed=seed, method=method)
    assert res.lower <= res.estimate <= res.upper


def test_bootstrap_rejects_a_block_longer_than_the_series():
    with pytest.raises(ValidationError, match="block"):
        block_bootstrap_ci(normal_returns(30), block=31)


def test_monte_carlo_drawdown_of_constant_losses_is_exact():
    # every resample of 100 equal -1 % days is the same path: drawdown 0.99^100 - 1
    q = monte_carlo_max_drawdown(np.full(100, -0.01), n_paths=50, block=5)
    np.testing.assert_allclose(q.to_numpy(), 0.99**100 - 1, rtol=1e-12)


def test_monte_carlo_drawdown_quantiles_are_ordered_and_bracket_the_realised_one():
    r = normal_returns(1000, mean=0.0003)
    q = monte_carlo_max_drawdown(r, n_paths=400, block=20, seed=3)
    assert q.index.name == "quantile" and (q <= 0).all()
    assert q.is_monotonic_increasing
    realised = performance_metrics(r)["max_drawdown"]
    assert q.loc[0.01] < realised < q.loc[0.95]


def test_max_drawdown_helper_matches_metrics():
    r = normal_returns(700, mean=-0.0002, seed=8)
    assert float(max_drawdown(r.to_numpy())) == pytest.approx(performance_metrics(r)["max_drawdown"], rel=1e-12)
    # a first-day loss counts against the starting wealth of 1
    assert float(max_drawdown(np.array([-0.1, 0.05]))) == pytest.approx(-0.1)


# --- walk-forward -------------------------------------------------------------------------------


def test_walk_forward_splits_roll_without_overlap():
    index = pd.RangeIndex(23)
    splits = walk_forward_splits(index, train_len=10, test_len=5)
    assert [(list(tr)[0], list(tr)[-1], list(te)[0], list(te)[-1]) for tr, te in splits] == [
        (0, 9, 10, 14),
        (5, 14, 15, 19),
        (10, 19, 20, 22),  # partial last test window
    ]
    tests = np.concatenate([te.to_numpy() for _, te in splits])
    assert len(tests) == len(set(tests))  # every test session once
    assert all(tr.max() < te.min() for tr, te in splits)


def test_walk_forward_splits_expanding_and_without_partial():
    splits = walk_forward_splits(pd.RangeIndex(23), 10, 5, expanding=True, allow_partial=False)
    assert [(tr[0], len(tr), te[0], len(te)) for tr, te in splits] == [(0, 10, 10, 5), (0, 15, 15, 5)]


def test_walk_forward_splits_reject_overlapping_tests():
    with pytest.raises(ValidationError, match="overlap"):
        walk_forward_splits(pd.RangeIndex(50), 10, 5, stride=3)


def _toy_data(n=600, seed=2):
    """A raw forecast and the next session's return it partly predicts (both known at t)."""
    rng = np.random.default_rng(seed)
    index = pd.DatetimeIndex(pd.bdate_range("2012-01-02", periods=n), name="session")
    raw = pd.Series(rng.normal(0, 1, n), index=index) * np.linspace(0.5, 3.0, n)  # drifting scale
    nxt = 0.001 * np.sign(raw) + rng.normal(0, 0.01, n)
    return pd.DataFrame({"raw": raw, "next_return": nxt}, index=index)


def fit_scalar(train: pd.DataFrame) -> float:
    """Carver's forecast scalar: makes the mean |forecast| over the training window 10."""
    return 10.0 / train["raw"].abs().mean()


def apply_scalar(scalar: float, test: pd.DataFrame) -> pd.Series:
    forecast = (scalar * test["raw"]).clip(-20, 20)
    return forecast / 10.0 * test["next_return"]


def test_walk_forward_fits_each_fold_on_its_training_window_only():
    data = _toy_data()
    res = walk_forward(data, fit_scalar, apply_scalar, train_len=200, test_len=100)
    assert len(res.params) == 4
    for k, (start, end) in enumerate(zip(res.folds["train_start"], res.folds["train_end"])):
        # independent: the scalar recomputed from exactly the train rows
        expected = 10.0 / data.loc[start:end, "raw"].abs().mean()
        assert res.params[k] == pytest.approx(expected, rel=1e-14)
        assert res.folds.loc[k, "train_end"] < res.folds.loc[k, "test_start"]
    # in sample the scaled forecast averages 10 in absolute value; out of sample it does not
    # (the forecast's scale drifts up), which is what an honest walk-forward must show
    first_test = data.loc[res.folds.loc[0, "test_start"] : res.folds.loc[0, "test_end"], "raw"]
    assert (res.params[0] * first_test).abs().mean() > 11


def test_walk_forward_parameters_ignore_data_after_the_training_window():
    data = _toy_data()
    res = walk_forward(data, fit_scalar, apply_scalar, 200, 100)
    changed = data.copy()
    cut = res.folds.loc[1, "train_end"]
    changed.loc[changed.index > cut, "raw"] *= 100.0
    res2 = walk_forward(changed, fit_scalar, apply_scalar, 200, 100)
    assert res2.params[:2] == res.params[:2]
    assert res2.params[2] != res.params[2]
    pd.testing.assert_series_equal(res2.returns[: res.folds.loc[0, "test_end"]], res.returns[: res.folds.loc[0, "test_end"]])


def test_walk_forward_stitches_out_of_sample_returns_and_reports_folds():
    data = _toy_data()
    res = walk_forward(data, fit_scalar, apply_scalar, 200, 100)
    assert res.returns.index.equals(data.index[200:])
    fold2 = res.returns[res.folds.loc[2, "test_start"] : res.folds.loc[2, "test_end"]]
    assert res.folds.loc[2, "sharpe"] == pytest.approx(fold2.mean() / fold2.std(ddof=1) * 16)
    assert res.folds.loc[2, "n_test"] == 100 and res.folds.loc[2, "n_train"] == 200


def test_walk_forward_rejects_returns_outside_the_test_window():
    data = _toy_data()
    leaky = lambda p, test: pd.Series(0.0, index=data.index)  # noqa: E731 - returns every session
    with pytest.raises(ValidationError, match="outside fold 0"):
        walk_forward(data, fit_scalar, leaky, 200, 100)


# --- pipeline.research.metrics against independent reference formulas -------------------------------------
#
# Reference conventions (empyrical 0.5 / quantstats 0.0.6x, risk-free rate 0):
#   Sharpe  = mean(r) / std(r, ddof=1) * sqrt(ppy)                (both libraries)
#   Sortino = mean(r) * ppy / (sqrt(sum(min(r,0)^2) / n) * sqrt(ppy))  (both libraries)
#   MaxDD   = min over t of W_t / max(W_0..W_t) - 1, W_0 = 1 included  (empyrical; quantstats
#             omits W_0, which only matters when the first day is a loss from the start)
#   CAGR    = W_n ** (ppy / n) - 1                                 (empyrical; quantstats uses
#             calendar days / 365, a different convention not tested here)
# written with plain Python loops, independently of pipeline.research.metrics.


def _spx_returns() -> pd.Series:
    try:
        bars = SampleSource().fetch(["SPX"], pd.Timestamp("2000-01-01"), pd.Timestamp("2022-12-31"))
    except Exception as exc:  # the bundled sample is part of the package; skip if stripped
        pytest.skip(f"bundled sample data unavailable: {exc}")
    close = bars.set_index("session")["close"].sort_index()
    return close.pct_change().dropna()


def _reference(r: list[float], ppy: int) -> dict[str, float]:
    n = len(r)
    mean = sum(r) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / n)
    wealth, peak, worst = 1.0, 1.0, 0.0
    for x in r:
        wealth *= 1.0 + x
        peak = max(peak, wealth)
        worst = min(worst, wealth / peak - 1.0)
    return {
        "sharpe": mean / sd * math.sqrt(ppy),
        "sortino": mean * ppy / (downside * math.sqrt(ppy)),
        "max_drawdown": worst,
        "cagr": wealth ** (ppy / n) - 1.0,
    }


@pytest.mark.parametrize("ppy", [252, 256])
def test_metrics_match_empyrical_conventions_on_real_spx_returns(ppy):
    r = _spx_returns()
    assert len(r) > 5000  # 2000-2022 daily closes
    got = performance_metrics(r, periods_per_year=ppy)
    want = _reference(r.tolist(), ppy)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    # sanity of the data itself: the 2007-09 drawdown of the S&P 500 was about -57 %
    assert want["max_drawdown"] == pytest.approx(-0.568, abs=0.01)
