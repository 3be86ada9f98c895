"""Close-out dates of futures contracts, the expiry guard and the orphan report.

The **close-out date** of a contract is the first day a position in it may no longer be held:

* **physically delivered** (``settlement: physical``; CORN, GOLD): IB closes out long positions
  before the first notice day / first position day, at the market, without asking. Without an
  exact date it is approximated as the business day before the first business day of the contract
  month (CME grains and metals: first notice day = the last business day of the month before), and
  never later than the contract's expiry (crude oil's first notice day comes after its last
  trading day, in the month before);
* **cash-settled** (``settlement: cash``; MCL, the micro WTI on NYMEX, monthly, last trading day one
  business day before CL's): held to the **last trading day**, the exact expiry if known, else the
  approximate one of :func:`pipeline.futures.rolls.approx_expiry` (day 1 of the contract month +
  ``ExpiryOffset``), moved back to a business day.

An exact close-out date (``instruments[].rolls.close_outs``, from the exchange's calendar or IB's
contract details) always wins. Sessions are business days: weekdays less the ``holidays`` given.

The **expiry guard** lists the contracts held within N sessions (default 5) of their close-out;
the **orphan report** lists positions in a contract that is neither the priced nor the forward
contract of its instrument (reference: a position nobody rolls expires or is closed out by IB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from pipeline.futures.roll_calendar import business_days_between
from pipeline.futures.rolls import (
    FuturesDataError,
    as_timestamp,
    contract_labels,
    contract_numbers,
    contract_start,
    expiry_dates,
)

if TYPE_CHECKING:
    from pipeline.config import Instrument

__all__ = [
    "BREACH_COLUMNS",
    "ORPHAN_COLUMNS",
    "Settlement",
    "close_out_dates",
    "expiry_guard",
    "instrument_close_outs",
    "orphan_positions",
]

Settlement = Literal["physical", "cash"]
#: Columns of :func:`expiry_guard`'s breach table.
BREACH_COLUMNS = ("instrument", "contract", "position", "close_out", "sessions_left", "limit", "reason")
#: Columns of :func:`orphan_positions`' table.
ORPHAN_COLUMNS = ("instrument", "contract", "position", "priced_contract", "forward_contract")
_POSITION_COLUMNS = ("instrument", "contract", "position")


def _days(dates: Iterable[object]) -> np.ndarray:
    return np.asarray(pd.DatetimeIndex(dates).values.astype("datetime64[D]"))


def _holidays(holidays: Sequence[object]) -> np.ndarray:
    return _days(pd.to_datetime(list(holidays))) if len(holidays) else np.array([], dtype="datetime64[D]")


def _labels(values: Iterable[object], source: str) -> np.ndarray:
    return contract_labels(contract_numbers(list(values), source=source))


def close_out_dates(
    contracts: Iterable[object],
    settlement: Settlement,
    expiry_offset: int,
    expiries: Mapping[object, object] | None = None,
    close_outs: Mapping[object, object] | None = None,
    holidays: Sequence[object] = (),
) -> pd.Series:
    """The close-out date of each contract of one instrument.

    Parameters
    ----------
    contracts : iterable of contract ids (``YYYYMM`` / ``YYYYMMDD``)
    settlement : "physical" or "cash"
    expiry_offset : int
        ``ExpiryOffset`` (days after day 1 of the contract month) for the approximate expiry.
    expiries : mapping contract id -> date, optional
        Exact expiries (last trading days).
    close_outs : mapping contract id -> date, optional
        Exact close-out dates (first notice / first position day); they win.
    holidays : sequence of date-like
        Non-business weekdays of the exchange.

    Returns
    -------
    pd.Series
        Index ``contract`` (normalised ``YYYYMM`` ids, in the order given), name ``close_out``,
        datetime64 (midnight). Physical: the earlier of (the business day before the first
        business day of the contract month) and the expiry; cash: the expiry moved back to a
        business day.

    Raises
    ------
    FuturesDataError
        A malformed contract id, an exact date that is not a date, or a settlement other than
        physical / cash.

    Notes
    -----
    Sources: CME rulebooks (grains ch. 10, gold ch. 113: first notice day = last business day of
    the month before the contract month; micro WTI ch. 1250: trading ends one business day before
    CL's last trading day, cash-settled); IB's futures close-out rules; pysystemtrade
    ``sysobjects/contract_dates_and_expiries.py`` for the approximate expiry.
    """
    if settlement not in ("physical", "cash"):
        raise FuturesDataError(f"settlement must be physical or cash, not {settlement!r}")
    ids = list(_labels(contracts, "close-out contracts"))
    hols = _holidays(holidays)
    expiry = _days(expiry_dates(ids, expiry_offset, exact=expiries))
    last_trading = np.busday_offset(expiry, 0, roll="backward", holidays=hols)
    if settlement == "cash":
        close = last_trading
    else:
        first_business = np.busday_offset(_days(contract_start(ids)), 0, roll="forward", holidays=hols)
        close = np.minimum(np.busday_offset(first_business, -1, holidays=hols), last_trading)
    out = pd.Series(pd.DatetimeIndex(close).as_unit("ns"), index=pd.Index(ids, name="contract"), name="close_out")
    if close_outs:
        given = pd.Series({str(_labels([k], "close_outs")[0]): as_timestamp(v, f"close-out of {k}")
                           for k, v in close_outs.items()}, dtype="datetime64[ns]")
        hit = out.index.isin(given.index)
        out[hit] = given.reindex(out.index[hit]).to_numpy()
    return out


def instrument_close_outs(instrument: Instrument, contracts: Iterable[object], holidays: Sequence[object] = ()) -> pd.Series:
    """:func:`close_out_dates` of a configured instrument (``settlement`` and ``rolls`` of
    ``instruments[]``; exact ``rolls.expiries`` and ``rolls.close_outs`` used where given).

    Raises FuturesDataError naming the instrument if it has no ``settlement`` or no ``rolls``.
    """
    if instrument.settlement is None or instrument.rolls is None:
        raise FuturesDataError(
            f"instrument {instrument.symbol}: no {'settlement' if instrument.settlement is None else 'rolls'} in the "
            "configuration; futures need instruments[].settlement (physical or cash) and instruments[].rolls"
        )
    rolls = instrument.rolls
    return close_out_dates(contracts, instrument.settlement, rolls.expiry_offset, expiries=rolls.expiries,
                           close_outs=rolls.close_outs, holidays=holidays)


def _positions(positions: pd.DataFrame, what: str) -> pd.DataFrame:
    missing = [c for c in _POSITION_COLUMNS if c not in positions.columns]
    if missing:
        raise FuturesDataError(f"{what}: positions lack column(s) {', '.join(missing)} (found {', '.join(positions.columns)})")
    out = positions[list(_POSITION_COLUMNS)].reset_index(drop=True)
    out["instrument"] = out["instrument"].astype(str)
    out["contract"] = _labels(out["contract"], f"{what}: positions column contract")
    out["position"] = pd.to_numeric(out["position"], errors="coerce")
    if out["position"].isna().any():
        i = int(np.flatnonzero(out["position"].isna().to_numpy())[0])
        raise FuturesDataError(f"{what}: positions row {i + 1} ({out['instrument'].iloc[i]} {out['contract'].iloc[i]}): "
                               f"position {positions['position'].iloc[i]!r} is not a number")
    return out[out["position"].abs() > 1e-9].reset_index(drop=True)


def expiry_guard(
    positions: pd.DataFrame,
    close_outs: pd.DataFrame,
    session: object,
    sessions: int | Mapping[str, int] = 5,
    holidays: Sequence[object] = (),
) -> pd.DataFrame:
    """The contracts held within ``sessions`` sessions of their close-out date: the breach table.

    Parameters
    ----------
    positions : pd.DataFrame
        Columns ``instrument``, ``contract`` (``YYYYMM`` / ``YYYYMMDD``), ``position`` (signed
        contracts); zero positions are ignored.
    close_outs : pd.DataFrame
        Columns ``instrument``, ``contract``, ``close_out`` (date): e.g. :func:`instrument_close_outs`
        of each instrument's held contracts.
    session : date-like
        The session checked.
    sessions : int or mapping instrument -> int
        The guard's distance N (default 5; per instrument: ``rolls.expiry_guard_sessions``);
        instruments missing from a mapping use 5.
    holidays : sequence of date-like
        Non-business weekdays for the session count.

    Returns
    -------
    pd.DataFrame
        Columns :data:`BREACH_COLUMNS`: ``instrument``, ``contract``, ``position``, ``close_out``
        (NaT when no close-out date is known: a breach, the guard fails safe), ``sessions_left``
        (sessions from ``session`` included to ``close_out`` excluded: the sessions left to trade
        out; <= 0 means the close-out date is reached; NaN when unknown), ``limit`` (N) and
        ``reason``; ordered by ``sessions_left``. A contract with ``sessions_left <= N`` is a
        breach: at N = 5 a contract 5 sessions away is one, 6 sessions away is not.

    Raises
    ------
    FuturesDataError
        Missing columns, a malformed contract id, a position that is not a number, a session
        that is not a date.

    Notes
    -----
    The control IB's close-out rules call for (reference: futures.md §4): be out of a physically
    delivered month before IB's deadline; the daily run blocks and alerts on a breach.
    """
    day = as_timestamp(session, "expiry guard session")
    held = _positions(positions, "expiry guard")
    known = close_outs[["instrument", "contract", "close_out"]].reset_index(drop=True)
    known["instrument"] = known["instrument"].astype(str)
    known["contract"] = _labels(known["contract"], "expiry guard: close_outs column contract")
    known["close_out"] = pd.to_datetime(known["close_out"]).dt.normalize()
    table = held.merge(known.drop_duplicates(["instrument", "contract"]), on=["instrument", "contract"], how="left")
    table["sessions_left"] = business_days_between(np.full(len(table), day), table["close_out"], holidays)
    limits = (pd.Series(table["instrument"].map(dict(sessions)), dtype="float64").fillna(5).to_numpy()
              if isinstance(sessions, Mapping) else np.full(len(table), float(sessions)))
    table["limit"] = limits.astype(int)
    unknown = table["close_out"].isna()
    breach = unknown | (table["sessions_left"] <= table["limit"])
    table["reason"] = np.where(
        unknown, "no close-out date known for this contract",
        np.where(table["sessions_left"] <= 0, "close-out date reached: IB may close the position at the market",
                 "held within " + table["limit"].astype(str) + " sessions of the close-out: roll or close it"))
    out = table.loc[breach, list(BREACH_COLUMNS)].sort_values(["sessions_left", "instrument", "contract"],
                                                              na_position="first")
    return out.reset_index(drop=True)


def orphan_positions(positions: pd.DataFrame, contracts: pd.DataFrame) -> pd.DataFrame:
    """Positions in a contract that is neither the priced nor the forward contract of its instrument.

    Parameters
    ----------
    positions : pd.DataFrame
        Columns ``instrument``, ``contract``, ``position`` (signed contracts); zeros ignored.
    contracts : pd.DataFrame
        Index ``instrument``; columns ``priced_contract`` and ``forward_contract`` (ids). An
        instrument missing here has no priced contract, so every position in it is an orphan.

    Returns
    -------
    pd.DataFrame
        Columns :data:`ORPHAN_COLUMNS` (priced / forward contract None where the instrument is
        unknown), ordered by instrument and contract.

    Raises
    ------
    FuturesDataError
        Missing columns, a malformed contract id or a position that is not a number.

    Notes
    -----
    pysystemtrade reports these in its daily reconciliation (``sysproduction/reporting/
    reconcile_report.py``); a position left in an old month is closed out by IB or delivered.
    """
    held = _positions(positions, "orphan report")
    missing = [c for c in ("priced_contract", "forward_contract") if c not in contracts.columns]
    if missing:
        raise FuturesDataError(f"orphan report: contracts lack column(s) {', '.join(missing)}")
    known = contracts[["priced_contract", "forward_contract"]].rename_axis(None).copy()
    for column in known.columns:
        present = known[column].notna()
        known[column] = known[column].astype(object)
        known.loc[present, column] = _labels(known.loc[present, column], f"orphan report: {column}")
    known.index = known.index.astype(str)
    table = held.join(known, on="instrument")
    orphan = (table["contract"] != table["priced_contract"]) & (table["contract"] != table["forward_contract"])
    out = table.loc[orphan, list(ORPHAN_COLUMNS)].sort_values(["instrument", "contract"])
    out[["priced_contract", "forward_contract"]] = out[["priced_contract", "forward_contract"]].astype(object).where(
        out[["priced_contract", "forward_contract"]].notna(), None)
    return out.reset_index(drop=True)
