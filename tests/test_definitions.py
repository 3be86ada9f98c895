"""The code location as an operator sees it: every asset documented and grouped, safe policies
in the right places (retries on data fetching only, never on orders), instance config loads."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline.config import load_config
from pipeline.definitions import build_definitions, ensure_dagster_home

defs = build_definitions(load_config())
ALL_ASSETS = list(defs.assets)

PARTITIONED = {"raw_bars", "clean_bars", "volatility", "forecasts", "combined_forecast", "target_positions", "orders"}


def _spec(asset) -> dg.AssetSpec:
    (spec,) = asset.specs
    return spec


@pytest.mark.parametrize("asset", ALL_ASSETS, ids=lambda a: a.key.to_user_string())
def test_every_asset_has_a_description_group_kinds_and_code_version(asset):
    spec = _spec(asset)
    assert spec.description and len(spec.description) > 40
    assert spec.group_name in {"ingest", "quality", "signals", "portfolio", "research", "execution"}
    assert spec.kinds and spec.code_version


def test_daily_assets_are_single_run_partitioned_with_a_freshness_deadline():
    for asset in ALL_ASSETS:
        name = asset.key.to_user_string()
        if name in PARTITIONED:
            assert asset.partitions_def is not None and asset.backfill_policy == dg.BackfillPolicy.single_run(), name
            assert _spec(asset).freshness_policy is not None, name
        else:
            assert asset.partitions_def is None, name


def test_retries_on_data_fetching_only_never_on_the_order_step():
    by_name = {a.key.to_user_string(): a for a in ALL_ASSETS}
    assert by_name["raw_bars"].op.retry_policy is not None
    assert by_name["orders"].op.retry_policy is None
    # one order step / one bar fetch at a time rest on flocks a killed run cannot keep (test_dead_run.py),
    # not on Dagster pool slots
    assert by_name["orders"].op.pool is None and by_name["raw_bars"].op.pool is None


def test_the_daily_and_research_jobs_cover_every_asset_and_the_order_asset_has_no_automation():
    daily, research = ({k.to_user_string() for k in defs.resolve_job_def(name).asset_layer.executable_asset_keys}
                       for name in ("daily_job", "research_job"))
    assert daily | research == {a.key.to_user_string() for a in ALL_ASSETS} and not daily & research
    assert research == {"backtest", "regime_model", "vol_forecast"}  # refits and the backtest: not the trading run
    assert all(_spec(a).automation_condition is None for a in ALL_ASSETS)


def test_the_project_instance_config_is_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    home = ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        assert str(home) == str(tmp_path)
        limits = instance.get_concurrency_config()
        assert limits.pool_config.default_pool_limit == 1
