"""``trading-pipeline fake-gateway``: a user can start the fake gateway and talk to it with ib_async."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
from ib_async import IB, MarketOrder, Stock

from pipeline.cli.fake_gateway import fake_contract
from pipeline.config import Instrument
from tests.conftest import write_config

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fake_contracts_map_each_security_type():
    es = fake_contract(Instrument(symbol="ES", sec_type="FUT", exchange="CME", point_size=50))
    assert (es.sec_type, es.exchange, es.multiplier) == ("CONTFUT", "CME", "50")
    eur = fake_contract(Instrument(symbol="EURUSD", sec_type="CASH", exchange="IDEALPRO"))
    assert (eur.symbol, eur.currency, eur.sec_type, eur.local_symbol) == ("EUR", "USD", "CASH", "EUR.USD")
    aapl = fake_contract(Instrument(symbol="AAPL"))
    assert (aapl.sec_type, aapl.exchange) == ("STK", "SMART")
    assert fake_contract(Instrument(symbol="AAPL")).con_id == aapl.con_id  # stable across starts


def test_the_fake_gateway_command_serves_bars_and_fills_orders(tmp_path):
    config = write_config(tmp_path, symbols=["AAPL", "KO"])
    bars = pd.DataFrame({"session": ["2024-06-27", "2024-06-28"], "instrument": ["AAPL", "AAPL"],
                         "close": [210.0, 212.5]})
    bars.to_csv(tmp_path / "bars.csv", index=False)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "fake-gateway", "--port", str(port), "--config", str(config),
         "--bars", str(tmp_path / "bars.csv")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in banner, proc.stderr.read() if proc.poll() is not None else banner
        ib = IB()
        ib.RaiseRequestErrors, ib.RequestTimeout = True, 10
        ib.connect("127.0.0.1", port, clientId=5, timeout=5, raiseSyncErrors=True)
        try:
            assert ib.managedAccounts() == ["DU1234567"]
            contract = Stock("AAPL", "SMART", "USD")
            ib.qualifyContracts(contract)
            got = ib.reqHistoricalData(contract, "20240628-23:00:00", "5 D", "1 day", "TRADES", True, timeout=0)
            assert [b.close for b in got] == [210.0, 212.5]
            trade = ib.placeOrder(contract, MarketOrder("BUY", 3, orderRef="carver:2024-06-28:AAPL:1", account="DU1234567"))
            for _ in range(200):
                if trade.isDone():
                    break
                ib.sleep(0.01)
            assert (trade.orderStatus.status, trade.orderStatus.avgFillPrice) == ("Filled", 212.5)
        finally:
            ib.disconnect()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0  # stopped cleanly by the signal
