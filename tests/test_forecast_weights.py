"""Estimated forecast weights (pipeline/signals/forecast_weights.py): families, handcrafting, bootstrap."""

import numpy as np
import pandas as pd
import pytest

from pipeline.signals.combine import combine_forecasts, estimate_fdm
from pipeline.signals.forecast_weights import (
    ForecastWeightsError,
    bootstrap_weights,
    combine_with_weight_history,
    estimate_forecast_weights,
    family_weights,
    handcraft_weights,
    rule_family,
    rule_returns,
    year_end_sessions,
)


def _corr(matrix, names):
    return pd.DataFrame(matrix, index=names, columns=names, dtype=float)


def test_rule_families_come_from_the_name():
    assert [rule_family(r) for r in ["ewmac16_64", "breakout40", "carry", "relcarry"]] == [
        "ewmac", "breakout", "carry", "relcarry"]


def test_family_weights_are_equal_across_and_within_families():
    w = family_weights(["ewmac2_8", "ewmac4_16", "ewmac8_32", "ewmac16_64", "breakout10", "breakout20",
                        "breakout40", "breakout80", "breakout160", "breakout320"])
    assert w["ewmac8_32"] == pytest.approx(1 / 8) and w["breakout40"] == pytest.approx(1 / 12)
    assert w.sum() == pytest.approx(1.0)


def test_handcraft_gives_uncorrelated_rules_equal_weight():
    w = handcraft_weights(_corr(np.eye(3), ["a", "b", "c"]))
    np.testing.assert_allclose(w.to_numpy(), [1 / 3] * 3)


def test_handcraft_makes_duplicates_share_one_slot():
    # a and b identical (rho 1), c independent: clusters {a, b} (variance 1) and {c} (variance 1)
    w = handcraft_weights(_corr([[1, 1, 0], [1, 1, 0], [0, 0, 1]], ["a", "b", "c"]))
    np.testing.assert_allclose(w.to_numpy(), [0.25, 0.25, 0.5])


def test_handcraft_splits_two_clusters_by_inverse_variance():
    # {a, b} rho 0.5 -> 50/50, variance 0.25 + 0.25 + 2*0.25*0.5 = 0.75; {c} variance 1;
    # shares (1/0.75) : 1 = 4/7 : 3/7
    w = handcraft_weights(_corr([[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]], ["a", "b", "c"]))
    np.testing.assert_allclose(w.to_numpy(), [2 / 7, 2 / 7, 3 / 7])


def test_handcraft_refuses_nan():
    with pytest.raises(ForecastWeightsError, match="NaN"):
        handcraft_weights(_corr([[1, np.nan], [np.nan, 1]], ["a", "b"]))


def _returns(n=3000, seed=1):
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2000-01-03", periods=n, name="session")
    # daily SRs 0.05 (annual 0.8) for a and b, 0 for c; all unit vol, independent
    x = rng.normal(0, 1, (n, 3)) + np.array([0.05, 0.05, 0.0])
    return pd.DataFrame(x, index=index, columns=pd.Index(["a", "b", "c"], name="rule"))


def test_bootstrap_weights_favour_the_rules_with_a_sharpe_ratio():
    w = bootstrap_weights(_returns(), draws=40, block=50)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w["c"] < 0.2 and w["a"] > 0.3 and w["b"] > 0.3


def test_bootstrap_is_reproducible_and_cost_aware():
    r = _returns()
    assert bootstrap_weights(r, draws=10, seed=5).equals(bootstrap_weights(r, draws=10, seed=5))
    gross = bootstrap_weights(r, draws=30, block=50)
    # a costs 0.8 annual SR: net of it, a has no edge left and loses most of its weight to b
    net = bootstrap_weights(r, sr_costs=pd.Series({"a": 0.8}), draws=30, block=50)
    assert net["a"] < 0.5 * gross["a"] and net["b"] > gross["b"]


def test_max_sharpe_of_one_draw_matches_the_closed_form():
    # one draw of the whole sample in a single block: uncorrelated assets -> w proportional to mu / var
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (400, 2)) * [1.0, 2.0]
    x = (x - x.mean(0)) / x.std(0, ddof=1) * [1.0, 2.0]
    x[:, 1] -= np.mean(x[:, 0] * x[:, 1]) / np.mean(x[:, 0] ** 2) * x[:, 0]  # exact zero covariance
    x = x + [0.1, 0.4]
    r = pd.DataFrame(x, index=pd.bdate_range("2000-01-03", periods=400), columns=["a", "b"])
    w = bootstrap_weights(r, draws=1, block=400)
    mu, var = x.mean(0), x.var(0, ddof=1)
    expected = (mu / var) / (mu / var).sum()
    np.testing.assert_allclose(w.to_numpy(), expected, atol=1e-4)


def test_rule_returns_are_yesterdays_forecast_times_todays_vol_normalised_move():
    index = pd.bdate_range("2024-01-01", periods=4, name="session")
    prices = pd.DataFrame({"A": [100.0, 102.0, 101.0, 104.0], "B": [10.0, 10.0, 11.0, 12.0]}, index=index)
    vol = pd.DataFrame({"A": [2.0] * 4, "B": [1.0] * 4}, index=index)
    capped = pd.DataFrame({("r", "A"): [10.0, 20.0, -10.0, 0.0], ("r", "B"): [5.0, 5.0, np.nan, 5.0]}, index=index)
    capped.columns = pd.MultiIndex.from_tuples(capped.columns, names=["rule", "instrument"])
    out = rule_returns(capped, prices, vol)["r"]
    # session 1: A 1.0 * (2/2) = 1, B 0.5 * 0 = 0 -> 0.5; session 2: A 2 * (-1/2) = -1, B 0.5 * 1 -> -0.25
    # session 3: A -1 * (3/2) = -1.5, B NaN forecast -> -1.5
    np.testing.assert_allclose(out.to_numpy()[1:], [0.5, -0.25, -1.5])
    assert np.isnan(out.iloc[0])


def test_year_ends_exclude_the_unfinished_year():
    index = pd.DatetimeIndex(["2020-12-30", "2020-12-31", "2021-01-04", "2021-12-31", "2022-01-03"])
    assert list(year_end_sessions(index)) == [pd.Timestamp("2020-12-31"), pd.Timestamp("2021-12-31")]


def _panel(n=900, seed=2):
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2018-01-01", periods=n, name="session")
    prices = pd.DataFrame(100 + np.cumsum(rng.normal(0, 1, (n, 3)), axis=0), index=index, columns=["A", "B", "C"])
    vol = pd.DataFrame(1.0, index=index, columns=prices.columns)
    slow = prices.ewm(span=16).mean() - prices.ewm(span=64).mean()
    fast = prices.ewm(span=2).mean() - prices.ewm(span=8).mean()
    capped = pd.concat({"ewmac2_8": (fast * 12).clip(-20, 20), "ewmac16_64": (slow * 4).clip(-20, 20),
                        "breakout20": (slow * 3).clip(-20, 20)}, axis=1, names=["rule", "instrument"])
    return capped, prices, vol


def test_estimated_weights_start_from_the_fallback_and_use_only_past_data():
    capped, prices, vol = _panel()
    history = estimate_forecast_weights(capped, prices, vol, "handcraft", min_sessions=200)
    assert history.index[0] == capped.index[0]
    pd.testing.assert_series_equal(history.iloc[0], family_weights(list(history.columns)).rename(history.index[0]),
                                   check_names=False)
    assert list(history.index[1:]) == list(year_end_sessions(capped.index))
    np.testing.assert_allclose(history.sum(axis=1), 1.0)
    # perturbing the last year changes no estimate made before it
    changed = capped.copy()
    changed.loc["2021-01-01":] = 0.0
    again = estimate_forecast_weights(changed, prices, vol, "handcraft", min_sessions=200)
    pd.testing.assert_frame_equal(again.loc[:"2020-12-31"], history.loc[:"2020-12-31"])


def test_weight_history_with_one_row_equals_the_plain_combination():
    capped, _, _ = _panel()
    weights = pd.Series({"ewmac2_8": 0.2, "ewmac16_64": 0.5, "breakout20": 0.3}, name="weight").rename_axis("rule")
    history = pd.DataFrame([weights], index=pd.DatetimeIndex([capped.index[0]], name="estimated_at"))
    combined, fdm = combine_with_weight_history(capped, history)
    expected_fdm = estimate_fdm(capped, weights)
    pd.testing.assert_series_equal(fdm, expected_fdm, check_freq=False)
    pd.testing.assert_frame_equal(combined, combine_forecasts(capped, weights, expected_fdm), check_freq=False)


def test_a_new_weight_row_applies_from_the_next_session():
    capped, _, _ = _panel(n=30)
    at = capped.index[9]
    history = pd.DataFrame({"ewmac2_8": [1.0, 0.0], "ewmac16_64": [0.0, 1.0], "breakout20": [0.0, 0.0]},
                           index=pd.DatetimeIndex([capped.index[0], at], name="estimated_at"))
    combined, _ = combine_with_weight_history(capped, history, fdm=1.0)
    pd.testing.assert_frame_equal(combined.iloc[:10], capped["ewmac2_8"].iloc[:10], check_names=False)
    pd.testing.assert_frame_equal(combined.iloc[10:], capped["ewmac16_64"].iloc[10:], check_names=False)


def test_estimated_weights_and_combination_do_not_look_ahead():
    capped, prices, vol = _panel()
    cut = pd.Timestamp("2020-06-30")

    def combined_for(c, p):
        history = estimate_forecast_weights(c, p, vol, "bootstrap", min_sessions=200, draws=5, block=20)
        return combine_with_weight_history(c, history)[0]

    base = combined_for(capped, prices)
    later = capped.index > cut
    shocked_capped = capped.copy()
    shocked_capped.loc[later] = -shocked_capped.loc[later]
    shocked_prices = prices.copy()
    shocked_prices.loc[later] = shocked_prices.loc[later] * 1.5
    shocked = combined_for(shocked_capped, shocked_prices)
    pd.testing.assert_frame_equal(shocked.loc[:cut], base.loc[:cut])
    assert not shocked.loc[later].equals(base.loc[later])
