"""The daily job materialized through Dagster on the bundled real sample (a persistent test instance)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import load_config
from pipeline.definitions import (
    build_definitions,
    execute_backfill,
    execute_daily,
    execute_research,
)
from pipeline.ml.model_registry import list_versions, load_model, read_experiments
from pipeline.ml.regime_features import market_features
from pipeline.store.lake import Lake
from pipeline.store.ledger import Ledger
from tests.conftest import LATEST_SAMPLE_SESSION, SMALL_UNIVERSE, write_config

defs = build_definitions(load_config())
PARTITIONED = ["raw_bars", "clean_bars", "volatility", "forecasts", "combined_forecast", "target_positions", "orders"]
#: The research job's assets: refits and the backtest, never part of the daily trading run.
RESEARCH = {"backtest", "regime_model", "vol_forecast"}


def _job_keys(name: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(name).asset_layer.executable_asset_keys}


@pytest.fixture(scope="module")
def daily_run(tmp_path_factory):
    """One daily run for the sample's latest session on a fresh lake (fills history first)."""
    folder = tmp_path_factory.mktemp("daily")
    config = write_config(folder)
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
        yield result, load_config(config), instance, str(config)


def _lake(cfg) -> Lake:
    return Lake(cfg.lake_path)


def test_daily_run_succeeds_and_materializes_every_asset(daily_run):
    result, *_ = daily_run
    assert result.success
    keys = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert keys == {a.key.to_user_string() for a in defs.assets} - RESEARCH == _job_keys("daily_job")
    partitions = {e.partition for e in result.get_asset_materialization_events() if e.partition}
    assert partitions == {LATEST_SAMPLE_SESSION}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"no_quarantined_bars", "bars_complete", "no_stale_prices", "no_price_spikes", "expectations_hold", "weights_not_concentrated",
                           "no_non_session_bars"}
    assert all(c.passed for c in checks.values() if c.severity == dg.AssetCheckSeverity.ERROR)
    # The Great Expectations suite ran on the session's clean bars (equity: schema, uniqueness, OHLC...).
    assert checks["expectations_hold"].metadata["expectations"].value >= 8


def test_the_research_assets_are_the_research_jobs_not_the_daily_jobs():
    daily, research = _job_keys("daily_job"), _job_keys("research_job")
    assert not daily & RESEARCH and research == RESEARCH
    assert {"raw_bars", "clean_bars", "target_positions", "orders"} <= daily
    job = defs.resolve_job_def("research_job")
    assert job.partitions_def is None and job.tags["trading/job"] == "research"  # all history; not queued as a daily
    schedule = defs.resolve_schedule_def("research_after_close")
    assert schedule.job_name == "research_job" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_forecasts_are_finite_and_capped(daily_run):
    _, cfg, *_ = daily_run
    lake = _lake(cfg)
    f = lake.read("forecasts", start=pd.Timestamp(LATEST_SAMPLE_SESSION))
    assert set(f["instrument"]) == set(SMALL_UNIVERSE)
    assert set(f["rule"]) == set(cfg.rules.rule_names)
    assert np.isfinite(f["capped"]).all() and f["capped"].abs().max() <= 20.0
    combined = lake.read("combined_forecast")
    assert combined["combined"].abs().max() <= 20.0 and np.isfinite(combined["combined"]).all()
    # The full history was filled on the fresh lake: Carver's scaled forecasts average |10| roughly.
    hist = lake.read("forecasts")
    mean_abs = hist.groupby("rule")["capped"].apply(lambda s: s.abs().mean())
    assert mean_abs.between(4, 16).all(), mean_abs


def test_instrument_weights_have_equal_risk_contributions(daily_run):
    _, cfg, *_ = daily_run
    w = _lake(cfg).read_table("instrument_weights")
    active = w[w["weight"] > 0]
    spread = active.groupby("estimated_at")["risk_contribution"].agg(lambda s: s.max() - s.min())
    assert spread.max() < 1e-6
    sums = w.groupby("estimated_at")["weight"].sum()
    assert np.allclose(sums, 1.0)
    idm = _lake(cfg).read_table("idm")["idm"]
    assert idm.between(1.0, 2.5).all()


def test_orders_take_the_paper_positions_to_the_targets_through_the_gate(daily_run):
    _, cfg, *_ = daily_run
    lake = _lake(cfg)
    targets = lake.read("target_positions", start=pd.Timestamp(LATEST_SAMPLE_SESSION)).set_index("instrument")["target"]
    ledger = Ledger(cfg.lake_path / "warehouse.duckdb")
    intents = ledger.intents(session=LATEST_SAMPLE_SESSION).set_index("instrument")
    assert intents["order_ref"].str.fullmatch(rf"{cfg.broker.strategy}:{LATEST_SAMPLE_SESSION}:[A-Z]+:1").all()
    # The lake starts flat, so every instrument with a non-zero target gets exactly one order.
    assert set(intents.index) == set(targets[targets != 0].index)
    filled = intents[intents["status"] == "FILLED"]
    denied = intents[intents["status"] == "DENIED"]
    assert len(filled) + len(denied) == len(intents) and len(filled) > 0
    # Denials carry the rule and the numbers: with five instruments the positions are large enough
    # that an order above the 500,000 USD notional limit is refused.
    notional = (targets * lake.read("target_positions", start=pd.Timestamp(LATEST_SAMPLE_SESSION)).set_index("instrument")["price"]).abs()
    assert set(denied.index) == set(notional[notional > cfg.risk.max_order_notional].index)
    assert denied["deny_reason"].str.startswith("max_order_notional").all()
    held = ledger.fills().groupby("instrument")["quantity"].sum()
    pd.testing.assert_series_equal(held.sort_index(), targets[filled.index].sort_index(), check_names=False)


def test_rerunning_the_same_session_sends_nothing_new(daily_run):
    _, cfg, instance, config = daily_run
    ledger = Ledger(cfg.lake_path / "warehouse.duckdb")
    fills_before = len(ledger.fills())
    intents_before = len(ledger.intents(session=LATEST_SAMPLE_SESSION))
    again = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=config, instance=instance)
    assert again.success
    # Filled orders leave no residual; the denied one is unchanged, so it is not recorded twice.
    assert len(ledger.fills()) == fills_before
    assert len(ledger.intents(session=LATEST_SAMPLE_SESSION)) == intents_before


def test_an_older_partition_records_intents_and_sends_nothing(daily_run):
    _, cfg, instance, config = daily_run
    ledger = Ledger(cfg.lake_path / "warehouse.duckdb")
    fills_before = len(ledger.fills())
    older = execute_daily("2022-12-20", submit=True, config_path=config, instance=instance)
    assert older.success
    recorded = ledger.intents(session="2022-12-20")
    assert len(recorded) > 0 and (recorded["status"].isin(["RECORDED", "DENIED"])).all()
    assert len(ledger.fills()) == fills_before
    meta = next(e for e in older.get_asset_materialization_events() if e.asset_key.to_user_string() == "orders")
    assert meta.materialization.metadata["submitted"].value is False


def test_single_run_backfill_over_a_year_writes_every_partition(tmp_path):
    config = write_config(tmp_path, symbols=["AAPL", "KO", "XOM"])
    cfg = load_config(config)
    with dg.instance_for_test() as instance:
        result = execute_backfill("2021-12-28", LATEST_SAMPLE_SESSION, config_path=str(config), instance=instance)
        assert result.success
        runs = instance.get_runs()
        assert len(runs) == 1
    # NYSE: 251 sessions in 2022, plus 2021-12-28..31 (4), less 2022-12-29 and 12-30 (2) = 253; the
    # 9 weekday holidays of 2022 (MLK day .. Christmas observed) are partitions too: 262 weekdays.
    n_sessions, holidays = 253, ["2022-01-17", "2022-02-21", "2022-04-15", "2022-05-30", "2022-06-20",
                                 "2022-07-04", "2022-09-05", "2022-11-24", "2022-12-26"]
    weekdays = {d.strftime("%Y-%m-%d") for d in pd.bdate_range("2021-12-28", LATEST_SAMPLE_SESSION)}
    assert len(weekdays) == n_sessions + len(holidays) == 262
    events = result.get_asset_materialization_events()
    for asset in PARTITIONED:  # every weekday of the range is recorded as materialized, holidays included
        assert {e.partition for e in events if e.asset_key.to_user_string() == asset} == weekdays, asset
    lake = Lake(cfg.lake_path)
    tp = lake.read("target_positions", start=pd.Timestamp("2021-12-28"))
    assert tp["session"].nunique() == n_sessions  # ... but only sessions have rows
    assert not tp["session"].isin(pd.to_datetime(holidays)).any()
    ledger = Ledger(cfg.lake_path / "warehouse.duckdb")
    assert ledger.fills().empty  # a backfill never sends orders
    assert (ledger.intents()["status"].isin(["RECORDED", "DENIED"])).all()


def test_the_daily_scales_positions_with_the_stored_regime_model_and_never_refits_it(tmp_path):
    # Without the out-of-sample evidence gate (tested in test_ml_assets.py) the scale always applies.
    config = write_config(tmp_path, symbols=["AAPL", "KO", "XOM"],
                          regime={"use_as_risk_scale": True, "high_vol_scale": 0.5, "require_oos_evidence": False})
    cfg = load_config(config)
    lake = Lake(cfg.lake_path)
    researched = "2022-12-20"
    with dg.instance_for_test() as instance:
        # Asked for a model that was never trained: the daily fails closed before any position or order.
        first = execute_daily(researched, submit=False, config_path=str(config), instance=instance)
        assert not first.success
        failure = next(e for e in first.all_events if e.is_step_failure)
        assert failure.step_key == "target_positions"
        assert "regime.use_as_risk_scale is on but the regime model has never been trained" in str(
            failure.step_failure_data.error)
        assert "target_positions" not in lake.tables() and "orders" not in lake.tables()

        # The research job trains the models; its backtest waits for positions, which need the model.
        research = execute_research(config_path=str(config), instance=instance)
        assert {e.asset_key.to_user_string() for e in research.get_asset_materialization_events()} == {
            "regime_model", "vol_forecast"}
        failure = next(e for e in research.all_events if e.is_step_failure)
        assert failure.step_key == "backtest" and "no target positions in the lake" in str(failure.step_failure_data.error)
        versions = list_versions(cfg.lake_path, "vol_regime")
        logged = len(read_experiments(cfg.lake_path))
        assert len(versions) == 1 and versions["data_end"].iloc[0] <= pd.Timestamp(researched)
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=False, config_path=str(config), instance=instance)
    assert result.success
    assert not {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} & RESEARCH
    # The daily fitted nothing: no new model version, no experiment logged.
    pd.testing.assert_frame_equal(list_versions(cfg.lake_path, "vol_regime"), versions)
    assert len(read_experiments(cfg.lake_path)) == logged

    regime = lake.read_table("regime_model").set_index("session")
    assert regime.index.max() == pd.Timestamp(researched)
    scale = lake.read("target_positions").groupby("session")["risk_scale"].first()
    # Up to the research run: risk scale = 1 - (1 - 0.5) * P(high vol) of the walk-forward, 1 before its first fit.
    upto = scale.index <= pd.Timestamp(researched)
    expected = (1 - 0.5 * regime["p_high_vol"].reindex(scale.index[upto])).fillna(1.0)
    np.testing.assert_allclose(scale[upto].to_numpy(), expected.to_numpy(), atol=1e-12)
    assert scale.min() < 0.75 and scale.max() == 1.0
    # After it (2022-12-21 .. 12-28): the stored version's probability on each session's features.
    stored = load_model(cfg.lake_path, "vol_regime")
    closes = lake.read_wide("volatility", "close", cfg.symbols)
    vol = lake.read_wide("volatility", "vol_price", cfg.symbols)
    combined = lake.read_wide("combined_forecast", "combined", cfg.symbols).reindex(closes.index)
    volume = lake.read_wide("clean_bars", "volume", cfg.symbols).reindex(closes.index)
    features = market_features(closes, vol, combined, volume)[stored.metadata["features"]]
    after = scale.index[~upto]
    assert list(after.strftime("%Y-%m-%d")) == ["2022-12-21", "2022-12-22", "2022-12-23", "2022-12-27", LATEST_SAMPLE_SESSION]
    p = stored.model.predict_proba(features.loc[after])[:, list(stored.model.classes_).index(1)]
    np.testing.assert_allclose(scale[after].to_numpy(), 1 - 0.5 * p, atol=1e-12)
    assert scale[after].between(0.5, 1.0).all() and scale[after].nunique() > 1


def test_estimated_scalars_and_a_long_only_instrument(tmp_path):
    config = write_config(tmp_path, symbols=["AAPL", "KO", "XOM"], rules={"scalars": "estimate"})
    raw = yaml.safe_load(config.read_text())
    for instrument in raw["instruments"]:
        instrument["long_only"] = instrument["symbol"] == "KO"
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config)
    with dg.instance_for_test() as instance:
        result = execute_daily(LATEST_SAMPLE_SESSION, submit=False, config_path=str(config), instance=instance)
    assert result.success
    lake = Lake(cfg.lake_path)
    scalars = lake.read_table("forecast_scalars").pivot(index="session", columns="rule", values="scalar")
    f = lake.read("forecasts")
    last = f[f["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION)].set_index(["instrument", "rule"])
    latest_scalar = scalars.loc[pd.Timestamp(LATEST_SAMPLE_SESSION)]
    ratio = (last["scaled"] / last["raw"]).groupby(level="rule").first()
    np.testing.assert_allclose(ratio.to_numpy(), latest_scalar.reindex(ratio.index).to_numpy(), rtol=1e-12)
    # Before the first estimate (500 sessions) the published scalar applies.
    early = f[f["session"] == f["session"].min() + pd.Timedelta(days=60)].set_index(["instrument", "rule"])
    early_ratio = (early["scaled"] / early["raw"]).groupby(level="rule").first()
    for rule, value in early_ratio.items():
        assert value == pytest.approx(cfg.rules.forecast_scalars[rule])
    ko = f[f["instrument"] == "KO"]
    assert (ko["capped"] >= 0).all() and (f.loc[f["instrument"] != "KO", "capped"] < 0).any()
    assert (lake.read("target_positions").query("instrument == 'KO'")["target"] >= 0).all()


def test_backtest_outputs_reconcile(daily_run):
    _, cfg, instance, config = daily_run
    result = execute_research(config_path=config, instance=instance)  # the backtest is the research job's
    assert result.success
    lake = _lake(cfg)
    daily = lake.read_table("backtest_daily")
    portfolio = lake.read_table("backtest")
    trades = lake.read_table("backtest_trades")
    # Per-instrument net P&L adds up to the portfolio's; round-trip trades add up to the gross P&L.
    assert portfolio["pnl_net"].sum() == pytest.approx(daily["pnl_net"].sum(), rel=1e-12)
    assert trades["pnl"].sum() == pytest.approx(daily["pnl_gross"].sum(), rel=1e-9)
    meta = next(e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "backtest")
    md = meta.materialization.metadata
    assert md["equity_curve"].value.startswith("![equity and drawdown](data:image/png;base64,")
    assert {"trades", "var_cvar", "pnl_by_asset_class", "stress_on_current_positions", "metrics"} <= set(md)
