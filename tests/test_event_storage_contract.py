"""The private Dagster API that ``assets/event_storage.py`` builds on, pinned.

``BatchedSqliteEventLogStorage`` subclasses ``SqliteEventLogStorage`` (``dagster._core``, no stability
promise): it overrides some of its methods and calls private helpers. A Dagster upgrade that renames
one, changes its parameters, or stops routing events through it must fail here, with a message saying
what to check, before a backfill silently stores events differently (``tests/test_event_storage.py``
checks that the rows stored equal Dagster's own). The way out if it cannot be fixed: drop the class
from the CLI's ``dagster.yaml`` (``pipeline/definitions.py``, ``instance_yaml``), at the price of one
SQLite commit per event, or use PostgreSQL instance storage (``deploy/dagster.postgres.yaml``), the
documented path for big backfills, which needs none of this.
"""

from __future__ import annotations

import inspect

import dagster as dg
import pytest

from assets import event_storage
from assets.event_storage import BatchedSqliteEventLogStorage

BASE = BatchedSqliteEventLogStorage.__mro__[1]
WHAT_TO_DO = (
    "update assets/event_storage.py to the new API (tests/test_event_storage.py must still pass), or drop "
    "BatchedSqliteEventLogStorage from instance_yaml in pipeline/definitions.py (one SQLite commit per "
    "event again); PostgreSQL instance storage (deploy/dagster.postgres.yaml) needs none of this."
)


def _params(function) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]


def _fail(what: str, why: str) -> str:
    return f"Dagster {dg.__version__}: {what}. assets/event_storage.py {why}: {WHAT_TO_DO}"


def test_the_base_class_is_dagsters_sqlite_event_log_storage():
    from dagster._core.storage.event_log import SqliteEventLogStorage
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    assert BASE is SqliteEventLogStorage, _fail(f"the base class is {BASE}", "subclasses SqliteEventLogStorage")
    assert issubclass(BASE, SqlEventLogStorage), _fail("SqliteEventLogStorage no longer derives from "
                                                       "SqlEventLogStorage", "calls SqlEventLogStorage's helpers")


# (method, its parameters in the installed Dagster, what event_storage.py does with it)
OVERRIDDEN = [
    ("__init__", ["base_dir", "inst_data"], "calls super().__init__(base_dir, inst_data=...)"),
    ("config_type", [], "overrides config_type() (its base_dir is optional)"),
    ("from_config_value", ["inst_data", "config_value"], "overrides from_config_value(inst_data, config_value)"),
    ("store_event_batch", ["events"], "overrides store_event_batch(events) to write a batch in one transaction"),
    ("_store_asset_check_evaluation_planned", ["event", "event_id"],
     "overrides _store_asset_check_evaluation_planned(event, event_id) to serialize the event once"),
]
CALLED = [
    ("_event_to_row", ["event"], "calls self._event_to_row(event) for the rows it inserts"),
    ("run_connection", ["run_id"], "opens the run's shard with self.run_connection(run_id)"),
    ("index_transaction", [], "writes the index rows inside self.index_transaction()"),
    ("index_connection", [], "inserts the planned rows with self.index_connection()"),
    ("_store_asset_event_tags", ["conn", "events", "event_ids"],
     "calls self._store_asset_event_tags(conn, events, event_ids) for the tag rows"),
    ("_store_asset_event", ["conn", "event", "event_id"],
     "calls self._store_asset_event(conn, event, event_id) for each asset's latest event"),
    ("_event_insert_timestamp", ["event"], "calls self._event_insert_timestamp(event) for the planned rows"),
]


@pytest.mark.parametrize("name, params, why", OVERRIDDEN + CALLED, ids=[m[0] for m in OVERRIDDEN + CALLED])
def test_each_private_method_it_relies_on_exists_with_the_same_parameters(name, params, why):
    method = getattr(BASE, name, None)
    assert callable(method), _fail(f"SqliteEventLogStorage.{name} no longer exists", why)
    found = _params(method)
    assert found == params, _fail(f"SqliteEventLogStorage.{name} takes {found}, not {params}", why)


@pytest.mark.parametrize("name", [m[0] for m in OVERRIDDEN])
def test_each_override_keeps_the_base_parameters(name):
    ours, theirs = getattr(BatchedSqliteEventLogStorage, name), getattr(BASE, name)
    assert _params(ours)[:len(_params(theirs))] == _params(theirs), _fail(
        f"BatchedSqliteEventLogStorage.{name} {_params(ours)} no longer matches {_params(theirs)}",
        "overrides it")


def test_dagster_still_routes_planned_check_rows_through_the_overridden_method():
    # If store_asset_check_event stopped calling _store_asset_check_evaluation_planned, the override
    # would be dead code and every planned row would serialize the event again.
    from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

    source = inspect.getsource(SqlEventLogStorage.store_asset_check_event)
    assert "self._store_asset_check_evaluation_planned(event, event_id)" in source, _fail(
        "SqlEventLogStorage.store_asset_check_event no longer calls _store_asset_check_evaluation_planned",
        "overrides that method for the 'check planned' rows")


def test_the_tables_columns_and_event_fields_it_writes_exist():
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationPlanned,
    )
    from dagster._core.events import DagsterEvent

    from assets.event_storage import (
        AssetCheckExecutionRecordStatus,
        AssetCheckExecutionsTable,
        SqlEventLogStorageTable,
    )

    planned_columns = {"asset_key", "check_name", "partition", "run_id", "execution_status", "evaluation_event",
                       "evaluation_event_timestamp", "evaluation_event_storage_id"}
    missing = planned_columns - set(AssetCheckExecutionsTable.c.keys())
    assert not missing, _fail(f"asset_check_executions lacks {sorted(missing)}", "inserts planned rows with them")
    assert "id" in SqlEventLogStorageTable.c, _fail("event_logs has no id column", "reads the new rows' ids")
    assert AssetCheckExecutionRecordStatus.PLANNED.value == "PLANNED", _fail(
        "AssetCheckExecutionRecordStatus.PLANNED changed", "stores planned rows with it")
    fields = set(inspect.get_annotations(AssetCheckEvaluationPlanned))
    assert {"asset_key", "check_name", "partitions_subset"} <= fields, _fail(
        f"AssetCheckEvaluationPlanned has fields {sorted(fields)}", "reads asset_key, check_name, partitions_subset")
    assert isinstance(DagsterEvent.is_asset_failed_to_materialize, property), _fail(
        "DagsterEvent.is_asset_failed_to_materialize is gone", "leaves failed materializations to Dagster's path")
    batched = {kind for kinds in event_storage._BATCHED for kind in kinds}
    assert {k.name for k in batched} == {"ASSET_MATERIALIZATION", "ASSET_OBSERVATION"}
