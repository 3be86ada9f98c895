"""Backtest accounting: holdings, trades, costs and P&L from target positions.

Timing follows pysystemtrade's ``delayfill=True`` (``systems/accounts/pandl_calculators``): a
target position decided at the close of session d is traded at the close of session d+1, so the
holding over session t is the target of session t-1. P&L is marked to the close in the
instrument's currency and converted to the base currency with an optional FX frame. Capital is
fixed by default (Carver's ``fixed_capital``): returns are P&L divided by the same notional capital
every day, and the equity curve is capital plus cumulative P&L (no compounding). With
``capital_method="full"`` or ``"half"`` the capital follows the P&L as pysystemtrade's capital
correction does (``syscore/capital.py``, ``systems/accounts/account_with_multiplier.py``): see
:func:`capital_multiplier` and :func:`compounded_positions`.

Options (each off by default, so the plain call above is unchanged): fills at the next session's
open where opens exist, limit orders that fill only when the session's range reaches the limit,
a short-selling switch per instrument with a borrow cost on shorts, portfolio exposure limits
and the production pre-trade gate's limits applied to every simulated order, with its daily-loss
circuit breaker.

Everything is vectorised over instruments and dates. The one exception is an order that may go
unfilled (a limit order) or be denied (the pre-trade gate, the circuit breaker): the next order
then depends on what was held, so those options step through the sessions, each step vectorised
over instruments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import CostModel, PipelineConfig, RiskLimits

__all__ = [
    "CAPITAL_METHODS",
    "FILL_MODES",
    "GATE_RULES",
    "BacktestInputError",
    "BacktestResult",
    "capital_multiplier",
    "compounded_positions",
    "constrain_exposure",
    "needs_bars",
    "simulate",
    "simulation_options",
    "trading_costs",
]

#: Where a target decided at the close of session d is filled (see :func:`simulate`).
FILL_MODES = ("next_close", "next_open")

#: How the capital of a backtest follows its P&L (pysystemtrade ``capital_multiplier: func:`` names
#: ``syscore.capital.fixed_capital``, ``full_compounding``, ``half_compounding``).
CAPITAL_METHODS = ("fixed", "full", "half")

#: Pre-trade gate rules applied to simulated orders, in the order :func:`pipeline.execution.gate.pre_trade_check`
#: checks them. ``kill_switch`` denies every order of a session after the daily-loss circuit breaker
#: tripped (state HALTED); no person operates the kill switch over history, so it is otherwise
#: ACTIVE. The order-rate throttle counts orders per second and has no meaning on daily bars; a
#: reference price is always finite.
GATE_RULES = ("kill_switch", "max_order_quantity", "max_order_notional", "max_position", "price_collar")

#: Relative tolerance of the gate's limit comparisons (as :mod:`pipeline.execution.gate`: a value at a
#: limit up to float rounding passes).
_GATE_REL_TOL = 1e-12


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
        ``portfolio_pnl / capital`` (fixed capital), or ``portfolio_pnl / capital_path`` when the
        capital compounds (fraction per session).
    equity : Series
        ``capital + portfolio_pnl.cumsum()``.
    drawdown : Series
        ``equity / running peak - 1`` (fraction, <= 0); the running peak starts at ``capital``.
    capital : float
        Notional trading capital, base currency (the starting capital when it compounds).
    fill_prices : DataFrame
        Price of each session's fill (price points): the close, the open (``fill="next_open"``)
        or the limit price; NaN where nothing traded.
    borrow : DataFrame
        Borrow cost of short holdings (>= 0), base currency; included in ``pnl_net``.
    orders : DataFrame
        One row per instrument (index ``instrument``): ``n_orders`` (sessions with a price on
        which the holding differed from the previous target), ``n_filled``, ``n_denied`` (by the
        pre-trade gate), ``fill_rate`` (filled / orders; NaN without orders),
        ``price_improvement`` (base currency gained against a market fill at the same session:
        ``(market - fill) * units * point_size * fx``, > 0 is better) and
        ``market_notional`` (traded units valued at the market price, base currency) and
        ``price_improvement_bps`` (improvement / market notional, basis points).
    denials : DataFrame
        Gate denials, columns ``[session, instrument, quantity, rule]`` (empty without the gate).
    circuit_breaker : DataFrame
        Sessions whose net portfolio P&L tripped the daily-loss circuit breaker, columns
        ``[session, pnl_net, limit, halted_session]`` (``halted_session``: the next session,
        whose orders were all denied; NaT after the last session). Empty without
        ``gate.max_daily_loss``.
    capital_method : str
        One of :data:`CAPITAL_METHODS` (``simulate``'s ``capital_method``).
    capital_path : Series or None
        Capital at risk over each session (base currency, index ``session``): ``capital`` times
        the capital multiplier of the previous session (:func:`capital_multiplier`); None for
        fixed capital (``capital`` every session).
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
    fill_prices: pd.DataFrame
    borrow: pd.DataFrame
    orders: pd.DataFrame
    denials: pd.DataFrame
    circuit_breaker: pd.DataFrame = field(default_factory=lambda: _trip_table([], [], None, pd.DatetimeIndex([])))
    capital_method: str = "fixed"
    capital_path: pd.Series | None = None

    def capital_label(self) -> str:
        """How the capital was treated, for reports: ``"fixed 1,000,000"`` or ``"compounded (full)
        from 1,000,000 to 1,234,567"`` (the capital at risk on the last session)."""
        if self.capital_method == "fixed" or self.capital_path is None:
            return f"fixed {self.capital:,.0f}"
        return (f"compounded ({self.capital_method}) from {self.capital:,.0f} "
                f"to {float(self.capital_path.iloc[-1]):,.0f}")

    def order_summary(self) -> dict[str, float]:
        """Portfolio totals of :attr:`orders`: ``n_orders``, ``n_filled``, ``n_denied``,
        ``fill_rate`` (NaN without orders), ``price_improvement`` (base currency) and
        ``price_improvement_bps`` (of the traded market notional; NaN without fills)."""
        o = self.orders
        n, filled = float(o["n_orders"].sum()), float(o["n_filled"].sum())
        notional = float(o["market_notional"].sum())
        gain = float(o["price_improvement"].sum())
        return {
            "n_orders": n,
            "n_filled": filled,
            "n_denied": float(o["n_denied"].sum()),
            "fill_rate": filled / n if n else float("nan"),
            "price_improvement": gain,
            "price_improvement_bps": 1e4 * gain / notional if notional else float("nan"),
        }

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
    units = trades.to_numpy(dtype=float)
    value = _zero_nan(np.abs(units * prices.to_numpy(dtype=float)))
    cost = _cost_array(units, value, ps, _cost_params(costs, cols))
    return pd.DataFrame(cost, index=trades.index, columns=cols)


def _cost_params(costs: Mapping[str, CostModel], cols) -> tuple[np.ndarray, ...]:
    """(slippage, commission per unit, minimum, percentage) arrays in column order."""
    return tuple(
        np.array([getattr(costs[c], name) for c in cols], dtype=float)
        for name in ("slippage", "commission_per_unit", "commission_min", "commission_pct")
    )


def _cost_array(trades: np.ndarray, value: np.ndarray, ps: np.ndarray, params: tuple[np.ndarray, ...]) -> np.ndarray:
    """The formula of :func:`trading_costs` from the units traded and ``value = |units| * |fill price|``
    (0 where no trade); a term whose parameter is 0 for every instrument is skipped."""
    slip, per_unit, minimum, pct = params
    commission = value * (pct * ps) if pct.any() else np.zeros(trades.shape)
    if not (per_unit.any() or minimum.any() or slip.any()):
        return commission
    n = np.abs(trades)
    if per_unit.any():
        np.maximum(commission, n * per_unit, out=commission)
    if minimum.any():
        np.maximum(commission, np.where(n > 0, minimum, 0.0), out=commission)
    if slip.any():
        commission += n * (slip * ps)
    return commission


def simulate(
    positions: pd.DataFrame,
    prices: pd.DataFrame,
    point_size: pd.Series,
    costs: Mapping[str, CostModel],
    capital: float,
    fx: pd.DataFrame | None = None,
    *,
    fill: str = "next_close",
    opens: pd.DataFrame | None = None,
    highs: pd.DataFrame | None = None,
    lows: pd.DataFrame | None = None,
    limit_offset: float | None = None,
    allow_short: bool | pd.Series = True,
    borrow_rate: float = 0.0,
    max_gross_exposure: float | None = None,
    max_net_exposure: float | None = None,
    whole_units: bool = False,
    gate: RiskLimits | None = None,
    capital_method: str = "fixed",
    max_position: float | None = None,
) -> BacktestResult:
    """Account for target positions: holdings, trades, costs, P&L, equity and drawdown.

    Timing (pysystemtrade ``delayfill=True``): the target of session t-1 is traded in session t,
    so with every order filled ``h_t = positions_{t-1}`` (0 before the first target). Then, with
    ``C`` the closes (forward-filled over missing days), ``F_t`` the fill price and ``ps`` the
    point size,

    * ``trade_t = h_t - h_{t-1}``, filled at ``F_t`` and costed with :func:`trading_costs` at ``F_t``;
    * ``pnl_gross_t = (h_{t-1} * (C_t - C_{t-1}) + trade_t * (C_t - F_t)) * ps * fx_t`` (the
      holding before the fill earns the whole session's move, the traded units earn from the
      fill to the close: exact for a fill at the open, 0 for a fill at the close);
    * ``borrow_t = max(-h_{t-1}, 0) * |C_{t-1}| * ps * borrow_rate * days_t / 365 * fx_t`` with
      ``days_t`` the calendar days since the previous session (ACT/365, as brokers accrue);
    * ``pnl_net = pnl_gross - costs * fx_t - borrow``; ``returns = sum(pnl_net) / capital``.

    Options, applied in this order:

    0. Position limit (``max_position``, units): every target is clipped to +/- ``max_position``, as
       production clips each trade to ``risk.max_position`` before the gate
       (:func:`pipeline.execution.intents.clip_plan`; from a flat start a clipped target is exactly the
       sequence of clipped trades).
    1. Short-selling switch: where ``allow_short`` is False a negative target becomes 0.
    2. Exposure limits (:func:`constrain_exposure`): on each session every target is scaled by
       one factor so that gross and net notional at that close stay within the limits.
    3. Pre-trade gate (``gate``): each order ``q = target_{t-1} - h_{t-1}`` is checked against
       ``gate``'s limits as :func:`pipeline.execution.gate.pre_trade_check` checks a live order
       (``max_order_quantity``, ``max_order_notional`` valued at the decision close,
       ``max_position``, and ``price_collar`` for limit orders); a denied order is not traded and
       the holding is kept. Unlike production, a back-adjusted price <= 0 is valued at its
       absolute value rather than denied (it is not a traded price). With
       ``gate.max_daily_loss`` set, the daily-loss circuit breaker runs as in production
       (:func:`pipeline.execution.gate.daily_loss_breached` on the session's net portfolio P&L, checked
       after its close before that close's orders are planned): when ``pnl_net_{t-1} <
       -max_daily_loss`` the state is HALTED for the orders of session t, and HALTED denies every
       order (rule ``kill_switch``, exposure-reducing ones included, as
       :func:`pipeline.execution.gate.pre_trade_check` does). Production stays HALTED until a person sets
       ACTIVE again; the simulation assumes that happens before the next session's orders, so a
       trip halts one session (a loss on the halted session trips again).
    4. Fill: ``fill="next_close"`` fills at ``C_t``; ``"next_open"`` at the open ``O_t`` where
       ``opens`` has one, else at ``C_t``. With ``limit_offset`` set every order is a day limit
       order at ``R -/+ limit_offset * |R|`` (buy / sell) with ``R`` the decision close
       ``C_{t-1}``: a buy fills only if the session's low reaches the limit (the open, else the
       close, when there is no low), at ``min(limit, O_t)``; a sell if the high does, at
       ``max(limit, O_t)`` (a gap through the limit fills at the open). An unfilled order
       expires; the next session sends a new one for the then current target.

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
    fill : {"next_close", "next_open"}, default "next_close"
        Where a market order fills.
    opens, highs, lows : DataFrame, optional
        Session open, high and low in price points, same index as ``prices``, columns a
        superset of the instruments' (missing columns or NaN = not known that session).
        ``opens`` is needed for ``fill="next_open"``; ``highs``/``lows`` for limit orders.
    limit_offset : float, optional
        None: market orders. A fraction in [0, 1): day limit orders this much better than the
        decision close (0.01 = Carver's seed policy "limit at 1% better than market").
    allow_short : bool or Series of bool, default True
        Portfolio-wide (bool) or per instrument (index instruments; missing = allowed).
    borrow_rate : float, default 0
        Annual borrow fee on short notional as a fraction (0.02 = 2 % a year).
    max_gross_exposure, max_net_exposure : float, optional
        ``sum |notional|`` and ``|sum notional|`` limits as multiples of ``capital``
        (notional ``= units * |close| * point_size * fx``).
    whole_units : bool, default False
        After exposure scaling, round targets toward 0 to whole units (keeps the limits).
    gate : RiskLimits, optional
        Pre-trade gate limits and the circuit breaker's ``max_daily_loss`` (base currency)
        (``risk:`` in the config); None = no gate.
    max_position : float, optional
        Absolute position limit in units (``risk.max_position``), > 0; None = no limit.
    capital_method : {"fixed", "full", "half"}, default "fixed"
        ``"fixed"``: the accounting above. ``"full"`` / ``"half"``: pysystemtrade's capital
        correction (``systems/accounts/account_with_multiplier.py``). The fixed-capital
        simulation runs first (options 1-2 applied); its returns give the capital multiplier
        ``m`` (:func:`capital_multiplier`); the targets become :func:`compounded_positions`
        (``m_t`` times the target of session t where the fixed target changes, held in between,
        rounded to whole units when ``whole_units``) and are simulated again with the same options (exposure limits already applied, so
        they scale with the capital). ``returns_t = pnl_t / (capital * m_{t-1})`` (the capital
        at risk, ``BacktestResult.capital_path``); equity stays ``capital + cumsum(pnl)``.

    Returns
    -------
    BacktestResult

    Raises
    ------
    BacktestInputError
        The indexes differ, an instrument lacks a price column, point size or cost model,
        a point size is not > 0, ``capital`` is not > 0, an option is out of range or lacks
        its data (``opens`` for ``next_open``, ``highs`` and ``lows`` for limit orders),
        ``capital_method`` is unknown, or an FX rate is missing where the instrument has P&L
        or costs.
    """
    _check_inputs(positions, prices, point_size, costs, capital)
    if max_position is not None:
        if not max_position > 0:
            raise BacktestInputError(f"simulate: max_position must be > 0, got {max_position}")
        positions = positions.clip(-max_position, max_position)
    _check_options(fill, opens, highs, lows, limit_offset, borrow_rate, max_gross_exposure, max_net_exposure)
    if capital_method not in CAPITAL_METHODS:
        raise BacktestInputError(f"simulate: capital_method must be one of {CAPITAL_METHODS}, got {capital_method!r}")
    if capital_method != "fixed":
        return _compounded(positions, prices, point_size, costs, capital, fx, capital_method, fill=fill,
                           opens=opens, highs=highs, lows=lows, limit_offset=limit_offset, allow_short=allow_short,
                           borrow_rate=borrow_rate, max_gross_exposure=max_gross_exposure,
                           max_net_exposure=max_net_exposure, whole_units=whole_units, gate=gate,
                           max_position=max_position)
    cols, index = positions.columns, prices.index
    n_rows, n_cols = len(index), len(cols)
    px_frame = prices if prices.columns.equals(cols) else prices[cols]
    px = px_frame.to_numpy(dtype=float)
    ps = point_size.reindex(cols).to_numpy(dtype=float)
    has_px = ~np.isnan(px)
    complete = bool(has_px.all())  # every close present: forward filling is the identity
    last = None
    if not complete:  # row of the last valid close at or before each session (-1 before the first)
        rows = np.arange(n_rows, dtype=np.int32)[:, None]
        last = np.maximum.accumulate(np.where(has_px, rows, np.int32(-1)), axis=0)
    close = px if complete else _take_rows(px, last, np.nan)
    rate = None if fx is None else _fx_frame(fx, px_frame).to_numpy(dtype=float)

    blocked = ~_shortable(allow_short, cols).to_numpy()[None, :]
    targets = _limited_targets(positions, px_frame, ps, rate, blocked, capital, max_gross_exposure,
                               max_net_exposure, whole_units)
    wanted = _zero_nan(_shift_down(targets))  # the order of session t is the target of t-1
    if blocked.any():
        wanted[(wanted < 0) & blocked] = 0.0
    market = px
    if fill == "next_open":
        op = _reindexed(opens, px_frame).to_numpy()
        market = np.where(np.isnan(op), px, op)
    # the close each order was decided at (its reference price), for limit orders and the gate
    decision = _shift_down(close, np.nan) if gate is not None or limit_offset is not None else None
    if limit_offset is None:
        buy_hit = sell_hit = None
    else:
        buy_px, sell_px, buy_hit, sell_hit = _limit_fills(
            px, decision, *(_reindexed(f, px_frame).to_numpy() for f in (opens, highs, lows)), limit_offset
        )

    denied, trips = None, []
    day_pnl = None
    if gate is not None and gate.max_daily_loss is not None:
        day_pnl = _DayPnl(px, close, market, None if limit_offset is None else (buy_px, sell_px), ps,
                          _cost_params(costs, cols), None if rate is None else np.nan_to_num(rate, nan=1.0),
                          _borrow_per_short_unit(close, index, ps, borrow_rate))
    if gate is None and limit_offset is None:
        # a trade needs a price: the holding is carried until one
        holdings = wanted if complete else _take_rows(wanted, last, 0.0)
    else:
        holdings, denied, trips = _step_orders(wanted, has_px, decision, ps, buy_hit, sell_hit, gate, limit_offset,
                                               day_pnl, cols)
    held_before = _shift_down(holdings)
    trades = holdings - held_before
    traded = trades != 0
    fill_px = market if limit_offset is None else np.where(trades > 0, buy_px, sell_px)
    fill_prices = np.where(traded, fill_px, np.nan)
    # traded value at the fill in price points, 0 where no trade (NaN fills only where no trade)
    value = trades * fill_px
    np.abs(value, out=value)
    if not complete or limit_offset is not None:
        _zero_nan(value)

    # The forward-filled close makes a NaN day a "no change" day and books the whole move since the
    # last valid close on the next valid one, when the holding was still the carried one.
    gross = np.empty_like(close)
    gross[0] = 0.0
    np.subtract(close[1:], close[:-1], out=gross[1:])
    if not complete:
        _zero_nan(gross)
    gross *= held_before
    if fill_px is not px:  # units traded away from the close earn (or lose) fill -> close
        gross += np.where(traded, trades * (px - fill_prices), 0.0)
    gross *= ps
    cost = _cost_array(trades, value, ps, _cost_params(costs, cols))
    borrow = _borrow(held_before, close, index, ps, borrow_rate)
    at_market = fill_px is market  # no price improvement by construction
    market_value = value if at_market else np.abs(trades * np.where(traded, market, 0.0))
    improvement = None if at_market else _zero_nan((market - fill_prices) * trades)

    if rate is None:
        notional = market_value.sum(axis=0) * ps
        gain = np.zeros(n_cols) if at_market else improvement.sum(axis=0) * ps
    else:
        _check_fx_holes(rate, index, cols, gross, cost, borrow)
        base = np.nan_to_num(rate, nan=1.0)
        gross, cost, borrow = gross * base, cost * base, borrow * base
        notional = (market_value * base).sum(axis=0) * ps
        gain = np.zeros(n_cols) if at_market else (improvement * base).sum(axis=0) * ps

    net = gross - cost
    if borrow_rate:
        net -= borrow
    portfolio = pd.Series(net.sum(axis=1), index=index, name="pnl_net")
    equity = (capital + portfolio.cumsum()).rename("equity")
    peak = np.maximum(equity.cummax(), capital)
    drawdown = (equity / peak - 1.0).rename("drawdown")
    returns = (portfolio / capital).rename("returns")
    n_filled = traded.sum(axis=0)
    # without the gate or limit orders every order with a price fills
    n_orders = n_filled if denied is None and limit_offset is None else ((wanted != held_before) & has_px).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        orders = pd.DataFrame(
            {
                "n_orders": n_orders.astype(float),
                "n_filled": n_filled.astype(float),
                "n_denied": np.zeros(n_cols) if denied is None else (denied > 0).sum(axis=0).astype(float),
                "fill_rate": np.where(n_orders > 0, n_filled / np.maximum(n_orders, 1), np.nan),
                "price_improvement": gain,
                "market_notional": notional,
                "price_improvement_bps": np.where(notional > 0, 1e4 * gain / notional, np.nan),
            },
            index=pd.Index(cols, name="instrument"),
        )

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=index, columns=cols, copy=False)

    return BacktestResult(
        prices=px_frame,
        holdings=frame(holdings),
        trades=frame(trades),
        pnl_gross=frame(gross),
        costs=frame(cost),
        pnl_net=frame(net),
        portfolio_pnl=portfolio,
        returns=returns,
        equity=equity,
        drawdown=drawdown,
        capital=float(capital),
        fill_prices=frame(fill_prices),
        borrow=frame(borrow),
        orders=orders,
        denials=_denial_table(np.zeros((0, 0), np.int8) if denied is None else denied, wanted, held_before, index, cols),
        circuit_breaker=_trip_table(trips, portfolio.to_numpy()[trips] if trips else [],
                                    None if gate is None else gate.max_daily_loss, index),
    )


def capital_multiplier(returns: pd.Series, method: str) -> pd.Series:
    """The capital multiplier of each session: capital after its close / starting capital.

    pysystemtrade ``syscore/capital.py`` (Carver's blog post "Capital correction", 2016), from the
    fixed-capital returns ``r`` (fraction per session; NaN counts as 0):

    * ``"fixed"`` (``fixed_capital``): ``m_t = 1``.
    * ``"full"`` (``full_compounding``): ``m_t = prod_{s<=t} (1 + r_s)``: profits and losses both
      change the capital.
    * ``"half"`` (``half_compounding``): ``m_t = min(1, m_{t-1} * (1 + r_t))``: losses cut the
      capital, gains restore it but never above the starting capital. The recursion is solved in
      closed form, ``m_t = G_t / max(1, max_{s<=t} G_s)`` with ``G`` the full multiplier
      (the full curve's distance below its high-water mark, floored at the start), so no loop is
      needed. pysystemtrade grows the multiplier by ``1 + m_{t-1} * r_t``; here it grows by
      ``1 + r_t``, what an account holding ``m_{t-1}`` times the fixed positions earns on its
      own capital ``m_{t-1} * capital`` (the two agree while ``m = 1``).

    A session losing all the capital (``r <= -1``) leaves the multiplier at 0 from then on.

    Parameters
    ----------
    returns : Series
        Fixed-capital portfolio returns, index ``session``.
    method : {"fixed", "full", "half"}

    Returns
    -------
    Series
        ``capital_multiplier``, same index, >= 0; known at each session's close (it includes
        that session's return), so it sizes the positions decided at that close.

    Raises
    ------
    BacktestInputError
        ``method`` is not one of :data:`CAPITAL_METHODS`.
    """
    if method not in CAPITAL_METHODS:
        raise BacktestInputError(f"capital_multiplier: method must be one of {CAPITAL_METHODS}, got {method!r}")
    r = np.nan_to_num(returns.to_numpy(dtype=float))
    if method == "fixed":
        m = np.ones(len(r))
    else:
        m = np.cumprod(np.maximum(1.0 + r, 0.0))
        if method == "half":
            m = m / np.maximum(np.maximum.accumulate(m), 1.0)
    return pd.Series(m, index=returns.index, name="capital_multiplier")


def compounded_positions(targets: pd.DataFrame, multiplier: pd.Series, whole_units: bool = False) -> pd.DataFrame:
    """Fixed-capital target positions resized by the capital multiplier.

    pysystemtrade ``systems/portfolio.py: get_actual_position`` (notional position times the
    capital multiplier of the same session, which is known at its close). On each session where
    the fixed-capital target changes (the buffered system trades) the position becomes
    ``m_t * target_t``, rounded half to even to whole units when ``whole_units`` (as
    :func:`pipeline.portfolio.sizing.buffered_positions` rounds); in between it is held, so the
    drifting multiplier alone never causes a trade. pysystemtrade re-buffers ``m * optimal``
    within ``m * buffer`` each session; the buffered targets stored by the pipeline carry the
    buffer's decisions, and their trading sessions stand in for it. A position of 0 stays 0.

    Parameters
    ----------
    targets : DataFrame
        Target units, index ``session``, columns instruments; NaN = 0.
    multiplier : Series
        :func:`capital_multiplier`, index ``session`` equal to ``targets.index``.
    whole_units : bool, default False
        Round the resized positions to whole units.

    Returns
    -------
    DataFrame
        Target units, same shape, never NaN.

    Raises
    ------
    BacktestInputError
        The indexes of ``targets`` and ``multiplier`` differ.
    """
    if not multiplier.index.equals(targets.index):
        raise BacktestInputError("compounded_positions: targets and multiplier have different session indexes")
    t = np.nan_to_num(targets.to_numpy(dtype=float))
    scaled = t * multiplier.to_numpy(dtype=float)[:, None]
    if whole_units:
        scaled = np.round(scaled)
    changed = t != _shift_down(t)
    rows = np.arange(len(t), dtype=np.int64)[:, None]
    last = np.maximum.accumulate(np.where(changed, rows, -1), axis=0)
    return pd.DataFrame(_take_rows(scaled, last, 0.0), index=targets.index, columns=targets.columns)


def _compounded(positions, prices, point_size, costs, capital, fx, method, **options) -> BacktestResult:
    """:func:`simulate` with ``capital_method`` ``"full"`` or ``"half"`` (see there)."""
    cols = positions.columns
    limits = options.pop("max_gross_exposure"), options.pop("max_net_exposure")
    targets = positions
    if limits != (None, None):  # applied once, before compounding: the limits then scale with the capital
        px_frame = prices if prices.columns.equals(cols) else prices[cols]
        rate = None if fx is None else _fx_frame(fx, px_frame).to_numpy(dtype=float)
        blocked = ~_shortable(options["allow_short"], cols).to_numpy()[None, :]
        ps = point_size.reindex(cols).to_numpy(dtype=float)
        targets = pd.DataFrame(_limited_targets(positions, px_frame, ps, rate, blocked, capital, *limits,
                                                options["whole_units"]), index=positions.index, columns=cols)
    fixed = simulate(targets, prices, point_size, costs, capital, fx, **options)
    m = capital_multiplier(fixed.returns, method)
    scaled = compounded_positions(targets, m, options["whole_units"])
    result = simulate(scaled, prices, point_size, costs, capital, fx, **options)
    path = (capital * m.shift(1, fill_value=1.0)).rename("capital")
    pnl = result.portfolio_pnl
    returns = (pnl / path.where(path > 0)).fillna(0.0).rename("returns")
    return replace(result, returns=returns, capital_method=method, capital_path=path)


def _limited_targets(positions, px_frame, ps, rate, blocked, capital, max_gross, max_net, whole_units) -> np.ndarray:
    """Target units after the short-selling switch and the exposure limits (options 1-2 of
    :func:`simulate`; NaN kept where no limit applies)."""
    targets = positions.to_numpy(dtype=float)
    if max_gross is None and max_net is None:
        return targets
    index, cols = positions.index, positions.columns
    targets = np.nan_to_num(targets)
    targets[(targets < 0) & blocked] = 0.0
    fx_filled = None if rate is None else pd.DataFrame(np.nan_to_num(rate, nan=1.0), index, cols)
    return constrain_exposure(
        pd.DataFrame(targets, index, cols), px_frame, pd.Series(ps, cols), capital,
        max_gross, max_net, fx_filled, whole_units,
    ).to_numpy()


def _shift_down(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Row t holds row t-1 of ``a``; row 0 is ``fill``."""
    out = np.empty_like(a)
    out[0] = fill
    out[1:] = a[:-1]
    return out


def _zero_nan(a: np.ndarray) -> np.ndarray:
    """``a`` with NaN set to 0, in place (``a`` must be an array the caller owns)."""
    a[np.isnan(a)] = 0.0
    return a


def _take_rows(a: np.ndarray, rows: np.ndarray, fill: float) -> np.ndarray:
    """``a[rows[t, i], i]`` per cell, ``fill`` where ``rows`` is -1 (a column-wise forward fill)."""
    out = np.take_along_axis(a, np.maximum(rows, 0), axis=0)
    if (rows < 0).any():
        out[rows < 0] = fill
    return out


def constrain_exposure(
    targets: pd.DataFrame,
    prices: pd.DataFrame,
    point_size: pd.Series,
    capital: float,
    max_gross: float | None = None,
    max_net: float | None = None,
    fx: pd.DataFrame | None = None,
    whole_units: bool = False,
) -> pd.DataFrame:
    """Scale each session's targets so gross and net notional stay within limits.

    Notional ``N_i = target_i * |close_i| * point_size_i * fx_i`` at the decision close; on each
    session every target is multiplied by ``k = min(1, max_gross * capital / sum|N|,
    max_net * capital / |sum N|)``, which keeps the portfolio's shape (the same cut for every
    instrument, like a lower vol target for that day). A missing close counts as no exposure.

    Parameters
    ----------
    targets : DataFrame
        Target units, index ``session``, columns instruments.
    prices : DataFrame
        Closes (price points), same index and columns.
    point_size : Series
        Currency per price point per unit, by instrument.
    capital : float
        Base currency; the limits are multiples of it.
    max_gross, max_net : float, optional
        Limits as multiples of capital (1.5 = 150 %); None = no limit.
    fx : DataFrame, optional
        Base currency per instrument currency, same shape; None = 1.
    whole_units : bool, default False
        Round scaled targets toward 0, so rounding never breaks a limit.

    Returns
    -------
    DataFrame
        The constrained targets, same shape; unchanged where within the limits.
    """
    value = prices.abs() * point_size.reindex(targets.columns).astype(float)
    if fx is not None:
        value = value * fx
    notional = (targets * value).fillna(0.0)
    k = pd.Series(1.0, index=targets.index)
    with np.errstate(divide="ignore"):
        if max_gross is not None:
            k = np.minimum(k, max_gross * capital / notional.abs().sum(axis=1))
        if max_net is not None:
            # valued at |price|: a long position in a back-adjusted future priced below 0 is still long
            k = np.minimum(k, max_net * capital / notional.sum(axis=1).abs())
    scaled = targets.mul(k, axis=0)
    if whole_units:
        scaled = np.trunc(scaled)
    return scaled.where(np.broadcast_to(k.to_numpy()[:, None] < 1.0, targets.shape), targets)


class _DayPnl:
    """Net portfolio P&L of one session from the holdings before and after its fills: the formula
    of :func:`simulate` for a single row, so the circuit breaker can see each session's P&L while
    the sessions are stepped through (the whole-panel accounting is done afterwards, once)."""

    def __init__(self, px, close, market, limit_px, ps, cost_params, base, borrow_unit):
        self.px, self.market, self.limit_px, self.ps = px, market, limit_px, ps
        self.cost_params, self.base, self.borrow_unit = cost_params, base, borrow_unit
        self.move = np.zeros_like(close)
        np.subtract(close[1:], close[:-1], out=self.move[1:])
        _zero_nan(self.move)

    def __call__(self, t: int, before: np.ndarray, after: np.ndarray) -> float:
        trade = after - before
        traded = trade != 0
        fill = self.market[t] if self.limit_px is None else np.where(trade > 0, self.limit_px[0][t], self.limit_px[1][t])
        gross = before * self.move[t] + np.where(traded, trade * (self.px[t] - fill), 0.0)
        value = np.where(traded, np.abs(trade * fill), 0.0)
        cost = _cost_array(trade[None, :], value[None, :], self.ps, self.cost_params)[0]
        net = gross * self.ps - cost - np.maximum(-before, 0.0) * self.borrow_unit[t]
        if self.base is not None:
            net = net * self.base[t]
        return float(np.nansum(net))


def _step_orders(
    wanted: np.ndarray,
    has_px: np.ndarray,
    decision: np.ndarray,
    ps: np.ndarray,
    buy_hit: np.ndarray | None,
    sell_hit: np.ndarray | None,
    gate: RiskLimits | None,
    limit_offset: float | None,
    day_pnl: _DayPnl | None = None,
    cols: pd.Index | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Holdings when an order can go unfilled or be denied; ``denied`` holds 1 + the index of
    the first failing rule of :data:`GATE_RULES` (0 = not denied); ``trips`` the rows whose net
    P&L tripped the circuit breaker (``day_pnl`` given). One step per session, vectorised over
    instruments: the order of session t depends on the holding after t-1. ``cols`` (the
    instruments, in column order) picks each one's order-quantity limit."""
    n_rows, n_cols = wanted.shape
    holdings = np.zeros((n_rows, n_cols))
    denied = np.zeros((n_rows, n_cols), dtype=np.int8)
    ref = np.abs(np.nan_to_num(decision)) * ps
    tol = 1.0 + _GATE_REL_TOL
    collar_breached = (
        gate is not None and limit_offset is not None and limit_offset > gate.price_collar * tol
    )
    if gate is not None:  # per instrument (RiskLimits.order_quantity_limit), in column order
        max_quantity = (np.full(n_cols, gate.max_order_quantity) if cols is None
                        else np.array([gate.order_quantity_limit(str(c)) for c in cols], dtype=float))
    prev = np.zeros(n_cols)
    trips: list[int] = []
    halted = False  # the state the orders of session t are planned in
    for t in range(n_rows):
        q = wanted[t] - prev
        live = has_px[t] & (q != 0)
        ok = live
        if gate is not None:
            size = np.abs(q)
            rules = np.stack(
                [
                    np.full(n_cols, halted),
                    size > max_quantity * tol,
                    size * ref[t] > gate.max_order_notional * tol,
                    np.abs(prev + q) > gate.max_position * tol,
                    np.full(n_cols, collar_breached),
                ]
            ) & live
            failing = rules.any(axis=0)
            denied[t] = np.where(failing, rules.argmax(axis=0) + 1, 0)
            ok = live & ~failing
        if buy_hit is not None:
            ok = ok & np.where(q > 0, buy_hit[t], sell_hit[t])
        before = prev
        prev = np.where(ok, wanted[t], prev)
        holdings[t] = prev
        if day_pnl is not None:  # production checks the day's P&L after the close, before planning
            halted = day_pnl(t, before, prev) < -gate.max_daily_loss
            if halted:
                trips.append(t)
    return holdings, denied, trips


def _limit_fills(
    px: np.ndarray,
    decision: np.ndarray,
    opens: np.ndarray,
    highs: np.ndarray,
    lows: np.ndarray,
    offset: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Buy and sell day-limit fill prices and whether each side would fill, per session.

    A missing low (high) is replaced by the lower (higher) of open and close, or the close."""
    step = offset * np.abs(decision)
    buy_limit, sell_limit = decision - step, decision + step
    low = np.where(np.isnan(lows), np.fmin(opens, px), lows)
    high = np.where(np.isnan(highs), np.fmax(opens, px), highs)
    priced = ~np.isnan(px)
    with np.errstate(invalid="ignore"):
        buy_hit = (low <= buy_limit) & priced
        sell_hit = (high >= sell_limit) & priced
    return np.fmin(buy_limit, opens), np.fmax(sell_limit, opens), buy_hit, sell_hit


def _check_options(fill, opens, highs, lows, limit_offset, borrow_rate, max_gross, max_net) -> None:
    if fill not in FILL_MODES:
        raise BacktestInputError(f"simulate: fill must be one of {FILL_MODES}, got {fill!r}")
    if fill == "next_open" and opens is None:
        raise BacktestInputError("simulate: fill='next_open' needs the session opens (opens=...)")
    if limit_offset is not None:
        if not 0 <= limit_offset < 1:
            raise BacktestInputError(f"simulate: limit_offset must lie in [0, 1), got {limit_offset}")
        if highs is None or lows is None:
            raise BacktestInputError("simulate: limit orders need the session highs and lows (highs=..., lows=...)")
    if not borrow_rate >= 0:
        raise BacktestInputError(f"simulate: borrow_rate must be >= 0, got {borrow_rate}")
    for name, value in (("max_gross_exposure", max_gross), ("max_net_exposure", max_net)):
        if value is not None and not value > 0:
            raise BacktestInputError(f"simulate: {name} must be > 0, got {value}")


def _reindexed(frame: pd.DataFrame | None, px: pd.DataFrame) -> pd.DataFrame:
    """``frame`` on the index and columns of ``px`` (all NaN if None)."""
    if frame is None:
        return pd.DataFrame(np.nan, index=px.index, columns=px.columns)
    if not frame.index.equals(px.index):
        raise BacktestInputError(
            "simulate: opens/highs/lows and prices have different session indexes; reindex them on prices.index"
        )
    return frame.reindex(columns=px.columns).astype(float)


def _shortable(allow_short: bool | pd.Series, cols: pd.Index) -> pd.Series:
    if isinstance(allow_short, pd.Series):
        return allow_short.reindex(cols).fillna(True).astype(bool)
    return pd.Series(bool(allow_short), index=cols)


def _borrow(held_before: np.ndarray, close: np.ndarray, index: pd.Index, ps: np.ndarray, rate: float) -> np.ndarray:
    """Borrow cost of shorts held over each session at the previous close, ACT/365."""
    if rate == 0:
        return np.zeros(held_before.shape)  # calloc: untouched pages cost nothing
    return np.maximum(-held_before, 0.0) * _borrow_per_short_unit(close, index, ps, rate)


def _borrow_per_short_unit(close: np.ndarray, index: pd.Index, ps: np.ndarray, rate: float) -> np.ndarray:
    """Borrow cost of one unit held short over each session: previous |close| x point size x
    rate x calendar days / 365 (0 on the first session)."""
    if rate == 0:
        return np.zeros(close.shape)
    days = np.zeros(len(index))
    days[1:] = np.diff(index.to_numpy()).astype("timedelta64[D]").astype(float)
    return np.abs(_zero_nan(_shift_down(close, np.nan))) * ps * (rate * days / 365.0)[:, None]


def _trip_table(rows, pnl, limit: float | None, index: pd.Index) -> pd.DataFrame:
    """The circuit breaker's trips: the session, its net P&L, the limit and the halted session."""
    rows = np.asarray(rows, dtype=int)
    nxt = rows + 1
    return pd.DataFrame({
        "session": pd.DatetimeIndex(index.take(rows)),
        "pnl_net": np.asarray(pnl, dtype=float),
        "limit": np.full(len(rows), np.nan if limit is None else float(limit)),
        "halted_session": pd.DatetimeIndex(index.take(np.where(nxt < len(index), nxt, -1), allow_fill=True,
                                                      fill_value=pd.NaT)),
    })


def _denial_table(denied: np.ndarray, wanted: np.ndarray, held_before: np.ndarray, index, cols) -> pd.DataFrame:
    rows, col = np.nonzero(denied)
    return pd.DataFrame(
        {
            "session": index.take(rows),
            "instrument": pd.Index(cols).take(col).astype(str),
            "quantity": wanted[rows, col] - held_before[rows, col],
            "rule": np.asarray(GATE_RULES, dtype=object)[denied[rows, col] - 1].astype(str),
        }
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


def _fx_frame(fx: pd.DataFrame | None, px: pd.DataFrame) -> pd.DataFrame:
    """Forward-filled FX rates on ``px``'s shape (NaN where unknown); all 1 without ``fx``."""
    if fx is None:
        return pd.DataFrame(1.0, index=px.index, columns=px.columns)
    missing = [c for c in px.columns if c not in fx.columns]
    if missing:
        raise BacktestInputError(f"simulate: instruments {missing} have no FX column")
    if not fx.index.equals(px.index):
        raise BacktestInputError(
            "simulate: fx and prices have different session indexes; reindex fx on prices.index"
        )
    return fx[px.columns].ffill()


def _check_fx_holes(rate: np.ndarray, index: pd.Index, cols: pd.Index, *money: np.ndarray) -> None:
    needed = np.zeros(rate.shape, dtype=bool)
    for values in money:
        needed |= values != 0
    hole = np.isnan(rate) & needed
    if hole.any():
        row, col = np.argwhere(hole)[0]
        raise BacktestInputError(
            f"simulate: no FX rate for {cols[col]} on {index[row]:%Y-%m-%d} although it has P&L "
            "or costs; extend the FX series back to the first trade"
        )


def simulation_options(config: PipelineConfig) -> dict[str, Any]:
    """Keyword arguments of :func:`simulate` from the configuration's ``backtest:`` section.

    Parameters
    ----------
    config : PipelineConfig

    Returns
    -------
    dict
        ``fill``, ``limit_offset`` (None for market orders), ``allow_short`` (Series by
        instrument: ``backtest.allow_short`` and not the instrument's ``long_only``),
        ``borrow_rate``, ``max_gross_exposure``, ``max_net_exposure``, ``whole_units``
        (``portfolio.round_positions``), ``gate`` (``risk:`` when
        ``backtest.pre_trade_gate``, else None), ``capital_method``
        (``backtest.capital_method``) and ``max_position`` (``risk.max_position``, always: production
        clips every trade to it). The caller adds ``opens`` (for
        ``next_open``) and ``highs``/``lows`` (for limit orders): see :func:`needs_bars`.
    """
    bt = config.backtest
    return {
        "fill": bt.fill,
        "limit_offset": bt.limit_offset if bt.order_type == "limit" else None,
        "allow_short": pd.Series({i.symbol: bt.allow_short and not i.long_only for i in config.instruments}),
        "borrow_rate": bt.borrow_rate,
        "max_gross_exposure": bt.max_gross_exposure,
        "max_net_exposure": bt.max_net_exposure,
        "whole_units": config.portfolio.round_positions,
        "gate": config.risk if bt.pre_trade_gate else None,
        "capital_method": bt.capital_method,
        "max_position": config.risk.max_position,  # production clips every trade to it (clip_plan), gate or not
    }


def needs_bars(config: PipelineConfig) -> tuple[str, ...]:
    """Bar fields besides the close that the configured simulation needs: ``("open",)`` for
    next-open fills, ``("open", "high", "low")`` for limit orders, else ``()``."""
    if config.backtest.order_type == "limit":
        return ("open", "high", "low")
    return ("open",) if config.backtest.fill == "next_open" else ()
