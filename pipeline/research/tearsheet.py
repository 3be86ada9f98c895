"""Self-contained interactive HTML reports of backtests (plotly, with plotly.js inline).

:func:`report_html` renders one run: key statistics, equity with drawdown, monthly returns
heatmap, rolling Sharpe, return distribution, trade P&L distribution, gross exposure by asset
class and P&L attribution by instrument, asset class and trading rule. :func:`comparison_html`
renders several runs side by side. plotly.js is embedded once per page, so the file opens
offline, with no request to any server.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipeline.research.analytics import rolling_sharpe

__all__ = ["comparison_html", "report_html"]

_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 40}, "height": 380}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
.basis{color:#555;font-size:.9em;margin:6px 0 14px}.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px}
table{border-collapse:collapse;font-size:.88em;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:right}th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#f6f8fa;border-radius:6px;padding:8px 14px}
.card b{display:block;font-size:1.25em}
"""

#: Turnover is notional traded / capital a year: a count of times, not a percentage (63.3x, not 6331%).
_TIMES = {"annual_turnover"}
_PERCENT = {"total_return", "cagr", "annual_return", "annual_vol", "max_drawdown", "win_rate",
            "annual_cost_drag", "fill_rate", "best_month", "worst_month",
            "positive_months", "historical_var", "historical_cvar", "parametric_var", "parametric_cvar"}


def report_html(run, summary: Mapping[str, Any], trades: pd.DataFrame) -> str:
    """The HTML report of one backtest run.

    Parameters
    ----------
    run : pipeline.research.results.BacktestRun
    summary : mapping
        Output of :func:`pipeline.research.results.summarise` for ``run``.
    trades : DataFrame
        Round-trip trades (:func:`pipeline.research.analytics.reconstruct_trades`).

    Returns
    -------
    str
        A complete HTML document (about 5 MB, most of it plotly.js), no external resources.
    """
    res, start = run.result, run.window_start()
    returns = res.returns.loc[start:]
    perf = summary["performance"]["values"]
    cards = "".join(
        f'<div class="card">{html.escape(k)}<b>{_fmt(k, perf.get(k))}</b></div>'
        for k in ("cagr", "sharpe", "sortino", "annual_vol", "max_drawdown", "calmar", "realised_vol_vs_target")
    )
    figures = [
        ("Equity and drawdown", _equity_figure(res.equity.loc[start:], res.drawdown.loc[start:])),
        ("Monthly returns (% of capital)", _monthly_figure(returns)),
        ("Rolling Sharpe ratio (256 sessions)", _lines_figure({"rolling Sharpe": rolling_sharpe(returns)}, "Sharpe")),
        ("Daily return distribution", _histogram(returns * 100.0, "daily return (%)")),
        ("Trade P&L distribution (closed and open trades)", _histogram(trades["pnl"], "trade P&L (base currency)")),
        ("Gross exposure by asset class (% of capital)", _exposure_figure(run, start)),
        ("P&L attribution", _attribution_figure(summary["attribution"])),
    ]
    if getattr(run, "frontier", None) is not None:
        f = run.frontier
        title = (f"Efficient frontier, instrument-weight window ending {f.estimated_at:%Y-%m-%d} "
                 f"(annualised, positions at 100% vol; {f.constraints})")
        figures.append((title, _frontier_figure(f)))
    tables = [
        ("Performance", _kv_table(perf)),
        ("Trades and orders", _kv_table({**summary["trades"]["values"], **summary["trades"]["orders"]})),
        ("Value at risk (one session, fraction of capital)", _frame_table(summary["risk"]["var_cvar"])),
        ("Time analysis", _kv_table({k: v for k, v in summary["time_analysis"].items()
                                     if k not in ("basis", "annual_returns")})),
        ("Annual returns", _kv_table(summary["time_analysis"]["annual_returns"], percent=True)),
    ]
    if summary["risk"]["stress_on_last_positions"]:
        stress = {r["window"]: {k: v for k, v in r.items() if k != "window"}
                  for r in summary["risk"]["stress_on_last_positions"]}
        tables.append(("Stress replays on the last positions (base currency)", _frame_table(stress)))
    if summary["trades"].get("circuit_breaker"):
        trips = {str(r["session"]): {k: v for k, v in r.items() if k != "session"}
                 for r in summary["trades"]["circuit_breaker"]}
        tables.append(("Daily-loss circuit breaker trips (next session's orders denied)", _frame_table(trips)))
    if "walk_forward" in summary:
        keys = ("train_start", "train_end", "test_start", "test_end", "n_test", "pnl_net", "sharpe", "total_return",
                "breaker_trips", "forecast_weights_source", "fdm", "idm", "n_instruments")
        folds = {str(r["fold"]): {k: r.get(k) for k in keys} for r in summary["walk_forward"]["folds"]}
        fitted = ", ".join(summary["walk_forward"].get("fitted_in_sample") or [])
        tables.append((f"Walk-forward folds (out-of-sample test windows; fitted on the training window: {fitted})",
                       _frame_table(folds)))
    if summary["attribution"]["by_rule"]:
        tables.append(("Each rule traded alone", _frame_table(summary["attribution"]["by_rule"])))
    if "excluded_instruments" in summary:  # short history, cost per trade, stale-price guard (see summary.json)
        rows = {f"{r['instrument']} ({r['reason']})": {k: v for k, v in r.items() if k not in ("instrument", "reason")}
                for r in summary["excluded_instruments"]}
        tables.append(("Instruments not traded (combined forecast 0) or held by the stale-price guard", _frame_table(rows)))
    body = [f"<h1>Backtest: {html.escape(summary['run']['name'])}</h1>",
            f'<div class="basis">{_basis(summary["basis"])}</div>', f'<div class="cards">{cards}</div>']
    body += _render(figures, tables)
    return _page(f"Backtest {summary['run']['id']}", "\n".join(body))


def comparison_html(runs: Sequence[tuple[Mapping[str, Any], pd.DataFrame]]) -> str:
    """Several backtest runs side by side.

    Parameters
    ----------
    runs : sequence of (summary, equity_curve)
        ``summary.json`` content and ``equity_curve.csv`` (index ``session``; columns
        ``equity``, ``drawdown``, ``returns``) of each run.

    Returns
    -------
    str
        A complete HTML document: a statistics table (one column per run, with each run's
        sample, costs and in/out-of-sample basis), cumulative returns, drawdowns and rolling
        Sharpe ratios overlaid.
    """
    names = _unique([s["run"]["id"] for s, _ in runs])
    keys = ["cagr", "annual_return", "annual_vol", "sharpe", "sortino", "max_drawdown", "calmar",
            "annual_turnover", "annual_cost_drag", "realised_vol_vs_target"]
    rows = {k: {n: s["performance"]["values"].get(k) for n, (s, _) in zip(names, runs)} for k in keys}
    rows["n_trades"] = {n: s["trades"]["values"].get("n_trades") for n, (s, _) in zip(names, runs)}
    rows["sample"] = {n: s["basis"]["sample"] for n, (s, _) in zip(names, runs)}
    rows["in/out of sample"] = {n: s["basis"]["in_or_out_of_sample"] for n, (s, _) in zip(names, runs)}
    rows["costs"] = {n: s["basis"]["costs"] for n, (s, _) in zip(names, runs)}
    rows["capital"] = {n: s["basis"].get("capital", "fixed") for n, (s, _) in zip(names, runs)}
    cum = {n: c["returns"].cumsum() * 100.0 for n, (_, c) in zip(names, runs)}
    dd = {n: c["drawdown"] * 100.0 for n, (_, c) in zip(names, runs)}
    sharpe = {n: rolling_sharpe(c["returns"]) for n, (_, c) in zip(names, runs)}
    figures = [
        ("Cumulative return (sum of daily returns, % of each session's capital)", _lines_figure(cum, "%")),
        ("Drawdown (%)", _lines_figure(dd, "%")),
        ("Rolling Sharpe ratio (256 sessions)", _lines_figure(sharpe, "Sharpe")),
    ]
    table = _frame_table({k: v for k, v in rows.items()}, transpose=False)
    body = [f"<h1>Backtest comparison: {len(runs)} runs</h1>", "<h2>Statistics</h2>", table]
    body += _render(figures, [])
    return _page("Backtest comparison", "\n".join(body))


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _equity_figure(equity: pd.Series, drawdown: pd.Series) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.04)
    fig.add_trace(go.Scatter(x=equity.index, y=equity.to_numpy(), name="equity", line={"width": 1.2}), 1, 1)
    fig.add_trace(go.Scatter(x=drawdown.index, y=drawdown.to_numpy() * 100.0, name="drawdown (%)", fill="tozeroy",
                             line={"width": 0.8, "color": "#d62728"}), 2, 1)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown (%)", row=2, col=1)
    return fig.update_layout(**{**_LAYOUT, "height": 460}, showlegend=False)


def _monthly_figure(returns: pd.Series) -> go.Figure:
    from pipeline.research.analytics import monthly_returns

    table = monthly_returns(returns) * 100.0
    z = table.to_numpy(dtype=float)
    text = np.where(np.isnan(z), "", np.char.mod("%.1f", np.nan_to_num(z)))
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(go.Heatmap(z=z, x=_MONTHS, y=[str(y) for y in table.index], text=text, texttemplate="%{text}",
                               colorscale="RdYlGn", zmid=0, zmin=-bound, zmax=bound, colorbar={"title": "%"}))
    return fig.update_layout(**{**_LAYOUT, "height": max(300, 22 * len(table) + 120)},
                             yaxis={"autorange": "reversed", "type": "category"})


def _lines_figure(series: Mapping[str, pd.Series], unit: str) -> go.Figure:
    fig = go.Figure()
    for name, s in series.items():
        fig.add_trace(go.Scatter(x=s.index, y=s.to_numpy(dtype=float), name=str(name), line={"width": 1.1}))
    return fig.update_layout(**_LAYOUT, yaxis_title=unit)


def _histogram(values: pd.Series, label: str) -> go.Figure:
    fig = go.Figure(go.Histogram(x=pd.Series(values, dtype=float).dropna().to_numpy(), nbinsx=80))
    return fig.update_layout(**_LAYOUT, xaxis_title=label, yaxis_title="count", bargap=0.02)


def _exposure_figure(run, start: pd.Timestamp) -> go.Figure:
    res = run.result
    cols = res.holdings.columns
    notional = (res.holdings * res.prices.ffill() * run.point_size.reindex(cols)).abs().loc[start:]
    classes = pd.Series({c: run.asset_classes.get(c, "other") for c in cols})
    capital = res.capital if res.capital_path is None else res.capital_path.loc[start:]
    by_class = notional.T.groupby(classes).sum().T.div(capital, axis=0) * 100.0
    fig = go.Figure()
    for name in by_class.columns:
        fig.add_trace(go.Scatter(x=by_class.index, y=by_class[name].to_numpy(), name=str(name),
                                 stackgroup="gross", line={"width": 0.5}))
    return fig.update_layout(**_LAYOUT, yaxis_title="% of capital")


def _attribution_figure(attribution: Mapping[str, Any]) -> go.Figure:
    panels = [("by instrument", attribution["net_by_instrument"]), ("by asset class", attribution["net_by_asset_class"])]
    if attribution["by_rule"]:
        panels.append(("by rule (traded alone)", {k: v["net"] for k, v in attribution["by_rule"].items()}))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
    for k, (_, values) in enumerate(panels, start=1):
        s = pd.Series(values, dtype=float).sort_values()
        fig.add_trace(go.Bar(x=s.to_numpy(), y=s.index.astype(str), orientation="h",
                             marker_color=np.where(s.to_numpy() >= 0, "#2ca02c", "#d62728")), 1, k)
    n = max(len(v) for _, v in panels)
    return fig.update_layout(**{**_LAYOUT, "height": max(320, 18 * n + 120)}, showlegend=False)


def _frontier_figure(frontier) -> go.Figure:
    """Mean-variance frontier (line), each instrument (dots) and the marked portfolios (stars), risk
    against return (:class:`pipeline.portfolio.optimisers.EfficientFrontier`)."""
    fig = go.Figure()
    line = frontier.frontier
    fig.add_trace(go.Scatter(x=line["vol"].to_numpy(), y=line["expected_return"].to_numpy(), mode="lines+markers",
                             name="efficient frontier", marker={"size": 4}, line={"width": 1.5}))
    inst = frontier.instruments
    fig.add_trace(go.Scatter(x=inst["vol"].to_numpy(), y=inst["expected_return"].to_numpy(), mode="markers+text",
                             name="instruments", text=[str(i) for i in inst.index], textposition="top center",
                             marker={"size": 7, "color": "#7f7f7f"}))
    for name, row in frontier.portfolios.iterrows():
        fig.add_trace(go.Scatter(x=[row["vol"]], y=[row["expected_return"]], mode="markers", name=str(name),
                                 marker={"size": 14, "symbol": "star"}))
    return fig.update_layout(**_LAYOUT, xaxis_title="annual vol", yaxis_title="annual expected return")


# --------------------------------------------------------------------------------------------
# HTML pieces
# --------------------------------------------------------------------------------------------


def _render(figures, tables) -> list[str]:
    out, first = [], True
    for title, fig in figures:
        out.append(f"<h2>{html.escape(title)}</h2>")
        out.append(fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False}))
        first = False
    if tables:
        out.append('<h2>Tables</h2><div class="grid">')
        out += [f"<div><h3>{html.escape(t)}</h3>{body}</div>" for t, body in tables]
        out.append("</div>")
    return out


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _basis(basis: Mapping[str, Any]) -> str:
    parts = [f"<b>Sample</b> {html.escape(str(basis['sample']))}",
             f"<b>Costs</b> {html.escape(str(basis['costs']))}",
             f"<b>{html.escape(str(basis['in_or_out_of_sample']))}</b>"]
    if basis.get("capital"):
        parts.append(f"<b>Capital</b> {html.escape(str(basis['capital']))}")
    if basis.get("note"):
        parts.append(html.escape(str(basis["note"])))
    return " &middot; ".join(parts)


def _fmt(key: str, value: Any, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, str):
        return html.escape(value)
    if key in _TIMES:
        return f"{value:.1f}x a year"
    if percent or key in _PERCENT:
        return f"{100.0 * value:.2f}%"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _kv_table(values: Mapping[str, Any], percent: bool = False) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(str(k), v, percent)}</td></tr>"
                   for k, v in values.items())
    return f"<table><tr><th>statistic</th><th>value</th></tr>{rows}</table>"


def _frame_table(rows: Mapping[str, Mapping[str, Any]], transpose: bool = False) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td>" + "".join(f"<td>{_fmt(str(c) if c in _PERCENT else str(k), r.get(c))}</td>" for c in cols) + "</tr>"
        for k, r in rows.items()
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out
