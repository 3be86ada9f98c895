"""Sizing refuses a broken vol estimate: a vol far below its asset class is raised to a floor, one far
above its long-run vol and its class is refused (the position is held)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.signals.volatility import VolatilityError, bounded_vol, robust_vol

SESSIONS = pd.bdate_range("2010-01-01", periods=900)
CLASSES = {"A": "equity", "B": "equity", "C": "equity", "D": "equity"}


def walks(seed: int = 1, vol: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(50 * np.exp(rng.normal(0, vol, (len(SESSIONS), 4)).cumsum(axis=0)), index=SESSIONS,
                        columns=list(CLASSES))


def test_a_flat_series_is_raised_to_a_tenth_of_its_class():
    prices = walks()
    prices.loc[SESSIONS[400]:, "D"] = prices.loc[SESSIONS[400], "D"]  # D stops moving: its vol decays to nothing
    vol = robust_vol(prices)
    out = bounded_vol(vol, prices, CLASSES)
    day = SESSIONS[-1]
    pct = 100 * vol.loc[day] / prices.loc[day]
    class_median = pct.median()
    assert out.raised.loc[day, "D"] and not out.raised.loc[day, ["A", "B", "C"]].any()
    assert 100 * out.vol.loc[day, "D"] / prices.loc[day, "D"] == pytest.approx(0.1 * class_median, rel=1e-12)
    assert out.vol.loc[day, ["A", "B", "C"]].equals(vol.loc[day, ["A", "B", "C"]])


def test_a_vol_inflated_tens_of_times_is_refused_and_nothing_else():
    prices = walks()
    vol = robust_vol(prices)
    inflated = vol.copy()
    inflated.loc[SESSIONS[700]:SESSIONS[705], "B"] *= 30.0  # a bad print in the vol
    out = bounded_vol(inflated, prices, CLASSES)
    assert out.refused["B"].loc[SESSIONS[700]:SESSIONS[705]].all()
    assert out.refused.sum().sum() == 6 and out.vol["B"].loc[SESSIONS[700]:SESSIONS[705]].isna().all()
    assert not out.raised.any().any()


def test_a_crisis_that_lifts_the_whole_class_is_not_refused():
    # every instrument's vol x6 (2008): the class median moves with it, so nothing is refused
    prices = walks()
    vol = robust_vol(prices)
    vol.loc[SESSIONS[700]:] *= 6.0
    assert not bounded_vol(vol, prices, CLASSES).refused.any().any()


def test_a_class_of_one_uses_its_own_long_run_vol():
    prices = walks()[["A"]]
    vol = robust_vol(prices)
    vol.loc[SESSIONS[600], "A"] *= 20.0
    out = bounded_vol(vol, prices, {"A": "fx"})
    assert out.refused["A"].tolist().count(True) == 1 and out.refused.loc[SESSIONS[600], "A"]


def test_the_bounds_use_no_later_data():
    prices = walks(seed=4)
    prices.loc[SESSIONS[500]:, "C"] = prices.loc[SESSIONS[500], "C"]
    vol = robust_vol(prices)
    vol.loc[SESSIONS[650], "A"] *= 40.0
    full = bounded_vol(vol, prices, CLASSES)
    cut = SESSIONS[660]
    part = bounded_vol(vol.loc[:cut], prices.loc[:cut], CLASSES)
    pd.testing.assert_frame_equal(full.vol.loc[:cut], part.vol)
    pd.testing.assert_frame_equal(full.refused.loc[:cut], part.refused)


def test_bounds_out_of_range_are_refused():
    prices = walks()
    with pytest.raises(VolatilityError, match="floor_vs_class"):
        bounded_vol(robust_vol(prices), prices, CLASSES, floor_vs_class=1.5)
    with pytest.raises(VolatilityError, match="ceiling_vs_long_run"):
        bounded_vol(robust_vol(prices), prices, CLASSES, ceiling_vs_long_run=0.5)


def test_on_the_bundled_sample_only_the_stale_penny_stock_of_1990_is_touched():
    from pipeline.adapters.sources.sample import SampleSource

    src = SampleSource()
    bars = src.fetch(src.instruments(), pd.Timestamp("1980-01-01"), pd.Timestamp("2023-01-01"))
    prices = bars.pivot(index="session", columns="instrument", values="close")
    out = bounded_vol(robust_vol(prices), prices, dict.fromkeys(prices.columns, "equity"))
    touched = out.raised | out.refused
    assert sorted(touched.columns[touched.any()]) == ["RRC"]
    days = touched.index[touched["RRC"]]
    assert days.min() >= pd.Timestamp("1990-01-01") and days.max() <= pd.Timestamp("1990-12-31")
