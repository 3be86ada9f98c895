"""Research analytics of a backtest: round-trip trades, P&L attribution, risk and rolling statistics.

Everything here reads the frames of a :class:`pipeline.research.backtest.BacktestResult` (or the same
shapes built by hand) and never changes them. Conventions follow :mod:`pipeline.research.backtest` and
:mod:`pipeline.research.metrics`: wide frames indexed by ``session``, instruments as columns, money in
the base currency, returns as fractions of fixed capital, annualisation by 256 sessions
(sqrt = 16, Carver).

A *trade* (round trip) is a run of sessions over which an instrument's holding keeps the same
non-zero sign. It opens when the holding leaves 0 or changes sign and closes when the holding
returns to 0 or flips; a flip closes one trade and opens the opposite one at the same close.
Partial reductions and additions inside a run stay in the same trade and move its average
entry / exit price. This is the "flat-to-flat" definition of vectorbt's ``Positions`` records
(pyfolio's ``round_trips`` instead matches lots first-in-first-out), applied to daily holdings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config import CostModel
from pipeline.research.backtest import BacktestResult, simulate
from pipeline.research.metrics import PERIODS_PER_YEAR, performance_metrics

__all__ = [
    "STRESS_WINDOWS",
    "TRADE_COLUMNS",
    "AnalyticsError",
    "StressResult",
    "attribution",
    "marginal_risk_contributions",
    "reconstruct_trades",
    "rolling_sharpe",
    "rolling_vol",
    "rule_attribution",
    "stress_test",
    "trade_statistics",
    "var_cvar",
]

#: Columns of :func:`reconstruct_trades`, in order.
TRADE_COLUMNS = [
    "instrument",
    "direction",
    "entry_session",
    "exit_session",
    "holding_sessions",
    "entry_price",
    "exit_price",
    "max_units",
    "pnl",
]

#: Historical stress windows replayed by default (first and last calendar day, inclusive):
#: the Lehman month-to-trough of autumn 2008 and the Covid crash from the S&P 500 peak on
#: 2020-02-19 to its trough on 2020-03-23.
STRESS_WINDOWS: dict[str, tuple[str, str]] = {
    "gfc_2008": ("2008-09-01", "2008-11-30"),
    "covid_2020": ("2020-02-19", "2020-03-23"),
}

_ANNUAL_SQRT = np.sqrt(PERIODS_PER_YEAR)


class AnalyticsError(ValueError):
    """Inputs to an analytics function do not line up; the message says which and what to do."""


# --------------------------------------------------------------------------------------------
# Round-trip trades
# --------------------------------------------------------------------------------------------


def reconstruct_trades(
    holdings: pd.DataFrame,
    prices: pd.DataFrame,
    point_size: pd.Series,
    pnl: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Round-trip trades of every instrument, rebuilt from its daily holdings.

    A trade is a maximal run of sessions whose holding has one non-zero sign (module docstring).
    Fills happen at the close of the session whose holding changed (as in
    :func:`pipeline.research.backtest.simulate`): the entry session is the first session holding the new
    position, the exit session the first session at whose close the position is flat again or
    has flipped. The P&L of session t, ``h_{t-1} * (P_t - P_{t-1}) * point_size``, belongs to
    the trade that held ``h_{t-1}``, so the P&L of an instrument's trades sums to the
    instrument's total gross P&L.

    Parameters
    ----------
    holdings : DataFrame
        Units held after each session's close (``BacktestResult.holdings``), index ``session``,
        columns instruments. NaN is read as flat (0).
    prices : DataFrame
        Close prices in price points, same index; holds every column of ``holdings``. NaN = no
        price: the daily P&L is taken against the last valid close, as the backtest does.
    point_size : Series
        Currency per price point per unit, indexed by instrument.
    pnl : DataFrame, optional
        The daily gross P&L to attribute, same shape as ``holdings`` (e.g.
        ``BacktestResult.pnl_gross``, which includes FX conversion). None recomputes it as
        ``h_{t-1} * ffill(P).diff() * point_size`` (the backtest's formula without FX).

    Returns
    -------
    DataFrame
        One row per trade, columns :data:`TRADE_COLUMNS`, sorted by entry session then
        instrument:

        - ``direction``: ``"long"`` or ``"short"``.
        - ``entry_session`` / ``exit_session``: sessions of the opening and closing fills;
          ``exit_session`` is NaT for a trade still open on the last session.
        - ``holding_sessions``: number of sessions with a non-zero holding in the trade.
        - ``entry_price``: unit-weighted average price of the fills that opened or added to the
          position (price points).
        - ``exit_price``: unit-weighted average price of the fills that reduced or closed it;
          NaN while the trade is open (its P&L is then marked to the last close).
        - ``max_units``: largest absolute holding during the trade.
        - ``pnl``: gross P&L of the trade in the currency of ``pnl`` (before costs).

        A fill on a session without a price gives a NaN average price (the backtest never
        trades then).

    Raises
    ------
    AnalyticsError
        If the indexes differ or an instrument has no price column or point size.

    Notes
    -----
    Vectorised: trade numbers come from a cumulative sum of "trade opens" flags down each
    column; fills and P&L are gathered with one ``groupby`` per quantity. No loop over rows.
    """
    cols = holdings.columns
    _require_same_index(holdings, prices, "reconstruct_trades", "holdings", "prices")
    missing = [c for c in cols if c not in prices.columns or c not in point_size.index]
    if missing:
        raise AnalyticsError(
            f"reconstruct_trades: instruments {missing} lack a price column or a point size; "
            "pass the BacktestResult's prices and the configured point sizes"
        )
    h = holdings.to_numpy(dtype=float, na_value=np.nan)
    h = np.nan_to_num(h, nan=0.0)
    px = prices[cols].to_numpy(dtype=float, na_value=np.nan)
    if pnl is None:
        change = prices[cols].ffill().diff().fillna(0.0).to_numpy(dtype=float)
        ps = point_size.reindex(cols).to_numpy(dtype=float)
        daily = _shift_down(h) * change * ps
    else:
        _require_same_index(holdings, pnl, "reconstruct_trades", "holdings", "pnl")
        daily = np.nan_to_num(pnl.reindex(columns=cols).to_numpy(dtype=float, na_value=np.nan))

    h_prev = _shift_down(h)
    sign, sign_prev = np.sign(h), np.sign(h_prev)
    opens = (sign != 0) & (sign != sign_prev)
    number = np.cumsum(opens, axis=0)
    cur = np.where(sign != 0, number, 0)  # trade held after session t's close; 0 = flat
    prev = _shift_down(cur)  # trade held over session t (owner of its P&L)
    same = (cur == prev) & (cur != 0)
    size, size_prev = np.abs(h), np.abs(h_prev)
    added = np.where(cur != 0, np.where(same, np.maximum(size - size_prev, 0.0), size), 0.0)
    cut = np.where(prev != 0, np.where(same, np.maximum(size_prev - size, 0.0), size_prev), 0.0)

    held = _events(cur != 0, cur, h=h, units=size)
    if held.empty:
        return _empty_trades(holdings.index.dtype)
    spans = held.groupby(["col", "trade"]).agg(
        first=("row", "min"), count=("row", "size"), max_units=("units", "max"), h=("h", "first")
    )
    adds = _vwap(_events(added > 0, cur, units=added, price=px), "entry_price")
    cuts = _vwap(_events(cut > 0, prev, units=cut, price=px), "exit_price")
    closes = _events((prev != 0) & ~same, prev).groupby(["col", "trade"])["row"].min()
    owned = _events(prev != 0, prev, pnl=daily).groupby(["col", "trade"])["pnl"].sum()

    table = spans.join([adds, cuts]).assign(exit_row=closes, pnl=owned)
    table["pnl"] = table["pnl"].fillna(0.0)  # a trade opened on the last session has no P&L yet
    is_open = table["exit_row"].isna()
    table.loc[is_open, "exit_price"] = np.nan
    index = holdings.index
    exit_rows = table["exit_row"].fillna(-1).astype(np.int64).to_numpy()
    out = pd.DataFrame(
        {
            "instrument": pd.Index(cols).take(table.index.get_level_values("col")).astype("str"),
            "direction": np.where(table["h"].to_numpy() > 0, "long", "short"),
            "entry_session": index.take(table["first"].to_numpy()),
            "exit_session": index.take(exit_rows, allow_fill=True, fill_value=pd.NaT),
            "holding_sessions": table["count"].to_numpy(dtype=np.int64),
            "entry_price": table["entry_price"].to_numpy(dtype=float),
            "exit_price": table["exit_price"].to_numpy(dtype=float),
            "max_units": table["max_units"].to_numpy(dtype=float),
            "pnl": table["pnl"].to_numpy(dtype=float),
        }
    )
    return out.sort_values(["entry_session", "instrument"], ignore_index=True)


def _shift_down(a: np.ndarray) -> np.ndarray:
    """Row t holds row t-1 of ``a``; row 0 is zero (flat before the first session)."""
    out = np.zeros_like(a)
    out[1:] = a[:-1]
    return out


def _events(mask: np.ndarray, trade: np.ndarray, **values: np.ndarray) -> pd.DataFrame:
    """Long table of the cells where ``mask`` holds: row, column, trade number and ``values``."""
    rows, cols = np.nonzero(mask)
    data = {"row": rows, "col": cols, "trade": trade[rows, cols]}
    data.update({name: v[rows, cols] for name, v in values.items()})
    return pd.DataFrame(data)


def _vwap(fills: pd.DataFrame, name: str) -> pd.Series:
    fills = fills.assign(value=fills["units"] * fills["price"])
    sums = fills.groupby(["col", "trade"])[["value", "units"]].sum(min_count=1)
    # sum() would skip a NaN fill price and report a wrong average; propagate it instead.
    has_nan = fills["price"].isna().groupby([fills["col"], fills["trade"]]).any()
    vwap = (sums["value"] / sums["units"]).where(~has_nan)
    return vwap.rename(name)


def _empty_trades(session_dtype) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "instrument": pd.Series([], dtype="str"),
            "direction": pd.Series([], dtype="str"),
            "entry_session": pd.Series([], dtype=session_dtype),
            "exit_session": pd.Series([], dtype=session_dtype),
            "holding_sessions": pd.Series([], dtype=np.int64),
            "entry_price": pd.Series([], dtype=float),
            "exit_price": pd.Series([], dtype=float),
            "max_units": pd.Series([], dtype=float),
            "pnl": pd.Series([], dtype=float),
        }
    )


def _require_same_index(a, b, where: str, a_name: str, b_name: str) -> None:
    if not a.index.equals(b.index):
        raise AnalyticsError(
            f"{where}: {a_name} and {b_name} have different session indexes "
            f"({len(a.index)} vs {len(b.index)} sessions); reindex {b_name} on {a_name}.index"
        )


def trade_statistics(trades: pd.DataFrame, include_open: bool = False) -> dict[str, float]:
    """Summary statistics of round-trip trades.

    Parameters
    ----------
    trades : DataFrame
        Output of :func:`reconstruct_trades` (columns :data:`TRADE_COLUMNS`).
    include_open : bool, default False
        Count trades still open (NaT ``exit_session``) with their marked-to-market P&L. By
        default only closed trades count, since an open trade's result is not known yet.

    Returns
    -------
    dict of str -> float
        ``n_trades``; ``win_rate`` (trades with P&L > 0 / all trades; a zero-P&L trade counts
        as neither win nor loss but is in the denominator); ``profit_factor`` (gross wins /
        |gross losses|, NaN without a loss); ``avg_winner``, ``avg_loser``, ``largest_winner``,
        ``largest_loser`` (P&L currency; losers are negative; NaN if none);
        ``longest_win_streak``, ``longest_loss_streak`` (consecutive trades in exit order, then
        entry order; a zero-P&L trade breaks both); ``avg_holding_sessions``; ``n_long``,
        ``n_short``, ``pnl_long``, ``pnl_short``; ``total_pnl``. Every value is NaN-safe:
        counts are 0 and averages NaN when there is no trade.
    """
    t = trades if include_open else trades[trades["exit_session"].notna()]
    t = t.sort_values(["exit_session", "entry_session", "instrument"], na_position="last")
    p = t["pnl"].to_numpy(dtype=float)
    wins, losses = p[p > 0], p[p < 0]
    n = len(p)
    longs = t["direction"].to_numpy() == "long"
    return {
        "n_trades": float(n),
        "win_rate": len(wins) / n if n else np.nan,
        "profit_factor": float(wins.sum() / -losses.sum()) if len(losses) else np.nan,
        "avg_winner": float(wins.mean()) if len(wins) else np.nan,
        "avg_loser": float(losses.mean()) if len(losses) else np.nan,
        "largest_winner": float(wins.max()) if len(wins) else np.nan,
        "largest_loser": float(losses.min()) if len(losses) else np.nan,
        "longest_win_streak": float(_longest_run(p > 0)),
        "longest_loss_streak": float(_longest_run(p < 0)),
        "avg_holding_sessions": float(t["holding_sessions"].mean()) if n else np.nan,
        "n_long": float(longs.sum()),
        "n_short": float((~longs).sum()),
        "pnl_long": float(p[longs].sum()),
        "pnl_short": float(p[~longs].sum()),
        "total_pnl": float(p.sum()),
    }


def _longest_run(flags: np.ndarray) -> int:
    if not flags.any():
        return 0
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


# --------------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------------


def attribution(result: BacktestResult, asset_classes: Mapping[str, str]) -> dict[str, pd.DataFrame]:
    """P&L of a backtest split by instrument and by asset class.

    Parameters
    ----------
    result : BacktestResult
    asset_classes : mapping of instrument -> asset class
        E.g. ``{i.symbol: i.asset_class for i in config.instruments}``; must cover every
        instrument of the backtest.

    Returns
    -------
    dict of str -> DataFrame
        - ``"by_instrument"``: index ``instrument``, columns ``asset_class``, ``gross``,
          ``costs``, ``net`` (totals over the backtest, base currency) and ``net_share`` (net /
          total net; NaN if the total is 0).
        - ``"by_asset_class"``: index ``asset_class``, columns ``gross``, ``costs``, ``net``,
          ``net_share``.
        - ``"daily_by_asset_class"``: net P&L per session (index ``session``) and asset class
          (columns).

        Sums are exact regroupings: the ``net`` column sums to ``result.portfolio_pnl.sum()``.

    Raises
    ------
    AnalyticsError
        An instrument of the backtest has no asset class.
    """
    cols = result.pnl_net.columns
    missing = [c for c in cols if c not in asset_classes]
    if missing:
        raise AnalyticsError(
            f"attribution: instruments {missing} have no asset class; pass a mapping covering "
            "every backtest instrument (e.g. from config.instruments)"
        )
    classes = pd.Series({c: asset_classes[c] for c in cols}, name="asset_class")
    by_instrument = pd.DataFrame(
        {
            "asset_class": classes,
            "gross": result.pnl_gross.sum(),
            "costs": result.costs.sum(),
            "net": result.pnl_net.sum(),
        }
    )
    by_instrument.index.name = "instrument"
    by_class = by_instrument.groupby("asset_class")[["gross", "costs", "net"]].sum()
    for frame in (by_instrument, by_class):
        total = frame["net"].sum()
        frame["net_share"] = frame["net"] / total if total != 0 else np.nan
    daily = result.pnl_net.T.groupby(classes).sum().T
    daily.columns.name = "asset_class"
    return {"by_instrument": by_instrument, "by_asset_class": by_class, "daily_by_asset_class": daily}


def rule_attribution(
    forecasts: pd.DataFrame | Mapping[str, pd.DataFrame],
    positions_for: Callable[[pd.DataFrame], pd.DataFrame],
    prices: pd.DataFrame,
    point_size: pd.Series,
    costs: Mapping[str, CostModel],
    capital: float,
    fx: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame | pd.Series]:
    """Each rule variation's forecast traded alone: its returns, Sharpe and correlations.

    Carver judges rules by the account curve of each one traded on its own (ST ch. 6;
    pysystemtrade ``accounts.pandl_for_instrument_forecast``). The caller supplies the sizing,
    so the same vol targeting, instrument weights and buffer as the live system can be used.

    Parameters
    ----------
    forecasts : DataFrame or mapping of rule -> DataFrame
        Either a frame with ``(rule, instrument)`` MultiIndex columns (e.g.
        ``ForecastSet.capped``) or one wide frame (index ``session``, columns instruments) per
        rule.
    positions_for : callable
        ``positions_for(forecast_wide) -> positions``: target units (index ``session``, columns
        instruments) for one rule's forecast frame.
    prices, point_size, costs, capital, fx
        As for :func:`pipeline.research.backtest.simulate`.

    Returns
    -------
    dict
        - ``"returns"``: DataFrame, index ``session``, one column per rule: net daily returns
          (fraction of capital).
        - ``"summary"``: DataFrame indexed by rule: ``gross``, ``costs``, ``net`` (base
          currency), ``sharpe`` (annualised, 256 days; :func:`pipeline.research.metrics.performance_metrics`)
          and ``annual_vol``.
        - ``"correlation"``: DataFrame, rule x rule Pearson correlation of daily returns.

    Raises
    ------
    AnalyticsError
        No rule is given. Errors of ``simulate`` propagate unchanged.
    """
    per_rule = _per_rule(forecasts)
    if not per_rule:
        raise AnalyticsError("rule_attribution: no rule forecasts given")
    returns, rows = {}, {}
    for rule, frame in per_rule.items():  # one backtest per rule, vectorised inside
        res = simulate(positions_for(frame), prices, point_size, costs, capital, fx)
        returns[rule] = res.returns
        m = performance_metrics(res.returns)
        rows[rule] = {
            "gross": float(res.pnl_gross.to_numpy().sum()),
            "costs": float(res.costs.to_numpy().sum()),
            "net": float(res.portfolio_pnl.sum()),
            "sharpe": m["sharpe"],
            "annual_vol": m["annual_vol"],
        }
    frame = pd.DataFrame(returns)
    frame.columns.name = "rule"
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "rule"
    return {"returns": frame, "summary": summary, "correlation": frame.corr()}


def _per_rule(forecasts: pd.DataFrame | Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    if isinstance(forecasts, pd.DataFrame):
        if not isinstance(forecasts.columns, pd.MultiIndex):
            raise AnalyticsError(
                "rule_attribution: a forecast frame needs (rule, instrument) MultiIndex columns; "
                "pass ForecastSet.capped or a dict of rule -> wide frame"
            )
        rules = dict.fromkeys(forecasts.columns.get_level_values(0))
        return {str(rule): forecasts[rule].rename_axis(columns="instrument") for rule in rules}
    return dict(forecasts)


# --------------------------------------------------------------------------------------------
# Risk
# --------------------------------------------------------------------------------------------


def var_cvar(returns: pd.Series, levels: tuple[float, ...] = (0.95, 0.99)) -> pd.DataFrame:
    """One-session value at risk and expected shortfall, historical and normal.

    Parameters
    ----------
    returns : Series
        Daily returns (fractions), index ``session``; NaN dropped.
    levels : tuple of float
        Confidence levels in (0, 1).

    Returns
    -------
    DataFrame
        Index ``level``; columns ``historical_var``, ``historical_cvar``, ``parametric_var``,
        ``parametric_cvar``: losses as positive fractions (a negative value means even the tail
        is a gain). With ``q = quantile(r, 1 - level)`` (numpy's linear interpolation):

        - historical VaR ``= -q``; historical CVaR ``= -mean(r | r <= q)``;
        - parametric VaR ``= -(mu - sigma z)``, CVaR ``= -(mu - sigma phi(z) / (1 - level))``
          with ``z = Phi^-1(level)``, ``mu`` the mean and ``sigma`` the ddof=1 std (Jorion,
          *Value at Risk*, ch. 5; McNeil, Frey & Embrechts, *Quantitative Risk Management*,
          ex. 2.14).

        CVaR >= VaR holds for both methods by construction.

    Raises
    ------
    AnalyticsError
        Fewer than 2 returns, or a level outside (0, 1).
    """
    r = pd.Series(returns, dtype=float).dropna().to_numpy()
    if len(r) < 2:
        raise AnalyticsError(f"var_cvar: need at least 2 returns, got {len(r)}")
    lv = np.asarray(levels, dtype=float)
    if not ((lv > 0) & (lv < 1)).all():
        raise AnalyticsError(f"var_cvar: levels must lie in (0, 1), got {list(levels)}")
    q = np.quantile(r, 1.0 - lv)
    tail = r[None, :] <= q[:, None]  # levels x returns; q >= min(r) so no row is empty
    hist_cvar = -(np.where(tail, r[None, :], 0.0).sum(axis=1) / tail.sum(axis=1))
    mu, sigma = r.mean(), r.std(ddof=1)
    z = stats.norm.ppf(lv)
    out = pd.DataFrame(
        {
            "historical_var": -q,
            "historical_cvar": hist_cvar,
            "parametric_var": sigma * z - mu,
            "parametric_cvar": sigma * stats.norm.pdf(z) / (1.0 - lv) - mu,
        },
        index=pd.Index(lv, name="level"),
    )
    return out


@dataclass(frozen=True)
class StressResult:
    """Output of :func:`stress_test`.

    Attributes
    ----------
    summary : DataFrame
        Index ``window``; columns ``start``, ``end`` (first and last session with prices in the
        window), ``pnl`` (P&L at the window's end), ``worst_pnl`` (lowest cumulative P&L on any
        session of the window, <= 0 unless every day is a gain), ``n_missing`` (held
        instruments without prices around the window, left out of the totals).
    by_instrument : DataFrame
        Index ``window``, columns instruments: P&L at the window's end, NaN where no price.
    """

    summary: pd.DataFrame
    by_instrument: pd.DataFrame


def stress_test(
    positions: pd.Series,
    prices_history: pd.DataFrame,
    point_size: pd.Series,
    windows: Mapping[str, tuple[str | pd.Timestamp, str | pd.Timestamp]] = STRESS_WINDOWS,
    fx: pd.Series | None = None,
) -> StressResult:
    """Replay historical price moves on today's positions.

    For each window ``(start, end)`` the base is each instrument's last valid close *before*
    ``start`` (so the window's first day counts), and the P&L on session t inside the window is
    ``position * (P_t - P_base) * point_size * fx``. Price-point moves are replayed (not
    percentage moves), like a futures P&L; for instruments whose price level has changed a lot
    since, scale the positions first if percentage replay is wanted.

    Parameters
    ----------
    positions : Series
        Current units per instrument (index instruments).
    prices_history : DataFrame
        Close prices in price points, index ``session``, columns instruments; must reach back
        before each window's start for the instrument to be covered.
    point_size : Series
        Currency per price point per unit, indexed by instrument.
    windows : mapping of name -> (start, end)
        Inclusive calendar dates; defaults to :data:`STRESS_WINDOWS`.
    fx : Series, optional
        Base currency per unit of each instrument's currency today; None means 1.

    Returns
    -------
    StressResult

    Raises
    ------
    AnalyticsError
        An instrument has no point size, or a window has start after end or no session of the
        price history inside it.
    """
    held = positions[positions.fillna(0.0) != 0].astype(float)
    missing_ps = [c for c in held.index if c not in point_size.index]
    if missing_ps:
        raise AnalyticsError(f"stress_test: instruments {missing_ps} have no point size")
    cols = held.index
    px = prices_history.reindex(columns=cols)
    rate = pd.Series(1.0, index=cols) if fx is None else fx.reindex(cols).fillna(1.0)
    scale = held * point_size.reindex(cols).astype(float) * rate
    rows, per_instrument = {}, {}
    filled = px.ffill()
    for name, (start, end) in windows.items():  # a handful of windows
        s, e = pd.Timestamp(start), pd.Timestamp(end)
        inside = filled.loc[s:e] if s <= e else filled.iloc[:0]
        if inside.empty:
            raise AnalyticsError(
                f"stress_test: window {name!r} ({start}..{end}) holds no session of the price "
                "history; extend the history or drop the window"
            )
        before = filled.loc[filled.index < s]
        base = before.iloc[-1] if len(before) else pd.Series(np.nan, index=cols)
        path = (inside - base) * scale
        covered = path.notna().any() & base.notna()
        total = path.loc[:, covered].fillna(0.0).sum(axis=1)
        per_instrument[name] = path.ffill().iloc[-1].where(covered)
        rows[name] = {
            "start": inside.index[0],
            "end": inside.index[-1],
            "pnl": float(total.iloc[-1]),
            "worst_pnl": float(total.min()),
            "n_missing": int((~covered).sum()),
        }
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "window"
    # an instrument without a position loses nothing in any window
    unheld = positions.index.difference(cols)
    by_instrument = pd.DataFrame(per_instrument).T.reindex(columns=positions.index)
    by_instrument[unheld] = 0.0
    by_instrument.index.name = "window"
    by_instrument.columns.name = "instrument"
    return StressResult(summary=summary, by_instrument=by_instrument)


def marginal_risk_contributions(positions_value: pd.Series, cov: pd.DataFrame) -> pd.DataFrame:
    """Euler decomposition of portfolio risk into per-instrument contributions.

    With exposures ``w`` and covariance ``S``, portfolio risk ``sigma = sqrt(w' S w)``; the
    marginal risk is ``dsigma/dw = S w / sigma`` and the contribution ``w * S w / sigma``,
    which sums to ``sigma`` (Euler's theorem; Roncalli, *Introduction to Risk Parity and
    Budgeting*, ch. 2; the same decomposition as :mod:`pipeline.portfolio.instrument_weights`' ERC).

    Parameters
    ----------
    positions_value : Series
        Exposure per instrument (base currency notional, or fractions of capital), index
        instruments. NaN is read as 0.
    cov : DataFrame
        Covariance of the instruments' returns (fractions, e.g. daily or annualised), square,
        index and columns covering ``positions_value.index``.

    Returns
    -------
    DataFrame
        Index ``instrument``; columns ``exposure``, ``marginal`` (risk per unit of exposure),
        ``contribution`` (in the units of ``exposure`` times the returns' period, e.g. daily
        currency risk for a daily ``cov``) and ``share`` (contribution / sigma; sums to 1). All
        NaN except ``exposure`` when sigma is 0.

    Raises
    ------
    AnalyticsError
        ``cov`` is not square or misses an instrument, or holds NaN for a held instrument.
    """
    names = positions_value.index
    missing = [c for c in names if c not in cov.index or c not in cov.columns]
    if missing:
        raise AnalyticsError(
            f"marginal_risk_contributions: cov has no row/column for {missing}; estimate the "
            "covariance over every held instrument"
        )
    w = positions_value.fillna(0.0).to_numpy(dtype=float)
    s = cov.loc[names, names].to_numpy(dtype=float)
    if np.isnan(s[np.ix_(w != 0, w != 0)]).any():
        raise AnalyticsError("marginal_risk_contributions: cov has NaN between held instruments")
    s = np.nan_to_num(s)
    sw = s @ w
    sigma = float(np.sqrt(max(w @ sw, 0.0)))
    marginal = sw / sigma if sigma > 0 else np.full_like(w, np.nan)
    contribution = w * marginal
    out = pd.DataFrame(
        {
            "exposure": w,
            "marginal": marginal,
            "contribution": contribution,
            "share": contribution / sigma if sigma > 0 else np.full_like(w, np.nan),
        },
        index=pd.Index(names, name="instrument"),
    )
    return out


# --------------------------------------------------------------------------------------------
# Rolling statistics
# --------------------------------------------------------------------------------------------


def rolling_sharpe(returns: pd.Series | pd.DataFrame, window: int = 256) -> pd.Series | pd.DataFrame:
    """Trailing annualised Sharpe ratio: ``16 * mean / std(ddof=1)`` over ``window`` sessions.

    Parameters
    ----------
    returns : Series or DataFrame
        Daily returns (fractions), index ``session``; NaN sessions are skipped within a window.
    window : int, default 256
        Sessions per window (one Carver year).

    Returns
    -------
    Same type and shape as ``returns``; NaN until a window holds ``window`` valid returns, and
    where the window's std is 0. Uses data up to each session only (no look-ahead).

    Notes
    -----
    The Sharpe ratio of :func:`pipeline.research.metrics.performance_metrics` on a moving window;
    sqrt(256) = 16 is Carver's annualisation (carver.md §2.0).
    """
    roll = returns.rolling(window, min_periods=window)
    std = roll.std(ddof=1)
    return roll.mean() / std.where(std > 0) * _ANNUAL_SQRT


def rolling_vol(returns: pd.Series | pd.DataFrame, window: int = 64) -> pd.Series | pd.DataFrame:
    """Trailing annualised volatility: ``16 * std(ddof=1)`` over ``window`` sessions.

    Parameters
    ----------
    returns : Series or DataFrame
        Daily returns (fractions), index ``session``.
    window : int, default 64
        Sessions per window (about three months).

    Returns
    -------
    Same type and shape as ``returns``, annualised fraction; NaN until ``window`` valid returns.

    Notes
    -----
    Simple (equal-weight) window, unlike the exponentially weighted volatility that sizes
    positions (:mod:`pipeline.signals.volatility`): this is a report of realised risk, not an estimate.
    """
    return returns.rolling(window, min_periods=window).std(ddof=1) * _ANNUAL_SQRT


def monthly_returns(returns: pd.Series) -> pd.DataFrame:
    """Monthly returns (sum of the fixed-capital daily returns in the month), year x month.

    Parameters
    ----------
    returns : Series
        Daily returns (fractions of capital), index ``session``.

    Returns
    -------
    DataFrame
        Index year, columns 1..12 (NaN for months outside the data), fractions.
    """
    r = returns.dropna()
    if r.empty:
        return pd.DataFrame(columns=range(1, 13), dtype=float)
    by_month = r.groupby([r.index.year, r.index.month]).sum()
    table = by_month.unstack().reindex(columns=range(1, 13))
    table.index.name, table.columns.name = "year", "month"
    return table


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
