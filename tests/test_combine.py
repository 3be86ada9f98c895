"""Tests for pipeline.signals.combine: forecast weights, FDM (static formula and expanding pooled
estimate) and the combined forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.signals.combine import (
    CombinationError,
    combine_forecasts,
    estimate_fdm,
    fdm_from_correlation,
    forecast_weights,
)


def _sessions(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2015-01-05", periods=n, name="session")  # 2015-01-05 is a Monday


def _capped(values: np.ndarray, rules: list[str], instruments: list[str]) -> pd.DataFrame:
    """(session, rule, instrument) array -> wide frame with a (rule, instrument) column MultiIndex."""
    n = values.shape[0]
    columns = pd.MultiIndex.from_product([rules, instruments], names=["rule", "instrument"])
    return pd.DataFrame(values.reshape(n, -1), index=_sessions(n), columns=columns)


def _correlated_forecasts(n_sessions: int, n_rules: int, n_instruments: int, rho: float, seed: int) -> np.ndarray:
    """Forecasts with pairwise correlation rho between rules: sqrt(rho) common + sqrt(1-rho) own,
    scaled to std 8 and capped at 20 (the cap barely touches a std-8 normal)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((n_sessions, 1, n_instruments))
    own = rng.standard_normal((n_sessions, n_rules, n_instruments))
    return np.clip(8 * (np.sqrt(rho) * common + np.sqrt(1 - rho) * own), -20, 20)


# ---- forecast_weights ---------------------------------------------------------------------------


def test_forecast_weights_default_to_equal():
    w = forecast_weights(["ewmac8_32", "ewmac16_64", "breakout40", "breakout80"], None)
    assert w.tolist() == [0.25] * 4 and w.index.name == "rule"


def test_forecast_weights_normalise_configured_and_zero_missing_rules():
    # 3 and 1 -> 0.75 and 0.25; breakout40 not configured -> 0
    w = forecast_weights(["ewmac8_32", "ewmac16_64", "breakout40"], {"ewmac8_32": 3.0, "ewmac16_64": 1.0})
    assert w.to_dict() == {"ewmac8_32": 0.75, "ewmac16_64": 0.25, "breakout40": 0.0}


def test_forecast_weights_reject_unknown_rule():
    with pytest.raises(CombinationError, match="unknown rule variations \\['carry'\\]"):
        forecast_weights(["ewmac8_32"], {"ewmac8_32": 1.0, "carry": 1.0})


def test_forecast_weights_reject_negative_weight():
    with pytest.raises(CombinationError, match=">= 0"):
        forecast_weights(["a", "b"], {"a": 1.0, "b": -0.5})


def test_forecast_weights_reject_all_zero():
    with pytest.raises(CombinationError, match="every configured weight is 0"):
        forecast_weights(["a", "b"], {"a": 0.0})


# ---- fdm_from_correlation -----------------------------------------------------------------------

# carver.md §3.3 table: N equal weights, constant correlation rho -> 1/sqrt((1+(N-1)rho)/N), capped 2.5
_FDM_TABLE = {
    2: [1.41, 1.26, 1.15, 1.07, 1.03],
    3: [1.73, 1.41, 1.22, 1.10, 1.04],
    4: [2.00, 1.51, 1.26, 1.11, 1.04],
    6: [2.45, 1.63, 1.31, 1.12, 1.04],
    10: [2.50, 1.75, 1.35, 1.14, 1.05],
    20: [2.50, 1.87, 1.38, 1.15, 1.05],
    30: [2.50, 1.91, 1.39, 1.15, 1.05],
}
_RHOS = [0.0, 0.25, 0.5, 0.75, 0.9]


@pytest.mark.parametrize(
    ("n", "rho", "expected"),
    [(n, rho, value) for n, row in _FDM_TABLE.items() for rho, value in zip(_RHOS, row)],
)
def test_fdm_from_correlation_matches_carver_table(n, rho, expected):
    corr = np.full((n, n), rho)
    np.fill_diagonal(corr, 1.0)
    # the table is rounded to 2 decimals
    assert fdm_from_correlation(np.full(n, 1.0 / n), corr, cap=2.5) == pytest.approx(expected, abs=0.005 + 1e-12)


def test_fdm_from_correlation_floors_negative_correlation_at_zero():
    # two rules with rho = -0.5 count as rho = 0: sqrt(2) = 1.414..., not 1/sqrt(0.25) = 2
    corr = np.array([[1.0, -0.5], [-0.5, 1.0]])
    assert fdm_from_correlation(np.array([0.5, 0.5]), corr) == pytest.approx(np.sqrt(2))


def test_fdm_from_correlation_aligns_dataframe_by_label():
    # weights 0.8/0.2, rho 0.5: w'Hw = 0.64 + 0.04 + 2*0.16*0.5 = 0.84 -> 1/sqrt(0.84) = 1.0911
    w = pd.Series({"a": 0.8, "b": 0.2})
    corr = pd.DataFrame([[1.0, 0.5], [0.5, 1.0]], index=["b", "a"], columns=["b", "a"])
    assert fdm_from_correlation(w, corr) == pytest.approx(1 / np.sqrt(0.84))


# ---- estimate_fdm -------------------------------------------------------------------------------


def test_estimate_fdm_converges_to_the_formula_for_known_correlation():
    # 4 rules, rho = 0.5, 10 instruments x 1500 sessions: formula 1/sqrt((1+3*0.5)/4) = 1.2649.
    # Each late estimate pools >= 12,500 observations; over 40 seeds the final smoothed value was
    # off by +0.0003 on average (no bias), std 0.0028, worst 0.0101; 0.015 is about 5 std.
    rules = ["r1", "r2", "r3", "r4"]
    values = _correlated_forecasts(1500, 4, 10, rho=0.5, seed=31)
    fdm = estimate_fdm(_capped(values, rules, [f"I{i}" for i in range(10)]), forecast_weights(rules, None))
    assert fdm.iloc[-1] == pytest.approx(1 / np.sqrt((1 + 3 * 0.5) / 4), abs=0.015)


def test_estimate_fdm_equals_static_formula_on_pooled_pairwise_correlation_up_to_that_session():
    # Unsmoothed (span 1), the value on a Monday is the static FDM of the correlation matrix of all
    # (session, instrument) observations up to that Monday, pairwise complete (pandas .corr),
    # floored at 0. Rule r3 starts late and r2 is negatively correlated with r1.
    rng = np.random.default_rng(31)
    n, instruments = 200, ["A", "B", "C"]
    values = _correlated_forecasts(n, 3, 3, rho=0.3, seed=32)
    values[:, 1] = -values[:, 0] + rng.standard_normal((n, 3)) * 6
    values[:60, 2, :] = np.nan
    capped = _capped(values, ["r1", "r2", "r3"], instruments)
    weights = pd.Series({"r1": 0.5, "r2": 0.3, "r3": 0.2})
    fdm = estimate_fdm(capped, weights, min_periods=20, smooth_span=1)
    monday = capped.index[capped.index.dayofweek == 0][-2]
    pooled = pd.DataFrame({r: capped.loc[:monday, r].to_numpy().ravel() for r in ["r1", "r2", "r3"]})
    corr = pooled.corr()
    assert corr.loc["r1", "r2"] < -0.5  # the floor is exercised
    assert fdm[monday] == pytest.approx(fdm_from_correlation(weights, corr.clip(lower=0.0)), rel=1e-10)


def test_estimate_fdm_renormalises_weights_over_rules_that_have_entered():
    # r3 has no forecasts for 150 sessions; at a Monday before it has 20 sessions of history the
    # FDM is that of r1 and r2 alone with weights 0.5/0.3 renormalised to 0.625/0.375.
    values = _correlated_forecasts(300, 3, 2, rho=0.4, seed=33)
    values[:150, 2, :] = np.nan
    capped = _capped(values, ["r1", "r2", "r3"], ["A", "B"])
    weights = pd.Series({"r1": 0.5, "r2": 0.3, "r3": 0.2})
    fdm = estimate_fdm(capped, weights, min_periods=20, smooth_span=1)
    monday = capped.index[(capped.index.dayofweek == 0) & (np.arange(300) < 160)][-1]
    pooled = pd.DataFrame({r: capped.loc[:monday, r].to_numpy().ravel() for r in ["r1", "r2"]})
    rho = max(pooled.corr().loc["r1", "r2"], 0.0)
    w = np.array([0.625, 0.375])
    expected = 1 / np.sqrt(w @ np.array([[1, rho], [rho, 1]]) @ w)
    assert fdm[monday] == pytest.approx(expected, rel=1e-10)


def test_estimate_fdm_is_one_before_min_periods():
    values = _correlated_forecasts(400, 3, 2, rho=0.0, seed=34)
    fdm = estimate_fdm(_capped(values, ["a", "b", "c"], ["X", "Y"]), forecast_weights(["a", "b", "c"], None))
    # with min_periods 256 sessions the first estimate is on the first Monday at or after row 255
    first_estimate = next(i for i in range(255, 400) if fdm.index[i].dayofweek == 0)
    assert (fdm.iloc[:first_estimate] == 1.0).all()
    assert fdm.iloc[first_estimate] > 1.0


def test_estimate_fdm_is_re_estimated_weekly_at_the_first_session():
    values = _correlated_forecasts(300, 3, 2, rho=0.2, seed=35)
    fdm = estimate_fdm(_capped(values, ["a", "b", "c"], ["X", "Y"]), forecast_weights(["a", "b", "c"], None),
                       min_periods=20, smooth_span=1)
    weeks = fdm.index.to_period("W")
    assert (fdm.groupby(weeks).nunique() == 1).all()
    assert fdm.iloc[100:].diff().ne(0).groupby(weeks[100:]).sum().max() <= 1


def test_estimate_fdm_gives_no_credit_for_a_constant_forecast():
    # rule b never moves: its correlation is undefined and taken as 1 -> FDM 1. (7.3 is not
    # exactly representable, so the cumulative-sum variance is rounding noise, not 0.)
    values = _correlated_forecasts(100, 2, 2, rho=0.0, seed=36)
    values[:, 1, :] = 7.3
    fdm = estimate_fdm(_capped(values, ["a", "b"], ["X", "Y"]), forecast_weights(["a", "b"], None), min_periods=20)
    np.testing.assert_allclose(fdm.to_numpy(), 1.0)


def test_estimate_fdm_has_no_look_ahead():
    rules = ["a", "b", "c"]
    capped = _capped(_correlated_forecasts(500, 3, 3, rho=0.3, seed=37), rules, ["X", "Y", "Z"])
    weights = forecast_weights(rules, None)
    before = estimate_fdm(capped, weights, min_periods=50)
    perturbed = capped.copy()
    perturbed.iloc[300:] = perturbed.iloc[300:].to_numpy()[:, ::-1]  # scramble the future
    pd.testing.assert_series_equal(before.iloc[:300], estimate_fdm(perturbed, weights, min_periods=50).iloc[:300])


def test_estimate_fdm_rejects_a_weighted_rule_without_forecasts():
    capped = _capped(np.zeros((10, 1, 1)), ["a"], ["X"])
    with pytest.raises(CombinationError, match="no forecasts"):
        estimate_fdm(capped, pd.Series({"a": 0.5, "b": 0.5}))


# ---- combine_forecasts --------------------------------------------------------------------------


def _two_rule_capped() -> pd.DataFrame:
    a = [8.0, 8.0, np.nan, 18.0, -18.0]
    b = [4.0, np.nan, np.nan, 16.0, -16.0]
    return _capped(np.array([a, b]).T[:, :, None], ["a", "b"], ["X"])


def test_combine_forecasts_hand_computed_with_renormalisation_and_cap():
    # weights a 0.75, b 0.25, FDM 1.2:
    #   both:          (0.75*8 + 0.25*4) * 1.2 = 8.4
    #   b missing:     8 (a alone, weight renormalised to 1) * 1.2 = 9.6
    #   none:          NaN
    #   18 and 16:     17.5 * 1.2 = 21 -> capped 20;  mirrored -> -20
    out = combine_forecasts(_two_rule_capped(), pd.Series({"a": 0.75, "b": 0.25}), 1.2)["X"].tolist()
    assert out[0] == pytest.approx(8.4) and out[1] == pytest.approx(9.6) and np.isnan(out[2])
    assert out[3] == 20.0 and out[4] == -20.0


def test_combine_forecasts_aligns_an_fdm_series_by_forward_fill():
    # FDM 1.0 from session 0 and 1.5 from session 3: session 1 uses 1.0 -> 8.0; session 3 -> 17.5*1.5 capped
    capped = _two_rule_capped()
    fdm = pd.Series([1.0, 1.5], index=capped.index[[0, 3]])
    out = combine_forecasts(capped, pd.Series({"a": 0.75, "b": 0.25}), fdm)["X"]
    assert out.iloc[1] == pytest.approx(8.0) and out.iloc[3] == 20.0


def test_combine_forecasts_rejects_fdm_series_starting_too_late():
    capped = _two_rule_capped()
    with pytest.raises(CombinationError, match="no FDM at or before session 2015-01-05"):
        combine_forecasts(capped, pd.Series({"a": 0.5, "b": 0.5}), pd.Series([1.2], index=capped.index[[1]]))


def test_combine_forecasts_ignores_zero_weight_rules():
    # b has weight 0: session 0 is a alone (8 * 1.0); where only b existed the result is NaN
    capped = _capped(np.array([[8.0, 4.0], [np.nan, 4.0]])[:, :, None], ["a", "b"], ["X"])
    out = combine_forecasts(capped, pd.Series({"a": 1.0, "b": 0.0}), 1.0)["X"]
    assert out.iloc[0] == 8.0 and np.isnan(out.iloc[1])


@settings(max_examples=60, deadline=None)
@given(
    forecasts=arrays(
        np.float64, (6, 3, 2), elements=st.one_of(st.floats(-20, 20), st.just(np.nan))
    ),
    raw_weights=st.lists(st.floats(0.01, 10), min_size=3, max_size=3),
    fdm=st.floats(1.0, 2.5),
)
def test_combined_forecast_never_exceeds_the_cap(forecasts, raw_weights, fdm):
    rules = ["a", "b", "c"]
    weights = forecast_weights(rules, dict(zip(rules, raw_weights)))
    out = combine_forecasts(_capped(forecasts, rules, ["X", "Y"]), weights, fdm)
    assert (out.abs().fillna(0.0) <= 20.0).all().all()
    # NaN exactly where no rule has a forecast
    assert (out.isna().to_numpy() == np.isnan(forecasts).all(axis=1)).all()


def test_combine_forecasts_has_no_look_ahead():
    rules = ["a", "b"]
    values = _correlated_forecasts(200, 2, 3, rho=0.5, seed=38)
    values[:50, 1, :] = np.nan
    capped = _capped(values, rules, ["X", "Y", "Z"])
    weights = forecast_weights(rules, None)
    fdm = estimate_fdm(capped, weights, min_periods=20)
    before = combine_forecasts(capped, weights, fdm)
    perturbed = capped.copy()
    perturbed.iloc[120:] = 20.0
    after = combine_forecasts(perturbed, weights, estimate_fdm(perturbed, weights, min_periods=20))
    pd.testing.assert_frame_equal(before.iloc[:120], after.iloc[:120])


def test_fdm_and_combination_in_one_pass_equal_the_two_calls():
    from pipeline.signals.combine import estimate_fdm_and_combine

    rng = np.random.default_rng(8)
    sessions = pd.bdate_range("2015-01-01", periods=700, name="session")
    common = rng.normal(size=(700, 1))
    frames = {}
    for k, rule in enumerate(["ewmac8_32", "ewmac32_128", "breakout40"]):
        values = np.clip(8 * (0.6 * common + 0.8 * rng.normal(size=(700, 4))), -20, 20)
        values[: 50 * k, k] = np.nan  # rules starting at different times
        frames[rule] = pd.DataFrame(values, index=sessions, columns=["A", "B", "C", "D"])
    capped = pd.concat(frames, axis=1, names=["rule", "instrument"])
    weights = pd.Series({"ewmac8_32": 0.5, "ewmac32_128": 0.3, "breakout40": 0.2})
    fdm = estimate_fdm(capped, weights, min_periods=100)
    expected = combine_forecasts(capped, weights, fdm)
    combined, fused_fdm = estimate_fdm_and_combine(capped, weights, min_periods=100)
    pd.testing.assert_series_equal(fused_fdm, fdm)
    pd.testing.assert_frame_equal(combined, expected)
    assert fdm.iloc[-1] > 1.05  # the rules are far from perfectly correlated: a real multiplier
