"""The daily job on the bundled sample with the optional Carver stages switched on: handcrafted
forecast weights, the speed limit, the stale-price guard and FX conversion in sizing."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import load_config
from pipeline.definitions import execute_daily
from pipeline.store.lake import Lake
from tests.conftest import LATEST_SAMPLE_SESSION, write_config

EURUSD = 2.0  # a made-up constant rate, so the conversion is visible in the sized positions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("options")
    fx_dir = folder / "fx"
    fx_dir.mkdir()
    (fx_dir / "EURUSD.csv").write_text("DATETIME,PRICE\n1989-12-29 23:00:00,2.0\n")
    config = write_config(
        folder,
        combination={"forecast_weights_method": "handcraft", "apply_speed_limit": True},
        stale_guard={"sessions": 5},
        portfolio={"fx_path": str(fx_dir)},
    )
    data = yaml.safe_load(config.read_text())
    for inst in data["instruments"]:
        if inst["symbol"] == "KO":
            inst["currency"] = "EUR"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=False, config_path=str(config), instance=instance)
        yield result, load_config(config)


def _metadata(result, key):
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == key:
            return event.materialization.metadata
    raise AssertionError(f"{key} not materialized")


def test_the_run_succeeds_and_shows_weights_and_exclusions(run):
    result, _ = run
    assert result.success
    meta = _metadata(result, "combined_forecast")
    assert meta["forecast_weights_method"].value == "handcraft"
    weights = meta["forecast_weights"].value
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    # a one-share trade of these stocks pays the USD 1 minimum: the fastest rule is far over 0.13
    assert "ewmac2_8" in meta["excluded_by_speed_limit"].value


def test_combined_forecasts_stay_capped(run):
    _, cfg = run
    combined = Lake(cfg.lake_path).read("combined_forecast")
    assert np.isfinite(combined["combined"]).all() and combined["combined"].abs().max() <= 20.0


def test_the_eur_instrument_is_sized_through_the_fx_rate(run):
    _, cfg = run
    pos = Lake(cfg.lake_path).read("target_positions")
    vol = Lake(cfg.lake_path).read("volatility")
    last = pd.Timestamp(LATEST_SAMPLE_SESSION)
    merged = pos[pos["session"] == last].merge(vol[vol["session"] == last], on=["session", "instrument"])
    merged = merged.set_index("instrument")
    cash_target = cfg.portfolio.capital * cfg.portfolio.vol_target / 16
    # vol scalar = daily cash target / (daily vol x point size x fx)
    assert merged.loc["KO", "vol_scalar"] == pytest.approx(cash_target / (merged.loc["KO", "vol_price"] * EURUSD))
    assert merged.loc["JPM", "vol_scalar"] == pytest.approx(cash_target / merged.loc["JPM", "vol_price"])
