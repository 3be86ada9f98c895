"""Tests of the assets in assets/ml.py on a small synthetic lake: registry versions, the evidence
gate, and that a run for a session never uses a model trained on data after it."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from assets.ml import (
    REGIME_MODEL_NAME,
    regime_model,
    vol_for_sizing_for_daily,
    vol_forecast,
)
from assets.resources import default_resources
from pipeline.ml.model_registry import list_versions, load_model
from pipeline.store.lake import Lake
from tests.conftest import write_config

SYMBOLS = ["SYA", "SYB", "SYC"]
N = 700


def fill_lake(folder, below_zero: str | None = None) -> tuple[str, pd.DatetimeIndex]:
    """Volatility and combined-forecast tables of three random-walk instruments, 700 sessions;
    ``below_zero``: that instrument's prices are shifted down to cross zero at session 500."""
    config = write_config(folder, symbols=SYMBOLS,
                          regime={"horizon": 10, "retrain_every": 100, "min_train": 300, "min_oos_sessions": 21},
                          vol_forecast={"horizon": 10, "retrain_every": 100, "min_train": 300, "train_stride": 1})
    rng = np.random.default_rng(0)
    idx = pd.DatetimeIndex(pd.bdate_range("2015-01-02", periods=N), name="session")
    daily = np.where((np.arange(N) // 60) % 2 == 1, 0.02, 0.006)
    prices = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(size=(N, 3)) * daily[:, None], axis=0)), idx, SYMBOLS)
    if below_zero is not None:
        prices[below_zero] -= float(prices[below_zero].iloc[500])
    vol = prices.diff().ewm(span=35, min_periods=10).std()
    combined = pd.DataFrame(rng.uniform(-20, 20, size=(N, 3)), idx, SYMBOLS)

    def long(**frames) -> pd.DataFrame:
        out = pd.concat({k: v.stack(future_stack=True) for k, v in frames.items()}, axis=1)
        out.index.names = ["session", "instrument"]
        return out.reset_index()

    lake = Lake(folder / "lake")
    lake.write_sessions("volatility", long(close=prices, vol_price=vol), idx)
    lake.write_sessions("combined_forecast", long(combined=combined), idx)
    return str(config), idx


def set_regime(config: str, **values) -> None:
    path = Path(config)
    raw = yaml.safe_load(path.read_text())
    raw["regime"].update(values)
    path.write_text(yaml.safe_dump(raw))


def run(config: str, session: pd.Timestamp, assets=(regime_model, vol_forecast)) -> dg.ExecuteInProcessResult:
    return dg.materialize(list(assets), resources=default_resources(config),
                          tags={"dagster/partition": str(session.date())}, raise_on_error=False)


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset)
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_ml_assets_record_versions_and_never_use_data_after_the_session(tmp_path):
    config, idx = fill_lake(tmp_path)
    lake = Lake(tmp_path / "lake")
    late, early = idx[-1], idx[450]

    result = run(config, late)
    assert result.success
    regime = metadata(result, "regime_model")
    versions = list_versions(lake.root, REGIME_MODEL_NAME)
    assert list(versions["version"]) == [regime["model_version"]]
    # Refits at positions 299, 399, ..., 699: the evidence and the version are as of 699.
    assert versions["data_end"].iloc[0] == idx[699] and regime["evidence_as_of"] == str(idx[699].date())
    assert "comparison_vol_label" in regime and "calibration" in regime and "vs_previous_version" in regime
    stored = load_model(lake.root, REGIME_MODEL_NAME).metadata  # reproducible from its recorded inputs
    assert stored["code_version"].endswith("asset code_version 2") and stored["params"]["horizon"] == 10
    assert stored["features"][0] == "ret5" and stored["evaluation_key"] == stored["data_hash"]
    assert stored["oos_metrics"]["oos_accuracy"] == pytest.approx(regime["oos_accuracy"])
    table = lake.read_table("regime_model")
    assert table["session"].max() == late
    # Positions take the gated scale: 1 wherever the gate is off.
    assert (table.loc[~table["gate_on"], "risk_scale"] == 1.0).all()

    # A second run for the same session refits nothing: same evidence, same single version.
    again = run(config, late, assets=[regime_model])
    assert metadata(again, "regime_model")["evaluation"].startswith("reused")
    assert len(list_versions(lake.root, REGIME_MODEL_NAME)) == 1

    # A re-run of an earlier session sees only data up to it, and records a version from its own refit.
    past = run(config, early)
    assert past.success
    assert lake.read_table("regime_model")["session"].max() == early
    assert lake.read_table("vol_forecast")["session"].max() == early
    versions = list_versions(lake.root, REGIME_MODEL_NAME)
    assert (versions["data_end"] <= late).all() and idx[399] in set(versions["data_end"])
    used = metadata(past, "regime_model")["model_used_for_session"]
    if not used.startswith("none"):
        assert versions.set_index("version").loc[used, "data_end"] <= early


def test_a_pinned_version_trained_after_the_session_fails_the_run(tmp_path):
    config, idx = fill_lake(tmp_path)
    assert run(config, idx[-1], assets=[regime_model]).success
    pinned = str(list_versions(Lake(tmp_path / "lake").root, REGIME_MODEL_NAME)["version"].iloc[-1])
    set_regime(config, pinned_version=pinned)
    result = run(config, idx[450], assets=[regime_model])
    assert not result.success  # fail closed: no silent fallback to another model
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "saw data up to" in str(failure.step_failure_data.error)
    # The same pin is fine for a session after its data_end.
    assert run(config, idx[-1], assets=[regime_model]).success


def test_vol_forecast_reports_its_decision_and_sizes_only_when_switched_on(tmp_path):
    config, idx = fill_lake(tmp_path)
    result = run(config, idx[-1], assets=[vol_forecast])
    assert result.success
    md = metadata(result, "vol_forecast")
    assert md["used_for_sizing"] is False
    assert "sizing keeps the EWMA/robust vol" in md["sizing_decision"]
    table = Lake(tmp_path / "lake").read_table("vol_forecast")
    assert table["vol_for_sizing"].isna().all()  # switch off: nothing replaces the sizing vol
    assert {"target_var", "sizing_vol", "har", "har_sizing", "gradient_boosting"} <= set(table.columns)
    assert len(list_versions(Lake(tmp_path / "lake").root, "vol_har")) == 1


@pytest.mark.parametrize("require", [True, False])
def test_the_risk_scale_is_gated_by_the_evidence_unless_told_otherwise(tmp_path, require):
    config, idx = fill_lake(tmp_path)
    set_regime(config, use_as_risk_scale=True, require_oos_evidence=require)
    result = run(config, idx[-1], assets=[regime_model])
    table = Lake(tmp_path / "lake").read_table("regime_model").set_index("session")
    md = metadata(result, "regime_model")
    expected = (1 - 0.5 * table["p_high_vol"]).fillna(1.0)
    if require:
        expected = expected.where(table["gate_on"], 1.0)
        assert md["risk_scale_decision"].startswith("applied:" if table["gate_on"].iloc[-1] else "not applied")
    else:
        assert table["gate_on"].all()
    np.testing.assert_allclose(table["risk_scale"].to_numpy(), expected.to_numpy(), atol=1e-12)


def test_vol_forecast_sizes_with_the_winning_model_only_after_the_refit_it_won_at(tmp_path):
    config, idx = fill_lake(tmp_path)
    path = Path(config)
    raw = yaml.safe_load(path.read_text())
    raw["vol_forecast"]["use_for_sizing"] = True
    path.write_text(yaml.safe_dump(raw))
    result = run(config, idx[-1], assets=[vol_forecast])
    md = metadata(result, "vol_forecast")
    assert md["used_for_sizing"] is True and "sizing uses" in md["sizing_decision"]
    table = Lake(tmp_path / "lake").read_table("vol_forecast")
    sized = table.dropna(subset=["vol_for_sizing"])
    # Refits at positions 299, 399, ..., 699; the first (at 299) has no scored forecast yet.
    assert sized["session"].min() > idx[399]
    assert sized["session"].max() == idx[-1]


def set_back_adjusted(config: str, symbol: str) -> None:
    path = Path(config)
    raw = yaml.safe_load(path.read_text())
    for inst in raw["instruments"]:
        if inst["symbol"] == symbol:
            inst.update(sec_type="FUT", back_adjusted=True)
    path.write_text(yaml.safe_dump(raw))


def test_vol_forecast_leaves_out_a_back_adjusted_series_below_zero_and_fails_on_any_other(tmp_path):
    config, idx = fill_lake(tmp_path, below_zero="SYC")
    refused = run(config, idx[-1], assets=[vol_forecast])  # SYC is not back-adjusted: bad data
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    closes = Lake(tmp_path / "lake").read_wide("volatility", "close", ["SYC"])["SYC"]
    first = closes.index[closes.to_numpy() <= 0][0]
    assert f"price <= 0 for SYC on {first.date()}" in str(failure.step_failure_data.error)

    set_back_adjusted(config, "SYC")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([vol_forecast], resources=default_resources(config), instance=instance,
                            tags={"dagster/partition": str(idx[-1].date())})
    assert metadata(result, "vol_forecast")["left_out_nonpositive"] == ["SYC"]
    assert any(e.level == logging.WARNING and "left out" in e.user_message and "SYC" in e.user_message
               for e in instance.all_logs(result.run_id))
    table = Lake(tmp_path / "lake").read_table("vol_forecast")
    assert set(table["instrument"]) == {"SYA", "SYB"}  # no rows: sizing keeps SYC's sizing vol

    # SYA and SYB get the numbers of a universe without SYC (same lake, SYC not configured).
    path = Path(config)
    raw = yaml.safe_load(path.read_text())
    raw["instruments"] = [i for i in raw["instruments"] if i["symbol"] != "SYC"]
    path.write_text(yaml.safe_dump(raw))
    assert run(config, idx[-1], assets=[vol_forecast]).success
    alone = Lake(tmp_path / "lake").read_table("vol_forecast")
    pd.testing.assert_frame_equal(table, alone)
    assert table["har"].notna().sum() > 500


def test_the_daily_sizes_past_the_research_run_with_the_stored_vol_model_as_the_research_would(tmp_path):
    config, idx = fill_lake(tmp_path)
    path = Path(config)
    raw = yaml.safe_load(path.read_text())
    raw["vol_forecast"]["use_for_sizing"] = True
    path.write_text(yaml.safe_dump(raw))
    settings = default_resources(config)["settings"]
    lake = Lake(tmp_path / "lake")
    closes = lake.read_wide("volatility", "close", SYMBOLS)
    vol = lake.read_wide("volatility", "vol_price", SYMBOLS)
    with pytest.raises(dg.Failure, match="vol_forecast.use_for_sizing is on but the vol forecast has never been trained"):
        vol_for_sizing_for_daily(settings, closes, vol)  # fail closed: no silent fallback to the sizing vol

    # The research ran up to idx[-6] (last refit at position 599); the daily of idx[-1] refits nothing.
    assert run(config, idx[-6], assets=[vol_forecast]).success
    versions = {name: list_versions(lake.root, f"vol_{name}") for name in ("har", "har_sizing", "gradient_boosting")}
    daily = vol_for_sizing_for_daily(settings, closes, vol)
    for name, stored in versions.items():
        pd.testing.assert_frame_equal(list_versions(lake.root, f"vol_{name}"), stored)
    assert load_model(lake.root, "vol_har").metadata["sizing_model"] in versions  # the decision is stored
    researched = lake.read_table("vol_forecast").pivot(index="session", columns="instrument", values="vol_for_sizing")
    pd.testing.assert_frame_equal(daily.loc[: idx[-6]], researched.reindex(columns=SYMBOLS), check_names=False,
                                  check_freq=False)
    # Sessions idx[-5:] get the stored model of the refit at 599: what the research run at idx[-1] computes
    # for them too (its own refit at 699 applies only after 699).
    assert run(config, idx[-1], assets=[vol_forecast]).success
    later = lake.read_table("vol_forecast").pivot(index="session", columns="instrument", values="vol_for_sizing")
    tail = daily.loc[idx[-5:]]
    assert tail.notna().all().all()
    np.testing.assert_allclose(tail.to_numpy(), later.loc[idx[-5:], SYMBOLS].to_numpy(), rtol=1e-9)
