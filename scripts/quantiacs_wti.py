"""Real WTI crude bars for examples/mcl_ema_atr.yaml, from the shared Quantiacs futures set (not bundled).

    python scripts/quantiacs_wti.py OUT [--data PATH]
    trading-pipeline backtest --config OUT/mcl_ema_atr.yaml --out OUT/results

Reads ``F_CL`` (NYMEX WTI front contract, 1990-2021) from ``futures_quantiacs_88.parquet`` (``--data``;
default ``$TRADING_SHARED_DATA/futures_quantiacs_88.parquet``, else ``../shared/data/...`` from the
working directory) and writes ``OUT/bars/MCL.csv`` (date, open, high, low, close, volume) and
``OUT/mcl_ema_atr.yaml`` (the example pointed at it, ``back_adjusted: true``, history from 1990).

The set's prices are dollars per 1,000-barrel contract and are **not** back-adjusted: a roll row (the
first bar of the new contract) carries ``RINFO``, the new contract's price minus the old one's. It has no
contract ids per row, so :func:`pipeline.futures.adjusted.panama_stitch` (which measures each gap from
multiple prices) cannot run; the same additive Panama rule is applied with the vendor's gaps: every bar
before a roll is shifted by that roll's gap (open, high, low and close alike), anchored at the last
contract. Then prices are divided by 1,000 ($/bbl), the price unit of MCL (point size 100: 100 barrels).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mcl_ema_atr.yaml"
#: Dollars per contract -> dollars per barrel (the CL contract is 1,000 barrels).
BARRELS_PER_CL = 1000.0


def default_data() -> Path:
    """``$TRADING_SHARED_DATA/futures_quantiacs_88.parquet``, else ``../shared/data/futures_quantiacs_88.parquet``."""
    return Path(os.environ.get("TRADING_SHARED_DATA", "../shared/data")) / "futures_quantiacs_88.parquet"


def wti_bars(data: Path) -> pd.DataFrame:
    """Panama back-adjusted WTI daily bars in $/bbl: columns date, open, high, low, close, volume.

    Raises
    ------
    SystemExit
        The file does not exist or has no ``F_CL`` rows (the path named).
    """
    if not data.is_file():
        raise SystemExit(f"error: {data} does not exist; pass --data or set TRADING_SHARED_DATA")
    raw = pd.read_parquet(data, filters=[("ticker", "==", "F_CL")])
    if raw.empty:
        raise SystemExit(f"error: {data} has no F_CL rows")
    cl = raw.sort_values("DATE").reset_index(drop=True)
    gaps = cl["RINFO"].fillna(0.0).to_numpy()
    after = np.r_[np.cumsum(gaps[::-1])[::-1][1:], 0.0]  # sum of the gaps of the rolls after each row
    out = pd.DataFrame({"date": pd.to_datetime(cl["DATE"].astype(str), format="%Y%m%d").dt.strftime("%Y-%m-%d")})
    for col in ("OPEN", "HIGH", "LOW", "CLOSE"):
        out[col.lower()] = ((cl[col].to_numpy() + after) / BARRELS_PER_CL).round(4)
    out["volume"] = cl["VOL"].to_numpy()
    out.attrs["rolls"] = int((gaps != 0).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=default_data())
    args = parser.parse_args()
    bars = wti_bars(args.data)
    folder = (args.out / "bars").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    bars.to_csv(folder / "MCL.csv", index=False)
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["history_start"] = bars["date"].iloc[0]
    cfg["source"]["path"] = str(folder)
    cfg["instruments"][0]["back_adjusted"] = True
    (args.out / "mcl_ema_atr.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"wrote {folder / 'MCL.csv'} ({len(bars)} bars {bars['date'].iloc[0]} .. {bars['date'].iloc[-1]}, "
          f"Panama back-adjusted over {bars.attrs['rolls']} rolls) and {args.out / 'mcl_ema_atr.yaml'}")


if __name__ == "__main__":
    main()
