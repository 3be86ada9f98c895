"""Build the bundled real sample, ``pipeline/data/sample_bars.parquet``, from two PyPI packages.

Run once, from the project root, after ``pip install -e '.[sample-build]'``::

    python scripts/build_sample_data.py

Sources (price tables the packages ship in their wheels; licences allow redistribution):

- skfolio 1.12.2 (BSD-3-Clause): ``load_sp500_dataset`` (20 US stocks), ``load_sp500_index``
  (S&P 500, symbol SPX), ``load_factors_dataset`` (5 factor ETFs). Daily adjusted close only,
  so open/high/low/volume are NaN.
- arch 8.0.0 (NCSA): ``arch.data.sp500`` (symbol GSPC) and ``arch.data.nasdaq`` (IXIC), daily
  OHLCV; we take ``Close`` (not ``Adj Close``: the two are identical for these price indices and
  ``Close`` is consistent with Open/High/Low). ``arch.data.wti`` (FRED series DCOILWTICO, symbol
  WTI), close only; FRED's missing observations (holidays) are dropped, not stored as bars, and
  counted in the summary.

The output is deterministic (sorted, no timestamps written) so a rebuild with the same package
versions gives the same rows. Prices stay float64.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_bars.parquet"
EXPECTED_VERSIONS = {"skfolio": "1.12.2", "arch": "8.0.0"}
VALUE_COLUMNS = ["open", "high", "low", "close", "volume"]
COLUMNS = ["session", "instrument", *VALUE_COLUMNS, "source_dataset"]


def _close_only(
    wide: pd.DataFrame, dataset: str, rename: dict[str, str] | None = None
) -> pd.DataFrame:
    """Wide closes (index dates, columns symbols) -> long bars, NaN open/high/low/volume."""
    wide = wide.rename(columns=rename or {})
    long = wide.rename_axis(index="session", columns="instrument").stack().rename("close")
    out = long.reset_index()
    for col in ("open", "high", "low", "volume"):
        out[col] = np.nan
    out["source_dataset"] = dataset
    return out


def _ohlcv(frame: pd.DataFrame, symbol: str, dataset: str) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "session": frame.index,
            "instrument": symbol,
            "open": frame["Open"].to_numpy(dtype="float64"),
            "high": frame["High"].to_numpy(dtype="float64"),
            "low": frame["Low"].to_numpy(dtype="float64"),
            "close": frame["Close"].to_numpy(dtype="float64"),
            "volume": frame["Volume"].to_numpy(dtype="float64"),
            "source_dataset": dataset,
        }
    )
    return out


def build() -> tuple[pd.DataFrame, dict[str, int]]:
    """Load every dataset and return the long bar frame plus counts of dropped rows."""
    import arch.data.nasdaq
    import arch.data.sp500
    import arch.data.wti
    from skfolio.datasets import (
        load_factors_dataset,
        load_sp500_dataset,
        load_sp500_index,
    )

    parts = [
        _close_only(load_sp500_dataset(), "skfolio.load_sp500_dataset"),
        _close_only(load_sp500_index(), "skfolio.load_sp500_index", {"SP500": "SPX"}),
        _close_only(load_factors_dataset(), "skfolio.load_factors_dataset"),
        _ohlcv(arch.data.sp500.load(), "GSPC", "arch.data.sp500"),
        _ohlcv(arch.data.nasdaq.load(), "IXIC", "arch.data.nasdaq"),
    ]
    wti = _close_only(arch.data.wti.load(), "arch.data.wti", {"DCOILWTICO": "WTI"})
    dropped = {"WTI (FRED missing observations)": int(wti["close"].isna().sum())}
    parts.append(wti[wti["close"].notna()])
    # skfolio's frames are complete, but a NaN close from any source is "no observation".
    for p in parts[:-1]:
        if p["close"].isna().any():
            raise SystemExit(f"unexpected missing closes in {p['source_dataset'].iloc[0]}")

    bars = pd.concat(parts, ignore_index=True)[COLUMNS]
    bars["session"] = pd.to_datetime(bars["session"]).astype("datetime64[us]")
    if (bars["session"] != bars["session"].dt.normalize()).any():
        raise SystemExit("a session is not a midnight date")
    bars["instrument"] = bars["instrument"].astype("str")
    bars["source_dataset"] = bars["source_dataset"].astype("str")
    for col in ("open", "high", "low", "close", "volume"):
        bars[col] = bars[col].astype("float64")
    bars = bars.sort_values(["instrument", "session"], ignore_index=True)
    if bars.duplicated(["instrument", "session"]).any():
        raise SystemExit("duplicate (instrument, session) rows across datasets")
    return bars, dropped


def write(bars: pd.DataFrame, path: Path = OUT) -> None:
    schema = pa.schema(
        [
            pa.field("session", pa.timestamp("us"), nullable=False),
            pa.field("instrument", pa.string(), nullable=False),
            *[pa.field(c, pa.float64()) for c in ("open", "high", "low", "close", "volume")],
            pa.field("source_dataset", pa.string(), nullable=False),
        ]
    )
    table = pa.Table.from_pandas(bars, schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(None)  # no pandas metadata: the bytes depend on data only
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(
        table,
        tmp,
        compression="zstd",
        compression_level=19,
        use_dictionary=["instrument", "source_dataset"],
        # byte-stream-split makes float64 prices compress ~2x better under zstd
        column_encoding={c: "BYTE_STREAM_SPLIT" for c in VALUE_COLUMNS},
        row_group_size=1_000_000,
    )
    tmp.replace(path)


def summary(bars: pd.DataFrame, dropped: dict[str, int], path: Path = OUT) -> str:
    g = bars.groupby(["source_dataset", "instrument"], sort=True)["session"]
    table = g.agg(first="min", last="max", rows="size").reset_index()
    lines = [
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB), {len(bars):,} rows, "
        f"{bars['instrument'].nunique()} instruments",
        f"package versions: skfolio {version('skfolio')}, arch {version('arch')}",
        *(f"dropped {n} rows: {what}" for what, n in dropped.items()),
        table.to_string(index=False),
    ]
    return "\n".join(lines)


def main() -> int:
    for pkg, want in EXPECTED_VERSIONS.items():
        got = version(pkg)
        if got != want:
            print(f"warning: {pkg} {got} installed, the README documents {want}", file=sys.stderr)
    bars, dropped = build()
    write(bars)
    print(summary(bars, dropped))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
