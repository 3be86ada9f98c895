"""The futures tables of the lake: multiple prices (long), roll calendars, held contracts and positions.

The Dagster assets of ``assets/futures.py`` store one instrument's pysystemtrade frames (index
``DATETIME``, see :mod:`pipeline.futures.multiple_prices`) as long tables with an ``instrument``
and a ``session`` column; this module converts between the two shapes and builds the tables
those assets write:

* ``multiple_prices`` (session table): ``session, instrument, CARRY, CARRY_CONTRACT, PRICE,
  PRICE_CONTRACT, FORWARD, FORWARD_CONTRACT`` (pysystemtrade's column order; contract ids
  ``YYYYMMDD`` integers, ``DD = 00`` for monthly contracts);
* ``roll_calendar`` (whole table): the planned rolls and the actual ones, one row per roll;
* the contracts held on a session (priced, forward, carry) and positions put in them.

Plain pandas; no Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.futures.multiple_prices import (
    MULTIPLE_PRICE_COLUMNS,
    check_multiple_prices,
)
from pipeline.futures.roll_calendar import (
    actual_roll_calendar,
    compare_roll_calendars,
    roll_calendar,
)
from pipeline.futures.rolls import FuturesDataError, RollParameters, contract_labels

if TYPE_CHECKING:
    from pipeline.adapters.pysystemtrade import MultiplePrices

__all__ = [
    "MULTIPLE_TABLE_COLUMNS",
    "ROLL_CALENDAR_COLUMNS",
    "contract_positions_table",
    "contracts_on",
    "instrument_multiple_prices",
    "multiple_prices_table",
    "positions_in_priced",
    "roll_calendar_table",
]

#: Columns of the ``multiple_prices`` lake table.
MULTIPLE_TABLE_COLUMNS = ("session", "instrument", *MULTIPLE_PRICE_COLUMNS)
#: Columns of the ``roll_calendar`` lake table.
ROLL_CALENDAR_COLUMNS = ("instrument", "kind", "roll_date", "current_contract", "next_contract", "carry_contract",
                         "planned_date", "same_contracts", "difference_days")


def multiple_prices_table(prices: MultiplePrices, end: object | None = None) -> pd.DataFrame:
    """The long ``multiple_prices`` table of the wide frames a pysystemtrade source returns.

    Parameters
    ----------
    prices : MultiplePrices
        From ``PysystemtradeSource.multiple_prices`` (six wide frames, index ``session``, columns
        ``instrument``; contracts ``YYYYMMDD`` Int64).
    end : date-like, optional
        Keep sessions up to and including it.

    Returns
    -------
    pd.DataFrame
        Columns :data:`MULTIPLE_TABLE_COLUMNS`: ``session`` (datetime64[ns], midnight),
        ``instrument`` (str), prices float64 (price points, NaN where blank), ``PRICE_CONTRACT``
        int64 and the other contracts Int64 (<NA> where blank); one row per instrument and session
        with a priced contract, sorted by session then instrument.
    """
    wide = {"CARRY": prices.carry, "CARRY_CONTRACT": prices.carry_contract, "PRICE": prices.price,
            "PRICE_CONTRACT": prices.price_contract, "FORWARD": prices.forward,
            "FORWARD_CONTRACT": prices.forward_contract}
    long = pd.concat({k: v.rename_axis(index="session", columns="instrument").stack(future_stack=True)
                      for k, v in wide.items()}, axis=1)
    long = long[long["PRICE_CONTRACT"].notna()].reset_index()
    long["session"] = pd.DatetimeIndex(long["session"]).as_unit("ns").normalize()
    long["instrument"] = long["instrument"].astype(str)
    if end is not None:
        long = long[long["session"] <= pd.Timestamp(end)]
    for column in ("CARRY", "PRICE", "FORWARD"):
        long[column] = long[column].astype("float64")
    long["PRICE_CONTRACT"] = long["PRICE_CONTRACT"].astype("int64")
    for column in ("CARRY_CONTRACT", "FORWARD_CONTRACT"):
        long[column] = long[column].astype("Int64")
    return long.sort_values(["session", "instrument"], kind="stable")[list(MULTIPLE_TABLE_COLUMNS)].reset_index(drop=True)


def instrument_multiple_prices(table: pd.DataFrame, instrument: str) -> pd.DataFrame:
    """One instrument's multiple prices in pysystemtrade's layout, from the long table.

    Parameters
    ----------
    table : pd.DataFrame
        The ``multiple_prices`` lake table (columns :data:`MULTIPLE_TABLE_COLUMNS`).
    instrument : str

    Returns
    -------
    pd.DataFrame
        Index ``DATETIME`` (the sessions, ascending); columns ``MULTIPLE_PRICE_COLUMNS``, typed by
        :func:`pipeline.futures.multiple_prices.check_multiple_prices`.

    Raises
    ------
    FuturesDataError
        No rows for ``instrument``, or a bad row (the message names the instrument, row and date).
    """
    rows = table[table["instrument"] == instrument]
    if rows.empty:
        raise FuturesDataError(f"multiple_prices: no rows for {instrument}")
    frame = rows.sort_values("session", kind="stable").set_index("session")[list(MULTIPLE_PRICE_COLUMNS)]
    return check_multiple_prices(frame, source=f"multiple_prices ({instrument})")


def roll_calendar_table(instrument: str, params: RollParameters, multiple: pd.DataFrame, end: object,
                        expiries: Mapping[object, object] | None = None, holidays: Sequence[object] = (),
                        ahead_days: int = 366) -> pd.DataFrame:
    """The planned and the actual rolls of one instrument, as the ``roll_calendar`` lake table.

    Parameters
    ----------
    instrument : str
    params : RollParameters
        Its roll parameters (``instruments[].rolls``).
    multiple : pd.DataFrame
        Its multiple prices (pysystemtrade layout, index dates ascending).
    end : date-like
        The session of the run; planned rolls are listed from the first multiple-price date to
        ``end + ahead_days`` calendar days (the next rolls), actual rolls up to ``end``.
    expiries : mapping contract id -> date, optional
        Exact expiries (``rolls.expiries``).
    holidays : sequence of date-like
        Non-business weekdays of the instrument's exchange.
    ahead_days : int
        Calendar days of planned rolls after ``end``.

    Returns
    -------
    pd.DataFrame
        Columns :data:`ROLL_CALENDAR_COLUMNS`: ``kind`` ``planned`` or ``actual``; ``roll_date`` the
        first session in ``next_contract``; contracts ``YYYYMM`` str (``carry_contract`` None where
        unknown); for actual rolls ``planned_date`` (the planned roll into the same contract, NaT
        if none), ``same_contracts`` and ``difference_days`` (business days, actual minus
        planned; NaN for planned rows). Sorted by roll date, planned before actual on one date.

    Raises
    ------
    FuturesDataError
        Bad multiple prices or a calendar that cannot be planned (see
        :func:`pipeline.futures.roll_calendar.roll_calendar`).

    Notes
    -----
    Source: pysystemtrade ``sysobjects/roll_calendars.py`` (the approximate calendar and
    ``_back_out_roll_calendar_from_multiple_prices``).
    """
    last = pd.Timestamp(end).normalize()
    m = multiple[pd.DatetimeIndex(multiple.index).normalize() <= last]
    start = m.index[0] if len(m) else last
    planned = roll_calendar(params, start, last + pd.Timedelta(days=ahead_days), expiries=expiries, holidays=holidays)
    actual = actual_roll_calendar(m, source=f"multiple_prices ({instrument})") if len(m) else \
        pd.DataFrame(columns=["current_contract", "next_contract", "carry_contract"],
                     index=pd.DatetimeIndex([], name="roll_date"))
    # the plan from two years before the first row, so the first actual rolls have their planned roll too
    margin = roll_calendar(params, start - pd.Timedelta(days=2 * 366), last + pd.Timedelta(days=ahead_days),
                           expiries=expiries, holidays=holidays)
    compared = compare_roll_calendars(margin, actual, holidays)
    plan_rows = planned.reset_index()[["roll_date", "current_contract", "next_contract", "carry_contract"]].assign(
        kind="planned", planned_date=pd.NaT, same_contracts=pd.NA, difference_days=np.nan)
    actual_rows = actual.reset_index().assign(
        kind="actual", planned_date=compared["planned_date"].to_numpy(),
        same_contracts=compared["same_contracts"].to_numpy(dtype=object),
        difference_days=compared["difference_days"].to_numpy(dtype="float64"))
    out = pd.concat([plan_rows, actual_rows], ignore_index=True).assign(instrument=instrument)
    out["roll_date"] = pd.DatetimeIndex(out["roll_date"]).as_unit("ns")
    out["planned_date"] = pd.DatetimeIndex(out["planned_date"]).as_unit("ns")
    out["same_contracts"] = out["same_contracts"].astype("boolean")
    out["carry_contract"] = out["carry_contract"].astype(object).where(out["carry_contract"].notna(), None)
    order = np.lexsort(((out["kind"] == "actual").to_numpy(), out["roll_date"].to_numpy()))
    return out.iloc[order][list(ROLL_CALENDAR_COLUMNS)].reset_index(drop=True)


def contracts_on(table: pd.DataFrame, session: object) -> pd.DataFrame:
    """The priced, forward and carry contract of each instrument on ``session``: its latest
    multiple-prices row on or before the session.

    Parameters
    ----------
    table : pd.DataFrame
        The ``multiple_prices`` lake table (columns :data:`MULTIPLE_TABLE_COLUMNS`).
    session : date-like

    Returns
    -------
    pd.DataFrame
        Index ``instrument``; columns ``priced_contract``, ``forward_contract``,
        ``carry_contract`` (``YYYYMM`` str, None where blank), ``as_of`` (the row's session) and
        ``priced_price``, ``forward_price`` (that row's ``PRICE`` and ``FORWARD``, price points;
        NaN where blank): each contract's own price for the order path's gate.
        Instruments without a row up to ``session`` are absent.
    """
    day = pd.Timestamp(session).normalize()
    rows = table[pd.to_datetime(table["session"]) <= day].sort_values("session", kind="stable")
    last = rows.groupby("instrument", sort=True).tail(1).set_index("instrument")
    out = pd.DataFrame(index=last.index.rename("instrument"))
    for name, column in (("priced_contract", "PRICE_CONTRACT"), ("forward_contract", "FORWARD_CONTRACT"),
                         ("carry_contract", "CARRY_CONTRACT")):
        numbers = last[column].astype("Int64")
        present = numbers.notna().to_numpy()
        labels = np.full(len(last), None, dtype=object)
        labels[present] = contract_labels(numbers[present].to_numpy(dtype="int64"))
        out[name] = pd.Series(labels, index=out.index, dtype=object)
    out["as_of"] = pd.to_datetime(last["session"]).to_numpy()
    for name, column in (("priced_price", "PRICE"), ("forward_price", "FORWARD")):  # NaN when the table has none
        out[name] = last[column].astype("float64").to_numpy() if column in last.columns else np.nan
    return out


def positions_in_priced(positions: pd.Series, contracts: pd.DataFrame) -> pd.DataFrame:
    """Per-instrument positions put in each instrument's priced contract.

    The ledger keeps positions per instrument, not per contract (``Ledger.expected_positions``);
    until orders go to dated contracts each is taken as held in the priced contract, as
    ``trading-pipeline futures status`` does.

    Parameters
    ----------
    positions : pd.Series
        Index ``instrument``, signed contracts (of the futures instruments only: every instrument
        given is taken as a future).
    contracts : pd.DataFrame
        From :func:`contracts_on` (index ``instrument``, column ``priced_contract``).

    Returns
    -------
    pd.DataFrame
        Columns ``instrument``, ``contract`` (the priced contract; None for an instrument without
        one), ``position``; only instruments of ``contracts``' index or with a position, zeros
        dropped, sorted by instrument.
    """
    held = positions[positions.abs() > 1e-9].astype("float64")
    out = pd.DataFrame({"instrument": held.index.astype(str), "position": held.to_numpy()})
    out["contract"] = out["instrument"].map(contracts["priced_contract"]).astype(object)
    out["contract"] = out["contract"].where(out["contract"].notna(), None)
    return out.sort_values("instrument")[["instrument", "contract", "position"]].reset_index(drop=True)


def contract_positions_table(positions: pd.Series, instruments: Sequence[str]) -> pd.DataFrame:
    """The ledger's per-contract positions of the futures ``instruments`` as a table.

    Parameters
    ----------
    positions : pd.Series
        MultiIndex ``(instrument, contract)``, signed contracts
        (``Ledger.expected_contract_positions``); the contract of a position recorded without a
        contract month (a fill from before orders went to dated contracts) is the instrument's symbol.
    instruments : sequence of str
        The futures instruments with roll parameters; others are left out.

    Returns
    -------
    pd.DataFrame
        Columns ``instrument``, ``contract`` (``YYYYMM`` / ``YYYYMMDD``; None where the contract is
        unknown), ``position``; zeros dropped, sorted by instrument and contract. Two months of one
        instrument are two rows.
    """
    if positions.empty:
        return pd.DataFrame({"instrument": pd.Series(dtype=object), "contract": pd.Series(dtype=object),
                             "position": pd.Series(dtype="float64")})
    frame = positions.rename("position").reset_index()
    frame.columns = ["instrument", "contract", "position"]
    frame = frame[frame["instrument"].isin(list(instruments)) & (frame["position"].abs() > 1e-9)]
    dated = frame["contract"].astype(str).str.fullmatch(r"\d{6}(\d{2})?")
    contract = np.where(dated.to_numpy(), frame["contract"].astype(str).to_numpy(dtype=object), None)
    frame = frame.assign(contract=pd.Series(contract, index=frame.index, dtype=object), position=frame["position"].astype(float))
    return frame.sort_values(["instrument", "contract"], na_position="first").reset_index(drop=True)
