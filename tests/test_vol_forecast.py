"""Tests of pipeline.ml.vol_forecast: panel, QLIKE, walk-forward models and the sizing decision."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.ml.vol_forecast import (
    BASELINE,
    VolForecastError,
    nonpositive_instruments,
    qlike,
    score_vol_forecasts,
    sizing_decision,
    sizing_gate,
    vol_for_sizing,
    vol_forecast_panel,
    walk_forward_vol_forecast,
)


def sessions(n: int) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.bdate_range("2000-01-03", periods=n), name="session")


def regime_switching_prices(n: int = 1400, k: int = 3, seed: int = 0):
    """Daily vol switches between 0.5% and 2% in blocks of 126 sessions (persistent, so predictable
    from the recent past), with a deliberately slow sizing vol (EWMA span 250)."""
    rng = np.random.default_rng(seed)
    daily = np.where((np.arange(n) // 126) % 2 == 1, 0.02, 0.005)
    r = rng.normal(size=(n, k)) * daily[:, None]
    prices = pd.DataFrame(100 * np.exp(np.cumsum(r, axis=0)), index=sessions(n),
                          columns=pd.Index([f"I{i}" for i in range(k)], name="instrument"))
    vol = prices.diff().ewm(span=250, min_periods=20).std()
    return prices, vol


def test_qlike_hand_computed():
    # y/f = 2: 2 - ln 2 - 1 = 0.3069; y/f = 0.5: 0.5 + ln 2 - 1 = 0.1931
    assert qlike(np.array([2.0, 1.0]), np.array([1.0, 2.0])) == pytest.approx((1 - math.log(2) + math.log(2) - 0.5) / 2)
    assert qlike(np.array([3.0]), np.array([3.0])) == 0.0
    assert math.isnan(qlike(np.array([]), np.array([])))


def test_panel_target_and_features_match_a_direct_computation():
    prices, vol = regime_switching_prices(200)
    panel = vol_forecast_panel(prices, vol, horizon=21)
    t, inst = 100, "I1"
    p = prices[inst].to_numpy()
    r = p[1:] / p[:-1] - 1  # r[u - 1] is session u
    row = panel.loc[(prices.index[t], inst)]
    assert row["target_var"] == pytest.approx(np.mean(r[t : t + 21] ** 2))
    assert row["log_rv5"] == pytest.approx(math.log(np.mean(r[t - 5 : t] ** 2)))
    assert row["sizing_var"] == pytest.approx((vol[inst].iloc[t] / p[t]) ** 2)
    # The last 21 sessions' targets are not known yet.
    assert panel.xs(prices.index[-21], level="session")["target_var"].isna().all()
    assert panel.xs(prices.index[-22], level="session")["target_var"].notna().all()


def test_models_beat_a_slow_sizing_vol_when_vol_is_persistent():
    prices, vol = regime_switching_prices()
    # Every session trains (stride 1): the trees need more rows than their 200-row leaves.
    result = walk_forward_vol_forecast(vol_forecast_panel(prices, vol), retrain_every=126, min_train=400,
                                       train_stride=1)
    scores = result.scores
    assert list(scores.index) == [BASELINE, "har", "har_sizing", "gradient_boosting"]
    assert (scores["n_scored"] == scores["n_scored"].iloc[0]).all()
    for name in ("har", "har_sizing", "gradient_boosting"):
        assert scores.loc[name, "qlike_improvement"] > 0.2, name
    model, reason = sizing_decision(scores, margin=0.05, enabled=True)
    assert model == scores.drop(index=BASELINE)["qlike"].idxmin() and "sizing uses" in reason


def test_no_training_target_reaches_past_the_fit_session():
    prices, vol = regime_switching_prices(900)
    result = walk_forward_vol_forecast(vol_forecast_panel(prices, vol), horizon=21, retrain_every=100, min_train=300,
                                       train_stride=1)
    idx = prices.index
    for _, fold in result.folds.iterrows():
        # the target of train_end covers train_end+1 .. train_end+21, all closed by the fit
        assert idx.get_loc(fold["train_end"]) + 21 <= idx.get_loc(fold["fit_session"])
        assert fold["test_start"] > fold["fit_session"]


def test_forecasts_up_to_d_ignore_prices_after_d():
    prices, vol = regime_switching_prices(900)
    before = walk_forward_vol_forecast(vol_forecast_panel(prices, vol), retrain_every=100, min_train=300).forecasts
    d = 650
    changed_p, changed_v = prices.copy(), vol.copy()
    changed_p.iloc[d + 1 :] *= 1.5
    changed_v.iloc[d + 1 :] *= 4
    after = walk_forward_vol_forecast(vol_forecast_panel(changed_p, changed_v), retrain_every=100,
                                      min_train=300).forecasts
    upto = before.index.get_level_values("session") <= prices.index[d]
    cols = [c for c in before.columns if c != "target_var"]  # targets look ahead by definition
    pd.testing.assert_frame_equal(before.loc[upto, cols], after.loc[upto, cols])


def scores_table(gain: float, mse_gain: float) -> pd.DataFrame:
    forecasts = pd.DataFrame({"target_var": [1.0, 1.0], BASELINE: [2.0, 2.0]})
    table = score_vol_forecasts(forecasts)
    table.loc["har"] = [2, table.loc[BASELINE, "qlike"] * (1 - gain), table.loc[BASELINE, "mse"] * (1 - mse_gain),
                        gain, mse_gain]
    return table


def test_sizing_decision_needs_the_margin_no_worse_mse_and_the_switch():
    assert sizing_decision(scores_table(0.10, 0.2), 0.05, True)[0] == "har"
    model, reason = sizing_decision(scores_table(0.04, 0.2), 0.05, True)
    assert model is None and "not enough" in reason
    assert sizing_decision(scores_table(0.10, -0.01), 0.05, True)[0] is None
    model, reason = sizing_decision(scores_table(0.10, 0.2), 0.05, False)
    assert model is None and "use_for_sizing is off" in reason


def test_the_sizing_gate_scores_only_targets_known_at_each_decision():
    prices, vol = regime_switching_prices()
    result = walk_forward_vol_forecast(vol_forecast_panel(prices, vol), retrain_every=126, min_train=400)
    decisions = pd.DatetimeIndex(result.folds["fit_session"])
    gate = sizing_gate(result.forecasts, decisions, 21, 0.05, True)
    assert gate["model"].iloc[0] is None  # no forecast scored before the first fit
    assert gate["model"].iloc[-1] is not None
    # Scrambling the targets known only after decision 2 changes none of decisions 0..2.
    changed = result.forecasts.copy()
    late = changed.index.get_level_values("session") > prices.index[prices.index.get_loc(decisions[2]) - 21]
    changed.loc[late, "target_var"] *= 50
    again = sizing_gate(changed, decisions, 21, 0.05, True)
    pd.testing.assert_frame_equal(gate.iloc[:3], again.iloc[:3])
    sized = vol_for_sizing(result.forecasts, gate, prices)
    first_on = gate.index[gate["model"].notna()][0]
    assert sized.loc[:first_on].isna().all().all()
    after = prices.index[prices.index.get_loc(first_on) + 1]
    name = gate.loc[first_on, "model"]
    want = math.sqrt(result.forecasts.loc[(after, "I0"), name]) * prices.loc[after, "I0"]
    assert sized.loc[after, "I0"] == pytest.approx(want)


def test_bad_inputs_are_refused():
    prices, vol = regime_switching_prices(100)
    bad = prices.copy()
    bad.iloc[50, 1] = 0.0
    with pytest.raises(VolForecastError, match="price <= 0 for I1"):
        vol_forecast_panel(bad, vol)
    with pytest.raises(VolForecastError, match="does not share the session index"):
        vol_forecast_panel(prices, vol.iloc[:-1])
    with pytest.raises(VolForecastError, match="min_train"):
        walk_forward_vol_forecast(vol_forecast_panel(prices, vol), horizon=21, min_train=20)


def test_nonpositive_instruments_names_back_adjusted_series_at_or_below_zero_and_refuses_others():
    prices = pd.DataFrame({"A": [1.0, 0.0, 2.0], "B": [np.nan, 3.0, 4.0], "C": [-1.0, 1.0, np.nan]},
                          index=sessions(3))
    assert nonpositive_instruments(prices, back_adjusted={"A", "B", "C"}) == ["A", "C"]  # NaN is no price
    assert nonpositive_instruments(prices[["B"]]) == []
    with pytest.raises(VolForecastError, match=r"price <= 0 for C on 2000-01-03;.*not back-adjusted"):
        nonpositive_instruments(prices, back_adjusted={"A"})


def test_a_back_adjusted_series_below_zero_is_left_out_and_the_others_forecasts_are_unchanged():
    prices, vol = regime_switching_prices(900)
    # I2 as a back-adjusted future: the same moves, shifted so that it crosses zero mid-sample.
    shifted = prices.copy()
    shifted["I2"] = prices["I2"] - float(prices["I2"].iloc[500])
    assert (shifted["I2"] <= 0).any() and (shifted["I2"] > 0).any()
    panel = vol_forecast_panel(shifted, vol, back_adjusted=["I0", "I2"])
    assert set(panel.index.get_level_values("instrument")) == {"I0", "I1"}
    # The same numbers as a run without I2 at all (the pooled models see the same rows).
    alone = vol_forecast_panel(prices[["I0", "I1"]], vol[["I0", "I1"]])
    pd.testing.assert_frame_equal(panel, alone)
    kwargs = {"retrain_every": 100, "min_train": 300, "train_stride": 1}
    with_neg = walk_forward_vol_forecast(panel, **kwargs)
    without = walk_forward_vol_forecast(alone, **kwargs)
    pd.testing.assert_frame_equal(with_neg.forecasts, without.forecasts)
    assert with_neg.forecasts["har"].notna().sum() > 1000  # real forecasts, not an empty comparison
    # I2's sizing vol is missing from the model's (the caller keeps its EWMA/robust vol).
    gate = sizing_gate(with_neg.forecasts, pd.DatetimeIndex(with_neg.folds["fit_session"]), 21, 0.0, True)
    sized = vol_for_sizing(with_neg.forecasts, gate, shifted)
    assert sized["I2"].isna().all() and sized["I0"].notna().any()
    # Not back-adjusted, the same series is bad data.
    with pytest.raises(VolForecastError, match="price <= 0 for I2"):
        vol_forecast_panel(shifted, vol, back_adjusted=["I0"])
