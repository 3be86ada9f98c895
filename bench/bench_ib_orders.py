"""Benchmark: the IB order path against the fake gateway (real ib_async client, real socket).

    python bench/bench_ib_orders.py --runs 5 --instruments 15

Each run: a new ledger and a new fake gateway; connect the IB broker (paper mode), send one
market order per instrument through ``execute_orders`` (write-ahead intents, gate, placeOrder,
fills, commissions), then a second, reconciling run that finds nothing to send (the re-run /
retry case). Prints the median and every run of each; record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipeline.broker.ib import IBBroker
from pipeline.config import BrokerConfig, IBConnection, Instrument, RiskLimits
from pipeline.ib.fake_gateway import FakeContract, FakeTWS
from pipeline.ledger import LEDGER_FILE, Ledger
from pipeline.orders import OrderPolicy, execute_orders


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instruments", type=int, default=15)
    args = parser.parse_args()
    runs = [one_run(args.instruments) for _ in range(args.runs)]
    for name, values in (("send", [r[0] for r in runs]), ("rerun", [r[1] for r in runs])):
        print(f"{name:6s} median {statistics.median(values):.2f} s  runs {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
