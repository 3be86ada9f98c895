"""The daily job with bars from, and orders to, Interactive Brokers: the real ib_async client
against the fake gateway over a real socket."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.definitions import execute_daily
from pipeline.lake import Lake
from pipeline.ledger import Ledger
from pipeline.sources import SampleSource
from tests.conftest import LATEST_SAMPLE_SESSION, write_config
from pipeline.ib.fake_gateway import Drop, FakeContract, FakeTWS

CONTRACTS = {
    "AAPL": FakeContract("AAPL", "STK", "SMART", "USD", 265598, primary_exchange="NASDAQ"),
    "KO": FakeContract("KO", "STK", "SMART", "USD", 8894, primary_exchange="NYSE"),
    "XOM": FakeContract("XOM", "STK", "SMART", "USD", 13977, primary_exchange="NYSE"),
}


def test_the_daily_job_runs_on_bars_served_over_the_tws_protocol(tmp_path):
    start = pd.Timestamp("2019-01-02")  # four yearly requests per instrument: well inside IB pacing
    bars = SampleSource().fetch(list(CONTRACTS), start, pd.Timestamp(LATEST_SAMPLE_SESSION))
    # The evening after the sample's last session: every bar served is final.
    fake = FakeTWS(now=pd.Timestamp("2022-12-28 23:00", tz="UTC"), lifetime=900)
    for symbol, contract in CONTRACTS.items():
        served = bars[bars["instrument"] == symbol][["session", "close"]].assign(
            open=lambda d: d["close"], high=lambda d: d["close"], low=lambda d: d["close"], volume=1000.0)
        fake.add(contract, served.reset_index(drop=True))
    with fake:
        config = write_config(tmp_path, symbols=list(CONTRACTS), history_start=str(start.date()),
                              source={"kind": "ib", "ib": {"port": fake.port, "client_id": 21, "timeout": 5.0}})
        cfg = load_config(config)
        with dg.instance_for_test() as instance:
            result = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
    assert result.success
    lake = Lake(cfg.lake_path)
    raw = lake.read("raw_bars")
    assert set(raw["source"]) == {"ib:TRADES"}
    clean = lake.read_wide("clean_bars", "close", list(CONTRACTS))
    expected = bars.pivot(index="session", columns="instrument", values="close").reindex(columns=list(CONTRACTS))
    np.testing.assert_allclose(clean.to_numpy(), expected.loc[clean.index].to_numpy(), rtol=0, atol=0)
    assert clean.index[0] == start and clean.index[-1] == pd.Timestamp(LATEST_SAMPLE_SESSION)
    assert len(lake.read("target_positions", start=pd.Timestamp(LATEST_SAMPLE_SESSION))) == 3


def test_the_daily_job_trades_through_the_ib_broker_in_paper_mode_and_retries_send_nothing_twice(tmp_path):
    start = pd.Timestamp("2019-01-02")
    bars = SampleSource().fetch(list(CONTRACTS), start, pd.Timestamp(LATEST_SAMPLE_SESSION))
    fake = FakeTWS(now=pd.Timestamp("2022-12-28 23:00", tz="UTC"), lifetime=900)
    for symbol, contract in CONTRACTS.items():
        served = bars[bars["instrument"] == symbol][["session", "close"]].assign(
            open=lambda d: d["close"], high=lambda d: d["close"], low=lambda d: d["close"], volume=1000.0)
        fake.add(contract, served.reset_index(drop=True))
    # The gateway takes the first order and the connection drops before the step hears back:
    # the orders step fails after a submission, as a run that Dagster then retries.
    fake.script("place", Drop())
    with fake:
        config = write_config(
            tmp_path, symbols=list(CONTRACTS), history_start=str(start.date()),
            source={"kind": "ib", "ib": {"port": fake.port, "client_id": 21, "timeout": 5.0}},
            broker={"mode": "ib", "execution": "paper", "paper_ports": [fake.port], "fill_wait": 1.0,
                    "ib": {"port": fake.port, "client_id": 22, "timeout": 5.0}},
        )
        cfg = load_config(config)
        with dg.instance_for_test() as instance:
            failed = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
            after_failure = [f[26] for f in fake.placed()]
            # the retry (a new run of the same partition, as Dagster's run retry launches)
            retry = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
            placed = [f[26] for f in fake.placed()]
            again = execute_daily(LATEST_SAMPLE_SESSION, submit=True, config_path=str(config), instance=instance)
        assert not failed.success and retry.success and again.success
        assert len(after_failure) == 1
        ledger = Ledger.at_lake(cfg.lake_path)
        intents = ledger.intents(session=LATEST_SAMPLE_SESSION)
        sent = intents[intents["mode"] == "submit"]
        accepted = sent[sent["verdict"] == "ACCEPTED"]
        # every accepted intent reached the broker exactly once: the first adopted, not resent
        assert sorted(placed) == sorted(accepted["order_ref"]) and len(set(placed)) == len(placed)
        assert [f[26] for f in fake.placed()] == placed  # the run after success sent nothing
        assert set(accepted["status"]) == {"FILLED"}
        assert sent["code_version"].notna().all() and sent["input_hash"].notna().all()
        assert set(sent["account"]) == {fake.account}
        net = ledger.net_fills(broker="ib")
        assert {s: fake.position(s) for s in net.index} == net.to_dict()
        targets = Lake(cfg.lake_path).read_wide("target_positions", "target", list(CONTRACTS)).loc[LATEST_SAMPLE_SESSION]
        for symbol in accepted["instrument"]:
            assert fake.position(symbol) == targets[symbol]
