"""Multiple prices built from contract prices: the priced, carry and forward contracts of each session
looked up in the daily bars of every dated contract.

pysystemtrade builds its multiple prices the same way (``sysinit/futures/
multipleprices_from_db_prices_and_csv_calendars_to_db.py``, ``sysobjects/multiple_prices.py``
``create_from_raw_data``): a roll calendar says which contract is priced, which is the carry and
which the forward on each date, and each column takes that contract's price on that date. Here the
roll calendar is the planned one of the roll parameters with the exact expiries the broker lists
(:func:`pipeline.futures.roll_states.planned_contracts`), so the contracts of a session are the ones
the roll states and the expiry guard reason about.

Input (**contract prices**, one row per contract and session, as a broker serves dated contracts):
``instrument`` (str), ``contract`` (``YYYYMM`` or ``YYYYMMDD``), ``session`` (datetime64) and
``close`` (price points). Output: the long ``multiple_prices`` table of the lake
(:data:`pipeline.futures.tables.MULTIPLE_TABLE_COLUMNS`). Plain pandas / numpy; no Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.futures.roll_states import planned_contracts
from pipeline.futures.rolls import FuturesDataError, RollParameters, contract_numbers
from pipeline.futures.tables import MULTIPLE_TABLE_COLUMNS

__all__ = ["CONTRACT_PRICE_COLUMNS", "instrument_from_contracts", "multiple_prices_from_contracts"]

#: Columns a contract-prices frame needs.
CONTRACT_PRICE_COLUMNS = ("instrument", "contract", "session", "close")


def _checked(prices: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in CONTRACT_PRICE_COLUMNS if c not in prices.columns]
    if missing:
        raise FuturesDataError(f"contract prices: missing column(s) {', '.join(missing)} "
                               f"(need {', '.join(CONTRACT_PRICE_COLUMNS)})")
    out = prices[list(CONTRACT_PRICE_COLUMNS)].copy()
    out["session"] = pd.to_datetime(out["session"], errors="coerce").dt.normalize()
    out["close"] = pd.to_numeric(out["close"], errors="coerce")
    if out["session"].isna().any():
        row = int(np.flatnonzero(out["session"].isna().to_numpy())[0])
        raise FuturesDataError(f"contract prices: row {row} ({out['instrument'].iloc[row]} "
                               f"{out['contract'].iloc[row]}) has no valid session date")
    out["contract"] = contract_numbers(out["contract"].to_numpy(), source="contract prices").astype("int64")
    return out.dropna(subset=["close"])


def instrument_from_contracts(prices: pd.DataFrame, params: RollParameters,
                              expiries: Mapping[object, object] | None = None, holidays: Sequence[object] = (),
                              end: object | None = None) -> pd.DataFrame:
    """One instrument's multiple prices from its contract prices.

    Parameters
    ----------
    prices : pd.DataFrame
        Columns ``contract`` (``YYYYMM`` / ``YYYYMMDD``, int64 ``YYYYMMDD`` after
        :func:`multiple_prices_from_contracts` checked them), ``session``, ``close``.
    params : RollParameters
        Hold cycle, roll offset, carry offset and approximate expiry of the instrument.
    expiries : mapping contract id -> date, optional
        Exact last trading days (a broker's ``lastTradeDateOrContractMonth``); they set the roll dates.
    holidays : sequence of date-like
        Non-business weekdays of the exchange (for the business-day roll dates).
    end : date-like, optional
        Last session kept.

    Returns
    -------
    pd.DataFrame
        Index ``session`` (every session with a bar of any contract, up to ``end``, where the priced
        contract has a close); columns ``CARRY, CARRY_CONTRACT, PRICE, PRICE_CONTRACT, FORWARD,
        FORWARD_CONTRACT``: prices float64 (price points, NaN where that contract has no bar),
        contracts ``YYYYMMDD`` integers (``PRICE_CONTRACT`` int64, the others Int64).

    Raises
    ------
    FuturesDataError
        The roll calendar cannot be planned (exact expiries out of order with the offsets).

    Notes
    -----
    Source: pysystemtrade ``sysobjects/multiple_prices.py`` (``create_from_raw_data``: each column
    the price of its contract on the date); the roll calendar is :func:`planned_contracts`.
    """
    sessions = pd.DatetimeIndex(prices["session"].unique()).sort_values()
    if end is not None:
        sessions = sessions[sessions <= pd.Timestamp(end)]
    columns = ["CARRY", "CARRY_CONTRACT", "PRICE", "PRICE_CONTRACT", "FORWARD", "FORWARD_CONTRACT"]
    if sessions.empty:
        return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], name="session"))
    plan = planned_contracts(params, sessions, expiries=expiries, holidays=holidays)
    close = prices.drop_duplicates(["session", "contract"], keep="last").set_index(["session", "contract"])["close"]
    out = pd.DataFrame(index=sessions.rename("session"))
    for role, column in (("carry", "CARRY"), ("priced", "PRICE"), ("forward", "FORWARD")):
        ids = contract_numbers(plan[f"{role}_contract"].to_numpy(), source=f"planned {role} contracts").astype("int64")
        out[column] = close.reindex(pd.MultiIndex.from_arrays([sessions, ids])).to_numpy(dtype="float64")
        out[f"{column}_CONTRACT"] = ids
    out = out[out["PRICE"].notna()]
    out["PRICE_CONTRACT"] = out["PRICE_CONTRACT"].astype("int64")
    for column in ("CARRY_CONTRACT", "FORWARD_CONTRACT"):
        out[column] = out[column].astype("Int64")
    return out[columns]


def multiple_prices_from_contracts(prices: pd.DataFrame, params: Mapping[str, RollParameters],
                                   expiries: Mapping[str, Mapping[object, object]] | None = None,
                                   holidays: Mapping[str, Sequence[object]] | None = None,
                                   end: object | None = None) -> pd.DataFrame:
    """The long ``multiple_prices`` table of several instruments from their contract prices.

    Parameters
    ----------
    prices : pd.DataFrame
        Contract prices: columns ``instrument``, ``contract``, ``session``, ``close`` (see the module).
    params : mapping instrument -> RollParameters
        Every instrument of ``prices`` needs its roll parameters.
    expiries, holidays : mappings by instrument, optional
        Exact last trading days by contract, and the exchange's non-business weekdays.
    end : date-like, optional
        Last session kept.

    Returns
    -------
    pd.DataFrame
        Columns :data:`~pipeline.futures.tables.MULTIPLE_TABLE_COLUMNS` (``session, instrument,
        CARRY, CARRY_CONTRACT, PRICE, PRICE_CONTRACT, FORWARD, FORWARD_CONTRACT``), sorted by
        session then instrument, as :func:`pipeline.futures.tables.multiple_prices_table` gives
        for a pysystemtrade folder.

    Raises
    ------
    FuturesDataError
        Missing columns, a bad session or contract id (the row named), an instrument without
        roll parameters, or a roll calendar that cannot be planned.
    """
    checked = _checked(prices)
    absent = sorted(set(checked["instrument"]) - set(params))
    if absent:
        raise FuturesDataError(f"contract prices: no roll parameters for {', '.join(absent)}")
    frames = [
        instrument_from_contracts(part, params[name], (expiries or {}).get(name), (holidays or {}).get(name, ()),
                                  end).reset_index().assign(instrument=name)
        for name, part in checked.groupby("instrument", sort=True)  # a handful of instruments
    ]
    if not frames:
        return pd.DataFrame(columns=list(MULTIPLE_TABLE_COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    table["session"] = pd.DatetimeIndex(table["session"]).as_unit("ns")
    table["instrument"] = table["instrument"].astype(str)
    return table.sort_values(["session", "instrument"], kind="stable")[list(MULTIPLE_TABLE_COLUMNS)].reset_index(drop=True)
