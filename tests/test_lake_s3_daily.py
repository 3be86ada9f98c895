"""The daily job end to end with the lake in an S3 bucket (moto's S3 server on 127.0.0.1).

``lake_root: s3://...`` and ``state_root: <local folder>``: the Parquet tables go to the bucket,
the ledger (orders, kill switch), the order-run locks and the model registry to the local folder,
and ``trading-pipeline query`` answers from both. The same run on a local lake is the reference:
every table read back from the bucket equals the local one.
"""

import io
import os
import subprocess
import sys

import duckdb
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import load_config
from pipeline.store.lake import Lake
from pipeline.store.paths import StorageError, lake_root, state_path
from pipeline.store.warehouse import WAREHOUSE_FILE, connect, query
from tests.conftest import LATEST_SAMPLE_SESSION, write_config
from tests.s3_server import s3_bucket

SYMBOLS = ["AAPL", "KO", "XOM"]
#: Tables the daily job writes (the session tables and whole tables of estimates).
TABLES = ["raw_bars", "clean_bars", "volatility", "forecasts", "combined_forecast", "target_positions",
          "instrument_weights", "idm"]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, check=False,
                          timeout=600)


def _config(folder, lake: str, state=None):
    path = write_config(folder, symbols=SYMBOLS, history_start="2017-01-03")
    raw = yaml.safe_load(path.read_text())
    raw["lake_root"] = lake
    if state is not None:
        raw["state_root"] = str(state)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same daily run (orders submitted to the paper broker) on an S3 lake and on a local lake."""
    with s3_bucket(bucket="trading-daily") as url:  # moto keeps one S3 state per process: own bucket
        out = {}
        for name in ("s3", "local"):
            folder = tmp_path_factory.mktemp(name)
            config = _config(folder, url if name == "s3" else str(folder / "lake"),
                             folder / "state" if name == "s3" else None)
            env = {**os.environ, "DAGSTER_HOME": str(folder / "dagster_home"), "TRADING_PIPELINE_CONFIG": str(config)}
            env.pop("TRADING_PIPELINE_LAKE", None)
            run = _cli("daily", "--session", LATEST_SAMPLE_SESSION, env=env)
            assert run.returncode == 0, run.stderr[-3000:]
            out[name] = {"folder": folder, "config": config, "env": env, "stdout": run.stdout}
        yield url, out


def test_the_parquet_tables_are_objects_in_the_bucket_and_the_state_is_local(runs):
    url, out = runs
    fs, base = pafs.FileSystem.from_uri(url)
    objects = [i.path[len(base) + 1:] for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
               if i.type == pafs.FileType.File]
    assert objects and all(o.endswith(".parquet") for o in objects)  # no ledger, lock or model in the bucket
    for table in ("clean_bars", "target_positions", "volatility"):
        assert f"{table}/year=2022/part.parquet" in objects and f"{table}/year=2017/part.parquet" in objects
    assert any(o.startswith("raw_bars/year=2022/batch-") for o in objects)
    assert "idm/table.parquet" in objects

    state = out["s3"]["folder"] / "state"
    assert (state / WAREHOUSE_FILE).is_file()
    assert (state / "locks" / "orders-carver.lock").is_file()  # the order-run lock sits beside the ledger
    assert not (out["s3"]["folder"] / "lake").exists()
    assert f"Parquet lake {url}" in out["s3"]["stdout"]
    assert f"ledger and views {state / WAREHOUSE_FILE}" in out["s3"]["stdout"]


def test_every_table_in_the_bucket_equals_the_local_run(runs):
    url, out = runs
    remote, local = Lake(url), Lake(out["local"]["folder"] / "lake")
    assert remote.tables() == local.tables()
    assert set(TABLES) <= set(remote.tables())
    for table in remote.tables():
        if (out["local"]["folder"] / "lake" / table / "table.parquet").exists():
            a, b = remote.read_table(table), local.read_table(table)
        else:
            a, b = remote.read(table), local.read(table)
        a, b = a.drop(columns=["fetched_at"], errors="ignore"), b.drop(columns=["fetched_at"], errors="ignore")
        pd.testing.assert_frame_equal(a, b, obj=table)


def test_query_answers_from_the_bucket_and_the_local_ledger(runs):
    url, out = runs
    env = out["s3"]["env"]
    sql = (f"select p.instrument, i.asset_class, p.target from target_positions p join instruments i using (instrument) "
           f"where p.session = date '{LATEST_SAMPLE_SESSION}' order by p.instrument")
    answer = _cli("query", sql, "--csv", env=env)
    assert answer.returncode == 0, answer.stderr
    got = pd.read_csv(io.StringIO(answer.stdout))
    # independently: the 2022 object of target_positions, read straight from the bucket with pyarrow
    fs, base = pafs.FileSystem.from_uri(url)
    stored = pq.read_table(f"{base}/target_positions/year=2022/part.parquet", filesystem=fs).to_pandas()
    stored = stored[stored["session"] == pd.Timestamp(LATEST_SAMPLE_SESSION).date()].sort_values("instrument")
    assert got["instrument"].tolist() == SYMBOLS
    assert got["target"].tolist() == stored["target"].tolist()
    assert got["asset_class"].tolist() == ["equity_tech", "equity_staples", "equity_energy"]

    orders = _cli("query", "select order_ref, status from order_intents order by order_ref", "--csv", env=env)
    local = _cli("query", "select order_ref, status from order_intents order by order_ref", "--csv",
                 env=out["local"]["env"])
    assert orders.returncode == 0 and local.returncode == 0, orders.stderr + local.stderr
    assert orders.stdout == local.stdout and "carver:2022-12-28:AAPL:1" in orders.stdout

    typo = _cli("query", "select * from target_position", env=env)
    assert typo.returncode != 0 and "target_positions" in typo.stderr  # lists the tables that exist


def test_the_kill_switch_is_set_in_the_local_state_folder(runs):
    _, out = runs
    env = out["s3"]["env"]
    halted = _cli("kill-switch", "HALTED", "--reason", "test", env=env)
    assert halted.returncode == 0 and "trading state: HALTED" in halted.stdout
    cfg = load_config(out["s3"]["config"])
    log = query(lake_root(cfg), "select state, reason from trading_state_log", state_root=state_path(cfg))
    assert log.values.tolist() == [["HALTED", "test"]]
    _cli("kill-switch", "ACTIVE", "--reason", "test over", env=env)


def test_connect_without_a_state_folder_has_the_parquet_tables_only(runs):
    url, _ = runs
    con = connect(url)
    try:
        assert con.execute("select count(*) from clean_bars").fetchone()[0] > 0
        with pytest.raises(duckdb.CatalogException):
            con.execute("select * from order_intents")
    finally:
        con.close()


def test_an_object_store_lake_without_state_root_is_a_clear_error(tmp_path, runs):
    url, _ = runs
    cfg = load_config(_config(tmp_path, url))
    with pytest.raises(StorageError, match="set state_root"):
        state_path(cfg)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dh"), "TRADING_PIPELINE_CONFIG": str(tmp_path / "config.yaml")}
    run = _cli("daily", "--session", LATEST_SAMPLE_SESSION, env=env)
    assert run.returncode == 2 and "set state_root" in run.stderr
    assert not (tmp_path / "dh").exists()  # refused before any run was started
