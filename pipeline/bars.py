"""The bar-source interface: what every source of daily bars returns, and how it fails.

A bar source (the bundled sample, a folder of files, later Interactive Brokers) returns *raw* daily
bars in one long frame with the columns :data:`BAR_COLUMNS`. Raw means as received: no cleaning,
no filling, no de-duplication; validation happens later in :mod:`pipeline.quality.rules`, and the
``raw_bars`` asset stores what the source returned, append-only, tagged with ``source`` and
``fetched_at`` so any clean value can be traced back to the fetch that produced it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa

#: Columns of a raw bar frame, in this order.
BAR_COLUMNS: list[str] = [
    "session",
    "instrument",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "source",
    "fetched_at",
]
#: Price and volume columns (float64, NaN where the source has no value).
VALUE_COLUMNS: list[str] = ["open", "high", "low", "close", "volume"]
PRICE_COLUMNS: list[str] = ["open", "high", "low", "close"]

#: pandas 3 creates microsecond datetimes by default; one fixed unit keeps joins and Parquet
#: round-trips exact.
SESSION_DTYPE = "datetime64[us]"
FETCHED_AT_DTYPE = "datetime64[us, UTC]"

#: pandas dtypes of :data:`BAR_COLUMNS`.
BAR_DTYPES: dict[str, str] = {
    "session": SESSION_DTYPE,
    "instrument": "str",
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "float64",
    "source": "str",
    "fetched_at": FETCHED_AT_DTYPE,
}

#: The same schema for Parquet (``pyarrow.Table.from_pandas(df, schema=BAR_SCHEMA)``).
BAR_SCHEMA = pa.schema(
    [
        pa.field("session", pa.timestamp("us"), nullable=False),
        pa.field("instrument", pa.string(), nullable=False),
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("fetched_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


class SourceError(ValueError):
    """A bar source cannot answer: unknown instrument, unreadable file, bad input row.

    The message names the instrument / file / row and says what to do.
    """


class SourceDataError(SourceError):
    """The source's data itself is bad or absent (an unreadable file, an unknown instrument).

    Deterministic: asking again returns the same answer, so a run does not retry it (network
    and broker errors, e.g. :class:`pipeline.adapters.ib.errors.IBError`, stay plain
    :class:`SourceError` and keep their retry).

    Attributes
    ----------
    kind : str
        A short name of what is wrong, one of :data:`UNREADABLE_KINDS` for a file (``empty``,
        ``binary``, ``encoding``, ``no_header``, ``bad_row``, ``unreadable``), or ``unknown``.
    """

    def __init__(self, message: str, kind: str = "unknown"):
        super().__init__(message)
        self.kind = kind


class SchemaError(SourceDataError):
    """A frame does not have the raw-bar schema (missing or extra columns, wrong types)."""

    def __init__(self, message: str, kind: str = "schema"):
        super().__init__(message, kind)


#: What can make a file unreadable (the ``kind`` of a :class:`SourceDataError` for a file).
UNREADABLE_KINDS = ("empty", "binary", "encoding", "no_header", "bad_row", "unreadable")
#: Columns of :attr:`SourceReport.unreadable`.
UNREADABLE_COLUMNS = ["file", "instrument", "kind", "reason", "fingerprint"]


@dataclass(frozen=True)
class SourceReport:
    """A fetch that reports bad input instead of failing on it (:func:`fetch_report`).

    Attributes
    ----------
    bars : DataFrame
        The readable bars, as :meth:`BarSource.fetch` returns them (columns :data:`BAR_COLUMNS`).
    unreadable : DataFrame
        Columns :data:`UNREADABLE_COLUMNS`, one row per input the source could not read:
        ``file`` (its path), ``instrument`` (the symbol a one-per-instrument file is named after,
        else empty), ``kind`` (one of :data:`UNREADABLE_KINDS`), ``reason`` (the message naming
        the file and, where there is one, the row) and ``fingerprint`` (``"<size>:<mtime_ns>"``,
        so a replaced file is a new problem). Empty when everything was read.
    missing : list of str
        Requested instruments that no readable input holds, in request order.
    """

    bars: pd.DataFrame
    unreadable: pd.DataFrame
    missing: list[str]


def no_unreadable() -> pd.DataFrame:
    """An empty :attr:`SourceReport.unreadable` frame."""
    return pd.DataFrame({c: pd.Series(dtype="str") for c in UNREADABLE_COLUMNS})


def fetch_report(
    source: BarSource, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp
) -> SourceReport:
    """Fetch ``instruments`` over ``[start, end]``, isolating inputs the source cannot read.

    A source with a ``fetch_report`` method (the files source) answers with the bars of its
    readable files and names the others; any other source is asked with :meth:`BarSource.fetch`
    and either answers in full or raises.

    Returns
    -------
    SourceReport

    Raises
    ------
    SourceError
        As :meth:`BarSource.fetch` for a source without ``fetch_report``; a range error.
    """
    own = getattr(source, "fetch_report", None)
    if callable(own):
        return own(instruments, start, end)
    return SourceReport(source.fetch(instruments, start, end), no_unreadable(), [])


@runtime_checkable
class BarSource(Protocol):
    """A source of raw daily bars (sample, files, IB).

    Attributes
    ----------
    name : str
        Short name of the source kind (``"sample"``, ``"files"``, ``"ib"``); it prefixes the
        ``source`` column.
    """

    name: str

    def fetch(
        self, instruments: Sequence[str], start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Raw bars of ``instruments`` for sessions in ``[start, end]`` (both inclusive).

        Returns
        -------
        DataFrame
            Long frame, columns exactly :data:`BAR_COLUMNS` with :data:`BAR_DTYPES`, one row per
            bar as received (duplicates and bad values included), sorted by
            (instrument, session), default RangeIndex. ``fetched_at`` is one UTC timestamp for
            the whole call. Prices are in the instrument's price points, volume in units traded;
            NaN where the source has no value. Empty (with the schema) when nothing is in range.

        Raises
        ------
        SourceError
            An instrument the source does not have (the message lists what it has), ``start``
            after ``end``, or unreadable upstream data.
        """
        ...

    def last_session(self, instruments: Sequence[str]) -> pd.Timestamp | None:
        """Latest session with a bar for ANY of ``instruments``; None if none has a bar.

        "Any" (not "all") because ingestion asks "is there anything newer than what I stored":
        instruments on different calendars need not end on the same session.

        Raises
        ------
        SourceError
            An instrument the source does not have.
        """
        ...


def utc_now() -> pd.Timestamp:
    """The current time in UTC (the default clock of the sources)."""
    return pd.Timestamp.now(tz="UTC")


def as_fetched_at(value: object) -> pd.Timestamp:
    """A UTC microsecond timestamp from ``value`` (naive values are taken as UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    return ts.as_unit("us")


def empty_bars() -> pd.DataFrame:
    """An empty raw-bar frame with :data:`BAR_COLUMNS` and :data:`BAR_DTYPES`."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in BAR_DTYPES.items()})


def as_session(value: object, what: str = "session") -> pd.Timestamp:
    """A tz-naive midnight :class:`pandas.Timestamp` from a date-like ``value``.

    Raises
    ------
    SourceError
        ``value`` is not a date, or is tz-aware.
    """
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise SourceError(f"{what} {value!r} is not a date (use e.g. '2024-03-08')") from exc
    if ts is pd.NaT:
        raise SourceError(f"{what} is missing (NaT)")
    if ts.tz is not None:
        raise SourceError(f"{what} {ts} is tz-aware; sessions are tz-naive exchange dates")
    return ts.normalize()


def check_range(start: object, end: object) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Validate a fetch range and return it as session timestamps.

    Raises
    ------
    SourceError
        A bound is not a date, or ``start`` is after ``end``.
    """
    s, e = as_session(start, "start"), as_session(end, "end")
    if s > e:
        raise SourceError(f"fetch range is empty: start {s.date()} is after end {e.date()}")
    return s, e


def unknown_instruments_error(
    source: str, missing: Sequence[str], available: Sequence[str]
) -> SourceDataError:
    """The SourceDataError (kind ``unknown``) for instruments a source does not have, listing what it has."""
    shown = ", ".join(available[:60]) + (" ..." if len(available) > 60 else "")
    return SourceDataError(
        f"{source}: unknown instrument(s) {', '.join(missing)}; "
        f"it has {len(available)}: {shown or '(none)'}. "
        "Fix the instrument symbols in the config or add the data."
    )


def conform_bars(
    df: pd.DataFrame,
    source_name: str | None = None,
    fetched_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Return ``df`` in the raw-bar schema: :data:`BAR_COLUMNS` order and :data:`BAR_DTYPES`.

    Parameters
    ----------
    df : DataFrame
        Long frame with at least ``session, instrument, open, high, low, close, volume``;
        ``source`` and ``fetched_at`` are optional (a frame that has them keeps its values, so
        bars read back from the lake conform too). Any row order, any index.
    source_name : str, optional
        Fills the ``source`` column when ``df`` has none.
    fetched_at : Timestamp, optional
        Fills the ``fetched_at`` column when ``df`` has none; naive means UTC.

    Returns
    -------
    DataFrame
        Columns :data:`BAR_COLUMNS`, sorted by (instrument, session) (stable, so rows of the
        same key keep their order), RangeIndex. Values are not changed, only typed: no row is
        dropped, NaN stays NaN.

    Raises
    ------
    SchemaError
        Missing or extra columns (both named), ``source``/``fetched_at`` absent with no value
        given, sessions that are missing, tz-aware or not midnight, missing instruments, or
        non-numeric prices/volume.
    """
    required = [c for c in BAR_COLUMNS if c not in ("source", "fetched_at")]
    missing = [c for c in required if c not in df.columns]
    extra = [str(c) for c in df.columns if c not in BAR_COLUMNS]
    if "source" not in df.columns and source_name is None:
        missing.append("source (or pass source_name)")
    if "fetched_at" not in df.columns and fetched_at is None:
        missing.append("fetched_at (or pass fetched_at)")
    if missing or extra:
        raise SchemaError(
            f"bars do not have the raw-bar schema: missing columns {missing}, extra columns "
            f"{extra}; expected {BAR_COLUMNS}"
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    out["session"] = _conform_session(df["session"])
    instrument = pd.Series(df["instrument"].to_numpy(), dtype="str") if len(df) else (
        pd.Series([], dtype="str")
    )
    if instrument.isna().any() or (instrument.str.len() == 0).any():
        raise SchemaError("bars have rows with no instrument; every bar needs a symbol")
    out["instrument"] = instrument.to_numpy()
    for col in VALUE_COLUMNS:
        out[col] = _conform_float(df[col], col)
    if "source" in df.columns:
        out["source"] = df["source"].astype("str").to_numpy()
    else:
        out["source"] = source_name
    out["fetched_at"] = _conform_fetched_at(
        df["fetched_at"] if "fetched_at" in df.columns else pd.Series([fetched_at] * len(df))
    )
    out = out.astype(BAR_DTYPES)
    return out.sort_values(["instrument", "session"], kind="stable", ignore_index=True)


def _conform_fetched_at(col: pd.Series) -> np.ndarray:
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        fa = col.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(col.dtype):
        fa = col.dt.tz_localize("UTC")  # naive fetch times are UTC by convention
    else:
        try:
            fa = pd.Series(pd.to_datetime(col.to_numpy(), utc=True))
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"fetched_at column is not timestamps: {exc}") from exc
    if fa.isna().any():
        raise SchemaError("bars have rows with no fetched_at")
    return fa.dt.as_unit("us").array


def _conform_session(col: pd.Series) -> np.ndarray:
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        raise SchemaError(
            "session column is tz-aware; sessions are tz-naive exchange dates "
            "(convert to the exchange's local date first)"
        )
    if pd.api.types.is_datetime64_dtype(col.dtype):
        s = pd.DatetimeIndex(col)
    else:
        try:
            s = pd.DatetimeIndex(pd.to_datetime(col.to_numpy()))
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"session column is not dates: {exc}") from exc
        if s.tz is not None:
            raise SchemaError("session column is tz-aware; sessions are tz-naive exchange dates")
    if s.isna().any():
        raise SchemaError(f"session column has {int(s.isna().sum())} missing dates")
    not_midnight = s != s.normalize()
    if not_midnight.any():
        raise SchemaError(
            f"session column has {int(not_midnight.sum())} values that are not midnight dates "
            f"(first {s[not_midnight][0]}); daily bars carry the session date only"
        )
    return s.as_unit("us").to_numpy()


def _conform_float(col: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col.dtype) or not (
        pd.api.types.is_numeric_dtype(col.dtype) or col.isna().all()
    ):
        raise SchemaError(
            f"column {name} is {col.dtype}, not numeric; parse prices and volume to numbers "
            "in the source"
        )
    return col.to_numpy(dtype="float64", na_value=np.nan)
