"""The SQLite event log storage of the project's instance stores a batch of materializations in
one transaction per file, and stores exactly what Dagster's own SQLite storage stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.storage.event_log import SqliteEventLogStorage

from assets import event_storage
from assets.event_storage import ROWS_PER_STATEMENT, BatchedSqliteEventLogStorage
from pipeline.definitions import instance_yaml

RUN_ID = "7a0e6bd1-0000-4000-8000-000000000001"


def _materializations(asset: str, partitions: list[str]) -> list[dg.EventLogEntry]:
    out = []
    for i, partition in enumerate(partitions):
        event = DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value, job_name="daily_job", step_key=asset,
            event_specific_data=StepMaterializationData(dg.AssetMaterialization(
                asset_key=asset, partition=partition, metadata={"rows_written": i}, tags={"dagster/data_version": f"v{i}"})),
        )
        out.append(dg.EventLogEntry(error_info=None, level=10, user_message="", run_id=RUN_ID,
                                    timestamp=1_700_000_000.0 + i, step_key=asset, job_name="daily_job",
                                    dagster_event=event))
    return out


def _rows(folder: Path, db: str, sql: str) -> list[tuple]:
    with sqlite3.connect(folder / db) as conn:
        return conn.execute(sql).fetchall()


def _contents(folder: Path) -> dict[str, list[tuple]]:
    """Every stored row that does not depend on insertion time."""
    events = "select run_id, event, dagster_event_type, asset_key, partition, step_key from event_logs order by id"
    return {
        "run shard": _rows(folder, f"{RUN_ID}.db", events),
        "index": _rows(folder, "index.db", events),
        "tags": _rows(folder, "index.db", "select e.partition, t.key, t.value from asset_event_tags t "
                                          "join event_logs e on e.id = t.event_id order by t.id"),
        "asset": _rows(folder, "index.db", "select asset_key, last_materialization, last_run_id from asset_keys"),
    }


@pytest.mark.parametrize("n, rows_per_statement", [(3, ROWS_PER_STATEMENT), (11, 4)])
def test_a_batch_stores_the_same_rows_as_dagster_stores_one_event_at_a_time(tmp_path, monkeypatch, n, rows_per_statement):
    monkeypatch.setattr(event_storage, "ROWS_PER_STATEMENT", rows_per_statement)  # 11 rows: three INSERTs
    events = _materializations("clean_bars", [f"p{i:05d}" for i in range(n)])
    reference, batched = tmp_path / "reference", tmp_path / "batched"
    plain = SqliteEventLogStorage(str(reference))
    for event in events:
        plain.store_event(event)
    BatchedSqliteEventLogStorage(str(batched)).store_event_batch(events)
    want, got = _contents(reference), _contents(batched)
    assert len(got["index"]) == len(got["run shard"]) == n
    assert len(got["tags"]) == n  # one data-version tag per event, on the right event
    assert got == want
    # The asset index points at the batch's last event, so the UI shows the latest partition.
    last = dg.deserialize_value(got["asset"][0][1], dg.EventLogRecord)
    assert last.event_log_entry.dagster_event.partition == f"p{n - 1:05d}"


def test_mixed_batches_and_other_events_take_dagsters_own_path(tmp_path):
    storage = BatchedSqliteEventLogStorage(str(tmp_path))
    events = _materializations("raw_bars", ["2022-12-27"]) + _materializations("volatility", ["2022-12-27", "2022-12-28"])
    storage.store_event_batch(events)
    assert {p for (p,) in _rows(tmp_path, "index.db", "select partition from event_logs")} == {"2022-12-27", "2022-12-28"}
    assert sorted(k for (k, *_) in _rows(tmp_path, "index.db", "select asset_key from asset_keys")) == [
        '["raw_bars"]', '["volatility"]']


def test_check_planned_rows_are_the_rows_dagster_stores_one_per_partition(tmp_path):
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationPlanned,
    )

    from assets.partitions import daily_partitions
    from pipeline.config import load_config

    daily_sessions = daily_partitions(load_config()).partitions_def

    subset = daily_sessions.subset_with_partition_keys(
        daily_sessions.get_partition_keys_in_range(dg.PartitionKeyRange("2022-12-19", "2022-12-28")))
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value, job_name="daily_job",
        step_key="clean_bars", event_specific_data=AssetCheckEvaluationPlanned(
            asset_key=dg.AssetKey("clean_bars"), check_name="bars_complete", partitions_subset=subset))
    entry = dg.EventLogEntry(error_info=None, level=10, user_message="", run_id=RUN_ID, timestamp=1_700_000_000.0,
                             step_key="clean_bars", job_name="daily_job", dagster_event=event)
    columns = ("select asset_key, check_name, partition, run_id, execution_status, evaluation_event, "
               "evaluation_event_timestamp, evaluation_event_storage_id from asset_check_executions order by partition")
    SqliteEventLogStorage(str(tmp_path / "reference")).store_event(entry)
    BatchedSqliteEventLogStorage(str(tmp_path / "batched")).store_event(entry)
    want, got = _rows(tmp_path / "reference", "index.db", columns), _rows(tmp_path / "batched", "index.db", columns)
    assert [row[2] for row in got] == ["2022-12-19", "2022-12-20", "2022-12-21", "2022-12-22", "2022-12-23",
                                       "2022-12-26", "2022-12-27", "2022-12-28"]  # one row per weekday partition
    assert {row[4] for row in got} == {"PLANNED"}
    assert got == want


def _count_transactions(storage, monkeypatch) -> list[str]:
    """Record the SQLite file (shard) of every connection, i.e. transaction, the storage opens."""
    opened, connect = [], storage._connect

    def counting(shard):
        opened.append(shard)
        return connect(shard)

    monkeypatch.setattr(storage, "_connect", counting)
    return opened


def test_a_batch_is_one_transaction_per_file_where_dagster_opens_two_per_event(tmp_path, monkeypatch):
    events = _materializations("clean_bars", [f"p{i:05d}" for i in range(50)])
    batched = BatchedSqliteEventLogStorage(str(tmp_path / "batched"))
    opened = _count_transactions(batched, monkeypatch)
    batched.store_event_batch(events)
    assert sorted(set(opened)) == sorted([RUN_ID, "index"]) and opened.count(RUN_ID) == 1
    assert opened.count("index") <= 2  # the insert transaction (+ Dagster's has_table check of the tags table)
    plain = SqliteEventLogStorage(str(tmp_path / "reference"))
    opened_by_dagster = _count_transactions(plain, monkeypatch)
    plain.store_event_batch(events)
    assert opened_by_dagster.count(RUN_ID) == 50 and opened_by_dagster.count("index") >= 50


def test_the_project_instance_uses_it_in_dagsters_default_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text(instance_yaml(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        assert Path(instance.event_log_storage._base_dir) == tmp_path / "history" / "runs"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
