"""pysystemtrade "multiple prices" of one instrument: read a CSV, check a frame.

Layout (pysystemtrade ``sysobjects/multiple_prices.py``, ``data/futures/multiple_prices_csv/X.csv``):
index ``DATETIME`` (ascending, unique; pysystemtrade stamps daily rows with a time of day, kept as
given), columns

* ``PRICE`` (float, price points): the contract whose price drives forecasts and P&L;
* ``CARRY``: the contract used for the carry rule;
* ``FORWARD``: the next contract in the hold cycle, the one rolled into;
* ``PRICE_CONTRACT``, ``CARRY_CONTRACT``, ``FORWARD_CONTRACT``: their ids, ``YYYYMMDD`` integers
  (``DD = 00`` for a monthly contract; ``YYYYMM`` is read as ``YYYYMM00``).

A blank price is missing data (NaN), never an error; a blank ``PRICE_CONTRACT`` is an error (every
row belongs to a contract). Negative prices are valid (back-adjusted and spread-like series).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.futures.rolls import FuturesDataError, parse_contract_numbers

__all__ = [
    "CONTRACT_COLUMNS",
    "MULTIPLE_PRICE_COLUMNS",
    "PRICE_COLUMNS",
    "check_multiple_prices",
    "read_multiple_prices",
    "read_multiple_prices_csv",
]

PRICE_COLUMNS = ("PRICE", "CARRY", "FORWARD")
CONTRACT_COLUMNS = ("PRICE_CONTRACT", "CARRY_CONTRACT", "FORWARD_CONTRACT")
#: Column order of pysystemtrade's multiple-prices CSV files.
MULTIPLE_PRICE_COLUMNS = (
    "CARRY",
    "CARRY_CONTRACT",
    "PRICE",
    "PRICE_CONTRACT",
    "FORWARD",
    "FORWARD_CONTRACT",
)


def check_multiple_prices(
    multiple: pd.DataFrame,
    required: tuple[str, ...] = ("PRICE", "PRICE_CONTRACT"),
    source: str = "multiple prices",
    first_line: int | None = None,
) -> pd.DataFrame:
    """``multiple`` checked and typed: prices float64, contracts ``YYYYMMDD`` integers
    (``PRICE_CONTRACT`` int64; ``CARRY_CONTRACT`` / ``FORWARD_CONTRACT`` ``Int64`` with <NA> where
    blank), the index a DatetimeIndex named ``DATETIME``.

    Parameters
    ----------
    multiple : pd.DataFrame
        Index: dates (DatetimeIndex, or anything ``pd.to_datetime`` reads); columns: a subset of
        ``MULTIPLE_PRICE_COLUMNS`` holding at least ``required``; prices as numbers or numeric
        text, contracts as ``YYYYMM`` / ``YYYYMMDD`` numbers or text.
    required : tuple of str
        The columns the caller needs.
    source : str
        Named in the error messages (a file name, an instrument).
    first_line : int, optional
        If given, errors name ``line first_line + i`` (a CSV line) instead of ``row i + 1``.

    Raises
    ------
    FuturesDataError
        A required column is missing, the index has a duplicate or is not ascending, a price is
        not a number, ``PRICE_CONTRACT`` is blank or a contract id is malformed; the message names
        the row (or line) and its date.
    """

    def where(i: int) -> str:
        place = f"line {first_line + i}" if first_line is not None else f"row {i + 1}"
        return (
            f"{source}, {place} ({index[i]})"
            if i < len(index)
            else f"{source}, {place}"
        )

    missing = [c for c in required if c not in multiple.columns]
    if missing:
        raise FuturesDataError(
            f"{source}: missing column(s) {', '.join(missing)} (found {', '.join(map(str, multiple.columns))})"
        )
    try:
        index = pd.DatetimeIndex(pd.to_datetime(multiple.index), name="DATETIME")
    except (ValueError, TypeError) as exc:
        raise FuturesDataError(f"{source}: the index is not dates: {exc}") from exc
    if index.hasnans:
        i = int(np.flatnonzero(index.isna())[0])
        raise FuturesDataError(f"{where(i)}: blank date")
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        rule = (
            "repeats the date of the row before"
            if steps[i - 1] == 0
            else "is earlier than the row before"
        )
        raise FuturesDataError(
            f"{where(i)}: the date {rule}; rows must be in time order, one per time stamp"
        )
    out = pd.DataFrame(index=index)
    for column in (c for c in multiple.columns if c in PRICE_COLUMNS):
        values = pd.to_numeric(multiple[column], errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
        bad = np.isnan(values) & multiple[column].notna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FuturesDataError(
                f"{where(i)}: {column} {multiple[column].iloc[i]!r} is not a number"
            )
        out[column] = values
    for column in (c for c in multiple.columns if c in CONTRACT_COLUMNS):
        present = multiple[column].notna().to_numpy()
        if column == "PRICE_CONTRACT" and not present.all():
            i = int(np.flatnonzero(~present)[0])
            raise FuturesDataError(
                f"{where(i)}: PRICE_CONTRACT is blank; every row needs its contract"
            )
        numbers, ok = parse_contract_numbers(multiple[column])
        bad = present & ~ok
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FuturesDataError(
                f"{where(i)}: {column} {multiple[column].iloc[i]!r} is not a contract id "
                f"YYYYMM or YYYYMMDD; {int(bad.sum())} such rows"
            )
        ids = pd.array(numbers, dtype="Int64")
        ids[~present] = pd.NA
        out[column] = ids.astype("int64") if column == "PRICE_CONTRACT" else ids
    return out


def read_multiple_prices_csv(path: str | Path) -> pd.DataFrame:
    """One instrument's multiple prices from a pysystemtrade CSV (``multiple_prices_csv/X.csv``).

    Parameters
    ----------
    path : str or Path
        CSV with a ``DATETIME`` column (ISO date or date-time) and the columns of
        ``MULTIPLE_PRICE_COLUMNS``; ``PRICE`` and ``PRICE_CONTRACT`` are required, the others
        become NaN / <NA> when absent.

    Returns
    -------
    pd.DataFrame
        As :func:`check_multiple_prices` returns it (index ``DATETIME``, all six columns).

    Raises
    ------
    FuturesDataError
        The file is missing or unreadable, has no DATETIME / PRICE / PRICE_CONTRACT column, or a
        row is bad (unparseable date, non-numeric price, malformed contract, dates out of order);
        the message names the file and the CSV line.
    """
    path = Path(path)
    if not path.is_file():
        raise FuturesDataError(
            f"{path} does not exist; pass a pysystemtrade multiple-prices CSV"
        )
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # any reader failure becomes a named-file error
        raise FuturesDataError(f"{path}: cannot read it as CSV: {exc}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    by_upper = {c.upper(): c for c in raw.columns}
    needed = ["DATETIME", "PRICE", "PRICE_CONTRACT"]
    missing = [c for c in needed if c not in by_upper]
    if missing:
        raise FuturesDataError(
            f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(raw.columns) or 'none'}); "
            "is this a pysystemtrade multiple-prices CSV?"
        )
    text = raw[by_upper["DATETIME"]].str.strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dates = pd.to_datetime(text, format="ISO8601", errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FuturesDataError(
            f"{path}, line {i + 2}: DATETIME {text.iloc[i]!r} is not a date (yyyy-mm-dd[ hh:mm:ss]); "
            f"{int(bad.sum())} such rows"
        )
    frame = pd.DataFrame(index=pd.DatetimeIndex(dates, name="DATETIME"))
    for column in MULTIPLE_PRICE_COLUMNS:
        if column in by_upper:
            cells = raw[by_upper[column]].str.strip()
            blank = (cells == "") | cells.str.lower().isin(
                ["nan", "na", "null", "none"]
            )
            frame[column] = cells.where(~blank, None).to_numpy()
        else:
            frame[column] = None
    return check_multiple_prices(frame, source=str(path), first_line=2)


def read_multiple_prices(
    path: str | Path, instrument: str | None = None
) -> pd.DataFrame:
    """One instrument's multiple prices from a pysystemtrade CSV or a long Parquet table.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` (see :func:`read_multiple_prices_csv`), or a ``.parquet`` table with the
        columns ``instrument, date`` (or ``DATETIME``) and those of ``MULTIPLE_PRICE_COLUMNS``,
        one row per instrument and date.
    instrument : str, optional
        The instrument to take from a Parquet table (required there; ignored for a CSV).

    Returns
    -------
    pd.DataFrame
        As :func:`check_multiple_prices` returns it.

    Raises
    ------
    FuturesDataError
        A missing or unreadable file, no ``instrument`` for a Parquet table or no rows of it,
        and every error of :func:`check_multiple_prices`.
    """
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        return read_multiple_prices_csv(path)
    if not path.is_file():
        raise FuturesDataError(
            f"{path} does not exist; pass a multiple-prices CSV or Parquet table"
        )
    if instrument is None:
        raise FuturesDataError(
            f"{path}: a Parquet table holds many instruments; name one"
        )
    try:
        frame = pd.read_parquet(path, filters=[("instrument", "==", instrument)])
    except Exception as exc:  # any reader failure becomes a named-file error
        raise FuturesDataError(
            f"{path}: cannot read it as a multiple-prices table: {exc}"
        ) from exc
    if frame.empty:
        raise FuturesDataError(f"{path}: no rows for instrument {instrument!r}")
    date = next((c for c in ("date", "DATETIME") if c in frame.columns), None)
    if date is None:
        raise FuturesDataError(
            f"{path}: no date or DATETIME column (found {', '.join(frame.columns)})"
        )
    frame = frame.sort_values(date, kind="stable").set_index(date)
    return check_multiple_prices(
        frame[[c for c in MULTIPLE_PRICE_COLUMNS if c in frame.columns]],
        source=f"{path} ({instrument})",
    )
