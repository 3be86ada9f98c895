"""The Parquet lake: session-keyed tables, append-only batches and whole tables, written atomically.

Layout under the lake root (``data_lake/`` by default)::

    <table>/year=YYYY/part.parquet        session tables (clean_bars, volatility, forecasts, ...)
    <table>/year=YYYY/batch-<ts>-<id>.parquet   append-only tables (raw_bars): never rewritten
    <table>/table.parquet                 whole tables (instrument weights, backtest results, ...)

Every write goes to a temporary file in the same folder, is fsynced and then ``os.replace``d over
the target, so a crash leaves either the old file or the new one, never a torn one. DuckDB reads the
same files (``pipeline.warehouse``). The ``session`` column is stored as a Parquet ``date32`` and
read back as ``datetime64[ns]`` midnight dates.

One writer at a time per table is assumed (Dagster runs the daily job one at a time); readers never
see a partial file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
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


class Lake:
    """The Parquet lake rooted at ``root`` (created on first write)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, table: str) -> Path:
        """Folder of ``table``."""
        return self.root / table

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
            path = self.path(table) / f"year={year}" / _PART
            new_y = new[pd.to_datetime(new[SESSION]).dt.year == year]
            if path.exists():
                old = _to_pandas(pq.read_table(path))
                old = old[~old[SESSION].isin(owned_y)]
                if not old.empty:
                    new_y = pd.concat([old, new_y], ignore_index=True) if not new_y.empty else old
            if new_y.empty:
                if path.exists():
                    path.unlink()
                continue
            new_y = new_y.sort_values([c for c in (SESSION, "instrument", "rule") if c in new_y.columns])
            atomic_write_parquet(_to_arrow(new_y.reset_index(drop=True)), path)
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
        folder = self.path(table)
        files = sorted(p for p in folder.glob("year=*/*.parquet")) if folder.exists() else []
        if not files:
            return pd.DataFrame(columns=columns or [SESSION])
        dataset = ds.dataset([str(f) for f in files], format="parquet")
        filt = None
        if start is not None:
            filt = ds.field(SESSION) >= pa.scalar(pd.Timestamp(start).date(), pa.date32())
        if end is not None:
            cond = ds.field(SESSION) <= pa.scalar(pd.Timestamp(end).date(), pa.date32())
            filt = cond if filt is None else filt & cond
        return _to_pandas(dataset.to_table(columns=columns, filter=filt))

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
    def append(self, table: str, df: pd.DataFrame, batch: str) -> list[Path]:
        """Append ``df`` as new files (one per year) named after ``batch``; never rewrites a file.

        Used for ``raw_bars``: data stays exactly as received, every fetch is kept.
        """
        if SESSION not in df.columns:
            raise LakeError(f"lake table {table}: frame has no {SESSION!r} column")
        paths: list[Path] = []
        years = pd.to_datetime(df[SESSION]).dt.year
        for year, part in df.groupby(years, sort=True):
            path = self.path(table) / f"year={year}" / f"batch-{batch}.parquet"
            if path.exists():
                raise LakeError(f"lake table {table}: batch file {path} already exists (append-only)")
            atomic_write_parquet(_to_arrow(part.reset_index(drop=True)), path)
            paths.append(path)
        return paths

    # ---- whole tables ----------------------------------------------------------------------
    def write_table(self, table: str, df: pd.DataFrame) -> Path:
        """Replace a whole (unpartitioned) table atomically."""
        path = self.path(table) / _WHOLE
        atomic_write_parquet(_to_arrow(df.reset_index(drop=True)), path)
        return path

    def read_table(self, table: str) -> pd.DataFrame:
        """Read a whole table.

        Raises:
            LakeError: the table has not been written yet (name the asset to materialize).
        """
        path = self.path(table) / _WHOLE
        if not path.exists():
            raise LakeError(f"lake table {table} does not exist yet ({path}): materialize asset {table!r} first")
        return _to_pandas(pq.read_table(path))

    def tables(self) -> list[str]:
        """Names of the tables present in the lake."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("**/*.parquet")))

    def glob(self, table: str) -> str:
        """A glob over every Parquet file of ``table`` (for DuckDB ``read_parquet``)."""
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
