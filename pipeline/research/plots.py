"""Small backtest PNGs for the Dagster asset metadata: equity/drawdown and P&L bars.

The figures are drawn with matplotlib's object API on an Agg canvas (no ``pyplot``), so it is
thread-safe and never changes the process-wide backend of a Dagster worker.
"""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

__all__ = ["bar_png", "equity_drawdown_png"]


def equity_drawdown_png(equity: pd.Series, drawdown: pd.Series, title: str) -> bytes:
    """Two-panel PNG: equity curve on top, drawdown (%) shaded below.

    Parameters
    ----------
    equity : Series
        Account value in base currency, index ``session``.
    drawdown : Series
        Fractional drawdown (<= 0, e.g. ``-0.1`` = -10 %), index ``session``; plotted in %.
    title : str
        Figure title.

    Returns
    -------
    bytes
        A PNG image, 8 x 5 inches at 80 dpi (640 x 400 pixels), typically a few tens of kB.
        NaN values leave gaps; empty series give empty axes (no error).
    """
    fig = Figure(figsize=(8, 5), dpi=80)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.plot(equity.index, equity.to_numpy(dtype=float), color="tab:blue", linewidth=1.0)
    top.set_ylabel("equity")
    top.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    top.grid(alpha=0.3)
    top.set_title(title)
    dd = drawdown.to_numpy(dtype=float) * 100.0
    bottom.fill_between(drawdown.index, dd, 0.0, color="tab:red", alpha=0.4, linewidth=0)
    bottom.plot(drawdown.index, dd, color="tab:red", linewidth=0.6)
    bottom.set_ylabel("drawdown (%)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def bar_png(values: pd.Series, title: str, xlabel: str = "net P&L (base currency)") -> bytes:
    """Horizontal bar chart PNG of one value per label (e.g. P&L by rule), sorted, gains green.

    Parameters
    ----------
    values : Series
        Index labels (rules, instruments, asset classes), float values; NaN drawn as 0.
    title, xlabel : str

    Returns
    -------
    bytes
        A PNG image, 6 inches wide at 80 dpi (480 pixels), 0.25 inch per bar (at least 2.5
        inches high).
    """
    s = pd.Series(values, dtype=float).fillna(0.0).sort_values()
    fig = Figure(figsize=(6, max(2.5, 0.25 * len(s) + 1.0)), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh([str(i) for i in s.index], s.to_numpy(), color=["tab:green" if v >= 0 else "tab:red" for v in s])
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()
