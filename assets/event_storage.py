"""SQLite event log storage that stores a batch of asset events in one transaction.

Dagster 1.13.27's ``SqliteEventLogStorage`` stores the events of a batch (``DAGSTER_EVENT_BATCH_SIZE``)
one at a time: each event is a commit in the run's SQLite file and another in ``index.db``
(15-25 ms per event on this project's machine). A single-run backfill of 10 years records 7
partitioned assets x 2,609 weekday partitions, about 18,000 materializations: 4-7 minutes of
commits. :class:`BatchedSqliteEventLogStorage` writes a batch of materializations (or
observations) with one multi-row INSERT per shard, in one transaction each, as Dagster's
PostgreSQL storage does (``PostgresEventLogStorage.store_event_batch``): the same rows, the same
asset-index entries (tags of every event, the asset's latest event), far fewer commits, each
event serialized once. The "asset check planned" rows of a range run (one per check and
partition) are stored as Dagster stores them, with their event serialized once instead of once
per row. Every other event goes through Dagster's own code unchanged.

The project's default ``dagster.yaml`` (``pipeline/definitions.py``) names this class as its
``event_log_storage``, in the folder Dagster's default SQLite storage uses
(``$DAGSTER_HOME/history/runs``), so an existing instance keeps its history.
"""


import os
from collections.abc import Sequence

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
)
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._serdes import ConfigurableClassData, serialize_value

#: Rows per INSERT statement: 8 bound values per row stays under SQLite's 32,766-variable limit.
ROWS_PER_STATEMENT = 1000
_BATCHED = ({DagsterEventType.ASSET_MATERIALIZATION}, {DagsterEventType.ASSET_OBSERVATION})


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose ``store_event_batch`` writes a batch of materializations
    (or observations) of one run in one transaction per SQLite file.

    Config: ``base_dir`` (optional): the event log folder; default ``$DAGSTER_HOME/history/runs``,
    where Dagster's default SQLite storage keeps it.
    """

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        if base_dir is None:
            home = os.environ.get("DAGSTER_HOME")
            if not home:
                raise dg.DagsterInvariantViolationError(
                    "BatchedSqliteEventLogStorage: no base_dir in its config and DAGSTER_HOME is not set")
            base_dir = os.path.join(home, "history", "runs", "")
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": dg.Field(dg.StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value):
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[dg.EventLogEntry]) -> None:
        """Store ``events``; a batch of one run's materializations (or observations) is two
        transactions (the run's shard and the asset index), anything else is Dagster's own path."""
        events = [e for e in events if not e.get_dagster_event().is_asset_failed_to_materialize]
        kinds = {e.get_dagster_event().event_type for e in events}
        if len(events) < 2 or kinds not in _BATCHED or len({e.run_id for e in events}) != 1:
            return super().store_event_batch(events)
        rows = [self._event_to_row(event) for event in events]  # serialized once for both files
        chunks = [rows[i:i + ROWS_PER_STATEMENT] for i in range(0, len(rows), ROWS_PER_STATEMENT)]
        with self.run_connection(events[0].run_id) as conn:
            for chunk in chunks:
                conn.execute(SqlEventLogStorageTable.insert().values(chunk))
        with self.index_transaction() as conn:
            event_ids: list[int] = []
            for chunk in chunks:
                result = conn.execute(SqlEventLogStorageTable.insert().values(chunk).returning(SqlEventLogStorageTable.c.id))
                # SQLite numbers the rows of one INSERT in order; RETURNING's row order is not guaranteed.
                event_ids.extend(sorted(int(row[0]) for row in result.fetchall()))
            if len(event_ids) != len(events):
                raise dg.DagsterInvariantViolationError(
                    f"BatchedSqliteEventLogStorage: stored {len(event_ids)} index rows for {len(events)} events")
            self._store_asset_event_tags(conn, events, event_ids)
            latest = {e.get_dagster_event().asset_key: (e, i) for e, i in zip(events, event_ids)}
            for event, event_id in latest.values():  # each asset's latest event, as PostgreSQL does
                self._store_asset_event(conn, event, event_id)

    def _store_asset_check_evaluation_planned(self, event: dg.EventLogEntry, event_id: int | None) -> None:
        """One "planned" row per partition of the run, as Dagster stores them, with the event
        serialized once (Dagster serializes the same event again for every partition) and the
        rows inserted as one parameter batch."""
        planned = event.get_dagster_event().event_specific_data
        keys = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        common = dict(
            asset_key=planned.asset_key.to_string(),
            check_name=planned.check_name,
            run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event=serialize_value(event),
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
        )
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [dict(common, partition=key) for key in keys])
