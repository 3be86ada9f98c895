"""Backtest report pieces: an equity/drawdown PNG and a Markdown metrics table.

The figure is drawn with matplotlib's object API on an Agg canvas (no ``pyplot``), so it is
thread-safe and never changes the process-wide backend of a Dagster worker.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

__all__ = ["equity_drawdown_png", "metrics_markdown"]

#: Metrics shown as percentages by :func:`metrics_markdown`; the others as plain numbers.
_PERCENT_KEYS = frozenset(
    {"total_return", "cagr", "annual_return", "annual_vol", "max_drawdown", "win_rate"}
)


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


def metrics_markdown(metrics: Mapping[str, float]) -> str:
    """Render performance metrics as a two-column Markdown table.

    Parameters
    ----------
    metrics : mapping of str -> float
        E.g. the output of :func:`pipeline.metrics.performance_metrics`, in display order.

    Returns
    -------
    str
        ``| metric | value |`` table; fractions in ``_PERCENT_KEYS`` are shown in % with two
        decimals, durations as whole sessions, other numbers with three decimals, NaN as ``n/a``.
    """
    lines = ["| metric | value |", "|---|---|"]
    for name, value in metrics.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            text = "n/a"
        elif name in _PERCENT_KEYS:
            text = f"{100.0 * value:.2f} %"
        elif name.endswith("duration"):
            text = f"{value:.0f} sessions"
        else:
            text = f"{value:.3f}"
        lines.append(f"| {name} | {text} |")
    return "\n".join(lines) + "\n"
