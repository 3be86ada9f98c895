"""DuckDB over the lake: a view per Parquet table, plus the ledger tables of ``warehouse.duckdb``.

Readers cannot change anything: :func:`connect` opens an in-memory DuckDB, attaches
``warehouse.duckdb`` (in the state folder, ``pipeline.store.paths``) read-only when it exists and
defines one view per lake table over its Parquet files (Parquet reads take no lock at all), so
``select * from target_positions`` and ``select * from order_intents`` both work.
Given the configuration, it also registers ``instruments`` (symbol, asset class, exchange, ...) so
queries can group by asset class. Example queries: ``docs/operations.md``, "Querying the lake".

A local lake's views are DuckDB ``read_parquet`` views. An object-store lake's tables are
``pyarrow.dataset`` objects over the lake's ``pyarrow.fs`` file system, registered with the
connection (DuckDB scans them with column and filter push-down): DuckDB's own ``httpfs``
extension is not bundled with duckdb 2.0.0 and is downloaded on first use, which a machine without
internet access cannot do (the ``duckdb-ext-httpfs`` wheels on PyPI are built for DuckDB 1.4 and
refuse to load in 2.0).
:func:`publish_views` also stores a local lake's views inside ``warehouse.duckdb`` for users who
open the file directly with the DuckDB CLI (it needs the write lock, so the CLI calls it after a run).
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.config import PipelineConfig
from pipeline.store.lake import Lake

WAREHOUSE_FILE = "warehouse.duckdb"
#: Waits (seconds) between attempts to attach a ledger that a writer holds (a run's order step).
ATTACH_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _view_sql(lake: Lake, table: str) -> str:
    files = lake.glob(table)
    if files.endswith("table.parquet"):  # a whole table: one file
        return f"create or replace view {_quote(table)} as select * from read_parquet('{files}')"
    # year=YYYY folders: the partition column is storage layout, not data
    return (f"create or replace view {_quote(table)} as select * exclude (year) from "
            f"read_parquet('{files}', hive_partitioning = true, union_by_name = true)")


def instruments_frame(cfg: PipelineConfig) -> pd.DataFrame:
    """The configured universe as a table: one row per instrument.

    Columns ``instrument, sec_type, exchange, currency, point_size, asset_class, calendar,
    back_adjusted, long_only`` (``point_size`` in currency per price point per unit).
    """
    fields = ["sec_type", "exchange", "currency", "point_size", "asset_class", "calendar", "back_adjusted", "long_only"]
    return pd.DataFrame([{"instrument": i.symbol, **{f: getattr(i, f) for f in fields}} for i in cfg.instruments],
                        columns=["instrument", *fields])


def _state_folder(lake: Lake, state_root: str | Path | None) -> Path | None:
    """The folder of ``warehouse.duckdb``: ``state_root``, else a local lake's root, else None."""
    if state_root is not None:
        return Path(state_root).resolve()
    return lake.root if isinstance(lake.root, Path) else None


def connect(lake_root: str | Path, cfg: PipelineConfig | None = None, *,
            state_root: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per lake table and the ledger attached read-only.

    ``lake_root`` is a local folder or an object-store URL (see the module notes); the ledger is
    ``<state_root>/warehouse.duckdb`` (``state_root`` defaults to a local lake's root; an
    object-store lake without ``state_root`` has the Parquet tables only). Ledger tables
    (``order_intents``, ``fills``, ``alerts``, ``trading_state_log``) are exposed under their own
    names; with ``cfg``, the universe is the table ``instruments`` (see :func:`instruments_frame`).
    The caller closes the connection.

    Raises:
        duckdb.IOException: the ledger stays locked by a writer for the whole back-off
            (:data:`ATTACH_BACKOFF`, about 8 s).
        pipeline.store.lake.LakeError: ``lake_root`` is a URL that ``pyarrow.fs`` cannot open.
    """
    lake = Lake(lake_root)
    con = duckdb.connect(":memory:")
    if cfg is not None:
        con.register("instruments", instruments_frame(cfg))
    for table in lake.tables():
        if isinstance(lake.root, Path):
            con.execute(_view_sql(lake, table))
        else:
            con.register(table, lake.dataset(table))
    state = _state_folder(lake, state_root)
    ledger_path = state / WAREHOUSE_FILE if state is not None else None
    if ledger_path is not None and ledger_path.exists():
        _attach_read_only(con, ledger_path)
        names = con.execute(
            "select table_name from information_schema.tables "
            "where table_catalog = 'ledger' and table_type = 'BASE TABLE'"
        ).fetchall()
        for (name,) in names:
            con.execute(f"create or replace view {_quote(name)} as select * from ledger.{_quote(name)}")
    return con


def _attach_read_only(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach the ledger read-only, waiting out a writer's lock (DuckDB allows readers or one writer)."""
    for wait in (*ATTACH_BACKOFF, None):
        try:
            con.execute(f"attach '{path}' as ledger (read_only)")
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or wait is None:
                con.close()
                raise duckdb.IOException(
                    f"{path}: cannot open the ledger read-only ({exc}); a run or a DuckDB shell holds its write "
                    "lock: retry when it has finished"
                ) from exc
            time.sleep(wait)


def query(lake_root: str | Path, sql: str, cfg: PipelineConfig | None = None, *,
          state_root: str | Path | None = None) -> pd.DataFrame:
    """Run ``sql`` against the lake views and ledger tables (and ``instruments`` given ``cfg``).

    ``lake_root`` and ``state_root`` as in :func:`connect`.

    Raises:
        duckdb.Error: the SQL is invalid or names a table that does not exist (the message
            lists the tables that do).
    """
    con = connect(lake_root, cfg, state_root=state_root)
    try:
        try:
            return con.execute(sql).df()
        except duckdb.CatalogException as exc:
            tables = [r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()]
            raise duckdb.CatalogException(f"{exc}\nTables available: {', '.join(sorted(tables)) or 'none yet'}") from exc
    finally:
        con.close()


def publish_views(lake_root: str | Path, state_root: str | Path | None = None) -> list[str]:
    """Store a view per lake table inside ``<state_root>/warehouse.duckdb`` (needs the write lock).

    ``state_root`` defaults to the lake root. Returns the tables given a view; an object-store
    lake gets none (a stored view would need DuckDB's ``httpfs`` extension in every reader: query
    it through :func:`connect` / ``trading-pipeline query``).
    """
    lake = Lake(lake_root)
    state = _state_folder(lake, state_root)
    if not isinstance(lake.root, Path) or state is None:
        return []
    state.mkdir(parents=True, exist_ok=True)
    tables = lake.tables()
    con = duckdb.connect(str(state / WAREHOUSE_FILE))
    try:
        for table in tables:
            con.execute(_view_sql(lake, table))
    finally:
        con.close()
    return tables
