"""The results folder of a backtest run: statistics, CSV tables and the HTML report.

For one run, :func:`write_results` creates ``{root}/{timestamp}_{name}/`` holding

==================  =====================================================================
``summary.json``     run id, parameters, data range, performance, risk, trade statistics,
                     time analysis; every section states its sample, its costs and whether it
                     is in- or out-of-sample (its ``basis``)
``parameters.json``  the configuration and simulation options the run used
``trades.csv``       round-trip trades (:func:`pipeline.research.analytics.reconstruct_trades`)
``equity_curve.csv`` session, equity, drawdown, returns (base currency; with compounding also
                     ``capital``, the capital at risk each session)
``daily_pnl.csv``    per session and instrument: holding, trade, price, gross P&L, cost, net P&L
``drawdowns.csv``    every drawdown: peak, trough, recovery, depth, lengths
``report.html``      self-contained interactive report (:mod:`pipeline.research.tearsheet`)
``folds.csv``        walk-forward runs only: one row per fold (windows, out-of-sample statistics,
                     the parameters fitted on its training window)
==================  =====================================================================

:func:`write_comparison` puts several such folders side by side in ``compare.html``.
Statistics follow :mod:`pipeline.research.metrics` (256 sessions a year, risk-free rate 0).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.portfolio.optimisers import EfficientFrontier
from pipeline.research.analytics import (
    STRESS_WINDOWS,
    attribution,
    monthly_returns,
    reconstruct_trades,
    stress_test,
    trade_statistics,
    var_cvar,
)
from pipeline.research.backtest import BacktestResult
from pipeline.research.metrics import PERIODS_PER_YEAR, performance_metrics

__all__ = [
    "RESULT_FILES",
    "RUN_TAGS",
    "BacktestRun",
    "ResultsError",
    "drawdown_periods",
    "monthly_returns",
    "summarise",
    "write_comparison",
    "write_results",
]

#: Files of every results folder, in the order they are written (report last).
RESULT_FILES = (
    "parameters.json",
    "trades.csv",
    "equity_curve.csv",
    "daily_pnl.csv",
    "drawdowns.csv",
    "summary.json",
    "report.html",
)


#: Run tags that ask the ``backtest`` asset for a results folder: the simulated window (start,
#: end, ``YYYY-MM-DD``), the folder name and the parent folder (``trading-pipeline backtest``
#: sets them; a backfill's partition range sets the window).
RUN_TAGS = {
    "start": "trading/backtest_start",
    "end": "trading/backtest_end",
    "name": "trading/backtest_name",
    "out": "trading/backtest_out",
}


class ResultsError(ValueError):
    """A results folder cannot be written or read; the message names the folder and the file."""


@dataclass(frozen=True)
class BacktestRun:
    """Everything one results folder is made of.

    Attributes
    ----------
    name : str
        Strategy or run name; part of the folder name (letters, digits, ``-`` and ``_`` kept).
    result : BacktestResult
        The simulation, over the whole window including any warm-up.
    asset_classes : mapping of instrument -> asset class
    point_size : Series
        Currency per price point per unit, by instrument.
    parameters : dict
        JSON-serialisable configuration and options (written to ``parameters.json``).
    sample : str
        ``"in-sample"`` or ``"out-of-sample"``: whether any parameter was fitted on the sessions
        reported.
    sample_note : str
        How the parameters relate to the data, e.g. "fixed published forecast scalars; weights
        estimated on past data only at each month end".
    vol_target : float, optional
        Annualised fraction, for ``realised_vol_vs_target``.
    start : Timestamp, optional
        First session reported (statistics start here; earlier sessions are warm-up). Default:
        the first session with a position.
    rule_attribution : dict, optional
        Output of :func:`pipeline.research.analytics.rule_attribution`.
    folds : DataFrame, optional
        Walk-forward folds (:attr:`pipeline.research.validation.WalkForwardResult.folds`); written to
        ``folds.csv``, the summary and the report.
    frontier : EfficientFrontier, optional
        The efficient frontier of the last instrument-weight estimation window
        (:func:`pipeline.portfolio.instrument_weights.last_window_frontier`); drawn in the report.
    excluded_instruments : DataFrame, optional
        Instruments left out of trading (or held by the stale-price guard) in the window, with the
        reason (:func:`pipeline.signals.combination.excluded_instruments`); ``summary.json``
        ``excluded_instruments`` and a table of the report.
    """

    name: str
    result: BacktestResult
    asset_classes: Mapping[str, str]
    point_size: pd.Series
    parameters: dict[str, Any]
    sample: str = "in-sample"
    sample_note: str = ""
    vol_target: float | None = None
    start: pd.Timestamp | None = None
    rule_attribution: dict[str, Any] | None = field(default=None)
    folds: pd.DataFrame | None = field(default=None)
    frontier: EfficientFrontier | None = field(default=None)
    excluded_instruments: pd.DataFrame | None = field(default=None)

    def window_start(self) -> pd.Timestamp:
        if self.start is not None:
            return pd.Timestamp(self.start)
        active = self.result.holdings.abs().sum(axis=1) > 0
        return active.idxmax() if active.any() else self.result.returns.index[0]


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def drawdown_periods(equity: pd.Series, capital: float) -> pd.DataFrame:
    """Every drawdown of a fixed-capital equity curve, deepest first.

    A drawdown starts at the first session below the running peak (which starts at
    ``capital``) and ends at the first session back at or above it.

    Parameters
    ----------
    equity : Series
        Account value, base currency, index ``session``.
    capital : float
        Starting capital (the first peak).

    Returns
    -------
    DataFrame
        Columns ``peak_session`` (last session at the peak; NaT for the starting capital),
        ``trough_session``, ``recovery_session`` (NaT while not recovered), ``depth`` (fraction
        of the peak, < 0), ``depth_money`` (base currency, < 0), ``sessions_to_trough``,
        ``sessions_underwater`` (to the recovery, or to the last session when open).
    """
    eq = equity.to_numpy(dtype=float)
    peak = np.maximum(np.maximum.accumulate(eq), capital)
    under = eq < peak
    if not under.any():
        return pd.DataFrame(columns=["peak_session", "trough_session", "recovery_session", "depth",
                                     "depth_money", "sessions_to_trough", "sessions_underwater"])
    starts = under & ~np.concatenate([[False], under[:-1]])
    episode = np.where(under, np.cumsum(starts), 0)
    frame = pd.DataFrame({"row": np.arange(len(eq)), "episode": episode, "gap": eq - peak,
                          "depth": eq / peak - 1.0})[under]
    grouped = frame.groupby("episode")
    first, last = grouped["row"].min(), grouped["row"].max()
    trough = frame.loc[grouped["depth"].idxmin()].set_index("episode")
    index = equity.index
    recovered = last.to_numpy() + 1 < len(eq)
    rec_rows = np.where(recovered, last.to_numpy() + 1, -1)
    out = pd.DataFrame({
        # row -1 (a drawdown from the starting capital on the first session) has no peak session
        "peak_session": index.take(first.to_numpy() - 1, allow_fill=True, fill_value=pd.NaT),
        "trough_session": index.take(trough["row"].to_numpy()),
        "recovery_session": index.take(rec_rows, allow_fill=True, fill_value=pd.NaT),
        "depth": trough["depth"].to_numpy(),
        "depth_money": trough["gap"].to_numpy(),
        "sessions_to_trough": trough["row"].to_numpy() - first.to_numpy() + 1,
        "sessions_underwater": np.where(recovered, rec_rows, len(eq)) - first.to_numpy(),
    })
    return out.sort_values("depth", ignore_index=True)


def summarise(run: BacktestRun, run_id: str) -> dict[str, Any]:
    """The ``summary.json`` content of a run (JSON-ready: NaN becomes null).

    Sections: ``run`` (id, name, created), ``data_range``, ``basis`` (sample, costs, in/out of
    sample, stated again in every section), ``performance`` (:func:`pipeline.research.metrics.performance_metrics`
    plus turnover, cost drag, gross Sharpe), ``risk`` (VaR/CVaR, stress replays), ``trades``
    (:func:`pipeline.research.analytics.trade_statistics`, order fill rate and price improvement),
    ``time_analysis`` (annual returns, best/worst month, share of positive months),
    ``attribution`` (net P&L by asset class and, if given, by rule).
    """
    res, start = run.result, run.window_start()
    window = slice(start, None)
    returns = res.returns.loc[window]
    # capital at risk: the fixed number, or each session's compounded capital
    capital = res.capital if res.capital_path is None else res.capital_path.loc[window]
    gross_returns = res.pnl_gross.loc[window].sum(axis=1) / capital
    costs_total = float(res.costs.loc[window].to_numpy().sum())
    borrow_total = float(res.borrow.loc[window].to_numpy().sum())
    gross_total = float(res.pnl_gross.loc[window].to_numpy().sum())
    years = len(returns) / PERIODS_PER_YEAR
    traded = (res.trades.abs() * res.prices.ffill().abs() * run.point_size.reindex(res.prices.columns)).loc[window]
    if res.capital_path is None:
        notional_traded = float(traded.to_numpy(na_value=0.0).sum())
        drag = costs_total + borrow_total
    else:  # in units of each session's capital, then in units of the starting capital
        notional_traded = float(traded.fillna(0.0).sum(axis=1).div(capital).sum()) * res.capital
        drag = float((res.costs.loc[window].sum(axis=1) + res.borrow.loc[window].sum(axis=1)).div(capital).sum()) \
            * res.capital
    basis = {
        "sample": f"{start.date()} .. {returns.index[-1].date()} ({len(returns)} sessions, "
                  f"{res.prices.shape[1]} instruments)",
        "costs": f"net of trading costs ({costs_total:,.0f}) and borrow ({borrow_total:,.0f}), base currency; "
                 f"{_pct(costs_total + borrow_total, abs(gross_total))} of |gross P&L|",
        "in_or_out_of_sample": run.sample,
        "capital": res.capital_label(),
        "note": run.sample_note,
    }
    # fixed capital: the headline level statistics are the drawn equity curve's (capital + cumsum(pnl));
    # compounding: the capital at risk grows with the returns, so they compound
    perf = performance_metrics(returns, vol_target=run.vol_target, compounded=res.capital_path is not None)
    perf.update({
        "gross_sharpe": performance_metrics(gross_returns)["sharpe"],
        "annual_turnover": notional_traded / res.capital / years if years else math.nan,
        "annual_cost_drag": drag / res.capital / years if years else math.nan,
        "pnl_gross": gross_total,
        "costs": costs_total,
        "borrow": borrow_total,
        "pnl_net": float(returns.sum() * res.capital) if res.capital_path is None
        else float(res.portfolio_pnl.loc[window].sum()),
    })
    risk = var_cvar(returns) if returns.notna().sum() > 1 else pd.DataFrame()
    # replay only the windows the price history covers (a short history has no 2008)
    first, last = res.prices.index[0], res.prices.index[-1]
    windows = {k: w for k, w in STRESS_WINDOWS.items() if first < pd.Timestamp(w[0]) and pd.Timestamp(w[1]) <= last}
    stress = (stress_test(res.holdings.iloc[-1], res.prices, run.point_size, windows=windows).summary
              if windows else pd.DataFrame())
    trades = reconstruct_trades(res.holdings, res.fill_prices.combine_first(res.prices), run.point_size,
                                pnl=res.pnl_gross)
    months = monthly_returns(returns)
    flat = months.stack().dropna()
    yearly = returns.groupby(returns.index.year).sum()
    by = attribution(res, run.asset_classes)
    summary = {
        "run": {"id": run_id, "name": run.name, "created_utc": datetime.now(UTC).isoformat(timespec="seconds")},
        "data_range": {
            "first_session": str(res.prices.index[0].date()),
            "last_session": str(res.prices.index[-1].date()),
            "reported_from": str(start.date()),
            "sessions": len(res.prices),
            "instruments": list(map(str, res.prices.columns)),
        },
        "basis": basis,
        "performance": {"basis": basis, "values": perf},
        "risk": {
            "basis": basis,
            "var_cvar": {f"{lv:.2f}": row for lv, row in risk.to_dict(orient="index").items()},
            "stress_on_last_positions": _records(stress.reset_index()) if len(stress) else [],
        },
        "trades": {"basis": basis, "values": trade_statistics(trades), "orders": res.order_summary(),
                   "circuit_breaker": _records(res.circuit_breaker.loc[res.circuit_breaker["session"] >= start])},
        "time_analysis": {
            "basis": basis,
            "annual_returns": {str(y): v for y, v in yearly.items()},
            "best_month": float(flat.max()) if len(flat) else math.nan,
            "worst_month": float(flat.min()) if len(flat) else math.nan,
            "positive_months": float((flat > 0).mean()) if len(flat) else math.nan,
            "max_drawdown_sessions": perf["max_drawdown_duration"],
        },
        "attribution": {
            "basis": {**basis, "sample": f"{res.prices.index[0].date()} .. {res.prices.index[-1].date()} "
                                         f"({len(res.prices)} sessions, warm-up included)"},
            "net_by_asset_class": by["by_asset_class"]["net"].to_dict(),
            "net_by_instrument": by["by_instrument"]["net"].to_dict(),
            "by_rule": (run.rule_attribution["summary"].to_dict(orient="index")
                        if run.rule_attribution is not None else {}),
        },
    }
    if run.excluded_instruments is not None:  # one record per (instrument, reason): short_history, cost_per_trade,
        summary["excluded_instruments"] = _records(run.excluded_instruments)  # stale_guard
    if run.folds is not None:
        fitted = run.parameters.get("walk_forward", {})
        summary["walk_forward"] = {
            "basis": {**basis, "note": "each fold's statistics are its test window's slice of the one stitched "
                                       "out-of-sample account; its parameters were fitted on its training window only"},
            "fitted_in_sample": fitted.get("fitted_in_sample"),
            "as_configured": fitted.get("as_configured"),
            # instrument weights per fold are in "fitted" (and folds.csv), not repeated here
            "folds": _records(run.folds.loc[:, ~run.folds.columns.str.startswith("instrument_weight:")].reset_index()),
            "fitted": fitted.get("fitted", []),
        }
    return _json_ready(summary)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def write_results(run: BacktestRun, root: str | Path, when: datetime | None = None) -> Path:
    """Write a run's results folder ``{root}/{YYYYmmdd-HHMMSS}_{name}/`` and return its path.

    Parameters
    ----------
    run : BacktestRun
    root : str or Path
        Parent folder (created if needed), e.g. ``results/backtests``.
    when : datetime, optional
        Timestamp of the folder name (UTC now by default); a second run in the same second gets
        a ``-2``, ``-3`` ... suffix rather than overwriting.

    Returns
    -------
    Path
        The folder, holding every file of :data:`RESULT_FILES`.

    Raises
    ------
    ResultsError
        ``name`` has no letter or digit, or the folder cannot be created.
    """
    from pipeline.research.tearsheet import report_html

    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", run.name).strip("-")
    if not slug:
        raise ResultsError(f"write_results: run name {run.name!r} has no letter or digit to name a folder")
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    base = Path(root)
    folder, k = base / f"{stamp}_{slug}", 1
    while folder.exists():
        k += 1
        folder = base / f"{stamp}_{slug}-{k}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise ResultsError(f"write_results: cannot create {folder}: {exc}") from exc

    res, start = run.result, run.window_start()
    (folder / "parameters.json").write_text(json.dumps(_json_ready(run.parameters), indent=2))
    trades = reconstruct_trades(res.holdings, res.fill_prices.combine_first(res.prices), run.point_size,
                                pnl=res.pnl_gross)
    trades.to_csv(folder / "trades.csv", index=False)
    curve = pd.DataFrame({"equity": res.equity, "drawdown": res.drawdown, "returns": res.returns}).loc[start:]
    if res.capital_path is not None:
        curve["capital"] = res.capital_path.loc[start:]
    curve.rename_axis("session").to_csv(folder / "equity_curve.csv")
    daily = res.to_long_instruments()
    daily[daily["session"] >= start].to_csv(folder / "daily_pnl.csv", index=False)
    drawdown_periods(res.equity.loc[start:], res.capital).to_csv(folder / "drawdowns.csv", index=False)
    if run.folds is not None:
        run.folds.to_csv(folder / "folds.csv")
    summary = summarise(run, folder.name)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    (folder / "report.html").write_text(report_html(run, summary, trades), encoding="utf-8")
    return folder


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Put several results folders side by side in one self-contained ``compare.html``.

    Parameters
    ----------
    run_dirs : sequence of folders written by :func:`write_results` (at least one).
    out : str or Path
        The HTML file to write, or a folder (then ``out/compare.html``).

    Returns
    -------
    Path
        The HTML file: key statistics of every run in one table (each with its sample, costs
        and in/out-of-sample basis), overlaid equity curves (cumulative return), drawdowns and
        rolling Sharpe ratios.

    Raises
    ------
    ResultsError
        No folder given, or a folder lacks ``summary.json`` or ``equity_curve.csv``.
    """
    from pipeline.research.tearsheet import comparison_html

    if not run_dirs:
        raise ResultsError("write_comparison: give at least one results folder")
    runs = []
    for d in map(Path, run_dirs):
        for name in ("summary.json", "equity_curve.csv"):
            if not (d / name).is_file():
                raise ResultsError(f"write_comparison: {d} has no {name}; is it a backtest results folder?")
        curve = pd.read_csv(d / "equity_curve.csv", index_col="session", parse_dates=["session"])
        runs.append((json.loads((d / "summary.json").read_text()), curve))
    target = Path(out)
    if target.suffix.lower() != ".html":
        target = target / "compare.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(comparison_html(runs), encoding="utf-8")
    return target


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(r) for r in frame.to_dict(orient="records")]


def _json_ready(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, timestamps -> ISO strings, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime):
        if pd.isna(value):
            return None
        midnight = value.hour == value.minute == value.second == value.microsecond == 0 and value.tzinfo is None
        return value.date().isoformat() if midnight else value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT:
        return None
    return value
