"""A pysystemtrade data folder as a bar source (``source.kind: pysystemtrade``).

Layouts (detected by :func:`pipeline.config.pysystemtrade_folder`, first match wins):

=========  ===================================================================================
layout     files
=========  ===================================================================================
csv        today's pysystemtrade CSV folders: ``adjusted_prices_csv/X.csv`` (``DATETIME,price``),
           ``multiple_prices_csv/X.csv`` (``DATETIME,PRICE,CARRY,FORWARD,CARRY_CONTRACT,
           PRICE_CONTRACT,FORWARD_CONTRACT``), ``fx_prices_csv/XXXUSD.csv``, ``csvconfig/``
parquet    long tables ``adjusted_prices_daily.parquet`` (``instrument, date, price``) and
           ``multiple_prices_daily.parquet``, with ``fx_prices_csv/`` and ``csvconfig/``
legacy     the 2016 files side by side: ``X_price.csv`` (``DATETIME,PRICE``), ``X_carrydata.csv``,
           ``XXXUSDfx.csv``, ``instrumentconfig.csv``, ``costs_analysis.csv``
=========  ===================================================================================

Instrument names come from the data: ``EDOLLAR`` for ``EDOLLAR_price.csv`` and for
``adjusted_prices_csv/EDOLLAR.csv``, the ``instrument`` column of the Parquet table.

Bars: one per instrument and business day with a back-adjusted price, ``close`` = that price
(open, high, low and volume NaN: pysystemtrade stores closes only), ``source``
``"pysystemtrade:adjusted"``. Rows are put on pysystemtrade's business-day grid by
:func:`pipeline.adapters.pysystemtrade.read_adjusted_prices`: times are dropped and the last row of
a day is kept (pysystemtrade's CSVs hold intraday rows; the shared Parquet table is already daily),
a weekend row moves to the Friday before (``resample("1B").last()``), blank prices are not bars.
The same instrument reads to the same bars from all three layouts.

Bad files: :meth:`PysystemtradeSource.fetch` raises on the first file it cannot read;
:meth:`PysystemtradeSource.fetch_report` returns the bars of the readable files and names each
unreadable file (the raw-bar asset's path, as for the ``files`` source); :meth:`last_session`
skips unreadable files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.adapters.pysystemtrade import (
    CarverDataError,
    MultiplePrices,
    read_adjusted_prices,
    read_instrument_config,
    read_multiple_prices,
)
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
from pipeline.config import PysystemtradeFolder, pysystemtrade_folder

#: The ``source`` column of the bars.
SOURCE_NAME = "pysystemtrade:adjusted"


class PysystemtradeSource:
    """Daily closes (back-adjusted prices) of a pysystemtrade data folder; see the module docstring.

    Parameters
    ----------
    folder : str or Path
        The data folder (relative paths resolve against the working directory).
    clock : callable, optional
        Returns the ``fetched_at`` timestamp (UTC) of a call; tests inject a fixed clock.

    Attributes
    ----------
    layout : PysystemtradeFolder
        Where the folder's files are (layout, adjusted and multiple prices, FX, configuration).

    Raises
    ------
    SourceError
        The folder does not exist or holds none of the three layouts.

    Notes
    -----
    Each file is parsed when first needed and cached until its size or modification time changes
    (the Parquet table is read whole once: 1.15M rows, about 3 s). Source: pysystemtrade
    ``sysdata/csv/csv_adjusted_prices.py``, ``csv_multiple_prices.py``; ``rawdata.daily_prices``.
    """

    name = "pysystemtrade"

    def __init__(self, folder: str | Path, clock: Callable[[], pd.Timestamp] = utc_now):
        try:
            self.layout: PysystemtradeFolder = pysystemtrade_folder(folder)
        except ValueError as exc:
            raise SourceError(str(exc)) from exc
        self.folder = self.layout.root
        self._clock = clock
        self._cache: dict[Path, tuple[tuple[int, int], pd.DataFrame | CarverDataError]] = {}
        self._symbols: tuple[tuple[int, int], list[str]] | None = None

    # -- discovery -------------------------------------------------------------------------
    def instruments(self) -> list[str]:
        """Sorted instrument names with adjusted prices in the folder (from the data, not file stems);
        cached until the adjusted-price folder or table changes.

        Raises
        ------
        SourceDataError
            The Parquet table cannot be read.
        """
        stat = self.layout.adjusted.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        if self._symbols is None or self._symbols[0] != key:
            try:
                self._symbols = (key, self.layout.symbols())
            except ValueError as exc:
                raise SourceDataError(str(exc), "unreadable") from exc
        return list(self._symbols[1])

    def _file_of(self, instrument: str) -> Path:
        """The file holding ``instrument``'s adjusted prices (the one table for the Parquet layout)."""
        if self.layout.layout == "parquet":
            return self.layout.adjusted
        if self.layout.layout == "csv":
            return self.layout.adjusted / f"{instrument}.csv"
        return self.layout.adjusted / f"{instrument}_price.csv"

    # -- reading ---------------------------------------------------------------------------
    def _long(self, path: Path) -> pd.DataFrame:
        """Long ``instrument, session, close`` rows of one file (cached; a failure is cached too)."""
        try:
            stat = path.stat()
        except OSError as exc:  # removed since the folder was listed
            raise CarverDataError(f"pysystemtrade: cannot read {path}: {exc}") from exc
        key = (stat.st_mtime_ns, stat.st_size)
        hit = self._cache.get(path)
        if hit is None or hit[0] != key:
            try:
                prices = read_adjusted_prices(path).prices
                long = prices.stack().dropna().rename("close").reset_index()  # bars where there is a price
                hit = (key, long[["instrument", "session", "close"]])
            except CarverDataError as exc:
                hit = (key, exc)
            self._cache[path] = hit
        if isinstance(hit[1], CarverDataError):
            raise hit[1]
        return hit[1]

    def _scan(self, instruments: Sequence[str]) -> _Scan:
        """Read the files ``instruments`` need, keeping each unreadable file with its error."""
        wanted = list(dict.fromkeys(instruments))
        held = set(self.instruments())
        scan = _Scan(wanted=wanted, not_held=[i for i in wanted if i not in held])
        frames = []
        for path in dict.fromkeys(self._file_of(i) for i in wanted if i in held):
            try:
                frames.append(self._long(path))
            except CarverDataError as exc:
                one_file_each = self.layout.layout != "parquet"
                instrument = next(i for i in wanted if self._file_of(i) == path) if one_file_each else ""
                scan.unreadable.append((path, instrument, exc))
        if frames:
            rows = pd.concat(frames, ignore_index=True)
            scan.rows = rows[rows["instrument"].isin(wanted)]
        return scan

    def _bars(self, rows: pd.DataFrame, s: pd.Timestamp, e: pd.Timestamp) -> pd.DataFrame:
        rows = rows[(rows["session"] >= s) & (rows["session"] <= e)]
        if rows.empty:
            return empty_bars()
        bars = rows.assign(open=float("nan"), high=float("nan"), low=float("nan"), volume=float("nan"),
                           source=SOURCE_NAME)
        return conform_bars(bars, fetched_at=as_fetched_at(self._clock()))

    def _unknown(self, missing: list[str]) -> SourceDataError:
        return unknown_instruments_error(f"pysystemtrade ({self.folder})", missing, self.instruments())

    def fetch(self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        """Bars of ``instruments`` for sessions in ``[start, end]``; see :class:`~pipeline.bars.BarSource`.

        Returns
        -------
        DataFrame
            Raw-bar schema (:data:`~pipeline.bars.BAR_COLUMNS`): ``close`` = back-adjusted price in
            price points (may be negative), open/high/low/volume NaN, sorted by (instrument, session).

        Raises
        ------
        SourceDataError
            A file cannot be read (the first one; the message names file and row), or an
            instrument the folder does not hold (the message lists those it has).
        SourceError
            start > end.
        """
        s, e = check_range(start, end)
        scan = self._scan(instruments)
        if scan.unreadable:
            raise scan.unreadable[0][2]
        if scan.not_held:
            raise self._unknown(scan.not_held)
        return self._bars(scan.rows, s, e)

    def fetch_report(self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp) -> SourceReport:
        """Like :meth:`fetch`, but a file that cannot be read is reported, not raised.

        Returns
        -------
        SourceReport
            ``bars``: the readable files' bars of ``instruments`` in ``[start, end]``; ``unreadable``:
            one row per file that could not be read (path, its instrument for a one-per-instrument
            file, else empty, kind, reason naming file and row, fingerprint ``"<size>:<mtime_ns>"``);
            ``missing``: requested instruments no readable file holds.

        Raises
        ------
        SourceError
            start > end (nothing else: bad files are in the report).
        """
        s, e = check_range(start, end)
        scan = self._scan(instruments)
        report = []
        for path, instrument, exc in scan.unreadable:
            try:
                stat = path.stat()
                fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                fingerprint = "gone"
            report.append((str(path), instrument, exc.kind, str(exc), fingerprint))
        frame = pd.DataFrame(report, columns=UNREADABLE_COLUMNS).astype("str")
        return SourceReport(self._bars(scan.rows, s, e), frame, scan.missing)

    def last_session(self, instruments: Sequence[str]) -> pd.Timestamp | None:
        """Latest session with a price for ANY of ``instruments``; see :class:`~pipeline.bars.BarSource`.

        Files that cannot be read are skipped (:meth:`fetch_report` names them).

        Raises
        ------
        SourceDataError
            None of ``instruments`` is in the folder or readable (the message lists what it has
            and names the unreadable files).
        """
        scan = self._scan(instruments)
        if scan.wanted and len(scan.missing) == len(scan.wanted):
            bad = "; ".join(str(exc) for _, _, exc in scan.unreadable)
            error = self._unknown(scan.missing)
            raise SourceDataError(f"{error}{f' Unreadable: {bad}' if bad else ''}", "unknown")
        return None if scan.rows.empty else pd.Timestamp(scan.rows["session"].max())

    # -- what a carry step and the configuration need ----------------------------------------
    def multiple_prices(self, instruments: str | Sequence[str]) -> MultiplePrices:
        """pysystemtrade multiple prices (held, carry and forward contracts) of ``instruments``.

        Parameters
        ----------
        instruments : str or sequence of str
            One instrument or several.

        Returns
        -------
        MultiplePrices
            On the business-day grid, as the bars (``read_multiple_prices(..., business_days=True)``):
            ``price``, ``carry``, ``forward`` (price points) and the contracts (``yyyymmdd``, Int64).

        Raises
        ------
        SourceDataError
            The folder has no multiple prices, none for an instrument (names it), or a file
            cannot be read (file and row named).
        """
        wanted = [instruments] if isinstance(instruments, str) else list(instruments)
        where = self.layout.multiple
        if where is None:
            raise SourceDataError(f"pysystemtrade: {self.folder} has no multiple prices (multiple_prices_csv/, "
                                  "multiple_prices_daily.parquet or X_carrydata.csv)", "unknown")
        if self.layout.layout == "parquet":
            m = read_multiple_prices(where, wanted, business_days=True)
        else:
            suffix = "_carrydata" if self.layout.layout == "legacy" else ""
            files = [where / f"{i}{suffix}.csv" for i in wanted]
            absent = [i for i, f in zip(wanted, files, strict=True) if not f.is_file()]
            if absent:
                raise SourceDataError(f"pysystemtrade: no multiple prices for {absent} in {where}", "unknown")
            m = read_multiple_prices(where, wanted, business_days=True)
        absent = [i for i in wanted if i not in m.price.columns]
        if absent:
            raise SourceDataError(f"pysystemtrade: no multiple prices for {absent} in {where}", "unknown")
        return m

    def instrument_config(self) -> pd.DataFrame:
        """The folder's instrument configuration with its costs (:func:`read_instrument_config`).

        Raises
        ------
        SourceDataError
            No ``instrumentconfig.csv`` in the folder, or a malformed one (file and row named).
        """
        if self.layout.instrument_config is None:
            raise SourceDataError(f"pysystemtrade: {self.folder} has no instrumentconfig.csv", "unknown")
        return read_instrument_config(self.layout.instrument_config, self.layout.costs)


@dataclass
class _Scan:
    """What :meth:`PysystemtradeSource._scan` found."""

    wanted: list[str]
    not_held: list[str]  # requested instruments the folder has no prices for
    rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["instrument", "session", "close"]))
    unreadable: list[tuple[Path, str, CarverDataError]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Requested instruments no readable file holds a price for, in request order."""
        covered = set(self.rows["instrument"])
        return [i for i in self.wanted if i not in covered]
