"""Kelly, mean-variance and Black-Litterman instrument weights, and the efficient frontier.

Closed forms computed by hand (the numbers are in the tests), skfolio's results against textbook
formulas, the month-end estimation against the same optimiser run on one window, and the daily job
on the five-instrument sample with each method.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline.config import (
    BlackLittermanConfig,
    KellyConfig,
    MeanVarianceConfig,
    OptimiserConfig,
    PortfolioConfig,
)
from pipeline.portfolio.instrument_weights import (
    WeightsError,
    estimate_instrument_weights,
    last_window_frontier,
)
from pipeline.portfolio.optimisers import (
    OptimiserError,
    annualised_moments,
    applicable_views,
    black_litterman_moments,
    efficient_frontier,
    kelly_fractions,
    kelly_weights,
    mean_variance_weights,
)

AB = pd.Index(["A", "B"], name="instrument")
ABC = pd.Index(["A", "B", "C"], name="instrument")
# Two assets: vols 20% and 30%, covariance 0.01 (correlation 1/6).
COV2 = pd.DataFrame([[0.04, 0.01], [0.01, 0.09]], index=AB, columns=AB)
MU2 = pd.Series([0.06, 0.08], index=AB)
# Σ⁻¹ = [[0.09, -0.01], [-0.01, 0.04]] / 0.0035 (det = 0.0036 - 0.0001), so
# Σ⁻¹μ = [0.0054 - 0.0008, -0.0006 + 0.0032] / 0.0035 = [0.0046, 0.0026] / 0.0035.
KELLY2 = np.array([0.0046, 0.0026]) / 0.0035  # [1.3142857, 0.7428571]


# --------------------------------------------------------------------------------------------------
# Kelly
# --------------------------------------------------------------------------------------------------


def test_per_instrument_kelly_is_mu_over_variance():
    # Off-diagonal terms ignored: f = [0.06 / 0.04, 0.08 / 0.09]
    f = kelly_fractions(MU2, COV2, joint=False)
    np.testing.assert_allclose(f.to_numpy(), [1.5, 0.08 / 0.09], rtol=1e-14)


def test_joint_kelly_is_the_inverse_covariance_times_mu_two_assets():
    np.testing.assert_allclose(kelly_fractions(MU2, COV2).to_numpy(), KELLY2, rtol=1e-12)


def test_joint_kelly_three_assets_by_hand():
    # C is uncorrelated with A and B: its fraction is 0.02 / 0.01 = 2; A and B as in the 2x2 case.
    cov = pd.DataFrame([[0.04, 0.01, 0.0], [0.01, 0.09, 0.0], [0.0, 0.0, 0.01]], index=ABC, columns=ABC)
    mu = pd.Series([0.06, 0.08, 0.02], index=ABC)
    np.testing.assert_allclose(kelly_fractions(mu, cov).to_numpy(), [*KELLY2, 2.0], rtol=1e-12)


def test_half_kelly_halves_every_fraction():
    np.testing.assert_allclose(kelly_fractions(MU2, COV2, fraction=0.5).to_numpy(), 0.5 * KELLY2, rtol=1e-12)
    np.testing.assert_allclose(kelly_fractions(MU2, COV2, fraction=0.5, joint=False).to_numpy(),
                               [0.75, 0.04 / 0.09], rtol=1e-14)


def test_the_instrument_cap_is_the_box_constrained_optimum():
    # Half Kelly is [0.657, 0.371]; capping A at 0.5, B re-optimises given A:
    # f_B = (0.5 x 0.08 - 0.01 x 0.5) / 0.09 = 0.035 / 0.09 = 0.38889 (not the clipped 0.371)
    f = kelly_fractions(MU2, COV2, fraction=0.5, max_instrument=0.5)
    np.testing.assert_allclose(f.to_numpy(), [0.5, 0.035 / 0.09], atol=1e-10)
    # per instrument the cap is a clip: [min(1.5, 1.0), 0.8889]
    np.testing.assert_allclose(kelly_fractions(MU2, COV2, joint=False, max_instrument=1.0).to_numpy(),
                               [1.0, 0.08 / 0.09], rtol=1e-14)


def test_the_gross_cap_scales_every_fraction_down():
    # Σ|f| = 0.0072 / 0.0035 = 2.057 > 1: f x 1 / 2.057 = [0.0046, 0.0026] / 0.0072
    f = kelly_fractions(MU2, COV2, max_gross=1.0)
    np.testing.assert_allclose(f.to_numpy(), [0.0046 / 0.0072, 0.0026 / 0.0072], rtol=1e-12)
    assert kelly_fractions(MU2, COV2, max_gross=3.0).equals(kelly_fractions(MU2, COV2))  # not binding


def test_long_only_kelly_drops_the_short_and_reoptimises():
    mu = pd.Series([0.06, -0.02], index=AB)
    # unconstrained: [0.0054 + 0.0002, -0.0006 - 0.0008] / 0.0035 = [1.6, -0.4]
    np.testing.assert_allclose(kelly_fractions(mu, COV2).to_numpy(), [1.6, -0.4], rtol=1e-12)
    # long-only: B = 0, A = 0.06 / 0.04 = 1.5 (B's gradient -0.02 - 0.01 x 1.5 < 0 keeps it at 0)
    np.testing.assert_allclose(kelly_fractions(mu, COV2, long_only=True).to_numpy(), [1.5, 0.0], atol=1e-12)


def test_kelly_weights_share_the_risk_budget():
    np.testing.assert_allclose(kelly_weights(pd.Series([1.5, 0.0], index=AB)).to_numpy(), [1.0, 0.0])
    np.testing.assert_allclose(kelly_weights(pd.Series([1.6, -0.4], index=AB)).to_numpy(), [0.8, -0.2])
    assert kelly_weights(pd.Series([0.0, 0.0], index=AB)).tolist() == [0.0, 0.0]  # Kelly holds nothing
    # the fraction alone does not move the weights (it scales every fraction alike)
    half, full = (kelly_weights(kelly_fractions(MU2, COV2, fraction=c)) for c in (0.5, 1.0))
    np.testing.assert_allclose(half.to_numpy(), full.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [({"fraction": 1.5}, "fraction"), ({"max_gross": 0.0}, "max_gross"),
                                           ({"max_instrument": -1.0}, "max_instrument")])
def test_bad_kelly_settings_are_named(kwargs, match):
    with pytest.raises(OptimiserError, match=match):
        kelly_fractions(MU2, COV2, **kwargs)


def test_kelly_needs_a_positive_definite_covariance():
    singular = pd.DataFrame([[0.04, 0.06], [0.06, 0.09]], index=AB, columns=AB)  # correlation 1
    with pytest.raises(OptimiserError, match="not positive definite"):
        kelly_fractions(MU2, singular)


# --------------------------------------------------------------------------------------------------
# Mean-variance (skfolio MeanRisk)
# --------------------------------------------------------------------------------------------------


def test_two_asset_minimum_variance_matches_the_closed_form():
    # vols 20%, 30%, correlation 0.25: s12 = 0.25 x 0.2 x 0.3 = 0.015
    # w1 = (s2² - s12) / (s1² + s2² - 2 s12) = (0.09 - 0.015) / (0.04 + 0.09 - 0.03) = 0.075 / 0.1 = 0.75
    cov = pd.DataFrame([[0.04, 0.015], [0.015, 0.09]], index=AB, columns=AB)
    w = mean_variance_weights(MU2, cov, "min_variance", budget=1.0, min_weight=0.0, max_weight=1.0)
    np.testing.assert_allclose(w.to_numpy(), [0.75, 0.25], atol=1e-4)


def test_maximum_sharpe_is_the_normalised_full_kelly():
    # The tangency portfolio is Σ⁻¹μ / Σ(Σ⁻¹μ) = [0.0046, 0.0026] / 0.0072 when no bound binds.
    w = mean_variance_weights(MU2, COV2, "max_sharpe", budget=1.0, min_weight=0.0, max_weight=1.0)
    np.testing.assert_allclose(w.to_numpy(), [0.0046 / 0.0072, 0.0026 / 0.0072], atol=1e-4)


def test_maximum_utility_by_hand():
    # max μ'w - λ w'Σw with Σw = 1: w = Σ⁻¹(μ - γ1) / (2λ), γ fixing the budget. λ = 2:
    # Σ⁻¹1 = [0.08, 0.03] / 0.0035; Σ⁻¹μ = [0.0046, 0.0026] / 0.0035; 1'Σ⁻¹μ = 2.057143, 1'Σ⁻¹1 = 31.428571
    # γ = (1'Σ⁻¹μ - 2λ) / 1'Σ⁻¹1 = (2.057143 - 4) / 31.428571 = -0.0618182
    # w = (Σ⁻¹μ - γ Σ⁻¹1) / 4 = ([1.3142857, 0.7428571] + 0.0618182 x [22.857143, 8.571429]) / 4 = [0.68182, 0.31818]
    w = mean_variance_weights(MU2, COV2, "max_utility", budget=1.0, min_weight=0.0, max_weight=1.0, risk_aversion=2.0)
    np.testing.assert_allclose(w.to_numpy(), [0.681818, 0.318182], atol=1e-4)


def test_maximum_sharpe_without_a_positive_return_falls_back_to_minimum_variance():
    worst = mean_variance_weights(-MU2, COV2, "max_sharpe", budget=1.0, min_weight=0.0, max_weight=1.0)
    minvar = mean_variance_weights(-MU2, COV2, "min_variance", budget=1.0, min_weight=0.0, max_weight=1.0)
    # minimum variance: (0.09 - 0.01) / (0.04 + 0.09 - 0.02) = 0.08 / 0.11
    np.testing.assert_allclose(worst.to_numpy(), minvar.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(worst.to_numpy(), [0.08 / 0.11, 0.03 / 0.11], atol=1e-4)


def test_bounds_and_budget_are_respected():
    w = mean_variance_weights(MU2, COV2, "max_sharpe", budget=0.8, min_weight=0.0, max_weight=0.45)
    assert w.sum() == pytest.approx(0.8, abs=1e-6)
    assert w.max() <= 0.45 + 1e-9 and w.min() >= 0.0
    np.testing.assert_allclose(w.to_numpy(), [0.45, 0.35], atol=1e-4)  # A would take more: capped


def test_constraints_no_weights_meet_are_named():
    with pytest.raises(OptimiserError, match="no weights of 2 instruments within \\[0, 0.3\\]"):
        mean_variance_weights(MU2, COV2, "min_variance", budget=1.0, min_weight=0.0, max_weight=0.3)
    with pytest.raises(OptimiserError, match="unknown objective"):
        mean_variance_weights(MU2, COV2, "max_return", budget=1.0, min_weight=0.0, max_weight=1.0)


# --------------------------------------------------------------------------------------------------
# Black-Litterman (skfolio BlackLitterman) against He & Litterman (1999)
# --------------------------------------------------------------------------------------------------

COV3 = pd.DataFrame([[0.0400, 0.0120, 0.0060],
                     [0.0120, 0.0900, 0.0135],
                     [0.0060, 0.0135, 0.0225]], index=ABC, columns=ABC)
W_MKT = pd.Series([0.5, 0.3, 0.2], index=ABC)


def _he_litterman(sigma, w, p, q, tau, delta):
    """The He & Litterman (1999) posterior, written out: π = δΣw, Ω = diag(τ PΣP'),
    μ = [(τΣ)⁻¹ + P'Ω⁻¹P]⁻¹ [(τΣ)⁻¹π + P'Ω⁻¹Q], Σ_post = Σ + [(τΣ)⁻¹ + P'Ω⁻¹P]⁻¹."""
    pi = delta * sigma @ w
    omega = np.diag(np.diag(tau * p @ sigma @ p.T))
    ts_inv, om_inv = np.linalg.inv(tau * sigma), np.linalg.inv(omega)
    m = np.linalg.inv(ts_inv + p.T @ om_inv @ p)
    return pi, m @ (ts_inv @ pi + p.T @ om_inv @ q), sigma + m


def test_black_litterman_posterior_matches_he_and_litterman():
    sigma, w = COV3.to_numpy(), W_MKT.to_numpy()
    p = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    q = np.array([0.02, 0.05])
    pi, mu_hl, cov_hl = _he_litterman(sigma, w, p, q, tau=0.05, delta=2.5)
    # π = 2.5 x Σw = 2.5 x [0.0248, 0.0357, 0.01155] = [0.062, 0.08925, 0.028875]
    np.testing.assert_allclose(pi, [0.062, 0.08925, 0.028875], rtol=1e-12)
    mu, cov, prior = black_litterman_moments(COV3, W_MKT, ["A - B == 0.02", "C == 0.05"], tau=0.05, risk_aversion=2.5)
    np.testing.assert_allclose(prior.to_numpy(), pi, rtol=1e-12)
    np.testing.assert_allclose(mu.to_numpy(), mu_hl, rtol=1e-10)
    np.testing.assert_allclose(cov.to_numpy(), cov_hl, rtol=1e-10)
    # the views pull the prior: A - B moves from -0.027 towards +0.02, C from 0.029 towards 0.05
    assert mu["A"] - mu["B"] > pi[0] - pi[1] and mu["C"] > pi[2]


def test_black_litterman_without_views_is_the_prior():
    mu, cov, prior = black_litterman_moments(COV3, W_MKT, [], tau=0.05, risk_aversion=2.5)
    pd.testing.assert_series_equal(mu, prior.rename("mu"))
    np.testing.assert_allclose(cov.to_numpy(), 1.05 * COV3.to_numpy(), rtol=1e-14)


def test_views_are_checked_and_filtered():
    with pytest.raises(OptimiserError, match="'A - Z == 0.1'"):
        black_litterman_moments(COV3, W_MKT, ["A - Z == 0.1"])
    with pytest.raises(OptimiserError, match="'A > 0.1'"):
        black_litterman_moments(COV3, W_MKT, ["A > 0.1"])
    assert applicable_views(["A - B == 0.1", "C == 0.2", "B == 0"], ["A", "B"]) == [0, 2]


# --------------------------------------------------------------------------------------------------
# Efficient frontier
# --------------------------------------------------------------------------------------------------


def test_frontier_runs_from_minimum_variance_up_and_bounds_every_portfolio():
    mu = pd.Series([0.06, 0.08, 0.03], index=ABC)
    erc = pd.Series([0.4, 0.25, 0.35], index=ABC)
    f = efficient_frontier(mu, COV3, points=12, portfolios={"erc": erc})
    line = f.frontier
    assert len(line) == 12 and line["vol"].is_monotonic_increasing and line["expected_return"].is_monotonic_increasing
    minvar = mean_variance_weights(mu, COV3, "min_variance", 1.0, 0.0, 1.0)
    assert line["vol"].iloc[0] == pytest.approx(math.sqrt(minvar @ COV3 @ minvar), rel=1e-3)
    assert line["expected_return"].iloc[-1] == pytest.approx(0.08, abs=1e-6)  # all in B
    # ERC's point: vol sqrt(w'Σw), return μ'w, on or below the frontier at its vol
    e = f.portfolios.loc["erc"]
    assert e["expected_return"] == pytest.approx(0.4 * 0.06 + 0.25 * 0.08 + 0.35 * 0.03)
    assert e["vol"] == pytest.approx(math.sqrt(erc @ COV3 @ erc))
    assert e["expected_return"] <= np.interp(e["vol"], line["vol"], line["expected_return"]) + 1e-9
    np.testing.assert_allclose(f.instruments["vol"].to_numpy(), [0.2, 0.3, 0.15])


# --------------------------------------------------------------------------------------------------
# Month-end estimation
# --------------------------------------------------------------------------------------------------


def _returns(n: int = 700) -> pd.DataFrame:
    """Vol-normalised returns (unit daily vol) with drifts of Sharpe 0.8, 0.3 and -0.2 a year."""
    rng = np.random.default_rng(11)
    chol = np.linalg.cholesky([[1.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 1.0]])
    values = rng.normal(size=(n, 3)) @ chol.T + np.array([0.8, 0.3, -0.2]) / 16
    index = pd.bdate_range("2015-01-01", periods=n, name="session")
    return pd.DataFrame(values, index=index, columns=ABC.copy())


OPT = OptimiserConfig(
    kelly=KellyConfig(fraction=0.5, long_only=True, max_instrument_leverage=0.6),
    mean_variance=MeanVarianceConfig(objective="max_sharpe", budget=0.8, min_weight=0.0, max_weight=0.6),
    black_litterman=BlackLittermanConfig(views=["C - A == 0.5"], reference_weights="equal"),
)


@pytest.mark.parametrize("method", ["kelly", "mean_variance", "black_litterman"])
def test_each_month_end_uses_the_window_before_it_only(method):
    """The last estimate equals the optimiser run directly on the last window's moments
    (μ = 16 x mean, Σ = cov of the vol-normalised returns), and changing later data leaves it alone."""
    r = _returns()
    est = estimate_instrument_weights(r, lookback_sessions=400, min_sessions=100, method=method, optimiser=OPT)
    at = est.weights.index[-2]
    window = r.loc[:at].iloc[-400:]
    mu, cov = annualised_moments(window.mean(), window.cov())
    if method == "kelly":
        expected = kelly_weights(kelly_fractions(mu, cov, fraction=0.5, long_only=True, max_instrument=0.6))
        assert expected.sum() == pytest.approx(1.0)
    else:
        if method == "black_litterman":
            mu, cov, _ = black_litterman_moments(cov, pd.Series(1 / 3, index=ABC), ["C - A == 0.5"])
        expected = mean_variance_weights(mu, cov, "max_sharpe", 0.8, 0.0, 0.6)
    np.testing.assert_allclose(est.weights.loc[at].to_numpy(), expected.to_numpy(), atol=1e-6)
    budget = 1.0 if method == "kelly" else 0.8
    np.testing.assert_allclose(est.weights.sum(axis=1).to_numpy(), budget, atol=1e-6)
    assert (est.weights.to_numpy() >= 0).all()
    changed = r.copy()
    changed.loc[changed.index > at] *= -3.0
    again = estimate_instrument_weights(changed, 400, 100, method=method, optimiser=OPT)
    pd.testing.assert_series_equal(again.weights.loc[at], est.weights.loc[at])


def test_black_litterman_views_move_the_weights_their_way():
    r = _returns()
    plain = OPT.black_litterman.model_copy(update={"views": []})
    no_view = estimate_instrument_weights(r, 400, 100, method="black_litterman",
                                          optimiser=OPT.model_copy(update={"black_litterman": plain}))
    with_view = estimate_instrument_weights(r, 400, 100, method="black_litterman", optimiser=OPT)
    assert with_view.weights["C"].iloc[-1] > no_view.weights["C"].iloc[-1] + 0.05


def test_signed_kelly_weights_and_their_idm():
    """long_only false: the short instrument keeps its negative weight, Σ|w| = 1, and the IDM is
    1/sqrt(|w|'H|w|) with H the signed subsystems' correlation floored at 0."""
    r = _returns()
    opt = OptimiserConfig(kelly=KellyConfig(fraction=1.0, long_only=False))
    est = estimate_instrument_weights(r, 400, 100, method="kelly", optimiser=opt)
    w = est.weights.iloc[-1].to_numpy()
    assert w[2] < 0 < w[0]
    assert np.abs(w).sum() == pytest.approx(1.0)
    corr = r.iloc[-400:].corr().to_numpy()
    s = np.sign(w)
    h = np.maximum(corr * np.outer(s, s), 0.0)
    assert est.idm.iloc[-1] == pytest.approx(1 / math.sqrt(np.abs(w) @ h @ np.abs(w)), rel=1e-9)


def test_an_optimiser_method_needs_its_settings():
    with pytest.raises(WeightsError, match="portfolio.optimiser.kelly"):
        estimate_instrument_weights(_returns(), 400, 100, method="kelly")
    with pytest.raises(WeightsError, match="'A - Z == 1'"):
        bad = OPT.model_copy(update={"black_litterman": BlackLittermanConfig(views=["A - Z == 1"])})
        estimate_instrument_weights(_returns(), 400, 100, method="black_litterman", optimiser=bad)
    with pytest.raises(ValueError, match="needs portfolio.optimiser.black_litterman, portfolio.optimiser.mean_variance"):
        PortfolioConfig(instrument_weights_method="black_litterman")
    with pytest.raises(ValueError, match="min_weight 0.5 is above max_weight 0.4"):
        MeanVarianceConfig(objective="min_variance", budget=1.0, min_weight=0.5, max_weight=0.4)
    with pytest.raises(ValueError, match="Field required"):
        MeanVarianceConfig(objective="min_variance", budget=1.0)  # the bounds are explicit


def test_last_window_frontier_marks_erc_and_the_method():
    """The frontier's window is the last estimate's (the final session counts as a month end)."""
    r = _returns()
    f = last_window_frontier(r, 400, 100, method="kelly", optimiser=OPT)
    assert list(f.portfolios.index) == ["erc", "kelly"]
    assert f.estimated_at == r.index[-1] and len(f.frontier) == OPT.frontier_points
    est = estimate_instrument_weights(r, 400, 100, method="kelly", optimiser=OPT)
    erc = estimate_instrument_weights(r, 400, 100, method="erc")
    assert est.weights.index[-1] == r.index[-1]
    window = r.iloc[-400:]
    mu, cov = annualised_moments(window.mean(), window.cov())
    for name, w in (("kelly", est.weights.iloc[-1]), ("erc", erc.weights.iloc[-1])):
        assert f.portfolios.loc[name, "expected_return"] == pytest.approx(float(mu @ w), rel=1e-6)
        assert f.portfolios.loc[name, "vol"] == pytest.approx(math.sqrt(w @ cov @ w), rel=1e-6)
    assert f.constraints == "Σw = 0.8, 0 <= w_i <= 0.6"


# --------------------------------------------------------------------------------------------------
# The daily job on the sample, each method
# --------------------------------------------------------------------------------------------------

SAMPLE_OPTIMISER = {
    "kelly": {"fraction": 0.5, "long_only": True, "max_instrument_leverage": 1.0},
    "mean_variance": {"objective": "max_sharpe", "budget": 1.0, "min_weight": 0.0, "max_weight": 0.5},
    "black_litterman": {"views": ["AAPL - KO == 0.1"], "reference_weights": "erc"},
}


def test_each_method_runs_on_the_sample_and_reaches_the_report(tmp_path):
    """The daily job with Kelly weights on the five-instrument sample (positions sized from them),
    then the weights asset alone with mean-variance and Black-Litterman, and report.html's frontier."""
    import dagster as dg
    import yaml

    from assets.portfolio import instrument_weights
    from assets.resources import default_resources
    from pipeline.config import load_config
    from pipeline.definitions import execute_daily
    from pipeline.portfolio import vol_normalised_returns
    from pipeline.research.results import write_results
    from pipeline.store.lake import Lake
    from tests.conftest import LATEST_SAMPLE_SESSION, write_config
    from tests.test_backtest_results import demo_run

    config = write_config(tmp_path, portfolio={"instrument_weights_method": "kelly", "optimiser": SAMPLE_OPTIMISER})
    cfg = load_config(config)
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=False, config_path=str(config), instance=instance)
    assert result.success
    lake = Lake(cfg.lake_path)

    def stored() -> pd.DataFrame:
        return lake.read_table("instrument_weights").pivot(index="estimated_at", columns="instrument", values="weight")

    kelly = stored()
    np.testing.assert_allclose(kelly.sum(axis=1).to_numpy(), 1.0, atol=1e-9)
    assert (kelly.to_numpy() >= 0).all() and len(kelly) > 300
    targets = lake.read("target_positions")
    last = targets[targets["session"] == targets["session"].max()].set_index("instrument")
    # in force on the last session: the estimate of the month end before it (the last one applies from the next)
    before = kelly.loc[kelly.index < last["session"].iloc[0]].iloc[-1]
    np.testing.assert_allclose(last["weight"].to_numpy(), before.reindex(last.index).to_numpy(), atol=1e-12)

    found = {"kelly": kelly}
    for method in ("mean_variance", "black_litterman"):
        raw = yaml.safe_load(config.read_text())
        raw["portfolio"]["instrument_weights_method"] = method
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        done = dg.materialize([instrument_weights], resources=default_resources(str(config)), raise_on_error=False)
        assert done.success, method
        found[method] = w = stored()
        np.testing.assert_allclose(w.sum(axis=1).to_numpy(), 1.0, atol=1e-6)  # the budget
        assert (w.to_numpy() >= -1e-12).all() and (w.to_numpy() <= 0.5 + 1e-6).all()  # long-only, max_weight
    assert not np.allclose(found["kelly"].iloc[-1], found["mean_variance"].iloc[-1], atol=1e-3)

    cfg = load_config(config)
    closes = lake.read_wide("volatility", "close", cfg.symbols)
    vol = lake.read_wide("volatility", "vol_price", cfg.symbols)
    frontier = last_window_frontier(vol_normalised_returns(closes, vol), int(cfg.portfolio.weights_lookback_years * 256),
                                    cfg.portfolio.weights_min_sessions, method="black_litterman",
                                    optimiser=cfg.portfolio.optimiser)
    assert set(frontier.portfolios.index) == {"erc", "black_litterman"}
    assert list(frontier.instruments.index) == cfg.symbols
    folder = write_results(replace(demo_run(), frontier=frontier), tmp_path / "results")
    report = (folder / "report.html").read_text()
    assert "Efficient frontier, instrument-weight window ending 2022-12-28" in report
    assert '"name":"black_litterman"' in report and '"name":"erc"' in report
