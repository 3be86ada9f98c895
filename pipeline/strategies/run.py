"""A configured run of the stop-and-target strategy: bars, quality rules, backtest, results folder.

:func:`run_strategy_backtest` reads the configured source's daily bars, passes them through the
production quality rules (:func:`pipeline.quality.rules.validate_bars`: quarantined and flagged bars
are absent from the clean bars, so from the ATR, the signal and the fills), computes Wilder's ATR and
the entry state over the whole history (warm-up included), simulates ``start .. end``
(:func:`pipeline.strategies.backtest.simulate_stop_target`) and writes ``{out}/{timestamp}_{name}/``:

=====================  ==================================================================
``summary.json``        run, data range, basis (sample, costs, in sample), conventions,
                        performance, trade statistics, time analysis, daily loss limit,
                        data quality (bars quarantined or flagged)
``parameters.json``     the strategy and the instruments' contract facts and costs
``trades.csv``          one row per round trip (:data:`~pipeline.strategies.backtest.TRADE_COLUMNS`)
``daily.csv``           per session and instrument: position, net P&L, costs
``equity_curve.csv``    per session: pnl, costs, equity, returns, drawdown, loss_limit_hit,
                        entries_blocked
``report.html``         equity and drawdown, P&L by weekday, statistics, the trade table
=====================  ==================================================================
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.adapters.sources import make_source
from pipeline.config import PipelineConfig
from pipeline.quality.rules import validate_bars
from pipeline.research.plots import bar_png, equity_drawdown_png
from pipeline.signals.volatility import robust_vol
from pipeline.strategies.atr import wilder_atr
from pipeline.strategies.backtest import (
    StopTargetResult,
    simulate_stop_target,
    summarise_stop_target,
)
from pipeline.strategies.config import StopTargetStrategy, StrategyConfigError
from pipeline.strategies.entries import entry_state

__all__ = ["CONVENTIONS", "StrategyRun", "run_strategy_backtest", "strategy_bars", "write_strategy_results"]

#: The fill conventions, stated in every summary.json (see :mod:`pipeline.strategies.backtest`).
CONVENTIONS = {
    "signal": "entry state known at the close of session t; entries and signal/time exits fill at the next bar's open",
    "stops": "stops and targets trigger on the bar's high/low and fill at their price, or at the open when the "
             "market gaps through; stop and target both inside one bar: the stop fills first (conservative)",
    "trailing": "trailing stop updated from each close, moves only in the position's favour",
    "re_entry": "after a stop, trailing stop, take-profit or time stop, no entry in that direction until the "
                "signal changes",
    "daily_loss_limit": "after a session whose net P&L is below -limit x the previous equity, no entry at the next open",
    "costs": "commission and slippage per contract from the instrument's cost model, charged per fill",
    "open_trade": "a trade open at the end is marked at the last close (exit_reason end_of_data, no exit cost)",
}


@dataclass(frozen=True)
class StrategyRun:
    """A finished run: its result, summary and the folder written."""

    result: StopTargetResult
    summary: dict[str, Any]
    folder: Path


def strategy_bars(cfg: PipelineConfig, end: str | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Clean daily bars of the universe as wide panels, through the production quality rules.

    Parameters
    ----------
    cfg : PipelineConfig
        ``source``, ``instruments`` (calendar, back_adjusted, asset_class), ``quality``, ``history_start``.
    end : str, optional
        Last session (YYYY-MM-DD); default the source's latest.

    Returns
    -------
    (panels, quality)
        ``panels``: ``open``, ``high``, ``low``, ``close``, each index ``session`` (every session with a clean
        bar of any instrument), columns ``cfg.symbols``, price points, NaN where no clean bar. ``quality``:
        rows quarantined and flagged (held out of the clean bars), per rule.

    Raises
    ------
    pipeline.bars.SourceError
        The source cannot be read or holds none of the instruments.
    StrategyConfigError
        No clean bar at all, or no clean bar with a high and a low (the stops need them).
    """
    source = make_source(cfg.source, cfg.instruments)
    last = pd.Timestamp(end) if end else source.last_session(cfg.symbols)
    if last is None:
        raise StrategyConfigError(f"source {cfg.source.kind!r} has no bars for {cfg.symbols}")
    raw = source.fetch(cfg.symbols, pd.Timestamp(cfg.history_start), last)
    checked = validate_bars(raw, cfg.quality, back_adjusted={i.symbol for i in cfg.instruments if i.back_adjusted},
                            calendars={i.symbol: i.calendar for i in cfg.instruments},
                            peers={i.symbol: i.asset_class for i in cfg.instruments})
    clean = checked.clean
    if clean.empty:
        raise StrategyConfigError(f"no clean bar for {cfg.symbols} up to {last.date()} (source {cfg.source.kind})")
    panels = {f: clean.pivot(index="session", columns="instrument", values=f).reindex(columns=cfg.symbols)
              .rename_axis(index="session", columns=None) for f in ("open", "high", "low", "close")}
    no_range = [s for s in cfg.symbols if panels["high"][s].notna().sum() == 0 or panels["low"][s].notna().sum() == 0]
    if no_range:
        raise StrategyConfigError(f"instruments {no_range} have no bar with a high and a low: the stop_target "
                                  "strategy needs open, high, low and close (source.path files with those columns)")
    flagged = checked.warnings[checked.warnings["rule"] == "price_spike"]
    held_out = pd.concat([checked.quarantine["rule"], flagged["rule"]]).value_counts()
    return panels, {str(k): int(v) for k, v in held_out.items()}


def run_strategy_backtest(
    cfg: PipelineConfig, strategy: StopTargetStrategy, out: str | Path, start: str | None = None,
    end: str | None = None, name: str | None = None,
) -> StrategyRun:
    """Backtest the configured stop-and-target strategy and write its results folder.

    Parameters
    ----------
    cfg : PipelineConfig
        The universe (point size, cost model, currency), the source, the quality rules and
        ``portfolio.capital`` (the starting equity).
    strategy : StopTargetStrategy
        From :func:`pipeline.strategies.config.strategy_config`.
    out : str or Path
        Parent folder of the results folder.
    start, end : str, optional
        First and last session simulated (YYYY-MM-DD); the ATR, EMAs and vol warm up on the bars before
        ``start``. Default: the first and the last clean session.
    name : str, optional
        Results folder name (default ``strategy.name``).

    Returns
    -------
    StrategyRun

    Raises
    ------
    StrategyConfigError
        An instrument priced in another currency than ``portfolio.base_currency`` (no FX conversion in
        this strategy kind yet), an external entry rule (not built), no clean bars, or no session in
        ``start .. end``.
    pipeline.bars.SourceError
        The source cannot be read.
    """
    foreign = [i.symbol for i in cfg.instruments if i.currency != cfg.portfolio.base_currency]
    if foreign:
        raise StrategyConfigError(f"instruments {foreign} are not priced in {cfg.portfolio.base_currency}: the "
                                  "stop_target strategy kind has no FX conversion yet")
    panels, quality = strategy_bars(cfg, end)
    close = panels["close"]
    state = entry_state(close, strategy.entry)
    atr = wilder_atr(panels["high"], panels["low"], close, strategy.atr_period)
    vol = robust_vol(close, span=strategy.sizing.vol_span) if strategy.sizing.kind == "vol_target" else None
    window = slice(pd.Timestamp(start) if start else None, pd.Timestamp(end) if end else None)
    cut = {k: v.loc[window] for k, v in {**panels, "state": state, "atr": atr}.items()}
    if cut["close"].empty:
        raise StrategyConfigError(f"no clean session in {start or 'the first'} .. {end or 'the last'}")
    point_size = pd.Series({i.symbol: i.point_size for i in cfg.instruments}, dtype=float)
    result = simulate_stop_target(
        cut["open"], cut["high"], cut["low"], cut["close"], cut["state"], cut["atr"], strategy, point_size,
        {i.symbol: i.costs for i in cfg.instruments}, cfg.portfolio.capital,
        daily_vol=vol.loc[window] if vol is not None else None)
    summary = _summary(cfg, strategy, result, quality, name or strategy.name, first_bar=close.index[0])
    folder = write_strategy_results(cfg, strategy, result, summary, out, name or strategy.name)
    return StrategyRun(result, summary, folder)


def _summary(cfg: PipelineConfig, strategy: StopTargetStrategy, result: StopTargetResult, quality: dict[str, int],
             name: str, first_bar: pd.Timestamp) -> dict[str, Any]:
    sessions = result.account.index
    stats = summarise_stop_target(result)
    basis = {
        "sample": f"{sessions[0].date()} .. {sessions[-1].date()} ({len(sessions)} sessions, "
                  f"{len(cfg.symbols)} instruments)",
        "costs": f"net of commission and slippage ({stats['performance']['costs']:,.2f} {cfg.portfolio.base_currency})",
        "in_or_out_of_sample": "in sample (fixed parameters, no fitting)",
        "capital": f"starting equity {result.capital:,.0f} {cfg.portfolio.base_currency}, compounding "
                   "(sizes follow the equity)",
    }
    return {
        "run": {"name": name, "kind": "stop_target", "order_ref_prefix": strategy.order_ref_prefix,
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds")},
        "data_range": {"first_bar": str(first_bar.date()), "first_session": str(sessions[0].date()),
                       "last_session": str(sessions[-1].date()), "sessions": len(sessions),
                       "instruments": list(cfg.symbols)},
        "basis": basis,
        "conventions": CONVENTIONS,
        "performance": {"basis": basis, "values": stats["performance"]},
        "trades": {"basis": basis, "values": stats["trades"]},
        "time_analysis": {"basis": basis, **stats["time_analysis"]},
        "daily_loss_limit": {"limit": strategy.daily_loss_limit, **stats["daily_loss_limit"]},
        "data_quality": {"held_out_of_clean_bars_by_rule": quality},
    }


def write_strategy_results(cfg: PipelineConfig, strategy: StopTargetStrategy, result: StopTargetResult,
                           summary: dict[str, Any], out: str | Path, name: str) -> Path:
    """Write the results folder ``{out}/{YYYYmmdd-HHMMSS}_{name}/`` (files: module docstring); return it.

    A second run in the same second gets a ``-2``, ``-3`` ... suffix.

    Raises
    ------
    StrategyConfigError
        The folder cannot be created (the path named).
    """
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "stop_target"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder, k = Path(out) / f"{stamp}_{slug}", 1
    while folder.exists():
        k += 1
        folder = Path(out) / f"{stamp}_{slug}-{k}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise StrategyConfigError(f"cannot create the results folder {folder}: {exc}") from exc
    parameters = {"strategy": strategy.model_dump(mode="json"), "capital": cfg.portfolio.capital,
                  "instruments": [i.model_dump(mode="json", include={"symbol", "sec_type", "exchange", "currency",
                                                                     "point_size", "calendar", "costs"})
                                  for i in cfg.instruments]}
    (folder / "parameters.json").write_text(json.dumps(parameters, indent=2))
    (folder / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2))
    result.trades.to_csv(folder / "trades.csv", index=False, date_format="%Y-%m-%d")
    result.daily_long().to_csv(folder / "daily.csv", index=False, date_format="%Y-%m-%d")
    result.account.to_csv(folder / "equity_curve.csv", date_format="%Y-%m-%d")
    (folder / "report.html").write_text(report_html(result, summary), encoding="utf-8")
    return folder


def report_html(result: StopTargetResult, summary: dict[str, Any]) -> str:
    """A self-contained HTML report: key figures, equity and drawdown, P&L by weekday, the trade table.

    Parameters
    ----------
    result : StopTargetResult
    summary : dict
        The ``summary.json`` content of the run.

    Returns
    -------
    str
        An HTML document with the figures inlined as PNG (:mod:`pipeline.research.plots`).
    """
    acct = result.account
    name = html.escape(summary["run"]["name"])
    equity = equity_drawdown_png(acct["equity"], acct["drawdown"], f"{summary['run']['name']}: equity and drawdown")
    weekday = bar_png(pd.Series(summary["time_analysis"]["pnl_by_weekday"], dtype=float), "Net P&L by weekday")

    def img(png: bytes) -> str:
        return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">'

    def table(values: dict[str, Any]) -> str:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in values.items() if not isinstance(v, dict | list))
        return f"<table>{rows}</table>"

    trades = result.trades.copy()
    reasons = pd.DataFrame(summary["trades"]["values"]["by_exit_reason"]).T
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Backtest {name}</title>",
        ("<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;font-size:.85em}"
         "td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}th{text-align:left}</style></head><body>"),
        f"<h1>Backtest: {name} (stop and target)</h1>",
        (f"<p>{html.escape(summary['basis']['sample'])}; {html.escape(summary['basis']['costs'])}; "
         f"{html.escape(summary['basis']['in_or_out_of_sample'])}; {html.escape(summary['basis']['capital'])}</p>"),
        img(equity), img(weekday),
        "<h2>Performance</h2>", table(summary["performance"]["values"]),
        "<h2>Trades</h2>", table(summary["trades"]["values"]),
        "<h2>Exits by reason</h2>", reasons.to_html(float_format=lambda v: f"{v:,.2f}") if len(reasons) else "<p>none</p>",
        "<h2>Time analysis</h2>", table(summary["time_analysis"]),
        "<h2>Conventions</h2>", table(summary["conventions"]),
        f"<h2>Trades ({len(trades)})</h2>",
        trades.to_html(index=False, float_format=lambda v: f"{v:,.2f}"),
        "</body></html>",
    ])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:,.4g}" if abs(value) < 10 else f"{value:,.2f}"
    return str(value)


def _json_safe(value: Any) -> Any:
    """Non-finite floats -> None and numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value
