"""Backtest accounting: holdings, trades, costs and P&L from target positions.

Timing follows pysystemtrade's ``delayfill=True`` (``systems/accounts/pandl_calculators``): a
target position decided at the close of session d is traded at the close of session d+1, so the
holding over session t is the target of session t-1. P&L is marked to the close in the
instrument's currency and converted to the base currency with an optional FX frame. Capital is
fixed (Carver's ``fixed_capital``): returns are P&L divided by the same notional capital every
day, and the equity curve is capital plus cumulative P&L (no compounding).

Everything is vectorised over instruments and dates; there is no loop over rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import CostModel

__all__ = ["BacktestInputError", "BacktestResult", "simulate", "trading_costs"]


class BacktestInputError(ValueError):
    """The inputs of :func:`simulate` do not line up (index, instruments, point sizes or costs)."""


@dataclass(frozen=True)
class BacktestResult:
    """Output of :func:`simulate`.

    Wide frames share the index of ``prices`` (``"session"``) and the instrument columns of
    ``positions`` (``"instrument"``). All money is in the base currency.

    Attributes
    ----------
    prices : DataFrame
        The close prices used (price points), NaN where there was no price.
    holdings : DataFrame
        Units held over each session (after that session's trade at its close).
    trades : DataFrame
        Units traded at each session's close, ``holdings - holdings.shift(1)``; 0 when none.
    pnl_gross : DataFrame
        Mark-to-market P&L before costs.
    costs : DataFrame
        Trading costs, >= 0.
    pnl_net : DataFrame
        ``pnl_gross - costs``.
    portfolio_pnl : Series
        Net P&L summed over instruments.
    returns : Series
        ``portfolio_pnl / capital`` (fixed-capital convention, fraction per session).
    equity : Series
        ``capital + portfolio_pnl.cumsum()``.
    drawdown : Series
        ``equity / running peak - 1`` (fraction, <= 0); the running peak starts at ``capital``.
    capital : float
        Notional trading capital, base currency.
    """

    prices: pd.DataFrame
    holdings: pd.DataFrame
    trades: pd.DataFrame
    pnl_gross: pd.DataFrame
    costs: pd.DataFrame
    pnl_net: pd.DataFrame
    portfolio_pnl: pd.Series
    returns: pd.Series
    equity: pd.Series
    drawdown: pd.Series
    capital: float

    def to_long(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Both long tables for storage: ``(to_long_instruments(), to_long_portfolio())``."""
        return self.to_long_instruments(), self.to_long_portfolio()

    def to_long_instruments(self) -> pd.DataFrame:
        """Per-instrument daily rows for storage.

        Returns
        -------
        DataFrame
            Columns ``[session, instrument, holding, trade, price, pnl_gross, cost, pnl_net]``,
            one row per (session, instrument) where the instrument had a price or a non-zero
            holding (sessions before an instrument's first price are left out), sorted by
            session then instrument.
        """
        parts = {
            "holding": self.holdings,
            "trade": self.trades,
            "price": self.prices,
            "pnl_gross": self.pnl_gross,
            "cost": self.costs,
            "pnl_net": self.pnl_net,
        }
        stacked = {name: frame.stack(future_stack=True) for name, frame in parts.items()}
        long = pd.DataFrame(stacked)
        keep = long["price"].notna() | (long["holding"] != 0)
        long = long[keep].reset_index()
        long.columns = ["session", "instrument", *parts]
        return long.sort_values(["session", "instrument"], ignore_index=True)

    def to_long_portfolio(self) -> pd.DataFrame:
        """Portfolio daily rows for storage.

        Returns
        -------
        DataFrame
            Columns ``[session, pnl_net, returns, equity, drawdown]``, one row per session.
        """
        out = pd.DataFrame(
            {
                "pnl_net": self.portfolio_pnl,
                "returns": self.returns,
                "equity": self.equity,
                "drawdown": self.drawdown,
            }
        )
        out.index.name = "session"
        return out.reset_index()


def trading_costs(
    trades: pd.DataFrame,
    prices: pd.DataFrame,
    point_size: pd.Series,
    costs: Mapping[str, CostModel],
) -> pd.DataFrame:
    """Cash cost of each trade, in the instrument's currency.

    ``cost = |n| * slippage * point_size
    + max(|n| * commission_per_unit, commission_min, commission_pct * |n| * |price| * point_size)``,
    and 0 where ``n == 0`` (pysystemtrade ``systems/accounts/account_costs.py``, carver.md §2.10;
    the formula of :class:`pipeline.config.CostModel`). ``|price|`` because back-adjusted futures
    prices can be negative.

    Parameters
    ----------
    trades : DataFrame
        Units traded, index ``session``, columns instruments.
    prices : DataFrame
        Fill prices (price points), same shape as ``trades``. Must be finite where ``n != 0``.
    point_size : Series
        Currency per price point per unit, indexed by instrument.
    costs : mapping of instrument -> CostModel

    Returns
    -------
    DataFrame
        Costs >= 0, same shape as ``trades``; 0 where no trade.
    """
    cols = trades.columns
    ps = point_size.reindex(cols).to_numpy(dtype=float)
    slip = np.array([costs[c].slippage for c in cols], dtype=float)
    per_unit = np.array([costs[c].commission_per_unit for c in cols], dtype=float)
    minimum = np.array([costs[c].commission_min for c in cols], dtype=float)
    pct = np.array([costs[c].commission_pct for c in cols], dtype=float)

    n = np.abs(trades.to_numpy(dtype=float))
    notional = n * np.abs(np.nan_to_num(prices.to_numpy(dtype=float))) * ps
    commission = np.maximum(np.maximum(n * per_unit, minimum), pct * notional)
    cost = np.where(n > 0, n * slip * ps + commission, 0.0)
    return pd.DataFrame(cost, index=trades.index, columns=cols)


def simulate(
    positions: pd.DataFrame,
    prices: pd.DataFrame,
    point_size: pd.Series,
    costs: Mapping[str, CostModel],
    capital: float,
    fx: pd.DataFrame | None = None,
) -> BacktestResult:
    """Account for target positions: holdings, trades, costs, P&L, equity and drawdown.

    Timing (pysystemtrade ``delayfill=True``): the target of session t-1 is traded at the close
    of session t, so ``h_t = positions_{t-1}`` (0 before the first target). Then

    * ``trade_t = h_t - h_{t-1}``, filled at ``P_t`` and costed with :func:`trading_costs`;
    * ``pnl_gross_t = h_{t-1} * (P_t - P_{t-1}) * point_size * fx_t``;
    * ``pnl_net = pnl_gross - costs * fx_t``; ``returns = sum(pnl_net) / capital``.

    Parameters
    ----------
    positions : DataFrame
        Target positions in units (shares / contracts), decided at each session's close. Index
        ``session`` identical to ``prices.index``; columns the traded instruments. NaN means
        "no target" and is treated as flat (0).
    prices : DataFrame
        Close prices in price points, index ``session``; must hold every column of
        ``positions`` (extra columns are ignored). NaN means no price that session: there is no
        P&L that day (the next valid price is compared with the last valid one) and no trade
        (the holding is carried until the next valid price).
    point_size : Series
        Currency per price point per unit, indexed by instrument; > 0.
    costs : mapping of instrument -> :class:`pipeline.config.CostModel`
        One per instrument (pass ``CostModel()`` for a free instrument).
    capital : float
        Notional trading capital in the base currency, > 0 (Carver's fixed capital).
    fx : DataFrame, optional
        Base currency per unit of each instrument's currency, same index as ``prices``,
        columns instruments. Forward-filled; None means every rate is 1.

    Returns
    -------
    BacktestResult

    Raises
    ------
    BacktestInputError
        The indexes differ, an instrument lacks a price column, point size or cost model,
        a point size is not > 0, ``capital`` is not > 0, or an FX rate is missing where the
        instrument has P&L or costs.
    """
    _check_inputs(positions, prices, point_size, costs, capital)
    cols = positions.columns
    px = prices[cols]

    # A trade needs a price: where P_t is NaN the previous holding is carried forward.
    wanted = positions.shift(1).fillna(0.0)
    holdings = wanted.where(px.notna()).ffill().fillna(0.0)
    trades = holdings.diff()
    trades.iloc[0] = holdings.iloc[0]

    # Forward-filled prices make a NaN day a "no change" day and book the whole move since the
    # last valid close on the next valid one, when the holding was still the carried one.
    price_change = px.ffill().diff().fillna(0.0)
    ps = point_size.reindex(cols).astype(float)
    gross = holdings.shift(1).fillna(0.0) * price_change * ps
    cost = trading_costs(trades, px, ps, costs)

    if fx is not None:
        rate = _fx_rates(fx, px, gross, cost)
        gross = gross * rate
        cost = cost * rate

    net = gross - cost
    portfolio = net.sum(axis=1)
    portfolio.name = "pnl_net"
    equity = capital + portfolio.cumsum()
    equity.name = "equity"
    peak = np.maximum(equity.cummax(), capital)
    drawdown = equity / peak - 1.0
    drawdown.name = "drawdown"
    returns = portfolio / capital
    returns.name = "returns"
    return BacktestResult(
        prices=px,
        holdings=holdings,
        trades=trades,
        pnl_gross=gross,
        costs=cost,
        pnl_net=net,
        portfolio_pnl=portfolio,
        returns=returns,
        equity=equity,
        drawdown=drawdown,
        capital=float(capital),
    )


def _check_inputs(
    positions: pd.DataFrame,
    prices: pd.DataFrame,
    point_size: pd.Series,
    costs: Mapping[str, CostModel],
    capital: float,
) -> None:
    if not positions.index.equals(prices.index):
        raise BacktestInputError(
            "simulate: positions and prices have different session indexes "
            f"({len(positions.index)} vs {len(prices.index)} sessions); "
            "reindex positions on prices.index first"
        )
    cols = list(positions.columns)
    for what, have in (
        ("a price column", set(prices.columns)),
        ("a point size", set(point_size.index)),
        ("a cost model (use CostModel() for none)", set(costs)),
    ):
        missing = [c for c in cols if c not in have]
        if missing:
            raise BacktestInputError(f"simulate: instruments {missing} have no {what}")
    ps = point_size.reindex(cols).astype(float)
    bad = ps[~(ps > 0)]
    if len(bad):
        raise BacktestInputError(f"simulate: point sizes must be > 0, got {bad.to_dict()}")
    if not capital > 0:
        raise BacktestInputError(f"simulate: capital must be > 0, got {capital}")


def _fx_rates(
    fx: pd.DataFrame, px: pd.DataFrame, gross: pd.DataFrame, cost: pd.DataFrame
) -> pd.DataFrame:
    missing = [c for c in px.columns if c not in fx.columns]
    if missing:
        raise BacktestInputError(f"simulate: instruments {missing} have no FX column")
    if not fx.index.equals(px.index):
        raise BacktestInputError(
            "simulate: fx and prices have different session indexes; reindex fx on prices.index"
        )
    rate = fx[px.columns].ffill()
    needed = (gross != 0) | (cost != 0)
    hole = rate.isna() & needed
    if hole.to_numpy().any():
        where = hole.stack()
        first = where[where].index[0]
        raise BacktestInputError(
            f"simulate: no FX rate for {first[1]} on {first[0]:%Y-%m-%d} although it has P&L "
            "or costs; extend the FX series back to the first trade"
        )
    return rate.fillna(1.0)
