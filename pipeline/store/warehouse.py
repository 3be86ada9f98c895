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

A broken lake file (truncated by a full disk, overwritten by something that is not Parquet) breaks
only the table it belongs to: that table's view is replaced by a stand-in that raises
:class:`BrokenLakeFileError`'s one-line message (table, file, what to do) when it is read, and every
other table still answers. Checking costs nothing while the files are sound: DuckDB reads every
footer of a table when its view is created anyway, and the files are looked at one by one (Parquet
footers, with pyarrow) only for a table whose view could not be created.
"""

from __future__ import annotations

import glob
import re
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import PipelineConfig
from pipeline.store.lake import Lake, LakeError

WAREHOUSE_FILE = "warehouse.duckdb"
#: Waits (seconds) between attempts to attach a ledger that a writer holds (a run's order step).
ATTACH_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0)


#: How the message of :class:`BrokenLakeFileError` starts: ``lake table <table>: file <file> cannot be read``.
_BROKEN = re.compile(r"lake table (?P<table>\S+): file (?P<file>.+?) cannot be read \((?P<reason>.*?)\); restore it")
#: A Parquet file named in a DuckDB or Arrow error message: quoted, else up to the next blank or colon.
_FILE_IN_ERROR = re.compile(r"""'([^'\n]+?\.parquet)'|"([^"\n]+?\.parquet)"|([^\s'":]+?\.parquet)(?=[:\s]|$)""")


class BrokenLakeFileError(LakeError):
    """A Parquet file of the lake cannot be read (truncated, not Parquet, unreadable).

    The message is one line naming the table, the file and what to do: restore the file from a
    backup, or move it out of the lake and re-run ``trading-pipeline backfill START END``, which
    writes back the sessions a session table lacks and rewrites a whole table (``Lake.sessions_to_write``).
    ``table`` and ``file`` hold the table name and the file's path (or URL).
    """

    def __init__(self, table: str, file: str, reason: str):
        self.table, self.file = table, file
        year = re.search(r"year=(\d{4})", file)
        what = f"its {year.group(1)} sessions" if year else "the table"
        super().__init__(
            f"lake table {table}: file {file} cannot be read ({_clean_reason(reason, file)}); restore it from a backup, "
            f"or move it out of the lake and re-run `trading-pipeline backfill START END` to write {what} again"
        )


def _clean_reason(reason: str, file: str) -> str:
    """A DuckDB or Arrow error message short and on one line: its first line without the error class,
    the file's name (the message gives it once) or quotes."""
    first = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
    first = re.sub(r"^[A-Za-z ]+Error: ", "", first).replace(file, "").replace("'", "").replace('"', "")
    return re.sub(r"\s+", " ", first).strip(" .:") or "unreadable"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_sql(lake: Lake, table: str) -> str:
    files = lake.glob(table)
    if files.endswith("table.parquet"):  # a whole table: one file
        return f"create or replace view {_quote(table)} as select * from read_parquet({_literal(files)})"
    # year=YYYY folders: the partition column is storage layout, not data
    return (f"create or replace view {_quote(table)} as select * exclude (year) from "
            f"read_parquet({_literal(files)}, hive_partitioning = true, union_by_name = true)")


def _named_file(lake: Lake, text: str) -> tuple[str, str] | None:
    """(table, file) of the first lake file an error message names, else None."""
    root = str(lake.root).rstrip("/") + "/"
    for match in _FILE_IN_ERROR.finditer(text):
        file = next(g for g in match.groups() if g)
        for table in lake.tables():
            if file.startswith(root + table + "/") or (not isinstance(lake.root, Path) and f"/{table}/" in file):
                return table, file
    return None


def _broken_file(lake: Lake, table: str, exc: Exception) -> BrokenLakeFileError:
    """The error naming the file of ``table`` that made ``exc``: the file the message names, else (a
    local lake) the first file whose Parquet footer pyarrow cannot read, else the table's glob."""
    named = _named_file(lake, str(exc))
    if named is not None and named[0] == table:
        return BrokenLakeFileError(table, named[1], str(exc))
    if isinstance(lake.root, Path):
        for file in sorted(glob.glob(lake.glob(table))):
            try:
                pq.read_metadata(file)
            except (pa.ArrowException, OSError) as bad:
                return BrokenLakeFileError(table, file, str(bad))
    return BrokenLakeFileError(table, lake.glob(table), str(exc))


def _stand_in_sql(lake: Lake, table: str, error: BrokenLakeFileError) -> str:
    """A view for a table with a broken file that raises ``error``'s message when it is read.

    On a local lake it keeps the columns of the table's readable files (so that a query naming
    columns binds and then raises the message rather than a "column not found"); otherwise it has
    one column.
    """
    raise_it = f"error({_literal(str(error))}) is null"
    if isinstance(lake.root, Path):
        good = []
        for file in sorted(glob.glob(lake.glob(table))):
            try:
                pq.read_metadata(file)
                good.append(file)
            except (pa.ArrowException, OSError):
                continue
        if good:
            files = "[" + ", ".join(_literal(f) for f in good) + "]"
            hive = ", hive_partitioning = true, union_by_name = true" if "year=" in good[0] else ""
            exclude = " exclude (year)" if hive else ""
            return (f"create or replace view {_quote(table)} as select *{exclude} from read_parquet({files}{hive}) "
                    f"where {raise_it}")
    return f"create or replace view {_quote(table)} as select * from range(1) where {raise_it}"


def _define_table(con: duckdb.DuckDBPyConnection, lake: Lake, table: str) -> BrokenLakeFileError | None:
    """Define ``table`` in ``con`` (a view, or a registered dataset for an object-store lake); if a file of
    it cannot be read, define the stand-in of :func:`_stand_in_sql` instead and return the error."""
    try:
        if isinstance(lake.root, Path):
            con.execute(_view_sql(lake, table))
        else:
            con.register(table, lake.dataset(table))
        return None
    except (duckdb.Error, pa.ArrowException, OSError) as exc:
        error = _broken_file(lake, table, exc)
        con.execute(_stand_in_sql(lake, table, error))
        return error


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
    A table with a broken file is a view that raises :class:`BrokenLakeFileError`'s message when
    read (see the module notes); the other tables are unaffected. The caller closes the connection.

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
        _define_table(con, lake, table)
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
        BrokenLakeFileError: the SQL reads a table with a file that cannot be read (found when the
            views are made, or by DuckDB while it scans); the one-line message names the table, the
            file and what to do. Queries on the other tables answer.
    """
    con = connect(lake_root, cfg, state_root=state_root)
    try:
        try:
            return con.execute(sql).df()
        except duckdb.CatalogException as exc:
            tables = [r[0] for r in con.execute("select view_name from duckdb_views() where not internal").fetchall()]
            raise duckdb.CatalogException(f"{exc}\nTables available: {', '.join(sorted(tables)) or 'none yet'}") from exc
        except duckdb.Error as exc:
            broken = _as_broken_file(exc, Lake(lake_root))
            if broken is None and not isinstance(exc, duckdb.ProgrammingError | duckdb.DataError):  # failed reading
                broken = _damaged_file(Lake(lake_root), sql, exc)
            if broken is None:
                raise
            raise broken from exc
    finally:
        con.close()


def _as_broken_file(exc: duckdb.Error, lake: Lake) -> BrokenLakeFileError | None:
    """``exc`` as a :class:`BrokenLakeFileError` if it is a stand-in view's error or a failed read of a
    lake file (a file DuckDB found broken only while scanning it); None for any other error."""
    text = str(exc)
    stand_in = _BROKEN.search(text)
    if stand_in:
        return BrokenLakeFileError(stand_in["table"], stand_in["file"], stand_in["reason"])
    named = _named_file(lake, text)
    return BrokenLakeFileError(*named, text) if named is not None else None


def _damaged_file(lake: Lake, sql: str, exc: duckdb.Error) -> BrokenLakeFileError | None:
    """The first file of a local lake table named in ``sql`` that pyarrow cannot read in full, as the
    error to raise for ``exc`` (DuckDB does not name the file when a page inside it is damaged);
    None if every such file reads. Runs only after a query failed; it reads those tables' files one
    at a time."""
    if not isinstance(lake.root, Path):
        return None
    for table in lake.tables():
        if re.search(rf"\b{re.escape(table)}\b", sql, flags=re.IGNORECASE) is None:
            continue
        for file in sorted(glob.glob(lake.glob(table))):
            try:
                pq.read_table(file)
            except (pa.ArrowException, OSError) as bad:
                return BrokenLakeFileError(table, file, f"{_clean_reason(str(exc), file)}: {_clean_reason(str(bad), file)}")
    return None


def publish_views(lake_root: str | Path, state_root: str | Path | None = None) -> list[str]:
    """Store a view per lake table inside ``<state_root>/warehouse.duckdb`` (needs the write lock).

    ``state_root`` defaults to the lake root. Returns the tables given a view; an object-store
    lake gets none (a stored view would need DuckDB's ``httpfs`` extension in every reader: query
    it through :func:`connect` / ``trading-pipeline query``). A table with a broken file gets the
    stand-in view of :func:`connect` (reading it raises the one-line message) and is left out of
    the list.
    """
    lake = Lake(lake_root)
    state = _state_folder(lake, state_root)
    if not isinstance(lake.root, Path) or state is None:
        return []
    state.mkdir(parents=True, exist_ok=True)
    tables = lake.tables()
    con = duckdb.connect(str(state / WAREHOUSE_FILE))
    try:
        broken = {table for table in tables if _define_table(con, lake, table) is not None}
    finally:
        con.close()
    return [t for t in tables if t not in broken]
