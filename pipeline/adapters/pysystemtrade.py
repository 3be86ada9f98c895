"""Readers for pysystemtrade's data formats, so users can bring Carver-style futures data.

Two layouts are understood:

* the legacy (2016) CSV layout, one file per instrument: ``X_price.csv`` (``DATETIME,PRICE``,
  back-adjusted), ``X_carrydata.csv`` (``DATETIME,PRICE,CARRY,CARRY_CONTRACT,PRICE_CONTRACT``,
  contracts as ``yyyymm``), FX ``XXXUSDfx.csv`` (``DATETIME,FX``), ``instrumentconfig.csv`` and
  ``costs_analysis.csv``;
* the current layout: long Parquet tables (``instrument, date, price`` for adjusted prices;
  ``instrument, date, PRICE, PRICE_CONTRACT, CARRY, CARRY_CONTRACT, FORWARD, FORWARD_CONTRACT``
  for multiple prices, contracts as ``yyyymmdd`` with ``dd = 00`` for monthly contracts), CSVs
  ``X.csv`` with the same columns, FX ``XXXUSD.csv`` (``DATETIME,PRICE``), and
  ``csvconfig/instrumentconfig.csv`` plus ``spreadcosts.csv``.

Row rules (the same for every reader):

* Dates must parse (ISO dates or date-times); an unparseable or empty date raises
  :class:`CarverDataError` naming the file and the 1-based data row. Timestamps are normalised
  to their date (a daily bar stamped 23:00 belongs to that day's session).
* Prices must be numbers or blank; a non-numeric cell raises, naming file, row and column.
* A row with a blank price is **rejected**: it is not in the returned frames, and it is listed
  in the ``issues`` frame with its reason. Blank CARRY / FORWARD / contract cells are ordinary
  missing data (NaN) and are not listed.
* Two rows of one instrument on the same date (e.g. an intraday row and a close) keep the later
  row in file order; the earlier is rejected with that reason.
* Sunday-dated rows are **kept** (pysystemtrade's FX files and some futures carry a few, being
  end-of-week rows stamped in another time zone) and listed in ``issues`` with ``kept=True``,
  so callers can map them to a session explicitly; except on the business-day grid (below).
* Negative prices are valid (back-adjusted series can go below zero: US10, SOYBEAN, ...).

The business-day grid
---------------------
:func:`read_adjusted_prices` (and :func:`read_multiple_prices` with ``business_days=True``)
return pysystemtrade's ``resample("1B").last()``: a weekend row moves to the Friday before and,
being later, wins over Friday's row (listed with ``kept=True``), and the index is every business
day from the first to the last date read, NaN where an instrument has no price. The index is then
a fixed calendar, not the union of the dates the instruments read together happen to have, so an
instrument's vol and forecasts do not depend on which other instruments were read with it (the
EWMAs of :mod:`pipeline.signals.rules` count sessions of the index, so a one-instrument frame
that dropped its blank or holiday rows would decay them over fewer sessions than a panel).

``issues`` has the columns ``instrument, source, row, session, reason, kept``: ``source`` is the
file, ``row`` the 1-based data row in it (the header is not counted; CSV line = row + 1),
``session`` the normalised date (NaT if none), ``kept`` whether the row is in the frames.

Wide frames follow the project convention: index ``session`` (tz-naive midnight, ascending,
unique), columns ``instrument``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.bars import SourceDataError
from pipeline.config import CostModel, Instrument
from pipeline.instruments import FXError, currencies, fx_to_base

ISSUE_COLUMNS = ["instrument", "source", "row", "session", "reason", "kept"]
_MULTIPLE_VALUES = ("PRICE", "CARRY", "FORWARD")
_MULTIPLE_CONTRACTS = ("PRICE_CONTRACT", "CARRY_CONTRACT", "FORWARD_CONTRACT")
_FX_NAME = re.compile(r"^([A-Z]{6})(fx)?$")
_SUNDAY = 6
_FRIDAY = 4
_SNIFF_BYTES = 8192
#: The issue of a weekend-dated row put on the business-day grid (pst ``resample("1B").last()``).
WEEKEND_MOVED = "weekend-dated row moved to the Friday before (pysystemtrade's resample('1B').last())"


class CarverDataError(SourceDataError):
    """A pysystemtrade data file cannot be read; the message names the file, row and fix.

    A :class:`~pipeline.bars.SourceDataError` (so a ``ValueError``) whose ``kind`` says what is
    wrong, as for the files source: ``empty``, ``binary``, ``encoding``, ``no_header`` (a missing
    column), ``bad_row`` (an unparseable date or number, a bad configuration row), ``unreadable``
    (any other reader failure, a missing path) or ``unknown`` (no file of the kind asked for).
    """

    def __init__(self, message: str, kind: str = "unreadable"):
        super().__init__(message, kind)


@dataclass(frozen=True)
class PriceTable:
    """A wide price table and the rows that did not make it in (or were flagged).

    Attributes
    ----------
    prices : DataFrame, index ``session``, columns ``instrument``
        Prices in price points (float64); NaN = no price that session.
    issues : DataFrame, columns ``ISSUE_COLUMNS``
        Rejected rows (blank price, duplicate date) and kept-but-flagged rows (Sunday dates).
    """

    prices: pd.DataFrame
    issues: pd.DataFrame


@dataclass(frozen=True)
class MultiplePrices:
    """pysystemtrade "multiple prices": the held contract, the carry contract and the forward.

    Attributes
    ----------
    price, carry, forward : DataFrame, index ``session``, columns ``instrument``
        Prices (float64, price points) of the currently held contract, of the contract used for
        carry and of the next contract to hold. NaN where absent (the 2016 layout has no forward).
    price_contract, carry_contract, forward_contract : DataFrame, same index and columns
        Contract months as ``yyyymmdd`` integers (nullable ``Int64``; ``dd = 00`` for monthly
        contracts; the 2016 ``yyyymm`` values are multiplied by 100), <NA> where absent.
    issues : DataFrame, columns ``ISSUE_COLUMNS``
        As for :class:`PriceTable`; a row is rejected when its PRICE is blank.
    """

    price: pd.DataFrame
    carry: pd.DataFrame
    forward: pd.DataFrame
    price_contract: pd.DataFrame
    carry_contract: pd.DataFrame
    forward_contract: pd.DataFrame
    issues: pd.DataFrame


# --------------------------------------------------------------------------- parsing helpers


def _where(source: Path, row: int) -> str:
    if source.suffix.lower() == ".csv":
        return f"{source}, data row {row} (line {row + 1})"
    return f"{source}, data row {row}"


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise CarverDataError(f"carver_data: cannot read {path}: {exc}") from exc
    if not head:
        raise CarverDataError(f"carver_data: {path} is empty (0 bytes); write the prices or remove the file", "empty")
    if b"\x00" in head:
        raise CarverDataError(f"carver_data: {path} is binary (NUL bytes), not CSV text", "binary")
    try:
        # all text, so that we (not the reader) decide what is blank and what is bad
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except UnicodeDecodeError as exc:
        raise CarverDataError(f"carver_data: {path} is not UTF-8 text ({exc.reason}); save it as UTF-8",
                              "encoding") from exc
    except pd.errors.EmptyDataError as exc:
        raise CarverDataError(f"carver_data: {path} has no header line; write the prices", "empty") from exc
    except Exception as exc:
        raise CarverDataError(f"carver_data: cannot read {path}: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _column(frame: pd.DataFrame, path: Path, *names: str, required: bool = True) -> str | None:
    by_upper = {c.upper(): c for c in frame.columns}
    for name in names:
        if name.upper() in by_upper:
            return by_upper[name.upper()]
    if required:
        raise CarverDataError(
            f"carver_data: {path} has no {' / '.join(names)} column (found {list(frame.columns)}); "
            "is this a pysystemtrade file of the expected kind?", "no_header"
        )
    return None


def _parse_dates(col: pd.Series, path: Path, column: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        parsed = col.dt.tz_localize(None) if isinstance(col.dtype, pd.DatetimeTZDtype) else col
    else:
        text = col.astype("str").str.strip()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CarverDataError(
            f"carver_data: {_where(path, i + 1)}: unparseable date {str(col.iloc[i])!r} in column "
            f"{column!r} ({int(bad.sum())} such rows); write ISO dates (yyyy-mm-dd[ hh:mm:ss])", "bad_row"
        )
    return parsed.dt.normalize().reset_index(drop=True)


def _parse_numbers(col: pd.Series, path: Path, column: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return col.to_numpy(dtype="float64", na_value=np.nan)
    text = col.astype("str").str.strip()
    blank = (text == "") | col.isna().to_numpy() | text.str.lower().isin(["nan", "na", "null", "none"])
    values = pd.to_numeric(text.where(~blank), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(values) & ~blank.to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CarverDataError(
            f"carver_data: {_where(path, i + 1)}: non-numeric value {str(col.iloc[i])!r} in column "
            f"{column!r} ({int(bad.sum())} such rows); write plain numbers or leave the cell empty", "bad_row"
        )
    return values


def _parse_contracts(col: pd.Series, path: Path, column: str) -> np.ndarray:
    values = _parse_numbers(col, path, column)
    # legacy files hold yyyymm; the current format yyyymmdd (dd = 00 for a monthly contract)
    return np.where(values < 1_000_000, values * 100.0, values)


def _empty_issues() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "instrument": pd.Series(dtype="str"),
            "source": pd.Series(dtype="str"),
            "row": pd.Series(dtype="int64"),
            "session": pd.Series(dtype="datetime64[us]"),
            "reason": pd.Series(dtype="str"),
            "kept": pd.Series(dtype="bool"),
        }
    )


def _issue_rows(long: pd.DataFrame, mask: np.ndarray, reason: str, kept: bool) -> pd.DataFrame:
    rows = long.loc[mask, ["instrument", "source", "row", "dated"]].rename(columns={"dated": "session"})
    rows["reason"] = reason
    rows["kept"] = kept
    return rows


def _finish(
    long: pd.DataFrame, value_columns: list[str], price_column: str, business_days: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reject blank-price and duplicate rows, flag or move weekend rows; returns (clean long rows, issues).

    ``long`` has columns instrument, source, row, session and the value columns. With
    ``business_days`` a Saturday or Sunday row is moved to the Friday before first (so it competes
    with Friday's own row as the later one, pst ``resample("1B").last()``) and flagged as moved;
    without, Sunday rows keep their date and are flagged.
    """
    long = long.assign(dated=long["session"])
    if business_days:
        back = np.clip(long["session"].dt.day_of_week.to_numpy() - _FRIDAY, 0, None)  # Sat 1, Sun 2
        long["session"] = long["session"] - pd.to_timedelta(back, unit="D")
    long = long.sort_values(["instrument", "session", "source", "row"], kind="stable").reset_index(drop=True)
    blank = long[price_column].isna().to_numpy()
    issues = [_issue_rows(long, blank, f"blank {price_column}: row rejected", kept=False)]
    long = long.loc[~blank].reset_index(drop=True)
    dupes = long.duplicated(["instrument", "session"], keep="last").to_numpy()
    issues.append(_issue_rows(long, dupes, "duplicate date for this instrument: the later row is kept", kept=False))
    long = long.loc[~dupes].reset_index(drop=True)
    if business_days:
        moved = (long["session"] != long["dated"]).to_numpy()
        issues.append(_issue_rows(long, moved, WEEKEND_MOVED, kept=True))
    else:
        sunday = (long["session"].dt.day_of_week == _SUNDAY).to_numpy()
        issues.append(_issue_rows(long, sunday, "Sunday-dated row kept: map it to a session explicitly", kept=True))
    found = [i for i in issues if len(i)]
    frame = pd.concat(found, ignore_index=True) if found else _empty_issues()
    frame = frame.sort_values(["instrument", "source", "row"], kind="stable").reset_index(drop=True)
    frame["source"] = frame["source"].astype("str")
    frame["row"] = frame["row"].astype("int64")
    return long[["instrument", "session", *value_columns]], frame[ISSUE_COLUMNS]


def _wide(long: pd.DataFrame, column: str, business_days: bool = False) -> pd.DataFrame:
    return _wide_many(long, [column], business_days)[column]


def _wide_many(long: pd.DataFrame, columns: list[str], business_days: bool = False) -> dict[str, pd.DataFrame]:
    """Session x instrument float frames of ``columns`` (``long`` has unique (instrument, session)).

    The same as ``long.pivot(index="session", columns="instrument", values=column)`` with sorted
    sessions and instruments, but the sessions and instruments are factorised once for all the
    columns and each frame is one scatter into an array. With ``business_days`` the index is
    every business day (Monday to Friday) from the first to the last session of ``long`` (whose
    sessions must then all be business days), NaN where an instrument has no row.
    """
    names = np.asarray(long["instrument"].astype("str"), dtype=object)
    instruments = sorted(set(names))
    instrument_codes = pd.Index(instruments).get_indexer(names)
    if business_days:
        sessions = pd.DatetimeIndex(long["session"])
        index = pd.bdate_range(sessions.min(), sessions.max(), name="session") if len(long) else sessions[:0]
        index = pd.DatetimeIndex(index, name="session").as_unit(sessions.unit)
        session_codes = index.get_indexer(sessions)
    else:
        session_codes, sessions = pd.factorize(long["session"], sort=True)
        index = pd.DatetimeIndex(sessions, name="session")
    out = {}
    for column in columns:
        values = np.full((len(index), len(instruments)), np.nan, order="F")
        values[session_codes, instrument_codes] = long[column].to_numpy(dtype="float64", na_value=np.nan)
        out[column] = pd.DataFrame(values, index=index, columns=pd.Index(instruments, name="instrument"), copy=False)
    return out


def _files(path: Path, suffix: str) -> list[tuple[str, Path]]:
    """(instrument, file) pairs of a folder: ``X<suffix>.csv`` files, else every ``X.csv``."""
    legacy = sorted(path.glob(f"*{suffix}.csv"))
    if legacy:
        return [(f.stem[: -len(suffix)], f) for f in legacy]
    return [(f.stem, f) for f in sorted(path.glob("*.csv"))]


def _single(path: Path, suffix: str) -> str:
    stem = path.stem
    return stem.removesuffix(suffix)


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CarverDataError(f"carver_data: {what}: {path} does not exist; pass a file or a folder of files")
    return path


def _read_parquet(path: Path, instruments: list[str] | None) -> pd.DataFrame:
    try:
        filters = [("instrument", "in", list(instruments))] if instruments is not None else None
        frame = pd.read_parquet(path, filters=filters)
    except Exception as exc:
        raise CarverDataError(f"carver_data: cannot read {path}: {exc}") from exc
    frame.columns = [str(c) for c in frame.columns]
    return frame.reset_index(drop=True)


def _long_from_frame(
    frame: pd.DataFrame, path: Path, instrument: str | None, values: dict[str, tuple[str, ...]],
    contracts: dict[str, tuple[str, ...]] | None = None, required: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Parse one raw table (text CSV or typed Parquet) into long rows with canonical columns."""
    date_col = _column(frame, path, "DATETIME", "date")
    out = pd.DataFrame({"row": np.arange(1, len(frame) + 1, dtype="int64")})
    if instrument is None:
        inst_col = _column(frame, path, "instrument")
        out["instrument"] = frame[inst_col].astype("str").to_numpy()
    else:
        out["instrument"] = instrument
    out["source"] = str(path)
    out["session"] = _parse_dates(frame[date_col], path, date_col)
    for name, aliases in values.items():
        col = _column(frame, path, *aliases, required=name in required)
        out[name] = np.nan if col is None else _parse_numbers(frame[col], path, col)
    for name, aliases in (contracts or {}).items():
        col = _column(frame, path, *aliases, required=name in required)
        out[name] = np.nan if col is None else _parse_contracts(frame[col], path, col)
    return out


# --------------------------------------------------------------------------- public readers


def read_adjusted_prices(
    path_or_folder: str | Path, instruments: list[str] | None = None, business_days: bool = True
) -> PriceTable:
    """Back-adjusted daily prices from pysystemtrade files, as a wide frame on the business-day grid.

    Parameters
    ----------
    path_or_folder : str or Path
        One of: a folder of legacy ``X_price.csv`` files (``DATETIME,PRICE``; if the folder holds
        none, every ``X.csv`` in it, pysystemtrade's ``adjusted_prices_csv`` layout); one such CSV
        (instrument = file stem without ``_price``); or a long Parquet table with columns
        ``instrument, date, price``.
    instruments : list of str, optional
        Read only these instruments (default: all).
    business_days : bool
        ``True`` (default): pysystemtrade's ``resample("1B").last()``. A Saturday or Sunday row
        moves to the Friday before (where, being later, it wins over Friday's own row; flagged
        ``kept`` in ``issues``), and the index is every business day from the first to the last
        date read, NaN where an instrument has no price (a blank row, a holiday of its exchange,
        before its first or after its last price). So an instrument's column is the same whether
        it is read alone or with others, and the EWMAs of the trading rules, which count
        sessions of the index, see the same sessions in both cases (see "The business-day grid"
        in the module docstring). ``False``: one row per date that some instrument has a price
        on, Sunday rows kept and flagged (the files' own dates; a one-instrument frame then has
        no row at its blank or missing dates).

    Returns
    -------
    PriceTable
        ``prices``: index ``session``, columns ``instrument``, back-adjusted prices in price
        points (may be negative); NaN where an instrument has no price. ``issues``: rejected
        (blank price, duplicate date) and flagged (moved weekend or Sunday) rows, see the module
        docstring.

    Raises
    ------
    CarverDataError
        Missing path or column; unparseable date or non-numeric price (names file and 1-based
        data row).

    Notes
    -----
    Source: pysystemtrade ``sysdata/csv/csv_adjusted_prices.py`` (and its legacy ``_price.csv``
    files). Prices are as written: no spike or staleness check here (see :mod:`pipeline.quality.rules`).
    """
    path = _existing(path_or_folder, "read_adjusted_prices")
    values = {"PRICE": ("PRICE", "price", "adjusted", "FINAL")}
    if path.is_file() and path.suffix.lower() == ".parquet":
        longs = [_long_from_frame(_read_parquet(path, instruments), path, None, values, required=("PRICE",))]
    else:
        pairs = _files(path, "_price") if path.is_dir() else [(_single(path, "_price"), path)]
        pairs = [(i, f) for i, f in pairs if instruments is None or i in instruments]
        longs = [_long_from_frame(_read_csv(f), f, i, values, required=("PRICE",)) for i, f in pairs]
    long, issues = _finish(_concat(longs, path), ["PRICE"], "PRICE", business_days)
    return PriceTable(prices=_wide(long, "PRICE", business_days), issues=issues)


def read_multiple_prices(
    path_or_folder: str | Path, instruments: list[str] | None = None, business_days: bool = False
) -> MultiplePrices:
    """pysystemtrade multiple prices (held, carry and forward contract prices and months).

    Parameters
    ----------
    path_or_folder : str or Path
        A folder of legacy ``X_carrydata.csv`` files
        (``DATETIME,PRICE,CARRY,CARRY_CONTRACT,PRICE_CONTRACT``, contracts ``yyyymm``; if the folder
        holds none, every ``X.csv``, pysystemtrade's ``multiple_prices_csv`` layout with FORWARD
        columns); one such CSV; or a long Parquet table with columns ``instrument, date, PRICE,
        PRICE_CONTRACT, CARRY, CARRY_CONTRACT, FORWARD, FORWARD_CONTRACT``.
    instruments : list of str, optional
        Read only these instruments (default: all).
    business_days : bool
        ``True``: on the business-day grid, as :func:`read_adjusted_prices` (weekend rows moved
        to the Friday before, every business day a row). ``False`` (default): the files' own
        dates (multiple prices are a record of contracts; carry callers align them to the
        adjusted prices' index).

    Returns
    -------
    MultiplePrices
        Six wide frames on one session x instrument grid (see the class) and ``issues``. A row
        with a blank PRICE is rejected; blank CARRY/FORWARD/contract cells become NaN/<NA>.

    Raises
    ------
    CarverDataError
        Missing path or PRICE / CARRY / contract column; unparseable date or non-numeric value
        (names file, 1-based data row and column).

    Notes
    -----
    Source: pysystemtrade ``sysobjects/multiple_prices.py``, ``sysdata/csv/csv_multiple_prices.py``.
    """
    path = _existing(path_or_folder, "read_multiple_prices")
    values = {v: (v,) for v in _MULTIPLE_VALUES}
    contracts = {c: (c,) for c in _MULTIPLE_CONTRACTS}
    required = ("PRICE", "CARRY", "PRICE_CONTRACT", "CARRY_CONTRACT")
    if path.is_file() and path.suffix.lower() == ".parquet":
        frame = _read_parquet(path, instruments)
        longs = [_long_from_frame(frame, path, None, values, contracts, required)]
    else:
        pairs = _files(path, "_carrydata") if path.is_dir() else [(_single(path, "_carrydata"), path)]
        pairs = [(i, f) for i, f in pairs if instruments is None or i in instruments]
        longs = [_long_from_frame(_read_csv(f), f, i, values, contracts, required) for i, f in pairs]
    columns = [*_MULTIPLE_VALUES, *_MULTIPLE_CONTRACTS]
    long, issues = _finish(_concat(longs, path), columns, "PRICE", business_days)
    wide = _wide_many(long, columns, business_days)
    wide.update({c: wide[c].round().astype("Int64") for c in _MULTIPLE_CONTRACTS})
    return MultiplePrices(
        price=wide["PRICE"], carry=wide["CARRY"], forward=wide["FORWARD"],
        price_contract=wide["PRICE_CONTRACT"], carry_contract=wide["CARRY_CONTRACT"],
        forward_contract=wide["FORWARD_CONTRACT"], issues=issues,
    )


def read_fx(path_or_folder: str | Path, pairs: list[str] | None = None) -> PriceTable:
    """Daily FX rates ``XXXUSD`` (USD per unit of XXX) from pysystemtrade FX files.

    Parameters
    ----------
    path_or_folder : str or Path
        A folder holding ``XXXUSDfx.csv`` (legacy, ``DATETIME,FX``) or ``XXXUSD.csv``
        (``DATETIME,PRICE``) files (other files in the folder are ignored), or one such file.
    pairs : list of str, optional
        Read only these pairs, e.g. ``["EURUSD"]`` (default: all).

    Returns
    -------
    PriceTable
        ``prices``: index ``session``, columns the pair names (``EURUSD``, ...), rates as
        quoted (float64). ``issues`` as for :func:`read_adjusted_prices` (FX files hold some
        Sunday-dated rows: kept and flagged).

    Raises
    ------
    CarverDataError
        Missing path or rate column; unparseable date or non-numeric rate (file and row named).

    Notes
    -----
    Source: pysystemtrade ``sysdata/csv/csv_spot_fx.py``.
    """
    path = _existing(path_or_folder, "read_fx")
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    found = []
    for f in files:
        match = _FX_NAME.match(f.stem)
        if match is None and path.is_dir():
            continue  # instrumentconfig.csv, X_price.csv, ... share the legacy folder
        found.append((match.group(1) if match else f.stem, f))
    found = [(p, f) for p, f in found if pairs is None or p in pairs]
    values = {"PRICE": ("FX", "PRICE")}
    longs = [_long_from_frame(_read_csv(f), f, p, values, required=("PRICE",)) for p, f in found]
    long, issues = _finish(_concat(longs, path), ["PRICE"], "PRICE")
    return PriceTable(prices=_wide(long, "PRICE"), issues=issues)


def _concat(longs: list[pd.DataFrame], path: Path) -> pd.DataFrame:
    if not longs:
        raise CarverDataError(f"carver_data: no matching price files under {path}; check the folder and names",
                              "unknown")
    return pd.concat(longs, ignore_index=True)


# --------------------------------------------------------------------------- instrument config

_CONFIG_COLUMNS = ["Pointsize", "Currency", "AssetClass", "Slippage", "PerBlock", "Percentage", "PerTrade"]


def read_instrument_config(path: str | Path, costs: str | Path | None = None) -> pd.DataFrame:
    """pysystemtrade instrument configuration, optionally merged with a cost file.

    Parameters
    ----------
    path : str or Path
        ``instrumentconfig.csv``: columns ``Instrument, Pointsize, Currency, AssetClass`` and,
        in the current layout, ``PerBlock, Percentage, PerTrade`` (others are ignored).
    costs : str or Path, optional
        A cost file joined on ``Instrument``: legacy ``costs_analysis.csv`` (``Slippage,
        PerBlock, Percentage, PerTrade``) or current ``spreadcosts.csv`` (``SpreadCost``, read as
        ``Slippage`` in price points, which is how pysystemtrade uses it). Its values win over
        the same columns of ``path``.

    Returns
    -------
    DataFrame, index ``Instrument`` (str), columns ``Pointsize`` (float, currency per price
    point per contract), ``Currency``, ``AssetClass`` (str), ``Slippage`` (price points per
    contract), ``PerBlock`` (currency per contract), ``Percentage`` (fraction of notional),
    ``PerTrade`` (currency per trade); cost columns are NaN where no file gives them.

    Raises
    ------
    CarverDataError
        Missing file or column, duplicate instrument, non-numeric or non-positive Pointsize,
        non-numeric cost (file and row named).

    Notes
    -----
    Source: pysystemtrade ``data/futures/csvconfig/instrumentconfig.csv``, ``spreadcosts.csv``,
    ``sysobjects/instruments.py``; cost model carver.md §2.10.
    """
    path = _existing(path, "read_instrument_config")
    raw = _read_csv(path)
    inst = _column(raw, path, "Instrument")
    out = pd.DataFrame(index=pd.Index(raw[inst].str.strip().to_numpy(), name="Instrument", dtype="str"))
    for name in _CONFIG_COLUMNS:
        col = _column(raw, path, name, required=name in ("Pointsize", "Currency", "AssetClass"))
        if col is None:
            out[name] = np.nan
        elif name in ("Currency", "AssetClass"):
            out[name] = raw[col].str.strip().to_numpy()
        else:
            out[name] = _parse_numbers(raw[col], path, col)
    _check_config(out, path)
    if costs is not None:
        out = _merge_costs(out, _existing(costs, "read_instrument_config costs"))
    return out


def _check_config(out: pd.DataFrame, path: Path) -> None:
    dupes = out.index[out.index.duplicated()].unique().tolist()
    if dupes:
        raise CarverDataError(f"carver_data: {path}: instruments listed twice: {dupes}; keep one row each", "bad_row")
    bad = ~(out["Pointsize"] > 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise CarverDataError(
            f"carver_data: {_where(path, row)}: Pointsize of {out.index[row - 1]} must be a positive "
            "number (currency per price point per contract)", "bad_row"
        )


def _merge_costs(out: pd.DataFrame, path: Path) -> pd.DataFrame:
    raw = _read_csv(path)
    inst = _column(raw, path, "Instrument")
    costs = pd.DataFrame(index=pd.Index(raw[inst].str.strip().to_numpy(), name="Instrument", dtype="str"))
    aliases = {"Slippage": ("Slippage", "SpreadCost"), "PerBlock": ("PerBlock",),
               "Percentage": ("Percentage",), "PerTrade": ("PerTrade",)}
    for name, names in aliases.items():
        col = _column(raw, path, *names, required=False)
        if col is not None:
            costs[name] = _parse_numbers(raw[col], path, col)
    costs = costs[~costs.index.duplicated(keep="last")]
    for name in costs.columns:
        given = costs[name].reindex(out.index)
        out[name] = given.where(given.notna(), out[name])
    return out


def to_instruments(config: pd.DataFrame) -> list[Instrument]:
    """Map an instrument-config frame to the pipeline's :class:`~pipeline.config.Instrument` list.

    Parameters
    ----------
    config : DataFrame
        As returned by :func:`read_instrument_config` (index ``Instrument``).

    Returns
    -------
    list of Instrument, in the frame's order
        ``sec_type="FUT"``, ``back_adjusted=True``, ``point_size`` = Pointsize, ``currency``,
        ``asset_class`` as given (pysystemtrade's names: Bond, Equity, Ags, ...), and costs
        ``slippage`` = Slippage, ``commission_per_unit`` = PerBlock, ``commission_pct`` =
        Percentage, ``commission_min`` = PerTrade (NaN -> 0). Exchange and calendar keep the
        model's defaults: the config files do not hold them.

    Raises
    ------
    CarverDataError
        A required column is missing or a row fails the model's validation (instrument named).

    Notes
    -----
    pysystemtrade's cost is ``|n| slippage pointsize + max(|n| PerBlock, PerTrade, Percentage
    |n| price pointsize)`` (carver.md §2.10), the same shape as :class:`~pipeline.config.CostModel`.
    """
    missing = [c for c in ("Pointsize", "Currency", "AssetClass") if c not in config.columns]
    if missing:
        raise CarverDataError(
            f"to_instruments: config frame lacks columns {missing}; read it with read_instrument_config"
        )

    def cost(row: pd.Series, name: str) -> float:
        value = row.get(name, np.nan)
        return 0.0 if pd.isna(value) else float(value)

    out = []
    for symbol, row in config.iterrows():
        try:
            out.append(
                Instrument(
                    symbol=str(symbol), sec_type="FUT", currency=str(row["Currency"]),
                    point_size=float(row["Pointsize"]), asset_class=str(row["AssetClass"]),
                    back_adjusted=True,
                    costs=CostModel(
                        slippage=cost(row, "Slippage"), commission_per_unit=cost(row, "PerBlock"),
                        commission_pct=cost(row, "Percentage"), commission_min=cost(row, "PerTrade"),
                    ),
                )
            )
        except ValueError as exc:
            raise CarverDataError(f"to_instruments: instrument {symbol!r} is invalid: {exc}") from exc
    return out


def universe_fx(
    instruments: Sequence[Instrument], base: str, fx_path: str | Path | None, sessions: pd.DatetimeIndex
) -> pd.DataFrame | None:
    """FX conversion of the configured universe, or ``None`` when every instrument is in ``base``.

    Parameters
    ----------
    instruments : sequence of Instrument
        The universe (``PipelineConfig.instruments``).
    base : str
        ``PortfolioConfig.base_currency``.
    fx_path : str, Path or None
        ``PortfolioConfig.fx_path``: a folder (or file) of pysystemtrade FX CSVs.
    sessions : DatetimeIndex
        Sessions of the output.

    Returns
    -------
    DataFrame (index ``sessions``, columns symbols) or None
        As :func:`fx_to_base`.

    Raises
    ------
    FXError
        An instrument is not in ``base`` but no ``fx_path`` is configured, or a pair is missing.
    CarverDataError
        The FX files are malformed (file and row named).
    """
    ccy = currencies(instruments)
    foreign = sorted(ccy.index[ccy != base])
    if not foreign:
        return None
    if fx_path is None:
        raise FXError(
            f"instruments {foreign} are not priced in the base currency {base}; set portfolio.fx_path to a "
            "folder of pysystemtrade FX rates (XXXUSD.csv, DATETIME,PRICE)"
        )
    return fx_to_base(ccy, base, read_fx(fx_path).prices, sessions, source=str(fx_path))
