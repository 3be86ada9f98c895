"""Tests of pipeline.walk_forward_backtest: in-sample fitting only, stitched out-of-sample runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.combine import forecast_weights
from pipeline.config import Instrument, PipelineConfig
from pipeline.rules import ewmac
from pipeline.volatility import robust_vol
from pipeline.walk_forward_backtest import fit_fold, walk_forward_backtest

SYMBOLS = ["AAA", "BBB", "CCC"]


def config(**combination) -> PipelineConfig:
    return PipelineConfig(
        instruments=[Instrument(symbol=s, asset_class="equity" if s != "CCC" else "bond") for s in SYMBOLS],
        combination={"fdm": "estimate", **combination},
        portfolio={"weights_min_sessions": 40},
    )


def market(n: int = 700, seed: int = 7):
    rng = np.random.default_rng(seed)
    index = pd.DatetimeIndex(pd.bdate_range("2010-01-04", periods=n), name="session")
    closes = pd.DataFrame(100 + np.cumsum(rng.normal(0.02, 1.0, (n, 3)), axis=0), index, SYMBOLS)
    vol = robust_vol(closes)
    raw = pd.concat({"ewmac4_16": ewmac(closes, vol, 4, 16), "ewmac16_64": ewmac(closes, vol, 16, 64)}, axis=1)
    raw.columns.names = ["rule", "instrument"]
    return closes, vol, raw


def test_fold_parameters_use_the_training_window_only():
    closes, vol, raw = market()
    train = closes.index[100:352]
    weights = forecast_weights(["ewmac4_16", "ewmac16_64"], None)
    before = fit_fold(raw, closes, vol, train, config(), weights)
    # rewrite everything after the window: the fitted parameters must not move
    later = closes.index > train[-1]
    closes2, vol2, raw2 = closes.copy(), vol.copy(), raw.copy()
    closes2.loc[later] *= 3.0
    vol2.loc[later] *= 5.0
    raw2.loc[later] = -raw2.loc[later] * 7.0
    after = fit_fold(raw2, closes2, vol2, train, config(), weights)
    pd.testing.assert_series_equal(before.scalars, after.scalars)
    pd.testing.assert_series_equal(before.weights, after.weights)
    assert (before.fdm, before.idm) == (after.fdm, after.idm)


def test_forecast_scalar_is_ten_over_the_mean_absolute_raw_forecast():
    closes, vol, _ = market(300)
    index = closes.index
    # |raw| = 2 for every instrument and session -> scalar 10 / 2 = 5
    raw = pd.concat({"ewmac4_16": pd.DataFrame(2.0, index, SYMBOLS) * np.where(np.arange(300) % 2, 1, -1)[:, None]},
                    axis=1)
    raw.columns.names = ["rule", "instrument"]
    params = fit_fold(raw, closes, vol, index[:200], config(), forecast_weights(["ewmac4_16"], None))
    assert params.scalars["ewmac4_16"] == pytest.approx(5.0)
    assert params.fdm == pytest.approx(1.0)  # one rule: no diversification
    assert params.weights.sum() == pytest.approx(1.0)


def test_identical_rules_have_an_fdm_of_one_and_a_fixed_fdm_is_kept():
    closes, vol, raw = market(400)
    twin = pd.concat({"a": raw["ewmac4_16"], "b": raw["ewmac4_16"]}, axis=1)
    twin.columns.names = ["rule", "instrument"]
    weights = forecast_weights(["a", "b"], None)
    assert fit_fold(twin, closes, vol, closes.index[:300], config(), weights).fdm == pytest.approx(1.0)
    assert fit_fold(twin, closes, vol, closes.index[:300], config(fdm=1.3), weights).fdm == 1.3


def test_walk_forward_stitches_every_test_window_out_of_sample():
    closes, vol, raw = market()
    run = walk_forward_backtest(raw, closes, vol, config(), train_len=252, test_len=63, stride=63)
    # 700 sessions: tests start at 252, 315, ..., 693 -> 8 folds, the last one 7 sessions long
    assert len(run.folds) == 8 and run.folds["n_test"].tolist() == [63] * 7 + [7]
    assert run.result.returns.index.equals(closes.index[252:])
    assert run.sample == "out-of-sample" and "fitted on each training window only" in run.sample_note
    # each fold's test window starts the session after its training window ends
    nxt = closes.index.get_indexer(run.folds["train_end"]) + 1
    assert (closes.index[nxt] == run.folds["test_start"]).all()


def test_walk_forward_results_do_not_depend_on_data_after_the_last_test_session():
    closes, vol, raw = market()
    end = closes.index[600]
    a = walk_forward_backtest(raw, closes, vol, config(), end=end)
    later = closes.index > end
    closes2 = closes.copy()
    closes2.loc[later] = closes2.loc[later] * 2.0
    b = walk_forward_backtest(raw, closes2, vol, config(), end=end)
    pd.testing.assert_series_equal(a.result.returns, b.result.returns)
