"""Roll parameters of a futures instrument, month-letter cycles, contract ids and expiry dates.

A futures position is held in one dated contract; the roll parameters say which months are held,
which have prices, when the roll happens relative to expiry, which contract gives carry, and on
which day of its month a contract roughly expires. They are pysystemtrade's ``rollconfig.csv``
fields (``sysobjects/rolls.py``: ``rollParameters``; ``sysdata/csv/csv_roll_parameters.py``):

=================  =============================  =========================================
CSV column         field                          meaning
=================  =============================  =========================================
HoldRollCycle      ``hold_roll_cycle``            months held, letters F G H J K M N Q U V X Z
PricedRollCycle    ``priced_roll_cycle``          months that have prices (carry may use them)
RollOffsetDays     ``roll_offset_days``           calendar days from expiry to the roll (< 0: before)
CarryOffset        ``carry_offset``               -1: carry is the priced contract before the held
                                                  one; +1: the one after
ExpiryOffset       ``expiry_offset``              days after the 1st of the contract month
                                                  on which it roughly expires (may be < 0)
=================  =============================  =========================================

Contract ids are ``"YYYYMM"`` strings; pysystemtrade's ``YYYYMMDD`` with ``DD = 00`` (as text or as
an integer such as ``20231200``) is read as the same contract, and a ``YYYYMMDD`` with a day (weekly
contracts such as VIX weeklies) keeps its day: ``"20231214"``. The approximate expiry of a contract
is its month's first day (or its own day, if it has one) plus ``expiry_offset`` calendar days
(pysystemtrade ``sysobjects/contract_dates_and_expiries.py``); exact expiry dates (from the broker's
contract details) may be passed in and win.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "MONTH_LETTERS",
    "ROLL_CONFIG_COLUMNS",
    "FuturesDataError",
    "RollParameters",
    "approx_expiry",
    "as_timestamp",
    "carry_contracts",
    "contract_id",
    "contract_labels",
    "contract_numbers",
    "contract_start",
    "cycle_contracts",
    "cycle_months",
    "expiry_dates",
    "letter_month",
    "month_letter",
    "normalise_contract",
    "parse_contract_numbers",
    "read_roll_config",
    "roll_parameters",
]

#: Futures month codes, January .. December (CME / IB convention).
MONTH_LETTERS = "FGHJKMNQUVXZ"
#: The columns of pysystemtrade's ``csvconfig/rollconfig.csv``.
ROLL_CONFIG_COLUMNS = (
    "Instrument",
    "HoldRollCycle",
    "RollOffsetDays",
    "CarryOffset",
    "PricedRollCycle",
    "ExpiryOffset",
)


class FuturesDataError(ValueError):
    """Futures input that cannot be used (roll configuration, contract id, multiple prices); the
    message names the file, row or contract and the rule broken."""


# --------------------------------------------------------------------------- month letters and cycles


def month_letter(month: int) -> str:
    """The futures month code of ``month`` (1 = January -> ``"F"`` .. 12 -> ``"Z"``).

    Raises FuturesDataError if ``month`` is not 1..12.
    """
    if not isinstance(month, int | np.integer) or not 1 <= int(month) <= 12:
        raise FuturesDataError(f"month {month!r} is not 1..12")
    return MONTH_LETTERS[int(month) - 1]


def letter_month(letter: str) -> int:
    """The month number (1..12) of a futures month code (``"F"`` -> 1 .. ``"Z"`` -> 12).

    Raises FuturesDataError for anything but one of ``MONTH_LETTERS`` (upper case).
    """
    if not isinstance(letter, str) or len(letter) != 1 or letter not in MONTH_LETTERS:
        raise FuturesDataError(
            f"{letter!r} is not a futures month letter (one of {MONTH_LETTERS})"
        )
    return MONTH_LETTERS.index(letter) + 1


def cycle_months(cycle: str) -> tuple[int, ...]:
    """The months (1..12, ascending) of a roll cycle such as ``"HMUZ"`` -> ``(3, 6, 9, 12)``.

    Raises FuturesDataError for an empty cycle, a letter that is not a month code or a repeated one.
    """
    if not isinstance(cycle, str) or not cycle:
        raise FuturesDataError(
            f"roll cycle {cycle!r} is empty; write month letters such as HMUZ"
        )
    months = [letter_month(letter) for letter in cycle]
    if len(set(months)) != len(months):
        raise FuturesDataError(f"roll cycle {cycle!r} repeats a month")
    return tuple(sorted(months))


def cycle_contracts(cycle: str, first_year: int, last_year: int) -> list[str]:
    """Every contract of ``cycle`` with a year in ``first_year .. last_year``, ascending, as ``YYYYMM``.

    Example: ``cycle_contracts("HZ", 2023, 2024)`` -> ``["202303", "202312", "202403", "202412"]``.
    """
    months = np.asarray(cycle_months(cycle))
    years = np.arange(int(first_year), int(last_year) + 1)
    ids = (years[:, None] * 100 + months[None, :]).ravel()
    return [str(i) for i in ids]


# --------------------------------------------------------------------------- contract ids


def contract_numbers(
    values: Iterable[object], source: str = "contract ids"
) -> np.ndarray:
    """Contract ids as ``YYYYMMDD`` integers (int64; ``DD = 00`` for a monthly contract), vectorised.

    Parameters
    ----------
    values : iterable of str or int
        ``YYYYMM`` or ``YYYYMMDD`` ids, as text (``"202312"``, ``"20231200"``) or numbers
        (``202312``, ``20231200``, ``20231200.0``).
    source : str
        What the values are, for the error message (e.g. ``"CORN.csv column PRICE_CONTRACT"``).

    Raises
    ------
    FuturesDataError
        A missing, non-integral or malformed id (month not 01..12, day not 00..31, year not
        1900..2199), naming the 1-based position of the first bad value and how many there are.
    """
    numbers, ok = parse_contract_numbers(values)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        shown = (
            list(values)[i]
            if not isinstance(values, pd.Series | np.ndarray)
            else values[i]
        )
        raise FuturesDataError(
            f"{source}: value {i + 1} ({shown!r}) is not a contract id YYYYMM or YYYYMMDD "
            f"(DD = 00 for a monthly contract); {int((~ok).sum())} such values"
        )
    return numbers


def parse_contract_numbers(values: Iterable[object]) -> tuple[np.ndarray, np.ndarray]:
    """Contract ids as ``YYYYMMDD`` int64 and a mask of the well-formed ones (0 where malformed).

    The non-raising core of :func:`contract_numbers`, for callers that report bad rows themselves.
    """
    series = pd.Series(
        values if isinstance(values, pd.Series | np.ndarray) else list(values)
    )
    if not pd.api.types.is_numeric_dtype(
        series.dtype
    ):  # text (or mixed) ids: strip, then read the number
        series = series.astype("string").str.strip()
    numbers = pd.to_numeric(series, errors="coerce")
    numbers = (
        np.asarray(numbers, dtype="float64")
        if not hasattr(numbers, "to_numpy")
        else numbers.to_numpy(dtype="float64", na_value=np.nan)
    )
    # YYYYMM has 6 digits, YYYYMMDD 8 (the year check below rejects anything else that slips in)
    digits = np.where(
        (numbers >= 1e5) & (numbers < 1e6),
        6,
        np.where((numbers >= 1e7) & (numbers < 1e8), 8, 0),
    )
    whole = np.isfinite(numbers) & (np.floor(numbers) == numbers)
    eight = np.where(whole & (digits == 6), numbers * 100, numbers)
    year, month, day = eight // 10_000, (eight // 100) % 100, eight % 100
    ok = (
        whole
        & np.isin(digits, (6, 8))
        & (year >= 1900)
        & (year < 2200)
        & (month >= 1)
        & (month <= 12)
        & (day <= 31)
    )
    return np.where(ok, eight, 0).astype("int64"), ok


def contract_labels(numbers: np.ndarray) -> np.ndarray:
    """``YYYYMMDD`` integers (as :func:`contract_numbers` gives them) as ids: ``"YYYYMM"``, or
    ``"YYYYMMDD"`` when the day is not 00; vectorised, an object array of str."""
    numbers = np.asarray(numbers, dtype="int64")
    return (
        np.where(numbers % 100 == 0, numbers // 100, numbers).astype(str).astype(object)
    )


def normalise_contract(value: object) -> str:
    """A contract id as this package writes it: ``"YYYYMM"``, or ``"YYYYMMDD"`` when it has a day.

    ``"202312"``, ``"20231200"``, ``202312`` and ``20231200`` all give ``"202312"``; ``20231214``
    gives ``"20231214"``. Raises FuturesDataError for a malformed id.
    """
    return str(contract_labels(contract_numbers([value], source="contract id"))[0])


def contract_id(year: int, month: int) -> str:
    """The ``YYYYMM`` id of the contract of ``month`` (1..12) in ``year``: ``contract_id(2023, 12)`` -> ``"202312"``."""
    month_letter(month)  # checks 1..12
    return f"{int(year):04d}{int(month):02d}"


def contract_start(contracts: Iterable[object]) -> pd.DatetimeIndex:
    """The first day of each contract's month (or its own day, for a ``YYYYMMDD`` id with a day)."""
    numbers = contract_numbers(contracts)
    day = np.where(numbers % 100 == 0, 1, numbers % 100)
    return pd.DatetimeIndex(
        pd.to_datetime(
            pd.DataFrame(
                {"year": numbers // 10_000, "month": (numbers // 100) % 100, "day": day}
            )
        )
    )


def approx_expiry(contract: object, expiry_offset: int) -> pd.Timestamp:
    """pysystemtrade's approximate expiry: the contract month's day 1 (or the id's own day) plus
    ``expiry_offset`` calendar days (``ExpiryOffset``; negative = in the month before).

    Source: pysystemtrade ``sysobjects/contract_dates_and_expiries.py``
    (``_get_expiry_date_from_approx_expiry``). Example: ``approx_expiry("202312", 14)`` -> 2023-12-15.
    """
    return contract_start([contract])[0] + pd.Timedelta(days=int(expiry_offset))


def expiry_dates(
    contracts: Iterable[object],
    expiry_offset: int,
    exact: Mapping[object, object] | None = None,
) -> pd.Series:
    """The expiry date of each contract: exact where known, else the approximate one.

    Parameters
    ----------
    contracts : iterable of contract ids (``YYYYMM`` / ``YYYYMMDD``)
    expiry_offset : int
        ``ExpiryOffset`` of the instrument (days after the 1st of the contract month).
    exact : mapping contract id -> date, optional
        Known expiries (e.g. IB's ``realExpirationDate``); they win over the approximation. Keys
        are normalised (``20231200`` and ``"202312"`` are one contract); values parse as dates.

    Returns
    -------
    pd.Series
        Index ``contract`` (normalised ids, in the order given), values ``datetime64`` (midnight).

    Raises
    ------
    FuturesDataError
        A malformed contract id or an exact expiry that is not a date.
    """
    ids = list(contract_labels(contract_numbers(list(contracts))))
    approx = contract_start(ids) + pd.Timedelta(days=int(expiry_offset))
    out = pd.Series(approx, index=pd.Index(ids, name="contract"), name="expiry")
    if exact:
        known = {normalise_contract(k): v for k, v in exact.items()}
        try:
            given = pd.Series(
                pd.to_datetime(list(known.values())).normalize(),
                index=list(known.keys()),
            )
        except (ValueError, TypeError) as exc:
            raise FuturesDataError(
                f"exact expiries: {exc}; give dates such as 2023-12-14"
            ) from exc
        hit = out.index.isin(given.index)
        out[hit] = given.reindex(out.index[hit]).to_numpy()
    return out


# --------------------------------------------------------------------------- roll parameters


class RollParameters(BaseModel):
    """The roll parameters of one instrument (one row of pysystemtrade's ``rollconfig.csv``).

    Built from the CSV names (``RollParameters(HoldRollCycle="Z", PricedRollCycle="HKNUZ",
    RollOffsetDays=-60, CarryOffset=-1, ExpiryOffset=14)``) or the field names. Cycles are stored
    sorted by month. Rules: cycles are month letters without repeats, the hold cycle is part of
    the priced cycle, ``carry_offset`` is -1 or +1.

    Source: pysystemtrade ``sysobjects/rolls.py`` (``rollParameters``).
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    hold_roll_cycle: str = Field(
        alias="HoldRollCycle", description="months held, e.g. HMUZ"
    )
    priced_roll_cycle: str = Field(
        alias="PricedRollCycle", description="months with prices"
    )
    roll_offset_days: int = Field(
        alias="RollOffsetDays", description="calendar days from expiry to the roll"
    )
    carry_offset: Literal[-1, 1] = Field(
        alias="CarryOffset", description="-1 carry before held, +1 after"
    )
    expiry_offset: int = Field(
        alias="ExpiryOffset", description="expiry: day 1 of the month + this many days"
    )

    @field_validator("hold_roll_cycle", "priced_roll_cycle", mode="before")
    @classmethod
    def _cycle(cls, value: object) -> str:
        text = str(value).strip() if value is not None else ""
        try:
            return "".join(month_letter(m) for m in cycle_months(text))
        except FuturesDataError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("roll_offset_days", "expiry_offset", "carry_offset", mode="before")
    @classmethod
    def _integer(cls, value: object) -> object:
        if isinstance(value, str):  # "-5" and "-5.0" from a CSV
            number = pd.to_numeric(value.strip(), errors="coerce")
            if pd.isna(number) or float(number) != int(number):
                raise ValueError(f"{value!r} is not a whole number")
            return int(number)
        return value

    @model_validator(mode="after")
    def _hold_within_priced(self) -> RollParameters:
        extra = sorted(
            set(self.hold_roll_cycle) - set(self.priced_roll_cycle),
            key=MONTH_LETTERS.index,
        )
        if extra:
            raise ValueError(
                f"hold cycle {self.hold_roll_cycle} has months {''.join(extra)} that are not in "
                f"the priced cycle {self.priced_roll_cycle}"
            )
        return self


def carry_contracts(held: Iterable[object], params: RollParameters) -> list[str]:
    """The carry contract of each held contract: the priced contract just before it
    (``carry_offset = -1``) or just after it (``+1``), as ``YYYYMM`` ids.

    Source: pysystemtrade ``sysobjects/rolls.py`` (``contractDateWithRollParameters.carry_contract``:
    the previous / next contract in the priced cycle). Example (CORN, priced HKNUZ, offset -1):
    ``202312`` -> ``202309``; (SP500, priced HMUZ, offset +1): ``202312`` -> ``202403``.
    """
    numbers = contract_numbers(list(held)) // 100
    month_index = (numbers // 100) * 12 + numbers % 100 - 1
    months = np.asarray(cycle_months(params.priced_roll_cycle)) - 1
    years = (
        np.arange(month_index.min() // 12 - 1, month_index.max() // 12 + 2)
        if len(numbers)
        else np.array([], int)
    )
    priced = (years[:, None] * 12 + months[None, :]).ravel()
    if params.carry_offset == -1:
        carry = priced[np.searchsorted(priced, month_index, side="left") - 1]
    else:
        carry = priced[np.searchsorted(priced, month_index, side="right")]
    return [f"{c // 12:04d}{c % 12 + 1:02d}" for c in carry]


def read_roll_config(path: str | Path) -> dict[str, RollParameters]:
    """Every instrument's roll parameters from pysystemtrade's ``csvconfig/rollconfig.csv``.

    Parameters
    ----------
    path : str or Path
        A CSV with the columns ``ROLL_CONFIG_COLUMNS`` (others are ignored).

    Returns
    -------
    dict
        Instrument code -> :class:`RollParameters`, in file order.

    Raises
    ------
    FuturesDataError
        The file is missing or unreadable, a column is missing, an instrument is blank or repeated,
        or a row breaks a rule of :class:`RollParameters`; the message names the file, the CSV line
        and the instrument.

    Notes
    -----
    Source: pysystemtrade ``data/futures/csvconfig/rollconfig.csv``, ``sysdata/csv/csv_roll_parameters.py``.
    The rows are validated one by one (a configuration table of a few hundred instruments).
    """
    path = Path(path)
    if not path.is_file():
        raise FuturesDataError(
            f"roll configuration {path} does not exist; pass pysystemtrade's csvconfig/rollconfig.csv"
        )
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except Exception as exc:  # any reader failure becomes a named-file error
        raise FuturesDataError(
            f"roll configuration {path}: cannot read it: {exc}"
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ROLL_CONFIG_COLUMNS if c not in frame.columns]
    if missing:
        raise FuturesDataError(
            f"roll configuration {path}: missing column(s) {', '.join(missing)} "
            f"(found {', '.join(frame.columns)})"
        )
    names = frame["Instrument"].str.strip()
    lines = np.arange(len(frame)) + 2  # the header is line 1
    if (names == "").any():
        raise FuturesDataError(
            f"roll configuration {path}, line {lines[(names == '').to_numpy()][0]}: blank Instrument"
        )
    repeated = names.duplicated().to_numpy()
    if repeated.any():
        raise FuturesDataError(
            f"roll configuration {path}, line {lines[repeated][0]}: instrument "
            f"{names[repeated].iloc[0]} appears twice"
        )
    out: dict[str, RollParameters] = {}
    for line, name, row in zip(
        lines,
        names,
        frame[list(ROLL_CONFIG_COLUMNS[1:])].to_dict("records"),
        strict=True,
    ):
        try:
            out[name] = RollParameters(**row)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "row"
            raise FuturesDataError(
                f"roll configuration {path}, line {line} ({name}): {field}: {first['msg']}"
            ) from None
    return out


def roll_parameters(path: str | Path, instrument: str) -> RollParameters:
    """The roll parameters of ``instrument`` in the ``rollconfig.csv`` at ``path``.

    Raises FuturesDataError if the file is bad (see :func:`read_roll_config`) or lacks the instrument.
    """
    config = read_roll_config(path)
    if instrument not in config:
        near = [n for n in config if n.upper().startswith(instrument.upper()[:3])][:5]
        hint = f"; similar: {', '.join(near)}" if near else ""
        raise FuturesDataError(
            f"roll configuration {path} has no instrument {instrument!r}{hint}"
        )
    return config[instrument]


def as_timestamp(value: object, what: str) -> pd.Timestamp:
    """``value`` (a date, datetime or ISO text) as a midnight Timestamp; FuturesDataError naming ``what`` if not a date."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise FuturesDataError(f"{what}: {value!r} is not a date") from exc
    if pd.isna(stamp):
        raise FuturesDataError(f"{what}: {value!r} is not a date")
    return stamp.normalize()
