"""The Dagster webserver serves the code location on 127.0.0.1; the daily job launched through
GraphQL (as the UI does) succeeds, and the catalog shows every asset with its definition."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.definitions import build_definitions

ALL_ASSETS = list(build_definitions(load_config()).assets)
DAILY_ASSETS = build_definitions(load_config()).resolve_job_def("daily_job").asset_layer.executable_asset_keys
from pipeline.store.warehouse import query
from tests.conftest import LATEST_SAMPLE_SESSION
from tests.ui_support import launch_daily_run, webserver

ASSET_NODES = """{ assetNodes { assetKey { path } groupName description kinds opVersion isPartitioned
                   assetMaterializations(limit: 1) { partition runId } } }"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A webserver with a temporary instance and one daily run launched through GraphQL."""
    with webserver(tmp_path_factory.mktemp("ui")) as ws:
        run_id, status = launch_daily_run(ws)
        nodes = ws.graphql(ASSET_NODES)["data"]["assetNodes"]
        yield ws, run_id, status, {"/".join(n["assetKey"]["path"]): n for n in nodes}


def test_webserver_shows_every_asset_with_its_group(ui):
    *_, nodes = ui
    assert set(nodes) == {key.to_user_string() for a in ALL_ASSETS for key in a.keys}
    assert nodes["clean_bars"]["groupName"] == "quality" and nodes["orders"]["groupName"] == "execution"
    assert nodes["backtest"]["groupName"] == "research"


def test_daily_job_launched_through_graphql_materializes_every_asset_of_the_daily_job(ui):
    ws, run_id, status, nodes = ui
    assert status == "SUCCESS"
    in_daily = {k.to_user_string() for k in DAILY_ASSETS}
    assert {"regime_model", "vol_forecast", "backtest"}.isdisjoint(in_daily)  # the research job's
    for key, node in nodes.items():
        if key not in in_daily:
            assert node["assetMaterializations"] == [], key  # the daily run never refits or backtests
            continue
        (latest,) = node["assetMaterializations"]
        assert latest["runId"] == run_id, key
        assert latest["partition"] == (LATEST_SAMPLE_SESSION if node["isPartitioned"] else None), key
    # The UI launch passes no run config: orders are recorded as dry-run intents, never submitted.
    intents = query(ws.lake, "select status from order_intents where session = date '2022-12-28'")
    assert len(intents) > 0 and set(intents["status"]) == {"RECORDED"}
    assert query(ws.lake, "select count(*) as n from fills")["n"].item() == 0


def test_every_asset_has_a_description_a_group_kinds_and_a_code_version(ui):
    *_, nodes = ui
    for key, node in nodes.items():
        assert node["description"] and len(node["description"]) > 40, key
        assert node["groupName"] and node["groupName"] != "default", key
        assert "python" in node["kinds"] and len(node["kinds"]) >= 2, key  # python + storage or library
        assert node["opVersion"], key
