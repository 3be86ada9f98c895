"""Where things go: the lake root (folder or URL) and the local state folder (pipeline.store.paths)."""

import pandas as pd
import pytest

from pipeline.config import LAKE_ENV_VAR, PipelineConfig
from pipeline.store.lake import Lake
from pipeline.store.paths import StorageError, lake_root, state_path
from pipeline.store.warehouse import publish_views

S3 = "s3://bucket/prod?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"


def _cfg(**kw) -> PipelineConfig:
    return PipelineConfig(instruments=[{"symbol": "AAPL", "sec_type": "STK", "asset_class": "equity"}], **kw)


@pytest.fixture(autouse=True)
def _no_lake_env(monkeypatch):
    monkeypatch.delenv(LAKE_ENV_VAR, raising=False)


def test_a_local_lake_keeps_its_state_in_the_lake_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg()  # lake_root: data_lake, state_root: None, as in the default configuration
    assert lake_root(cfg) == tmp_path / "data_lake"
    assert state_path(cfg) == tmp_path / "data_lake"
    assert state_path(cfg, tmp_path / "other") == tmp_path / "other"  # the lake in use, e.g. from --lake


def test_override_then_environment_then_file(tmp_path, monkeypatch):
    cfg = _cfg(lake_root=str(tmp_path / "file"))
    assert lake_root(cfg) == tmp_path / "file"
    monkeypatch.setenv(LAKE_ENV_VAR, str(tmp_path / "env"))
    assert lake_root(cfg) == tmp_path / "env"
    assert lake_root(cfg, str(tmp_path / "cli")) == tmp_path / "cli"
    assert lake_root(cfg, (tmp_path / "url").as_uri()) == tmp_path / "url"  # file:// is a local folder


def test_an_object_store_lake_needs_a_local_state_root(tmp_path):
    cfg = _cfg(lake_root=S3)
    assert lake_root(cfg) == S3  # the URL as pyarrow.fs takes it, options included
    with pytest.raises(StorageError, match=r"lake_root 's3://bucket/prod\?.*set state_root"):
        state_path(cfg)
    cfg = _cfg(lake_root=S3, state_root=str(tmp_path / "state"))
    assert state_path(cfg) == tmp_path / "state"
    assert state_path(cfg, override=(tmp_path / "cli").as_uri()) == tmp_path / "cli"


def test_a_state_root_on_an_object_store_is_refused():
    with pytest.raises(StorageError, match="state_root 's3://bucket/state' is an object-store URL"):
        state_path(_cfg(state_root="s3://bucket/state"))


def test_state_root_moves_the_ledger_out_of_a_local_lake(tmp_path):
    Lake(tmp_path / "lake").write_sessions("t", pd.DataFrame({"session": [pd.Timestamp("2022-12-28")], "x": [1.0]}),
                                           [pd.Timestamp("2022-12-28")])
    assert publish_views(tmp_path / "lake", tmp_path / "state") == ["t"]
    assert (tmp_path / "state" / "warehouse.duckdb").is_file()
    assert not (tmp_path / "lake" / "warehouse.duckdb").exists()
    assert publish_views(S3, tmp_path / "state") == []  # an object-store lake: no view is stored (no connection made)
