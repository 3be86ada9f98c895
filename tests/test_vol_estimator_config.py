"""The vol estimator from the configuration (``vol``): the signal stage's vol is pst's robust,
plain EWMA or mixed vol as configured, checked against independent pandas computations and
through the ``volatility`` asset."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from assets import ingest, quality, signals
from assets.partitions import daily_partitions
from assets.resources import default_resources
from pipeline.config import VolConfig, load_config
from pipeline.signals.volatility import estimate_vol
from pipeline.store.lake import Lake
from tests.conftest import write_config


def _prices(n: int = 900, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-01", periods=n, name="session")
    # a quiet second half: the robust floor binds there, the plain EWMA does not
    steps = np.r_[rng.normal(0, 1.0, n // 2), rng.normal(0, 0.1, n - n // 2)]
    return pd.DataFrame({"A": 100 + steps.cumsum()}, index=index)


def test_ewma_is_the_pandas_ewm_std_of_price_changes():
    prices = _prices()
    got = estimate_vol(prices, VolConfig(estimator="ewma", span=20, min_periods=5))
    expected = prices.diff().ewm(span=20, adjust=True, min_periods=5).std()
    np.testing.assert_allclose(got["A"].to_numpy(), expected["A"].to_numpy(), rtol=1e-12, equal_nan=True)


def test_robust_floors_the_ewma_at_the_quantile_of_its_own_past():
    prices = _prices()
    ewma = estimate_vol(prices, VolConfig(estimator="ewma"))["A"]
    robust = estimate_vol(prices, VolConfig(estimator="robust"))["A"]
    floor = ewma.rolling(500, min_periods=100).quantile(0.05).ffill().fillna(0.0)
    np.testing.assert_allclose(robust.to_numpy(), np.maximum(ewma, floor).to_numpy(), rtol=1e-12, equal_nan=True)
    assert (robust.dropna() >= ewma.dropna()).all()
    assert (robust > ewma * 1.5).sum() >= 10  # the floor binds as the quiet spell starts


def test_mixed_blends_the_fast_vol_with_its_slow_ewma():
    prices = _prices()
    got = estimate_vol(prices, VolConfig(estimator="mixed", slow_vol_years=20, proportion_of_slow_vol=0.35))["A"]
    fast = prices["A"].diff().ewm(span=35, adjust=True, min_periods=10).std()
    expected = 0.35 * fast.ewm(span=20 * 256).mean() + 0.65 * fast
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12, equal_nan=True)


def test_bad_settings_are_refused_with_their_field():
    with pytest.raises(ValidationError, match="estimator"):
        VolConfig(estimator="garch")
    with pytest.raises(ValidationError, match="floor_days"):
        VolConfig(floor_days=50, floor_min_periods=100)


@pytest.mark.parametrize("estimator", ["ewma", "mixed"])
def test_the_volatility_asset_uses_the_configured_estimator(tmp_path, estimator):
    config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="2020-01-02",
                          vol={"estimator": estimator, "span": 25})
    cfg = load_config(config)
    daily = daily_partitions(cfg)
    assets = [*ingest.build(daily), *quality.build(daily), *signals.build(daily)]
    volatility = [a for a in assets if dg.AssetKey("volatility") in a.keys]
    upstream = [a for a in assets if a.keys & {dg.AssetKey("raw_bars"), dg.AssetKey("clean_bars")}]
    with dg.instance_for_test() as instance:
        result = dg.materialize([*upstream, *volatility], partition_key="2022-12-28", instance=instance,
                                resources=default_resources(str(config), config=cfg), raise_on_error=False)
    assert result.success
    lake = Lake(tmp_path / "lake")
    closes = lake.read_wide("clean_bars", "close", cfg.symbols)
    stored = lake.read_wide("volatility", "vol_price", cfg.symbols)
    expected = estimate_vol(closes, VolConfig(estimator=estimator, span=25)).reindex(stored.index)
    np.testing.assert_allclose(stored.to_numpy(), expected.to_numpy(), rtol=1e-10)
    default = estimate_vol(closes).reindex(stored.index)
    assert not np.allclose(stored.to_numpy(), default.to_numpy(), rtol=1e-6)  # not the default estimator
