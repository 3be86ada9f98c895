"""Back-adjusted (Panama) prices from multiple prices: the one continuous series signals and vol use.

The rule (pysystemtrade ``sysobjects/adjusted_prices.py``, ``_panama_stitch`` and ``_roll_in_panama``):
walk the multiple prices in time order; while ``PRICE_CONTRACT`` is unchanged the adjusted series
follows ``PRICE``; on the first row of a new contract (the *roll row*) every earlier adjusted value
is shifted by the **roll gap**, ``FORWARD - PRICE`` of the row before the roll row: the new
contract's price minus the old contract's, on the last row where the old contract was priced (on
that row ``FORWARD`` is the contract rolled into, one row before it becomes ``PRICE``). Then the
new ``PRICE`` is appended. Consequences:

* the last adjusted value equals the current contract's last ``PRICE`` (exactly: no gap is added
  after the last roll);
* every daily change equals the priced contract's daily change: on a roll row it is the new
  contract's change from the row before (``PRICE[t] - FORWARD[t-1]``);
* adjusted levels can go negative (US10, CRUDE_W): valid, never "price > 0".

Here the loop is replaced by one cumulative sum: ``adjusted[t] = PRICE[t] + sum of the roll gaps
of the rolls after t`` (a reversed cumulative sum of the gaps placed on their roll rows).

Missing prices (pysystemtrade raises when the row before a roll lacks FORWARD or PRICE):

* a row with a blank ``PRICE`` gets a blank (NaN) adjusted value, as in pysystemtrade; the gaps
  are unaffected;
* if the row before the roll row has no gap (blank PRICE or FORWARD, or a FORWARD_CONTRACT that is
  not the contract rolled into), the gap is measured on the **latest earlier row of the old
  contract** that has both prices with the right FORWARD_CONTRACT (``method = "earlier_row"``);
  daily data resampled from intraday rows often lack the FORWARD on the roll's eve;
* if no row of the old contract has both, ``missing_gap="raise"`` (the default) raises
  FuturesDataError naming the roll; ``missing_gap="flat"`` takes the gap as the new contract's
  first PRICE minus the old contract's last PRICE (the adjusted series is flat across that roll,
  ``method = "flat"``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from pipeline.futures.multiple_prices import check_multiple_prices
from pipeline.futures.rolls import FuturesDataError, contract_labels

__all__ = ["MissingGap", "panama_stitch", "roll_gaps"]

MissingGap = Literal["raise", "flat"]
_NEEDED = ("PRICE", "PRICE_CONTRACT", "FORWARD", "FORWARD_CONTRACT")


def roll_gaps(
    multiple: pd.DataFrame,
    missing_gap: MissingGap = "raise",
    source: str = "multiple prices",
) -> pd.DataFrame:
    """The roll gap of every roll in ``multiple`` (the rows where ``PRICE_CONTRACT`` changes).

    Parameters
    ----------
    multiple : pd.DataFrame
        One instrument's multiple prices (see ``pipeline.futures.multiple_prices``): index dates
        ascending, columns at least PRICE, PRICE_CONTRACT, FORWARD, FORWARD_CONTRACT.
    missing_gap : "raise" or "flat"
        What to do with a roll whose old contract never has a row with both prices (module notes).
    source : str
        Named in error messages.

    Returns
    -------
    pd.DataFrame
        Index ``roll_date`` (the date of the first row of the new contract); columns
        ``current_contract`` and ``next_contract`` (ids ``YYYYMM``, str), ``gap`` (float, price
        points: new contract minus old), ``measured_on`` (the date the gap was read) and
        ``method`` (``"previous_row"``, ``"earlier_row"`` or ``"flat"``).

    Raises
    ------
    FuturesDataError
        Bad input (see ``check_multiple_prices``), or a roll without a measurable gap when
        ``missing_gap="raise"`` (names the roll date and both contracts).

    Notes
    -----
    Source: pysystemtrade ``sysobjects/adjusted_prices.py`` (``_roll_in_panama``: the gap is
    ``previous_row.FORWARD - previous_row.PRICE``). Vectorised: the latest row with a gap up to
    each roll comes from a running maximum of row positions.
    """
    if missing_gap not in ("raise", "flat"):
        raise ValueError(f"missing_gap must be 'raise' or 'flat', not {missing_gap!r}")
    m = check_multiple_prices(multiple, required=_NEEDED, source=source)
    price = m["PRICE"].to_numpy()
    forward = m["FORWARD"].to_numpy()
    contract = m["PRICE_CONTRACT"].to_numpy()
    forward_contract = m["FORWARD_CONTRACT"].to_numpy(dtype="int64", na_value=-1)
    n = len(m)
    rolls = (
        np.flatnonzero(contract[1:] != contract[:-1]) + 1
    )  # first row of each new contract
    columns = ["current_contract", "next_contract", "gap", "measured_on", "method"]
    if len(rolls) == 0:
        empty = pd.DataFrame(
            {
                c: pd.Series(
                    dtype="datetime64[ns]"
                    if c == "measured_on"
                    else "float64"
                    if c == "gap"
                    else object
                )
                for c in columns
            }
        )
        return empty.set_axis(pd.DatetimeIndex([], name="roll_date"))

    segment = np.zeros(n, dtype="int64")
    segment[rolls] = 1
    segment = np.cumsum(segment)  # 0 before the first roll, k after the k-th
    segment_start = np.r_[0, rolls]
    # the contract each row's segment rolls into (-2 for the last segment: no roll after it)
    rolls_into = np.r_[contract[rolls], -2][segment]
    usable = ~np.isnan(price) & ~np.isnan(forward) & (forward_contract == rolls_into)
    last_usable = np.maximum.accumulate(np.where(usable, np.arange(n), -1))
    at = last_usable[rolls - 1]
    found = at >= segment_start[:-1]  # a usable row inside the old contract's segment

    gap = np.full(len(rolls), np.nan)
    gap[found] = forward[at[found]] - price[at[found]]
    measured = np.full(len(rolls), -1)
    measured[found] = at[found]
    method = np.where(at == rolls - 1, "previous_row", "earlier_row").astype(object)

    if not found.all():
        first = int(np.flatnonzero(~found)[0])
        if missing_gap == "raise":
            r = rolls[first]
            raise FuturesDataError(
                f"{source}: roll on {m.index[r]} from {contract_labels(contract[r - 1 : r])[0]} to "
                f"{contract_labels(contract[r : r + 1])[0]}: no row of the old contract has both PRICE and FORWARD "
                f"(of the new contract), so the roll gap cannot be measured; {int((~found).sum())} such rolls; "
                "fill the prices or stitch with missing_gap='flat' (--missing-gap flat)"
            )
        # flat: the old contract's last price and the new contract's first price
        row = np.arange(n)
        last_price = np.maximum.accumulate(np.where(~np.isnan(price), row, -1))
        next_price = np.minimum.accumulate(np.where(~np.isnan(price), row, n)[::-1])[
            ::-1
        ]
        old_at, new_at = last_price[rolls - 1], next_price[rolls]
        segment_end = np.r_[rolls, n]  # exclusive end of each segment
        ok_old = old_at >= segment_start[:-1]
        ok_new = new_at < segment_end[1:]
        flat = np.where(
            ok_old & ok_new,
            price[np.minimum(new_at, n - 1)] - price[np.maximum(old_at, 0)],
            0.0,
        )
        gap[~found] = flat[~found]
        measured[~found] = np.where(ok_old, old_at, rolls - 1)[~found]
        method[~found] = "flat"

    labels = contract_labels(contract)
    return pd.DataFrame(
        {
            "current_contract": labels[rolls - 1],
            "next_contract": labels[rolls],
            "gap": gap,
            "measured_on": m.index[measured],
            "method": method,
        },
        index=pd.DatetimeIndex(m.index[rolls], name="roll_date"),
    )


def panama_stitch(
    multiple: pd.DataFrame,
    missing_gap: MissingGap = "raise",
    source: str = "multiple prices",
) -> pd.Series:
    """Back-adjusted prices of one instrument by the Panama method (additive, anchored at the end).

    Parameters
    ----------
    multiple : pd.DataFrame
        Multiple prices: index dates (ascending, unique), columns PRICE, PRICE_CONTRACT, FORWARD,
        FORWARD_CONTRACT (CARRY columns are ignored). Prices in price points.
    missing_gap : "raise" or "flat"
        For a roll whose gap cannot be measured (see the module notes).
    source : str
        Named in error messages.

    Returns
    -------
    pd.Series
        Name ``price``, index ``DATETIME`` (the input's dates), price points: ``PRICE[t]`` plus the
        sum of the roll gaps of every roll after ``t``. NaN where PRICE is blank. The last value
        equals the last PRICE; each change between rows equals the priced contract's change.

    Raises
    ------
    FuturesDataError
        An empty frame, bad input, or an unmeasurable roll gap with ``missing_gap="raise"``.

    Notes
    -----
    Source: pysystemtrade ``sysobjects/adjusted_prices.py`` (``_panama_stitch``); Carver,
    *Systematic Trading* appendix B ("back-adjusting"). Vectorised: reversed cumulative sum.
    """
    m = check_multiple_prices(multiple, required=_NEEDED, source=source)
    if m.empty:
        raise FuturesDataError(
            f"{source}: no rows; cannot stitch an empty multiple-prices table"
        )
    gaps = roll_gaps(m, missing_gap=missing_gap, source=source)
    placed = np.zeros(len(m))
    placed[m.index.get_indexer(gaps.index)] = gaps["gap"].to_numpy()
    after = np.r_[
        np.cumsum(placed[::-1])[::-1][1:], 0.0
    ]  # sum of the gaps of the rolls after each row
    return pd.Series(m["PRICE"].to_numpy() + after, index=m.index, name="price")
