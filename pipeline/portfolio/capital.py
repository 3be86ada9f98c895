"""The capital a session is sized with: configured, or read from the account and recorded.

Carver sizes every position from one number, the trading capital (ST ch. 9). A live account's
value moves with its P&L, so a trader may size from the account instead (``portfolio.capital:
account``): each daily run reads the broker's net liquidation value, takes
``portfolio.capital_fraction`` of it, and records what it sized with. A backfill then sizes each
recorded session with its recorded capital, so it reproduces the daily runs; sessions before the
first record use the configured number. A read far from the last recorded capital is not believed
(:func:`capital_change_breach`): trading halts instead of resizing the whole book on one bad number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.adapters.alerts import notify
from pipeline.config import PortfolioConfig
from pipeline.store.ledger import Ledger
from pipeline.trading import TradingState


class CapitalError(ValueError):
    """A capital that cannot size anything (not finite or not positive)."""


def capital_series(sessions: pd.DatetimeIndex, recorded: pd.Series, configured: float) -> pd.Series:
    """The capital of every session: the recorded one, carried forward, the configured one before.

    Parameters
    ----------
    sessions : pd.DatetimeIndex
        The sessions to size (ascending).
    recorded : pd.Series
        Index ``session``; capital recorded by daily runs (base currency). May be empty.
    configured : float
        ``portfolio.capital``: the capital of sessions before the first record.

    Returns
    -------
    pd.Series
        Index ``sessions``, name ``capital``; base currency, > 0. A session after the last record
        (a backfill ahead of the daily runs) keeps the last recorded capital.

    Raises
    ------
    CapitalError
        ``configured`` or a recorded value is not a positive finite number.
    """
    if not (math.isfinite(configured) and configured > 0):
        raise CapitalError(f"capital_series: the configured capital {configured!r} must be positive")
    recorded = recorded.astype(float)
    if not (np.isfinite(recorded) & (recorded > 0)).all():
        raise CapitalError(f"capital_series: recorded capital must be positive, got {recorded[recorded <= 0].to_dict()}")
    out = recorded.reindex(sessions.union(recorded.index)).ffill().reindex(sessions).fillna(configured)
    return out.rename("capital").rename_axis("session")


def capital_change_breach(capital: float, previous: float | None, max_change: float | None) -> str | None:
    """Why ``capital`` is not believed, or None: its change from ``previous`` exceeds ``max_change``.

    ``|capital / previous - 1| > max_change`` (fractions; 0.2 = 20%). None when there is no previous
    capital or no limit. A capital that is not positive and finite always breaches.
    """
    if not (math.isfinite(capital) and capital > 0):
        return f"the account's capital {capital!r} is not a positive number"
    if previous is None or max_change is None:
        return None
    change = capital / previous - 1.0
    if abs(change) > max_change:
        return (f"capital {capital:,.0f} is {change:+.1%} from the last recorded {previous:,.0f}, beyond the "
                f"{max_change:.0%} a day allowed (portfolio.max_capital_change)")
    return None


def decide_session_capital(ledger: Ledger, session: pd.Timestamp, portfolio: PortfolioConfig,
                           account_value: float | None, run_id: str | None = None) -> float:
    """Decide and record the capital a daily run sizes ``session`` with; returns it (base currency).

    ``capital_source: config``: ``portfolio.capital``. ``account``: ``account_value`` (the broker's
    net liquidation value) times ``capital_fraction``, unless it is more than
    ``max_capital_change`` away from the last capital recorded before ``session``: then trading is
    HALTED (kill switch, ``changed_by`` ``capital_check``), an ERROR alert names the numbers, and the
    session is sized with the last recorded capital instead of resizing the book.

    Raises
    ------
    CapitalError
        ``capital_source`` is ``account`` but no ``account_value`` was read.
    """
    recorded = ledger.recorded_capital()
    before = recorded[recorded.index < session]
    previous = float(before.iloc[-1]) if len(before) else None
    if portfolio.capital_source == "config":
        ledger.record_capital(session, portfolio.capital, "config", portfolio.base_currency, run_id=run_id)
        return portfolio.capital
    if account_value is None:
        raise CapitalError("capital_source is account but the account's value was not read")
    capital = account_value * portfolio.capital_fraction
    breach = capital_change_breach(capital, previous, portfolio.max_capital_change)
    note = None
    if breach is not None:
        used = previous if previous is not None else portfolio.capital
        note = f"{breach}: trading HALTED, sized with {used:,.0f}"
        ledger.set_trading_state(TradingState.HALTED, note, "capital_check")
        notify(ledger, "capital_check", "ERROR", "capital", f"{session.date()}: {note}. Check the account; "
               "set the kill switch ACTIVE once the capital is right", f"capital_check:{session.date()}")
        capital = used
    ledger.record_capital(session, capital, "account", portfolio.base_currency, net_liquidation=account_value,
                          fraction=portfolio.capital_fraction, run_id=run_id, note=note)
    return capital
