"""Tests for pipeline.signals.forecasts: scaling and capping, ForecastSet long/wide round trip,
compute_forecasts, and the pooled forecast-scalar estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from pipeline.config import RulesConfig
from pipeline.signals.forecasts import (
    LONG_COLUMNS,
    ForecastError,
    ForecastSet,
    compute_forecasts,
    estimate_forecast_scalars,
    scale_and_cap,
)
from pipeline.signals.rules import breakout, ewmac
from pipeline.signals.volatility import robust_vol
from tests.conftest import SHARED_DATA, require_shared_data

CARVER_2023 = SHARED_DATA / "futures_carver_2023"


def _sessions(n: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2010-01-04", periods=n, name="session")


def _prices(n: int = 400, instruments=("AAA", "BBB", "CCC"), seed: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = 100 + rng.standard_normal((n, len(instruments))).cumsum(axis=0)
    return pd.DataFrame(values, index=_sessions(n), columns=pd.Index(list(instruments), name="instrument"))


def _multi(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, axis=1, names=["rule", "instrument"])


def test_scale_and_cap_hand_computed():
    # scalar 5, cap 20: 0.5 -> 2.5, 3 -> 15, -4 -> -20 (exactly at the cap), 5 -> 25 capped to 20
    raw = pd.DataFrame({"A": [0.5, 3.0, -4.0, 5.0, np.nan]}, index=_sessions(5))
    out = scale_and_cap(raw, 5.0, cap=20.0)["A"].tolist()
    assert out[:4] == [2.5, 15.0, -20.0, 20.0] and np.isnan(out[4])


def test_scale_and_cap_rejects_non_positive_scalar():
    with pytest.raises(ForecastError, match="scalar"):
        scale_and_cap(pd.DataFrame({"A": [1.0]}, index=_sessions(1)), 0.0)


def test_compute_forecasts_builds_every_rule_and_instrument_with_configured_scalars():
    prices = _prices()
    vol = robust_vol(prices)
    rules = RulesConfig(ewmac=[(8, 32)], breakout=[20], forecast_scalars={"ewmac8_32": 5.3, "breakout20": 0.674})
    fs = compute_forecasts(prices, vol, rules)
    assert fs.rules == ["breakout20", "ewmac8_32"]
    assert fs.instruments == ["AAA", "BBB", "CCC"]
    expected_raw = ewmac(prices, vol, 8, 32)
    pd.testing.assert_frame_equal(fs.raw["ewmac8_32"], expected_raw, check_names=False, check_freq=False)
    pd.testing.assert_frame_equal(fs.raw["breakout20"], breakout(prices, 20), check_names=False, check_freq=False)
    # the scaled stage uses ST's 5.3 from the config override, the capped stage clips at +/-20
    pd.testing.assert_frame_equal(fs.scaled["ewmac8_32"], expected_raw * 5.3, check_names=False, check_freq=False)
    pd.testing.assert_frame_equal(
        fs.capped["ewmac8_32"], (expected_raw * 5.3).clip(-20, 20), check_names=False, check_freq=False
    )
    assert fs.capped.abs().max().max() <= 20.0


def test_compute_forecasts_default_rules_are_all_present():
    prices = _prices(n=200)
    rules = RulesConfig()
    fs = compute_forecasts(prices, robust_vol(prices), rules)
    assert sorted(fs.rules) == sorted(rules.rule_names)
    assert fs.raw.shape == (200, len(rules.rule_names) * 3)


def test_forecast_set_rejects_mismatched_stages():
    prices = _prices(n=50)
    raw = _multi({"ewmac2_8": prices})
    with pytest.raises(ForecastError, match="same sessions and columns"):
        ForecastSet(raw=raw, scaled=raw.iloc[:-1], capped=raw)


def test_to_long_has_the_documented_columns_order_and_drops_missing_raw():
    index = _sessions(2)
    raw = _multi(
        {
            "ewmac16_64": pd.DataFrame({"B": [1.0, 2.0], "A": [np.nan, 3.0]}, index=index),
            "ewmac2_8": pd.DataFrame({"B": [4.0, 5.0], "A": [6.0, 7.0]}, index=index),
        }
    )
    long = ForecastSet(raw=raw, scaled=raw * 2, capped=(raw * 2).clip(-10, 10)).to_long()
    assert list(long.columns) == LONG_COLUMNS
    # session, then instrument, then rule in natural order (ewmac2_8 before ewmac16_64);
    # (session 0, A, ewmac16_64) is NaN and dropped
    assert list(zip(long["instrument"], long["rule"])) == [
        ("A", "ewmac2_8"),
        ("B", "ewmac2_8"),
        ("B", "ewmac16_64"),
        ("A", "ewmac2_8"),
        ("A", "ewmac16_64"),
        ("B", "ewmac2_8"),
        ("B", "ewmac16_64"),
    ]
    assert long["raw"].tolist() == [6.0, 4.0, 1.0, 7.0, 3.0, 5.0, 2.0]
    assert long["capped"].tolist() == [10.0, 8.0, 2.0, 10.0, 6.0, 10.0, 4.0]


def test_from_long_of_to_long_reproduces_the_forecast_set_exactly():
    prices = _prices(n=300)
    prices.iloc[:40, 2] = np.nan  # CCC lists later
    fs = compute_forecasts(prices, robust_vol(prices), RulesConfig(ewmac=[(2, 8), (16, 64)], breakout=[10, 40]))
    # the long table cannot hold sessions where no raw forecast exists (the first ones)
    has_forecast = fs.raw.notna().any(axis=1)
    assert not has_forecast.all()
    back = ForecastSet.from_long(fs.to_long())
    for stage in ("raw", "scaled", "capped"):
        pd.testing.assert_frame_equal(getattr(back, stage), getattr(fs, stage).loc[has_forecast])


def test_to_long_of_from_long_reproduces_the_long_table_exactly():
    prices = _prices(n=120)
    long = compute_forecasts(prices, robust_vol(prices), RulesConfig(ewmac=[(4, 16)], breakout=[20])).to_long()
    shuffled = long.sample(frac=1.0, random_state=0)
    pd.testing.assert_frame_equal(ForecastSet.from_long(shuffled).to_long(), long)


def test_from_long_rejects_duplicate_rows():
    row = {"session": pd.Timestamp("2020-01-02"), "instrument": "A", "rule": "ewmac2_8"}
    row |= {"raw": 1.0, "scaled": 1.0, "capped": 1.0}
    with pytest.raises(ForecastError, match="duplicate"):
        ForecastSet.from_long(pd.DataFrame([row, row]))


def _gaussian_raw(n_sessions: int, n_instruments: int, sigma: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        rng.normal(0.0, sigma, (n_sessions, n_instruments)),
        index=pd.bdate_range("1990-01-01", periods=n_sessions, name="session"),
        columns=pd.Index([f"I{i}" for i in range(n_instruments)], name="instrument"),
    )
    return _multi({"rule_x": frame})


def test_estimate_forecast_scalars_single_instrument_gives_ten_over_mean_abs():
    # |N(0, s^2)| has mean s*sqrt(2/pi); with one instrument the "median" is |x| itself, so the
    # scalar tends to 10 / (s*sqrt(2/pi)) = 6.2666 for s = 2. Std error of the mean |x| over
    # 20000 draws is s*sqrt(1-2/pi)/sqrt(20000), 0.53% of the mean; 2.5% is about 4.7 std errors.
    sigma = 2.0
    scalars = estimate_forecast_scalars(_gaussian_raw(20_000, 1, sigma, seed=1))
    assert scalars["rule_x"].iloc[-1] == pytest.approx(10 / (sigma * np.sqrt(2 / np.pi)), rel=0.025)


def test_estimate_forecast_scalars_pools_with_the_cross_sectional_median():
    # 9 instruments: the session value is the median of 9 half-normal draws (5th order statistic),
    # whose expectation is integrated here from the order-statistic density
    # 9!/(4!4!) F^4 (1-F)^4 f. Its std is about 0.26 s per session, so over 5000 sessions the
    # std error is ~0.55% of the mean; 2.5% is about 4.5 std errors.
    sigma, n = 3.0, 9
    dist = stats.halfnorm(scale=sigma)
    coef = special.factorial(n) / (special.factorial(4) ** 2)
    density = lambda x: coef * dist.cdf(x) ** 4 * dist.sf(x) ** 4 * dist.pdf(x)
    expected_median, _ = integrate.quad(lambda x: x * density(x), 0, 20 * sigma)
    scalars = estimate_forecast_scalars(_gaussian_raw(5_000, n, sigma, seed=2))
    assert scalars["rule_x"].iloc[-1] == pytest.approx(10 / expected_median, rel=0.025)
    # and it is not the mean-|x| scalar 10 / (3 sqrt(2/pi)) = 4.18 (the median one is 4.79)
    assert abs(scalars["rule_x"].iloc[-1] - 10 / (sigma * np.sqrt(2 / np.pi))) > 0.3


def test_estimate_forecast_scalars_is_nan_before_min_periods_and_not_backfilled():
    scalars = estimate_forecast_scalars(_gaussian_raw(800, 2, 1.0, seed=3), min_periods=500)
    assert scalars["rule_x"].iloc[:499].isna().all() and scalars["rule_x"].iloc[499:].notna().all()


def test_estimate_forecast_scalars_has_no_look_ahead():
    raw = _gaussian_raw(900, 3, 1.0, seed=4)
    before = estimate_forecast_scalars(raw, min_periods=100)
    perturbed = raw.copy()
    perturbed.iloc[600:] *= 10
    pd.testing.assert_frame_equal(before.iloc[:600], estimate_forecast_scalars(perturbed, min_periods=100).iloc[:600])


def test_estimate_forecast_scalars_accepts_a_forecast_set():
    prices = _prices(n=200)
    fs = compute_forecasts(prices, robust_vol(prices), RulesConfig(ewmac=[(2, 8)], breakout=[10]))
    from_set = estimate_forecast_scalars(fs, min_periods=50)
    pd.testing.assert_frame_equal(from_set, estimate_forecast_scalars(fs.raw, min_periods=50))
    assert list(from_set.columns) == ["breakout10", "ewmac2_8"]


def test_published_ewmac_scalars_give_average_absolute_forecast_near_ten_on_real_futures():
    # Carver's pysystemtrade scalars (ewmac16_64 4.10, ewmac64_256 1.91; carver.md §3.1) were
    # estimated so the average |scaled forecast| is 10 across his whole pool. Over a handful of
    # instruments it should come out within about +/-30% of 10 (single instruments in this data
    # range ~7-10.5); a vol in the wrong units (% returns, annualised) would miss by a factor >= 16.
    path = require_shared_data(CARVER_2023 / "adjusted_prices_daily.parquet")
    instruments = ["SP500", "US10", "GOLD", "CORN", "EUROSTX"]
    long = pd.read_parquet(path, filters=[("instrument", "in", instruments)])
    prices = long.pivot_table(index="date", columns="instrument", values="price", observed=True)
    prices.index = pd.DatetimeIndex(prices.index, name="session")
    prices.columns = pd.Index([str(c) for c in prices.columns], name="instrument")
    assert sorted(prices.columns) == sorted(instruments)
    rules = RulesConfig(ewmac=[(16, 64), (64, 256)], breakout=[])
    fs = compute_forecasts(prices, robust_vol(prices), rules)
    for rule in ("ewmac16_64", "ewmac64_256"):
        mean_abs = fs.scaled[rule].abs().stack().mean()
        assert 7.0 <= mean_abs <= 13.0, (rule, mean_abs)
