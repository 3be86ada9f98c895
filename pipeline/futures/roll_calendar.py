"""Roll calendars: when the priced contract moves to the next one.

A roll calendar has one row per roll: index ``roll_date``, the **first session priced in the next
contract**, and the columns ``current_contract`` (held until the session before), ``next_contract``
(held from ``roll_date``) and ``carry_contract`` (the carry contract while ``current_contract`` is
held), all ``YYYYMM`` ids (str). Two calendars are built here:

* :func:`roll_calendar`, the **planned** one, from the roll parameters alone (pysystemtrade
  ``sysobjects/roll_calendars.py``, ``_generate_approximate_calendar`` and
  ``sysobjects/rolls.py``, ``desired_roll_date``): each held contract is left ``RollOffsetDays``
  calendar days from its expiry (approximate, ``ExpiryOffset`` days after the 1st of its month,
  unless an exact expiry is given). pysystemtrade's calendar date is the *last* day in the old
  contract (multiple prices take the current contract up to and including it); a date on a
  weekend or holiday goes back to the business day before, and the roll date is the business day
  after that one;
* :func:`actual_roll_calendar`, the rolls a multiple-prices table shows (the rows where
  ``PRICE_CONTRACT`` changes; pysystemtrade ``_back_out_roll_calendar_from_multiple_prices``).

:func:`compare_roll_calendars` sets one against the other. Business days are weekdays less the
``holidays`` given (numpy's business-day calendar); pass an exchange's holidays to be exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.futures.multiple_prices import check_multiple_prices
from pipeline.futures.rolls import (
    FuturesDataError,
    RollParameters,
    as_timestamp,
    carry_contracts,
    contract_labels,
    cycle_months,
    expiry_dates,
)

__all__ = [
    "CALENDAR_COLUMNS",
    "actual_roll_calendar",
    "business_days_between",
    "compare_roll_calendars",
    "held_contracts",
    "roll_calendar",
    "summarise_comparison",
]

CALENDAR_COLUMNS = ("current_contract", "next_contract", "carry_contract")


def _days(dates: Iterable[object]) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(dates).values.astype("datetime64[D]"))


def _holidays(holidays: Sequence[object]) -> np.ndarray:
    return (
        _days(pd.to_datetime(list(holidays)))
        if len(holidays)
        else np.array([], dtype="datetime64[D]")
    )


def roll_calendar(
    params: RollParameters,
    start: object,
    end: object,
    expiries: Mapping[object, object] | None = None,
    holidays: Sequence[object] = (),
) -> pd.DataFrame:
    """The planned roll calendar of an instrument between ``start`` and ``end`` (inclusive).

    Parameters
    ----------
    params : RollParameters
        The instrument's hold cycle, roll offset, carry offset and expiry offset.
    start, end : date-like
        The rolls whose ``roll_date`` falls in ``[start, end]`` are returned.
    expiries : mapping contract id -> date, optional
        Exact expiry dates; contracts not in it use the approximate expiry.
    holidays : sequence of date-like
        Non-business weekdays (e.g. the exchange's holidays); weekends are never business days.

    Returns
    -------
    pd.DataFrame
        Index ``roll_date`` (datetime64, ascending); columns ``current_contract``,
        ``next_contract``, ``carry_contract`` (``YYYYMM`` str), ``current_expiry`` (the expiry
        the roll date was counted from) and ``target_date`` (expiry + ``roll_offset_days``
        calendar days, before the business-day adjustment).

    Raises
    ------
    FuturesDataError
        ``start`` / ``end`` not dates, ``end`` before ``start``, or roll dates that do not
        increase with the contracts (exact expiries out of order with the offsets).

    Notes
    -----
    Source: pysystemtrade ``sysobjects/rolls.py`` (``desired_roll_date = expiry_date +
    roll_offset_day``), ``sysobjects/roll_calendars.py`` (``_create_approx_calendar_from_earliest_contract``).
    """
    first, last = as_timestamp(start, "start"), as_timestamp(end, "end")
    if last < first:
        raise FuturesDataError(
            f"roll calendar: end {last.date()} is before start {first.date()}"
        )
    # every held contract whose roll can land in the range: the offsets span years for some (EDOLLAR -1100 days)
    pad = (
        int(np.ceil((abs(params.roll_offset_days) + abs(params.expiry_offset)) / 365))
        + 1
    )
    months = np.asarray(cycle_months(params.hold_roll_cycle))
    years = np.arange(first.year - pad, last.year + pad + 1)
    held = (years[:, None] * 100 + months[None, :]).ravel() * 100  # YYYYMMDD, ascending
    ids = contract_labels(held)
    expiry = expiry_dates(ids, params.expiry_offset, exact=expiries).to_numpy()
    target = expiry + np.timedelta64(params.roll_offset_days, "D")
    hols = _holidays(holidays)
    last_day_old = np.busday_offset(_days(target), 0, roll="backward", holidays=hols)
    roll = np.busday_offset(last_day_old, 1, roll="forward", holidays=hols)
    if (np.diff(roll.astype("int64")) <= 0).any():
        i = int(np.flatnonzero(np.diff(roll.astype("int64")) <= 0)[0])
        raise FuturesDataError(
            f"roll calendar: the roll out of {ids[i + 1]} ({roll[i + 1]}) is not after the roll out of "
            f"{ids[i]} ({roll[i]}); check the expiries and RollOffsetDays"
        )
    frame = pd.DataFrame(
        {
            "current_contract": ids[:-1],
            "next_contract": ids[1:],
            "carry_contract": np.asarray(
                carry_contracts(ids[:-1], params), dtype=object
            ),
            "current_expiry": pd.DatetimeIndex(expiry[:-1]),
            "target_date": pd.DatetimeIndex(target[:-1]),
        },
        index=pd.DatetimeIndex(roll[:-1], name="roll_date").as_unit("ns"),
    )
    return frame.loc[(frame.index >= first) & (frame.index <= last)]


def actual_roll_calendar(
    multiple: pd.DataFrame, source: str = "multiple prices"
) -> pd.DataFrame:
    """The rolls a multiple-prices table shows: one row per change of ``PRICE_CONTRACT``.

    Parameters
    ----------
    multiple : pd.DataFrame
        One instrument's multiple prices (index dates ascending; PRICE_CONTRACT, optionally
        CARRY_CONTRACT), as ``pipeline.futures.multiple_prices`` describes.
    source : str
        Named in error messages.

    Returns
    -------
    pd.DataFrame
        Index ``roll_date`` (the date of the first row in the new contract); columns
        ``current_contract`` (the previous row's PRICE_CONTRACT), ``next_contract`` (the row's),
        ``carry_contract`` (the previous row's CARRY_CONTRACT, None where blank), ids ``YYYYMM``.

    Raises
    ------
    FuturesDataError
        Bad input (see ``check_multiple_prices``).

    Notes
    -----
    Source: pysystemtrade ``sysobjects/roll_calendars.py`` (``_get_time_indices_from_multiple_prices``);
    unlike it, a change to an earlier contract is a roll too (and shows in the comparison).
    """
    m = check_multiple_prices(multiple, required=("PRICE_CONTRACT",), source=source)
    contract = m["PRICE_CONTRACT"].to_numpy()
    rolls = np.flatnonzero(contract[1:] != contract[:-1]) + 1
    if "CARRY_CONTRACT" in m:
        carry_raw = m["CARRY_CONTRACT"].to_numpy(dtype="int64", na_value=0)[rolls - 1]
        carry = np.where(carry_raw > 0, contract_labels(carry_raw), None)
    else:
        carry = np.full(len(rolls), None, dtype=object)
    return pd.DataFrame(
        {
            "current_contract": contract_labels(contract[rolls - 1]),
            "next_contract": contract_labels(contract[rolls]),
            "carry_contract": carry.astype(object),
        },
        index=pd.DatetimeIndex(m.index[rolls], name="roll_date").as_unit("ns"),
    )


def held_contracts(calendar: pd.DataFrame, sessions: Iterable[object]) -> pd.Series:
    """The contract a roll calendar holds on each session.

    Returns
    -------
    pd.Series
        Index the sessions, values ``YYYYMM`` ids (str): a session on or after a ``roll_date``
        holds that row's ``next_contract`` (the latest such row); a session before the first roll
        holds the first row's ``current_contract``. All None for an empty calendar.
    """
    index = pd.DatetimeIndex(sessions)
    if calendar.empty:
        return pd.Series(None, index=index, dtype=object, name="contract")
    position = np.searchsorted(
        calendar.index.values,
        index.values.astype(calendar.index.values.dtype),
        side="right",
    )
    nexts = calendar["next_contract"].to_numpy(dtype=object)
    held = np.where(
        position > 0,
        nexts[np.maximum(position - 1, 0)],
        calendar["current_contract"].iloc[0],
    )
    return pd.Series(held, index=index, dtype=object, name="contract")


def business_days_between(
    earlier: Iterable[object], later: Iterable[object], holidays: Sequence[object] = ()
) -> np.ndarray:
    """Signed business days from ``earlier`` to ``later`` (positive when ``later`` is after), element-wise;
    NaN where either is missing. Weekdays less ``holidays``."""
    a, b = pd.DatetimeIndex(earlier), pd.DatetimeIndex(later)
    missing = a.isna() | b.isna()
    out = np.full(len(a), np.nan)
    if (~missing).any():
        out[~missing] = np.busday_count(
            _days(a[~missing]), _days(b[~missing]), holidays=_holidays(holidays)
        )
    return out


def compare_roll_calendars(
    planned: pd.DataFrame, actual: pd.DataFrame, holidays: Sequence[object] = ()
) -> pd.DataFrame:
    """Each actual roll beside the planned roll into the same contract.

    Parameters
    ----------
    planned : pd.DataFrame
        From :func:`roll_calendar` (cover the actual rolls' range with some margin).
    actual : pd.DataFrame
        From :func:`actual_roll_calendar`.
    holidays : sequence of date-like
        For the business-day counts.

    Returns
    -------
    pd.DataFrame
        Index ``roll_date`` (the actual roll); columns ``current_contract``, ``next_contract``
        (actual), ``planned_date`` (the planned roll into the same ``next_contract``; NaT if the
        plan never holds it), ``planned_current`` (the contract the plan leaves then),
        ``same_contracts`` (the plan rolls from the same contract into the same one),
        ``difference_days`` (business days from ``planned_date`` to the actual roll: > 0 the
        actual roll was later; NaN without a planned roll).
    """
    plan = (
        planned.reset_index()
        .drop_duplicates("next_contract", keep="first")
        .set_index("next_contract")
    )
    out = actual[["current_contract", "next_contract"]].copy()
    out["planned_date"] = pd.DatetimeIndex(
        plan["roll_date"].reindex(out["next_contract"]).to_numpy()
    )
    out["planned_current"] = (
        plan["current_contract"].reindex(out["next_contract"]).to_numpy()
    )
    out["same_contracts"] = (
        out["planned_current"] == out["current_contract"]
    ).to_numpy()
    out["difference_days"] = business_days_between(
        out["planned_date"], out.index, holidays
    )
    return out


def summarise_comparison(comparison: pd.DataFrame) -> dict[str, float]:
    """Numbers of a :func:`compare_roll_calendars` table.

    Returns
    -------
    dict
        ``rolls`` (actual rolls), ``same_contracts`` (share of them the plan makes between the
        same contracts, 0..1), ``median_abs_days`` and ``max_abs_days`` (business days, over
        the rolls with the same contracts; NaN if none), ``median_days`` (signed: > 0 the
        actual roll is later than planned).
    """
    same = comparison[comparison["same_contracts"]]
    diff = same["difference_days"].to_numpy(dtype="float64")
    return {
        "rolls": float(len(comparison)),
        "same_contracts": float(comparison["same_contracts"].mean())
        if len(comparison)
        else float("nan"),
        "median_abs_days": float(np.median(np.abs(diff)))
        if len(diff)
        else float("nan"),
        "max_abs_days": float(np.max(np.abs(diff))) if len(diff) else float("nan"),
        "median_days": float(np.median(diff)) if len(diff) else float("nan"),
    }
