"""Benchmark: the IB order path against the fake gateway (real ib_async client, real socket),
and the record-only planning of a backfill.

    python bench/bench_ib_orders.py --runs 5 --instruments 15
    python bench/bench_ib_orders.py --runs 5 --backfill-years 10

Each run: a new ledger and a new fake gateway; connect the IB broker (paper mode), send one
market order per instrument through ``execute_orders`` (write-ahead intents, gate, placeOrder,
fills, commissions), then a second, reconciling run that finds nothing to send (the re-run /
retry case). With ``--backfill-years N``: each run a new ledger, then
``record_intents_without_sending`` (what the ``orders`` asset does in a backfill) over the last N
years of the bundled sample with trend targets on every instrument, timed, and a second call
that finds every intent unchanged. Prints the median and every run of each; record results in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.adapters.ib.broker import IBBroker
from pipeline.adapters.ib.fake_gateway import FakeContract, FakeTWS
from pipeline.config import BrokerConfig, IBConnection, Instrument, RiskLimits
from pipeline.execution import (
    OrderPolicy,
    execute_orders,
    record_intents_without_sending,
)
from pipeline.store.ledger import LEDGER_FILE, Ledger


def one_run(n: int) -> tuple[float, float]:
    symbols = [f"S{i:03d}" for i in range(n)]
    fake = FakeTWS(lifetime=600)
    for i, s in enumerate(symbols):
        fake.add(FakeContract(s, "STK", "SMART", "USD", 1000 + i))
        fake.set_price(s, 100.0)
    targets, prices = pd.Series(10.0, index=symbols), pd.Series(100.0, index=symbols)
    with fake, tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / LEDGER_FILE).init()
        cfg = BrokerConfig(mode="ib", execution="paper", ib=IBConnection(port=fake.port, timeout=5.0),
                           paper_ports=[fake.port], fill_wait=2.0)
        times = []
        for run_id in ("send", "rerun"):
            started = time.perf_counter()
            with IBBroker([Instrument(symbol=s) for s in symbols], cfg) as broker:
                report = execute_orders(targets, prices, "2024-01-02", ledger=ledger, broker=broker,
                                        limits=RiskLimits(), point_sizes=dict.fromkeys(symbols, 1.0),
                                        strategy="carver", submit=True, run_id=run_id,
                                        policy=OrderPolicy(account=broker.account))
            times.append(time.perf_counter() - started)
            expected = n if run_id == "send" else 0
            assert report.counts["sent"] == expected, report.counts
        assert len(fake.placed()) == n
    return times[0], times[1]


def backfill_targets(years: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long / short 50,000 / close units by the sign of close minus its 64-session mean, on the
    sample's closes of the last ``years`` years (index session, columns instrument)."""
    bars = pd.read_parquet(Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_bars.parquet")
    close = bars.pivot(index="session", columns="instrument", values="close").sort_index()
    close = close[close.index > close.index[-1] - pd.DateOffset(years=years)]
    sign = np.sign(close - close.rolling(64, min_periods=64).mean())
    return (sign * (50_000 / close)).round(), close


def one_backfill(years: int) -> tuple[float, float, int]:
    targets, prices = backfill_targets(years)
    kwargs = {"limits": RiskLimits(), "point_sizes": dict.fromkeys(targets.columns, 1.0), "strategy": "carver"}
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / LEDGER_FILE).init()
        started = time.perf_counter()
        out = record_intents_without_sending(targets, prices, targets.index, ledger=ledger, run_id="bf", **kwargs)
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = record_intents_without_sending(targets, prices, targets.index, ledger=ledger, run_id="bf2", **kwargs)
        second = time.perf_counter() - started
    assert len(out) > 0 and again.empty
    return first, second, len(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instruments", type=int, default=15)
    parser.add_argument("--backfill-years", type=int, default=None)
    args = parser.parse_args()
    if args.backfill_years:
        runs = [one_backfill(args.backfill_years) for _ in range(args.runs)]
        print(f"{args.backfill_years} years, {runs[0][2]} intents")
        for name, values in (("record", [r[0] for r in runs]), ("rerun", [r[1] for r in runs])):
            print(f"{name:6s} median {statistics.median(values):.2f} s  runs {' '.join(f'{v:.2f}' for v in values)}")
        return
    runs = [one_run(args.instruments) for _ in range(args.runs)]
    for name, values in (("send", [r[0] for r in runs]), ("rerun", [r[1] for r in runs])):
        print(f"{name:6s} median {statistics.median(values):.2f} s  runs {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
