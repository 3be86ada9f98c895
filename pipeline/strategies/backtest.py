"""Backtest of the stop-and-target strategy on daily bars: positions, fills, trades, statistics.

Conventions (also in ``docs/strategies.md``):

* **Signal at the close, entry at the next open.** The entry state (:mod:`pipeline.strategies.entries`)
  of session t is known at t's close; an entry decided then fills at the open of the instrument's next
  bar. Its size (:mod:`pipeline.strategies.sizing`) and its stop, trailing and target *distances* are
  decided at t's close (ATR and close of t); the levels are set from the entry's fill price.
* **Stops and targets trigger on the bar's high and low** (from the entry bar on) and fill at their
  price; when the market **gaps through** a level at the open, the fill is the open. If the stop and
  the target both lie inside one bar's range, **the stop fills first** (conservative: daily bars do
  not say which came first). A gap through the target at the open fills the target at the open.
* **Trailing stops** start ``distance`` from the entry price, are updated from each close (``close -
  distance`` for a long, ``close + distance`` for a short, with the ATR of that close) and only move in
  the position's favour. With a fixed stop too, the tighter of the two is in force; the exit is
  ``trailing_stop`` when the trailing level is the tighter one, else ``stop``.
* **Signal exits and time stops** are decided at a close and fill at the next open: a position whose
  direction differs from the entry state (opposite, or 0) is closed; a position held through
  ``time_stop`` closes (bars of its instrument, the entry bar's included) is closed. A reversal closes
  and opens at the same open. A trade's ``holding_sessions`` counts the closes it was held through (0
  for a trade stopped on its entry bar; ``time_stop`` for a time stop).
* **No re-entry on the same signal.** After a stop, trailing stop, take-profit or time stop, no entry in
  that direction until the entry state has been something else (the signal changed).
* **Daily loss limit.** After a session whose account P&L net of costs is below ``-daily_loss_limit``
  times the equity at the close before it, no entry is decided at that close (so none fills at the
  next open); exits still trade. Daily bars cannot stop trading within a session, so this is the
  daily-bar form of "no new entries for the rest of the session".
* **Costs** per fill from the instrument's :class:`pipeline.config.CostModel` (commission per contract,
  slippage in price points x point size) through :func:`pipeline.research.backtest.trading_costs`;
  fill prices themselves carry no slippage.
* **Missing bars** (quarantined, flagged or absent from clean bars): no fill and no stop that session;
  the position is held and marked at its last close; pending exits wait for the next bar, pending
  entries are dropped (re-decided at the next close).
* **Equity** is the capital plus the cumulative P&L net of costs (compounding: sizes follow it);
  daily returns are P&L over the equity at the previous close.

The position state is path-dependent, so the simulation steps through the sessions; each step is
vectorised over instruments (numpy arrays of one session). A trade's P&L (exit minus entry price, x
contracts x point size, minus both fills' costs) sums with the others to the account's total P&L: a
trade still open at the end is reported with ``exit_reason`` ``end_of_data``, marked at the last close
with no exit cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import CostModel
from pipeline.research.analytics import trade_statistics
from pipeline.research.backtest import trading_costs
from pipeline.research.metrics import performance_metrics
from pipeline.strategies.config import StopTargetStrategy
from pipeline.strategies.sizing import (
    KellyEstimate,
    fixed_fraction_contracts,
    kelly_contracts,
    vol_target_contracts,
)

__all__ = [
    "EXIT_REASONS",
    "TRADE_COLUMNS",
    "StopTargetInputError",
    "StopTargetResult",
    "simulate_stop_target",
    "summarise_stop_target",
]

#: ``exit_reason`` values of the trades, in code order (code = position + 1).
EXIT_REASONS = ("stop", "trailing_stop", "take_profit", "time_stop", "signal", "end_of_data")
_STOP, _TRAIL, _TARGET, _TIME, _SIGNAL, _END = range(1, 7)

#: Columns of ``StopTargetResult.trades`` and ``trades.csv``.
TRADE_COLUMNS = ["instrument", "direction", "entry_session", "entry_price", "exit_session", "exit_price",
                 "contracts", "pnl", "exit_reason", "holding_sessions", "costs", "return_on_notional"]

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class StopTargetInputError(ValueError):
    """Inputs to :func:`simulate_stop_target` do not line up; the message names the input."""


@dataclass(frozen=True)
class StopTargetResult:
    """Outcome of :func:`simulate_stop_target`.

    Attributes
    ----------
    positions : DataFrame
        Contracts held at each close (signed: long > 0), index ``session``, columns instruments.
    pnl : DataFrame
        P&L net of costs per session and instrument, base currency.
    costs : DataFrame
        Costs of the session's fills per instrument, base currency (>= 0).
    account : DataFrame
        Index ``session``; columns ``pnl`` (net, all instruments), ``costs``, ``equity`` (capital plus
        cumulative net P&L), ``returns`` (pnl / equity at the previous close), ``drawdown`` (equity /
        running peak - 1), ``loss_limit_hit`` (the session's P&L broke the daily loss limit: no entry at
        the next open), ``entries_blocked`` (entries the limit stopped, counted at the deciding close) and
        ``entries_unsized`` (entry signals whose size rounded down to 0 contracts: the stop or the vol too
        wide for the equity, or Kelly seeing no edge).
    trades : DataFrame
        Columns :data:`TRADE_COLUMNS`, one row per round trip, in exit order; ``pnl`` net of the entry's
        and the exit's costs; ``return_on_notional`` = pnl / (contracts x |entry price| x point size).
    capital : float
        Starting equity.
    """

    positions: pd.DataFrame
    pnl: pd.DataFrame
    costs: pd.DataFrame
    account: pd.DataFrame
    trades: pd.DataFrame
    capital: float

    def daily_long(self) -> pd.DataFrame:
        """Per (session, instrument): ``position``, ``pnl``, ``costs`` (the per-session frame of ``daily.csv``)."""
        frames = {"position": self.positions, "pnl": self.pnl, "costs": self.costs}
        long = pd.concat({k: v.stack() for k, v in frames.items()}, axis=1)
        long.index.names = ["session", "instrument"]
        return long.reset_index()


def _check_panels(panels: Mapping[str, pd.DataFrame]) -> None:
    first = panels["close"]
    for name, frame in panels.items():
        if frame is None:
            continue
        if not (frame.index.equals(first.index) and frame.columns.equals(first.columns)):
            raise StopTargetInputError(f"simulate_stop_target: {name} has a different index or columns than close; "
                                       "reindex every panel on the same sessions and instruments")
    if not first.index.is_monotonic_increasing or not first.index.is_unique:
        raise StopTargetInputError("simulate_stop_target: the session index must be ascending and unique")


def _distance(kind: str | None, value: float, atr: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Price distance of an exit rule at a close: ATR multiple, fraction of the close or an amount."""
    if kind is None:
        return np.full(close.shape, np.nan)
    if kind == "atr":
        return value * atr
    if kind == "percent":
        return value * np.abs(close)
    return np.full(close.shape, float(value))


def simulate_stop_target(
    open_: pd.DataFrame,
    high: pd.DataFrame,
    low: pd.DataFrame,
    close: pd.DataFrame,
    state: pd.DataFrame,
    atr: pd.DataFrame,
    strategy: StopTargetStrategy,
    point_size: pd.Series,
    costs: Mapping[str, CostModel],
    capital: float,
    daily_vol: pd.DataFrame | None = None,
) -> StopTargetResult:
    """Simulate the stop-and-target strategy over daily bars (conventions: module docstring).

    Parameters
    ----------
    open_, high, low, close : DataFrame
        Clean daily bars, index ``session`` (ascending, unique), columns instruments, price points; NaN
        = no bar. A session needs all four to trade (fill, stop, decision); a close alone marks.
    state : DataFrame
        Entry state at each close (+1 long, -1 short, 0 none), same shape
        (:func:`pipeline.strategies.entries.entry_state`).
    atr : DataFrame
        Wilder's ATR at each close, price points, same shape (:func:`pipeline.strategies.atr.wilder_atr`).
    strategy : StopTargetStrategy
        Entry, sizing and exit rules, ``max_contracts``, ``daily_loss_limit``, ``allow_short``.
    point_size : Series
        Currency per price point per contract, by instrument (base currency).
    costs : mapping of instrument -> CostModel
    capital : float
        Starting equity, base currency (> 0).
    daily_vol : DataFrame, optional
        Daily price vol, price points, same shape; required by ``vol_target`` sizing.

    Returns
    -------
    StopTargetResult

    Raises
    ------
    StopTargetInputError
        Panels that do not line up, an instrument without point size or cost model, ``capital <= 0``,
        or ``vol_target`` sizing without ``daily_vol``.
    """
    _check_panels({"close": close, "open": open_, "high": high, "low": low, "state": state, "atr": atr,
                   "daily_vol": daily_vol})
    cols = close.columns
    missing = [c for c in cols if c not in point_size.index or c not in costs]
    if missing:
        raise StopTargetInputError(f"simulate_stop_target: no point size or cost model for {missing}")
    if not capital > 0:
        raise StopTargetInputError(f"simulate_stop_target: capital must be > 0, got {capital}")
    sizing, exits = strategy.sizing, strategy.exits
    if sizing.kind == "vol_target" and daily_vol is None:
        raise StopTargetInputError("simulate_stop_target: vol_target sizing needs daily_vol")

    O, H, L, C = (f.to_numpy(dtype=float) for f in (open_, high, low, close))
    S, A = state.to_numpy(dtype=float), atr.to_numpy(dtype=float)
    V = daily_vol.to_numpy(dtype=float) if daily_vol is not None else None
    if not strategy.allow_short:
        S = np.where(S < 0, 0.0, S)
    ps = point_size.reindex(cols).to_numpy(dtype=float)
    ps_series = pd.Series(ps, index=cols)
    cost_models = {c: costs[c] for c in cols}
    n_rows, n = C.shape
    index = close.index

    def fill_costs(units: np.ndarray, price: np.ndarray) -> np.ndarray:
        if not units.any():
            return np.zeros(n)
        frame = pd.DataFrame(units[None, :], columns=cols)
        return trading_costs(frame, pd.DataFrame(np.where(units != 0, price, 0.0)[None, :], columns=cols),
                             ps_series, cost_models).to_numpy()[0]

    # position state, one value per instrument
    pos = np.zeros(n)
    entry_px = np.full(n, np.nan)
    entry_row = np.full(n, -1)
    entry_cost = np.zeros(n)
    stop_lv, trail_lv, target_lv = (np.full(n, np.nan) for _ in range(3))
    held = np.zeros(n)
    blocked = np.zeros(n)  # direction not to re-enter until the state differs from it
    last_close = np.full(n, np.nan)
    pend_exit = np.zeros(n, dtype=int)
    pend_q = np.zeros(n)
    pend_stop, pend_trail, pend_target = (np.full(n, np.nan) for _ in range(3))
    equity, kelly = float(capital), KellyEstimate()

    out_pos, out_pnl, out_cost = (np.zeros((n_rows, n)) for _ in range(3))
    acct_pnl, acct_eq = np.zeros(n_rows), np.zeros(n_rows)
    limit_hit, n_blocked = np.zeros(n_rows, dtype=bool), np.zeros(n_rows, dtype=int)
    n_unsized = np.zeros(n_rows, dtype=int)
    trades: list[dict[str, np.ndarray]] = []

    def close_trades(mask: np.ndarray, price: np.ndarray, row: int, reason: np.ndarray | int,
                     exit_cost: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        q, px = pos[idx], price[idx]
        pnl = q * (px - entry_px[idx]) * ps[idx] - entry_cost[idx] - exit_cost[idx]
        trades.append({
            "col": idx, "direction": np.sign(q), "entry_row": entry_row[idx], "entry_price": entry_px[idx],
            "exit_row": np.full(len(idx), row), "exit_price": px, "contracts": np.abs(q), "pnl": pnl,
            "reason": np.broadcast_to(np.asarray(reason), mask.shape)[idx], "held": held[idx],
            "costs": entry_cost[idx] + exit_cost[idx],
            "ret": pnl / (np.abs(q) * np.abs(entry_px[idx]) * ps[idx]),
        })
        if row < n_rows:  # not the end-of-data marking
            kelly.add(trades[-1]["ret"])

    for t in range(n_rows):
        o, h, lo, c = O[t], H[t], L[t], C[t]
        bar = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c)
        basis = last_close.copy()  # today's P&L of a carried position is measured from the last close
        pnl, cost = np.zeros(n), np.zeros(n)

        # 1. exits decided at the last close (signal, time stop) fill at this open
        go = (pend_exit > 0) & bar & (pos != 0)
        if go.any():
            fee = fill_costs(np.where(go, np.abs(pos), 0.0), o)
            pnl += np.where(go, pos * (o - basis) * ps, 0.0)
            cost += fee
            close_trades(go, o, t, pend_exit, fee)
            pos[go] = 0.0
            pend_exit[go] = 0
        # 2. entries decided at the last close fill at this open (dropped when there is no bar)
        go = (pend_q != 0) & bar & (pos == 0)
        if go.any():
            fee = fill_costs(np.where(go, np.abs(pend_q), 0.0), o)
            cost += fee
            d = np.sign(pend_q)
            pos = np.where(go, pend_q, pos)
            entry_px = np.where(go, o, entry_px)
            entry_row = np.where(go, t, entry_row)
            entry_cost = np.where(go, fee, entry_cost)
            stop_lv = np.where(go, o - d * pend_stop, stop_lv)
            trail_lv = np.where(go, o - d * pend_trail, trail_lv)
            target_lv = np.where(go, o + d * pend_target, target_lv)
            held = np.where(go, 0.0, held)
            basis = np.where(go, o, basis)
        pend_q[:] = 0.0

        # 3. stops and targets on this bar's range
        live = (pos != 0) & bar
        if live.any():
            d = np.sign(pos)
            long = d > 0
            eff = np.where(long, np.fmax(stop_lv, trail_lv), np.fmin(stop_lv, trail_lv))
            trailing = np.isfinite(trail_lv) & (~np.isfinite(stop_lv) | (d * (trail_lv - stop_lv) > 0))
            stop_reason = np.where(trailing, _TRAIL, _STOP)
            carried = entry_row != t  # a position entered at this open cannot gap through at it
            with np.errstate(invalid="ignore"):
                gap_stop = live & carried & np.isfinite(eff) & (d * (o - eff) <= 0)
                gap_tp = live & carried & ~gap_stop & np.isfinite(target_lv) & (d * (o - target_lv) >= 0)
                adverse, favourable = np.where(long, lo, h), np.where(long, h, lo)
                hit_stop = live & ~gap_stop & ~gap_tp & np.isfinite(eff) & (d * (adverse - eff) <= 0)
                hit_tp = (live & ~gap_stop & ~gap_tp & ~hit_stop & np.isfinite(target_lv)
                          & (d * (favourable - target_lv) >= 0))
            out_now = gap_stop | gap_tp | hit_stop | hit_tp
            if out_now.any():
                price = np.where(gap_stop | gap_tp, o, np.where(hit_stop, eff, target_lv))
                reason = np.where(gap_stop | hit_stop, stop_reason, _TARGET)
                fee = fill_costs(np.where(out_now, np.abs(pos), 0.0), price)
                pnl += np.where(out_now, pos * (price - basis) * ps, 0.0)
                cost += fee
                close_trades(out_now, price, t, reason, fee)
                blocked = np.where(out_now, d, blocked)
                pos[out_now] = 0.0
                pend_exit[out_now] = 0

        # 4. the close: mark, count the session, trail
        mark = np.where(np.isfinite(c), c, basis)
        pnl += np.where(pos != 0, pos * (mark - basis) * ps, 0.0)
        last_close = np.where(np.isfinite(c), c, last_close)
        held += (pos != 0) & bar
        if exits.trailing is not None:
            step = _distance(exits.trailing.kind, exits.trailing.value, A[t], c)
            d = np.sign(pos)
            moved = np.where(d > 0, np.fmax(trail_lv, c - step), np.fmin(trail_lv, c + step))
            trail_lv = np.where((pos != 0) & bar, moved, trail_lv)

        net = pnl - cost
        day = float(net.sum())
        prev_equity, equity = equity, equity + day
        out_pos[t], out_pnl[t], out_cost[t] = pos, net, cost
        acct_pnl[t], acct_eq[t] = day, equity
        halted = strategy.daily_loss_limit is not None and day < -strategy.daily_loss_limit * prev_equity
        limit_hit[t] = halted

        # 5. decisions at the close, for the next open
        s = S[t]
        decide = bar & np.isfinite(s)
        blocked = np.where(decide & (s != blocked), 0.0, blocked)
        d = np.sign(pos)
        signal_exit = decide & (pos != 0) & (d != s)
        pend_exit = np.where(signal_exit, _SIGNAL, pend_exit)
        if exits.time_stop is not None:
            timed = decide & (pos != 0) & ~signal_exit & (held >= exits.time_stop)
            pend_exit = np.where(timed, _TIME, pend_exit)
            blocked = np.where(timed, d, blocked)
        want = decide & (s != 0) & (s != blocked) & ((pos == 0) | signal_exit)
        if want.any():
            stop_d = _distance(exits.stop.kind if exits.stop else None, exits.stop.value if exits.stop else 0.0,
                               A[t], c)
            trail_d = _distance(exits.trailing.kind if exits.trailing else None,
                                exits.trailing.value if exits.trailing else 0.0, A[t], c)
            target_d = _distance(exits.take_profit.kind if exits.take_profit else None,
                                 exits.take_profit.value if exits.take_profit else 0.0, A[t], c)
            ready = ((exits.stop is None) | np.isfinite(stop_d)) & ((exits.trailing is None) | np.isfinite(trail_d)) \
                & ((exits.take_profit is None) | np.isfinite(target_d))
            if sizing.kind == "fixed_fraction":
                contracts = fixed_fraction_contracts(equity, sizing.risk_fraction, np.fmin(stop_d, trail_d), ps,
                                                     strategy.max_contracts)
            elif sizing.kind == "vol_target":
                contracts = vol_target_contracts(equity, sizing.annual_target, V[t], ps, strategy.max_contracts)
            elif kelly.n < sizing.min_trades:
                contracts = np.full(n, float(min(sizing.warmup_contracts, strategy.max_contracts)))
            else:
                contracts = kelly_contracts(equity, kelly.leverage(sizing.fraction, sizing.cap), c, ps,
                                            strategy.max_contracts)
            q = np.where(want & ready, s * contracts, 0.0)
            n_unsized[t] = int((want & ready & (contracts == 0)).sum())
            if halted:
                n_blocked[t] = int((q != 0).sum())
            else:
                pend_q = q
                pend_stop, pend_trail, pend_target = stop_d, trail_d, target_d

    # trades still open at the end: marked at the last close, no exit cost
    close_trades(pos != 0, last_close, n_rows, _END, np.zeros(n))
    positions = pd.DataFrame(out_pos, index=index, columns=cols)
    peak = np.maximum.accumulate(np.concatenate([[capital], acct_eq]))[1:]
    prev = np.concatenate([[capital], acct_eq[:-1]])
    account = pd.DataFrame({
        "pnl": acct_pnl, "costs": out_cost.sum(axis=1), "equity": acct_eq, "returns": acct_pnl / prev,
        "drawdown": acct_eq / peak - 1.0, "loss_limit_hit": limit_hit, "entries_blocked": n_blocked,
        "entries_unsized": n_unsized,
    }, index=index)
    return StopTargetResult(positions, pd.DataFrame(out_pnl, index=index, columns=cols),
                            pd.DataFrame(out_cost, index=index, columns=cols), account,
                            _trade_frame(trades, index, cols), float(capital))


def _trade_frame(trades: list[dict[str, np.ndarray]], index: pd.Index, cols: pd.Index) -> pd.DataFrame:
    if not trades:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in TRADE_COLUMNS})
    t = {k: np.concatenate([x[k] for x in trades]) for k in trades[0]}
    exit_rows = np.minimum(t["exit_row"], len(index) - 1)
    frame = pd.DataFrame({
        "instrument": cols.take(t["col"]),
        "direction": np.where(t["direction"] > 0, "long", "short"),
        "entry_session": index.take(t["entry_row"]),
        "entry_price": t["entry_price"],
        "exit_session": index.take(exit_rows),
        "exit_price": t["exit_price"],
        "contracts": t["contracts"].astype(int),
        "pnl": t["pnl"],
        "exit_reason": np.asarray(EXIT_REASONS, dtype=object)[t["reason"].astype(int) - 1],
        "holding_sessions": t["held"].astype(int),
        "costs": t["costs"],
        "return_on_notional": t["ret"],
    })
    return frame[TRADE_COLUMNS]


def summarise_stop_target(result: StopTargetResult) -> dict[str, Any]:
    """Trade statistics and time analysis of a run (the ``trades`` and ``time_analysis`` of ``summary.json``).

    Parameters
    ----------
    result : StopTargetResult

    Returns
    -------
    dict
        ``trades``: ``count`` (closed trades, ``end_of_data`` left out), ``open_at_end``, ``win_rate``,
        ``average_win``, ``average_loss`` (< 0), ``profit_factor`` (gross wins / |gross losses|),
        ``expectancy`` (mean net P&L per closed trade), ``entries_unsized`` (signals sized to 0 contracts),
        ``max_consecutive_losses``, ``total_pnl`` (all
        trades, the open one included: equals the account's net P&L), ``costs``, ``by_exit_reason``
        (count and P&L), plus :func:`pipeline.research.analytics.trade_statistics` of the closed trades.
        ``performance``: ``sharpe`` of the daily returns (P&L / previous equity, 256 sessions a year,
        :func:`pipeline.research.metrics.performance_metrics`), ``max_drawdown`` (fraction of the
        running peak equity), ``max_drawdown_money``, ``total_return``, ``pnl_net``, ``final_equity``.
        ``time_analysis``: ``average_holding_sessions``, ``pnl_by_weekday`` (net daily P&L summed by the
        session's weekday), ``best_weekday``, ``worst_weekday``, ``average_pnl_by_weekday``.
        ``daily_loss_limit``: sessions it tripped and entries it blocked. NaN where undefined.
    """
    trades, acct = result.trades, result.account
    closed = trades[trades["exit_reason"] != "end_of_data"]
    p = closed["pnl"].to_numpy(dtype=float)
    wins, losses = p[p > 0], p[p < 0]
    stats = trade_statistics(closed)
    by_reason = closed.groupby("exit_reason")["pnl"].agg(["count", "sum"]).rename(columns={"sum": "pnl"})
    trade_block = {
        "count": len(closed),
        "open_at_end": int((trades["exit_reason"] == "end_of_data").sum()),
        "win_rate": len(wins) / len(p) if len(p) else math.nan,
        "average_win": float(wins.mean()) if len(wins) else math.nan,
        "average_loss": float(losses.mean()) if len(losses) else math.nan,
        "profit_factor": float(wins.sum() / -losses.sum()) if len(losses) else math.nan,
        "expectancy": float(p.mean()) if len(p) else math.nan,
        "entries_unsized": int(acct["entries_unsized"].sum()),
        "max_consecutive_losses": int(stats["longest_loss_streak"]),
        "total_pnl": float(trades["pnl"].sum()),
        "costs": float(trades["costs"].sum()),
        "by_exit_reason": {str(k): {"count": int(r["count"]), "pnl": float(r["pnl"])} for k, r in by_reason.iterrows()},
        "statistics": stats,
    }
    perf = performance_metrics(acct["returns"])
    peak = np.maximum.accumulate(np.concatenate([[result.capital], acct["equity"].to_numpy()]))[1:]
    performance = {
        "sharpe": perf["sharpe"],
        "max_drawdown": float(acct["drawdown"].min()) if len(acct) else math.nan,
        "max_drawdown_money": float((acct["equity"].to_numpy() - peak).min()) if len(acct) else math.nan,
        "total_return": float(acct["equity"].iloc[-1] / result.capital - 1.0) if len(acct) else math.nan,
        "annual_vol": perf["annual_vol"],
        "cagr": perf["cagr"],
        "pnl_net": float(acct["pnl"].sum()),
        "costs": float(acct["costs"].sum()),
        "final_equity": float(acct["equity"].iloc[-1]) if len(acct) else result.capital,
    }
    active = acct["pnl"] != 0
    by_day = acct.loc[active, "pnl"].groupby(acct.index[active].dayofweek)
    total, mean = by_day.sum(), by_day.mean()
    time_block = {
        "average_holding_sessions": float(closed["holding_sessions"].mean()) if len(closed) else math.nan,
        "pnl_by_weekday": {_WEEKDAYS[k]: float(v) for k, v in total.items()},
        "average_pnl_by_weekday": {_WEEKDAYS[k]: float(v) for k, v in mean.items()},
        "best_weekday": _WEEKDAYS[int(total.idxmax())] if len(total) else None,
        "worst_weekday": _WEEKDAYS[int(total.idxmin())] if len(total) else None,
    }
    trips = acct[acct["loss_limit_hit"]]
    loss_block = {
        "sessions_tripped": len(trips),
        "entries_blocked": int(acct["entries_blocked"].sum()),
        "sessions": [str(s.date()) for s in trips.index],
    }
    return {"trades": trade_block, "performance": performance, "time_analysis": time_block,
            "daily_loss_limit": loss_block}
