"""The Parquet lake: session-keyed tables, append-only batches and whole tables, written atomically.

Layout under the lake root (``data_lake/`` by default)::

    <table>/year=YYYY/part.parquet        session tables (clean_bars, volatility, forecasts, ...)
    <table>/year=YYYY/batch-<ts>-<id>.parquet   append-only tables (raw_bars): never rewritten
    <table>/table.parquet                 whole tables (instrument weights, backtest results, ...)

Every write goes to a temporary file in the same folder, is fsynced and then ``os.replace``d over
the target, so a crash leaves either the old file or the new one, never a torn one. DuckDB reads the
same files (``pipeline.store.warehouse``). The ``session`` column is stored as a Parquet ``date32`` and
read back as ``datetime64[ns]`` midnight dates.

One writer at a time per table is assumed (Dagster runs the daily job one at a time); readers never
see a partial file.

The root may also be an object-store URL (``s3://bucket/prefix``, ``gs://...``; whatever
``pyarrow.fs.FileSystem.from_uri`` accepts, e.g. ``s3://bucket/lake?endpoint_override=...``):
the same layout is read and written through ``pyarrow.fs``, each file in one PUT (an object
appears whole or not at all). ``file://`` URLs are local paths. Only the Parquet tables live
there: the order ledger (``warehouse.duckdb``), the order-run locks and the model registry stay in
the local state folder (``pipeline.store.paths``).
"""

from __future__ import annotations

import fnmatch
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SESSION = "session"
_PART = "part.parquet"
_WHOLE = "table.parquet"


class LakeError(ValueError):
    """A lake table is missing or malformed; the message names the table and path."""


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if SESSION in table.column_names:
        i = table.column_names.index(SESSION)
        table = table.set_column(i, SESSION, pc.cast(table.column(SESSION), pa.date32()))
    return table


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    if SESSION in df.columns:
        df[SESSION] = pd.to_datetime(df[SESSION]).astype("datetime64[ns]")
    for col in df.columns:
        # Timestamps of fetches etc. keep their time zone but get one resolution across files.
        if isinstance(df[col].dtype, pd.DatetimeTZDtype):
            df[col] = df[col].dt.as_unit("ns")
    return df


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``).

    A crash at any point leaves either the previous file or the complete new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def is_url(root: str | Path) -> bool:
    """True for ``scheme://...`` roots (object stores, ``file://``); False for local paths."""
    return isinstance(root, str) and len(urlsplit(root).scheme) > 1 and "://" in root


class Lake:
    """The Parquet lake rooted at ``root``: a local folder or an object-store URL (created on first write).

    Raises:
        LakeError: ``root`` is a URL that ``pyarrow.fs`` cannot open (unknown scheme, bad option).
    """

    def __init__(self, root: str | Path):
        self._fs: pafs.FileSystem | None = None
        if is_url(root) and urlsplit(str(root)).scheme == "file":
            root = url2pathname(urlsplit(str(root)).path)
        if is_url(root):
            try:
                self._fs, self._base = pafs.FileSystem.from_uri(str(root))
            except (ValueError, OSError) as exc:
                raise LakeError(f"lake root {root!r}: cannot open it with pyarrow.fs ({exc})") from exc
            self._base = self._base.rstrip("/")
            self.root: Path | str = str(root).split("?", 1)[0].rstrip("/")
        else:
            self.root = Path(root).resolve()

    def path(self, table: str) -> Path | str:
        """Folder of ``table`` (a ``Path``, or a URL for an object-store root)."""
        return self.root / table if self._fs is None else f"{self.root}/{table}"

    # ---- file access: local paths as before, object stores through pyarrow.fs --------------
    def _file(self, table: str, *parts: str) -> Path | str:
        return self.root.joinpath(table, *parts) if self._fs is None else "/".join((self._base, table, *parts))

    def _exists(self, path: Path | str) -> bool:
        if self._fs is None:
            return path.exists()
        return self._fs.get_file_info(path).type == pafs.FileType.File

    def _read_file(self, path: Path | str) -> pa.Table:
        return pq.read_table(path) if self._fs is None else pq.read_table(path, filesystem=self._fs)

    def _write_file(self, table: pa.Table, path: Path | str) -> None:
        if self._fs is None:
            atomic_write_parquet(table, path)
            return
        with self._fs.open_output_stream(path) as out:
            pq.write_table(table, out, compression="zstd")

    def _unlink(self, path: Path | str) -> None:
        if self._fs is None:
            path.unlink()
        else:
            self._fs.delete_file(path)

    def _remote_infos(self, prefix: str, pattern: str) -> list[pafs.FileInfo]:
        """Files under ``prefix`` whose path relative to the lake root matches ``pattern``, sorted
        by path, with the sizes the listing returned (one LIST, no request per file)."""
        infos = self._fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        rel = len(self._base) + 1
        found = [i for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path[rel:], pattern)]
        return sorted(found, key=lambda i: i.path)

    def _remote_files(self, prefix: str, pattern: str) -> list[str]:
        """Paths of :meth:`_remote_infos`."""
        return [i.path for i in self._remote_infos(prefix, pattern)]

    def _files_dataset(self, files: list[Path | str] | list[pafs.FileInfo], schema: pa.Schema | None = None) -> ds.Dataset:
        """A Parquet dataset over ``files`` (local paths, or object-store listings whose sizes save
        a HEAD request per file); the schema is ``schema`` or the first file's."""
        if self._fs is None:
            return ds.dataset([str(f) for f in files], schema=schema, format="parquet")
        fmt = ds.ParquetFileFormat()
        fragments = [fmt.make_fragment(i.path, filesystem=self._fs, file_size=i.size) for i in files]
        return ds.FileSystemDataset(fragments, schema or fragments[0].physical_schema, fmt, self._fs)

    # ---- session tables --------------------------------------------------------------------
    def write_sessions(self, table: str, df: pd.DataFrame, sessions: Iterable[pd.Timestamp]) -> int:
        """Replace the rows of ``sessions`` in a session table with the rows of ``df`` for them.

        Args:
            table: table name (folder under the lake root).
            df: long frame with a ``session`` column (datetime64); rows for other sessions are
                ignored, so callers may pass a frame computed over the whole history.
            sessions: the sessions this write owns. Rows already stored for them are deleted
                first (delete-then-insert, so a re-run or backfill is idempotent); rows of other
                sessions are kept.

        Returns:
            The number of rows written for ``sessions``.

        Raises:
            LakeError: ``df`` has no ``session`` column.
        """
        if SESSION not in df.columns:
            raise LakeError(f"lake table {table}: frame has no {SESSION!r} column ({list(df.columns)})")
        owned = pd.DatetimeIndex(pd.to_datetime(list(sessions))).normalize().unique()
        if owned.empty:
            return 0
        new = df[pd.to_datetime(df[SESSION]).isin(owned)]
        written = 0
        for year in sorted(set(owned.year)):
            owned_y = owned[owned.year == year]
            path = self._file(table, f"year={year}", _PART)
            new_y = new[pd.to_datetime(new[SESSION]).dt.year == year]
            if self._exists(path):
                old = _to_pandas(self._read_file(path))
                old = old[~old[SESSION].isin(owned_y)]
                if not old.empty:
                    new_y = pd.concat([old, new_y], ignore_index=True) if not new_y.empty else old
            if new_y.empty:
                if self._exists(path):
                    self._unlink(path)
                continue
            new_y = new_y.sort_values([c for c in (SESSION, "instrument", "rule") if c in new_y.columns])
            self._write_file(_to_arrow(new_y.reset_index(drop=True)), path)
            written += int(pd.to_datetime(new_y[SESSION]).isin(owned_y).sum())
        return written

    def read(
        self,
        table: str,
        columns: list[str] | None = None,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Read a session or append-only table, optionally restricted to ``start <= session <= end``.

        Returns an empty frame (no rows, ``columns`` if given) when the table does not exist yet.
        """
        files = self._year_files(table)
        if not files:
            return pd.DataFrame(columns=columns or [SESSION])
        dataset = self._files_dataset(files)
        filt = None
        if start is not None:
            filt = ds.field(SESSION) >= pa.scalar(pd.Timestamp(start).date(), pa.date32())
        if end is not None:
            cond = ds.field(SESSION) <= pa.scalar(pd.Timestamp(end).date(), pa.date32())
            filt = cond if filt is None else filt & cond
        return _to_pandas(dataset.to_table(columns=columns, filter=filt))

    def dataset(self, table: str) -> ds.Dataset | None:
        """A ``pyarrow.dataset`` over every file of ``table`` (None if it has no file yet).

        Session and append-only tables: their ``year=YYYY/*.parquet`` files (the folder name is
        layout, not a column); whole tables: their one file. The schema is the union by column
        name of the oldest and the newest file's schemas (a column that newer files carry is
        there, null in older files; other columns missing from a file read as null), found from two
        footers, so that describing a table costs two reads on an object store, not one per
        file; nothing else is read until the dataset is scanned. Files are listed once, when this
        is called. Object-store files are read through the lake's ``pyarrow.fs`` file system
        (DuckDB scans such a dataset directly, see ``pipeline.store.warehouse``).
        """
        whole = self._file(table, _WHOLE)
        if self._fs is None:
            files = [whole] if whole.exists() else self._year_files(table)
        else:
            files = self._remote_infos(self._file(table), f"{table}/*.parquet")  # the whole table's file, if any
            files = [i for i in files if i.path.endswith("/" + _WHOLE)] or self._year_files(table)
        if not files:
            return None
        ends = self._files_dataset(files[:1]), self._files_dataset(files[-1:])
        schema = pa.unify_schemas([d.schema for d in ends], promote_options="permissive")
        return self._files_dataset(files, schema)

    def _year_files(self, table: str) -> list[Path] | list[pafs.FileInfo]:
        """The ``year=YYYY/*.parquet`` files of a session or append-only table, sorted (local
        paths, or object-store listings)."""
        if self._fs is None:
            folder = self.path(table)
            return sorted(folder.glob("year=*/*.parquet")) if folder.exists() else []
        return self._remote_infos(self._file(table), f"{table}/year=*/*.parquet")

    def sessions(self, table: str) -> pd.DatetimeIndex:
        """Distinct sessions stored in a session table, ascending (empty if none)."""
        df = self.read(table, columns=[SESSION])
        return pd.DatetimeIndex(sorted(df[SESSION].unique()), name=SESSION) if len(df) else pd.DatetimeIndex([], name=SESSION)

    def sessions_to_write(self, table: str, computed: pd.DatetimeIndex, run: pd.DatetimeIndex) -> pd.DatetimeIndex:
        """Sessions a run owns: its own partitions plus earlier computed sessions the table lacks.

        A daily run computes from full history; on a fresh lake it also fills the history rows
        (no value for a session depends on later data, so these rows equal what a backfill of
        those sessions writes). Rows already stored for earlier sessions are left alone.
        """
        run = pd.DatetimeIndex(run)
        stored = self.sessions(table)
        computed = pd.DatetimeIndex(computed)
        catch_up = computed[(computed <= run.max()) & ~computed.isin(stored)]
        return run.union(catch_up)

    def read_wide(
        self,
        table: str,
        value: str,
        instruments: list[str] | None = None,
        end: pd.Timestamp | None = None,
        column: str = "instrument",
    ) -> pd.DataFrame:
        """A wide frame (index ``session``, columns ``instruments``) of ``value`` from a long table.

        Instruments with no rows appear as all-NaN columns so every frame has the configured
        universe in the configured order.
        """
        df = self.read(table, columns=[SESSION, column, value], end=end)
        wide = df.pivot(index=SESSION, columns=column, values=value) if len(df) else pd.DataFrame(index=pd.DatetimeIndex([], name=SESSION))
        if instruments is not None:
            wide = wide.reindex(columns=instruments)
        wide.index = pd.DatetimeIndex(wide.index, name=SESSION)
        wide.columns.name = column
        return wide.sort_index().astype("float64")

    # ---- append-only tables ----------------------------------------------------------------
    def append(self, table: str, df: pd.DataFrame, batch: str) -> list[Path | str]:
        """Append ``df`` as new files (one per year) named after ``batch``; never rewrites a file.

        Used for ``raw_bars``: data stays exactly as received, every fetch is kept.
        """
        if SESSION not in df.columns:
            raise LakeError(f"lake table {table}: frame has no {SESSION!r} column")
        paths: list[Path | str] = []
        years = pd.to_datetime(df[SESSION]).dt.year
        for year, part in df.groupby(years, sort=True):
            path = self._file(table, f"year={year}", f"batch-{batch}.parquet")
            if self._exists(path):
                raise LakeError(f"lake table {table}: batch file {path} already exists (append-only)")
            self._write_file(_to_arrow(part.reset_index(drop=True)), path)
            paths.append(path)
        return paths

    # ---- whole tables ----------------------------------------------------------------------
    def write_table(self, table: str, df: pd.DataFrame) -> Path | str:
        """Replace a whole (unpartitioned) table atomically."""
        path = self._file(table, _WHOLE)
        self._write_file(_to_arrow(df.reset_index(drop=True)), path)
        return path

    def read_table(self, table: str) -> pd.DataFrame:
        """Read a whole table.

        Raises:
            LakeError: the table has not been written yet (name the asset to materialize).
        """
        path = self._file(table, _WHOLE)
        if not self._exists(path):
            raise LakeError(f"lake table {table} does not exist yet ({path}): materialize asset {table!r} first")
        return _to_pandas(self._read_file(path))

    def tables(self) -> list[str]:
        """Names of the tables present in the lake."""
        if self._fs is not None:
            return sorted({f[len(self._base) + 1:].split("/", 1)[0] for f in self._remote_files(self._base, "*/*.parquet")})
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("**/*.parquet")))

    def glob(self, table: str) -> str:
        """A glob over every Parquet file of ``table`` (for DuckDB ``read_parquet``; a URL for object stores)."""
        if self._fs is not None:
            return f"{self.root}/{table}/{_WHOLE}" if self._exists(self._file(table, _WHOLE)) else f"{self.root}/{table}/year=*/*.parquet"
        if (self.path(table) / _WHOLE).exists():
            return str(self.path(table) / _WHOLE)
        return str(self.path(table) / "year=*" / "*.parquet")


def wide_to_long(frames: dict[str, pd.DataFrame], dropna: str | None = None) -> pd.DataFrame:
    """Stack wide frames (index session, columns instruments) into one long frame.

    Args:
        frames: column name -> wide frame; all share the index and columns of the first.
        dropna: drop rows where this column is NaN (e.g. sessions before an instrument listed).

    Returns:
        Columns ``session``, ``instrument`` and one column per key of ``frames``.
    """
    first = next(iter(frames.values()))
    parts = {name: f.reindex(index=first.index, columns=first.columns) for name, f in frames.items()}
    n_sessions, n_instruments = first.shape
    out = pd.DataFrame(
        {
            SESSION: pd.DatetimeIndex(first.index).repeat(n_instruments),
            "instrument": pd.array(list(first.columns) * n_sessions, dtype="str"),
            **{name: f.to_numpy(dtype="float64").ravel() for name, f in parts.items()},
        }
    )
    if dropna is not None:
        out = out[out[dropna].notna()].reset_index(drop=True)
    return out
