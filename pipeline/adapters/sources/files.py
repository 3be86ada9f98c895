"""A folder of CSV / Parquet files as a bar source (``source.kind: files``).

Layout
------
The folder's ``*.csv`` and ``*.parquet`` files (not sub-folders; other files are ignored) hold
daily bars in one of two shapes, decided per file by its header:

- **one file per instrument**: no instrument column; the file stem is the symbol
  (``ES.csv`` -> ``ES``). Rename vendor files to their symbol, e.g.
  ``Dukascopy-EURUSD-...-bardata_D1.csv`` -> ``EURUSD.csv``, Carver's ``US10_price.csv`` ->
  ``US10.csv``.
- **long files**: an instrument column holds the symbol of each row; one file may hold many
  instruments.

Which files are opened: the files named after a requested symbol first (``ES.csv`` for ``ES``);
only when some requested instrument has no readable file of its own are the other files opened to
look for long files. So a one-per-instrument file whose symbol is not requested is never opened,
and an instrument with a file of its own is read from that file alone. Within the files opened,
the same instrument in several files is returned from all of them (raw stays raw; the quality
step resolves duplicates).

Column names (case-insensitive, surrounding spaces ignored; other columns are ignored):

============  ==========================================================================
field         accepted names (first group found wins)
============  ==========================================================================
session       ``session``, ``date``, ``datetime``, ``timestamp`` (exactly one of them)
open          ``open``
high          ``high``
low           ``low``
close         ``close``; else ``price``; else ``adj close`` / ``adj_close`` / ``adjclose``;
              else ``fx`` (pysystemtrade FX files)
volume        ``volume``, ``vol``
instrument    ``instrument``, ``symbol``, ``ticker``, ``name`` (long files only)
============  ==========================================================================

So pysystemtrade's adjusted prices (``DATETIME,PRICE``), Dukascopy's daily bars
(``Date,Open,High,Low,Close`` with ``yyyy.mm.dd`` dates), Yahoo-style
``Date,Open,High,Low,Close,Adj Close,Volume`` and long ``date,...,Name`` tables all read as they
are. open/high/low/volume are optional (NaN when absent); close is required.

Values
------
Dates: ISO 8601 is tried first, then the format pandas infers from the file's first date (e.g.
``2003.05.04``, ``1/4/1999`` month first); all dates of a file must share one format. Integer
dates are read as ``yyyymmdd``. Times are dropped: a session is its date at midnight (a file of
intraday bars therefore yields several rows per session, which the quality step quarantines as
duplicates). Prices and volume are returned exactly as written: no cleaning, no filling.
Empty cells and the markers ``nan``, ``na``, ``n/a``, ``null``, ``none`` and ``.`` (FRED) mean
"no value" (NaN); a line with every cell empty is not a bar and is skipped.

Errors name the file and the data row (1-based, header excluded; for CSV also the line):
unparseable date, non-numeric price text, empty instrument, missing date or close column (with the
columns found), ambiguous columns; a file that is empty, binary (NUL bytes) or not UTF-8 text is
named as such. Each is a :class:`~pipeline.bars.SourceDataError` whose ``kind`` says which
(:data:`~pipeline.bars.UNREADABLE_KINDS`).

Bad files: :meth:`FilesSource.fetch` raises on the first file it cannot read (a library caller
sees the problem at once); :meth:`FilesSource.fetch_report` (what the ``raw_bars`` asset calls)
returns the bars of the readable files and names each unreadable file and each requested
instrument no readable file holds, and :meth:`FilesSource.last_session` skips unreadable files.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.bars import (
    UNREADABLE_COLUMNS,
    SourceDataError,
    SourceError,
    SourceReport,
    as_fetched_at,
    check_range,
    conform_bars,
    empty_bars,
    unknown_instruments_error,
    utc_now,
)

SUFFIXES = (".csv", ".parquet")
#: field -> alias groups in priority order (lower case); the first group with a match wins and a
#: group must not match twice.
COLUMN_ALIASES: dict[str, list[tuple[str, ...]]] = {
    "session": [("session", "date", "datetime", "timestamp")],
    "open": [("open",)],
    "high": [("high",)],
    "low": [("low",)],
    "close": [("close",), ("price",), ("adj close", "adj_close", "adjclose"), ("fx",)],
    "volume": [("volume", "vol")],
    "instrument": [("instrument", "symbol", "ticker", "name")],
}
MISSING_MARKERS = frozenset({"", "nan", "na", "n/a", "null", "none", "."})
_VALUE_FIELDS = ("open", "high", "low", "close", "volume")
#: Bytes read from the start of a CSV file to tell text from binary content.
SNIFF_BYTES = 8192


class FilesSource:
    """Bars from a folder of CSV / Parquet files (layout and column names: module docstring).

    Parameters
    ----------
    folder : str or Path
        The folder; relative paths resolve against the working directory.
    clock : callable, optional
        Returns the ``fetched_at`` timestamp (UTC) of a call; tests inject a fixed clock.

    Raises
    ------
    SourceError
        The folder does not exist.

    Notes
    -----
    Files are parsed when first needed and cached until their size or modification time changes,
    so a file a user replaces between runs is re-read. The ``source`` column is
    ``"files:<file name>"``.
    """

    name = "files"

    def __init__(self, folder: str | Path, clock: Callable[[], pd.Timestamp] = utc_now):
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise SourceError(
                f"files: bar folder {self.folder} does not exist; set source.path to a folder of "
                "*.csv / *.parquet bar files"
            )
        self._clock = clock
        self._cache: dict[Path, tuple[tuple[int, int], pd.DataFrame]] = {}

    # -- discovery -------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        return sorted(
            p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
        )

    def _layout(self) -> tuple[dict[str, list[Path]], list[Path]]:
        """(symbol -> per-instrument files, long files); reads every file's header."""
        per_symbol: dict[str, list[Path]] = {}
        long_files: list[Path] = []
        for path in self._files():
            if _find_column(path, self._header(path), "instrument") is not None:
                long_files.append(path)
            else:
                per_symbol.setdefault(path.stem, []).append(path)
        return per_symbol, long_files

    def instruments(self) -> list[str]:
        """Sorted symbols available in the folder (reads every file; raises on a bad one)."""
        per_symbol, long_files = self._layout()
        names = set(per_symbol)
        for path in long_files:
            names.update(self._read(path)["instrument"].unique().tolist())
        return sorted(names)

    # -- reading ---------------------------------------------------------------------------
    def _cached(self, path: Path, what: str, parse: Callable[[Path], object]) -> object:
        """``parse(path)`` cached by (path, what) until the file's size or mtime changes; a
        failure is cached too, so a bad file is read once per version."""
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        hit = self._cache.get((path, what))
        if hit is None or hit[0] != key:
            try:
                hit = (key, parse(path))
            except SourceDataError as exc:
                hit = (key, exc)
            self._cache[(path, what)] = hit
        if isinstance(hit[1], SourceDataError):
            raise hit[1]
        return hit[1]

    def _read(self, path: Path) -> pd.DataFrame:
        return self._cached(path, "rows", lambda p: read_bar_file(p, symbol=p.stem))

    def _header(self, path: Path) -> list[str]:
        return self._cached(path, "header", _header)

    def _scan(self, instruments: Sequence[str]) -> _Scan:
        """Read what ``instruments`` need (see the module docstring for which files are opened),
        keeping every file that cannot be read with its error instead of raising."""
        wanted = list(dict.fromkeys(instruments))
        files = self._files()
        scan = _Scan(wanted=wanted)
        own = [p for p in files if p.stem in set(wanted)]
        for path in own:
            scan.add(path, self._read)
        if set(wanted) - scan.covered:
            for path in (p for p in files if p.stem not in set(wanted)):
                try:
                    is_long = _find_column(path, self._header(path), "instrument") is not None
                except SourceDataError as exc:
                    scan.unreadable.append((path, exc))
                    continue
                if is_long:
                    scan.add(path, self._read)
                else:
                    scan.available.add(path.stem)
        return scan

    def fetch(
        self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Bars of ``instruments`` for sessions in ``[start, end]``; see :class:`BarSource`.

        Raises
        ------
        SourceDataError
            A file it opens cannot be read (the first one; the message names file and row), or
            an instrument no file holds (the message lists those the folder has).
        SourceError
            start > end.
        """
        s, e = check_range(start, end)
        scan = self._scan(instruments)
        if scan.unreadable:
            raise scan.unreadable[0][1]
        if scan.missing:
            raise unknown_instruments_error(f"files ({self.folder})", scan.missing, sorted(scan.available))
        return self._in_range(scan.rows(), s, e)

    def fetch_report(
        self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp
    ) -> SourceReport:
        """Like :meth:`fetch`, but a file that cannot be read is reported, not raised.

        Returns
        -------
        SourceReport
            ``bars``: the readable files' bars of ``instruments`` in ``[start, end]`` (raw-bar
            schema); ``unreadable``: one row per file that could not be read (path, the symbol
            it is named after when requested, kind, reason naming file and row, fingerprint
            ``"<size>:<mtime_ns>"``); ``missing``: requested instruments no readable file holds.

        Raises
        ------
        SourceError
            start > end (nothing else: bad files are in the report).
        """
        s, e = check_range(start, end)
        scan = self._scan(instruments)
        return SourceReport(self._in_range(scan.rows(), s, e), scan.unreadable_frame(), scan.missing)

    def _in_range(self, rows: pd.DataFrame, s: pd.Timestamp, e: pd.Timestamp) -> pd.DataFrame:
        rows = rows[(rows["session"] >= s) & (rows["session"] <= e)]
        return conform_bars(rows, fetched_at=as_fetched_at(self._clock()))

    def last_session(self, instruments: Sequence[str]) -> pd.Timestamp | None:
        """Latest session with a row for ANY of ``instruments``; see :class:`BarSource`.

        A row counts even when its close is empty: the source reports what the files hold.
        Files that cannot be read are skipped (:meth:`fetch_report` names them).

        Raises
        ------
        SourceDataError
            No readable file holds any of ``instruments``: the message names the unreadable
            files and lists the instruments the folder has.
        """
        scan = self._scan(instruments)
        rows = scan.rows()
        if len(scan.missing) == len(scan.wanted) and scan.wanted:
            bad = "; ".join(str(exc) for _, exc in scan.unreadable)
            error = unknown_instruments_error(f"files ({self.folder})", scan.missing, sorted(scan.available))
            raise SourceDataError(f"{error}{f' Unreadable: {bad}' if bad else ''}", "unknown")
        return None if rows.empty else pd.Timestamp(rows["session"].max())


class _Scan:
    """What :meth:`FilesSource._scan` found: frames read, unreadable files, instruments seen."""

    def __init__(self, wanted: list[str]):
        self.wanted = wanted
        self.frames: list[pd.DataFrame] = []
        self.unreadable: list[tuple[Path, SourceDataError]] = []
        self.covered: set[str] = set()  # requested instruments some readable file holds
        self.available: set[str] = set()  # every instrument seen (for the "it has" message)

    def add(self, path: Path, read: Callable[[Path], pd.DataFrame]) -> None:
        try:
            frame = read(path)
        except SourceDataError as exc:
            self.unreadable.append((path, exc))
            return
        held = frame["instrument"].unique().tolist()
        self.available.update(held)
        self.covered.update(set(held) & set(self.wanted))
        self.frames.append(frame[frame["instrument"].isin(self.wanted)])

    @property
    def missing(self) -> list[str]:
        return [i for i in self.wanted if i not in self.covered]

    def rows(self) -> pd.DataFrame:
        frames = [f for f in self.frames if len(f)]
        if not frames:
            return empty_bars().drop(columns="fetched_at")
        return pd.concat(frames, ignore_index=True)

    def unreadable_frame(self) -> pd.DataFrame:
        wanted = set(self.wanted)
        rows = []
        for path, exc in self.unreadable:
            try:
                stat = path.stat()
                fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                fingerprint = "gone"
            rows.append((str(path), path.stem if path.stem in wanted else "", exc.kind, str(exc), fingerprint))
        return pd.DataFrame(rows, columns=UNREADABLE_COLUMNS).astype("str")


# -- parsing one file ----------------------------------------------------------------------


def _sniff(path: Path) -> None:
    """Raise the SourceDataError of a file that is empty or (CSV) binary, before parsing it."""
    if path.stat().st_size == 0:
        raise SourceDataError(f"files: {path} is empty (0 bytes); write the bars or remove the file", "empty")
    if path.suffix.lower() == ".csv":
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
        if b"\x00" in head:
            raise SourceDataError(
                f"files: {path} is binary (NUL bytes in its first {len(head)} bytes), not CSV text; "
                "export it as CSV or give it its real extension", "binary")


def _reader_error(path: Path, exc: Exception, what: str = "") -> SourceDataError:
    """The SourceDataError for an exception of the CSV / Parquet reader on ``path``."""
    if isinstance(exc, UnicodeDecodeError):
        return SourceDataError(
            f"files: {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded: "
            f"{exc.reason}); save it as UTF-8", "encoding")
    if isinstance(exc, pd.errors.EmptyDataError):
        return SourceDataError(f"files: {path} has no header line (only blank lines); write the bars", "empty")
    return SourceDataError(f"files: cannot read {what}{path}: {exc}", "unreadable")


def _header(path: Path) -> list[str]:
    _sniff(path)
    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.read_schema(path).names)
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except Exception as exc:  # any reader failure becomes a named-file error
        raise _reader_error(path, exc, "the header of ") from exc


def _find_column(path: Path, columns: list[str], field: str) -> str | None:
    """The column of ``columns`` that holds ``field`` (see COLUMN_ALIASES), or None."""
    by_lower: dict[str, list[str]] = {}
    for c in columns:
        by_lower.setdefault(str(c).strip().lower(), []).append(c)
    for group in COLUMN_ALIASES[field]:
        found = [c for alias in group for c in by_lower.get(alias, [])]
        if len(found) > 1:
            raise SourceDataError(
                f"files: {path} has {len(found)} columns that could be the {field} "
                f"({', '.join(map(str, found))}); keep one or rename the others", "no_header"
            )
        if found:
            return found[0]
    return None


def _where(path: Path, row: int) -> str:
    """'file X, data row N (line N+1)': rows are 1-based, the header is line 1."""
    if path.suffix.lower() == ".csv":
        return f"{path}, data row {row} (line {row + 1})"
    return f"{path}, data row {row}"


def _is_missing(text: pd.Series) -> np.ndarray:
    return text.str.strip().str.lower().isin(MISSING_MARKERS).to_numpy()


def _parse_sessions(path: Path, col: pd.Series, name: str, rows: np.ndarray) -> pd.Series:
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        # a daily bar stamped in its exchange's time zone: its wall-clock date is the session
        parsed = col.dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(col.dtype):
        parsed = col
    elif pd.api.types.is_integer_dtype(col.dtype):
        parsed = pd.to_datetime(col.astype("str"), format="%Y%m%d", errors="coerce")
    else:
        text = col.astype("str").str.strip()
        with warnings.catch_warnings():
            # "could not infer format": we report unparsed rows ourselves, below
            warnings.simplefilter("ignore", UserWarning)
            iso = pd.to_datetime(text, format="ISO8601", errors="coerce")
            parsed = iso
            if iso.isna().any():
                inferred = pd.to_datetime(text, errors="coerce")
                if inferred.isna().sum() < iso.isna().sum():
                    parsed = inferred
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SourceDataError(
            f"files: {_where(path, int(rows[i]))}: unparseable date {str(col.iloc[i])!r} in "
            f"column {name!r} ({int(bad.sum())} such rows); use ISO dates (yyyy-mm-dd) or one "
            "consistent format per file", "bad_row"
        )
    return parsed.dt.normalize()


def _parse_values(path: Path, col: pd.Series, name: str, rows: np.ndarray) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col.dtype):
        raise SourceDataError(f"files: {path}: column {name!r} holds booleans, not numbers", "bad_row")
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.to_numpy(dtype="float64", na_value=np.nan)
    text = col.astype("str")
    missing = _is_missing(text) | col.isna().to_numpy()
    values = pd.to_numeric(text.str.strip().where(~missing), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )
    bad = np.isnan(values) & ~missing
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SourceDataError(
            f"files: {_where(path, int(rows[i]))}: non-numeric value {str(col.iloc[i])!r} in "
            f"column {name!r} ({int(bad.sum())} such rows); write plain numbers (no thousands "
            "separators or units) or leave the cell empty", "bad_row"
        )
    return values


def read_bar_file(path: str | Path, symbol: str | None = None) -> pd.DataFrame:
    """Parse one CSV / Parquet bar file (column names and value rules: module docstring).

    Parameters
    ----------
    path : str or Path
        A ``.csv`` or ``.parquet`` file.
    symbol : str, optional
        The instrument of every row when the file has no instrument column (usually the stem).

    Returns
    -------
    DataFrame
        Columns ``session`` (midnight dates), ``instrument``, ``open, high, low, close, volume``
        (float64, NaN where absent), ``source`` (``"files:<file name>"``), in file order, one row
        per non-blank data row. Values are as written.

    Raises
    ------
    SourceDataError
        ``kind`` says which: an empty file or one of blank lines (``empty``), NUL bytes in a CSV
        (``binary``), bytes that are not UTF-8 (``encoding``), no date or close column (names the
        columns found), ambiguous columns, no instrument column and no ``symbol``
        (``no_header``), an unparseable date, non-numeric price/volume or empty instrument (names
        file and row: ``bad_row``), any other reader failure (``unreadable``).
    """
    path = Path(path)
    _sniff(path)
    try:
        if path.suffix.lower() == ".parquet":
            raw = pd.read_parquet(path)
        else:
            # everything as text so that we, not the reader, decide what is bad input
            raw = pd.read_csv(
                path, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False
            )
    except Exception as exc:  # any reader failure becomes a named-file error
        raise _reader_error(path, exc) from exc
    columns = [str(c) for c in raw.columns]
    raw.columns = columns
    found = {f: _find_column(path, columns, f) for f in COLUMN_ALIASES}
    for field, looked in (("session", "session/date/datetime/timestamp"),
                          ("close", "close/price/adj close/fx")):
        if found[field] is None:
            raise SourceDataError(
                f"files: {path} has no {field} column (looked for {looked}, any case); "
                f"found columns {columns}", "no_header"
            )
    rows = np.arange(1, len(raw) + 1)  # 1-based data row numbers, kept through the blank-line drop
    blank = np.ones(len(raw), dtype=bool)
    for c in columns:
        col = raw[c]
        if pd.api.types.is_string_dtype(col.dtype) or col.dtype == object:
            blank &= (col.isna().to_numpy()) | (col.astype("str").str.strip() == "").to_numpy()
        else:
            blank &= col.isna().to_numpy()
    raw, rows = raw.loc[~blank].reset_index(drop=True), rows[~blank]

    out = pd.DataFrame(index=raw.index)
    out["session"] = _parse_sessions(path, raw[found["session"]], found["session"], rows)
    if found["instrument"] is not None:
        inst = raw[found["instrument"]].astype("str").str.strip()
        empty = (inst == "").to_numpy() | raw[found["instrument"]].isna().to_numpy()
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise SourceDataError(
                f"files: {_where(path, int(rows[i]))}: empty instrument in column "
                f"{found['instrument']!r}; every row of a long file needs a symbol", "bad_row"
            )
        out["instrument"] = inst.to_numpy()
    elif symbol is not None:
        out["instrument"] = symbol
    else:
        raise SourceDataError(f"files: {path} has no instrument column and no symbol was given", "no_header")
    for field in _VALUE_FIELDS:
        name = found[field]
        out[field] = (
            np.nan if name is None else _parse_values(path, raw[name], name, rows)
        )
    out["source"] = f"files:{path.name}"
    out["instrument"] = out["instrument"].astype("str")
    return out
