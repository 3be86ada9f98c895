"""The instrument model: point sizes, currencies and the FX that converts each instrument's
currency into the portfolio's base currency (the one place these come from).

Point sizes and currencies come from the configured universe (:class:`pipeline.config.Instrument`).

Positions are sized in the base currency (carver.md §2.7: ``instr_value_vol = instr_ccy_vol x
fx_rate``), so every instrument needs, per session, the base-currency value of one unit of its
own currency. pysystemtrade stores FX as ``XXXUSD`` series (USD per one XXX,
``DATETIME,PRICE`` files read by :func:`pipeline.adapters.pysystemtrade.read_fx`); other bases are crossed
through USD: ``XXX -> BASE = XXXUSD / BASEUSD``.

Rates are forward-filled onto the sessions (a session uses the latest rate at or before it; no
look-ahead). Before a currency's first rate the conversion is NaN, so no position is sized.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.config import Instrument

USD = "USD"


def point_sizes(instruments: Sequence[Instrument]) -> pd.Series:
    """Point size (currency per price point per unit, the futures multiplier) of each instrument.

    Returns
    -------
    pd.Series
        Index symbol (in the universe's order), float values > 0 (validated by the config).
    """
    return pd.Series({i.symbol: i.point_size for i in instruments}, dtype=float)


def currencies(instruments: Sequence[Instrument]) -> pd.Series:
    """ISO currency each instrument is priced in; index symbol (in the universe's order)."""
    return pd.Series({i.symbol: i.currency for i in instruments}, dtype=object)


class FXError(ValueError):
    """An FX rate needed for sizing is missing; the message names the pair and where it was looked for."""


def fx_to_base(
    currencies: pd.Series, base: str, rates: pd.DataFrame, sessions: pd.DatetimeIndex, source: str = "rates"
) -> pd.DataFrame:
    """Base-currency value of one unit of each instrument's currency, per session.

    Parameters
    ----------
    currencies : Series, index instrument, values ISO currency codes (``"EUR"``)
        Currency each instrument is priced in.
    base : str
        Base currency of the account (``PortfolioConfig.base_currency``).
    rates : DataFrame, index session (DatetimeIndex), columns pairs ``XXXUSD``
        USD per one unit of ``XXX`` (pysystemtrade convention), as quoted.
    sessions : DatetimeIndex
        Sessions of the output (e.g. the price frame's index).
    source : str
        Where the rates came from, for error messages.

    Returns
    -------
    DataFrame, index ``sessions``, columns instruments (order of ``currencies``)
        Base currency per unit of instrument currency (1.0 where they are the same). NaN before
        the first rate of a needed pair.

    Raises
    ------
    FXError
        A needed ``XXXUSD`` pair is not in ``rates``, or a rate is not positive.

    Notes
    -----
    Source: pst ``systems/positionsizing.py`` (``get_fx_rate``: instrument currency to base
    currency, crossed through USD by ``sysdata/fx``), carver.md §2.7.
    """
    foreign = set(currencies[currencies != base])
    crossed = foreign | ({base} if foreign else set())  # a non-USD base is crossed through USD
    pairs = [f"{c}{USD}" for c in sorted(crossed - {USD})]
    missing = [p for p in pairs if p not in rates.columns]
    if missing:
        raise FXError(
            f"fx_to_base: no FX rate {missing} in {source} to convert {sorted(set(currencies) - {base})} "
            f"into {base}; add pysystemtrade {', '.join(p + '.csv' for p in missing)} (DATETIME,PRICE)"
        )
    aligned = rates[pairs].astype(float)
    aligned = aligned.reindex(aligned.index.union(sessions)).ffill().reindex(sessions)
    bad = aligned.columns[(aligned <= 0).any()].tolist()
    if bad:
        raise FXError(f"fx_to_base: FX rates must be > 0; {bad} in {source} have rates <= 0")

    def usd_per(ccy: str) -> np.ndarray:
        return np.ones(len(sessions)) if ccy == USD else aligned[f"{ccy}{USD}"].to_numpy()

    columns = {}
    for instrument, ccy in currencies.items():  # a loop over instruments' currencies, not rows
        columns[instrument] = np.ones(len(sessions)) if ccy == base else usd_per(ccy) / usd_per(base)
    out = pd.DataFrame(columns, index=sessions, columns=list(currencies.index))
    return out.rename_axis(index="session", columns="instrument")
