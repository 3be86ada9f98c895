"""DuckDB over the lake: a view per Parquet table, plus the ledger tables of ``warehouse.duckdb``.

Readers never need the writer's lock: :func:`connect` opens an in-memory DuckDB, attaches
``warehouse.duckdb`` read-only (when it exists) and defines one view per lake table over its
Parquet files, so ``select * from target_positions`` and ``select * from order_intents`` both work.
:func:`publish_views` also stores the same views inside ``warehouse.duckdb`` for users who open the
file directly with the DuckDB CLI (it needs the write lock, so the CLI calls it after a run).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from pipeline.lake import Lake

WAREHOUSE_FILE = "warehouse.duckdb"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _view_sql(lake: Lake, table: str) -> str:
    files = lake.glob(table)
    if files.endswith("table.parquet"):  # a whole table: one file
        return f"create or replace view {_quote(table)} as select * from read_parquet('{files}')"
    # year=YYYY folders: the partition column is storage layout, not data
    return (f"create or replace view {_quote(table)} as select * exclude (year) from "
            f"read_parquet('{files}', hive_partitioning = true, union_by_name = true)")


def connect(lake_root: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per lake table and the ledger attached read-only.

    Ledger tables (``order_intents``, ``fills``, ``alerts``, ``trading_state_log``) are exposed
    under their own names. The caller closes the connection.
    """
    lake = Lake(lake_root)
    con = duckdb.connect(":memory:")
    for table in lake.tables():
        con.execute(_view_sql(lake, table))
    ledger_path = lake.root / WAREHOUSE_FILE
    if ledger_path.exists():
        con.execute(f"attach '{ledger_path}' as ledger (read_only)")
        names = con.execute(
            "select table_name from information_schema.tables "
            "where table_catalog = 'ledger' and table_type = 'BASE TABLE'"
        ).fetchall()
        for (name,) in names:
            con.execute(f"create or replace view {_quote(name)} as select * from ledger.{_quote(name)}")
    return con


def query(lake_root: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` against the lake views and ledger tables and return the result.

    Raises:
        duckdb.Error: the SQL is invalid or names a table that does not exist (the message
            lists the tables that do).
    """
    con = connect(lake_root)
    try:
        try:
            return con.execute(sql).df()
        except duckdb.CatalogException as exc:
            tables = [r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()]
            raise duckdb.CatalogException(f"{exc}\nTables available: {', '.join(sorted(tables)) or 'none yet'}") from exc
    finally:
        con.close()


def publish_views(lake_root: str | Path) -> list[str]:
    """Store a view per lake table inside ``warehouse.duckdb`` (needs the write lock)."""
    lake = Lake(lake_root)
    lake.root.mkdir(parents=True, exist_ok=True)
    tables = lake.tables()
    con = duckdb.connect(str(lake.root / WAREHOUSE_FILE))
    try:
        for table in tables:
            con.execute(_view_sql(lake, table))
    finally:
        con.close()
    return tables
