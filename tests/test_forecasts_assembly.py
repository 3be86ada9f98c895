"""Tests for the lean forecast path: raw_forecast_frames, stack_forecasts, ewmac_set, capped_forecasts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import RulesConfig
from pipeline.signals.forecasts import (
    ForecastError,
    ForecastSet,
    capped_forecasts,
    compute_forecasts,
    estimate_forecast_scalars,
    raw_forecast_frames,
    raw_forecast_stack,
    rescale,
    stack_forecasts,
)
from pipeline.signals.rules import breakout, ewmac, ewmac_set
from pipeline.signals.volatility import robust_vol


def _prices(n: int = 400, columns=("ZN", "ES", "CL")) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    values = 100.0 + rng.normal(size=(n, len(columns))).cumsum(axis=0)
    values[:50, 1] = np.nan  # a later listing
    values[200:210, 2] = np.nan  # a gap
    index = pd.bdate_range("2010-01-01", periods=n, name="session")
    return pd.DataFrame(values, index=index, columns=pd.Index(list(columns), name="instrument"))


def test_ewmac_set_equals_ewmac_per_speed():
    prices = _prices()
    vol = robust_vol(prices)
    speeds = [(2, 8), (4, 16), (8, 32)]
    together = ewmac_set(prices, vol, speeds)
    for fast, slow in speeds:
        np.testing.assert_array_equal(together[(fast, slow)], ewmac(prices, vol, fast, slow).to_numpy())


def test_stack_forecasts_equals_concat_in_canonical_order():
    prices = _prices()
    vol = robust_vol(prices)
    frames = {"ewmac8_32": ewmac(prices, vol, 8, 32), "breakout20": breakout(prices, 20)}
    frames["carry"] = frames["breakout20"][["ES", "CL"]] / 7.0  # a rule on fewer instruments
    stacked = stack_forecasts(frames)
    expected = pd.concat(frames, axis=1, names=["rule", "instrument"])
    # canonical: rules in natural order, instruments alphabetical within each rule
    order = [("breakout20", "CL"), ("breakout20", "ES"), ("breakout20", "ZN"), ("carry", "CL"), ("carry", "ES"),
             ("ewmac8_32", "CL"), ("ewmac8_32", "ES"), ("ewmac8_32", "ZN")]
    assert list(stacked.columns) == order
    assert stacked.columns.names == ["rule", "instrument"]
    pd.testing.assert_frame_equal(stacked, expected[order], check_names=False)
    # ForecastSet accepts it as it is (already canonical)
    fset = ForecastSet(raw=stacked, scaled=stacked, capped=stacked)
    pd.testing.assert_frame_equal(fset.raw, stacked, check_freq=False)


def test_stack_forecasts_rejects_frames_on_different_sessions():
    prices = _prices()
    with pytest.raises(ForecastError, match="different sessions"):
        stack_forecasts({"breakout20": breakout(prices, 20), "breakout40": breakout(prices.iloc[1:], 40)})


def test_compute_forecasts_is_raw_forecast_frames_scaled_and_capped():
    prices = _prices()
    vol = robust_vol(prices)
    rules = RulesConfig(ewmac=[(2, 8), (16, 64)], breakout=[10, 40])
    fset = compute_forecasts(prices, vol, rules)
    frames = raw_forecast_frames(prices, vol, rules)
    assert sorted(frames) == sorted(fset.rules)
    for name, frame in frames.items():
        raw = fset.raw[name][frame.columns]
        np.testing.assert_array_equal(raw.to_numpy(), frame.to_numpy())
        scalar = rules.forecast_scalars[name]
        np.testing.assert_array_equal(fset.scaled[name][frame.columns].to_numpy(), frame.to_numpy() * scalar)
        np.testing.assert_array_equal(
            fset.capped[name][frame.columns].to_numpy(), np.clip(frame.to_numpy() * scalar, -20.0, 20.0)
        )


def test_capped_forecasts_equal_rescale_capped_and_keep_the_fallback_until_an_estimate():
    prices = _prices(n=700)
    vol = robust_vol(prices)
    rules = RulesConfig(ewmac=[(4, 16)], breakout=[20])
    raw = stack_forecasts(raw_forecast_frames(prices, vol, rules))
    scalars = estimate_forecast_scalars(raw, min_periods=300)
    fallback = {"ewmac4_16": 8.53, "breakout20": 0.67}
    expected = rescale(ForecastSet(raw=raw, scaled=raw, capped=raw), scalars, fallback=fallback).capped
    capped = capped_forecasts(raw, scalars, fallback=fallback)
    pd.testing.assert_frame_equal(capped, expected)
    # before the first estimate (session 300 with a median) the published scalar applies
    first = raw.index[10]
    np.testing.assert_allclose(capped.loc[first, "ewmac4_16"], np.clip(raw.loc[first, "ewmac4_16"] * 8.53, -20, 20))
    assert capped.abs().max().max() <= 20.0


def test_capped_forecasts_name_a_rule_without_any_scalar():
    prices = _prices()
    raw = stack_forecasts({"breakout20": breakout(prices, 20)})
    with pytest.raises(ForecastError, match=r"capped_forecasts: no scalar .*breakout20"):
        capped_forecasts(raw, pd.DataFrame(index=raw.index))


def test_scalars_and_capped_forecasts_from_per_rule_frames_equal_those_from_the_stacked_frame():
    prices = _prices(n=700)
    vol = robust_vol(prices)
    frames = raw_forecast_frames(prices, vol, RulesConfig(ewmac=[(4, 16), (16, 64)], breakout=[20]))
    frames["carry"] = frames["breakout20"][["ES", "CL"]] / 7.0
    raw = stack_forecasts(frames)
    pd.testing.assert_frame_equal(
        estimate_forecast_scalars(frames, min_periods=300), estimate_forecast_scalars(raw, min_periods=300)
    )
    scalars = estimate_forecast_scalars(raw, min_periods=300)
    fallback = {"ewmac4_16": 8.53, "ewmac16_64": 4.1, "breakout20": 0.67, "carry": 30.0}
    pd.testing.assert_frame_equal(
        capped_forecasts(frames, scalars, fallback=fallback), capped_forecasts(raw, scalars, fallback=fallback)
    )


def test_raw_forecast_stack_equals_stacked_frames_with_extra_rule():
    prices = _prices()  # columns ZN, ES, CL: not alphabetical, so the stack reorders them
    vol = robust_vol(prices)
    rules = RulesConfig(ewmac=[(2, 8), (8, 32), (32, 128)], breakout=[10, 40])
    carry = (prices[["ES", "CL"]].diff() / vol[["ES", "CL"]]).ewm(com=5).mean()  # a rule on fewer instruments
    stacked = raw_forecast_stack(prices, vol, rules, extra={"carry": carry})
    expected = stack_forecasts({**raw_forecast_frames(prices, vol, rules), "carry": carry})
    assert list(stacked.columns.get_level_values("rule").unique()) == [
        "breakout10", "breakout40", "carry", "ewmac2_8", "ewmac8_32", "ewmac32_128"
    ]
    pd.testing.assert_frame_equal(stacked, expected)
    # the values are the rules' own: ewmac8_32 of CL
    np.testing.assert_array_equal(stacked[("ewmac8_32", "CL")].to_numpy(), ewmac(prices, vol, 8, 32)["CL"].to_numpy())


def test_raw_forecast_stack_rejects_an_extra_rule_that_is_configured():
    prices = _prices()
    vol = robust_vol(prices)
    with pytest.raises(ForecastError, match="ewmac2_8"):
        raw_forecast_stack(prices, vol, RulesConfig(ewmac=[(2, 8)], breakout=[]), extra={"ewmac2_8": prices})
    with pytest.raises(ForecastError, match="different sessions"):
        raw_forecast_stack(prices, vol, RulesConfig(ewmac=[(2, 8)], breakout=[]), extra={"carry": prices.iloc[1:]})


def test_capped_forecasts_overwrite_raw_gives_the_same_values_in_the_raw_memory():
    prices = _prices()
    vol = robust_vol(prices)
    raw = raw_forecast_stack(prices, vol, RulesConfig(ewmac=[(2, 8), (16, 64)], breakout=[20]))
    scalars = estimate_forecast_scalars(raw, min_periods=100)
    fallback = {"ewmac2_8": 10.6, "ewmac16_64": 3.75, "breakout20": 0.67}
    expected = capped_forecasts(raw, scalars, fallback=fallback)
    kept = raw.copy()
    memory = raw.to_numpy()
    capped = capped_forecasts(raw, scalars, fallback=fallback, overwrite_raw=True)
    pd.testing.assert_frame_equal(capped, expected)
    assert np.shares_memory(capped.to_numpy(), memory)  # no second array
    # by hand on one cell: raw x the scalar in force, capped at 20
    row, col = 300, ("ewmac2_8", "ES")
    by_hand = float(np.clip(kept[col].iloc[row] * scalars["ewmac2_8"].iloc[row], -20, 20))
    assert capped[col].iloc[row] == pytest.approx(by_hand, rel=1e-15)
