"""Markdown renderings of small frames for asset metadata (the UI shows them as tables)."""


import pandas as pd


def frame_md(df: pd.DataFrame, limit: int = 30, floatfmt: str = "{:.4g}", index: bool = False) -> str:
    """A Markdown table of the first ``limit`` rows of ``df`` ("_none_" when empty)."""
    if df.empty:
        return "_none_"
    shown = df.head(limit)
    if index:
        shown = shown.reset_index()
    cells = shown.map(lambda v: floatfmt.format(v) if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(map(str, cells.columns)) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    if len(df) > limit:
        lines.append(f"\n... and {len(df) - limit} more rows")
    return "\n".join(lines)
