"""No run waits on a dead one (issue 16; reliability.md §7 promise 20).

A daily run killed without cleanup (SIGKILL after its first ``placeOrder``) must not block the
next: one order step at a time rests on an ``flock`` the operating system releases when the
process dies, not on a Dagster pool slot only a daemon could free. The next daily reconciles, adopts
the dead run's order and sends only the residual: one order per ``orderRef``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from pipeline.adapters.ib.fake_gateway import FakeContract, FakeTWS
from pipeline.store.ledger import Ledger
from tests.conftest import LATEST_SAMPLE_SESSION, write_config

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = [FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"),
             FakeContract("KO", "STK", "SMART", "USD", 8894, primary_exchange="NYSE")]


def _daily(config: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "daily", "--session", LATEST_SAMPLE_SESSION,
                             "--config", str(config)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_before_orders(instance: dg.DagsterInstance, run_id: str) -> float:
    """Seconds between the end of the last step before ``orders`` and the start of ``orders``."""
    events = [e for e in instance.all_logs(run_id) if e.dagster_event is not None]
    start = next(e.timestamp for e in events if e.dagster_event.event_type_value == "STEP_START" and e.step_key == "orders")
    ends = [e.timestamp for e in events if e.dagster_event.event_type_value == "STEP_SUCCESS" and e.step_key != "orders"]
    return start - max(t for t in ends if t <= start)


def test_a_daily_killed_after_its_first_order_does_not_block_the_next(tmp_path):
    home = tmp_path / "dagster_home"
    with FakeTWS(now=pd.Timestamp("2022-12-28 22:00", tz="UTC"), lifetime=600) as fake:
        for c in CONTRACTS:
            fake.add(c)
            fake.set_price(c.symbol, 100.0)
        config = write_config(tmp_path, symbols=["AAPL", "KO"], history_start="2019-01-02", broker={
            "mode": "ib", "execution": "paper", "paper_ports": [fake.port], "order_timeout": 5.0, "fill_wait": 1.0,
            "ib": {"port": fake.port, "timeout": 5.0}}, portfolio={"capital": 100_000.0})  # orders under the notional limit
        first = _daily(config, home)
        fake.on_place = lambda order: os.kill(first.pid, signal.SIGKILL)  # booked at the broker, then the run dies
        _, err = first.communicate(timeout=600)
        assert first.returncode == -signal.SIGKILL, err[-3000:]
        fake.on_place = None
        assert len(fake.orders()) == 1

        second = _daily(config, home)
        out, err = second.communicate(timeout=600)
        assert second.returncode == 0, out[-2000:] + err[-3000:]
        refs = [o.order_ref for o in fake.orders()]
        assert len(refs) == len(set(refs)) == 2  # the dead run's order adopted, the other sent once
        ledger = Ledger.at_lake(tmp_path / "lake").init()
        assert set(ledger.intents()["status"]) == {"FILLED"} and ledger.open_position_breaks().empty

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        latest = max(runs, key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp.timestamp())
        assert latest.status == dg.DagsterRunStatus.SUCCESS
        assert _wait_before_orders(instance, latest.run_id) < 5.0
