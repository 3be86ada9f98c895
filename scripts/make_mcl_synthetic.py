"""Write the SYNTHETIC daily bars of examples/mcl_synthetic/MCL.csv (not market data).

    python scripts/make_mcl_synthetic.py            # rewrites examples/mcl_synthetic/MCL.csv

1,000 NYMEX sessions from 2019-01-02 of a made-up micro crude price: a random walk in log price with
35% annual vol (a crude-like level) whose drift switches between up and down trends every 60 to 180
sessions, so an EMA 20/50 crossover has trends to follow and whipsaws to lose on. Each bar's open gaps
from the previous close, high and low bracket the open and close. Fixed seed: the file is reproducible.
It lets ``examples/mcl_ema_atr.yaml`` run on a fresh clone; the real-data evidence (WTI from the
shared data set) is made by ``scripts/quantiacs_wti.py``.
"""

from __future__ import annotations

from pathlib import Path

import exchange_calendars as xcals
import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "examples" / "mcl_synthetic" / "MCL.csv"


def synthetic_bars(n: int = 1000, seed: int = 22) -> pd.DataFrame:
    """Columns date, open, high, low, close, volume on the first ``n`` NYMEX sessions from 2019-01-02 ($/bbl)."""
    rng = np.random.default_rng(seed)
    sessions = xcals.get_calendar("NYMEX").sessions_in_range("2019-01-02", "2026-12-31")[:n]
    daily = 0.35 / 16.0
    lengths = rng.integers(60, 180, size=n // 60 + 1)
    drift = np.repeat(rng.choice([-1.0, 1.0], size=len(lengths)) * 0.25 * daily, lengths)[:n]
    close = 60.0 * np.exp(np.cumsum(drift + rng.normal(0.0, daily, n)))
    prev = np.r_[60.0, close[:-1]]
    open_ = prev * np.exp(rng.normal(0.0, 0.3 * daily, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.5 * daily, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.5 * daily, n)))
    return pd.DataFrame({"date": sessions.strftime("%Y-%m-%d"), "open": open_.round(2), "high": high.round(2),
                         "low": low.round(2), "close": close.round(2),
                         "volume": rng.integers(20_000, 60_000, n)})


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    synthetic_bars().to_csv(OUT, index=False)
    print(f"wrote {OUT} (synthetic, not market data)")
