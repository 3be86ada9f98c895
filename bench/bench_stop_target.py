"""Time the stop-and-target simulation on 10 instruments x 5,000 sessions of random bars (best of 3).

    python bench/bench_stop_target.py

Synthetic random-walk bars; EMA 20/50, 2-ATR stop, 3-ATR trailing stop, 6-ATR target, 40-session time stop,
fixed fraction 2%, at most 5 contracts, 5% daily loss limit, commission and slippage on every fill.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from pipeline.config import CostModel
from pipeline.strategies.atr import wilder_atr
from pipeline.strategies.backtest import simulate_stop_target
from pipeline.strategies.config import StopTargetStrategy
from pipeline.strategies.entries import entry_state

SESSIONS, INSTRUMENTS = 5000, 10


def main() -> None:
    rng = np.random.default_rng(0)
    idx = pd.bdate_range("2000-01-03", periods=SESSIONS, name="session")
    cols = [f"I{i}" for i in range(INSTRUMENTS)]
    close = np.abs(50 + np.cumsum(rng.normal(0, 1, (SESSIONS, INSTRUMENTS)), axis=0)) + 10
    open_ = close + rng.normal(0, 0.3, close.shape)
    high = np.maximum(open_, close) + np.abs(rng.normal(0, 0.5, close.shape))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, 0.5, close.shape))
    o, h, lo, c = (pd.DataFrame(a, index=idx, columns=cols) for a in (open_, high, low, close))
    strategy = StopTargetStrategy.model_validate({
        "kind": "stop_target", "order_ref_prefix": "bench", "entry": {"kind": "ema_crossover", "fast": 20, "slow": 50},
        "sizing": {"kind": "fixed_fraction", "risk_fraction": 0.02},
        "exits": {"stop": {"kind": "atr", "value": 2}, "trailing": {"kind": "atr", "value": 3},
                  "take_profit": {"kind": "atr", "value": 6}, "time_stop": 40},
        "max_contracts": 5, "daily_loss_limit": 0.05})
    atr, state = wilder_atr(h, lo, c, 14), entry_state(c, strategy.entry)
    point_size = pd.Series(100.0, index=cols)
    costs = {k: CostModel(commission_per_unit=1.0, slippage=0.01) for k in cols}
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = simulate_stop_target(o, h, lo, c, state, atr, strategy, point_size, costs, 1_000_000.0)
        times.append(time.perf_counter() - started)
    print(f"{INSTRUMENTS} instruments x {SESSIONS} sessions: best of 3 {min(times):.3f} s, {len(result.trades)} trades")


if __name__ == "__main__":
    main()
