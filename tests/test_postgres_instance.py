"""The Dagster instance on PostgreSQL (``deploy/dagster.postgres.yaml``) against a real server.

A PostgreSQL server from Debian's package is started in a temp folder on 127.0.0.1; the daily job
and a short single-run backfill run against an instance configured by the shipped YAML, and the
run and event storage are read back with SQL. Skipped when the binaries are absent, except in CI
(env ``CI`` set), where their absence is a failure.
"""

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from tests.pg_server import postgres_bin, postgres_server

ROOT = Path(__file__).resolve().parents[1]
PG_YAML = ROOT / "deploy" / "dagster.postgres.yaml"

if postgres_bin() is None:
    if os.environ.get("CI"):
        pytest.fail("CI: PostgreSQL binaries (initdb, pg_ctl) are missing; apt-get install postgresql", pytrace=False)
    pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)", allow_module_level=True)

psycopg2 = pytest.importorskip("psycopg2", reason="pip install -e '.[postgres]'")

#: NYSE sessions 2022-12-20 .. 2022-12-28: the 26th (Christmas observed) is a holiday.
BACKFILL_SESSIONS = ["2022-12-20", "2022-12-21", "2022-12-22", "2022-12-23", "2022-12-27", "2022-12-28"]


def _assets() -> tuple[list[str], list[str]]:
    """(session-partitioned, unpartitioned) asset names of the daily job."""
    from pipeline.config import load_config
    from pipeline.definitions import build_definitions

    defs = build_definitions(load_config())
    in_daily = defs.resolve_job_def("daily_job").asset_layer.executable_asset_keys  # not the research job's
    keys = [(key.to_user_string(), a.partitions_def is not None) for a in defs.assets for key in a.keys
            if key in in_daily]
    return [k for k, p in keys if p], [k for k, p in keys if not p]


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture()
def pg_instance(pg, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PG_YAML, home / "dagster.yaml")
    for key, value in {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port),
                       "DAGSTER_PG_USER": pg.user, "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": pg.db}.items():
        monkeypatch.setenv(key, value)
    for key in ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"):
        monkeypatch.delenv(key, raising=False)
    with dg.DagsterInstance.get() as instance:
        yield instance


def _sql(pg, query: str, *params):
    with psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname=pg.db) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def test_shipped_yaml_selects_postgres_storage(pg_instance):
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.schedule_storage, PostgresScheduleStorage)
    # the run-level safety of the default instance carries over
    limits = pg_instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "trading/job", "value": "daily", "limit": 1} in limits


def test_daily_job_and_backfill_are_stored_in_postgres(pg, pg_instance, tmp_path):
    from pipeline.definitions import execute_backfill, execute_daily

    lake = str(tmp_path / "lake")
    daily = execute_daily("2022-12-28", submit=False, lake_root=lake, instance=pg_instance)
    assert daily.success
    backfill = execute_backfill(BACKFILL_SESSIONS[0], BACKFILL_SESSIONS[-1], lake_root=lake, instance=pg_instance)
    assert backfill.success
    # the settings apply only while the backfill runs
    assert "DAGSTER_EVENT_BATCH_SIZE" not in os.environ

    runs = dict(_sql(pg, "select run_id, status from runs"))
    assert runs == {daily.run_id: "SUCCESS", backfill.run_id: "SUCCESS"}

    partitioned, unpartitioned = _assets()
    assert {"raw_bars", "clean_bars", "target_positions", "orders"} <= set(partitioned)
    # one materialization per partitioned asset and session of the backfill, in Postgres' event log
    rows = _sql(pg, """select asset_key, partition from event_logs
                       where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'""", backfill.run_id)
    stored = {(dg.AssetKey.from_db_string(k).to_user_string(), p) for k, p in rows}
    assert stored >= {(asset, day) for asset in partitioned for day in BACKFILL_SESSIONS}
    # ... and for the weekday holiday of the range (Christmas observed, 2022-12-26), a no-op partition
    assert len(rows) == len(partitioned) * (len(BACKFILL_SESSIONS) + 1) + len(unpartitioned)
    # planned events: one per asset carrying the whole range (not one per partition)
    planned = _sql(pg, """select count(*) from event_logs
                          where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED'""", backfill.run_id)
    assert planned[0][0] == len(partitioned) + len(unpartitioned)

    # what the UI shows: every weekday of the range materialized, the holiday as a no-op (no rows)
    for asset in partitioned:
        materialized = pg_instance.get_materialized_partitions(dg.AssetKey(asset))
        assert set(BACKFILL_SESSIONS) | {"2022-12-26"} <= materialized, asset
